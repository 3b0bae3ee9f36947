//go:build tools

// Package tools pins the buf CLI (protobuf lint / breaking-change checks) used by `make lint`.
//
// Build with `python3 deploy/local/infra.py install-buf`, which runs, from this directory:
//
//	GOBIN=<repo>/.local/bin go install github.com/bufbuild/buf/cmd/buf
//
// Pinned to v1.50.0: the newer releases tried (v1.55.1, v1.65.0, v1.75.0) cannot be resolved
// through the module proxy used here (403 for recent versions of some of their dependencies).
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
)

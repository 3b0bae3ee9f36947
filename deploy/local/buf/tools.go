//go:build tools

// Package tools pins the buf CLI (protobuf lint / breaking-change checks) used by `make lint`.
//
// Build with (from this directory):
//
//	GOBIN=<repo>/.local/bin go install github.com/bufbuild/buf/cmd/buf
//
// deploy/local/infra.py install-buf does this.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
)

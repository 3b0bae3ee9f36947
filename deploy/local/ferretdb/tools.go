//go:build tools

// Package tools pins the FerretDB binary used for local development.
//
// Build with (from this directory):
//
//	GOBIN=<repo>/.local/bin go install github.com/FerretDB/FerretDB/cmd/ferretdb
//
// deploy/local/infra.py does this automatically on first `up`.
package tools

import (
	_ "github.com/FerretDB/FerretDB/cmd/ferretdb"
)

//go:build tools

// Package tools pins FerretDB (the MongoDB-wire server used for local development) and
// records its checksums in go.sum.
//
// Do not `go install github.com/FerretDB/FerretDB/cmd/ferretdb` from here: that binary
// panics at start because build/version/version.txt is not part of the released module.
// deploy/local/infra.py downloads the pinned module with `go mod download` (verified against
// this go.sum), copies it under .local/build, writes version.txt and builds ./cmd/ferretdb.
package tools

import (
	_ "github.com/FerretDB/FerretDB/cmd/ferretdb"
)

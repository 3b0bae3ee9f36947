module tmsp.local/deploy/buf

go 1.26.7

require github.com/bufbuild/buf v1.75.0

//go:build tools

// Package tools pins the Cosmos DB emulator the end-to-end tests run (pikami/cosmium, MIT,
// from the Go module proxy): `go build -o ../.bin/cosmium github.com/pikami/cosmium/cmd/server`
// here builds it at the version in go.mod.
package tools

import _ "github.com/pikami/cosmium/cmd/server"

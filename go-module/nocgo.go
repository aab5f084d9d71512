//go:build !cgo

package caddyiap

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
)

// errNeedsCgo is what a Caddy built without cgo says when an iap handler is configured.
// Registration and Caddyfile parsing are shared, so such a build still starts, adapts and
// validates configs that do not use iap.
var errNeedsCgo = errors.New("caddy-iap needs cgo: build with CGO_ENABLED=1 xcaddy build --with github.com/caddy-iap/caddy-iap/go-module=./go-module (see README)")

// Provision fails: the engine is a Rust library linked through cgo.
func (h *Handler) Provision(caddy.Context) error {
	return errNeedsCgo
}

// Provision fails: the gateway is a Rust library linked through cgo.
func (h *PostgresHandler) Provision(caddy.Context) error {
	return errNeedsCgo
}

// Provision fails: the gateway is a Rust library linked through cgo.
func (h *CosmosHandler) Provision(caddy.Context) error {
	return errNeedsCgo
}

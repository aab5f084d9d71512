//go:build !cgo

package caddyiap

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestProvisionWithoutCgo(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuers: []Issuer{{Issuer: "https://idp", Audiences: []string{"a"}}}}
	err := h.Provision(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "caddy-iap needs cgo: build with CGO_ENABLED=1 xcaddy build") {
		t.Fatalf("Provision: %v", err)
	}
	if err := h.Cleanup(); err != nil {
		t.Errorf("Cleanup after a failed Provision: %v", err)
	}
}

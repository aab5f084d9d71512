//go:build cgo

package caddyiap

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// Provision builds the engine and the Rust gateway, which reads the account key (or client
// secret) named in the config. No network I/O: an Entra token is fetched at the first request.
func (h *CosmosHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Validate(); err != nil {
		return err
	}
	engineJSON, err := h.TokenIdentity.engineJSON(os.ReadFile)
	if err != nil {
		return err
	}
	eng, err := ffi.NewEngine(engineJSON)
	if err != nil {
		return fmt.Errorf("creating engine: %w", err)
	}
	policyJSON, err := json.Marshal(h.gatewayConfig())
	if err != nil {
		return err
	}
	gw, err := ffi.NewCosmosGateway(eng, policyJSON)
	if err != nil {
		return fmt.Errorf("cosmos: %w", err)
	}
	h.gateway = ffiCosmos{gw}
	h.logger.Debug("cosmos gateway ready", zap.String("engine_version", ffi.Version()),
		zap.Int("grants", len(h.Grants)), zap.Bool("entra", h.Entra != nil))
	return nil
}

// ffiCosmos adapts ffi.CosmosGateway to the handler's interface.
type ffiCosmos struct{ g *ffi.CosmosGateway }

func (f ffiCosmos) authorize(r *cosmosRequest) (cosmosDecision, error) {
	d, err := f.g.Authorize((*ffi.CosmosRequest)(r))
	return cosmosDecision(d), err
}

func (f ffiCosmos) rewriteAccount(body []byte, gatewayURL string) ([]byte, error) {
	return ffi.RewriteCosmosAccount(body, gatewayURL)
}

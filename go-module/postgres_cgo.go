//go:build cgo

package caddyiap

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
	"github.com/caddy-iap/caddy-iap/go-module/internal/pgfront"
)

// Provision builds the engine and the Rust gateway, and starts the janitor. No database or
// network I/O happens here: the admin connection is made at the first login or sweep.
func (h *PostgresHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.Validate(); err != nil {
		return err
	}
	h.front = &pgfront.Front{Cancels: cancels, StartupTimeout: defaultStartupTimeout}
	if h.Postgres == nil {
		h.front.Auth = authenticator{}
		return nil
	}
	upstream, err := h.Postgres.upstreamConfig()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	h.front.Upstream = upstream

	engineJSON, err := h.TokenIdentity.engineJSON(os.ReadFile)
	if err != nil {
		return err
	}
	eng, err := ffi.NewEngine(engineJSON)
	if err != nil {
		return fmt.Errorf("creating engine: %w", err)
	}
	policyJSON, err := json.Marshal(h.Postgres.gatewayConfig())
	if err != nil {
		return err
	}
	gw, err := ffi.NewPgGateway(eng, policyJSON)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	h.gateway = ffiGateway{gw}
	h.front.Auth = authenticator{gateway: h.gateway}

	h.janitor = startJanitor(h.gateway, h.logger, cmp.Or(time.Duration(h.Postgres.JanitorInterval), defaultJanitorInterval))

	h.logger.Debug("postgres gateway ready",
		zap.String("engine_version", ffi.Version()),
		zap.String("upstream", fmt.Sprintf("%s:%d", upstream.Host, upstream.Port)),
		zap.Int("grants", len(h.Postgres.Grants)))
	return nil
}

// ffiGateway adapts ffi.PgGateway to the handler's interface.
type ffiGateway struct{ g *ffi.PgGateway }

func (f ffiGateway) login(token, user, database string, fresh, session bool) (pgLogin, error) {
	l, err := f.g.Login(token, user, database, fresh, session)
	return pgLogin{
		OK: l.OK, SQLState: l.SQLState, ClientMessage: l.ClientMessage, Reason: l.LogReason,
		Role: l.Role, Password: l.Password, Outcome: l.Outcome,
		ExpiresAt: l.ExpiresAt, Deadline: l.Deadline, Granted: l.Granted,
		Subject: l.Subject, Email: l.Email, Issuer: l.Issuer, Roles: l.Roles,
	}, err
}

func (f ffiGateway) sweep() (pgSweep, error) {
	s, err := f.g.Sweep()
	return pgSweep(s), err
}

//go:build cgo

package caddyiap

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// Provision creates the handler's engine: it reads key files, loads (or, the first time,
// generates) the assertion signing key from Caddy storage, and hands the config to the Rust
// engine. No network I/O: issuers' keys are fetched by the engine later, so an unreachable
// identity provider never fails a config load.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	// Caddy validates after provisioning; checking first keeps a bad config from touching
	// storage or building an engine.
	if err := h.Validate(); err != nil {
		return err
	}
	h.setDefaults()
	for _, src := range h.sources {
		if src.Kind == SourceHeader {
			// Caddy's access log redacts Authorization and Cookie, not custom headers.
			h.logger.Warn("tokens in this header appear in Caddy's access log unless filtered: "+
				logFilter(src.Name), zap.String("token_source_header", src.Name))
		}
	}
	if h.Assertion != nil && ctx.Logger(reverseproxy.Handler{}).Core().Enabled(zapcore.DebugLevel) {
		// reverse_proxy's DEBUG line "upstream roundtrip" holds every upstream request
		// header, and Caddy redacts only Authorization and Cookie and their kin: each
		// assertion, a credential the upstream accepts until it expires, would be written out.
		h.logger.Warn("reverse_proxy logs upstream request headers at DEBUG, assertions included, unless the global "+
			"options' log filters them: "+logFilter(h.Assertion.header()), zap.String("assertion_header", h.Assertion.header()))
	}

	var signingKeys []string
	if h.Assertion != nil {
		alg := h.Assertion.alg()
		keys, err := loadOrCreateSigningKeys(ctx, ctx.Storage(), alg, ffi.GenerateSigningKey)
		if err != nil {
			return fmt.Errorf("assertion signing key: %w", err)
		}
		signingKeys = keys
	}

	cfg, err := h.engineJSON(os.ReadFile, signingKeys)
	if err != nil {
		return err
	}
	eng, err := ffi.NewEngine(cfg)
	clear(cfg) // it held the signing key
	if err != nil {
		return fmt.Errorf("creating engine: %w", err)
	}

	if c := h.PostgresCredentials; c != nil {
		policyJSON, err := json.Marshal(c.Postgres.gatewayConfig())
		if err != nil {
			return err
		}
		gw, err := ffi.NewPgGateway(eng, policyJSON)
		if err != nil {
			return fmt.Errorf("postgres_credentials: %w", err)
		}
		h.pgGateway = ffiGateway{gw}
		h.janitor = startJanitor(h.pgGateway, h.logger,
			cmp.Or(time.Duration(c.Postgres.JanitorInterval), defaultJanitorInterval))
	}

	if l := h.Login; l != nil {
		keys, err := loadOrCreateKeys(ctx, ctx.Storage(), cookieKeyStorageKey, "iap_login_cookie_keys", newCookieKey)
		if err != nil {
			return fmt.Errorf("login cookie keys: %w", err)
		}
		cfg, err := l.signInJSON(h.Issuers, keys)
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		s, err := ffi.NewSignIn(eng, cfg)
		clear(cfg) // it held the cookie keys
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		h.signIn = s
	}

	// The headers the engine owns, stripped from every request before anything else.
	h.owned = eng.OwnedHeaders()
	h.engine = eng

	m, err := newMetrics(registerer(ctx.GetMetricsRegistry()))
	if err != nil {
		h.logger.Warn("registering metrics", zap.Error(err))
	}
	h.metrics = m
	h.metrics.track(eng)

	h.logger.Debug("engine ready",
		zap.String("engine_version", ffi.Version()),
		zap.Int("issuers", len(h.Issuers)),
		zap.Int("roles", len(h.Roles)),
		zap.Int("allow", len(h.Allow)),
		zap.Bool("assertion", h.Assertion != nil),
		zap.String("jwks_path", h.jwksPath),
	)
	return nil
}

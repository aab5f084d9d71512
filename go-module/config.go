package caddyiap

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// The engine's JSON config, the shape of rust/core/src/config.rs (serde, deny_unknown_fields).
// Optional values are omitted so the engine applies its own defaults; the Go side keeps no
// copy of them.
type (
	engineConfig struct {
		Issuers       []engineIssuer   `json:"issuers"`
		Roles         []engineRole     `json:"roles,omitempty"`
		Allow         []engineAllow    `json:"allow,omitempty"`
		Assertion     *engineAssertion `json:"assertion,omitempty"`
		Headers       *engineHeaders   `json:"headers,omitempty"`
		Cache         *engineCache     `json:"cache,omitempty"`
		MaxTokenBytes int              `json:"max_token_bytes,omitempty"`
	}
	engineIssuer struct {
		Issuer               string   `json:"issuer"`
		Audiences            []string `json:"audiences"`
		Keys                 any      `json:"keys"` // "discovery" or a one-key object
		Algorithms           []string `json:"algorithms,omitempty"`
		LeewaySecs           *uint64  `json:"leeway_secs,omitempty"`
		MaxLifetimeSecs      *uint64  `json:"max_lifetime_secs,omitempty"`
		KidMissCooldownSecs  *uint64  `json:"kid_miss_cooldown_secs,omitempty"`
		RefreshMinSecs       *uint64  `json:"refresh_min_secs,omitempty"`
		RefreshMaxSecs       *uint64  `json:"refresh_max_secs,omitempty"`
		FetchTimeoutMS       *uint64  `json:"fetch_timeout_ms,omitempty"`
		TrustUnverifiedEmail bool     `json:"trust_unverified_email,omitempty"`
		LoginClientID        string   `json:"login_client_id,omitempty"`
	}
	engineRole struct {
		Role string           `json:"role"`
		When []ClaimCondition `json:"when"`
	}
	engineAllow struct {
		Role    string   `json:"role"`
		Methods []string `json:"methods"`
		Paths   []string `json:"paths"`
	}
	engineAssertion struct {
		Issuer      string   `json:"issuer,omitempty"`
		Audience    string   `json:"audience"`
		TTLSecs     *uint64  `json:"ttl_secs,omitempty"`
		Header      string   `json:"header,omitempty"`
		SigningKeys []string `json:"signing_keys"`
	}
	// engineHeaders: a nil field takes the engine's default name; "" turns the header off.
	engineHeaders struct {
		User  *string `json:"user,omitempty"`
		Email *string `json:"email,omitempty"`
		Roles *string `json:"roles,omitempty"`
	}
	engineCache struct {
		MaxEntries int `json:"max_entries"`
	}
)

// engineJSON builds the engine's config. Key files are read with readFile, so the error names
// the file; signingKeys are the assertion keys (base64 PKCS#8) from Caddy storage. The result
// holds secret key material: never log it, and clear it after use.
func (h *Handler) engineJSON(readFile func(string) ([]byte, error), signingKeys []string) ([]byte, error) {
	cfg, err := identityConfig(h.Issuers, h.Roles, h.CacheSize, h.MaxTokenSize, readFile)
	if err != nil {
		return nil, err
	}
	for _, a := range h.Allow {
		cfg.Allow = append(cfg.Allow, engineAllow(a))
	}
	if a := h.Assertion; a != nil {
		if len(signingKeys) == 0 {
			return nil, fmt.Errorf("assertion: no signing key")
		}
		cfg.Assertion = &engineAssertion{
			Issuer:      a.Issuer,
			Audience:    a.Audience,
			TTLSecs:     ceilUnit(a.TTL, time.Second),
			Header:      a.Header,
			SigningKeys: signingKeys,
		}
	}
	if l := h.Login; l != nil {
		iss, err := l.issuer(h.Issuers)
		if err != nil {
			return nil, fmt.Errorf("login: %w", err)
		}
		for i := range cfg.Issuers {
			if cfg.Issuers[i].Issuer == iss {
				cfg.Issuers[i].LoginClientID = l.ClientID
			}
		}
	}
	if n := h.Headers; n != nil {
		cfg.Headers = &engineHeaders{User: headerName(n.User), Email: headerName(n.Email), Roles: headerName(n.Roles)}
		if *cfg.Headers == (engineHeaders{}) {
			cfg.Headers = nil
		}
	}
	return json.Marshal(cfg)
}

// identityConfig is the part of the engine config every front shares: who is trusted
// (issuers) and which roles their tokens carry. Key files are read with readFile.
func identityConfig(issuers []Issuer, roles []RoleRule, cacheSize *int, maxTokenSize int, readFile func(string) ([]byte, error)) (engineConfig, error) {
	cfg := engineConfig{
		Issuers:       make([]engineIssuer, 0, len(issuers)),
		MaxTokenBytes: maxTokenSize,
	}
	for _, iss := range issuers {
		keys, err := keySource(&iss, readFile)
		if err != nil {
			return cfg, fmt.Errorf("issuer %q: %w", iss.Issuer, err)
		}
		cfg.Issuers = append(cfg.Issuers, engineIssuer{
			Issuer:               iss.Issuer,
			Audiences:            iss.Audiences,
			Keys:                 keys,
			Algorithms:           iss.Algorithms,
			LeewaySecs:           ceilUnit(iss.Leeway, time.Second),
			MaxLifetimeSecs:      ceilUnit(iss.MaxLifetime, time.Second),
			KidMissCooldownSecs:  ceilUnit(iss.KidMissCooldown, time.Second),
			RefreshMinSecs:       ceilUnit(iss.RefreshMin, time.Second),
			RefreshMaxSecs:       ceilUnit(iss.RefreshMax, time.Second),
			FetchTimeoutMS:       ceilUnit(iss.FetchTimeout, time.Millisecond),
			TrustUnverifiedEmail: iss.TrustUnverifiedEmail,
		})
	}
	for _, r := range roles {
		cfg.Roles = append(cfg.Roles, engineRole(r))
	}
	if cacheSize != nil {
		cfg.Cache = &engineCache{MaxEntries: *cacheSize}
	}
	return cfg, nil
}

// keySource reads the issuer's key files and says where the engine gets keys from.
func keySource(iss *Issuer, readFile func(string) ([]byte, error)) (any, error) {
	switch {
	case iss.JWKSURL != "":
		return map[string]string{"jwks_url": iss.JWKSURL}, nil
	case iss.JWKSFile != "":
		b, err := readFile(iss.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("reading jwks_file: %w", err)
		}
		return map[string]string{"jwks_inline": string(b)}, nil
	case len(iss.PEMFiles) > 0:
		pems := make([]string, 0, len(iss.PEMFiles))
		for _, f := range iss.PEMFiles {
			b, err := readFile(f)
			if err != nil {
				return nil, fmt.Errorf("reading pem_file: %w", err)
			}
			pems = append(pems, string(b))
		}
		return map[string][]string{"pem": pems}, nil
	}
	return "discovery", nil
}

// headerName maps the Go config's name ("" default, "off") to the engine's (nil default, ""
// off).
func headerName(s string) *string {
	switch s {
	case "":
		return nil
	case off:
		s = ""
	}
	return &s
}

// ceilUnit converts d to a whole number of units, rounding up; nil for zero (the default).
func ceilUnit(d caddy.Duration, unit time.Duration) *uint64 {
	if d <= 0 {
		return nil
	}
	n := uint64((time.Duration(d) + unit - 1) / unit)
	return &n
}

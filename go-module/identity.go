package caddyiap

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TokenIdentity is the part of a front's config that says whose tokens count and which roles
// they carry. The database fronts (`iap_postgres`, `iap_cosmos`) embed it; its JSON fields sit
// at the top level of theirs.
type TokenIdentity struct {
	// Trusted token issuers; at least one.
	Issuers []Issuer `json:"issuers,omitempty"`

	// Claim rules granting roles, as for the `iap` HTTP handler.
	Roles []RoleRule `json:"roles,omitempty"`

	// Entries in the verified-token cache. Default 65536; 0 turns the cache off.
	CacheSize *int `json:"cache_size,omitempty"`

	// Longest token accepted, in bytes. Default 8192.
	MaxTokenSize int `json:"max_token_size,omitempty"`
}

// unmarshalSubdirective parses `issuer`, `role`, `cache_size` or `max_token_size` at d;
// false when d's token is none of them.
func (t *TokenIdentity) unmarshalSubdirective(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "issuer":
		iss, err := parseIssuer(d)
		if err != nil {
			return true, err
		}
		for _, other := range t.Issuers {
			if other.Issuer == iss.Issuer {
				return true, d.Errf("issuer %q is configured twice", iss.Issuer)
			}
		}
		t.Issuers = append(t.Issuers, iss)
	case "role":
		rule, err := parseRole(d)
		if err != nil {
			return true, err
		}
		t.Roles = append(t.Roles, rule)
	case "cache_size":
		n, err := intArg(d)
		if err != nil {
			return true, err
		}
		t.CacheSize = &n
	case "max_token_size":
		n, err := intArg(d)
		t.MaxTokenSize = n
		return true, err
	default:
		return false, nil
	}
	return true, nil
}

// repeatable says which of these subdirectives may appear more than once.
func (*TokenIdentity) repeatable(sub string) bool {
	return sub == "issuer" || sub == "role"
}

func (t *TokenIdentity) validate() error {
	if len(t.Issuers) == 0 {
		return errors.New("at least one issuer is required")
	}
	for i := range t.Issuers {
		if err := t.Issuers[i].validate(); err != nil {
			return fmt.Errorf("issuers[%d]: %w", i, err)
		}
	}
	for i := range t.Roles {
		if err := t.Roles[i].validate(); err != nil {
			return fmt.Errorf("roles[%d]: %w", i, err)
		}
	}
	if t.CacheSize != nil && *t.CacheSize < 0 {
		return fmt.Errorf("cache_size: %d is negative", *t.CacheSize)
	}
	if t.MaxTokenSize < 0 {
		return fmt.Errorf("max_token_size: %d is negative", t.MaxTokenSize)
	}
	return nil
}

// grantsRole reports whether some role rule grants role.
func (t *TokenIdentity) grantsRole(role string) bool {
	return slices.ContainsFunc(t.Roles, func(r RoleRule) bool { return r.Role == role })
}

// engineJSON is the engine's config for this identity part alone (no allow rules, no
// assertion). Key files are read with readFile.
func (t *TokenIdentity) engineJSON(readFile func(string) ([]byte, error)) ([]byte, error) {
	cfg, err := identityConfig(t.Issuers, t.Roles, t.CacheSize, t.MaxTokenSize, readFile)
	if err != nil {
		return nil, err
	}
	return json.Marshal(cfg)
}

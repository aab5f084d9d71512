package caddyiap

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens, inside a caddy-l4 route:
//
//	iap_postgres {
//	    issuer <url> { audience <aud...> ... }   # as for iap
//	    role <name> claim <claim> <op> <value>    # as for iap
//	    admin <connection string> {
//	        password_env <VAR> | password_file <path>
//	        ca_file <path>
//	    }
//	    upstream <connection string>
//	    grant <role> <group role...>
//	    databases <name...>
//	    role_prefix <prefix>
//	    marker_role <name>
//	    ttl <duration>
//	    max_ttl <duration>
//	    on_expiry terminate | continue
//	    expired_roles deactivate | drop
//	    janitor_interval <duration>
//	    cache_size <n>
//	    max_token_size <bytes>
//	}
//
// `iap_postgres` without a block only forwards cancel requests and refuses logins (for the
// route of connections that did not ask for TLS).
func (h *PostgresHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the handler name
	directive := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	var p PostgresPolicy
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if !h.repeatable(sub) && sub != "grant" {
			if seen[sub] {
				return d.Errf("%s is set twice", sub)
			}
			seen[sub] = true
		}
		known, err := h.TokenIdentity.unmarshalSubdirective(d)
		if !known {
			known, err = p.unmarshalSubdirective(d)
		}
		if !known {
			return d.Errf("unknown iap_postgres subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	if len(seen) > 0 || len(h.Issuers) > 0 || len(h.Roles) > 0 || p.Grants != nil {
		h.Postgres = &p
	}
	if err := h.Validate(); err != nil {
		return errAt(directive, "iap_postgres: %v", err)
	}
	return nil
}

// unmarshalSubdirective parses one policy subdirective at d (also used inside the HTTP
// handler's postgres_credentials block); false when d's token is not one.
func (p *PostgresPolicy) unmarshalSubdirective(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "admin":
		return true, parseAdmin(d, p)
	case "upstream":
		return true, oneArg(d, &p.Upstream)
	case "grant":
		args := d.RemainingArgs()
		if len(args) < 2 {
			return true, d.ArgErr()
		}
		if _, dup := p.Grants[args[0]]; dup {
			return true, d.Errf("grant %s is set twice", args[0])
		}
		if p.Grants == nil {
			p.Grants = map[string][]string{}
		}
		p.Grants[args[0]] = args[1:]
	case "databases":
		if p.Databases = d.RemainingArgs(); len(p.Databases) == 0 {
			return true, d.ArgErr()
		}
	case "role_prefix":
		return true, oneArg(d, &p.RolePrefix)
	case "marker_role":
		return true, oneArg(d, &p.MarkerRole)
	case "ttl":
		return true, durationArg(d, &p.TTL)
	case "max_ttl":
		return true, durationArg(d, &p.MaxTTL)
	case "janitor_interval":
		return true, durationArg(d, &p.JanitorInterval)
	case "on_expiry":
		return true, oneArg(d, &p.OnExpiry)
	case "expired_roles":
		return true, oneArg(d, &p.ExpiredRoles)
	default:
		return false, nil
	}
	return true, nil
}

// parseAdmin parses `admin <connection string> { password_env | password_file | ca_file }`.
func parseAdmin(d *caddyfile.Dispenser, p *PostgresPolicy) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	p.Admin = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *string
		switch d.Val() {
		case "password_env":
			dst = &p.AdminPasswordEnv
		case "password_file":
			dst = &p.AdminPasswordFile
		case "ca_file":
			dst = &p.AdminCAFile
		default:
			return d.Errf("unknown admin subdirective %q", d.Val())
		}
		if *dst != "" {
			return d.Errf("%s is set twice", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*PostgresHandler)(nil)

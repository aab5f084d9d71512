package caddyiap

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax (docs/caddyfile.md):
//
//	iap [<matcher>] {
//	    issuer <issuer-url> {
//	        audience <aud> [<aud>...]
//	        jwks_url <url> | jwks_file <path> | pem_file <path> [<path>...]
//	        algorithms <alg> [<alg>...]
//	        leeway|max_lifetime|kid_miss_cooldown|refresh_min|refresh_max|fetch_timeout <duration>
//	        trust_unverified_email
//	    }
//	    role <name> claim <claim> <op> <value> [claim <claim> <op> <value>...]
//	    role <name> {
//	        claim <claim> <op> <value>
//	    }
//	    allow <role> <methods> <path> [<path>...]
//	    assertion {
//	        audience <aud>
//	        issuer <iss>
//	        ttl <duration>
//	        header <name>
//	        alg ES256|EdDSA
//	    }
//	    jwks_path <path>|off
//	    headers {
//	        user|email|roles <name>|off
//	    }
//	    token_source bearer | header <name> | cookie <name>
//	    pass_token
//	    cache_size <n>
//	    max_token_size <bytes>
//	    audit
//	    postgres_credentials [<path>] { <iap_postgres policy> connect <host:port> }
//	    login {
//	        client_id <id>
//	        client_secret_env <VAR> | client_secret_file <path>
//	        issuer <issuer-url>
//	        scopes <scope> [<scope>...]
//	        cookie_name <name>
//	        session_lifetime|idle_timeout <duration>
//	        path <path>
//	        redirect_url <url>
//	        cosmos_endpoint <url>
//	    }
//	}
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; see parseCaddyfile for the
// syntax. Every mistake is reported with the file and line it is on.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	directive := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}

	for d.NextBlock(0) {
		switch d.Val() {
		case "issuer":
			iss, err := parseIssuer(d)
			if err != nil {
				return err
			}
			for _, other := range h.Issuers {
				if other.Issuer == iss.Issuer {
					return d.Errf("issuer %q is configured twice", iss.Issuer)
				}
			}
			h.Issuers = append(h.Issuers, iss)

		case "role":
			rule, err := parseRole(d)
			if err != nil {
				return err
			}
			h.Roles = append(h.Roles, rule)

		case "allow":
			tok := d.Token()
			args := d.RemainingArgs()
			if len(args) < 3 {
				return d.ArgErr()
			}
			rule := AllowRule{Role: args[0], Paths: args[2:]}
			for m := range strings.SplitSeq(args[1], ",") {
				rule.Methods = append(rule.Methods, strings.ToUpper(strings.TrimSpace(m)))
			}
			if err := rule.validate(); err != nil {
				return errAt(tok, "allow: %v", err)
			}
			h.Allow = append(h.Allow, rule)

		case "assertion":
			if h.Assertion != nil {
				return d.Err("assertion is configured twice")
			}
			a, err := parseAssertion(d)
			if err != nil {
				return err
			}
			h.Assertion = a

		case "jwks_path":
			if h.JWKSPath != "" {
				return d.Err("jwks_path is set twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.JWKSPath = d.Val()
			if p := h.JWKSPath; p != off && !strings.HasPrefix(p, "/") {
				return d.Errf("jwks_path %q must start with /", p)
			}
			if d.NextArg() {
				return d.ArgErr()
			}

		case "headers":
			if h.Headers != nil {
				return d.Err("headers is configured twice")
			}
			n, err := parseHeaders(d)
			if err != nil {
				return err
			}
			h.Headers = n

		case "token_source":
			tok := d.Token()
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return d.ArgErr()
			}
			src := TokenSource{Kind: args[0]}
			if len(args) == 2 {
				src.Name = args[1]
			}
			if err := src.validate(); err != nil {
				return errAt(tok, "token_source: %v", err)
			}
			if slices.Contains(h.TokenSources, src) {
				return errAt(tok, "token_source %s %s is listed twice", src.Kind, src.Name)
			}
			h.TokenSources = append(h.TokenSources, src)

		case "cache_size":
			if h.CacheSize != nil {
				return d.Err("cache_size is set twice")
			}
			n, err := intArg(d)
			if err != nil {
				return err
			}
			h.CacheSize = &n

		case "max_token_size":
			if h.MaxTokenSize != 0 {
				return d.Err("max_token_size is set twice")
			}
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if n == 0 {
				return d.Err("max_token_size must be positive")
			}
			h.MaxTokenSize = n

		case "pass_token":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.PassToken {
				return d.Err("pass_token is set twice")
			}
			h.PassToken = true

		case "audit":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Audit = true

		case "login":
			if h.Login != nil {
				return d.Err("login is configured twice")
			}
			l, err := parseLogin(d)
			if err != nil {
				return err
			}
			h.Login = l

		case "postgres_credentials":
			if h.PostgresCredentials != nil {
				return d.Err("postgres_credentials is configured twice")
			}
			c, err := parsePostgresCredentials(d)
			if err != nil {
				return err
			}
			h.PostgresCredentials = c

		default:
			return d.Errf("unknown subdirective %q", d.Val())
		}
	}

	if len(h.Issuers) == 0 {
		return errAt(directive, "iap: at least one issuer is required")
	}
	if h.Login != nil {
		if err := h.Login.validate(h.Issuers); err != nil {
			return errAt(directive, "iap: login: %v", err)
		}
	}
	if h.JWKSPath != "" && h.Assertion == nil {
		return errAt(directive, "iap: jwks_path needs an assertion block (there are no keys to publish)")
	}
	return nil
}

// parseIssuer parses `issuer <url> { ... }`.
func parseIssuer(d *caddyfile.Dispenser) (Issuer, error) {
	tok := d.Token()
	var iss Issuer
	if !d.Args(&iss.Issuer) {
		return iss, d.ArgErr()
	}
	if d.NextArg() {
		return iss, d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		// audience and pem_file accumulate; everything else may appear once.
		if sub != "audience" && sub != "pem_file" {
			if seen[sub] {
				return iss, d.Errf("issuer %s: %s is set twice", iss.Issuer, sub)
			}
			seen[sub] = true
		}
		switch sub {
		case "audience":
			auds := d.RemainingArgs()
			if len(auds) == 0 {
				return iss, d.ArgErr()
			}
			iss.Audiences = append(iss.Audiences, auds...)
		case "jwks_url":
			if err := oneArg(d, &iss.JWKSURL); err != nil {
				return iss, err
			}
		case "jwks_file":
			if err := oneArg(d, &iss.JWKSFile); err != nil {
				return iss, err
			}
		case "pem_file":
			files := d.RemainingArgs()
			if len(files) == 0 {
				return iss, d.ArgErr()
			}
			iss.PEMFiles = append(iss.PEMFiles, files...)
		case "algorithms":
			algs := d.RemainingArgs()
			if len(algs) == 0 {
				return iss, d.ArgErr()
			}
			for _, alg := range algs {
				if !slices.Contains(knownAlgorithms, alg) {
					return iss, d.Errf("unknown algorithm %q (known: %s)", alg, strings.Join(knownAlgorithms, " "))
				}
			}
			iss.Algorithms = algs
		case "leeway":
			if err := durationArg(d, &iss.Leeway); err != nil {
				return iss, err
			}
		case "max_lifetime":
			if err := durationArg(d, &iss.MaxLifetime); err != nil {
				return iss, err
			}
		case "kid_miss_cooldown":
			if err := durationArg(d, &iss.KidMissCooldown); err != nil {
				return iss, err
			}
		case "refresh_min":
			if err := durationArg(d, &iss.RefreshMin); err != nil {
				return iss, err
			}
		case "refresh_max":
			if err := durationArg(d, &iss.RefreshMax); err != nil {
				return iss, err
			}
		case "fetch_timeout":
			if err := durationArg(d, &iss.FetchTimeout); err != nil {
				return iss, err
			}
		case "trust_unverified_email":
			if d.NextArg() {
				return iss, d.ArgErr()
			}
			iss.TrustUnverifiedEmail = true
		default:
			return iss, d.Errf("unknown issuer subdirective %q", sub)
		}
	}
	if err := iss.validate(); err != nil {
		return iss, errAt(tok, "%v", err)
	}
	return iss, nil
}

// parseRole parses `role <name> claim <c> <op> <v> [claim ...]` and the block form.
func parseRole(d *caddyfile.Dispenser) (RoleRule, error) {
	tok := d.Token()
	var rule RoleRule
	if !d.NextArg() {
		return rule, d.ArgErr()
	}
	rule.Role = d.Val()
	// Inline conditions, four tokens each.
	for d.NextArg() {
		c, err := parseClaim(d)
		if err != nil {
			return rule, err
		}
		rule.When = append(rule.When, c)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		c, err := parseClaim(d)
		if err != nil {
			return rule, err
		}
		if d.NextArg() {
			return rule, d.ArgErr()
		}
		rule.When = append(rule.When, c)
	}
	if len(rule.When) == 0 {
		return rule, errAt(tok, "role %s: at least one `claim <claim> <op> <value>` is required", rule.Role)
	}
	if err := rule.validate(); err != nil {
		return rule, errAt(tok, "%v", err)
	}
	return rule, nil
}

// parseClaim parses `claim <claim> <op> <value>` starting at the `claim` token.
func parseClaim(d *caddyfile.Dispenser) (ClaimCondition, error) {
	var c ClaimCondition
	if d.Val() != "claim" {
		return c, d.Errf("expected `claim <claim> <op> <value>`, found %q", d.Val())
	}
	if !d.Args(&c.Claim, &c.Op) {
		return c, d.ArgErr()
	}
	if !slices.Contains(knownOps, c.Op) {
		return c, d.Errf("unknown op %q (known: %s)", c.Op, strings.Join(knownOps, ", "))
	}
	if !d.Args(&c.Value) {
		return c, d.ArgErr()
	}
	if c.Value == "" {
		return c, d.Errf("claim %s %s: empty value", c.Claim, c.Op)
	}
	return c, nil
}

// parseAssertion parses `assertion { ... }`.
func parseAssertion(d *caddyfile.Dispenser) (*Assertion, error) {
	tok := d.Token()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	a := new(Assertion)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("assertion: %s is set twice", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "audience":
			err = oneArg(d, &a.Audience)
		case "issuer":
			err = oneArg(d, &a.Issuer)
		case "ttl":
			err = durationArg(d, &a.TTL)
		case "header":
			err = oneArg(d, &a.Header)
		case "alg":
			if err = oneArg(d, &a.Alg); err == nil && !slices.Contains(assertionAlgorithms, a.Alg) {
				err = d.Errf("assertion alg %q: want %s", a.Alg, strings.Join(assertionAlgorithms, " or "))
			}
		default:
			err = d.Errf("unknown assertion subdirective %q", sub)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := a.validate(); err != nil {
		return nil, errAt(tok, "assertion: %v", err)
	}
	return a, nil
}

// parseHeaders parses `headers { user|email|roles <name>|off }`.
func parseHeaders(d *caddyfile.Dispenser) (*HeaderNames, error) {
	tok := d.Token()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	n := new(HeaderNames)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var field *string
		switch d.Val() {
		case "user":
			field = &n.User
		case "email":
			field = &n.Email
		case "roles":
			field = &n.Roles
		default:
			return nil, d.Errf("unknown headers subdirective %q (known: user, email, roles)", d.Val())
		}
		if *field != "" {
			return nil, d.Errf("headers: %s is set twice", d.Val())
		}
		if err := oneArg(d, field); err != nil {
			return nil, err
		}
	}
	if err := n.validate(); err != nil {
		return nil, errAt(tok, "headers: %v", err)
	}
	return n, nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// durationArg reads exactly one duration (Caddy syntax, `d` allowed) into dst.
func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: bad duration %q: %v", name, s, err)
	}
	if dur < 0 {
		return d.Errf("%s: duration %q is negative", name, s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// intArg reads exactly one non-negative integer.
func intArg(d *caddyfile.Dispenser) (int, error) {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, d.Errf("%s: %q is not a non-negative integer", name, s)
	}
	return n, nil
}

// errAt reports an error at tok's file and line, exactly as d.Errf does for the current token
// (including the import chain). Used for mistakes found after a block is read, so the message
// points at the line that opened it.
func errAt(tok caddyfile.Token, format string, args ...any) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

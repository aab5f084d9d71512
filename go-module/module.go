// Package caddyiap is caddy-iap's Caddy module: the `iap` HTTP handler, an identity-aware
// proxy. It is glue only: it parses the config, hands it to the Rust engine once, makes one
// call across the C ABI per request, and applies the engine's decision (DESIGN.md).
package caddyiap

import (
	"cmp"
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("iap", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("iap", httpcaddyfile.Before, "basic_auth")
}

// Defaults that the Go side applies itself. The engine applies its own (docs/caddyfile.md).
const (
	// DefaultJWKSPath is where the assertion public keys are served when an assertion is
	// configured and jwks_path is not set.
	DefaultJWKSPath = "/.well-known/iap/jwks.json"
	// DefaultAssertionAlg signs assertions when assertion.alg is not set.
	DefaultAssertionAlg = "ES256"
	// DefaultAssertionHeader carries the assertion when assertion.header is not set (the
	// engine's default too; the Go side needs it to validate and to warn about logging).
	DefaultAssertionHeader = "X-IAP-Assertion"

	// off disables a header name or the JWKS path.
	off = "off"
)

// Token source kinds.
const (
	SourceBearer = "bearer"
	SourceHeader = "header"
	SourceCookie = "cookie"
)

// Handler is an identity-aware proxy. It verifies the token a request carries (an OIDC or
// JWT access token) against the configured issuers, maps its claims to roles, checks that
// those roles may perform the request, and only then passes the request on, with identity
// headers and, if configured, a short-lived signed identity assertion for the upstream.
// Identity headers a client sent itself are always removed first.
//
// Denials are returned as handler errors, so `handle_errors` can serve them: 401 for a
// missing or invalid token (with a `WWW-Authenticate` challenge), 403 when the roles do not
// allow the request, 400 for an ambiguous request, 503 while an issuer's keys are not
// available yet.
//
// After an allowed request, these placeholders are set: `{http.auth.user.id}` (the subject),
// `{http.auth.user.email}`, `{http.auth.user.name}`, `{http.auth.user.roles}` (comma
// separated) and `{http.auth.user.issuer}`, empty when the token lacks the claim. Values set
// for them earlier in the route are replaced; a handler after this one that sets one (as `vars`
// does for `{http.auth.user.id}`) overrides it.
//
// All identity decisions are made by the caddy-iap Rust engine, linked in through cgo.
type Handler struct {
	// Trusted token issuers; at least one. A token is checked against the issuer its `iss`
	// claim names, compared byte for byte.
	Issuers []Issuer `json:"issuers,omitempty"`

	// Claim rules granting roles. Several rules may grant the same role (OR); every
	// condition of one rule must hold (AND).
	Roles []RoleRule `json:"roles,omitempty"`

	// What roles may do. A request no rule allows is denied with 403.
	Allow []AllowRule `json:"allow,omitempty"`

	// A signed identity assertion (a short-lived JWT) set on the upstream request. Off when
	// absent. Signing keys are kept in Caddy's storage, shared by a cluster.
	Assertion *Assertion `json:"assertion,omitempty"`

	// Path where the assertion public keys are served as a JWKS document, to GET and HEAD
	// requests, without authentication. Only with an assertion. Default:
	// `/.well-known/iap/jwks.json`; `off` serves nothing.
	JWKSPath string `json:"jwks_path,omitempty"`

	// Names of the identity headers set for the upstream.
	Headers *HeaderNames `json:"headers,omitempty"`

	// Where the token is read from, tried in order; the first source holding one is used.
	// Default: a bearer token in the `Authorization` header.
	TokenSources []TokenSource `json:"token_sources,omitempty"`

	// Entries in the verified-token cache. Default 65536; 0 turns the cache off.
	CacheSize *int `json:"cache_size,omitempty"`

	// Longest token accepted, in bytes. Default 8192.
	MaxTokenSize int `json:"max_token_size,omitempty"`

	// Pass the caller's token on to the upstream. By default it is removed from an allowed
	// request before it goes on: the `Authorization` header of a bearer token, a token
	// source's header, a token source's cookie (other cookies are kept).
	PassToken bool `json:"pass_token,omitempty"`

	// Log every allowed request at info level (denials always are); default is debug.
	Audit bool `json:"audit,omitempty"`

	// Vault-style PostgreSQL credentials: a POST with the caller's token returns a database
	// login minted for the caller's roles. Off when absent.
	PostgresCredentials *PostgresCredentials `json:"postgres_credentials,omitempty"`

	// Browser sign-in: requests without a bearer token are decided on a session cookie,
	// and browsers without one are sent to the identity provider. Off when absent.
	Login *Login `json:"login,omitempty"`

	logger   *zap.Logger
	engine   engine        // the Rust engine; nil until provisioned
	metrics  *metrics      // never nil once provisioned
	owned    []string      // headers the engine owns, for paths where no decision exists
	jwksPath string        // effective JWKS path; empty when not served
	sources  []TokenSource // effective token sources

	pgGateway pgGateway // the PostgreSQL gateway, when postgres_credentials is set
	credsPath string    // effective credentials path; empty when not served
	janitor   *janitor  // sweeps the gateway's expired roles

	signIn    signIn // the browser sign-in, when login is set
	loginPath string // effective login path; empty when login is off
}

// Issuer is one trusted token issuer and how to get its verification keys. Keys come from
// OIDC discovery under the issuer URL unless one of jwks_url, jwks_file or pem_files is set.
type Issuer struct {
	// The issuer URL, compared byte for byte with the token's `iss` (a trailing slash
	// matters).
	Issuer string `json:"issuer,omitempty"`

	// Accepted audiences; a token must carry at least one of them in `aud`. Required.
	Audiences []string `json:"audiences,omitempty"`

	// Fetch keys from this JWKS URL instead of using OIDC discovery.
	JWKSURL string `json:"jwks_url,omitempty"`

	// Read a static JWKS document from this file when the config loads (offline use).
	JWKSFile string `json:"jwks_file,omitempty"`

	// Read static public keys (SPKI PEM) from these files when the config loads.
	PEMFiles []string `json:"pem_files,omitempty"`

	// Accepted signature algorithms. Default: RS256, PS256, ES256, ES384, EdDSA.
	Algorithms []string `json:"algorithms,omitempty"`

	// Clock-skew leeway for `exp`, `nbf` and `iat`. Default 60s. Rounded up to whole seconds;
	// zero means the default.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// Longest accepted token lifetime. Default 24h.
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// Least time between key fetches triggered by an unknown `kid`. Default 30s.
	KidMissCooldown caddy.Duration `json:"kid_miss_cooldown,omitempty"`

	// Shortest interval between scheduled key refreshes. Default 5m.
	RefreshMin caddy.Duration `json:"refresh_min,omitempty"`

	// Longest interval between scheduled key refreshes. Default 24h.
	RefreshMax caddy.Duration `json:"refresh_max,omitempty"`

	// Timeout of one key fetch. Default 5s. Rounded up to whole milliseconds.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// Use the token's `email` even when `email_verified` is not `true`. Off by default: an
	// unverified email is treated as absent (no role rule on `email` matches it, no email
	// header, no `email` in the assertion), because many issuers let users set any email.
	// Only for an issuer whose emails are all verified but which does not say so.
	TrustUnverifiedEmail bool `json:"trust_unverified_email,omitempty"`
}

// RoleRule grants a role when all its conditions hold.
type RoleRule struct {
	// The role granted.
	Role string `json:"role,omitempty"`

	// Conditions on the token's claims, all required.
	When []ClaimCondition `json:"when,omitempty"`
}

// ClaimCondition is one test on one claim. Claims may be strings or arrays of strings; any
// element may match. Only string values ever match.
type ClaimCondition struct {
	// Claim name. Names starting with `http://` or `https://` are taken literally (namespaced
	// claims); others are dot-separated paths such as `realm_access.roles`.
	Claim string `json:"claim,omitempty"`

	// The test: `equals`, `contains` (same as equals, reads better for arrays), `has`
	// (space-separated list such as `scope`, or array), `prefix` or `suffix`.
	Op string `json:"op,omitempty"`

	// The operand. Must not be empty.
	Value string `json:"value,omitempty"`
}

// AllowRule lets a role perform some methods on some paths.
type AllowRule struct {
	// The role this grant is for.
	Role string `json:"role,omitempty"`

	// HTTP methods, upper case, or `*` for any.
	Methods []string `json:"methods,omitempty"`

	// Path patterns: `*` (any), `/exact`, `/prefix/*` or `*.suffix`. Matched against the
	// escaped request path.
	Paths []string `json:"paths,omitempty"`
}

// Assertion configures the identity assertion minted for the upstream.
type Assertion struct {
	// `aud` of the assertions: who they are for. Required.
	Audience string `json:"audience,omitempty"`

	// `iss` of the assertions. Default `caddy-iap`.
	Issuer string `json:"issuer,omitempty"`

	// Lifetime of one assertion. Default 5m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// Request header carrying the assertion. Default `X-IAP-Assertion`.
	Header string `json:"header,omitempty"`

	// Signature algorithm: `ES256` (default) or `EdDSA`. The key is generated on first use
	// and kept in Caddy's storage under `iap/assertion/<alg>/signing-key.pk8.b64`.
	Alg string `json:"alg,omitempty"`
}

// HeaderNames names the identity headers set on the upstream request. Empty means the
// default; `off` turns a header off. Client-sent copies are removed either way.
type HeaderNames struct {
	// The subject. Default `X-IAP-User`.
	User string `json:"user,omitempty"`

	// The email. Default `X-IAP-Email`.
	Email string `json:"email,omitempty"`

	// The roles, comma separated. Default `X-IAP-Roles`.
	Roles string `json:"roles,omitempty"`
}

// TokenSource is one place a token is read from.
type TokenSource struct {
	// `bearer` (exactly one `Authorization: Bearer <token>` header), `header` (the named
	// header's whole value, sent once) or `cookie` (the named cookie, sent once).
	Kind string `json:"kind,omitempty"`

	// The header or cookie name; not used with `bearer`.
	Name string `json:"name,omitempty"`
}

// engine is the Rust engine as the handler sees it: *ffi.Engine when built with cgo, a fake
// in tests.
type engine interface {
	// Decide runs one request through the engine.
	Decide(ffi.Request) (ffi.Decision, error)
	// PublicJWKS returns the assertion public keys as a JWKS document; nil when none.
	PublicJWKS() []byte
	// Stats returns the engine's counters; false once closed.
	Stats() (ffi.Stats, bool)
	// Close makes later calls fail (the engine is freed once unreachable); idempotent.
	Close()
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.iap",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Validate checks the config's shape without I/O. Deeper checks (claim paths, URLs, key
// material) are the engine's, made when it is created.
func (h *Handler) Validate() error {
	if len(h.Issuers) == 0 {
		return errors.New("at least one issuer is required")
	}
	for i := range h.Issuers {
		if err := h.Issuers[i].validate(); err != nil {
			return fmt.Errorf("issuers[%d]: %w", i, err)
		}
		for j := range i {
			if h.Issuers[j].Issuer == h.Issuers[i].Issuer {
				return fmt.Errorf("issuers[%d]: issuer %q is configured twice", i, h.Issuers[i].Issuer)
			}
		}
	}
	for i := range h.Roles {
		if err := h.Roles[i].validate(); err != nil {
			return fmt.Errorf("roles[%d]: %w", i, err)
		}
	}
	for i := range h.Allow {
		if err := h.Allow[i].validate(); err != nil {
			return fmt.Errorf("allow[%d]: %w", i, err)
		}
	}
	if h.Assertion != nil {
		if err := h.Assertion.validate(); err != nil {
			return fmt.Errorf("assertion: %w", err)
		}
	}
	if err := validateJWKSPath(h.JWKSPath, h.Assertion != nil); err != nil {
		return fmt.Errorf("jwks_path: %w", err)
	}
	if h.Headers != nil {
		if err := h.Headers.validate(); err != nil {
			return fmt.Errorf("headers: %w", err)
		}
	}
	for i := range h.TokenSources {
		if err := h.TokenSources[i].validate(); err != nil {
			return fmt.Errorf("token_sources[%d]: %w", i, err)
		}
	}
	if err := h.validateHeaderUse(); err != nil {
		return err
	}
	if err := h.validateCredentialGrants(); err != nil {
		return err
	}
	if h.Login != nil {
		if err := h.Login.validate(h.Issuers); err != nil {
			return fmt.Errorf("login: %w", err)
		}
	}
	if h.CacheSize != nil && *h.CacheSize < 0 {
		return fmt.Errorf("cache_size: %d is negative", *h.CacheSize)
	}
	if h.MaxTokenSize < 0 {
		return fmt.Errorf("max_token_size: %d is negative", h.MaxTokenSize)
	}
	return nil
}

// Cleanup retires the engine: its counters stop being reported, and its memory is freed by
// the garbage collector once no request holds this handler any more. It does not free the
// engine itself because, on a reload, Caddy's http app starts its old servers' graceful
// shutdown without waiting for it (it waits only when the process exits) and then runs
// Cleanup: requests still being served by the old config must keep a working engine. It
// works after a failed Provision and when called twice.
func (h *Handler) Cleanup() error {
	h.janitor.Stop()
	if h.signIn != nil {
		h.signIn.Close()
	}
	if h.engine == nil {
		return nil
	}
	if h.metrics != nil {
		h.metrics.untrack(h.engine)
	}
	return nil
}

// setDefaults fills the runtime fields derived from the config.
func (h *Handler) setDefaults() {
	h.sources = h.TokenSources
	if len(h.sources) == 0 {
		h.sources = []TokenSource{{Kind: SourceBearer}}
	}
	h.jwksPath = ""
	if h.Assertion != nil && h.JWKSPath != off {
		h.jwksPath = cmp.Or(h.JWKSPath, DefaultJWKSPath)
	}
	h.credsPath = ""
	if c := h.PostgresCredentials; c != nil {
		h.credsPath = cmp.Or(c.Path, DefaultCredentialsPath)
	}
	h.loginPath = ""
	if h.Login != nil {
		h.loginPath = h.Login.path()
	}
}

// algorithms the engine knows (rust/core/src/alg.rs). No `none`, no HMAC.
var knownAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

// assertion signing algorithms.
var assertionAlgorithms = []string{"ES256", "EdDSA"}

// claim ops (ClaimOp in rust/core/src/config.rs).
var knownOps = []string{"equals", "contains", "has", "prefix", "suffix"}

func (iss *Issuer) validate() error {
	if iss.Issuer == "" {
		return errors.New("issuer URL is required")
	}
	if len(iss.Audiences) == 0 {
		return fmt.Errorf("issuer %q: at least one audience is required", iss.Issuer)
	}
	if slices.Contains(iss.Audiences, "") {
		return fmt.Errorf("issuer %q: empty audience", iss.Issuer)
	}
	sources := 0
	for _, set := range []bool{iss.JWKSURL != "", iss.JWKSFile != "", len(iss.PEMFiles) > 0} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return fmt.Errorf("issuer %q: jwks_url, jwks_file and pem_file are mutually exclusive", iss.Issuer)
	}
	if iss.JWKSURL != "" {
		if u, err := url.Parse(iss.JWKSURL); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("issuer %q: jwks_url %q is not an absolute URL", iss.Issuer, iss.JWKSURL)
		}
	}
	if slices.Contains(iss.PEMFiles, "") {
		return fmt.Errorf("issuer %q: empty pem_file path", iss.Issuer)
	}
	for _, alg := range iss.Algorithms {
		if !slices.Contains(knownAlgorithms, alg) {
			return fmt.Errorf("issuer %q: unknown algorithm %q (known: %s)", iss.Issuer, alg, strings.Join(knownAlgorithms, " "))
		}
	}
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{
		{"leeway", iss.Leeway}, {"max_lifetime", iss.MaxLifetime}, {"kid_miss_cooldown", iss.KidMissCooldown},
		{"refresh_min", iss.RefreshMin}, {"refresh_max", iss.RefreshMax}, {"fetch_timeout", iss.FetchTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("issuer %q: %s is negative", iss.Issuer, d.name)
		}
	}
	if iss.RefreshMin > 0 && iss.RefreshMax > 0 && iss.RefreshMin > iss.RefreshMax {
		return fmt.Errorf("issuer %q: refresh_min is longer than refresh_max", iss.Issuer)
	}
	return nil
}

func (r *RoleRule) validate() error {
	if r.Role == "" {
		return errors.New("role name is required")
	}
	if len(r.When) == 0 {
		return fmt.Errorf("role %q: at least one claim condition is required", r.Role)
	}
	for i, c := range r.When {
		if err := c.validate(); err != nil {
			return fmt.Errorf("role %q: when[%d]: %w", r.Role, i, err)
		}
	}
	return nil
}

func (c *ClaimCondition) validate() error {
	if c.Claim == "" {
		return errors.New("claim name is required")
	}
	if !slices.Contains(knownOps, c.Op) {
		return fmt.Errorf("unknown op %q (known: %s)", c.Op, strings.Join(knownOps, ", "))
	}
	if c.Value == "" {
		return fmt.Errorf("claim %q: empty value", c.Claim)
	}
	return nil
}

func (a *AllowRule) validate() error {
	if a.Role == "" {
		return errors.New("role name is required")
	}
	if len(a.Methods) == 0 {
		return fmt.Errorf("role %q: at least one method (or *) is required", a.Role)
	}
	for _, m := range a.Methods {
		if m != "*" && (!httpguts.ValidHeaderFieldName(m) || m != strings.ToUpper(m)) {
			return fmt.Errorf("role %q: method %q is not an upper-case HTTP method or *", a.Role, m)
		}
	}
	if len(a.Paths) == 0 {
		return fmt.Errorf("role %q: at least one path (or *) is required", a.Role)
	}
	for _, p := range a.Paths {
		if err := validatePathPattern(p); err != nil {
			return fmt.Errorf("role %q: %w", a.Role, err)
		}
	}
	return nil
}

// validatePathPattern checks the shape of `*`, `/exact`, `/prefix/*` and `*.suffix`.
func validatePathPattern(p string) error {
	switch {
	case p == "*":
	case strings.HasPrefix(p, "/"):
		if strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			return fmt.Errorf("path %q: `*` may only end a prefix pattern", p)
		}
	case strings.HasPrefix(p, "*") && len(p) > 1:
		if strings.Contains(p[1:], "*") {
			return fmt.Errorf("path %q: `*` may only start a suffix pattern", p)
		}
	default:
		return fmt.Errorf("path %q: want *, /exact, /prefix/* or *.suffix", p)
	}
	return nil
}

func (a *Assertion) validate() error {
	if a.Audience == "" {
		return errors.New("audience is required")
	}
	if a.Alg != "" && !slices.Contains(assertionAlgorithms, a.Alg) {
		return fmt.Errorf("alg %q: want %s", a.Alg, strings.Join(assertionAlgorithms, " or "))
	}
	if a.TTL < 0 {
		return errors.New("ttl is negative")
	}
	if a.Header != "" && !httpguts.ValidHeaderFieldName(a.Header) {
		return fmt.Errorf("header %q is not a valid header name", a.Header)
	}
	return nil
}

// alg returns the effective signing algorithm.
func (a *Assertion) alg() string {
	return cmp.Or(a.Alg, DefaultAssertionAlg)
}

// header returns the effective header name.
func (a *Assertion) header() string {
	return cmp.Or(a.Header, DefaultAssertionHeader)
}

// logFilter is the Caddyfile log setting that keeps a request header's values out of a log.
// The field path names the header as Go canonicalizes it, which is how Caddy logs it.
func logFilter(header string) string {
	return "log { format filter { request>headers>" + textproto.CanonicalMIMEHeaderKey(header) + " delete } }"
}

func (n *HeaderNames) validate() error {
	for _, f := range []struct{ field, name string }{{"user", n.User}, {"email", n.Email}, {"roles", n.Roles}} {
		if f.name != "" && f.name != off && !httpguts.ValidHeaderFieldName(f.name) {
			return fmt.Errorf("%s: %q is not a valid header name", f.field, f.name)
		}
	}
	return nil
}

// reservedHeaders may be neither an identity header nor a token header: setting or stripping
// them would break the request itself (or, for Authorization and Cookie, strip the token
// before it is read).
var reservedHeaders = []string{"Authorization", "Cookie", "Host", "Connection", "Content-Length",
	"Content-Type", "Transfer-Encoding", "Te", "Upgrade", "Proxy-Authorization"}

// validateHeaderUse refuses header names used for two things at once (user and email both
// X-A; a token read from a header we strip) and reserved names.
func (h *Handler) validateHeaderUse() error {
	type use struct{ what, name string }
	var uses []use
	names := HeaderNames{User: "X-IAP-User", Email: "X-IAP-Email", Roles: "X-IAP-Roles"}
	if h.Headers != nil {
		names.User = cmp.Or(h.Headers.User, names.User)
		names.Email = cmp.Or(h.Headers.Email, names.Email)
		names.Roles = cmp.Or(h.Headers.Roles, names.Roles)
	}
	for _, u := range []use{{"headers user", names.User}, {"headers email", names.Email}, {"headers roles", names.Roles}} {
		if u.name != off {
			uses = append(uses, u)
		}
	}
	if h.Assertion != nil {
		if strings.EqualFold(h.Assertion.Header, off) {
			return errors.New("assertion: header cannot be off; remove the assertion block instead")
		}
		uses = append(uses, use{"assertion header", h.Assertion.header()})
	}
	for _, src := range h.TokenSources {
		if src.Kind != SourceHeader {
			continue
		}
		// The engine strips the default names even when renamed: a token there is never read.
		for _, d := range []string{"X-IAP-User", "X-IAP-Email", "X-IAP-Roles", DefaultAssertionHeader} {
			if strings.EqualFold(src.Name, d) {
				return fmt.Errorf("token_source header: %s is an identity header caddy-iap always strips", src.Name)
			}
		}
		uses = append(uses, use{"token_source header", src.Name})
	}
	for i, u := range uses {
		for _, r := range reservedHeaders {
			if strings.EqualFold(u.name, r) {
				return fmt.Errorf("%s: %s is reserved", u.what, u.name)
			}
		}
		for _, other := range uses[:i] {
			if strings.EqualFold(u.name, other.name) {
				return fmt.Errorf("%s: %s is already used by %s", u.what, u.name, other.what)
			}
		}
	}
	return nil
}

func (s *TokenSource) validate() error {
	switch s.Kind {
	case SourceBearer:
		if s.Name != "" {
			return errors.New("bearer takes no name (it reads the Authorization header)")
		}
	case SourceHeader, SourceCookie:
		if s.Name == "" {
			return fmt.Errorf("%s needs a name", s.Kind)
		}
		// Header and cookie names are both HTTP tokens.
		if !httpguts.ValidHeaderFieldName(s.Name) {
			return fmt.Errorf("%s name %q is not a valid token", s.Kind, s.Name)
		}
	default:
		return fmt.Errorf("unknown kind %q (known: bearer, header, cookie)", s.Kind)
	}
	return nil
}

func validateJWKSPath(p string, hasAssertion bool) error {
	switch {
	case p == "":
		return nil
	case !hasAssertion:
		return errors.New("needs an assertion (there are no keys to publish)")
	case p == off:
		return nil
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must start with /", p)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

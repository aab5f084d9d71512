package caddyiap

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// DefaultLoginPath is where the sign-in's own pages live when login.path is not set:
// `<path>/` (the access page), `<path>/callback`, `<path>/sign_out`, `<path>/signed_out`.
const DefaultLoginPath = "/.iap"

// Login signs browsers in through the identity provider (OpenID Connect authorization code
// flow with PKCE). A request with no bearer token is decided on its session instead: a
// browser without one is sent to the provider and back; anything that is not a browser
// navigation gets 401. The session is a sealed cookie; its keys live in Caddy's storage.
type Login struct {
	// The issuer to sign in with; one of the handler's issuers. Default: the only issuer.
	Issuer string `json:"issuer,omitempty"`

	// The gateway's client id at the provider. Required. ID tokens must be for it.
	ClientID string `json:"client_id,omitempty"`

	// The environment variable holding the client secret; or ClientSecretFile.
	ClientSecretEnv string `json:"client_secret_env,omitempty"`

	// The file holding the client secret.
	ClientSecretFile string `json:"client_secret_file,omitempty"`

	// Scopes to ask for; `openid` is always added. Default: openid email profile. Add
	// offline_access where the provider needs it to issue refresh tokens.
	Scopes []string `json:"scopes,omitempty"`

	// The session cookie's name. Default `__Host-caddy-iap` (host-only, Secure, Path=/).
	CookieName string `json:"cookie_name,omitempty"`

	// How long a session lasts after sign-in, whatever happens. Default 12h.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// A session unused for this long ends. Default 1h.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Where the sign-in's pages live (see DefaultLoginPath).
	Path string `json:"path,omitempty"`

	// The callback URL registered at the provider. Default: this request's scheme and host
	// with `<path>/callback`.
	RedirectURL string `json:"redirect_url,omitempty"`

	// Cosmos DB gateways (iap_cosmos sites) the access page tells people about: where to
	// point the Azure Cosmos SDK, with their token instead of a key.
	CosmosEndpoints []string `json:"cosmos_endpoints,omitempty"`
}

// signIn is what the handler needs of the Rust sign-in (ffi.SignIn).
type signIn interface {
	Begin(returnTo, redirectURI, cookies string) (ffi.SignInOutcome, error)
	Callback(rawQuery, cookies, redirectURI string) (ffi.SignInOutcome, error)
	Session(cookies string) (ffi.SignInOutcome, error)
	SignOut(cookies, postLogoutURI string) (ffi.SignInOutcome, error)
	Close()
}

// cookieKeyStorageKey holds the session cookie keys: base64, one a line, the first seals and
// all open. To rotate, put a new key on the first line, keep the old ones below it for a
// session lifetime, and `caddy reload --force` every instance.
const cookieKeyStorageKey = "iap/login/cookie-keys.b64"

func (l *Login) validate(issuers []Issuer) error {
	if l.ClientID == "" {
		return errors.New("client_id is required")
	}
	if (l.ClientSecretEnv == "") == (l.ClientSecretFile == "") {
		return errors.New("set exactly one of client_secret_env and client_secret_file")
	}
	iss, err := l.issuer(issuers)
	if err != nil {
		return err
	}
	for _, i := range issuers {
		if i.Issuer == iss && slices.Contains(i.Audiences, l.ClientID) {
			return fmt.Errorf("client_id %q is also an audience of issuer %s: ID tokens for it would pass as bearer tokens; give the API its own audience", l.ClientID, iss)
		}
	}
	if p := l.Path; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsAny(p, "?#%\\")) {
		return fmt.Errorf("path %q: must start with / and not end with one", p)
	}
	if u := l.RedirectURL; u != "" {
		// The callback must come back to this handler, over HTTPS (the session cookies are
		// Secure and host-only), or the browser goes round and round.
		parsed, err := url.Parse(u)
		if err != nil || parsed.Scheme != "https" || parsed.Host == "" || parsed.Path != l.path()+"/callback" || parsed.RawQuery != "" {
			return fmt.Errorf("redirect_url %q: must be https://<this site>%s/callback", u, l.path())
		}
	}
	for _, e := range l.CosmosEndpoints {
		if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("cosmos_endpoint %q: must be an https URL (the SDK refuses anything else)", e)
		}
	}
	if n := l.CookieName; n != "" && !strings.HasPrefix(n, "__Host-") {
		return fmt.Errorf("cookie_name %q: must start with __Host- (a sibling subdomain could otherwise plant a session)", n)
	}
	for name, d := range map[string]caddy.Duration{"session_lifetime": l.SessionLifetime, "idle_timeout": l.IdleTimeout} {
		if d != 0 && time.Duration(d) < time.Minute {
			return fmt.Errorf("%s: must be at least 1m", name)
		}
	}
	return nil
}

// issuer is the issuer signed in with: the named one, or the only one.
func (l *Login) issuer(issuers []Issuer) (string, error) {
	if l.Issuer == "" {
		if len(issuers) != 1 {
			return "", errors.New("issuer: name one of the handler's issuers")
		}
		return issuers[0].Issuer, nil
	}
	for _, iss := range issuers {
		if iss.Issuer == l.Issuer {
			return l.Issuer, nil
		}
	}
	return "", fmt.Errorf("issuer %q is not one of the handler's issuers", l.Issuer)
}

func (l *Login) path() string { return cmp.Or(l.Path, DefaultLoginPath) }

// signInJSON is the Rust sign-in's config (rust/browser/src/signin.rs). cookieKeys come from
// Caddy storage; the result holds them: clear it after use.
func (l *Login) signInJSON(issuers []Issuer, cookieKeys []string) ([]byte, error) {
	iss, err := l.issuer(issuers)
	if err != nil {
		return nil, err
	}
	// The cookie name is always passed: Go strips the same cookies from upstream requests.
	cfg := map[string]any{
		"issuer":      iss,
		"client_id":   l.ClientID,
		"keys":        cookieKeys,
		"cookie_name": cmp.Or(l.CookieName, DefaultCookieName),
	}
	if l.ClientSecretEnv != "" {
		cfg["client_secret_env"] = l.ClientSecretEnv
	} else {
		cfg["client_secret_file"] = l.ClientSecretFile
	}
	if len(l.Scopes) > 0 {
		cfg["scopes"] = strings.Join(l.Scopes, " ")
	}
	if l.SessionLifetime != 0 {
		cfg["session_lifetime_secs"] = *ceilUnit(l.SessionLifetime, time.Second)
	}
	if l.IdleTimeout != 0 {
		cfg["idle_timeout_secs"] = *ceilUnit(l.IdleTimeout, time.Second)
	}
	return json.Marshal(cfg)
}

// parseLogin parses `login { ... }`.
func parseLogin(d *caddyfile.Dispenser) (*Login, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	l := new(Login)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("login: %s is set twice", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "issuer":
			err = oneArg(d, &l.Issuer)
		case "client_id":
			err = oneArg(d, &l.ClientID)
		case "client_secret_env":
			err = oneArg(d, &l.ClientSecretEnv)
		case "client_secret_file":
			err = oneArg(d, &l.ClientSecretFile)
		case "scopes":
			l.Scopes = d.RemainingArgs()
			if len(l.Scopes) == 0 {
				err = d.ArgErr()
			}
		case "cookie_name":
			err = oneArg(d, &l.CookieName)
		case "session_lifetime":
			err = durationArg(d, &l.SessionLifetime)
		case "idle_timeout":
			err = durationArg(d, &l.IdleTimeout)
		case "path":
			err = oneArg(d, &l.Path)
		case "redirect_url":
			err = oneArg(d, &l.RedirectURL)
		case "cosmos_endpoint":
			var e string
			err = oneArg(d, &e)
			l.CosmosEndpoints = append(l.CosmosEndpoints, e)
			delete(seen, sub) // may be given once per gateway
		case "client_secret":
			return nil, d.Err("login: a secret does not belong in the Caddyfile: use client_secret_env or client_secret_file")
		default:
			return nil, d.Errf("login: unknown subdirective %q", sub)
		}
		if err != nil {
			return nil, err
		}
	}
	return l, nil
}

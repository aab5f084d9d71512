package caddyiap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-iap/caddy-iap/go-module/internal/es256"
)

func init() {
	caddy.RegisterModule(DemoIssuer{})
	httpcaddyfile.RegisterHandlerDirective("iap_demo_issuer", parseDemoIssuer)
	httpcaddyfile.RegisterDirectiveOrder("iap_demo_issuer", httpcaddyfile.Before, "basic_auth")
}

// DemoIssuer is a tiny OpenID provider for trying caddy-iap without an outside service: it
// serves discovery, a JWKS and a token endpoint that signs whatever claims a loopback caller
// asks for. It is a demo and test aid, never an identity provider for production.
//
// Endpoints under the issuer's path: /.well-known/openid-configuration, /jwks.json and
// /token?sub=alice&email=alice@example.com&groups=readers,admins&scope=read:items&aud=demo-api
type DemoIssuer struct {
	// Issuer is the exact issuer URL, e.g. http://localhost:8080/demo.
	Issuer string `json:"issuer,omitempty"`
	// Audience is the default `aud` of minted tokens (default "demo-api").
	Audience string `json:"audience,omitempty"`
	// TTL is the lifetime of minted tokens (default 1h).
	TTL caddy.Duration `json:"ttl,omitempty"`

	key    *ecdsa.PrivateKey
	kid    string
	prefix string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (DemoIssuer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.iap_demo_issuer",
		New: func() caddy.Module { return new(DemoIssuer) },
	}
}

// Provision loads the demo signing key from Caddy storage, generating it once if missing.
func (d *DemoIssuer) Provision(ctx caddy.Context) error {
	d.logger = ctx.Logger()
	u, err := url.Parse(d.Issuer)
	if err != nil || u.Host == "" {
		return fmt.Errorf("iap_demo_issuer: issuer %q is not an absolute URL", d.Issuer)
	}
	d.prefix = strings.TrimSuffix(u.Path, "/")
	if d.Audience == "" {
		d.Audience = "demo-api"
	}
	if d.TTL == 0 {
		d.TTL = caddy.Duration(time.Hour)
	}
	key, err := loadOrCreateDemoKey(ctx)
	if err != nil {
		return fmt.Errorf("iap_demo_issuer: signing key: %v", err)
	}
	d.key = key
	d.kid = es256.Thumbprint(&key.PublicKey)
	d.logger.Warn("demo issuer enabled: it signs tokens for any loopback caller; never use it in production",
		zap.String("issuer", d.Issuer))
	return nil
}

func loadOrCreateDemoKey(ctx caddy.Context) (*ecdsa.PrivateKey, error) {
	const name = "iap/demo-issuer/signing-key.pem"
	storage := ctx.Storage()
	load := func() (*ecdsa.PrivateKey, error) {
		data, err := storage.Load(ctx, name)
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, errors.New("stored demo key is not PEM")
		}
		return x509.ParseECPrivateKey(block.Bytes)
	}
	if key, err := load(); err == nil {
		return key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := storage.Lock(ctx, name); err != nil {
		return nil, err
	}
	// Unlock even if the config's context is cancelled meanwhile (a lock in Redis or Consul
	// would otherwise linger).
	defer storage.Unlock(context.WithoutCancel(ctx), name)
	if key, err := load(); err == nil {
		return key, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := storage.Store(ctx, name, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return key, nil
}

// ServeHTTP serves the demo provider's endpoints and passes anything else on.
func (d *DemoIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// The escaped path, so /demo%2Ftoken is not /demo/token; paths outside the prefix pass on.
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), d.prefix)
	if !ok {
		return next.ServeHTTP(w, r)
	}
	base := strings.TrimSuffix(d.Issuer, "/")
	switch rest {
	case "/.well-known/openid-configuration":
		return writeJSON(w, map[string]any{
			"issuer":                                d.Issuer,
			"jwks_uri":                              base + "/jwks.json",
			"token_endpoint":                        base + "/token",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	case "/jwks.json":
		return writeJSON(w, map[string]any{"keys": []any{d.publicJWK()}})
	case "/token":
		return d.serveToken(w, r)
	}
	return next.ServeHTTP(w, r)
}

func (d *DemoIssuer) serveToken(w http.ResponseWriter, r *http.Request) error {
	if !localCaller(r) {
		return caddyhttp.Error(http.StatusForbidden, errors.New("the demo issuer mints tokens for local callers only"))
	}
	q := r.URL.Query()
	now := time.Now().Unix()
	ttl := int64(time.Duration(d.TTL).Seconds())
	if s := q.Get("ttl"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 1 || v > 86400 {
			return caddyhttp.Error(http.StatusBadRequest, errors.New("ttl must be 1..86400 seconds"))
		}
		ttl = v
	}
	claims := map[string]any{
		"iss": d.Issuer,
		"sub": firstNonEmpty(q.Get("sub"), "demo-user"),
		"aud": firstNonEmpty(q.Get("aud"), d.Audience),
		"iat": now,
		"exp": now + ttl,
	}
	if v := q.Get("email"); v != "" {
		// A demo vouches for whatever email it is given: the engine ignores an email whose
		// email_verified is not true.
		claims["email"] = v
		claims["email_verified"] = true
	}
	if v := q.Get("name"); v != "" {
		claims["name"] = v
	}
	if v := q.Get("groups"); v != "" {
		claims["groups"] = strings.Split(v, ",")
	}
	if v := q.Get("scope"); v != "" {
		claims["scope"] = v
	}
	token, err := d.sign(claims)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write([]byte(token + "\n"))
	return err
}

func (d *DemoIssuer) sign(claims map[string]any) (string, error) {
	return es256.Sign(d.key, d.kid, claims)
}

func (d *DemoIssuer) publicJWK() map[string]string {
	jwk := es256.PublicJWK(&d.key.PublicKey)
	jwk["kid"] = d.kid
	jwk["alg"] = "ES256"
	jwk["use"] = "sig"
	return jwk
}

// localCaller tells whether a request comes from this machine and was meant for it: a loopback
// peer (also as Caddy's client IP), a loopback Host (not a DNS-rebound name), and no forwarding
// header (a tunnel or a proxy on the same host also connects from 127.0.0.1).
func localCaller(r *http.Request) bool {
	loopback := func(hostport string) bool {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			host = hostport
		}
		host = strings.Trim(host, "[]")
		ip := net.ParseIP(host)
		return host == "localhost" || (ip != nil && ip.IsLoopback())
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip", "Cf-Connecting-Ip", "True-Client-Ip"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && !loopback(ip) {
		return false
	}
	return loopback(r.RemoteAddr) && loopback(r.Host)
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func firstNonEmpty(v, fallback string) string {
	if v != "" {
		return v
	}
	return fallback
}

// UnmarshalCaddyfile parses:
//
//	iap_demo_issuer {
//	    issuer   <url>
//	    audience <aud>
//	    ttl      <duration>
//	}
func (d *DemoIssuer) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // directive name
	if disp.NextArg() {
		return disp.ArgErr()
	}
	for disp.NextBlock(0) {
		switch disp.Val() {
		case "issuer":
			if d.Issuer != "" {
				return disp.Err("issuer is set twice")
			}
			if !disp.AllArgs(&d.Issuer) {
				return disp.ArgErr()
			}
		case "audience":
			if !disp.AllArgs(&d.Audience) {
				return disp.ArgErr()
			}
		case "ttl":
			var s string
			if !disp.AllArgs(&s) {
				return disp.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil || dur <= 0 {
				return disp.Errf("bad ttl %q: want a positive duration", s)
			}
			d.TTL = caddy.Duration(dur)
		default:
			return disp.Errf("unknown iap_demo_issuer option %q", disp.Val())
		}
	}
	if d.Issuer == "" {
		return disp.Err("iap_demo_issuer needs an issuer URL")
	}
	return nil
}

func parseDemoIssuer(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(DemoIssuer)
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return d, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*DemoIssuer)(nil)
	_ caddyhttp.MiddlewareHandler = (*DemoIssuer)(nil)
	_ caddyfile.Unmarshaler       = (*DemoIssuer)(nil)
)

package caddyiap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-iap/caddy-iap/go-module/internal/es256"
)

// demoClaims mints a token from the demo issuer's token endpoint and returns its claims.
func demoClaims(t *testing.T, query string) map[string]any {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &DemoIssuer{Issuer: "http://localhost/demo", Audience: "demo-api", TTL: caddy.Duration(time.Hour), key: key, kid: es256.Thumbprint(&key.PublicKey)}
	r := httptest.NewRequest("GET", "/token?"+query, nil)
	r.RemoteAddr = "127.0.0.1:4321"
	r.Host = "127.0.0.1:8080"
	w := httptest.NewRecorder()
	if err := d.serveToken(w, r); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSpace(w.Body.String()), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", w.Body.String())
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// The engine uses an email only when email_verified is true: the demo vouches for the emails
// it is given, and says nothing when it is given none.
func TestDemoIssuerEmailVerified(t *testing.T) {
	c := demoClaims(t, "sub=alice&email=alice@example.com&groups=readers")
	if c["email"] != "alice@example.com" || c["email_verified"] != true {
		t.Errorf("email %v, email_verified %v (%T)", c["email"], c["email_verified"], c["email_verified"])
	}
	c = demoClaims(t, "sub=bob")
	if _, ok := c["email_verified"]; ok {
		t.Errorf("email_verified without an email: %v", c)
	}
	if _, ok := c["email"]; ok {
		t.Errorf("email without one asked for: %v", c)
	}
}

// A tunnel or a proxy on the same host connects from 127.0.0.1 too; so does a browser whose
// page name was DNS-rebound. Neither may mint tokens.
func TestDemoIssuerLocalCallersOnly(t *testing.T) {
	for _, tt := range []struct {
		name   string
		remote string
		host   string
		header string
		want   bool
	}{
		{"loopback", "127.0.0.1:4321", "127.0.0.1:8080", "", true},
		{"localhost", "[::1]:4321", "localhost:8080", "", true},
		{"remote peer", "203.0.113.7:4321", "127.0.0.1:8080", "", false},
		{"rebound host name", "127.0.0.1:4321", "evil.example:8080", "", false},
		{"tunnel (X-Forwarded-For)", "127.0.0.1:4321", "127.0.0.1:8080", "X-Forwarded-For", false},
		{"proxy (Forwarded)", "127.0.0.1:4321", "127.0.0.1:8080", "Forwarded", false},
	} {
		r := httptest.NewRequest("GET", "/demo/token", nil)
		r.RemoteAddr, r.Host = tt.remote, tt.host
		if tt.header != "" {
			r.Header.Set(tt.header, "203.0.113.7")
		}
		if got := localCaller(r); got != tt.want {
			t.Errorf("%s: localCaller = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Only paths under the issuer's own prefix are served; /demo%2Ftoken is not /demo/token.
func TestDemoIssuerServesOnlyItsPrefix(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &DemoIssuer{Issuer: "http://127.0.0.1:8080/demo/", prefix: "/demo", key: key, kid: es256.Thumbprint(&key.PublicKey)}
	for path, served := range map[string]bool{
		"/demo/jwks.json": true, "/jwks.json": false, "/token": false, "/demo%2Fjwks.json": false, "/demox/jwks.json": false,
	} {
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return errors.New("next") })
		r := httptest.NewRequest("GET", path, nil)
		err := d.ServeHTTP(httptest.NewRecorder(), r, next)
		if got := err == nil; got != served {
			t.Errorf("%s: served=%v, want %v", path, got, served)
		}
	}
	w := httptest.NewRecorder()
	_ = d.ServeHTTP(w, httptest.NewRequest("GET", "/demo/.well-known/openid-configuration", nil), nil)
	if body := w.Body.String(); !strings.Contains(body, `"jwks_uri":"http://127.0.0.1:8080/demo/jwks.json"`) {
		t.Errorf("discovery with a trailing-slash issuer: %s", body)
	}
}

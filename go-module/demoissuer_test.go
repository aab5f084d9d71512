package caddyiap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

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

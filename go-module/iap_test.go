//go:build cgo

package caddyiap

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
	"github.com/caddy-iap/caddy-iap/go-module/internal/testjwt"
)

// These tests run a real Caddy in-process with the real Rust engine: Caddyfile → adapter →
// Provision (storage, key files, engine) → requests through the handler chain → reload.

const testIssuer = "https://idp.test"

type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.mu.Unlock()
		io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("upstream not called")
	}
	return u.seen[len(u.seen)-1]
}

func (u *upstream) calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// loadCaddyfile adapts and runs a Caddyfile.
func loadCaddyfile(t *testing.T, caddyfile string) error {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	for _, w := range warnings {
		t.Logf("warning: %v", w)
	}
	return caddy.Load(cfg, true)
}

type e2e struct {
	base     string
	key      *testjwt.Key
	upstream *upstream
	storage  string
	jwksFile string
	port     int
}

func (e *e2e) caddyfile(methods string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	log {
		output discard
	}
}

http://127.0.0.1:%d {
	iap {
		issuer %s {
			audience api
			jwks_file %s
			algorithms ES256
		}
		role reader claim groups contains readers
		allow reader %s /items /items/*
		assertion {
			audience https://upstream.test
		}
	}
	reverse_proxy %s {
		header_up X-Placeholder-User {http.auth.user.id}
		header_up X-Placeholder-Roles {http.auth.user.roles}
	}
	handle_errors {
		respond "denied: {err.status_code} {err.message}" {err.status_code}
	}
}
`, e.storage, e.port, testIssuer, e.jwksFile, methods, e.upstream.URL)
}

func (e *e2e) do(t *testing.T, method, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (e *e2e) token(sub string, groups ...string) string {
	return e.tokenWith(map[string]any{"sub": sub, "groups": groups})
}

// tokenWith signs claims over defaults: a verified email made of the subject, valid for 5m.
func (e *e2e) tokenWith(claims map[string]any) string {
	now := time.Now().Unix()
	c := map[string]any{
		"iss": testIssuer, "aud": "api", "email": fmt.Sprint(claims["sub"], "@example.com"),
		"email_verified": true, "iat": now, "exp": now + 300,
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k) // nil: leave the claim out
		} else {
			c[k] = v
		}
	}
	return e.key.Sign(c)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func TestCaddyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	e := &e2e{key: testjwt.NewES256("k1"), upstream: newUpstream(t), storage: filepath.Join(dir, "storage"),
		jwksFile: filepath.Join(dir, "jwks.json"), port: freePort(t)}
	e.base = fmt.Sprintf("http://127.0.0.1:%d", e.port)
	if err := os.WriteFile(e.jwksFile, []byte(e.key.JWKS()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loadCaddyfile(t, e.caddyfile("GET,HEAD")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	// The signing key was generated once and stored where documented.
	stored, err := os.ReadFile(filepath.Join(e.storage, "iap", "assertion", "ES256", "signing-key.pk8.b64"))
	if err != nil || len(strings.TrimSpace(string(stored))) < 100 {
		t.Fatalf("stored key: %v", err)
	}

	resp, jwks := e.do(t, "GET", DefaultJWKSPath, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwk-set+json" ||
		resp.Header.Get("Cache-Control") != "max-age=300" || !strings.Contains(jwks, `"keys"`) {
		t.Fatalf("JWKS: %d %v %s", resp.StatusCode, resp.Header, jwks)
	}

	t.Run("allowed, spoofed headers replaced", func(t *testing.T) {
		h := bearer(e.token("alice", "readers"))
		h.Set("X-IAP-User", "root")
		h.Set("X-IAP-Email", "root@evil.test")
		h.Set("X-IAP-Roles", "admin")
		h.Set("X-IAP-Assertion", "forged")
		resp, body := e.do(t, "GET", "/items/42", h)
		if resp.StatusCode != 200 || body != "upstream ok" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		got := e.upstream.last(t)
		for name, want := range map[string]string{
			"X-Iap-User": "alice", "X-Iap-Email": "alice@example.com", "X-Iap-Roles": "reader",
			"X-Placeholder-User": "alice", "X-Placeholder-Roles": "reader",
		} {
			if v := got.Values(name); len(v) != 1 || v[0] != want {
				t.Errorf("upstream %s = %q, want %q", name, v, want)
			}
		}
		assertion := got.Values("X-Iap-Assertion")
		if len(assertion) != 1 {
			t.Fatalf("assertion header %q", assertion)
		}
		claims, err := testjwt.VerifyES256(assertion[0], jwks)
		if err != nil {
			t.Fatalf("assertion does not verify against the served JWKS: %v", err)
		}
		if claims["sub"] != "alice" || claims["aud"] != "https://upstream.test" {
			t.Errorf("assertion claims %v", claims)
		}
		if v, ok := got["Authorization"]; ok {
			t.Errorf("the caller's token reached the upstream: %q", v)
		}
	})

	t.Run("Connection cannot remove identity headers", func(t *testing.T) {
		h := bearer(e.token("alice", "readers"))
		h.Set("Connection", "keep-alive, X-IAP-User, x-iap-assertion, X-Iap-Roles")
		resp, body := e.do(t, "GET", "/items/42", h)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		got := e.upstream.last(t)
		for _, name := range []string{"X-Iap-User", "X-Iap-Roles", "X-Iap-Assertion"} {
			if len(got.Values(name)) != 1 {
				t.Errorf("upstream %s = %q: the client's Connection header removed it", name, got.Values(name))
			}
		}
	})

	// The engine uses `email` only when `email_verified` is JSON true ("nOAuth").
	for _, verified := range []any{false, "true", nil} {
		t.Run(fmt.Sprintf("email_verified %#v", verified), func(t *testing.T) {
			claims := map[string]any{"sub": "carol", "groups": []string{"readers"}, "email": "ceo@example.com", "email_verified": verified}
			resp, body := e.do(t, "GET", "/items/42", bearer(e.tokenWith(claims)))
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			got := e.upstream.last(t)
			if v, ok := got["X-Iap-Email"]; ok {
				t.Errorf("unverified email forwarded: %q", v)
			}
			claimsOut, err := testjwt.VerifyES256(got.Get("X-Iap-Assertion"), jwks)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := claimsOut["email"]; ok {
				t.Errorf("unverified email in the assertion: %v", v)
			}
		})
	}

	denials := []struct {
		name, method string
		header       http.Header
		status       int
	}{
		{"no token", "GET", nil, 401},
		{"forged", "GET", bearer(testjwt.NewES256("k1").Sign(map[string]any{"iss": testIssuer, "aud": "api", "sub": "mallory", "exp": time.Now().Unix() + 60})), 401},
		{"not a JWT", "GET", bearer("garbage"), 401},
		{"forbidden method", "DELETE", bearer(e.token("alice", "readers")), 403},
		{"no role", "GET", bearer(e.token("bob", "writers")), 403},
		{"two Authorization headers", "GET", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, 400},
	}
	for _, tt := range denials {
		t.Run(tt.name, func(t *testing.T) {
			before := e.upstream.calls()
			resp, body := e.do(t, tt.method, "/items/1", tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if !strings.HasPrefix(body, fmt.Sprintf("denied: %d ", tt.status)) {
				t.Errorf("handle_errors did not run: %q", body)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if e.upstream.calls() != before {
				t.Error("a denied request reached the upstream")
			}
		})
	}

	// Reload with a wider grant: the new config reuses the stored signing key, and the old
	// engine is freed without disturbing requests.
	if err := loadCaddyfile(t, e.caddyfile("GET,HEAD,DELETE")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The old server closes its idle keep-alive connections; a DELETE is not retried on one.
	http.DefaultClient.CloseIdleConnections()
	if resp, _ := e.do(t, "DELETE", "/items/1", bearer(e.token("alice", "readers"))); resp.StatusCode != 200 {
		t.Errorf("after reload: %d", resp.StatusCode)
	}
	if _, jwks2 := e.do(t, "GET", DefaultJWKSPath, nil); jwks2 != jwks {
		t.Errorf("signing key changed across a reload:\n%s\n%s", jwks, jwks2)
	}
	var set struct{ Keys []json.RawMessage }
	if err := json.Unmarshal([]byte(jwks), &set); err != nil || len(set.Keys) != 1 {
		t.Errorf("JWKS %s", jwks)
	}
}

func TestProvisionErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing-jwks.json")
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, source, want string }{
		{"missing jwks_file", "jwks_file " + missing, missing},
		{"bad pem", "pem_file " + bad, "pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadCaddyfile(t, fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	log {
		output discard
	}
}
http://127.0.0.1:%d {
	iap {
		issuer https://idp.test {
			audience api
			%s
		}
	}
}
`, filepath.Join(dir, "storage"), freePort(t), tt.source))
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("config loaded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v does not name %q", err, tt.want)
			}
		})
	}
}

// Every option the Go config has must reach the engine in a shape it accepts (its serde
// structs refuse unknown fields), so drift between config.go and config.rs fails here.
func TestEngineAcceptsEveryOption(t *testing.T) {
	dir := t.TempDir()
	key := testjwt.NewES256("k1")
	jwks := filepath.Join(dir, "jwks.json")
	pemFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(jwks, []byte(key.JWKS()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pemFile, []byte(key.PEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	signingKey, err := ffi.GenerateSigningKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	h := parseIAP(t, fmt.Sprintf(`iap {
	issuer https://discovery.idp.test/realms/x {
		audience a b
		algorithms RS256 PS256 ES256 ES384 EdDSA
		leeway 90s
		max_lifetime 12h
		kid_miss_cooldown 45s
		refresh_min 10m
		refresh_max 12h
		fetch_timeout 1500ms
	}
	issuer https://url.idp.test {
		audience a
		jwks_url https://url.idp.test/keys
		trust_unverified_email
	}
	issuer https://file.idp.test {
		audience a
		jwks_file %s
	}
	issuer https://pem.idp.test {
		audience a
		pem_file %s
	}
	role admin claim groups contains admins claim email suffix @example.com
	role reader {
		claim scope has read
	}
	role x claim sub prefix user-
	role y claim https://example.com/roles equals staff
	allow admin * *
	allow reader GET,HEAD /items /items/* *.json
	assertion {
		audience https://upstream.test
		issuer https://iap.test
		ttl 2m
		header X-Assertion
	}
	headers {
		user X-User
		email off
		roles X-Roles
	}
	cache_size 100
	max_token_size 4096
	pass_token
}`, jwks, pemFile))
	cfg, err := h.engineJSON(os.ReadFile, []string{signingKey})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := ffi.NewEngine(cfg)
	if err != nil {
		t.Fatalf("the engine refused the Go module's config: %v", err)
	}
	defer eng.Close()
	d, err := eng.Decide(ffi.Request{Method: "GET", Host: "h", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"X-User", "X-Roles", "X-Assertion"} {
		found := false
		for _, s := range d.StripHeaders {
			found = found || strings.EqualFold(s, want)
		}
		if !found {
			t.Errorf("%s not in the strip list %q", want, d.StripHeaders)
		}
	}
}

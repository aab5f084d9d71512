//go:build cgo

package ffi

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-iap/caddy-iap/go-module/internal/testjwt"
)

const issuer = "https://idp.test"

func engineConfig(t testing.TB, key *testjwt.Key, extra map[string]any) []byte {
	t.Helper()
	cfg := map[string]any{
		"issuers": []any{map[string]any{
			"issuer":     issuer,
			"audiences":  []string{"api"},
			"keys":       map[string]any{"jwks_inline": key.JWKS()},
			"algorithms": []string{"ES256"},
		}},
		"roles": []any{map[string]any{"role": "reader", "when": []any{
			map[string]string{"claim": "groups", "op": "contains", "value": "readers"},
		}}},
		"allow": []any{map[string]any{"role": "reader", "methods": []string{"GET"}, "paths": []string{"/items/*"}}},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newEngine(t testing.TB, key *testjwt.Key, extra map[string]any) *Engine {
	t.Helper()
	e, err := NewEngine(engineConfig(t, key, extra))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func claims(sub string, groups ...string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"iss": issuer, "aud": "api", "sub": sub, "email": sub + "@example.com", "email_verified": true, "name": "Test " + sub,
		"groups": groups, "iat": now, "exp": now + 300, "jti": "jti-" + sub,
	}
}

func TestDecide(t *testing.T) {
	key := testjwt.NewES256("k1")
	e := newEngine(t, key, nil)

	t.Run("allowed", func(t *testing.T) {
		d, err := e.Decide(Request{Method: "GET", Host: "app.test", Path: "/items/1", Token: key.Sign(claims("alice", "readers"))})
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed || d.Status != 200 || d.Reason != ReasonAllowed {
			t.Fatalf("not allowed: %+v", d)
		}
		if d.Subject != "alice" || d.Email != "alice@example.com" || d.Name != "Test alice" || d.Issuer != issuer {
			t.Errorf("identity: %+v", d)
		}
		if len(d.Roles) != 1 || d.Roles[0] != "reader" {
			t.Errorf("roles %q", d.Roles)
		}
		if d.Kid != "k1" || d.Alg != "ES256" || d.JTI != "jti-alice" || d.ExpiresAt == 0 {
			t.Errorf("token metadata: kid=%q alg=%q jti=%q exp=%d", d.Kid, d.Alg, d.JTI, d.ExpiresAt)
		}
		if len(d.StripHeaders) == 0 {
			t.Error("no strip list")
		}
		// The handler indexes http.Header with these names directly: they must be canonical,
		// or a client's copy would not be stripped.
		for _, n := range e.OwnedHeaders() {
			if n != textproto.CanonicalMIMEHeaderKey(n) {
				t.Errorf("owned header %q is not canonical", n)
			}
		}
		var user string
		for _, h := range d.SetHeaders {
			if h.Name != textproto.CanonicalMIMEHeaderKey(h.Name) {
				t.Errorf("set header %q is not canonical", h.Name)
			}
			if h.Name == "X-Iap-User" {
				user = h.Value
			}
		}
		if user != "alice" {
			t.Errorf("set headers %+v", d.SetHeaders)
		}
	})

	t.Run("missing token", func(t *testing.T) {
		d, err := e.Decide(Request{Method: "GET", Host: "app.test", Path: "/items/1"})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed || d.Status != 401 || d.Reason != ReasonMissingToken || d.WWWAuthenticate == "" {
			t.Errorf("%+v", d)
		}
		if d.ReasonLabel() != "missing_token" {
			t.Errorf("reason label %q", d.ReasonLabel())
		}
		if len(d.StripHeaders) == 0 {
			t.Error("a denial must still list the headers to strip")
		}
	})

	t.Run("forged", func(t *testing.T) {
		other := testjwt.NewES256("k1") // same kid, different key
		d, err := e.Decide(Request{Method: "GET", Path: "/items/1", Token: other.Sign(claims("mallory", "readers"))})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed || d.Status != 401 || d.Reason != ReasonBadSignature {
			t.Errorf("%+v", d)
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		d, err := e.Decide(Request{Method: "DELETE", Path: "/items/1", Token: key.Sign(claims("bob", "readers"))})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed || d.Status != 403 || d.Reason != ReasonForbidden || d.Subject != "bob" {
			t.Errorf("%+v", d)
		}
	})

	t.Run("invalid UTF-8 in the path", func(t *testing.T) {
		_, err := e.Decide(Request{Method: "GET", Path: "/\xff"})
		var fe *Error
		if !errors.As(err, &fe) || fe.Code != ResultInvalidParameter {
			t.Errorf("err = %v", err)
		}
	})

	if s, ok := e.Stats(); !ok || s.CacheHits+s.CacheMisses == 0 {
		t.Errorf("stats %+v %v", s, ok)
	}
}

func TestNewEngineConfigError(t *testing.T) {
	_, err := NewEngine([]byte(`{"issuers":[{"issuer":"https://idp.test","audiences":["a"],"keys":{"pem":["nope"]}}]}`))
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != ResultInvalidConfig || !strings.Contains(fe.Message, "pem") {
		t.Fatalf("err = %#v", err)
	}
	if _, err := NewEngine([]byte(`{"issuers":[], "bogus":1}`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
	if _, err := NewEngine(nil); err == nil {
		t.Fatal("empty config accepted")
	}
}

func TestPEMKeys(t *testing.T) {
	key := testjwt.NewES256("")
	cfg := map[string]any{"issuers": []any{map[string]any{
		"issuer": issuer, "audiences": []string{"api"}, "keys": map[string]any{"pem": []string{key.PEM()}},
	}}}
	b, _ := json.Marshal(cfg)
	e, err := NewEngine(b)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	d, err := e.Decide(Request{Method: "GET", Path: "/", Token: key.Sign(claims("carol"))})
	if err != nil {
		t.Fatal(err)
	}
	// No allow rule: a valid token is forbidden, which proves it verified.
	if d.Status != 403 || d.Subject != "carol" {
		t.Errorf("%+v", d)
	}
}

func TestCloseIsIdempotentAndGuards(t *testing.T) {
	key := testjwt.NewES256("k1")
	e, err := NewEngine(engineConfig(t, key, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	e.Close()
	var nilEngine *Engine
	nilEngine.Close()

	if _, err := e.Decide(Request{Method: "GET", Path: "/"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Decide after Close: %v", err)
	}
	if _, ok := e.Stats(); ok {
		t.Error("Stats after Close")
	}
	if e.PublicJWKS() != nil {
		t.Error("JWKS after Close")
	}
	defer func() {
		if r := recover(); r != "engine has been closed already" {
			t.Errorf("ptr() after Close: recovered %v", r)
		}
	}()
	e.ptr()
}

// Many goroutines decide while the engine is closed under them: every call either completes
// or sees ErrClosed. Run with -race -tags iapdebug.
func TestConcurrentDecideAndClose(t *testing.T) {
	key := testjwt.NewES256("k1")
	tokens := make([]string, 8)
	for i := range tokens {
		tokens[i] = key.Sign(claims("user", "readers"))
	}
	e, err := NewEngine(engineConfig(t, key, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				d, err := e.Decide(Request{Method: "GET", Host: "h", Path: "/items/x", Token: tokens[(g+i)%len(tokens)]})
				switch {
				case errors.Is(err, ErrClosed):
					return
				case err != nil:
					t.Error(err)
					return
				case !d.Allowed:
					t.Errorf("denied: %+v", d)
					return
				}
			}
		})
	}
	time.Sleep(5 * time.Millisecond)
	e.Close()
	wg.Wait()
}

func TestAssertionKeys(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			k, err := GenerateSigningKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			der, err := base64.StdEncoding.DecodeString(k)
			if err != nil {
				t.Fatal(err)
			}
			priv, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				t.Fatal(err)
			}
			switch priv.(type) {
			case *ecdsa.PrivateKey:
				if alg != "ES256" {
					t.Errorf("%s gave %T", alg, priv)
				}
			case ed25519.PrivateKey:
				if alg != "EdDSA" {
					t.Errorf("%s gave %T", alg, priv)
				}
			default:
				t.Errorf("%s gave %T", alg, priv)
			}

			key := testjwt.NewES256("k1")
			e := newEngine(t, key, map[string]any{"assertion": map[string]any{"audience": "upstream", "signing_keys": []string{k}}})
			var jwks struct{ Keys []map[string]any }
			if err := json.Unmarshal(e.PublicJWKS(), &jwks); err != nil || len(jwks.Keys) != 1 {
				t.Fatalf("JWKS %s: %v", e.PublicJWKS(), err)
			}
			if _, ok := jwks.Keys[0]["d"]; ok {
				t.Fatal("private key in the public JWKS")
			}
		})
	}
	if _, err := GenerateSigningKey("HS256"); err == nil {
		t.Error("HS256 key generated")
	}
	if _, err := GenerateSigningKey(""); err == nil {
		t.Error("empty alg accepted")
	}
}

func TestNoAssertionNoJWKS(t *testing.T) {
	if jwks := newEngine(t, testjwt.NewES256("k1"), nil).PublicJWKS(); jwks != nil {
		t.Errorf("JWKS without assertion: %s", jwks)
	}
}

func TestVersion(t *testing.T) {
	if v := Version(); !strings.HasPrefix(v, "caddy-iap/") {
		t.Errorf("version %q", v)
	}
}

// BenchmarkDecideCached is the cost one request pays on the Go side for a token the engine has
// seen: the cgo call and the decision copied into Go values, on every core at once (-cpu 1,2
// shows how it scales). Compare with the Rust bench ffi/direct_rust_cached for the engine's own
// share.
func BenchmarkDecideCached(b *testing.B) {
	key := testjwt.NewES256("k1")
	e := newEngine(b, key, nil)
	req := Request{Method: "GET", Host: "api.test", Path: "/items/1", Token: key.Sign(claims("alice", "readers"))}
	if d, err := e.Decide(req); err != nil || !d.Allowed {
		b.Fatalf("warm-up: %v %+v", err, d)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, err := e.Decide(req); err != nil || !d.Allowed {
				b.Fatal("denied")
			}
		}
	})
}

// BenchmarkDecideCachedRoundRobin: several users at once, every token cached, each goroutine
// walking them in turn. With 6 a thread sees more hot tokens than it keeps copies of; with 256
// it rarely sees one twice in a row, so each decision is a hit in the shared map.
func BenchmarkDecideCachedRoundRobin(b *testing.B) {
	key := testjwt.NewES256("k1")
	e := newEngine(b, key, nil)
	for _, n := range []int{6, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			reqs := make([]Request, n)
			for i := range reqs {
				reqs[i] = Request{Method: "GET", Host: "api.test", Path: "/items/1",
					Token: key.Sign(claims(fmt.Sprint("user", n, "-", i), "readers"))}
				if d, err := e.Decide(reqs[i]); err != nil || !d.Allowed {
					b.Fatalf("warm-up: %v %+v", err, d)
				}
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(97)
				for pb.Next() {
					i++
					if d, err := e.Decide(reqs[i%uint64(n)]); err != nil || !d.Allowed {
						b.Fatal("denied")
					}
				}
			})
		})
	}
}

// A decision larger than Decide's buffer comes back boxed and is copied out again
// (iap_decision_copy). Both ways must give the same decision, allowed or denied.
func TestDecideCopiedAndBoxedAgree(t *testing.T) {
	key := testjwt.NewES256("k1")
	e := newEngine(t, key, nil)
	reqs := map[string]Request{
		"allowed":   {Method: "GET", Host: "app.test", Path: "/items/1", Token: key.Sign(claims("alice", "readers"))},
		"forbidden": {Method: "DELETE", Host: "app.test", Path: "/items/1", Token: key.Sign(claims("bob", "readers"))},
		"no token":  {Method: "GET", Host: "app.test", Path: "/items/1"},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			copied, err := e.Decide(req)
			if err != nil {
				t.Fatal(err)
			}
			boxed, err := e.decide(req, make([]byte, 8)) // too small for any decision
			if err != nil {
				t.Fatal(err)
			}
			copied.CacheHit = boxed.CacheHit // the first call filled the cache
			if !reflect.DeepEqual(boxed, copied) {
				t.Errorf("boxed  %+v\ncopied %+v", boxed, copied)
			}
			if name == "allowed" && (copied.Subject != "alice" || len(copied.SetHeaders) != 3) {
				t.Errorf("%+v", copied)
			}
		})
	}
}

// A record whose lengths run past its buffer (an engine bug) reads as bad, never past its end;
// decisionOfRecord turns that into a refusal.
func TestRecordReaderStopsAtTheEnd(t *testing.T) {
	good := []byte{2, 0, 0, 0, 'o', 'k', 0, 0, 0, 0}
	if binary.NativeEndian.Uint32([]byte{2, 0, 0, 0}) != 2 {
		good = []byte{0, 0, 0, 2, 'o', 'k', 0, 0, 0, 0}
	}
	r := recordReader{rest: good}
	if a, b := r.next(), r.next(); a != "ok" || b != "" || r.bad || len(r.rest) != 0 {
		t.Errorf("good record: %q %q bad=%v rest=%v", a, b, r.bad, r.rest)
	}
	for _, buf := range [][]byte{{1, 0}, {9, 0, 0, 0, 'x'}, {0xff, 0xff, 0xff, 0xff}} {
		r := recordReader{rest: buf}
		for range 12 {
			r.next()
		}
		if !r.bad {
			t.Errorf("%v read as good", buf)
		}
	}
	// A count of strings that cannot fit is refused before anything is sized by it.
	r = recordReader{rest: good}
	if r.room(3) || !r.bad {
		t.Error("3 strings fit in 10 bytes")
	}
	if r = (recordReader{rest: good}); !r.room(2) {
		t.Error("2 strings do not fit in 10 bytes")
	}
}

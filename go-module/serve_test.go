package caddyiap

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// fakeEngine stands in for the Rust engine, so the request path is tested without cgo.
type fakeEngine struct {
	mu     sync.Mutex
	decide func(*ffi.Request) (ffi.Decision, error)
	calls  []ffi.Request
	jwks   []byte
	stats  ffi.Stats
	closed bool
}

func (f *fakeEngine) Decide(r ffi.Request) (ffi.Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ffi.Decision{}, ffi.ErrClosed
	}
	f.calls = append(f.calls, r)
	return f.decide(&r)
}

func (f *fakeEngine) PublicJWKS() []byte { return f.jwks }

func (f *fakeEngine) Stats() (ffi.Stats, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, !f.closed
}

func (f *fakeEngine) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

// owned is a strip list as the engine gives it: in Go's canonical form.
var owned = []string{"X-Iap-User", "X-Iap-Email", "X-Iap-Roles", "X-Iap-Assertion"}

func allowAlice(*ffi.Request) (ffi.Decision, error) {
	return ffi.Decision{
		Allowed: true, Status: 200, Reason: ffi.ReasonAllowed, ReasonText: "allowed",
		Subject: "alice", Email: "alice@example.com", Name: "Alice", Issuer: "https://idp",
		Roles:        []string{"admin", "reader"},
		SetHeaders:   []ffi.Header{{Name: "X-Iap-User", Value: "alice"}, {Name: "X-Iap-Roles", Value: "admin,reader"}},
		StripHeaders: owned,
		Kid:          "k1", Alg: "ES256", JTI: "j1", ExpiresAt: 1700000000,
	}, nil
}

func denyWith(status int, reason ffi.ReasonCode, text, challenge string) func(*ffi.Request) (ffi.Decision, error) {
	return func(*ffi.Request) (ffi.Decision, error) {
		return ffi.Decision{
			Status: status, Reason: reason, ReasonText: text, WWWAuthenticate: challenge,
			StripHeaders: owned, Issuer: "https://idp", Subject: "mallory", Kid: "k1", Alg: "ES256",
		}, nil
	}
}

// newTestHandler builds a provisioned-looking handler around a fake engine.
func newTestHandler(t testing.TB, h *Handler, f engine) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	return newHandlerLogging(t, h, f, zapcore.DebugLevel)
}

// newHandlerLogging is newTestHandler with the log level a deployment would run at.
func newHandlerLogging(t testing.TB, h *Handler, f engine, level zapcore.Level) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(level)
	h.logger = zap.New(core)
	h.engine = f
	h.owned = owned
	m, err := newMetrics(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h.metrics = m
	h.setDefaults()
	return h, logs
}

// recordingNext is the next handler: it records the request it got.
type recordingNext struct {
	called bool
	header http.Header
}

func (n *recordingNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called = true
	n.header = r.Header.Clone()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func newRequest(method, target string) (*http.Request, *caddy.Replacer) {
	r := httptest.NewRequest(method, target, nil)
	repl := caddy.NewReplacer()
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)), repl
}

func handlerStatus(t *testing.T, err error) int {
	t.Helper()
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) {
		t.Fatalf("want a caddyhttp.HandlerError (so handle_errors runs), got %v", err)
	}
	return he.StatusCode
}

func TestServeAllowed(t *testing.T) {
	f := &fakeEngine{decide: allowAlice}
	h, logs := newTestHandler(t, &Handler{Audit: true}, f)
	allowedBefore := testutil.ToFloat64(h.metrics.decisions.WithLabelValues(resultAllow, "allowed"))
	r, repl := newRequest("GET", "https://app.example.com/api/a%2Fb?x=1")
	r.Header.Set("Authorization", "Bearer tok.en.sig")
	r.Header.Set("X-IAP-User", "spoofed")           // replaced
	r.Header.Set("X-IAP-Email", "spoofed@evil")     // stripped, not set by this decision
	r.Header.Set("X-IAP-Assertion", "forged.jwt.x") // stripped
	next := &recordingNext{}
	w := httptest.NewRecorder()

	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if !next.called {
		t.Fatal("next was not called")
	}
	if got := next.header.Get("X-IAP-User"); got != "alice" {
		t.Errorf("X-IAP-User = %q", got)
	}
	if got := next.header.Values("X-IAP-User"); len(got) != 1 {
		t.Errorf("X-IAP-User values = %q", got)
	}
	for _, name := range []string{"X-IAP-Email", "X-IAP-Assertion"} {
		if v := next.header.Values(name); len(v) > 0 {
			t.Errorf("client-sent %s reached the upstream: %q", name, v)
		}
	}
	if got := next.header.Get("X-IAP-Roles"); got != "admin,reader" {
		t.Errorf("X-IAP-Roles = %q", got)
	}

	if got := testutil.ToFloat64(h.metrics.decisions.WithLabelValues(resultAllow, "allowed")) - allowedBefore; got != 1 {
		t.Errorf("decisions{allow,allowed} went up by %v, want 1", got)
	}

	want := ffi.Request{Method: "GET", Host: "app.example.com", Path: "/api/a%2Fb", Token: "tok.en.sig"}
	if len(f.calls) != 1 || f.calls[0] != want {
		t.Errorf("engine got %+v, want %+v", f.calls, want)
	}

	for key, want := range map[string]string{
		"http.auth.user.id":     "alice",
		"http.auth.user.email":  "alice@example.com",
		"http.auth.user.name":   "Alice",
		"http.auth.user.roles":  "admin,reader",
		"http.auth.user.issuer": "https://idp",
	} {
		if got, _ := repl.GetString(key); got != want {
			t.Errorf("{%s} = %q, want %q", key, got, want)
		}
	}

	entries := logs.FilterMessage("request allowed").All()
	if len(entries) != 1 || entries[0].Level != zapcore.InfoLevel {
		t.Fatalf("audit should log the allow at info: %v", logs.All())
	}
	fields := entries[0].ContextMap()
	for _, k := range []string{"subject", "issuer", "kid", "alg", "jti", "roles"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("allow log has no %s: %v", k, fields)
		}
	}
	assertNoToken(t, logs, "tok.en.sig")
}

// The identity placeholders are this request's: a value set before the handler (by a `vars`
// or an earlier handler) is replaced, a value set after it wins, every name is known (empty when
// the token has no such claim) and only those names answer.
func TestUserPlaceholdersPrecedence(t *testing.T) {
	h, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: func(*ffi.Request) (ffi.Decision, error) {
		d, _ := allowAlice(nil)
		d.Name = ""
		return d, nil
	}})
	r, repl := newRequest("GET", "/")
	r.Header.Set("Authorization", "Bearer tok.en.sig")
	repl.Set("http.auth.user.id", "anonymous")
	repl.Set("http.auth.user.name", "Someone Else")
	next := &recordingNext{}
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !next.called {
		t.Fatalf("allowed request: err %v, next called %v", err, next.called)
	}
	if got, _ := repl.GetString("http.auth.user.id"); got != "alice" {
		t.Errorf("{http.auth.user.id} = %q after the handler, want alice (the earlier value replaced)", got)
	}
	if got, ok := repl.GetString("http.auth.user.name"); !ok || got != "" {
		t.Errorf("{http.auth.user.name} = %q (known %v), want known and empty: no name claim, the earlier value gone", got, ok)
	}
	if got, ok := repl.Get("http.auth.user.nonesuch"); ok {
		t.Errorf("{http.auth.user.nonesuch} = %v, want unknown", got)
	}
	repl.Set("http.auth.user.id", "override")
	if got, _ := repl.GetString("http.auth.user.id"); got != "override" {
		t.Errorf("{http.auth.user.id} = %q after a later set, want override", got)
	}
	if got := repl.ReplaceAll("{http.auth.user.email} {http.auth.user.roles} {http.auth.user.issuer}", "-"); got != "alice@example.com admin,reader https://idp" {
		t.Errorf("placeholders replaced as %q", got)
	}
}

// A second identity handler in the same request (two iap handlers, or iap then iap_cosmos)
// answers with its own identity, every field of it: no mix of the two.
func TestUserPlaceholdersSecondHandlerWins(t *testing.T) {
	first, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: allowAlice})
	second, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: func(*ffi.Request) (ffi.Decision, error) {
		d, _ := allowAlice(nil)
		d.Subject, d.Email, d.Name, d.Roles = "bob", "", "Bob", []string{"viewer"}
		return d, nil
	}})
	r, repl := newRequest("GET", "/")
	for _, h := range []*Handler{first, second} {
		r.Header.Set("Authorization", "Bearer tok.en.sig")
		next := &recordingNext{}
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !next.called {
			t.Fatalf("allowed request: err %v, next called %v", err, next.called)
		}
	}
	if got := repl.ReplaceAll("{http.auth.user.id}|{http.auth.user.email}|{http.auth.user.name}|{http.auth.user.roles}", ""); got != "bob||Bob|viewer" {
		t.Errorf("after two handlers the placeholders say %q, want bob's alone", got)
	}
}

func TestServeAllowedLogsAtDebugWithoutAudit(t *testing.T) {
	h, logs := newTestHandler(t, &Handler{}, &fakeEngine{decide: allowAlice})
	r, _ := newRequest("GET", "/")
	r.Header.Set("Authorization", "Bearer t")
	if err := h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{}); err != nil {
		t.Fatal(err)
	}
	if e := logs.FilterMessage("request allowed").All(); len(e) != 1 || e[0].Level != zapcore.DebugLevel {
		t.Errorf("want one debug entry, got %v", e)
	}
}

func TestServeDenied(t *testing.T) {
	tests := []struct {
		name       string
		decide     func(*ffi.Request) (ffi.Decision, error)
		wantStatus int
		wantChall  string
	}{
		{"401 invalid token", denyWith(401, ffi.ReasonBadSignature, "invalid token: signature does not verify",
			`Bearer error="invalid_token", error_description="signature does not verify"`), 401,
			`Bearer error="invalid_token", error_description="signature does not verify"`},
		{"401 missing token", denyWith(401, ffi.ReasonMissingToken, "no bearer token presented", `Bearer realm="iap"`), 401, `Bearer realm="iap"`},
		{"403 forbidden", denyWith(403, ffi.ReasonForbidden, "forbidden: no rule matched", ""), 403, ""},
		{"403 with insufficient_scope", denyWith(403, ffi.ReasonForbidden, "forbidden", `Bearer error="insufficient_scope"`), 403, `Bearer error="insufficient_scope"`},
		{"503 keys unavailable", denyWith(503, ffi.ReasonKeysUnavailable, "no verification keys available yet for issuer https://idp", ""), 503, ""},
		{"400 bad request", denyWith(400, ffi.ReasonBadRequest, "bad request: dot segments", ""), 400, ""},
		{"deny without error status fails closed", denyWith(200, ffi.ReasonForbidden, "?", ""), 500, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, logs := newTestHandler(t, &Handler{}, &fakeEngine{decide: tt.decide})
			r, _ := newRequest("POST", "/api")
			r.Header.Set("Authorization", "Bearer secret.token.value")
			r.Header.Set("X-IAP-User", "admin")
			next := &recordingNext{}
			w := httptest.NewRecorder()

			err := h.ServeHTTP(w, r, next)
			if next.called {
				t.Fatal("next called on a denial")
			}
			if got := handlerStatus(t, err); got != tt.wantStatus {
				t.Errorf("status %d, want %d", got, tt.wantStatus)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.wantChall {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChall)
			}
			if _, ok := r.Header["X-Iap-User"]; ok {
				t.Error("owned header not stripped from a denied request (handle_errors may proxy it)")
			}
			e := logs.FilterMessage("request denied").All()
			if len(e) != 1 || e[0].Level != zapcore.InfoLevel {
				t.Fatalf("want one info denial log, got %v", logs.All())
			}
			fields := e[0].ContextMap()
			for _, k := range []string{"reason", "reason_code", "issuer", "subject", "kid", "alg", "status"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("denial log has no %s: %v", k, fields)
				}
			}
			assertNoToken(t, logs, "secret.token.value")
		})
	}
}

func TestServeAmbiguousAuthorization(t *testing.T) {
	f := &fakeEngine{decide: allowAlice}
	h, _ := newTestHandler(t, &Handler{}, f)
	r, _ := newRequest("GET", "/")
	r.Header.Add("Authorization", "Bearer a")
	r.Header.Add("Authorization", "Bearer b")
	r.Header.Set("X-IAP-Roles", "admin")
	next := &recordingNext{}
	err := h.ServeHTTP(httptest.NewRecorder(), r, next)
	if got := handlerStatus(t, err); got != 400 {
		t.Errorf("status %d, want 400", got)
	}
	if next.called || len(f.calls) != 0 {
		t.Error("an ambiguous request must not be decided or passed on")
	}
	if _, ok := r.Header["X-Iap-Roles"]; ok {
		t.Error("owned header not stripped")
	}
}

func TestServeAmbiguousCookie(t *testing.T) {
	f := &fakeEngine{decide: allowAlice}
	h, logs := newTestHandler(t, &Handler{TokenSources: []TokenSource{{Kind: SourceCookie, Name: "session"}}}, f)
	r, _ := newRequest("GET", "/")
	// The site's cookie, and one tossed in by a sibling domain or for a more specific path.
	r.Header.Set("Cookie", "session=attacker.token.sig; session=victim.token.sig")
	next := &recordingNext{}
	err := h.ServeHTTP(httptest.NewRecorder(), r, next)
	if got := handlerStatus(t, err); got != 400 {
		t.Errorf("status %d, want 400", got)
	}
	if next.called || len(f.calls) != 0 {
		t.Error("a request with two token cookies must not be decided or passed on")
	}
	if e := logs.FilterMessage("request denied").All(); len(e) != 1 || e[0].ContextMap()["reason_code"] != "bad_request" {
		t.Errorf("want one bad_request denial log, got %v", logs.All())
	}
	assertNoToken(t, logs, "victim.token.sig")
	assertNoToken(t, logs, "attacker.token.sig")
}

func TestServeRemovesToken(t *testing.T) {
	bearer := TokenSource{Kind: SourceBearer}
	header := TokenSource{Kind: SourceHeader, Name: "X-Access-Token"}
	cookie := TokenSource{Kind: SourceCookie, Name: "session"}
	tests := []struct {
		name    string
		sources []TokenSource
		pass    bool
		setup   func(http.Header)
		check   func(*testing.T, http.Header)
	}{
		{"bearer", nil, false, func(h http.Header) {
			h.Set("Authorization", "Bearer tok.en.sig")
		}, func(t *testing.T, h http.Header) {
			if v, ok := h["Authorization"]; ok {
				t.Errorf("Authorization reached the upstream: %q", v)
			}
		}},
		{"header", []TokenSource{header}, false, func(h http.Header) {
			h.Set("X-Access-Token", "tok.en.sig")
			h.Set("X-Other", "kept")
		}, func(t *testing.T, h http.Header) {
			if v, ok := h["X-Access-Token"]; ok {
				t.Errorf("X-Access-Token reached the upstream: %q", v)
			}
			if h.Get("X-Other") != "kept" {
				t.Error("an unrelated header was removed")
			}
		}},
		{"cookie: only that cookie goes", []TokenSource{cookie}, false, func(h http.Header) {
			h.Add("Cookie", "theme=dark;  session=tok.en.sig ; lang=\"en\"")
			h.Add("Cookie", "a=1;b=2") // untouched: kept byte for byte
		}, func(t *testing.T, h http.Header) {
			want := []string{`theme=dark; lang="en"`, "a=1;b=2"}
			if got := h.Values("Cookie"); !slices.Equal(got, want) {
				t.Errorf("Cookie = %q, want %q", got, want)
			}
		}},
		{"cookie: the header goes when nothing else is in it", []TokenSource{cookie}, false, func(h http.Header) {
			h.Set("Cookie", "session=tok.en.sig")
		}, func(t *testing.T, h http.Header) {
			if v, ok := h["Cookie"]; ok {
				t.Errorf("Cookie = %q, want none", v)
			}
		}},
		{"cookie: same name in another case is another cookie", []TokenSource{cookie}, false, func(h http.Header) {
			h.Set("Cookie", "Session=x; session=tok.en.sig; session_id=y")
		}, func(t *testing.T, h http.Header) {
			if got := h.Get("Cookie"); got != "Session=x; session_id=y" {
				t.Errorf("Cookie = %q", got)
			}
		}},
		{"every configured source is cleared", []TokenSource{cookie, header, bearer}, false, func(h http.Header) {
			h.Set("Cookie", "session=tok.en.sig; other=1")
			h.Set("X-Access-Token", "second.tok.en")
			h.Set("Authorization", "bearer third.tok.en")
		}, func(t *testing.T, h http.Header) {
			for _, n := range []string{"X-Access-Token", "Authorization"} {
				if v, ok := h[n]; ok {
					t.Errorf("%s reached the upstream: %q", n, v)
				}
			}
			if got := h.Get("Cookie"); got != "other=1" {
				t.Errorf("Cookie = %q", got)
			}
		}},
		{"another Authorization scheme is not a token of ours", []TokenSource{cookie, bearer}, false, func(h http.Header) {
			h.Set("Cookie", "session=tok.en.sig")
			h.Set("Authorization", "Basic dXNlcjpwYXNz")
		}, func(t *testing.T, h http.Header) {
			if got := h.Get("Authorization"); got != "Basic dXNlcjpwYXNz" {
				t.Errorf("Authorization = %q", got)
			}
		}},
		{"unconfigured sources are left alone", []TokenSource{cookie}, false, func(h http.Header) {
			h.Set("Cookie", "session=tok.en.sig")
			h.Set("Authorization", "Bearer for.the.upstream")
		}, func(t *testing.T, h http.Header) {
			if got := h.Get("Authorization"); got != "Bearer for.the.upstream" {
				t.Errorf("Authorization = %q", got)
			}
		}},
		{"pass_token keeps bearer", nil, true, func(h http.Header) {
			h.Set("Authorization", "Bearer tok.en.sig")
		}, func(t *testing.T, h http.Header) {
			if got := h.Get("Authorization"); got != "Bearer tok.en.sig" {
				t.Errorf("Authorization = %q", got)
			}
		}},
		{"pass_token keeps header and cookie", []TokenSource{cookie, header}, true, func(h http.Header) {
			h.Set("Cookie", "a=1; session=tok.en.sig")
			h.Set("X-Access-Token", "other.tok.en")
		}, func(t *testing.T, h http.Header) {
			if got := h.Get("Cookie"); got != "a=1; session=tok.en.sig" {
				t.Errorf("Cookie = %q", got)
			}
			if got := h.Get("X-Access-Token"); got != "other.tok.en" {
				t.Errorf("X-Access-Token = %q", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeEngine{decide: allowAlice}
			h, _ := newTestHandler(t, &Handler{TokenSources: tt.sources, PassToken: tt.pass}, f)
			r, repl := newRequest("GET", "/")
			tt.setup(r.Header)
			next := &recordingNext{}
			if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
			if !next.called {
				t.Fatal("next not called")
			}
			if len(f.calls) != 1 || f.calls[0].Token != "tok.en.sig" {
				t.Fatalf("engine got %+v, want the token", f.calls)
			}
			tt.check(t, next.header)
			if got, _ := repl.GetString("http.auth.user.id"); got != "alice" {
				t.Errorf("placeholders not set: %q", got)
			}
		})
	}
}

// proxyNext is the next handler as a proxy sees the request: it first deletes the headers the
// Connection header names, as Caddy's reverse_proxy does (removeConnectionHeaders).
type proxyNext struct{ recordingNext }

func (n *proxyNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	for _, line := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(line, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				r.Header.Del(tok)
			}
		}
	}
	return n.recordingNext.ServeHTTP(w, r)
}

func TestServeConnectionCannotRemoveIdentityHeaders(t *testing.T) {
	decide := func(r *ffi.Request) (ffi.Decision, error) {
		d, _ := allowAlice(r)
		// A header the decision sets without listing it as owned is protected all the same.
		d.SetHeaders = append(d.SetHeaders, ffi.Header{Name: "X-Set-Only", Value: "v"})
		return d, nil
	}
	h, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: decide})
	r, _ := newRequest("GET", "/")
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Add("Connection", "keep-alive, X-IAP-User, x-iap-assertion")
	r.Header.Add("Connection", "Upgrade,X-Iap-Roles , x-set-only")
	r.Header.Add("Connection", " X-IAP-Email ,, ")
	r.Header.Set("X-Hop", "1")
	r.Header.Add("Connection", "X-Hop")
	next := &proxyNext{}
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	if !next.called {
		t.Fatal("next not called")
	}
	for name, want := range map[string]string{"X-IAP-User": "alice", "X-IAP-Roles": "admin,reader", "X-Set-Only": "v"} {
		if got := next.header.Get(name); got != want {
			t.Errorf("%s = %q after the proxy, want %q", name, got, want)
		}
	}
	want := []string{"keep-alive", "Upgrade", "X-Hop"}
	if got := r.Header.Values("Connection"); !slices.Equal(got, want) {
		t.Errorf("Connection = %q, want %q", got, want)
	}
	if _, ok := next.header["X-Hop"]; ok {
		t.Error("a header the client named in Connection should still be the proxy's to remove")
	}
}

func TestServeConnectionScrubbedOnDenial(t *testing.T) {
	h, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: denyWith(401, ffi.ReasonMissingToken, "no token", "Bearer")})
	r, _ := newRequest("GET", "/")
	r.Header.Set("Connection", "X-IAP-User, X-IAP-Assertion")
	if got := handlerStatus(t, h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})); got != 401 {
		t.Errorf("status %d", got)
	}
	if v, ok := r.Header["Connection"]; ok {
		t.Errorf("Connection = %q, want none (handle_errors may proxy the request)", v)
	}
}

func TestScrubConnection(t *testing.T) {
	names := []string{"X-IAP-User", "X-IAP-Assertion"}
	tests := []struct {
		name string
		in   []string
		want []string // nil: no Connection header
	}{
		{"absent", nil, nil},
		{"nothing named", []string{"keep-alive, Upgrade"}, []string{"keep-alive, Upgrade"}},
		{"case-insensitive", []string{"x-iap-USER"}, nil},
		{"others kept", []string{"close,X-IAP-User,Upgrade"}, []string{"close, Upgrade"}},
		{"per line", []string{"X-IAP-Assertion", "Upgrade", "x-iap-user, te"}, []string{"Upgrade", "te"}},
		{"prefix is not a match", []string{"X-IAP-User-Extra, X-IAP"}, []string{"X-IAP-User-Extra, X-IAP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.in {
				h.Add("Connection", v)
			}
			scrubConnection(h, names)
			got, ok := h["Connection"]
			if !ok {
				got = nil
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Connection = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	tests := []struct {
		name    string
		sources []TokenSource
		setup   func(*http.Request)
		want    string
		wantErr bool
	}{
		{"default bearer", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") }, "abc", false},
		{"scheme is case-insensitive", nil, func(r *http.Request) { r.Header.Set("Authorization", "bEaReR abc") }, "abc", false},
		{"extra spaces", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer   abc ") }, "abc", false},
		{"basic is not bearer", nil, func(r *http.Request) { r.Header.Set("Authorization", "Basic YWxhZGRpbjpvcGVu") }, "", false},
		{"bearer without token", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer") }, "", false},
		{"no prefix match", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearerabc") }, "", false},
		{"two authorization headers", nil, func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer a")
			r.Header.Add("Authorization", "Basic b")
		}, "", true},
		{"header source", []TokenSource{{Kind: SourceHeader, Name: "X-Token"}}, func(r *http.Request) { r.Header.Set("X-Token", " t1 ") }, "t1", false},
		{"two header values", []TokenSource{{Kind: SourceHeader, Name: "X-Token"}}, func(r *http.Request) {
			r.Header.Add("X-Token", "a")
			r.Header.Add("X-Token", "b")
		}, "", true},
		{"cookie source", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "other", Value: "x"})
			r.AddCookie(&http.Cookie{Name: "session", Value: "c1"})
		}, "c1", false},
		{"order: first source holding a token wins", []TokenSource{{Kind: SourceCookie, Name: "session"}, {Kind: SourceBearer}}, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer b1")
			r.AddCookie(&http.Cookie{Name: "session", Value: "c1"})
		}, "c1", false},
		{"order: falls through to the next source", []TokenSource{{Kind: SourceCookie, Name: "session"}, {Kind: SourceBearer}}, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer b1")
		}, "b1", false},
		{"two cookies of the token's name", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Set("Cookie", "session=c1; other=x; session=c2")
		}, "", true},
		{"two cookies of the token's name on two lines", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Add("Cookie", "session=c1")
			r.Header.Add("Cookie", "other=x;session=c2")
		}, "", true},
		{"a duplicate cookie counts even when empty", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Set("Cookie", "session=c1; session=")
		}, "", true},
		{"cookie names are case-sensitive", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Set("Cookie", "Session=x; session=c1; SESSION=y; session_2=z")
		}, "c1", false},
		{"duplicate cookie of another source's name is not ours", []TokenSource{{Kind: SourceBearer}}, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer b1")
			r.Header.Set("Cookie", "session=c1; session=c2")
		}, "b1", false},
		{"duplicate cookie in a later source is ambiguous only when reached", []TokenSource{{Kind: SourceBearer}, {Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Set("Cookie", "session=c1; session=c2")
		}, "", true},
		{"bearer not configured ignores Authorization", []TokenSource{{Kind: SourceCookie, Name: "session"}}, func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer a")
			r.Header.Add("Authorization", "Bearer b")
		}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{TokenSources: tt.sources}
			h.setDefaults()
			r := httptest.NewRequest("GET", "/", nil)
			tt.setup(r)
			got, err := h.token(r)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("token = %q, want %q", got, tt.want)
			}
		})
	}
}

// A request that reaches a handler after Cleanup (Caddy drains old servers without waiting on
// reload) is still decided by the retired engine, not refused.
func TestServeAfterCleanup(t *testing.T) {
	f := &fakeEngine{decide: allowAlice}
	h, _ := newTestHandler(t, &Handler{}, f)
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := h.Cleanup(); err != nil { // idempotent
		t.Fatal(err)
	}
	r, _ := newRequest("GET", "/")
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Set("X-IAP-User", "x")
	next := &recordingNext{}
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatalf("straggler request refused: %v", err)
	}
	if !next.called {
		t.Error("next not called for an allowed straggler request")
	}
	if got := r.Header.Get("X-IAP-User"); got == "x" {
		t.Error("spoofed owned header survived")
	}
}

// An explicitly closed engine refuses with 503, never allows.
func TestServeEngineClosed(t *testing.T) {
	f := &fakeEngine{decide: func(*ffi.Request) (ffi.Decision, error) { return ffi.Decision{}, ffi.ErrClosed }}
	h, _ := newTestHandler(t, &Handler{}, f)
	r, _ := newRequest("GET", "/")
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Set("X-IAP-User", "x")
	next := &recordingNext{}
	err := h.ServeHTTP(httptest.NewRecorder(), r, next)
	if got := handlerStatus(t, err); got != 503 {
		t.Errorf("status %d, want 503", got)
	}
	if next.called {
		t.Error("next called with a closed engine")
	}
	if _, ok := r.Header["X-Iap-User"]; ok {
		t.Error("owned header not stripped")
	}
}

func TestServeEngineErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{&ffi.Error{Op: "iap_engine_decide", Code: ffi.ResultInvalidParameter}, 400},
		{&ffi.Error{Op: "iap_engine_decide", Code: ffi.ResultPanic}, 500},
	} {
		f := &fakeEngine{decide: func(*ffi.Request) (ffi.Decision, error) { return ffi.Decision{}, tt.err }}
		h, _ := newTestHandler(t, &Handler{}, f)
		r, _ := newRequest("GET", "/")
		r.Header.Set("X-IAP-Email", "x")
		next := &recordingNext{}
		if got := handlerStatus(t, h.ServeHTTP(httptest.NewRecorder(), r, next)); got != tt.want || next.called {
			t.Errorf("%v: status %d, want %d", tt.err, got, tt.want)
		}
		if _, ok := r.Header["X-Iap-Email"]; ok {
			t.Error("owned header not stripped")
		}
	}
}

func TestServeNotProvisioned(t *testing.T) {
	h := &Handler{}
	if err := h.Cleanup(); err != nil {
		t.Fatalf("Cleanup must work without Provision: %v", err)
	}
	r, _ := newRequest("GET", "/")
	if got := handlerStatus(t, h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})); got != 503 {
		t.Errorf("status %d", got)
	}
}

func TestServeJWKS(t *testing.T) {
	jwks := []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"x","y":"y"}]}`)
	f := &fakeEngine{decide: denyWith(401, ffi.ReasonMissingToken, "no token", "Bearer")}
	f.jwks = jwks
	h, _ := newTestHandler(t, &Handler{Assertion: &Assertion{Audience: "up"}}, f)

	for _, method := range []string{"GET", "HEAD"} {
		r, _ := newRequest(method, DefaultJWKSPath)
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, &recordingNext{}); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if w.Code != 200 {
			t.Errorf("%s: status %d", method, w.Code)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/jwk-set+json" {
			t.Errorf("%s: Content-Type %q", method, ct)
		}
		if cc := w.Header().Get("Cache-Control"); cc != "max-age=300" {
			t.Errorf("%s: Cache-Control %q", method, cc)
		}
		wantBody := string(jwks)
		if method == "HEAD" {
			wantBody = ""
		}
		if w.Body.String() != wantBody {
			t.Errorf("%s: body %q", method, w.Body.String())
		}
	}
	if len(f.calls) != 0 {
		t.Error("the JWKS must be served without asking the engine")
	}

	// Other methods, and other paths, are decided as usual.
	r, _ := newRequest("POST", DefaultJWKSPath)
	if got := handlerStatus(t, h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})); got != 401 {
		t.Errorf("POST to the JWKS path: status %d", got)
	}

	// A configured path replaces the default; "off" serves nothing.
	h2, _ := newTestHandler(t, &Handler{Assertion: &Assertion{Audience: "up"}, JWKSPath: "/keys"}, f)
	r, _ = newRequest("GET", "/keys")
	w := httptest.NewRecorder()
	if err := h2.ServeHTTP(w, r, &recordingNext{}); err != nil || w.Code != 200 {
		t.Errorf("custom path: %v %d", err, w.Code)
	}
	h3, _ := newTestHandler(t, &Handler{Assertion: &Assertion{Audience: "up"}, JWKSPath: "off"}, f)
	r, _ = newRequest("GET", DefaultJWKSPath)
	if got := handlerStatus(t, h3.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})); got != 401 {
		t.Errorf("jwks_path off: status %d", got)
	}
	// Without an assertion there is nothing to serve, and the path is not special.
	h4, _ := newTestHandler(t, &Handler{}, f)
	r, _ = newRequest("GET", DefaultJWKSPath)
	if got := handlerStatus(t, h4.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})); got != 401 {
		t.Errorf("no assertion: status %d", got)
	}
}

func TestServeCountsDecisions(t *testing.T) {
	h, _ := newTestHandler(t, &Handler{}, &fakeEngine{decide: denyWith(403, ffi.ReasonForbidden, "no", "")})
	c := h.metrics.decisions.WithLabelValues(resultDeny, "forbidden")
	before := testutil.ToFloat64(c)
	r, _ := newRequest("GET", "/")
	_ = h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})
	if got := testutil.ToFloat64(c) - before; got != 1 {
		t.Errorf("deny/forbidden counted %v times", got)
	}
}

// assertNoToken fails if any log entry carries the token.
func assertNoToken(t *testing.T, logs *observer.ObservedLogs, token string) {
	t.Helper()
	for _, e := range logs.All() {
		if strings.Contains(e.Message, token) {
			t.Errorf("token in log message %q", e.Message)
		}
		for k, v := range e.ContextMap() {
			if strings.Contains(strings.ToLower(toString(v)), strings.ToLower(token)) {
				t.Errorf("token in log field %s", k)
			}
		}
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		var b strings.Builder
		for _, x := range v {
			b.WriteString(toString(x))
		}
		return b.String()
	}
	return ""
}

// A denied request can still reach an upstream through handle_errors: it must not carry the
// caller's token either.
func TestServeRemovesTokenOnDenial(t *testing.T) {
	f := &fakeEngine{decide: denyWith(403, ffi.ReasonForbidden, "no allow rule", "")}
	h, _ := newTestHandler(t, &Handler{}, f)
	r, _ := newRequest("GET", "/admin")
	r.Header.Set("Authorization", "Bearer tok.en.sig")
	err := h.ServeHTTP(httptest.NewRecorder(), r, &recordingNext{})
	if got := handlerStatus(t, err); got != 403 {
		t.Fatalf("status %d, want 403", got)
	}
	if v, ok := r.Header["Authorization"]; ok {
		t.Errorf("token left on a denied request: %q", v)
	}
	if len(f.calls) != 1 || f.calls[0].Token != "tok.en.sig" {
		t.Errorf("engine did not get the token: %+v", f.calls)
	}
}

// fixedEngine answers every request with one decision, and records nothing: a benchmark's
// engine, so what is measured is the handler.
type fixedEngine struct{ d ffi.Decision }

func (f fixedEngine) Decide(ffi.Request) (ffi.Decision, error) { return f.d, nil }
func (fixedEngine) PublicJWKS() []byte                         { return nil }
func (fixedEngine) Stats() (ffi.Stats, bool)                   { return ffi.Stats{}, true }
func (fixedEngine) Close()                                     {}

// BenchmarkServeAllowed is the handler's own cost for an allowed request, the engine's left
// out (internal/ffi's BenchmarkDecideCached measures that): the owned headers stripped, the
// token found and removed, the metrics, the placeholders, the identity headers set. Logging
// is at Info, as deployed without `audit`.
func BenchmarkServeAllowed(b *testing.B) {
	d, _ := allowAlice(nil)
	h, _ := newHandlerLogging(b, &Handler{}, fixedEngine{d}, zapcore.InfoLevel)
	base := httptest.NewRequest("GET", "https://app.example.com/items/1?x=1", nil)
	base.Header.Set("User-Agent", "bench/1.0")
	base.Header.Set("Accept", "*/*")
	authz := []string{"Bearer " + strings.Repeat("t", 800)}
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	var r http.Request
	var repl *caddy.Replacer
	b.ReportAllocs()
	for b.Loop() {
		// Every request gets a new replacer, as in Caddy's server (its making is counted here
		// too, the same for every version of the handler).
		r = *base
		repl = caddyhttp.NewTestReplacer(&r)
		r.Header["Authorization"] = authz
		if err := h.ServeHTTP(w, &r, next); err != nil {
			b.Fatal(err)
		}
	}
	if r.Header.Get("X-IAP-User") != "alice" || r.Header.Get("Authorization") != "" {
		b.Fatalf("headers after the handler: %v", r.Header)
	}
	if v, _ := repl.GetString("http.auth.user.roles"); v != "admin,reader" {
		b.Fatalf("roles placeholder %q", v)
	}
}

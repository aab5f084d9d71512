package caddyiap

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// stubCosmos stands in for the Rust gateway: it records what the handler passed and answers
// with a fixed decision.
type stubCosmos struct {
	got      cosmosRequest
	decision cosmosDecision
	rewrite  func([]byte, string) ([]byte, error)
}

func (s *stubCosmos) authorize(r *cosmosRequest) (cosmosDecision, error) {
	s.got = *r
	return s.decision, nil
}

func (s *stubCosmos) rewriteAccount(body []byte, url string) ([]byte, error) {
	return s.rewrite(body, url)
}

func cosmosHandler(gw cosmosGateway) *CosmosHandler {
	return &CosmosHandler{logger: zap.NewNop(), gateway: gw}
}

// upstreamSeen is the next handler: it records the request as the proxy would send it.
type upstreamSeen struct {
	header http.Header
	body   string
	answer string
}

func (u *upstreamSeen) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.header = r.Header.Clone()
	b, _ := io.ReadAll(r.Body)
	u.body = string(b)
	_, err := io.WriteString(w, u.answer)
	return err
}

func TestCosmosAllowedRequestCarriesOnlyTheGatewaysCredentials(t *testing.T) {
	gw := &stubCosmos{decision: cosmosDecision{Allowed: true, Status: 200, Authorization: "type%3Dmaster%26ver%3D1.0%26sig%3Dxyz",
		Date: "Wed, 02 Dec 2026 01:00:00 GMT", Query: true}}
	next := &upstreamSeen{answer: "ok"}
	body := `{"query":"SELECT * FROM c"}`
	r := httptest.NewRequest("POST", "/dbs/app/colls/orders/docs", strings.NewReader(body))
	r.Header.Set("Authorization", "type=aad&ver=1.0&sig=client.jwt.token")
	r.Header.Set("X-Ms-Date", "Thu, 01 Jan 1970 00:00:00 GMT")
	r.Header.Set("Date", "Thu, 01 Jan 1970 00:00:00 GMT")
	r.Header.Set("X-Ms-Documentdb-Isquery", "TRUE")
	r.Header.Set("X-Ms-Documentdb-Is-Upsert", "false")
	r.Header.Set("Content-Type", "application/query+json")
	w := httptest.NewRecorder()
	if err := cosmosHandler(gw).ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if gw.got.Authorization != "type=aad&ver=1.0&sig=client.jwt.token" || gw.got.IsQuery != "TRUE" || string(gw.got.Body) != body {
		t.Errorf("gateway got %+v", gw.got)
	}
	if got := next.header.Values("Authorization"); len(got) != 1 || got[0] != gw.decision.Authorization {
		t.Errorf("upstream Authorization = %q", got)
	}
	if next.header.Get("X-Ms-Date") != gw.decision.Date || next.header.Get("Date") != "" {
		t.Errorf("upstream dates: x-ms-date %q, Date %q", next.header.Get("X-Ms-Date"), next.header.Get("Date"))
	}
	if next.header.Get("X-Ms-Documentdb-Isquery") != "True" || next.header.Get("X-Ms-Documentdb-Is-Upsert") != "" {
		t.Errorf("kind headers not normalized: %v", next.header)
	}
	if next.body != body {
		t.Errorf("upstream body = %q", next.body)
	}
}

func TestCosmosRefusals(t *testing.T) {
	gw := &stubCosmos{decision: cosmosDecision{Status: 403, Body: `{"code":"Forbidden","message":"no"}`}}
	next := &upstreamSeen{}
	r := httptest.NewRequest("GET", "/dbs/app/colls/orders/docs/1", nil)
	r.Header.Set("Authorization", "Bearer a.b.c")
	w := httptest.NewRecorder()
	_ = cosmosHandler(gw).ServeHTTP(w, r, next)
	if w.Code != 403 || w.Body.String() != gw.decision.Body || next.header != nil {
		t.Fatalf("refusal: %d %q, upstream reached: %v", w.Code, w.Body, next.header != nil)
	}

	// Repeated credentials or kind headers are ambiguous: 400 before the gateway is asked.
	for _, name := range []string{"Authorization", "X-Ms-Documentdb-Isquery", "Content-Type"} {
		gw.got = cosmosRequest{}
		r := httptest.NewRequest("GET", "/dbs/app/colls/orders/docs/1", nil)
		r.Header.Add(name, "x")
		r.Header.Add(name, "y")
		w := httptest.NewRecorder()
		_ = cosmosHandler(gw).ServeHTTP(w, r, next)
		if w.Code != 400 || !strings.Contains(w.Body.String(), `"BadRequest"`) || gw.got.Method != "" {
			t.Errorf("%s twice: %d %s", name, w.Code, w.Body)
		}
	}

	// A body over the limit is refused, not truncated.
	r = httptest.NewRequest("POST", "/dbs/app/colls/orders/docs", strings.NewReader(strings.Repeat("x", maxCosmosBody+1)))
	w = httptest.NewRecorder()
	_ = cosmosHandler(gw).ServeHTTP(w, r, next)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", w.Code)
	}
}

func TestCosmosAccountDocumentIsRewrittenOrNotPassed(t *testing.T) {
	gw := &stubCosmos{decision: cosmosDecision{Allowed: true, Status: 200, AccountDocument: true, Authorization: "sig", Date: "d"}}
	gw.rewrite = func(body []byte, url string) ([]byte, error) {
		return []byte(strings.ReplaceAll(string(body), "https://account:443/", url)), nil
	}
	next := &upstreamSeen{answer: `{"writableLocations":[{"databaseAccountEndpoint":"https://account:443/"}]}`}
	r := httptest.NewRequest("GET", "https://gw.example:8443/", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	if err := cosmosHandler(gw).ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if want := `{"writableLocations":[{"databaseAccountEndpoint":"https://gw.example:8443/"}]}`; w.Body.String() != want {
		t.Errorf("body %s, want %s", w.Body, want)
	}
	if next.header.Get("Accept-Encoding") != "" {
		t.Error("Accept-Encoding reached the account: the document could come back compressed")
	}

	gw.rewrite = func([]byte, string) ([]byte, error) { return nil, errors.New("not an account document") }
	w = httptest.NewRecorder()
	_ = cosmosHandler(gw).ServeHTTP(w, httptest.NewRequest("GET", "https://gw.example:8443/", nil), next)
	if w.Code != http.StatusBadGateway || strings.Contains(w.Body.String(), "account:443") {
		t.Errorf("unreadable document: %d %s", w.Code, w.Body)
	}
}

var _ caddyhttp.Handler = (*upstreamSeen)(nil)

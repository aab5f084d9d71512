package caddyiap

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The request headers whose values decide what a Cosmos request does. A client sending one
// of them twice is refused: backends disagree on which copy counts.
const (
	hdrIsQuery  = "X-Ms-Documentdb-Isquery"
	hdrIsUpsert = "X-Ms-Documentdb-Is-Upsert"
	hdrIsBatch  = "X-Ms-Cosmos-Is-Batch-Request"
	hdrMsDate   = "X-Ms-Date"
)

// cosmosGateway is the Rust gateway as the handler uses it (an interface so the handler
// builds without cgo).
type cosmosGateway interface {
	authorize(r *cosmosRequest) (cosmosDecision, error)
	rewriteAccount(body []byte, gatewayURL string) ([]byte, error)
}

type cosmosRequest struct {
	Method, EscapedPath, Authorization      string
	IsQuery, ContentType, IsUpsert, IsBatch string
	Body                                    []byte
}

type cosmosDecision struct {
	Allowed                bool
	Status                 int
	Body, LogReason        string
	Operation              string
	Authorization, Date    string
	AccountDocument        bool
	Query, Upsert, Batch   bool
	Subject, Email, Issuer string
	Roles                  []string
}

// ServeHTTP checks one Cosmos DB request and, when allowed, re-signs it for the account and
// passes it to next.
func (h *CosmosHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.gateway == nil {
		return h.refuse(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "caddy-iap: handler is not provisioned", "not provisioned", nil)
	}
	for _, name := range []string{"Authorization", hdrIsQuery, hdrIsUpsert, hdrIsBatch, "Content-Type"} {
		if len(r.Header.Values(name)) > 1 {
			return h.refuse(w, r, http.StatusBadRequest, "BadRequest", "caddy-iap: "+name+" is sent more than once", "repeated "+name, nil)
		}
	}
	req := cosmosRequest{
		Method:        r.Method,
		EscapedPath:   r.URL.EscapedPath(),
		Authorization: r.Header.Get("Authorization"),
		IsQuery:       r.Header.Get(hdrIsQuery),
		ContentType:   r.Header.Get("Content-Type"),
		IsUpsert:      r.Header.Get(hdrIsUpsert),
		IsBatch:       r.Header.Get(hdrIsBatch),
	}
	if r.Method == http.MethodPost && r.Body != nil {
		// A POST's body decides what it does (create or query); it is read once, checked, and
		// the same bytes go upstream.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxCosmosBody+1))
		if err != nil {
			return h.refuse(w, r, http.StatusBadRequest, "BadRequest", "caddy-iap: reading the request body failed", err.Error(), nil)
		}
		if len(body) > maxCosmosBody {
			return h.refuse(w, r, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "caddy-iap: request body too large", "body over limit", nil)
		}
		req.Body = body
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Del("Transfer-Encoding")
	}
	d, err := h.gateway.authorize(&req)
	if err != nil {
		return h.refuse(w, r, http.StatusServiceUnavailable, "ServiceUnavailable", "caddy-iap: try again", err.Error(), nil)
	}
	if !d.Allowed {
		return h.refuse(w, r, d.Status, "", d.Body, d.LogReason, &d)
	}
	if c := h.logger.Check(h.allowLevel(), "cosmos request allowed"); c != nil {
		c.Write(zap.String("subject", d.Subject), zap.String("email", d.Email), zap.Strings("roles", d.Roles),
			zap.String("operation", d.Operation), zap.String("method", r.Method), zap.String("path", r.URL.Path))
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		u := &userPlaceholders{subject: d.Subject, email: d.Email, issuer: d.Issuer, roles: d.Roles}
		u.install(repl)
	}

	// The caller's credential and date go; ours come in. Date is dropped too: the SDKs sign it
	// when present, and the gateway's signature covers x-ms-date only.
	r.Header.Del("Authorization")
	r.Header.Del("Date")
	r.Header.Set("Authorization", d.Authorization)
	r.Header.Set(hdrMsDate, d.Date)
	for _, k := range [...]struct {
		name string
		on   bool
	}{{hdrIsQuery, d.Query}, {hdrIsUpsert, d.Upsert}, {hdrIsBatch, d.Batch}} {
		if k.on {
			r.Header.Set(k.name, "True")
		} else {
			r.Header.Del(k.name)
		}
	}
	if !d.AccountDocument {
		return next.ServeHTTP(w, r)
	}
	return h.serveAccountDocument(w, r, next)
}

// serveAccountDocument passes GET / on and rewrites the advertised endpoints in the answer to
// this gateway's URL. An answer that cannot be rewritten is not passed through.
func (h *CosmosHandler) serveAccountDocument(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	r.Header.Del("Accept-Encoding") // the body is rewritten, so it must come back plain
	buf := new(bytes.Buffer)
	rec := caddyhttp.NewResponseRecorder(w, buf, func(status int, _ http.Header) bool { return status == http.StatusOK })
	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	if !rec.Buffered() {
		return nil
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	out, err := h.gateway.rewriteAccount(buf.Bytes(), scheme+"://"+r.Host+"/")
	if err != nil {
		return h.refuse(w, r, http.StatusBadGateway, "BadGateway", "caddy-iap: the account answered with an unreadable account document", err.Error(), nil)
	}
	hdr := rec.Header()
	hdr.Del("Content-Encoding")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(rec.Status())
	_, err = w.Write(out)
	return err
}

// refuse writes a Cosmos-shaped error and logs the denial. body, when empty, is built from
// code and message.
func (h *CosmosHandler) refuse(w http.ResponseWriter, r *http.Request, status int, code, body, reason string, d *cosmosDecision) error {
	if code != "" {
		b, _ := json.Marshal(struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{code, body})
		body = string(b)
	}
	if c := h.logger.Check(zapcore.InfoLevel, "cosmos request denied"); c != nil {
		fields := []zap.Field{zap.Int("status", status), zap.String("reason", reason),
			zap.String("method", r.Method), zap.String("path", r.URL.Path)}
		if d != nil {
			fields = append(fields, zap.String("operation", d.Operation), zap.String("subject", d.Subject),
				zap.String("email", d.Email), zap.Strings("roles", d.Roles))
		}
		c.Write(fields...)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if status == http.StatusUnauthorized {
		hdr.Set("WWW-Authenticate", `Bearer realm="caddy-iap"`)
	}
	w.WriteHeader(status)
	_, err := io.WriteString(w, body)
	return err
}

func (h *CosmosHandler) allowLevel() zapcore.Level {
	if h.Audit {
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}

var _ caddyhttp.MiddlewareHandler = (*CosmosHandler)(nil)

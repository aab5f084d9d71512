package caddyiap

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// errAmbiguous marks a request whose credentials could be read more than one way; it is
// refused rather than guessed at.
var errAmbiguous = errors.New("ambiguous credentials")

// ServeHTTP decides the request with the engine and applies the decision: headers the engine
// owns are removed from every request, and so are the `Connection` tokens naming them; an
// allowed request loses its token (unless pass_token), gets the engine's headers and the
// `{http.auth.user.*}` placeholders and goes on to next; a denied one becomes a handler error
// for `handle_errors`.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.jwksPath != "" && r.URL.Path == h.jwksPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		return h.serveJWKS(w, r)
	}
	if h.engine == nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("iap: handler is not provisioned"))
	}

	// Before anything else, client-sent copies of the headers the engine owns go, whatever
	// happens next: even a refused request can reach an upstream through a handle_errors route.
	// The list was read from the engine at Provision; it is fixed per engine, so one pass here
	// covers the whole request.
	stripHeaders(r.Header, h.owned)
	// A client's `Connection` header may name them too: a proxy (Caddy's reverse_proxy) removes
	// the headers it names after this handler has set them.
	scrubConnection(r.Header, h.owned)

	// The sign-in's cookies are ours: taken off the request before anything can pass it on.
	var cookies string
	if h.signIn != nil {
		cookies = h.sessionCookies(r)
		if h.isLoginPage(r.URL.Path) {
			return h.serveLoginPage(w, r, cookies)
		}
	}

	token, err := h.token(r)
	if err != nil {
		h.metrics.decision(resultDeny, ffi.ReasonBadRequest.String(), 0)
		if c := h.logger.Check(zapcore.InfoLevel, "request denied"); c != nil {
			c.Write(zap.Int("status", http.StatusBadRequest), zap.String("reason", err.Error()),
				zap.Stringer("reason_code", ffi.ReasonBadRequest))
		}
		return caddyhttp.Error(http.StatusBadRequest, err)
	}

	if !h.PassToken {
		// The caller's token is for us, not the upstream: an upstream that got it (also a
		// handle_errors upstream after a denial) could replay it. It is in `token` now.
		h.removeToken(r.Header)
	}

	if h.credsPath != "" && r.URL.Path == h.credsPath {
		return h.serveCredentials(w, r, token)
	}

	req := ffi.Request{Method: r.Method, Host: r.Host, Path: r.URL.EscapedPath(), Token: token}
	if token == "" && h.signIn != nil {
		// No bearer token: a browser, decided on its session.
		s, ok, err := h.session(w, r, cookies)
		if !ok {
			return err
		}
		req.Token, req.Session = s.IDToken, true
		if len(s.SetCookies) > 0 {
			w = newPrivateWriter(w, s.SetCookies)
		}
	}
	start := time.Now()
	d, err := h.engine.Decide(req)
	took := time.Since(start)
	if err != nil {
		status, reason, level := http.StatusInternalServerError, ffi.ReasonInternal, zapcore.ErrorLevel
		if errors.Is(err, ffi.ErrClosed) {
			// A request still in flight on a config being replaced.
			status = http.StatusServiceUnavailable
		} else if fe, ok := errors.AsType[*ffi.Error](err); ok && fe.Code == ffi.ResultInvalidParameter {
			// The engine refused the request's own bytes (not UTF-8).
			status, reason, level = http.StatusBadRequest, ffi.ReasonBadRequest, zapcore.InfoLevel
		}
		h.metrics.decision(resultDeny, reason.String(), took)
		if c := h.logger.Check(level, "engine call failed"); c != nil {
			c.Write(zap.Int("status", status), zap.Stringer("reason_code", reason), zap.Error(err))
		}
		return caddyhttp.Error(status, err)
	}

	if !d.Allowed {
		h.metrics.decision(resultDeny, d.ReasonLabel(), took)
		if req.Session && d.Status == http.StatusUnauthorized {
			// The session's ID token no longer passes (its issuer's keys changed, say): sign
			// in again rather than show a browser a bearer-token challenge.
			return h.signInRequired(w, r, cookies)
		}
		if req.Session && isNavigation(r) {
			// A signed-in person, not a client: a page saying who they are and what to do.
			return h.accessDenied(w, r, d)
		}
		return h.deny(w, &d)
	}
	h.metrics.allow(took)

	// One backing array for every set header's value: a slice each, one allocation in all.
	values := make([]string, len(d.SetHeaders))
	for i, hd := range d.SetHeaders {
		values[i] = hd.Value
		r.Header[hd.Name] = values[i : i+1 : i+1] // the engine's names come canonical
	}
	if len(r.Header["Connection"]) > 0 {
		// Rare; and it keeps every set header safe even if the engine ever sets one it
		// did not list as owned.
		set := make([]string, len(d.SetHeaders))
		for i, hd := range d.SetHeaders {
			set[i] = hd.Name
		}
		scrubConnection(r.Header, set)
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		u := &userPlaceholders{subject: d.Subject, email: d.Email, name: d.Name, issuer: d.Issuer, roles: d.Roles}
		u.install(repl)
	}

	level := zapcore.DebugLevel
	if h.Audit {
		level = zapcore.InfoLevel
	}
	if c := h.logger.Check(level, "request allowed"); c != nil {
		c.Write(append(identityFields(&d),
			zap.Strings("roles", d.Roles),
			zap.Bool("cache_hit", d.CacheHit),
		)...)
	}
	return next.ServeHTTP(w, r)
}

// deny turns a denial into a handler error, so handle_errors can serve it.
func (h *Handler) deny(w http.ResponseWriter, d *ffi.Decision) error {
	status := d.Status
	if status < 400 || status > 599 {
		// A deny without an error status would be an engine bug; refuse all the same.
		status = http.StatusInternalServerError
	}
	// The engine's RFC 6750 challenge: always on a 401, possibly on a 403 (insufficient_scope).
	if d.WWWAuthenticate != "" {
		w.Header().Set("WWW-Authenticate", d.WWWAuthenticate)
	}
	if c := h.logger.Check(zapcore.InfoLevel, "request denied"); c != nil {
		c.Write(append([]zap.Field{
			zap.Int("status", status),
			zap.String("reason", d.ReasonText),
			zap.String("reason_code", d.ReasonLabel()),
		}, identityFields(d)...)...)
	}
	return caddyhttp.Error(status, fmt.Errorf("%s: %s", d.ReasonLabel(), d.ReasonText))
}

// serveJWKS publishes the assertion public keys. No authentication: they are public, and
// upstreams need them to verify assertions.
func (h *Handler) serveJWKS(w http.ResponseWriter, r *http.Request) error {
	var jwks []byte
	if h.engine != nil {
		jwks = h.engine.PublicJWKS()
	}
	if len(jwks) == 0 {
		return caddyhttp.Error(http.StatusNotFound, errors.New("iap: no assertion keys to publish"))
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/jwk-set+json")
	hdr.Set("Cache-Control", "max-age=300")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(jwks)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(jwks)
	return err
}

// token reads the token from the configured sources, in order; "" when none holds one. It
// fails when a source is ambiguous (the same header, or two cookies of the same name).
func (h *Handler) token(r *http.Request) (string, error) {
	for _, src := range h.sources {
		switch src.Kind {
		case SourceBearer:
			vals := r.Header["Authorization"]
			if len(vals) > 1 {
				return "", fmt.Errorf("%w: %d Authorization headers", errAmbiguous, len(vals))
			}
			if len(vals) == 1 {
				if t, ok := bearerToken(vals[0]); ok {
					return t, nil
				}
			}
		case SourceHeader:
			vals := r.Header.Values(src.Name)
			if len(vals) > 1 {
				return "", fmt.Errorf("%w: %d %s headers", errAmbiguous, len(vals), src.Name)
			}
			if len(vals) == 1 {
				if t := strings.TrimSpace(vals[0]); t != "" {
					return t, nil
				}
			}
		case SourceCookie:
			// Two cookies of that name are refused rather than one picked: a sibling domain or a
			// more specific path can add a cookie of the same name (cookie tossing).
			if n := countCookies(r.Header, src.Name); n > 1 {
				return "", fmt.Errorf("%w: %d %s cookies", errAmbiguous, n, src.Name)
			}
			if c, err := r.Cookie(src.Name); err == nil && c.Value != "" {
				return c.Value, nil
			}
		}
	}
	return "", nil
}

// bearerToken reads `Bearer <token>` (RFC 6750 section 2.1; the scheme is case-insensitive).
func bearerToken(v string) (string, bool) {
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	t := strings.Trim(rest, " \t")
	return t, t != ""
}

// removeToken deletes what every configured token source holds, whichever of them carried
// the token: a bearer `Authorization` header, the named header, the named cookie (other
// cookies stay).
func (h *Handler) removeToken(hdr http.Header) {
	for _, src := range h.sources {
		switch src.Kind {
		case SourceBearer:
			// Another scheme (Basic, say) is not a token of ours; an allowed request carries
			// at most one Authorization header.
			for _, v := range hdr["Authorization"] {
				if scheme, _, _ := strings.Cut(v, " "); strings.EqualFold(scheme, "Bearer") {
					delete(hdr, "Authorization")
					break
				}
			}
		case SourceHeader:
			hdr.Del(src.Name)
		case SourceCookie:
			removeCookie(hdr, src.Name)
		}
	}
}

// cookieParts calls fn with each `name=value` part of one Cookie header line, split and
// trimmed the way net/http reads cookies, and the part's name.
func cookieParts(line string, fn func(part, name string)) {
	for part := range strings.SplitSeq(line, ";") {
		part = textproto.TrimString(part)
		if part == "" {
			continue
		}
		name, _, _ := strings.Cut(part, "=")
		fn(part, textproto.TrimString(name))
	}
}

// countCookies counts the cookies named name (case-sensitive, as net/http matches them),
// whatever their values.
func countCookies(hdr http.Header, name string) int {
	n := 0
	for _, line := range hdr.Values("Cookie") {
		cookieParts(line, func(_, nm string) {
			if nm == name {
				n++
			}
		})
	}
	return n
}

// removeCookie removes every cookie named name from the Cookie header lines. Lines without
// one are kept byte for byte; a line left empty is dropped, and the header with it.
func removeCookie(hdr http.Header, name string) {
	if countCookies(hdr, name) == 0 {
		return
	}
	lines := hdr.Values("Cookie")
	kept := make([]string, 0, len(lines))
	for _, line := range lines {
		var parts []string
		removed := false
		cookieParts(line, func(part, nm string) {
			if nm == name {
				removed = true
			} else {
				parts = append(parts, part)
			}
		})
		switch {
		case !removed:
			kept = append(kept, line)
		case len(parts) > 0:
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	if len(kept) == 0 {
		hdr.Del("Cookie")
		return
	}
	hdr["Cookie"] = kept
}

// scrubConnection removes, from every `Connection` header line, the tokens naming one of
// names (case-insensitively, as header names compare). Other tokens (keep-alive, Upgrade)
// stay; a line left empty is dropped, and the header with it. A proxy deletes the headers
// Connection names (RFC 9110 section 7.6.1) after this handler set them, so a client could
// otherwise remove the identity headers or the assertion.
func scrubConnection(hdr http.Header, names []string) {
	lines := hdr.Values("Connection")
	if len(lines) == 0 || len(names) == 0 {
		return
	}
	named := func(tok string) bool {
		for _, n := range names {
			if strings.EqualFold(tok, n) {
				return true
			}
		}
		return false
	}
	kept := make([]string, 0, len(lines))
	changed := false
	for _, line := range lines {
		var toks []string
		removed := false
		for tok := range strings.SplitSeq(line, ",") {
			tok = textproto.TrimString(tok)
			switch {
			case tok == "":
			case named(tok):
				removed = true
			default:
				toks = append(toks, tok)
			}
		}
		switch {
		case !removed:
			kept = append(kept, line)
		case len(toks) > 0:
			kept = append(kept, strings.Join(toks, ", "))
		}
		changed = changed || removed
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		hdr.Del("Connection")
		return
	}
	hdr["Connection"] = kept
}

// stripHeaders deletes every listed header. The names must be canonical (the engine's come so,
// from OwnedHeaders): each is a plain map delete.
func stripHeaders(h http.Header, names []string) {
	for _, n := range names {
		delete(h, n)
	}
}

// userPlaceholders answers `{http.auth.user.*}`, as Caddy's authentication handler names them,
// for one allowed request. It is a replacer provider, asked only when a placeholder is read:
// setting the five values into the replacer's map on every request cost an allocation and a map
// insert each, and most requests read none of them.
type userPlaceholders struct {
	subject, email, name, issuer string
	roles                        []string
}

// userPlaceholdersSelf is the key under which the installed provider answers with itself, so a
// second handler in the same request (iap then iap_cosmos, say) updates it instead of adding a
// provider the replacer would never reach.
const userPlaceholdersSelf = "\x00caddy-iap.user-placeholders"

// install makes repl answer from u. Every `http.auth.user.*` value set on repl before is
// deleted (it described someone else, or no one), so this request's identity wins over them; a
// value a later handler sets wins over u, as a set value would, because the replacer asks its set
// values first.
func (u *userPlaceholders) install(repl *caddy.Replacer) {
	repl.DeleteByPrefix("http.auth.user.")
	if v, ok := repl.Get(userPlaceholdersSelf); ok {
		if prev, ok := v.(*userPlaceholders); ok {
			*prev = *u
			return
		}
	}
	repl.Map(u.value)
}

// value is the caddy.ReplacerFunc. Every key is known once a request is allowed, empty or not,
// so `header_up X-Email {http.auth.user.email}` sends an empty value rather than the
// placeholder's own text; roles are comma separated.
func (u *userPlaceholders) value(key string) (any, bool) {
	if key == userPlaceholdersSelf {
		return u, true
	}
	field, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		return nil, false
	}
	switch field {
	case "id":
		return u.subject, true
	case "email":
		return u.email, true
	case "name":
		return u.name, true
	case "issuer":
		return u.issuer, true
	case "roles":
		return strings.Join(u.roles, ","), true
	}
	return nil, false
}

// identityFields are the log fields saying who and with what token metadata; never the token.
func identityFields(d *ffi.Decision) []zap.Field {
	fields := make([]zap.Field, 0, 8)
	for _, f := range []struct{ key, val string }{
		{"issuer", d.Issuer},
		{"subject", d.Subject},
		{"kid", d.Kid},
		{"alg", d.Alg},
		{"jti", d.JTI},
	} {
		if f.val != "" {
			fields = append(fields, zap.String(f.key, f.val))
		}
	}
	if d.ExpiresAt != 0 {
		fields = append(fields, zap.Uint64("exp", d.ExpiresAt))
	}
	return fields
}

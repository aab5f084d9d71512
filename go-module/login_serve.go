package caddyiap

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-iap/caddy-iap/go-module/internal/ffi"
)

// DefaultCookieName is the session cookie's name when login.cookie_name is not set. The
// `__Host-` prefix makes browsers keep it host-only, Secure and on Path=/.
const DefaultCookieName = "__Host-caddy-iap"

// errSignInRequired is the handler error of a request that needs a session and is not a
// browser navigation (an XHR, an API call, a POST): it gets 401, never a redirect.
var errSignInRequired = errors.New("no session: sign in first")

// sessionCookies takes the request's Cookie values for the sign-in and removes our cookies
// (session chunks and login cookies) from the request: the upstream never sees them.
func (h *Handler) sessionCookies(r *http.Request) string {
	lines := r.Header.Values("Cookie")
	if len(lines) == 0 {
		return ""
	}
	all := strings.Join(lines, "; ")
	name := h.cookieName()
	var ours []string
	for _, line := range lines {
		cookieParts(line, func(_, nm string) {
			if nm == name || strings.HasPrefix(nm, name+"-") {
				ours = append(ours, nm)
			}
		})
	}
	for _, nm := range ours {
		removeCookie(r.Header, nm)
	}
	return all
}

func (h *Handler) cookieName() string {
	if h.Login != nil && h.Login.CookieName != "" {
		return h.Login.CookieName
	}
	return DefaultCookieName
}

// loginPages are the sign-in's own pages, under the login path. Other paths there (the
// default postgres_credentials path, say) are requests like any other.
var loginPages = []string{"/", "/callback", "/sign_out", "/signed_out", "/postgres"}

func (h *Handler) isLoginPage(path string) bool {
	rest, ok := strings.CutPrefix(path, h.loginPath)
	return ok && slices.Contains(loginPages, rest)
}

// serveLoginPage serves the sign-in's own pages under the login path.
func (h *Handler) serveLoginPage(w http.ResponseWriter, r *http.Request, cookies string) error {
	switch strings.TrimPrefix(r.URL.Path, h.loginPath) {
	case "/callback":
		out, err := h.signIn.Callback(r.URL.RawQuery, cookies, h.redirectURI(r))
		if err != nil {
			return h.signInFailed(err)
		}
		setCookies(w, out.SetCookies)
		if out.Kind != ffi.SignInRedirect {
			if c := h.logger.Check(zapcore.InfoLevel, "sign-in failed"); c != nil {
				c.Write(zap.Int("status", out.Status), zap.String("reason", out.Reason))
			}
			return h.errorPage(w, out.Status, out.Message, out.Location)
		}
		if c := h.logger.Check(zapcore.InfoLevel, "sign-in completed"); c != nil {
			c.Write(zap.String("return_to", out.Location))
		}
		return redirect(w, out.Location)
	case "/sign_out":
		// A GET only asks: another site could link or prefetch it, and sign the person out
		// here and at the provider.
		if r.Method != http.MethodPost {
			return renderPage(w, http.StatusOK, "Sign out", pageData{SignOut: h.loginPath + "/sign_out"})
		}
		if !sameOrigin(r, h.origin(r)) {
			return caddyhttp.Error(http.StatusForbidden, errors.New("cross-origin sign-out"))
		}
		out, err := h.signIn.SignOut(cookies, h.origin(r)+h.loginPath+"/signed_out")
		if err != nil {
			return h.signInFailed(err)
		}
		setCookies(w, out.SetCookies)
		return redirect(w, out.Location)
	case "/signed_out":
		return renderPage(w, http.StatusOK, "Signed out", pageData{
			Message: "You have signed out.", Link: "/", LinkText: "Sign in again",
		})
	case "/postgres":
		return h.servePostgresAccess(w, r, cookies)
	}
	return h.serveAccessPage(w, r, cookies)
}

// session opens the request's session and returns an active one, whose renewed cookies
// (out.SetCookies) the caller sends; otherwise it answers the request itself (a redirect to
// sign in, or 401) and returns false with the handler error.
func (h *Handler) session(w http.ResponseWriter, r *http.Request, cookies string) (ffi.SignInOutcome, bool, error) {
	out, err := h.signIn.Session(cookies)
	if err != nil {
		return out, false, h.signInFailed(err)
	}
	if out.Kind != ffi.SignInActive {
		setCookies(w, out.SetCookies)
		if out.Kind == ffi.SignInEnded {
			if c := h.logger.Check(zapcore.DebugLevel, "session ended"); c != nil {
				c.Write(zap.String("reason", out.Reason))
			}
		}
		return out, false, h.signInRequired(w, r, cookies)
	}
	return out, true, nil
}

// signInRequired sends a browser navigation to the identity provider and back; anything else
// gets 401.
func (h *Handler) signInRequired(w http.ResponseWriter, r *http.Request, cookies string) error {
	if !isNavigation(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="caddy-iap"`)
		h.metrics.decision(resultDeny, ffi.ReasonMissingToken.String(), 0)
		return caddyhttp.Error(http.StatusUnauthorized, errSignInRequired)
	}
	out, err := h.signIn.Begin(r.URL.RequestURI(), h.redirectURI(r), cookies)
	if err != nil {
		return h.signInFailed(err)
	}
	setCookies(w, out.SetCookies)
	if out.Kind != ffi.SignInRedirect {
		if c := h.logger.Check(zapcore.WarnLevel, "cannot start sign-in"); c != nil {
			c.Write(zap.String("reason", out.Reason))
		}
		return h.errorPage(w, out.Status, out.Message, out.Location)
	}
	return redirect(w, out.Location)
}

// serveAccessPage shows who is signed in and what they may reach.
func (h *Handler) serveAccessPage(w http.ResponseWriter, r *http.Request, cookies string) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("the access page is read-only"))
	}
	out, ok, err := h.session(w, r, cookies)
	if !ok {
		return err
	}
	setCookies(w, out.SetCookies)
	// Decided as any request is, for the identity; the access page itself needs no allow rule.
	d, err := h.engine.Decide(ffi.Request{Method: r.Method, Host: r.Host, Path: r.URL.EscapedPath(), Token: out.IDToken, Session: true})
	if err != nil {
		return h.signInFailed(err)
	}
	if d.Subject == "" {
		return h.signInRequired(w, r, cookies)
	}
	return renderPage(w, http.StatusOK, "Your access", pageData{
		Identity:  &d,
		Expires:   time.Unix(int64(out.ExpiresAt), 0).UTC().Format(time.RFC1123),
		SignOut:   h.loginPath + "/sign_out",
		Databases: h.reachableDatabases(d.Roles),
		DBAction:  h.loginPath + "/postgres",
		Cosmos:    h.Login.CosmosEndpoints,
	})
}

// reachableDatabases lists the databases of postgres_credentials when one of roles has a
// grant there; `*` stands for "any database" (the form then asks for a name).
func (h *Handler) reachableDatabases(roles []string) []string {
	c := h.PostgresCredentials
	if c == nil || h.pgGateway == nil {
		return nil
	}
	for _, role := range roles {
		if len(c.Postgres.Grants[role]) > 0 {
			if len(c.Postgres.Databases) == 0 {
				return []string{"*"}
			}
			return c.Postgres.Databases
		}
	}
	return nil
}

// servePostgresAccess mints a database login for the signed-in person (a POST from the
// access page) and shows the psql command that uses it.
func (h *Handler) servePostgresAccess(w http.ResponseWriter, r *http.Request, cookies string) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("database logins are issued to POST only"))
	}
	// A cross-site form could otherwise mint a login in the person's name (SameSite=Lax keeps
	// the cookie off cross-site POSTs too; this does not rely on it).
	if !sameOrigin(r, h.origin(r)) {
		return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("cross-origin request (Origin %q)", r.Header.Get("Origin")))
	}
	if h.pgGateway == nil {
		return caddyhttp.Error(http.StatusNotFound, errors.New("no postgres_credentials here"))
	}
	out, ok, err := h.session(w, r, cookies)
	if !ok {
		return err
	}
	setCookies(w, out.SetCookies)
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading the form: %w", err))
	}
	dbname := r.PostForm.Get("dbname")
	if dbname == "" {
		return caddyhttp.Error(http.StatusBadRequest, errors.New("no dbname"))
	}
	l, err := h.pgGateway.login(out.IDToken, "", dbname, false, true)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	fields := []zap.Field{zap.String("database", dbname), zap.String("subject", l.Subject), zap.Strings("roles", l.Roles)}
	if !l.OK {
		h.logger.Info("postgres access refused", append(fields, zap.String("sqlstate", l.SQLState), zap.String("reason", l.Reason))...)
		return renderPage(w, http.StatusForbidden, "No database access", pageData{
			Message: l.ClientMessage, Link: h.loginPath + "/", LinkText: "Back",
		})
	}
	host, port, _ := h.PostgresCredentials.connectAddress() // validated at Provision
	h.logger.Info("postgres access issued", append(fields, zap.String("db_role", l.Role),
		zap.Strings("granted", l.Granted), zap.Time("credential_expires", l.ExpiresAt))...)
	conn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=%s", libpqQuote(host), port, libpqQuote(l.Role),
		libpqQuote(dbname), h.PostgresCredentials.sslmode())
	return renderPage(w, http.StatusOK, "PostgreSQL access", pageData{
		Message: fmt.Sprintf("Valid until %s, as %s with %s.", l.ExpiresAt.UTC().Format(time.RFC1123), l.Role, strings.Join(l.Granted, ", ")),
		Psql:    fmt.Sprintf("PGPASSWORD=%s psql %s", shellQuote(l.Password), shellQuote(conn)),
		Link:    h.loginPath + "/", LinkText: "Back",
	})
}

// sameOrigin reports whether a POST comes from a page of this site. Our pages send no
// referrer, so a browser's Origin for them is "null": fetch metadata then says same-origin.
func sameOrigin(r *http.Request, origin string) bool {
	return r.Header.Get("Origin") == origin || r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// libpqQuote quotes a value for a libpq connection string when it needs it (empty, or with a
// space, quote or backslash), so a typed database name cannot add keywords.
func libpqQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r'\\") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// accessDenied shows a signed-in person that their roles do not reach this page, logged as any
// denial is. d is a copy: the page holds on to it, and the caller's stays on its stack.
func (h *Handler) accessDenied(w http.ResponseWriter, r *http.Request, d ffi.Decision) error {
	err := h.deny(w, &d)
	status := http.StatusForbidden
	if he, ok := errors.AsType[caddyhttp.HandlerError](err); ok {
		status = he.StatusCode
	}
	title, message := "Access denied", fmt.Sprintf("Your roles do not allow %s %s.", r.Method, r.URL.Path)
	if status != http.StatusForbidden {
		title, message = "Not available", http.StatusText(status)+"."
	}
	return renderPage(w, status, title, pageData{
		Message:  message,
		Identity: &d,
		SignOut:  h.loginPath + "/sign_out",
		Link:     h.loginPath + "/",
		LinkText: "Your access",
	})
}

// signInFailed is the handler error for a sign-in call that did not complete.
func (h *Handler) signInFailed(err error) error {
	status, level := http.StatusInternalServerError, zapcore.ErrorLevel
	if errors.Is(err, ffi.ErrClosed) {
		status = http.StatusServiceUnavailable
	} else if fe, ok := errors.AsType[*ffi.Error](err); ok && fe.Code == ffi.ResultInvalidParameter {
		// The request's own bytes (a query or cookie that is not UTF-8).
		status, level = http.StatusBadRequest, zapcore.InfoLevel
	}
	if c := h.logger.Check(level, "sign-in call failed"); c != nil {
		c.Write(zap.Error(err))
	}
	return caddyhttp.Error(status, err)
}

// redirectURI is the callback URL sent to the provider.
func (h *Handler) redirectURI(r *http.Request) string {
	if u := h.Login.RedirectURL; u != "" {
		return u
	}
	return h.origin(r) + h.loginPath + "/callback"
}

// origin is the site's scheme and host: redirect_url's when set, else the request's.
func (h *Handler) origin(r *http.Request) string {
	if u, err := url.Parse(h.Login.RedirectURL); err == nil && h.Login.RedirectURL != "" {
		return u.Scheme + "://" + u.Host
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

// isNavigation tells a browser loading a page (which may be redirected to sign in) from
// anything else: a script's request, an API client, a form post, which get 401 instead, so
// they never follow a redirect into a login page or a loop.
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	hdr := r.Header
	if hdr.Get("X-Requested-With") != "" {
		return false
	}
	if m := hdr.Get("Sec-Fetch-Mode"); m != "" && m != "navigate" {
		return false
	}
	for _, v := range hdr.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			media, params, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(media), "text/html") && !zeroQuality(params) {
				return true
			}
		}
	}
	return false
}

// zeroQuality reports whether media-range parameters say `q=0` ("not acceptable").
func zeroQuality(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
			q, err := strconv.ParseFloat(v, 64)
			return err == nil && q == 0
		}
	}
	return false
}

// privateWriter sends a session's renewed cookies with a proxied response, which it marks
// private: a shared cache must never keep one person's session cookie for others, whatever
// the upstream's Cache-Control said.
type privateWriter struct {
	*caddyhttp.ResponseWriterWrapper
	cookies []string
	wrote   bool
}

func newPrivateWriter(w http.ResponseWriter, cookies []string) *privateWriter {
	return &privateWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, cookies: cookies}
}

func (p *privateWriter) WriteHeader(status int) {
	if !p.wrote && status >= 200 { // not on 1xx interim responses
		p.wrote = true
		hdr := p.Header()
		for _, c := range p.cookies {
			hdr.Add("Set-Cookie", c)
		}
		hdr.Set("Cache-Control", "private, no-store")
	}
	p.ResponseWriterWrapper.WriteHeader(status)
}

func (p *privateWriter) Write(b []byte) (int, error) {
	if !p.wrote {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriterWrapper.Write(b)
}

func (p *privateWriter) ReadFrom(r io.Reader) (int64, error) {
	if !p.wrote {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriterWrapper.ReadFrom(r)
}

func setCookies(w http.ResponseWriter, cookies []string) {
	for _, c := range cookies {
		w.Header().Add("Set-Cookie", c)
	}
}

// redirect answers 302 to location; never cached, since it carries a sign-in's cookies.
func redirect(w http.ResponseWriter, location string) error {
	hdr := w.Header()
	hdr.Set("Location", location)
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusFound)
	return nil
}

// errorPage shows a sign-in error with a link to try again.
func (h *Handler) errorPage(w http.ResponseWriter, status int, message, retry string) error {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	return renderPage(w, status, "Sign-in failed", pageData{
		Message: message, Link: retry, LinkText: "Try again",
	})
}

// pageData fills the page template.
type pageData struct {
	Title    string
	Message  string
	Link     string
	LinkText string
	Identity *ffi.Decision
	Expires  string
	SignOut  string
	// Databases the person may get a login for (`*`: any, named in the form), posted to
	// DBAction.
	Databases []string
	DBAction  string
	// Psql is a ready-to-paste command (it holds a password: the page is no-store).
	Psql string
	// Cosmos are Cosmos DB gateway endpoints.
	Cosmos []string
}

// renderPage writes one of the sign-in's pages. They are never cached or framed, load
// nothing, and send no referrer (a callback URL carries a code).
func renderPage(w http.ResponseWriter, status int, title string, data pageData) error {
	data.Title = title
	var b strings.Builder
	if err := pageTemplate.Execute(&b, data); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, err := w.Write([]byte(b.String()))
	return err
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}pre{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.6rem}form{margin:.4rem 0}button.button{background:none;font:inherit;cursor:pointer}dt{font-weight:600}dd{margin:0 0 .6rem}a.button{display:inline-block;padding:.4rem .9rem;border:1px solid #555;border-radius:4px;text-decoration:none;color:#222}</style>
</head><body>
<h1>{{.Title}}</h1>
{{with .Message}}<p id="message">{{.}}</p>{{end}}
{{with .Identity}}<dl id="identity">
<dt>Subject</dt><dd id="subject">{{.Subject}}</dd>
{{with .Email}}<dt>Email</dt><dd id="email">{{.}}</dd>{{end}}
{{with .Name}}<dt>Name</dt><dd id="name">{{.}}</dd>{{end}}
<dt>Issuer</dt><dd id="issuer">{{.Issuer}}</dd>
<dt>Roles</dt><dd id="roles">{{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{else}}none{{end}}</dd>
{{end}}{{with .Expires}}<dt>Session ends</dt><dd id="expires">{{.}}</dd></dl>{{end}}
{{if .Databases}}<h2>PostgreSQL</h2>
{{range .Databases}}<form method="post" action="{{$.DBAction}}">{{if eq . "*"}}<input name="dbname" placeholder="database" required>{{else}}<input type="hidden" name="dbname" value="{{.}}">{{end}}
<button class="button" type="submit" id="psql-{{.}}">Get a psql command{{if ne . "*"}} for {{.}}{{end}}</button></form>
{{end}}{{end}}
{{with .Psql}}<pre id="psql">{{.}}</pre>{{end}}
{{if .Cosmos}}<h2>Azure Cosmos DB</h2>
<p>Point the Azure Cosmos SDK at the gateway and give it your OIDC access token as its credential
(a <code>TokenCredential</code> that returns your token); no account key is needed, and none is ever
handed out. Your roles decide what each request may do.</p>
{{range .Cosmos}}<pre class="cosmos-endpoint">CosmosClient({{printf "%q" .}}, credential=your_token_credential)</pre>
{{end}}{{end}}
{{with .SignOut}}<form method="post" action="{{.}}"><button class="button" type="submit" id="sign-out">Sign out</button></form>{{end}}
{{with .Link}}<p><a class="button" id="retry" href="{{.}}">{{$.LinkText}}</a></p>{{end}}
</body></html>
`))

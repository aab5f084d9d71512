package caddyiap

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestOnlyBrowserNavigationsAreSentToSignIn(t *testing.T) {
	const chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		want    bool
	}{
		{"a browser loading a page", "GET", map[string]string{"Accept": chrome, "Sec-Fetch-Mode": "navigate"}, true},
		{"an older browser without fetch metadata", "GET", map[string]string{"Accept": chrome}, true},
		{"HEAD", "HEAD", map[string]string{"Accept": "text/html"}, true},
		{"fetch() from a page", "GET", map[string]string{"Accept": "*/*", "Sec-Fetch-Mode": "cors"}, false},
		{"fetch() asking for HTML", "GET", map[string]string{"Accept": "text/html", "Sec-Fetch-Mode": "cors"}, false},
		{"jQuery XHR", "GET", map[string]string{"Accept": chrome, "X-Requested-With": "XMLHttpRequest"}, false},
		{"a JSON API client", "GET", map[string]string{"Accept": "application/json"}, false},
		{"curl", "GET", map[string]string{"Accept": "*/*"}, false},
		{"no Accept", "GET", nil, false},
		{"HTML refused with q=0", "GET", map[string]string{"Accept": "text/html;q=0, */*"}, false},
		{"HTML refused with q=0.000", "GET", map[string]string{"Accept": "text/html; q=0.000"}, false},
		{"HTML at low quality is still HTML", "GET", map[string]string{"Accept": "text/html;q=0.1"}, true},
		{"a form post", "POST", map[string]string{"Accept": chrome, "Sec-Fetch-Mode": "navigate"}, false},
		{"DELETE", "DELETE", map[string]string{"Accept": chrome}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/x", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			if got := isNavigation(r); got != tc.want {
				t.Fatalf("isNavigation = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSessionCookiesNeverReachTheUpstream(t *testing.T) {
	h := &Handler{Login: &Login{}}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Cookie", "theme=dark; __Host-caddy-iap=SEALED0; __Host-caddy-iap-1=SEALED1")
	r.Header.Add("Cookie", "__Host-caddy-iap-login-abcdefgh=LOGIN; lang=en; __Host-caddy-iapx=kept")
	got := h.sessionCookies(r)
	if want := "theme=dark; __Host-caddy-iap=SEALED0; __Host-caddy-iap-1=SEALED1; __Host-caddy-iap-login-abcdefgh=LOGIN; lang=en; __Host-caddy-iapx=kept"; got != want {
		t.Fatalf("cookies for the sign-in = %q", got)
	}
	left := strings.Join(r.Header.Values("Cookie"), "; ")
	if left != "theme=dark; lang=en; __Host-caddy-iapx=kept" {
		t.Fatalf("cookies left for the upstream = %q", left)
	}

	h.Login.CookieName = "sess"
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", "sess=1; sess-2=2")
	h.sessionCookies(r)
	if _, ok := r.Header["Cookie"]; ok {
		t.Fatalf("a Cookie header of only ours is removed: %q", r.Header.Values("Cookie"))
	}
	if got := h.sessionCookies(httptest.NewRequest("GET", "/", nil)); got != "" {
		t.Fatalf("no Cookie header: %q", got)
	}
}

func TestLoginConfigIsChecked(t *testing.T) {
	one := []Issuer{{Issuer: "https://idp.example.com"}}
	two := append(one, Issuer{Issuer: "https://other.example.com"})
	for _, tc := range []struct {
		login   Login
		issuers []Issuer
		want    string
	}{
		{Login{ClientSecretEnv: "S"}, one, "client_id is required"},
		{Login{ClientID: "c"}, one, "set exactly one of client_secret_env and client_secret_file"},
		{Login{ClientID: "c", ClientSecretEnv: "S", ClientSecretFile: "f"}, one, "set exactly one"},
		{Login{ClientID: "c", ClientSecretEnv: "S"}, two, "issuer: name one of the handler's issuers"},
		{Login{ClientID: "c", ClientSecretEnv: "S", Path: "/auth/"}, one, `path "/auth/": must start with / and not end with one`},
		{Login{ClientID: "c", ClientSecretEnv: "S", Path: "auth"}, one, "must start with /"},
		{Login{ClientID: "c", ClientSecretEnv: "S", RedirectURL: "/callback"}, one, "must be https://<this site>/.iap/callback"},
		{Login{ClientID: "c", ClientSecretEnv: "S", RedirectURL: "http://app.example.com/.iap/callback"}, one, "must be https://"},
		{Login{ClientID: "c", ClientSecretEnv: "S", RedirectURL: "https://app.example.com/callback"}, one, "must be https://"},
		{Login{ClientID: "c", ClientSecretEnv: "S", RedirectURL: "https://app.example.com/.iap/callback"}, one, ""},
		{Login{ClientID: "c", ClientSecretEnv: "S", CookieName: "session"}, one, "must start with __Host-"},
		{Login{ClientID: "c", ClientSecretEnv: "S", CosmosEndpoints: []string{"http://cosmos:8081"}}, one, "must be an https URL"},
		{Login{ClientID: "api", ClientSecretEnv: "S"}, []Issuer{{Issuer: "https://idp.example.com", Audiences: []string{"api"}}}, "ID tokens for it would pass as bearer tokens"},
		{Login{ClientID: "c", ClientSecretEnv: "S", IdleTimeout: 1e9}, one, "idle_timeout: must be at least 1m"},
		{Login{ClientID: "c", ClientSecretEnv: "S"}, one, ""},
		{Login{ClientID: "c", ClientSecretEnv: "S", Issuer: "https://other.example.com"}, two, ""},
	} {
		err := tc.login.validate(tc.issuers)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.login, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.login, err, tc.want)
		}
	}
}

func TestPsqlCommandQuoting(t *testing.T) {
	for in, want := range map[string]string{
		"app":          "app",
		"iap_a@b.c_1f": "iap_a@b.c_1f",
		"x host=evil":  `'x host=evil'`,
		`it's`:         `'it\'s'`,
		"":             "''",
	} {
		if got := libpqQuote(in); got != want {
			t.Errorf("libpqQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := shellQuote("a'b"); got != `'a'\''b'` {
		t.Errorf("shellQuote = %s", got)
	}
}

func TestOnlyTheSignInsOwnPagesAreServedUnderItsPath(t *testing.T) {
	h := &Handler{loginPath: "/.iap"}
	for path, want := range map[string]bool{
		"/.iap/": true, "/.iap/callback": true, "/.iap/sign_out": true, "/.iap/signed_out": true,
		"/.iap/postgres": true, "/.iap/postgres/credentials": false, "/.iap": false,
		"/.iapx/": false, "/orders": false, "/.iap/callback/x": false,
	} {
		if got := h.isLoginPage(path); got != want {
			t.Errorf("isLoginPage(%q) = %v", path, got)
		}
	}
}

package caddyiap

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestValidate covers JSON configs, which skip the Caddyfile parser's checks.
func TestValidate(t *testing.T) {
	ok := `"issuers":[{"issuer":"https://idp","audiences":["a"]}]`
	tests := []struct {
		name, json, want string
	}{
		{"minimal", `{` + ok + `}`, ""},
		{"full", `{` + ok + `,"roles":[{"role":"r","when":[{"claim":"groups","op":"contains","value":"g"}]}],
			"allow":[{"role":"r","methods":["GET"],"paths":["/x/*","*.json","*"]}],
			"assertion":{"audience":"up","alg":"EdDSA","ttl":"5m"},"jwks_path":"/keys",
			"headers":{"user":"X-U","email":"off"},"token_sources":[{"kind":"cookie","name":"s"},{"kind":"bearer"}],
			"cache_size":0,"max_token_size":100,"audit":true}`, ""},
		{"no issuer", `{}`, "at least one issuer"},
		{"no audience", `{"issuers":[{"issuer":"https://idp"}]}`, "issuers[0]: issuer \"https://idp\": at least one audience"},
		{"empty audience", `{"issuers":[{"issuer":"https://idp","audiences":[""]}]}`, "empty audience"},
		{"no issuer url", `{"issuers":[{"audiences":["a"]}]}`, "issuer URL is required"},
		{"duplicate issuer", `{"issuers":[{"issuer":"https://idp","audiences":["a"]},{"issuer":"https://idp","audiences":["b"]}]}`, "issuers[1]: issuer \"https://idp\" is configured twice"},
		{"two key sources", `{"issuers":[{"issuer":"https://idp","audiences":["a"],"jwks_url":"https://idp/k","jwks_file":"k.json"}]}`, "mutually exclusive"},
		{"relative jwks_url", `{"issuers":[{"issuer":"https://idp","audiences":["a"],"jwks_url":"/k"}]}`, "not an absolute URL"},
		{"hmac", `{"issuers":[{"issuer":"https://idp","audiences":["a"],"algorithms":["HS256"]}]}`, `unknown algorithm "HS256"`},
		{"negative leeway", `{"issuers":[{"issuer":"https://idp","audiences":["a"],"leeway":-1}]}`, "leeway is negative"},
		{"refresh bounds", `{"issuers":[{"issuer":"https://idp","audiences":["a"],"refresh_min":"2h","refresh_max":"1h"}]}`, "refresh_min is longer than refresh_max"},
		{"unknown op", `{` + ok + `,"roles":[{"role":"r","when":[{"claim":"c","op":"regex","value":"v"}]}]}`, `roles[0]: role "r": when[0]: unknown op "regex"`},
		{"role without when", `{` + ok + `,"roles":[{"role":"r"}]}`, "at least one claim condition"},
		{"empty value", `{` + ok + `,"roles":[{"role":"r","when":[{"claim":"c","op":"prefix"}]}]}`, "empty value"},
		{"lower-case method", `{` + ok + `,"allow":[{"role":"r","methods":["get"],"paths":["/"]}]}`, `method "get"`},
		{"no paths", `{` + ok + `,"allow":[{"role":"r","methods":["GET"]}]}`, "at least one path"},
		{"bad path", `{` + ok + `,"allow":[{"role":"r","methods":["GET"],"paths":["x"]}]}`, `path "x"`},
		{"assertion without audience", `{` + ok + `,"assertion":{}}`, "assertion: audience is required"},
		{"assertion alg", `{` + ok + `,"assertion":{"audience":"a","alg":"RS256"}}`, `alg "RS256"`},
		{"assertion header", `{` + ok + `,"assertion":{"audience":"a","header":"X Y"}}`, "not a valid header name"},
		{"jwks_path without assertion", `{` + ok + `,"jwks_path":"/k"}`, "jwks_path: needs an assertion"},
		{"jwks_path relative", `{` + ok + `,"assertion":{"audience":"a"},"jwks_path":"k"}`, "must start with /"},
		{"header name", `{` + ok + `,"headers":{"roles":"X:Roles"}}`, "roles: \"X:Roles\" is not a valid header name"},
		{"token source kind", `{` + ok + `,"token_sources":[{"kind":"query","name":"t"}]}`, `token_sources[0]: unknown kind "query"`},
		{"cookie without name", `{` + ok + `,"token_sources":[{"kind":"cookie"}]}`, "cookie needs a name"},
		{"negative cache", `{` + ok + `,"cache_size":-1}`, "cache_size: -1 is negative"},
		{"negative max token", `{` + ok + `,"max_token_size":-1}`, "max_token_size: -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			if err := json.Unmarshal([]byte(tt.json), &h); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			err := h.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestModuleInfo(t *testing.T) {
	info := Handler{}.CaddyModule()
	if info.ID != "http.handlers.iap" {
		t.Errorf("ID %q", info.ID)
	}
	if _, ok := info.New().(*Handler); !ok {
		t.Error("New does not return *Handler")
	}
	if _, err := caddy.GetModule("http.handlers.iap"); err != nil {
		t.Errorf("not registered: %v", err)
	}
}

// The JSON field names are the documented config; keep them stable.
func TestJSONFieldNames(t *testing.T) {
	cache := 0
	h := Handler{
		Issuers: []Issuer{{Issuer: "i", Audiences: []string{"a"}, JWKSURL: "u", JWKSFile: "f", PEMFiles: []string{"p"},
			Algorithms: []string{"ES256"}, Leeway: 1, MaxLifetime: 1, KidMissCooldown: 1, RefreshMin: 1, RefreshMax: 1, FetchTimeout: 1}},
		Roles:        []RoleRule{{Role: "r", When: []ClaimCondition{{Claim: "c", Op: "equals", Value: "v"}}}},
		Allow:        []AllowRule{{Role: "r", Methods: []string{"GET"}, Paths: []string{"/"}}},
		Assertion:    &Assertion{Audience: "a", Issuer: "i", TTL: 1, Header: "h", Alg: "ES256"},
		JWKSPath:     "/k",
		Headers:      &HeaderNames{User: "u", Email: "e", Roles: "r"},
		TokenSources: []TokenSource{{Kind: "cookie", Name: "n"}},
		CacheSize:    &cache,
		MaxTokenSize: 1,
		Audit:        true,
	}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"issuers":[{"issuer":"i","audiences":["a"],"jwks_url":"u","jwks_file":"f","pem_files":["p"],"algorithms":["ES256"],` +
		`"leeway":1,"max_lifetime":1,"kid_miss_cooldown":1,"refresh_min":1,"refresh_max":1,"fetch_timeout":1}],` +
		`"roles":[{"role":"r","when":[{"claim":"c","op":"equals","value":"v"}]}],"allow":[{"role":"r","methods":["GET"],"paths":["/"]}],` +
		`"assertion":{"audience":"a","issuer":"i","ttl":1,"header":"h","alg":"ES256"},"jwks_path":"/k",` +
		`"headers":{"user":"u","email":"e","roles":"r"},"token_sources":[{"kind":"cookie","name":"n"}],` +
		`"cache_size":0,"max_token_size":1,"audit":true}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	if b, _ := json.Marshal(Handler{}); string(b) != `{}` {
		t.Errorf("empty handler marshals to %s", b)
	}
}

func TestValidateHeaderUse(t *testing.T) {
	iss := []Issuer{{Issuer: "https://idp.example.com/", Audiences: []string{"api"}}}
	for _, tt := range []struct {
		name string
		h    Handler
		want string // "" = valid
	}{
		{"defaults", Handler{Issuers: iss, Assertion: &Assertion{Audience: "up"}}, ""},
		{"user is Authorization", Handler{Issuers: iss, Headers: &HeaderNames{User: "authorization"}}, "reserved"},
		{"user is Cookie", Handler{Issuers: iss, Headers: &HeaderNames{User: "Cookie"}}, "reserved"},
		{"user and email collide", Handler{Issuers: iss, Headers: &HeaderNames{User: "X-A", Email: "x-a"}}, "already used"},
		{"user is the assertion header", Handler{Issuers: iss, Headers: &HeaderNames{User: "X-IAP-Assertion"}, Assertion: &Assertion{Audience: "up"}}, "already used"},
		{"assertion header off", Handler{Issuers: iss, Assertion: &Assertion{Audience: "up", Header: "off"}}, "cannot be off"},
		{"assertion header Host", Handler{Issuers: iss, Assertion: &Assertion{Audience: "up", Header: "Host"}}, "reserved"},
		{"token from an identity header", Handler{Issuers: iss, TokenSources: []TokenSource{{Kind: SourceHeader, Name: "X-IAP-User"}}}, "always strips"},
		{"token from a renamed default", Handler{Issuers: iss, Headers: &HeaderNames{User: "X-Remote-User"}, TokenSources: []TokenSource{{Kind: SourceHeader, Name: "x-iap-user"}}}, "always strips"},
		{"token header fine", Handler{Issuers: iss, TokenSources: []TokenSource{{Kind: SourceHeader, Name: "X-Access-Token"}}}, ""},
	} {
		err := tt.h.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want it to mention %q", tt.name, err, tt.want)
		}
	}
}

func TestLogFilterNamesTheHeaderAsCaddyLogsIt(t *testing.T) {
	// Caddy logs header names canonicalized; a filter on any other spelling matches nothing.
	for _, name := range []string{"x-api-token", "X-API-TOKEN", "X-Api-Token"} {
		if got, want := logFilter(name), "log { format filter { request>headers>X-Api-Token delete } }"; got != want {
			t.Errorf("logFilter(%q) = %q, want %q", name, got, want)
		}
	}
}

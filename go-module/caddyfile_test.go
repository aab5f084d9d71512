package caddyiap

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	// The layer4 handlers the PostgreSQL examples put around iap_postgres.
	_ "github.com/mholt/caddy-l4/modules/l4postgres"
	_ "github.com/mholt/caddy-l4/modules/l4tls"
)

// -update rewrites the expected half of golden files from the current output.
var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// goldenFile is a Caddyfile, a line of ten dashes, and the expected result, as in Caddy's
// caddytest/integration/caddyfile_adapt.
type goldenFile struct {
	path     string
	input    string
	expected string
}

func readGolden(t *testing.T, dir string) []goldenFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.caddyfiletest"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files in testdata/%s: %v", dir, err)
	}
	var out []goldenFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		in, exp, ok := strings.Cut(strings.ReplaceAll(string(b), "\r\n", "\n"), "----------")
		if !ok {
			t.Fatalf("%s: no ---------- separator", p)
		}
		out = append(out, goldenFile{path: p, input: strings.TrimSpace(in) + "\n", expected: strings.TrimSpace(exp)})
	}
	return out
}

// compareGolden compares got with the golden file's expected half, or rewrites it.
func compareGolden(t *testing.T, g goldenFile, got string) {
	t.Helper()
	got = strings.TrimSpace(got)
	if *update {
		if err := os.WriteFile(g.path, []byte(strings.TrimSpace(g.input)+"\n----------\n"+got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != g.expected {
		t.Errorf("%s: output differs from the golden file (go test -update rewrites it)\n%s",
			g.path, lineDiff(g.expected, got))
	}
}

// lineDiff is a small line-by-line diff for failure messages.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl == gl {
			b.WriteString("  " + wl + "\n")
			continue
		}
		if i < len(w) {
			b.WriteString("- " + wl + "\n")
		}
		if i < len(g) {
			b.WriteString("+ " + gl + "\n")
		}
	}
	return b.String()
}

func indentJSON(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "\t"); err != nil {
		t.Fatalf("indenting %s: %v", b, err)
	}
	return buf.String()
}

// TestCaddyfileAdapt adapts each testdata/caddyfile_adapt file with Caddy's own Caddyfile
// adapter and compares the JSON. A file whose expected half does not start with `{` must
// fail to adapt with an error containing it (file:line included).
func TestCaddyfileAdapt(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, g := range readGolden(t, "caddyfile_adapt") {
		t.Run(filepath.Base(g.path), func(t *testing.T) {
			out, warnings, err := adapter.Adapt([]byte(g.input), nil)
			for _, w := range warnings {
				t.Logf("warning: %s:%d: %s", w.File, w.Line, w.Message)
			}
			if strings.HasPrefix(g.expected, "{") || (*update && err == nil) {
				if err != nil {
					t.Fatalf("adapt: %v", err)
				}
				compareGolden(t, g, indentJSON(t, out))
				return
			}
			if err == nil {
				t.Fatalf("expected an error containing %q, got none", g.expected)
			}
			if !strings.Contains(err.Error(), g.expected) {
				t.Errorf("error\n\t%v\ndoes not contain\n\t%s", err, g.expected)
			}
		})
	}
}

// TestCaddyfileErrors checks that each mistake is reported, with the line it is on.
func TestCaddyfileErrors(t *testing.T) {
	const head = "example.com {\n\tiap {\n" // the iap block starts on line 2
	tests := []struct {
		name, body, want string
	}{
		{"unknown subdirective", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tbogus 1\n", `unknown subdirective "bogus", at Caddyfile:6`},
		{"unknown issuer subdirective", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\tjwks http://x\n\t\t}\n", `unknown issuer subdirective "jwks", at Caddyfile:5`},
		{"missing audience", "\t\tissuer https://idp {\n\t\t\tleeway 5s\n\t\t}\n", `at least one audience is required, at Caddyfile:3`},
		{"missing audience no block", "\t\tissuer https://idp\n", `at least one audience is required, at Caddyfile:3`},
		{"issuer without url", "\t\tissuer {\n\t\t\taudience a\n\t\t}\n", `wrong argument count`},
		{"bad duration", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\tleeway soon\n\t\t}\n", `leeway: bad duration "soon"`},
		{"bad duration line", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\tleeway soon\n\t\t}\n", `Caddyfile:5`},
		{"negative duration", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\trefresh_min -5m\n\t\t}\n", `refresh_min: duration "-5m" is negative, at Caddyfile:5`},
		{"duration twice", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\tleeway 5s\n\t\t\tleeway 6s\n\t\t}\n", `leeway is set twice, at Caddyfile:6`},
		{"two key sources", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\tjwks_url https://idp/jwks\n\t\t\tpem_file k.pem\n\t\t}\n", `mutually exclusive, at Caddyfile:3`},
		{"unknown algorithm", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\talgorithms RS256 HS256\n\t\t}\n", `unknown algorithm "HS256"`},
		{"alg none", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\talgorithms none\n\t\t}\n", `unknown algorithm "none"`},
		{"issuer twice", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tissuer https://idp {\n\t\t\taudience b\n\t\t}\n", `configured twice, at Caddyfile:8`},
		{"no issuer", "\t\taudit\n", `at least one issuer is required, at Caddyfile:2`},
		{"unknown op", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\trole admin claim groups matches admins\n", `unknown op "matches"`},
		{"unknown op line", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\trole admin {\n\t\t\tclaim groups contains admins\n\t\t\tclaim email like x\n\t\t}\n", `unknown op "like" (known: equals, contains, has, prefix, suffix), at Caddyfile:8`},
		{"role without claim", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\trole admin\n", `role admin: at least one`},
		{"role inline short", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\trole admin claim groups contains\n", `unexpected line ending after 'contains', at Caddyfile:6`},
		{"role block junk", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\trole admin {\n\t\t\tgroups contains admins\n\t\t}\n", "expected `claim <claim> <op> <value>`, found \"groups\", at Caddyfile:7"},
		{"allow short", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tallow admin GET\n", `unexpected line ending after 'GET', at Caddyfile:6`},
		{"allow bad path", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tallow admin GET api/*\n", `path "api/*": want *, /exact, /prefix/* or *.suffix, at Caddyfile:6`},
		{"allow star in middle", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tallow admin GET /a/*/b\n", "`*` may only end a prefix pattern"},
		{"assertion without audience", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tassertion {\n\t\t\tttl 1m\n\t\t}\n", `assertion: audience is required, at Caddyfile:6`},
		{"assertion bad alg", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tassertion {\n\t\t\taudience up\n\t\t\talg RS256\n\t\t}\n", `assertion alg "RS256": want ES256 or EdDSA, at Caddyfile:8`},
		{"assertion unknown", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tassertion {\n\t\t\taudience up\n\t\t\tsign_key x\n\t\t}\n", `unknown assertion subdirective "sign_key", at Caddyfile:8`},
		{"assertion twice", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tassertion {\n\t\t\taudience up\n\t\t}\n\t\tassertion {\n\t\t\taudience up\n\t\t}\n", `assertion is configured twice, at Caddyfile:9`},
		{"jwks_path without assertion", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tjwks_path /keys\n", `jwks_path needs an assertion block`},
		{"jwks_path relative", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tjwks_path keys\n", `jwks_path "keys" must start with /, at Caddyfile:6`},
		{"headers unknown", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\theaders {\n\t\t\tgroups X-Groups\n\t\t}\n", `unknown headers subdirective "groups"`},
		{"headers bad name", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\theaders {\n\t\t\tuser \"X User\"\n\t\t}\n", `user: "X User" is not a valid header name, at Caddyfile:6`},
		{"token source unknown", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\ttoken_source query access_token\n", `token_source: unknown kind "query" (known: bearer, header, cookie), at Caddyfile:6`},
		{"token source no name", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\ttoken_source cookie\n", `token_source: cookie needs a name, at Caddyfile:6`},
		{"token source bearer name", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\ttoken_source bearer X\n", `bearer takes no name`},
		{"cache_size bad", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tcache_size lots\n", `cache_size: "lots" is not a non-negative integer, at Caddyfile:6`},
		{"cache_size negative", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tcache_size -1\n", `cache_size: "-1" is not a non-negative integer`},
		{"max_token_size zero", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tmax_token_size 0\n", `max_token_size must be positive, at Caddyfile:6`},
		{"pass_token with arg", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tpass_token yes\n", `wrong argument count or unexpected line ending after 'yes', at Caddyfile:6`},
		{"pass_token twice", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\tpass_token\n\t\tpass_token\n", `pass_token is set twice, at Caddyfile:7`},
		{"trust_unverified_email with arg", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\ttrust_unverified_email true\n\t\t}\n", `wrong argument count or unexpected line ending after 'true', at Caddyfile:5`},
		{"trust_unverified_email twice", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t\ttrust_unverified_email\n\t\t\ttrust_unverified_email\n\t\t}\n", `trust_unverified_email is set twice, at Caddyfile:6`},
		{"audit with arg", "\t\tissuer https://idp {\n\t\t\taudience a\n\t\t}\n\t\taudit yes\n", `wrong argument count or unexpected line ending after 'yes', at Caddyfile:6`},
		{"directive args", "", `wrong argument count`},
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := head + tt.body + "\t}\n}\n"
			if tt.name == "directive args" {
				input = "example.com {\n\tiap something\n}\n"
			}
			_, _, err := adapter.Adapt([]byte(input), nil)
			if err == nil {
				t.Fatalf("no error for\n%s", input)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n\t%v\ndoes not contain\n\t%s\ninput:\n%s", err, tt.want, input)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Errorf("error has no file:line: %v", err)
			}
		})
	}
}

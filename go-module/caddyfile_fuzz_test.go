package caddyiap

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfile feeds arbitrary text to the `iap` directive's Caddyfile parser.
//
// Properties:
//   - parsing never panics, and every error names the file and line it is about;
//   - a config that parses and validates survives what Caddy does with it: its JSON, loaded
//     into a fresh Handler, validates too and marshals to the same bytes;
//   - the engine's JSON built from either copy is the same, and round-trips through the Go
//     shape of the engine config byte for byte.
//
// Seeds: the golden files under testdata/ and the bodies of TestCaddyfileErrors (as
// `iap { ... }` blocks), and the corpus in testdata/fuzz/FuzzCaddyfile: what a CPU-hour of
// `go test -fuzz` found interesting, copied from its cache. Plain `go test` runs them all.
func FuzzCaddyfile(f *testing.F) {
	for _, dir := range []string{"engine_config", "caddyfile_adapt"} {
		paths, _ := filepath.Glob(filepath.Join("testdata", dir, "*.caddyfiletest"))
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			in, _, _ := strings.Cut(string(b), "----------")
			// The iap block of a whole Caddyfile, as httpcaddyfile hands it over.
			if i := strings.Index(in, "iap"); i > 0 {
				in = "iap " + in[i+strings.Index(in[i:], "{"):]
			}
			f.Add(in)
		}
	}
	issuer := "\tissuer https://idp {\n\t\taudience a\n\t}\n"
	for _, body := range []string{
		issuer + "\trole admin claim groups contains admins claim email suffix @x\n\tallow admin get,HEAD /api/* *.json\n",
		issuer + "\trole admin {\n\t\tclaim scope has write\n\t}\n\tassertion {\n\t\taudience up\n\t\tttl 1m\n\t}\n\tjwks_path /keys\n",
		issuer + "\theaders {\n\t\tuser X-User\n\t\temail off\n\t}\n\ttoken_source cookie session\n\tcache_size 0\n\tmax_token_size 9000\n\tpass_token\n\taudit\n",
		"\tissuer https://idp {\n\t\taudience a b\n\t\tjwks_url https://idp/jwks\n\t\tleeway 5s\n\t\ttrust_unverified_email\n\t}\n",
		"\tissuer https://idp {\n\t\taudience a\n\t\tpem_file a.pem b.pem\n\t\talgorithms RS256 EdDSA\n\t\trefresh_min -5m\n\t}\n",
	} {
		f.Add("iap {\n" + body + "}\n")
	}

	f.Fuzz(func(t *testing.T, input string) {
		// Caddy's JSON replaces invalid UTF-8, so such a Caddyfile never arrives as written.
		if !utf8.ValidString(input) {
			t.Skip()
		}
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			if len(tokens) > 0 && !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("error without file:line: %v", err)
			}
			return
		}
		if h.Validate() != nil {
			return
		}

		cfg, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("marshal handler: %v", err)
		}
		loaded := new(Handler)
		if err := json.Unmarshal(cfg, loaded); err != nil {
			t.Fatalf("unmarshal handler %s: %v", cfg, err)
		}
		if err := loaded.Validate(); err != nil {
			t.Fatalf("the handler's own JSON does not validate: %v\n%s", err, cfg)
		}
		again, err := json.Marshal(loaded)
		if err != nil || !bytes.Equal(cfg, again) {
			t.Fatalf("handler JSON does not round-trip (%v):\n%s\n%s", err, cfg, again)
		}

		anyFile := func(name string) ([]byte, error) { return []byte(`{"keys":[]}`), nil }
		var keys []string
		if h.Assertion != nil {
			keys = []string{"TEST-SIGNING-KEY-B64"}
		}
		engine, err := h.engineJSON(anyFile, keys)
		if err != nil {
			t.Fatalf("engine JSON: %v", err)
		}
		fromLoaded, err := loaded.engineJSON(anyFile, keys)
		if err != nil || !bytes.Equal(engine, fromLoaded) {
			t.Fatalf("engine JSON differs after the handler's JSON round trip (%v):\n%s\n%s", err, engine, fromLoaded)
		}
		var ec engineConfig
		dec := json.NewDecoder(bytes.NewReader(engine))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ec); err != nil {
			t.Fatalf("engine JSON does not decode: %v\n%s", err, engine)
		}
		if again, err := json.Marshal(ec); err != nil || !bytes.Equal(engine, again) {
			t.Fatalf("engine JSON does not round-trip (%v):\n%s\n%s", err, engine, again)
		}
		if len(ec.Issuers) != len(h.Issuers) || len(ec.Roles) != len(h.Roles) || len(ec.Allow) != len(h.Allow) {
			t.Fatalf("engine JSON lost rules: %s", engine)
		}
	})
}

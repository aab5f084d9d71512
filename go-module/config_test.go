package caddyiap

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// fakeFiles serves key files from a map, failing like os.ReadFile for the rest.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
}

// parseIAP parses one `iap { ... }` block.
func parseIAP(t *testing.T, input string) *Handler {
	t.Helper()
	h := new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return h
}

// TestEngineConfig turns each testdata/engine_config Caddyfile `iap` block into the engine's
// JSON (the shape of rust/core/src/config.rs) and compares it with the golden half.
func TestEngineConfig(t *testing.T) {
	files := fakeFiles(map[string]string{
		"/etc/caddy/offline-jwks.json": `{"keys":[]}`,
		"/etc/caddy/k1.pem":            "-----BEGIN PUBLIC KEY-----\nk1\n-----END PUBLIC KEY-----\n",
		"/etc/caddy/k2.pem":            "-----BEGIN PUBLIC KEY-----\nk2\n-----END PUBLIC KEY-----\n",
	})
	for _, g := range readGolden(t, "engine_config") {
		t.Run(filepath.Base(g.path), func(t *testing.T) {
			h := parseIAP(t, g.input)
			var keys []string
			if h.Assertion != nil {
				keys = []string{"TEST-SIGNING-KEY-B64"}
			}
			out, err := h.engineJSON(files, keys)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, g, indentJSON(t, out))
		})
	}
}

func TestEngineConfigFileErrorsNameTheFile(t *testing.T) {
	for _, input := range []string{
		"iap {\n issuer https://a {\n audience x\n jwks_file /nope/jwks.json\n }\n}",
		"iap {\n issuer https://a {\n audience x\n pem_file /etc/ok.pem /nope/key.pem\n }\n}",
	} {
		h := parseIAP(t, input)
		_, err := h.engineJSON(fakeFiles(map[string]string{"/etc/ok.pem": "pem"}), nil)
		if err == nil || !strings.Contains(err.Error(), "/nope/") || !strings.Contains(err.Error(), `issuer "https://a"`) {
			t.Errorf("error should name the issuer and the file: %v", err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error should wrap the cause: %v", err)
		}
	}
}

func TestEngineConfigReadsRealFiles(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[{"kty":"OKP"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &Handler{Issuers: []Issuer{{Issuer: "https://a", Audiences: []string{"x"}, JWKSFile: jwks}}}
	out, err := h.engineJSON(os.ReadFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Issuers []struct {
			Keys map[string]string `json:"keys"`
		} `json:"issuers"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Issuers[0].Keys["jwks_inline"]; got != `{"keys":[{"kty":"OKP"}]}` {
		t.Errorf("jwks_inline = %q", got)
	}
}

func TestEngineConfigAssertionNeedsKey(t *testing.T) {
	h := &Handler{
		Issuers:   []Issuer{{Issuer: "https://a", Audiences: []string{"x"}}},
		Assertion: &Assertion{Audience: "up"},
	}
	if _, err := h.engineJSON(fakeFiles(nil), nil); err == nil {
		t.Fatal("an assertion without a signing key must not build")
	}
}

package caddyiap

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
)

func TestSigningKeyGeneratedOnceAndReused(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	var generated atomic.Int32
	gen := func(alg string) (string, error) {
		n := generated.Add(1)
		return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "pkcs8-%s-%d", alg, n)), nil
	}

	// Instances starting together: the lock makes them agree on one key.
	const instances = 4
	keys := make([]string, instances)
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() {
			k, err := loadOrCreateSigningKeys(ctx, st, "ES256", gen)
			if err != nil || len(k) != 1 {
				t.Error(k, err)
				return
			}
			keys[i] = k[0]
		})
	}
	wg.Wait()
	if generated.Load() != 1 {
		t.Errorf("generated %d keys, want 1", generated.Load())
	}
	for _, k := range keys {
		if k != keys[0] || k == "" {
			t.Fatalf("instances disagree: %q", keys)
		}
	}

	// Stored where documented; a restart reads it back.
	b, err := st.Load(ctx, "iap/assertion/ES256/signing-key.pk8.b64")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != keys[0] {
		t.Errorf("stored %q", b)
	}
	again, err := loadOrCreateSigningKeys(ctx, st, "ES256", func(string) (string, error) {
		return "", errors.New("must not generate again")
	})
	if err != nil || len(again) != 1 || again[0] != keys[0] {
		t.Errorf("reload: %q %v", again, err)
	}

	// Each algorithm has its own key.
	ed, err := loadOrCreateSigningKeys(ctx, st, "EdDSA", gen)
	if err != nil || len(ed) != 1 || ed[0] == keys[0] {
		t.Errorf("EdDSA key: %q %v", ed, err)
	}
	if st.Exists(ctx, "locks") && len(mustList(t, st, "locks")) != 0 {
		t.Errorf("locks left behind: %v", mustList(t, st, "locks"))
	}
}

// Rotation: a new key on the first line signs; the old one below it is still published.
func TestSigningKeysRotation(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	if err := st.Store(ctx, signingKeyStorageKey("ES256"), []byte("bmV3\n\nb2xk\n")); err != nil {
		t.Fatal(err)
	}
	keys, err := loadOrCreateSigningKeys(ctx, st, "ES256", nil)
	if err != nil || strings.Join(keys, " ") != "bmV3 b2xk" {
		t.Fatalf("keys %q, %v", keys, err)
	}
}

func mustList(t *testing.T, st certmagic.Storage, prefix string) []string {
	t.Helper()
	l, err := st.List(context.Background(), prefix, true)
	if err != nil {
		return nil
	}
	return l
}

func TestSigningKeyErrors(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	secret := "c2VjcmV0LWtleS1tYXRlcmlhbA=="

	if _, err := loadOrCreateSigningKeys(ctx, st, "ES256", func(string) (string, error) {
		return "", errors.New("engine says no")
	}); err == nil || !strings.Contains(err.Error(), "engine says no") {
		t.Errorf("generator error not reported: %v", err)
	}
	if st.Exists(ctx, signingKeyStorageKey("ES256")) {
		t.Error("a failed generation stored something")
	}

	if err := st.Store(ctx, signingKeyStorageKey("ES256"), []byte("not base64 at all! "+secret)); err != nil {
		t.Fatal(err)
	}
	_, err := loadOrCreateSigningKeys(ctx, st, "ES256", nil)
	if err == nil || !strings.Contains(err.Error(), "iap/assertion/ES256/signing-key.pk8.b64") {
		t.Errorf("corrupt key should be named: %v", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Error("key material in an error message")
	}

	if _, err := loadOrCreateSigningKeys(ctx, nil, "ES256", nil); err == nil {
		t.Error("nil storage accepted")
	}
}

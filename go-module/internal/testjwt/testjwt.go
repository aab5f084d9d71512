// Package testjwt signs test tokens with Go's own crypto, so the Rust engine is checked
// against an independent implementation. Test use only.
package testjwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/caddy-iap/caddy-iap/go-module/internal/es256"
)

// Key is an ES256 signing key with a key id.
type Key struct {
	// Kid is the key id put in the JWKS and in token headers.
	Kid  string
	priv *ecdsa.PrivateKey
}

// NewES256 makes a fresh P-256 key.
func NewES256(kid string) *Key {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Key{Kid: kid, priv: priv}
}

// PEM returns the public key as an SPKI PEM block.
func (k *Key) PEM() string {
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// JWKS returns a JWKS document holding the public key.
func (k *Key) JWKS() string {
	jwk := es256.PublicJWK(&k.priv.PublicKey)
	jwk["alg"], jwk["use"], jwk["kid"] = "ES256", "sig", k.Kid
	b, _ := json.Marshal(map[string]any{"keys": []any{jwk}})
	return string(b)
}

// Sign returns a compact ES256 JWT with the given claims; the header names k.Kid when set.
func (k *Key) Sign(claims map[string]any) string {
	token, err := es256.Sign(k.priv, k.Kid, claims)
	if err != nil {
		panic(err)
	}
	return token
}

// VerifyES256 checks a compact ES256 JWT against the EC P-256 key with its kid in a JWKS
// document, and returns the claims.
func VerifyES256(token, jwks string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	var header struct{ Alg, Kid string }
	if err := decodeJSON(parts[0], &header); err != nil {
		return nil, err
	}
	if header.Alg != "ES256" {
		return nil, fmt.Errorf("alg %q", header.Alg)
	}
	var set struct {
		Keys []struct{ Kty, Crv, Kid, X, Y string }
	}
	if err := json.Unmarshal([]byte(jwks), &set); err != nil {
		return nil, err
	}
	for _, jwk := range set.Keys {
		if jwk.Kty != "EC" || jwk.Crv != "P-256" || jwk.Kid != header.Kid {
			continue
		}
		x, err1 := base64.RawURLEncoding.DecodeString(jwk.X)
		y, err2 := base64.RawURLEncoding.DecodeString(jwk.Y)
		sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
		if err := errors.Join(err1, err2, err3); err != nil || len(sig) != 64 {
			return nil, fmt.Errorf("bad key or signature encoding: %v", err)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, err
		}
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return nil, errors.New("signature does not verify")
		}
		var claims map[string]any
		if err := decodeJSON(parts[1], &claims); err != nil {
			return nil, err
		}
		return claims, nil
	}
	return nil, fmt.Errorf("no EC P-256 key with kid %q", header.Kid)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func decodeJSON(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

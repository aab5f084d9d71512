// Package es256 signs compact ES256 JWTs and describes P-256 public keys as JWKs, with Go's
// own crypto. The demo issuer mints tokens with it and the tests sign with it, so the Rust
// engine is always checked against an independent implementation. It is never on the path
// that validates a caller.
package es256

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

var b64 = base64.RawURLEncoding

// Sign returns a compact JWS over claims, signed with key; the header names kid when set.
func Sign(key *ecdsa.PrivateKey, kid string, claims any) (string, error) {
	header := map[string]string{"alg": "ES256", "typ": "JWT"}
	if kid != "" {
		header["kid"] = kid
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64) // JWS wants fixed-width r || s, not ASN.1
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig), nil
}

// PublicJWK returns the required members of pub's JWK (crv, kty, x, y).
func PublicJWK(pub *ecdsa.PublicKey) map[string]string {
	point, err := pub.Bytes() // 0x04 || x || y
	if err != nil || len(point) != 65 {
		return nil
	}
	return map[string]string{"crv": "P-256", "kty": "EC", "x": b64.EncodeToString(point[1:33]), "y": b64.EncodeToString(point[33:])}
}

// Thumbprint is the RFC 7638 thumbprint of pub (json.Marshal sorts map keys, which is the
// member order the RFC asks for).
func Thumbprint(pub *ecdsa.PublicKey) string {
	canonical, _ := json.Marshal(PublicJWK(pub))
	sum := sha256.Sum256(canonical)
	return b64.EncodeToString(sum[:])
}

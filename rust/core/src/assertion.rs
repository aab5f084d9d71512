//! Identity assertions: short-lived JWTs minted for the upstream, signed with keys the Caddy
//! module keeps in Caddy storage (shared by a cluster), and published as a JWKS.
//!
//! Minted assertions are cached per identity and re-minted once less than 10% of their lifetime
//! is left, so a hot caller costs one cache lookup, not one signature, per request.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use quick_cache::sync::Cache;
use serde_json::json;

use crate::alg::Alg;
use crate::config::AssertionConfig;
use crate::engine::Identity;
use crate::error::ConfigError;

/// Default lifetime of an assertion, seconds.
const DEFAULT_TTL: u64 = 300;
/// Header carrying the assertion unless configured otherwise.
pub(crate) const DEFAULT_HEADER: &str = "X-IAP-Assertion";
/// Identities whose assertions are kept.
const CACHE_ENTRIES: usize = 16_384;

/// Generates a new signing key for `alg` (ES256 or EdDSA) as PKCS#8 DER.
pub fn generate_signing_key(alg: Alg) -> Result<Vec<u8>, ConfigError> {
    let rng = SystemRandom::new();
    let doc = match alg {
        Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
        Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
        other => {
            return Err(ConfigError::new(
                "assertion.alg",
                format!("{other} signing keys are not supported; use ES256 or EdDSA"),
            ));
        }
    }
    .map_err(|_| ConfigError::new("assertion", "the system random generator failed"))?;
    Ok(doc.as_ref().to_vec())
}

/// A private signing key. Its `Debug` never shows key material.
enum SigningKey {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            return Some(Self::Es256(pair));
        }
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .ok()
            .map(Self::Ed25519)
    }

    fn alg(&self) -> Alg {
        match self {
            Self::Es256(_) => Alg::ES256,
            Self::Ed25519(_) => Alg::EdDSA,
        }
    }

    /// The public JWK members (without `kid`), in RFC 7638 thumbprint order.
    fn public_jwk(&self) -> serde_json::Value {
        match self {
            Self::Es256(pair) => {
                // Uncompressed point: 0x04 || x (32) || y (32).
                let point = pair.public_key().as_ref();
                json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
            Self::Ed25519(pair) => json!({
                "crv": "Ed25519",
                "kty": "OKP",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }
    }

    fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Es256(pair) => pair.sign(rng, message).ok().map(|s| s.as_ref().to_vec()),
            Self::Ed25519(pair) => Some(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

/// One cached assertion.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    pub(crate) token: Arc<str>,
    /// Re-mint from this time on (90% of the lifetime).
    renew_at: u64,
}

/// Mints and caches identity assertions.
#[derive(Debug)]
pub(crate) struct Minter {
    key: SigningKey,
    kid: String,
    /// `base64url(header) "."`, precomputed.
    header_prefix: String,
    issuer: String,
    audience: String,
    ttl: u64,
    /// Shared with every decision that sets it (no per-request copy).
    header_name: Arc<str>,
    public_jwks: String,
    rng: SystemRandom,
    cache: Cache<[u8; 32], Minted>,
}

impl Minter {
    /// Builds the minter; the first key signs, all are published.
    pub(crate) fn new(cfg: &AssertionConfig) -> Result<Self, ConfigError> {
        if cfg.audience.is_empty() {
            return Err(ConfigError::new(
                "assertion.audience",
                "an audience is required",
            ));
        }
        let ttl = cfg.ttl_secs.unwrap_or(DEFAULT_TTL);
        if !(10..=3600).contains(&ttl) {
            return Err(ConfigError::new(
                "assertion.ttl",
                "must be between 10s and 1h",
            ));
        }
        let mut keys = Vec::new();
        let mut published = Vec::new();
        for (i, b64) in cfg.signing_keys.iter().enumerate() {
            let at = || format!("assertion.signing_keys[{i}]");
            let der = STANDARD
                .decode(b64.trim())
                .map_err(|_| ConfigError::new(at(), "not base64"))?;
            let key = SigningKey::from_pkcs8(&der).ok_or_else(|| {
                ConfigError::new(at(), "not a PKCS#8 P-256 or Ed25519 private key")
            })?;
            let mut jwk = key.public_jwk();
            let kid = thumbprint(&jwk);
            jwk["kid"] = kid.clone().into();
            jwk["alg"] = key.alg().as_str().into();
            jwk["use"] = "sig".into();
            published.push(jwk);
            keys.push((key, kid));
        }
        let mut keys = keys.into_iter();
        let (key, kid) = keys.next().ok_or_else(|| {
            ConfigError::new("assertion.signing_keys", "no signing key was provided")
        })?;
        let header = json!({"alg": key.alg().as_str(), "kid": kid, "typ": "JWT"});
        let header_prefix = format!("{}.", URL_SAFE_NO_PAD.encode(header.to_string()));
        Ok(Self {
            key,
            kid,
            header_prefix,
            issuer: cfg.issuer.clone().unwrap_or_else(|| "caddy-iap".into()),
            audience: cfg.audience.clone(),
            ttl,
            header_name: cfg.header.as_deref().unwrap_or(DEFAULT_HEADER).into(),
            public_jwks: json!({ "keys": published }).to_string(),
            rng: SystemRandom::new(),
            cache: Cache::new(CACHE_ENTRIES),
        })
    }

    /// The header the assertion travels in.
    pub(crate) fn header_name(&self) -> &Arc<str> {
        &self.header_name
    }

    /// The public keys as a JWKS document.
    pub(crate) fn public_jwks(&self) -> &str {
        &self.public_jwks
    }

    /// The `kid` of the signing key.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// An assertion for `identity` valid at `now`, from the cache when it has >10% life left.
    pub(crate) fn assertion(&self, identity: &Identity, now: u64) -> Option<Arc<str>> {
        if let Some(m) = self.cache.get(&identity.fingerprint) {
            if now < m.renew_at {
                return Some(m.token);
            }
        }
        let minted = self.mint(identity, now)?;
        let token = minted.token.clone();
        self.cache.insert(identity.fingerprint, minted);
        Some(token)
    }

    pub(crate) fn mint(&self, identity: &Identity, now: u64) -> Option<Minted> {
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).ok()?;
        // Never outlive the token the identity came from (at least one second, so a token in
        // its leeway still yields a usable assertion).
        let exp = (now + self.ttl).min(identity.expires_at).max(now + 1);
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": &*identity.subject,
            "roles": identity.roles.iter().map(|r| &**r).collect::<Vec<_>>(),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "idp": &*identity.issuer,
        });
        if let Some(email) = &identity.email {
            claims["email"] = (**email).into();
        }
        if let Some(name) = &identity.name {
            claims["name"] = (**name).into();
        }
        let mut token = self.header_prefix.clone();
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
        let signature = self.key.sign(&self.rng, token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Some(Minted {
            token: token.into(),
            renew_at: exp - (exp - now) / 10,
        })
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &serde_json::Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order` feature), which is exactly the
    // canonical member order RFC 7638 asks for.
    URL_SAFE_NO_PAD.encode(digest(&SHA256, jwk.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_of_the_rfc_example_key() {
        // RFC 7638 §3.1 example (RSA): thumbprint NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
        let jwk = json!({
            "e": "AQAB",
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        });
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}

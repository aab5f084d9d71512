//! Shared test support: fixture keys, a token signer per algorithm, and a hand-moved clock.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use caddy_iap_core::Clock;
use serde_json::Value;

/// A fixture file from `tests/data`.
pub fn fixture(name: &str) -> String {
    // Relative to this file, so the FFI crate can share these fixtures.
    let path = format!("{}/../core/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// Which fixture key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rs256,
    Es256,
    EdDsa,
}

impl KeyKind {
    pub const ALL: [Self; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    pub fn alg(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn public_pem(self) -> String {
        fixture(match self {
            Self::Rs256 => "rsa2048.spki.pem",
            Self::Es256 => "p256.spki.pem",
            Self::EdDsa => "ed25519.spki.pem",
        })
    }
}

/// Signs compact JWS tokens with a fixture key.
pub struct Signer {
    pub kind: KeyKind,
    rsa: Option<RsaKeyPair>,
    ec: Option<EcdsaKeyPair>,
    ed: Option<Ed25519KeyPair>,
    rng: SystemRandom,
}

impl Signer {
    pub fn new(kind: KeyKind) -> Self {
        let rng = SystemRandom::new();
        let (mut rsa, mut ec, mut ed) = (None, None, None);
        match kind {
            KeyKind::Rs256 => {
                rsa = Some(RsaKeyPair::from_pkcs8(&pem_der(&fixture("rsa2048.pk8.pem"))).unwrap())
            }
            KeyKind::Es256 => {
                ec = Some(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &pem_der(&fixture("p256.pk8.pem")),
                    )
                    .unwrap(),
                )
            }
            KeyKind::EdDsa => {
                ed = Some(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(&fixture(
                        "ed25519.pk8.pem",
                    )))
                    .unwrap(),
                )
            }
        }
        Self {
            kind,
            rsa,
            ec,
            ed,
            rng,
        }
    }

    /// Signs `header` and `claims` (JSON values) into a compact token.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Signs raw header and payload bytes (for non-canonical JSON tests).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = match self.kind {
            KeyKind::Rs256 => {
                let pair = self.rsa.as_ref().unwrap();
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            KeyKind::Es256 => self
                .ec
                .as_ref()
                .unwrap()
                .sign(&self.rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            KeyKind::EdDsa => self
                .ed
                .as_ref()
                .unwrap()
                .sign(input.as_bytes())
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The usual header: alg and kid.
    pub fn header(&self, kid: &str) -> Value {
        serde_json::json!({"alg": self.kind.alg(), "typ": "JWT", "kid": kid})
    }
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(pub AtomicU64);

impl ManualClock {
    pub fn at(t: u64) -> Self {
        Self(AtomicU64::new(t))
    }
    pub fn set(&self, t: u64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

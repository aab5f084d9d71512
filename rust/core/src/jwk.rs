//! JWK and JWKS parsing into verification keys, and SPKI PEM public keys.
//!
//! Each key is bound to exactly one algorithm when it is loaded (RFC 8725bis §3.1): its `kty` and
//! `crv` fix the family, and `alg`, when given, must fit that family. Symmetric (`oct`) keys,
//! private keys, encryption keys, weak RSA moduli and unsupported curves are skipped with a reason
//! that names the problem but never the key material.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::alg::{Alg, KeyFamily};
use crate::error::{TokenError, truncate_for_log};
use crate::json::{Json, JsonObject, parse_object};

#[cfg(test)]
mod tests;

/// One public key bound to exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Alg,
    /// The key as the verifier for `alg` takes it: DER `RSAPublicKey` for RSA, the uncompressed
    /// point `04 || x || y` for ECDSA, the 32-byte public key for Ed25519. Kept for equality.
    public: Box<[u8]>,
    /// The same key parsed once, at load: an RSA key keeps its Montgomery constants, an EC point
    /// is checked to be on the curve, so a verification does neither again.
    parsed: ParsedPublicKey,
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        (&self.kid, self.alg, &self.public) == (&other.kid, other.alg, &other.public)
    }
}

impl Eq for VerifyingKey {}

impl VerifyingKey {
    /// Verifies `signature` over `message` with algorithm `alg`, which must equal `self.alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), TokenError> {
        if alg != self.alg {
            return Err(TokenError::DisallowedAlgorithm {
                alg: alg.as_str().into(),
            });
        }
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| TokenError::BadSignature)
    }

    /// A key from its verifier-ready encoding, parsed by the crypto library now so that a key
    /// it would refuse is skipped at load rather than failing every verification.
    fn new(kid: Option<String>, alg: Alg, public: Box<[u8]>) -> Result<Self, String> {
        let parsed = ParsedPublicKey::new(alg.verifier(), &*public)
            .map_err(|e| format!("the crypto library refuses the {alg} key: {e}"))?;
        Ok(Self {
            kid,
            alg,
            public,
            parsed,
        })
    }

    /// An RSA key from big-endian `n` and `e` (leading zero bytes allowed), for `alg`.
    fn rsa(kid: Option<String>, alg: Alg, n: &[u8], e: &[u8]) -> Result<Self, String> {
        let (n, e) = (strip_leading_zeros(n), strip_leading_zeros(e));
        let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "RSA modulus has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
            ));
        }
        if n.last().is_some_and(|b| b & 1 == 0) {
            return Err("RSA modulus is even".into());
        }
        // Odd, at least 3, below 2^33 (which also caps verification cost): the bounds ring
        // enforced, kept with aws-lc-rs. More than 5 bytes is over the bound; 0 stands for it.
        let e_value = if e.len() <= 5 {
            e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b))
        } else {
            0
        };
        if e_value < 3 || e_value & 1 == 0 || e_value >= 1 << 33 {
            return Err("RSA exponent must be odd, at least 3 and below 2^33".into());
        }
        if has_roca_fingerprint(n) {
            return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into());
        }
        let mut body = Vec::with_capacity(n.len() + e.len() + 10);
        der_put_uint(&mut body, n);
        der_put_uint(&mut body, e);
        let mut public = Vec::with_capacity(body.len() + 4);
        der_put_header(&mut public, SEQUENCE, body.len());
        public.extend_from_slice(&body);
        Self::new(kid, alg, public.into())
    }

    /// An ECDSA key from its affine coordinates, each exactly `len` bytes, for `alg`.
    fn ec(kid: Option<String>, alg: Alg, x: &[u8], y: &[u8], len: usize) -> Result<Self, String> {
        if x.len() != len || y.len() != len {
            return Err(format!("EC coordinates must be {len} bytes each for {alg}"));
        }
        Self::new(kid, alg, [&[0x04][..], x, y].concat().into())
    }

    /// An Ed25519 key from its 32-byte encoding.
    fn ed25519(kid: Option<String>, x: &[u8]) -> Result<Self, String> {
        if x.len() != 32 {
            return Err("Ed25519 public key must be 32 bytes".into());
        }
        if ed25519_small_order(x) {
            // With such a key, R = identity and S = 0 is a valid signature of any message for
            // verifiers without this check (ring was one).
            return Err("Ed25519 public key is a small-order point".into());
        }
        Self::new(kid, Alg::EdDSA, x.into())
    }
}

/// Whether `x` encodes a point of small order (or a non-canonical encoding of one), as in
/// libsodium's blocklist; the sign bit of the last byte is ignored, so every variant is caught.
fn ed25519_small_order(x: &[u8]) -> bool {
    const BLOCKLIST: [[u8; 32]; 7] = [
        // 0 (order 4)
        [0; 32],
        // 1 (order 1, the identity)
        [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ],
        // order 8
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        // order 8
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
        // p - 1 (order 2)
        [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p (non-canonical 0, order 4)
        [
            0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p + 1 (non-canonical 1, order 1)
        [
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
    ];
    BLOCKLIST
        .iter()
        .any(|bad| bad[..31] == x[..31] && bad[31] == x[31] & 0x7f)
}

impl fmt::Debug for VerifyingKey {
    /// Shows `kid` and `alg` only, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Result of parsing a JWKS: the usable keys, and why the others were skipped.
#[derive(Debug, Default)]
pub struct ParsedKeySet {
    /// Usable verification keys.
    pub keys: Vec<VerifyingKey>,
    /// One line per skipped entry ("keys[2]: kty \"oct\" is not supported"), no key material.
    pub skipped: Vec<String>,
}

/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most JWKS entries looked at; the rest are skipped.
const MAX_JWKS_KEYS: usize = 100;

/// Smallest and largest accepted RSA modulus, in bits (RFC 7518 §3.3; the verifiers' range).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// JWK members that only a private or symmetric key has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Parses a JWKS document entry by entry; a bad entry is skipped, not fatal. Fails only when the
/// document is not a JSON object with a `keys` array (or is larger than the cap).
pub fn parse_jwks(bytes: &[u8]) -> Result<ParsedKeySet, String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "key set is {} bytes, over the {MAX_JWKS_BYTES} byte limit",
            bytes.len()
        ));
    }
    let mut doc = parse_object(bytes, "key set").map_err(|e| e.to_string())?;
    let Some(Json::Array(entries)) = doc.remove("keys") else {
        return Err("key set has no \"keys\" array".into());
    };
    let mut set = ParsedKeySet::default();
    for (i, entry) in entries.iter().enumerate().take(MAX_JWKS_KEYS) {
        let key = match entry {
            Json::Object(jwk) => parse_jwk(jwk),
            _ => Err("not a JSON object".into()),
        };
        match key {
            Ok(key) => set.keys.push(key),
            Err(reason) => set.skipped.push(format!("keys[{i}]: {reason}")),
        }
    }
    if entries.len() > MAX_JWKS_KEYS {
        let extra = entries.len() - MAX_JWKS_KEYS;
        set.skipped.push(format!(
            "keys[{MAX_JWKS_KEYS}..]: {extra} entries over the {MAX_JWKS_KEYS}-key limit"
        ));
    }
    Ok(set)
}

/// Parses one PEM SPKI public key. `alg` picks the algorithm for RSA keys (default RS256); for EC
/// and Ed25519 keys it must agree with the curve when given.
pub(crate) fn parse_pem(pem: &str, alg: Option<Alg>) -> Result<VerifyingKey, String> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or("expected exactly one \"PUBLIC KEY\" (SPKI) PEM block")?;
    let der = STANDARD
        .decode(body.split_ascii_whitespace().collect::<String>())
        .map_err(|_| "PEM body is not valid base64")?;

    // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
    let spki = Der(&der).only(SEQUENCE)?;
    let mut spki = Der(spki);
    let mut algorithm = Der(spki.read(SEQUENCE)?);
    let Some((0, key)) = spki.read(BIT_STRING)?.split_first() else {
        return Err("public key BIT STRING is empty or has unused bits".into());
    };
    spki.end()?;
    let oid = algorithm.read(OID)?;
    match oid {
        OID_RSA_ENCRYPTION => {
            algorithm.read(NULL)?;
            algorithm.end()?;
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let mut rsa = Der(Der(key).only(SEQUENCE)?);
            let (n, e) = (der_uint(rsa.read(INTEGER)?)?, der_uint(rsa.read(INTEGER)?)?);
            rsa.end()?;
            VerifyingKey::rsa(None, bind_alg(KeyFamily::Rsa, alg)?, n, e)
        }
        OID_EC_PUBLIC_KEY => {
            let (family, len) = match algorithm.read(OID)? {
                OID_P256 => (KeyFamily::P256, 32),
                OID_P384 => (KeyFamily::P384, 48),
                _ => return Err("EC curve is not supported (P-256 and P-384 are)".into()),
            };
            algorithm.end()?;
            let Some((0x04, point)) = key.split_first() else {
                return Err("EC point is not in uncompressed form".into());
            };
            let (x, y) = point.split_at(point.len() / 2);
            VerifyingKey::ec(None, bind_alg(family, alg)?, x, y, len)
        }
        OID_ED25519 => {
            algorithm.end()?;
            bind_alg(KeyFamily::Ed25519, alg)?;
            VerifyingKey::ed25519(None, key)
        }
        _ => Err("key algorithm is not supported (RSA, EC P-256/P-384 and Ed25519 are)".into()),
    }
}

/// Turns one JWKS entry into a key, or says why it cannot be used.
fn parse_jwk(jwk: &JsonObject<'_>) -> Result<VerifyingKey, String> {
    let kty = match jwk.get("kty") {
        Some(Json::String(kty)) => &**kty,
        Some(_) => return Err("kty is not a string".into()),
        None => return Err("kty is missing".into()),
    };
    if !matches!(kty, "RSA" | "EC" | "OKP") {
        return Err(format!("kty {:?} is not supported", truncate_for_log(kty)));
    }
    if let Some(name) = PRIVATE_MEMBERS
        .into_iter()
        .find(|name| jwk.get(name).is_some())
    {
        return Err(format!("private key member {name:?} is present"));
    }
    match jwk.get("use") {
        None => {}
        Some(Json::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not \"sig\"".into()),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Json::Array(ops))
            if ops.iter().all(|op| op.as_str().is_some())
                && ops.iter().any(|op| op.as_str() == Some("verify")) => {}
        Some(_) => return Err("key_ops does not allow \"verify\"".into()),
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Json::String(kid)) => Some(kid.as_ref().to_owned()),
        Some(_) => return Err("kid is not a string".into()),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Json::String(alg)) => Some(
            Alg::from_str(alg)
                .map_err(|()| format!("alg {:?} is not supported", truncate_for_log(alg)))?,
        ),
        Some(_) => return Err("alg is not a string".into()),
    };
    let crv = || match jwk.get("crv") {
        Some(Json::String(crv)) => Ok(&**crv),
        Some(_) => Err("crv is not a string".to_owned()),
        None => Err("crv is missing".to_owned()),
    };
    match kty {
        "RSA" => {
            let alg = bind_alg(KeyFamily::Rsa, alg)?;
            VerifyingKey::rsa(kid, alg, &member(jwk, "n")?, &member(jwk, "e")?)
        }
        "EC" => {
            let (family, len) = match crv()? {
                "P-256" => (KeyFamily::P256, 32),
                "P-384" => (KeyFamily::P384, 48),
                other => {
                    return Err(format!(
                        "EC crv {:?} is not supported",
                        truncate_for_log(other)
                    ));
                }
            };
            let alg = bind_alg(family, alg)?;
            VerifyingKey::ec(kid, alg, &member(jwk, "x")?, &member(jwk, "y")?, len)
        }
        _ => {
            let crv = crv()?;
            if crv != "Ed25519" {
                return Err(format!(
                    "OKP crv {:?} is not supported",
                    truncate_for_log(crv)
                ));
            }
            bind_alg(KeyFamily::Ed25519, alg)?;
            VerifyingKey::ed25519(kid, &member(jwk, "x")?)
        }
    }
}

/// The one algorithm a key of `family` verifies: `alg` when given and of that family, else the
/// family's default (RS256 for RSA; the curve's own algorithm otherwise).
fn bind_alg(family: KeyFamily, alg: Option<Alg>) -> Result<Alg, String> {
    let (default, name) = match family {
        KeyFamily::Rsa => (Alg::RS256, "an RSA"),
        KeyFamily::P256 => (Alg::ES256, "a P-256"),
        KeyFamily::P384 => (Alg::ES384, "a P-384"),
        KeyFamily::Ed25519 => (Alg::EdDSA, "an Ed25519"),
    };
    match alg {
        None => Ok(default),
        Some(alg) if alg.family() == family => Ok(alg),
        Some(alg) => Err(format!("alg {alg} does not fit {name} key")),
    }
}

/// Decodes the canonical base64url member `name` of `jwk`.
fn member(jwk: &JsonObject<'_>, name: &'static str) -> Result<Vec<u8>, String> {
    match jwk.get(name) {
        Some(Json::String(s)) => URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| format!("{name} is not canonical base64url")),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

/// `bytes` without its leading zero bytes.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Whether the RSA modulus `n` has the fingerprint of Infineon RSALib keys (ROCA,
/// CVE-2017-15361), whose factors can be recovered. Their primes are `k·M + (65537^a mod M)` for
/// a primorial `M`, so `n mod p` lies in the subgroup generated by 65537 for every small prime
/// `p` in `M`. The 71 odd primes up to 359 divide `M` for every key size we accept; a random
/// modulus passes all of them with probability about 2^-83.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    (3..360u32)
        .filter(|&p| (2..p).take_while(|d| d * d <= p).all(|d| p % d != 0))
        .all(|p| {
            let residue = n.iter().fold(0, |r, &b| (r * 256 + u32::from(b)) % p);
            let generator = 65537 % p;
            let mut x = 1;
            loop {
                if x == residue {
                    return true;
                }
                x = x * generator % p;
                if x == 1 {
                    return false;
                }
            }
        })
}

/// DER tags used in SPKI.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;

/// DER contents of the OIDs we read: rsaEncryption (1.2.840.113549.1.1.1), id-ecPublicKey
/// (1.2.840.10045.2.1), prime256v1 (1.2.840.10045.3.1.7), secp384r1 (1.3.132.0.34) and Ed25519
/// (1.3.101.112).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A minimal DER reader over the bytes not read yet: definite, minimally encoded lengths below
/// 64 KiB, single-byte tags.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// Reads one element, which must have tag `tag`, and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let malformed = || format!("malformed DER (expected tag {tag:#04x})");
        let [t, first, rest @ ..] = self.0 else {
            return Err(malformed());
        };
        if *t != tag {
            return Err(malformed());
        }
        let (len, rest) = match (*first, rest) {
            (len @ 0..=0x7f, rest) => (usize::from(len), rest),
            (0x81, [len @ 0x80..=0xff, rest @ ..]) => (usize::from(*len), rest),
            (0x82, [hi @ 1..=0xff, lo, rest @ ..]) => {
                (usize::from(*hi) << 8 | usize::from(*lo), rest)
            }
            _ => return Err(malformed()),
        };
        if rest.len() < len {
            return Err(malformed());
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(contents)
    }

    /// Reads the one element, with tag `tag`, that these bytes must consist of.
    fn only(mut self, tag: u8) -> Result<&'a [u8], String> {
        let contents = self.read(tag)?;
        self.end()?;
        Ok(contents)
    }

    /// Fails unless everything was read.
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("unexpected trailing DER data".into())
        }
    }
}

/// The magnitude of a non-negative, minimally encoded DER INTEGER.
fn der_uint(contents: &[u8]) -> Result<&[u8], String> {
    match contents {
        [] | [0x80..=0xff, ..] => Err("DER INTEGER is empty or negative".into()),
        [0, next, ..] if *next < 0x80 => Err("DER INTEGER is not minimally encoded".into()),
        [0, rest @ ..] if !rest.is_empty() => Ok(rest),
        _ => Ok(contents),
    }
}

/// Appends a DER tag and definite length. `len` is below 64 KiB: callers encode at most an
/// 8192-bit modulus.
fn der_put_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    debug_assert!(len <= 0xffff);
    let [_, _, hi, lo] = (len as u32).to_be_bytes();
    match len {
        0..0x80 => out.extend_from_slice(&[tag, lo]),
        0x80..0x100 => out.extend_from_slice(&[tag, 0x81, lo]),
        _ => out.extend_from_slice(&[tag, 0x82, hi, lo]),
    }
}

/// Appends `magnitude` (no leading zeros) as a DER INTEGER.
fn der_put_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let pad = magnitude.first().is_some_and(|b| b & 0x80 != 0);
    der_put_header(out, INTEGER, magnitude.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(magnitude);
}

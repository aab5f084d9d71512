//! JWK and JWKS parsing into verification keys. (STUB: being written.)
use crate::alg::Alg;
use crate::error::TokenError;

/// One public key bound to exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Alg,
}

impl VerifyingKey {
    /// Verifies `signature` over `message` with algorithm `alg`, which must equal `self.alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), TokenError> {
        let _ = (alg, message, signature);
        todo!()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
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

/// Parses a JWKS document entry by entry; a bad entry is skipped, not fatal. Fails only when the
/// document is not a JSON object with a `keys` array (or is larger than the cap).
pub fn parse_jwks(bytes: &[u8]) -> Result<ParsedKeySet, String> {
    let _ = bytes;
    todo!()
}

/// Parses one PEM SPKI public key. `alg` picks the algorithm for RSA keys (default RS256); for EC
/// and Ed25519 keys it must agree with the curve when given.
pub(crate) fn parse_pem(pem: &str, alg: Option<Alg>) -> Result<VerifyingKey, String> {
    let _ = (pem, alg);
    todo!()
}

//! Identity assertions minted for the upstream. (STUB: being written.)
use crate::alg::Alg;
use crate::error::ConfigError;

/// Generates a new signing key for `alg` (ES256 or EdDSA) as PKCS#8 DER.
pub fn generate_signing_key(alg: Alg) -> Result<Vec<u8>, ConfigError> {
    let _ = alg;
    todo!()
}

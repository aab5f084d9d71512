//! Registered-claim checks: iss, aud, exp, nbf, iat, sub, lifetime. (STUB: being written.)
use serde_json::{Map, Value};

use crate::error::TokenError;

/// What the claims of one issuer's tokens must satisfy.
#[derive(Debug, Clone)]
pub(crate) struct ClaimsPolicy {
    /// Accepted audiences; at least one `aud` value must be among them.
    pub(crate) audiences: Vec<String>,
    /// Clock-skew leeway in seconds.
    pub(crate) leeway: u64,
    /// Longest accepted lifetime in seconds.
    pub(crate) max_lifetime: u64,
}

/// The checked registered claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedClaims {
    pub(crate) sub: String,
    pub(crate) exp: u64,
    pub(crate) iat: Option<u64>,
    pub(crate) jti: Option<String>,
}

/// Reads `iss` as a single string, for issuer selection before verification.
pub(crate) fn issuer(claims: &Map<String, Value>) -> Result<&str, TokenError> {
    let _ = claims;
    todo!()
}

/// Checks every registered claim against `policy` at time `now`.
pub(crate) fn check(claims: &Map<String, Value>, policy: &ClaimsPolicy, now: u64) -> Result<CheckedClaims, TokenError> {
    let _ = (claims, policy, now);
    todo!()
}

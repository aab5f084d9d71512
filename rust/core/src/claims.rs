//! Registered-claim checks: iss, aud, exp, nbf, iat, sub, jti, lifetime.
//!
//! Every claim is read by its JSON type, never coerced: a string `exp` or a numeric `aud` is a
//! [`TokenError::ClaimType`], not an absent claim (CVE-2026-25537, CVE-2020-26160). Times are
//! NumericDates: non-negative JSON numbers, fractions allowed; `exp` is floored and `nbf`/`iat`
//! are ceiled so rounding never widens the validity window. All arithmetic saturates.

use std::sync::Arc;

use crate::error::TokenError;
use crate::json::{Json, JsonObject};

#[cfg(test)]
mod tests;

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
    // Shared strings already: the identity keeps them as they are.
    pub(crate) sub: Arc<str>,
    pub(crate) exp: u64,
    pub(crate) iat: Option<u64>,
    pub(crate) jti: Option<Arc<str>>,
}

/// Reads `iss` as a single string, for issuer selection before verification.
pub(crate) fn issuer<'c>(claims: &'c JsonObject<'_>) -> Result<&'c str, TokenError> {
    match claims.get("iss") {
        Some(Json::String(iss)) => Ok(iss),
        Some(_) => Err(TokenError::ClaimType { claim: "iss" }),
        None => Err(TokenError::MissingClaim { claim: "iss" }),
    }
}

/// Checks every registered claim against `policy` at time `now`.
pub(crate) fn check(
    claims: &JsonObject<'_>,
    policy: &ClaimsPolicy,
    now: u64,
) -> Result<CheckedClaims, TokenError> {
    // Types first, so a malformed token is reported as such whatever the clock says.
    let exp = numeric_date(claims, "exp", f64::floor)?
        .ok_or(TokenError::MissingClaim { claim: "exp" })?;
    let nbf = numeric_date(claims, "nbf", f64::ceil)?;
    let iat = numeric_date(claims, "iat", f64::ceil)?;
    let sub = match claims.get("sub") {
        Some(Json::String(sub)) if !sub.is_empty() => Arc::from(&**sub),
        Some(_) => return Err(TokenError::ClaimType { claim: "sub" }),
        None => return Err(TokenError::MissingClaim { claim: "sub" }),
    };
    let jti = match claims.get("jti") {
        None => None,
        Some(Json::String(jti)) => Some(Arc::from(&**jti)),
        Some(_) => return Err(TokenError::ClaimType { claim: "jti" }),
    };
    let audiences = audiences(claims)?;

    let latest = now.saturating_add(policy.leeway);
    if now > exp.saturating_add(policy.leeway) {
        return Err(TokenError::Expired { now, exp });
    }
    if let Some(nbf) = nbf.filter(|&nbf| latest < nbf) {
        return Err(TokenError::NotYetValid { now, nbf });
    }
    if let Some(iat) = iat.filter(|&iat| iat > latest) {
        return Err(TokenError::IssuedInFuture { now, iat });
    }
    let lifetime = exp.saturating_sub(iat.unwrap_or(now));
    if lifetime > policy.max_lifetime {
        return Err(TokenError::LifetimeTooLong {
            lifetime,
            max: policy.max_lifetime,
        });
    }
    let matches = |aud: &str| policy.audiences.iter().any(|want| want == aud);
    if !audiences.iter().filter_map(Json::as_str).any(matches) {
        return Err(TokenError::AudienceMismatch);
    }
    Ok(CheckedClaims { sub, exp, iat, jti })
}

/// Reads the optional NumericDate `claim`: a finite, non-negative JSON number, rounded with
/// `round` and saturated to `u64`.
fn numeric_date(
    claims: &JsonObject<'_>,
    claim: &'static str,
    round: fn(f64) -> f64,
) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let Json::Number(n) = value else {
        return Err(TokenError::ClaimType { claim });
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        // `as` saturates: anything at or past 2^64 becomes u64::MAX.
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(round(secs) as u64)),
        _ => Err(TokenError::ClaimType { claim }),
    }
}

/// Reads `aud`, a string or a non-empty array of strings, as a slice of string values.
fn audiences<'c>(claims: &'c JsonObject<'_>) -> Result<&'c [Json<'c>], TokenError> {
    match claims.get("aud") {
        None => Err(TokenError::MissingClaim { claim: "aud" }),
        Some(one @ Json::String(_)) => Ok(std::slice::from_ref(one)),
        Some(Json::Array(items))
            if !items.is_empty() && items.iter().all(|i| i.as_str().is_some()) =>
        {
            Ok(items)
        }
        Some(_) => Err(TokenError::ClaimType { claim: "aud" }),
    }
}

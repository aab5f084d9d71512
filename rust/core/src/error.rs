//! Errors, split by origin: untrusted token input, key-set trouble, and configuration mistakes.
//!
//! Every denial maps to a [`Denial`] (HTTP status plus a stable reason code) through
//! `From<&Error>`; the FFI layer sends the code across the C ABI and Go turns it into a response.

use std::fmt;

/// Anything that can stop a request from being allowed, or a config from loading.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request carried no token in any configured source.
    MissingToken,
    /// The token was malformed, forged, expired or otherwise refused.
    Token(TokenError),
    /// No verification key is available yet for the token's issuer (provider unreachable).
    KeysUnavailable {
        /// The configured issuer whose keys are missing.
        issuer: String,
        /// Why the last fetch failed, if one did (a log line without key material).
        last_error: Option<String>,
    },
    /// The token was valid but its roles do not permit the request.
    Forbidden {
        /// Human-readable explanation for the log ("no rule matched; roles=[reader]").
        reason: String,
    },
    /// The request itself was malformed (e.g. a path with dot segments).
    BadRequest {
        /// What was wrong.
        reason: String,
    },
    /// The configuration was refused.
    Config(ConfigError),
}

/// Why a token was refused. Carries metadata only, never token bytes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than the configured cap.
    TooLong {
        /// Length of the token in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not exactly three dot-separated segments (JWE has five; JSON serialization has none).
    WrongSegmentCount {
        /// How many segments were found.
        found: usize,
    },
    /// A segment is not canonical unpadded base64url.
    BadBase64 {
        /// Which segment: "header", "payload" or "signature".
        segment: &'static str,
    },
    /// A segment does not decode to a JSON object, or has duplicate keys or wrong types.
    BadJson {
        /// Which segment.
        segment: &'static str,
        /// What was wrong (no input bytes are quoted).
        detail: String,
    },
    /// `alg` is missing, `none`, unknown, or not allowed for the issuer.
    DisallowedAlgorithm {
        /// The `alg` value, truncated for logs.
        alg: String,
    },
    /// A header parameter we never trust is present (`crit`, `b64`, `jwk`, `jku`, `x5u`, `x5c`, ...).
    ForbiddenHeader {
        /// The parameter name.
        name: &'static str,
    },
    /// The `iss` claim is missing, not a string, or not a configured issuer.
    UnknownIssuer,
    /// No key of the issuer matches the token's `kid`/`alg`.
    UnknownKey {
        /// The token's `kid`, truncated for logs.
        kid: Option<String>,
    },
    /// The signature does not verify.
    BadSignature,
    /// `exp` is missing.
    MissingClaim {
        /// The missing claim.
        claim: &'static str,
    },
    /// A registered claim has the wrong JSON type (string `exp`, numeric `aud`, array `iss`, ...).
    ClaimType {
        /// The claim.
        claim: &'static str,
    },
    /// `exp` has passed (beyond leeway).
    Expired {
        /// Now, in seconds since the epoch.
        now: u64,
        /// The token's `exp`.
        exp: u64,
    },
    /// `nbf` is in the future (beyond leeway).
    NotYetValid {
        /// Now.
        now: u64,
        /// The token's `nbf`.
        nbf: u64,
    },
    /// `iat` is in the future (beyond leeway).
    IssuedInFuture {
        /// Now.
        now: u64,
        /// The token's `iat`.
        iat: u64,
    },
    /// `exp - iat` (or `exp - now` when `iat` is absent) exceeds the configured maximum.
    LifetimeTooLong {
        /// The token's lifetime in seconds.
        lifetime: u64,
        /// The maximum.
        max: u64,
    },
    /// No `aud` value matches a configured audience.
    AudienceMismatch,
}

/// A configuration mistake, reported at load time.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the config ("issuers[0].jwks_file", "roles[2]").
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A config error at `at`.
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }
}

/// What the client is told, and the stable code logs and metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Denial {
    /// HTTP status: 400, 401, 403 or 503.
    pub status: u16,
    /// Stable reason code (also crosses the C ABI).
    pub reason: ReasonCode,
}

/// Stable reason codes. Never renumber; retire numbers by leaving a comment.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// Allowed.
    Allowed = 0,
    /// No token was presented.
    MissingToken = 1,
    /// Token malformed (segments, base64, JSON, header).
    MalformedToken = 2,
    /// Algorithm not allowed.
    DisallowedAlgorithm = 3,
    /// Issuer not configured.
    UnknownIssuer = 4,
    /// No matching key.
    UnknownKey = 5,
    /// Signature did not verify.
    BadSignature = 6,
    /// Expired, not yet valid, issued in the future, or lifetime too long.
    BadTime = 7,
    /// Audience mismatch.
    AudienceMismatch = 8,
    /// Missing or wrongly typed claim.
    BadClaims = 9,
    /// Roles do not permit the request.
    Forbidden = 10,
    /// Keys not available (provider unreachable and nothing cached).
    KeysUnavailable = 11,
    /// Request itself malformed.
    BadRequest = 12,
    /// Internal error (config, panic).
    Internal = 13,
}

impl ReasonCode {
    /// The snake_case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::BadTime => "bad_time",
            Self::AudienceMismatch => "audience_mismatch",
            Self::BadClaims => "bad_claims",
            Self::Forbidden => "forbidden",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadRequest => "bad_request",
            Self::Internal => "internal",
        }
    }
}

impl From<&TokenError> for ReasonCode {
    fn from(e: &TokenError) -> Self {
        use TokenError as T;
        match e {
            T::TooLong { .. }
            | T::WrongSegmentCount { .. }
            | T::BadBase64 { .. }
            | T::BadJson { .. }
            | T::ForbiddenHeader { .. } => Self::MalformedToken,
            T::DisallowedAlgorithm { .. } => Self::DisallowedAlgorithm,
            T::UnknownIssuer => Self::UnknownIssuer,
            T::UnknownKey { .. } => Self::UnknownKey,
            T::BadSignature => Self::BadSignature,
            T::MissingClaim { .. } | T::ClaimType { .. } => Self::BadClaims,
            T::Expired { .. }
            | T::NotYetValid { .. }
            | T::IssuedInFuture { .. }
            | T::LifetimeTooLong { .. } => Self::BadTime,
            T::AudienceMismatch => Self::AudienceMismatch,
        }
    }
}

impl From<&Error> for Denial {
    fn from(e: &Error) -> Self {
        let (status, reason) = match e {
            Error::MissingToken => (401, ReasonCode::MissingToken),
            Error::Token(t) => (401, ReasonCode::from(t)),
            Error::KeysUnavailable { .. } => (503, ReasonCode::KeysUnavailable),
            Error::Forbidden { .. } => (403, ReasonCode::Forbidden),
            Error::BadRequest { .. } => (400, ReasonCode::BadRequest),
            Error::Config(_) => (500, ReasonCode::Internal),
        };
        Self { status, reason }
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Self::Token(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingToken => f.write_str("no bearer token presented"),
            Self::Token(t) => write!(f, "invalid token: {t}"),
            Self::KeysUnavailable { issuer, last_error } => {
                write!(f, "no verification keys available yet for issuer {issuer}")?;
                match last_error {
                    Some(e) => write!(f, " (last fetch: {e})"),
                    None => Ok(()),
                }
            }
            Self::Forbidden { reason } => write!(f, "forbidden: {reason}"),
            Self::BadRequest { reason } => write!(f, "bad request: {reason}"),
            Self::Config(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => {
                write!(f, "token is {len} bytes, over the {max} byte limit")
            }
            Self::WrongSegmentCount { found } => {
                write!(f, "token has {found} segments; a signed JWT has exactly 3")
            }
            Self::BadBase64 { segment } => write!(f, "{segment} is not canonical base64url"),
            Self::BadJson { segment, detail } => write!(f, "{segment} is not valid JSON: {detail}"),
            Self::DisallowedAlgorithm { alg } => write!(f, "algorithm {alg:?} is not allowed"),
            Self::ForbiddenHeader { name } => {
                write!(f, "header parameter {name:?} is not accepted")
            }
            Self::UnknownIssuer => f.write_str("issuer is not trusted"),
            Self::UnknownKey { kid: Some(k) } => write!(f, "no key with kid {k:?} for this issuer"),
            Self::UnknownKey { kid: None } => f.write_str("no key matches this token"),
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::MissingClaim { claim } => write!(f, "claim {claim:?} is required"),
            Self::ClaimType { claim } => write!(f, "claim {claim:?} has the wrong type"),
            Self::Expired { now, exp } => write!(f, "token expired at {exp} (now {now})"),
            Self::NotYetValid { now, nbf } => write!(f, "token not valid before {nbf} (now {now})"),
            Self::IssuedInFuture { now, iat } => {
                write!(f, "token issued in the future at {iat} (now {now})")
            }
            Self::LifetimeTooLong { lifetime, max } => {
                write!(f, "token lifetime {lifetime}s exceeds the {max}s maximum")
            }
            Self::AudienceMismatch => f.write_str("audience does not match"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for Error {}
impl std::error::Error for TokenError {}
impl std::error::Error for ConfigError {}

/// Truncates attacker-controlled strings before they reach a log (kid, alg).
pub(crate) fn truncate_for_log(s: &str) -> String {
    let mut out = String::new();
    push_for_log(&mut out, s);
    out
}

/// Appends `s` to `out` as [`truncate_for_log`] renders it, without a string of its own.
pub(crate) fn push_for_log(out: &mut String, s: &str) {
    const MAX: usize = 64;
    out.extend(s.chars().filter(|c| !c.is_control()).take(MAX));
    if s.chars().count() > MAX {
        out.push('…');
    }
}

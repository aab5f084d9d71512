//! caddy-iap core: every identity-critical step of the identity-aware proxy.
//!
//! Strict JWT parsing and verification, issuer key sets (OIDC discovery, JWKS refresh), claim
//! checks, claim-to-role mapping, permission checks, identity-assertion minting and the caches
//! around them. No FFI and no Caddy in here: the `caddy-iap-ffi` crate wraps this for Go.
//!
//! The public interface is: [`Config`] (what to enforce), [`Engine`] (built once per config,
//! shared by all threads), [`Request`] (one HTTP request's facts), [`Decision`] (allow or deny,
//! with identity, headers and reason) and [`Error`].

#![warn(missing_docs, clippy::exhaustive_enums, clippy::exhaustive_structs)]
#![forbid(unsafe_code, unused_must_use)]

mod alg;
mod assertion;
mod cache;
mod claims;
mod clock;
mod config;
mod counter;
mod engine;
mod error;
mod fetch;
mod json;
mod jwk;
mod jws;
mod keyset;
mod path;
mod permissions;
mod roles;
mod secret;

pub use alg::Alg;
pub use assertion::generate_signing_key;
pub use clock::{Clock, SystemClock};
pub use config::{
    AllowRule, AssertionConfig, CacheConfig, ClaimCondition, ClaimOp, Config, HeaderNames,
    IssuerConfig, KeySource, RoleRule,
};
pub use engine::{Decision, Engine, EngineStats, Identity, Request, TokenSource};
pub use error::{ConfigError, Denial, Error, ReasonCode, TokenError};
pub use fetch::{FetchError, HttpFetcher, KeyFetcher, check_url, provider_agent, tls_config};
pub use secret::read_secret;

/// Test-only knobs and internals exposed for integration tests, fuzzing and benchmarks.
/// Not part of the stable API.
#[doc(hidden)]
pub mod danger {
    pub use crate::json::{Json, JsonObject};
    pub use crate::jwk::{VerifyingKey, parse_jwks};
    pub use crate::jws::{CompactJws, parse_compact};
    pub use crate::keyset::parse_discovery;

    /// Mints an assertion without the assertion cache, for benchmarks. `None` when the engine
    /// has no assertion configured.
    pub fn mint_fresh_assertion(engine: &crate::Engine, subject: &str, now: u64) -> Option<usize> {
        engine.mint_fresh(subject, now).map(|t| t.len())
    }
}

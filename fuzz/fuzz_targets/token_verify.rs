//! Arbitrary bytes as the bearer token of an engine trusting the RS256, ES256 and EdDSA fixture
//! keys, at a fixed time.
//!
//! Properties:
//! - only the three tokens signed with the fixture keys (`fuzz/data/valid-*.jwt`) ever verify:
//!   anything else, including every mutation of them, is a 401 without an identity;
//! - those three are allowed (the harness itself is sound);
//! - the verified-token cache changes nothing: a second call and an engine without cache give
//!   the same outcome;
//! - a refusal never echoes the token.
#![no_main]

use std::sync::LazyLock;

use caddy_iap_core::Engine;
use caddy_iap_fuzz::{VALID_TOKENS, decide, engine, issuer, outcome};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn config(cache: usize) -> serde_json::Value {
    json!({
        "issuers": [issuer()],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "db-readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/items/*"]}],
        "cache": {"max_entries": cache},
    })
}

static CACHED: LazyLock<Engine> = LazyLock::new(|| engine(config(4096)).unwrap());
static UNCACHED: LazyLock<Engine> = LazyLock::new(|| engine(config(0)).unwrap());

fuzz_target!(|token: &[u8]| {
    let known = VALID_TOKENS.contains(&token);
    let d = decide(&UNCACHED, "/items/1", token);
    if known {
        assert!(d.allowed(), "a fixture token is refused: {}", d.reason);
    } else {
        assert!(
            !d.allowed() && d.identity.is_none(),
            "a token that no fixture key signed verified: {}",
            d.reason
        );
        assert_eq!(d.status(), 401, "{}", d.reason);
        assert!(d.www_authenticate.starts_with("Bearer "));
    }
    // Reasons are sentences and tokens never hold whitespace: a token with a space may be a
    // reason's own words (the fuzzer found one equal to the segment-count message).
    if let Ok(text) = std::str::from_utf8(token)
        && text.len() >= 32
        && !text.contains(char::is_whitespace)
    {
        assert!(!d.reason.contains(text), "the reason echoes the token");
    }
    let first = decide(&CACHED, "/items/1", token);
    let second = decide(&CACHED, "/items/1", token);
    assert_eq!(outcome(&first), outcome(&d));
    assert_eq!(outcome(&second), outcome(&d));
    assert_eq!(second.cache_hit, known, "only verified tokens are cached");
});

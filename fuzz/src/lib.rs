//! Shared fixtures of the fuzz targets: the fixed clock, the issuer and its key set, and the
//! tokens that are valid under them (written by `make_corpus.py`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use caddy_iap_core::{Clock, Config, Decision, Engine, HttpFetcher, ReasonCode, Request};
use serde_json::{Value, json};

/// The fixed time of every target (keep in sync with `make_corpus.py`).
pub const NOW: u64 = 1_800_000_000;
/// The one trusted issuer.
pub const ISS: &str = "https://idp.example.com/";
/// Its accepted audience.
pub const AUD: &str = "https://api.example.com";

/// The public halves of the RSA, P-256 and Ed25519 fixture keys (kids `rs`, `es`, `ed`).
pub const JWKS: &str = include_str!("../data/jwks.json");

/// The only tokens the targets' engine may ever accept: signed with the fixture keys.
pub const VALID_TOKENS: [&[u8]; 3] = [
    include_bytes!("../data/valid-rs256.jwt"),
    include_bytes!("../data/valid-es256.jwt"),
    include_bytes!("../data/valid-eddsa.jwt"),
];

/// A clock stuck at one time.
#[derive(Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

/// The issuer with the fixture key set inline; every algorithm the core supports.
pub fn issuer() -> Value {
    json!({"issuer": ISS, "audiences": [AUD], "keys": {"jwks_inline": JWKS}})
}

/// An engine at `NOW` for `config` (JSON in the shape of `caddy_iap_core::Config`).
pub fn engine(config: Value) -> Result<Engine, String> {
    let config: Config = serde_json::from_value(config).map_err(|e| e.to_string())?;
    Engine::with_parts(
        &config,
        Arc::new(FixedClock(NOW)),
        Arc::new(HttpFetcher::new()),
    )
    .map_err(|e| e.to_string())
}

/// `GET path` with `token`.
pub fn decide(engine: &Engine, path: &str, token: &[u8]) -> Decision {
    engine.decide(&Request::new("GET", "api.example.com", path, Some(token)))
}

/// What must not depend on the cache: allowed, status, reason code.
pub fn outcome(d: &Decision) -> (bool, u16, ReasonCode) {
    (d.allowed(), d.status(), d.reason_code())
}

/// The DER body of a PEM document.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("fixture PEM is base64")
}

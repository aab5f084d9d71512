//! Criterion benchmarks of the core paths, each next to the crypto library's (aws-lc-rs) own
//! verify cost for the same key, measured in the same run:
//! - cold validation (cache off) per algorithm vs the library's verify alone, both one-shot
//!   (`lib_verify`: key bytes in, as a caller holding a JWKS would call it) and with a key the
//!   library parsed beforehand (`lib_verify_parsed`: its floor, what the engine itself calls);
//! - a cache hit (the hot-token path);
//! - role mapping cost as the rule count grows 10 → 1,000 (cache off);
//! - assertion minting (distinct identities, so every call signs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use caddy_iap_core::{Config, Engine, HttpFetcher, Request};
use common::{KeyKind, ManualClock, Signer};
use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com/";

fn config(kind: KeyKind, cache: usize, rules: usize, assertion: bool) -> Config {
    let mut roles: Vec<Value> = (0..rules)
        .map(|i| json!({"role": format!("role{}", i % 50), "when": [{"claim": "groups", "op": "contains", "value": format!("group-{i}")}]}))
        .collect();
    roles.push(json!({"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "db-readers"}]}));
    let mut c = json!({
        "issuers": [{"issuer": ISS, "audiences": ["https://api.example.com"],
                     "keys": {"pem": [kind.public_pem()]}, "algorithms": [kind.alg()]}],
        "roles": roles,
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/items/*"]}],
        "cache": {"max_entries": cache},
    });
    if assertion {
        use base64::Engine as _;
        let der = caddy_iap_core::generate_signing_key(caddy_iap_core::Alg::ES256).unwrap();
        c["assertion"] = json!({"audience": "svc", "signing_keys": [base64::engine::general_purpose::STANDARD.encode(der)]});
    }
    serde_json::from_value(c).unwrap()
}

fn engine(c: &Config) -> Engine {
    Engine::with_parts(
        c,
        Arc::new(ManualClock::at(NOW)),
        Arc::new(HttpFetcher::new()),
    )
    .unwrap()
}

fn token(signer: &Signer, sub: &str) -> String {
    signer.sign(
        &signer.header("k1"),
        &json!({"iss": ISS, "sub": sub, "aud": "https://api.example.com", "iat": NOW - 5, "exp": NOW + 3600,
                "email": "alice@example.com", "groups": ["db-readers", "group-3", "other"], "scope": "openid read:items"}),
    )
}

fn decide(e: &Engine, token: &str) -> bool {
    e.decide(&Request::new(
        "GET",
        "api.example.com",
        "/items/1",
        Some(token.as_bytes()),
    ))
    .allowed()
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for kind in KeyKind::ALL {
        let signer = Signer::new(kind);
        let t = token(&signer, "alice");
        let cold = engine(&config(kind, 0, 10, false));
        assert!(decide(&cold, &t));
        g.bench_function(BenchmarkId::new("cold", kind.alg()), |b| {
            b.iter(|| decide(&cold, black_box(&t)))
        });

        // The crypto library alone, one-shot and with the key parsed beforehand.
        let (input, sig) = t.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let unparsed = raw_public_key(kind);
        assert!(unparsed.verify(input.as_bytes(), &sig).is_ok());
        g.bench_function(BenchmarkId::new("lib_verify", kind.alg()), |b| {
            b.iter(|| unparsed.verify(input.as_bytes(), black_box(&sig)).is_ok())
        });
        let parsed = unparsed.parse().unwrap();
        g.bench_function(BenchmarkId::new("lib_verify_parsed", kind.alg()), |b| {
            b.iter(|| parsed.verify_sig(input.as_bytes(), black_box(&sig)).is_ok())
        });
        // Both in one loop, for a profiler to weigh against each other in the same moments
        // (tests/bench/peers.py, cold_share): timed apart, they drift with the machine.
        g.bench_function(
            BenchmarkId::new("cold_beside_lib_verify_parsed", kind.alg()),
            |b| {
                b.iter(|| {
                    decide(&cold, black_box(&t))
                        && parsed.verify_sig(input.as_bytes(), black_box(&sig)).is_ok()
                })
            },
        );
    }
    let signer = Signer::new(KeyKind::Es256);
    let t = token(&signer, "alice");
    let hot = engine(&config(KeyKind::Es256, 1024, 10, false));
    assert!(decide(&hot, &t));
    g.bench_function("cache_hit", |b| b.iter(|| decide(&hot, black_box(&t))));
    let hot_assert = engine(&config(KeyKind::Es256, 1024, 10, true));
    assert!(decide(&hot_assert, &t));
    g.bench_function("cache_hit_with_assertion", |b| {
        b.iter(|| decide(&hot_assert, black_box(&t)))
    });
    g.finish();
}

fn role_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("roles_cold_es256");
    let signer = Signer::new(KeyKind::Es256);
    let t = token(&signer, "alice");
    for rules in [10, 100, 1000] {
        let e = engine(&config(KeyKind::Es256, 0, rules, false));
        assert!(decide(&e, &t));
        g.bench_function(BenchmarkId::from_parameter(rules), |b| {
            b.iter(|| decide(&e, black_box(&t)))
        });
    }
    g.finish();
}

fn minting(c: &mut Criterion) {
    let e = engine(&config(KeyKind::Es256, 1024, 10, true));
    let mut g = c.benchmark_group("assertion");
    g.bench_function("mint_es256_uncached", |b| {
        b.iter(|| caddy_iap_core::danger::mint_fresh_assertion(&e, black_box("alice"), NOW))
    });
    g.finish();
}

/// The fixture public key in the library's own encoding, for the raw-verify baselines.
fn raw_public_key(kind: KeyKind) -> aws_lc_rs::signature::UnparsedPublicKey<Vec<u8>> {
    use base64::Engine as _;
    let pem = kind.public_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    // SubjectPublicKeyInfo ends with the BIT STRING holding the key the library takes.
    let (alg, key): (
        &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        Vec<u8>,
    ) = match kind {
        KeyKind::Rs256 => (
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            spki[24..].to_vec(),
        ),
        KeyKind::Es256 => (
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            spki[spki.len() - 65..].to_vec(),
        ),
        KeyKind::EdDsa => (
            &aws_lc_rs::signature::ED25519,
            spki[spki.len() - 32..].to_vec(),
        ),
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(alg, key)
}

criterion_group!(benches, validation, role_rules, minting);
criterion_main!(benches);

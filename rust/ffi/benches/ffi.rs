//! The cost of one decision through the C ABI (decide + view + free) next to the same decision
//! made directly on the Rust engine, on a cached token so the crossing itself dominates.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::mem::MaybeUninit;
use std::ptr;

use caddy_iap::*;
use common::{KeyKind, Signer};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let iss = "https://idp.example.com/";
    let config = json!({
        "issuers": [{"issuer": iss, "audiences": ["api"], "keys": {"pem": [KeyKind::Es256.public_pem()]}}],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/items/*"]}],
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signer = Signer::new(KeyKind::Es256);
    let token = signer.sign(
        &signer.header("k"),
        &json!({"iss": iss, "sub": "alice", "aud": "api", "iat": now, "exp": now + 3600, "groups": ["readers"]}),
    );

    let json = config.to_string();
    let mut engine = ptr::null();
    let rc = iap_engine_new(
        json.as_ptr(),
        json.len(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
        &mut engine,
    );
    assert_eq!(rc, iap_result::Ok);
    let req = iap_request {
        method: iap_str::new(b"GET"),
        host: iap_str::new(b"api.example.com"),
        path: iap_str::new(b"/items/1"),
        token: iap_str::new(token.as_bytes()),
        session: false,
    };
    c.bench_function("ffi/decide_view_free_cached", |b| {
        b.iter(|| {
            let mut d = ptr::null_mut();
            let mut view = MaybeUninit::uninit();
            iap_engine_decide(engine, black_box(req), &mut d, view.as_mut_ptr());
            // SAFETY: written by iap_engine_decide with the decision.
            let allowed = unsafe { view.assume_init_ref() }.allowed;
            iap_decision_free(d);
            allowed
        })
    });

    let direct = caddy_iap_core::Engine::new(&serde_json::from_value(config).unwrap()).unwrap();
    let rreq =
        caddy_iap_core::Request::new("GET", "api.example.com", "/items/1", Some(token.as_bytes()));
    assert!(direct.decide(&rreq).allowed());
    c.bench_function("ffi/direct_rust_cached", |b| {
        b.iter(|| direct.decide(black_box(&rreq)).allowed())
    });
    iap_engine_free(engine);
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The Cosmos DB gateway's C ABI as C would call it: a request authorized and signed end to
//! end, refusals, NULL handling, and the account-document rewrite's buffer protocol.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use std::mem::MaybeUninit;
use std::ptr;

use caddy_iap::*;
use caddy_iap_cosmos::signing::MasterKey;
use common::{KeyKind, Signer};
use serde_json::json;

const ISS: &str = "https://idp.example.com/";
// A random test key, not an account's.
const KEY: &str =
    "q2Zu2m7dC8m2bYlq0oHn4k3p6Jw5sXr1TgEaVhUyNfQiLcKbOzPjRdWeMtAxS9G0F1H2I3J4K5L6M7N8O9P0Qw==";

fn engine() -> *const iap_engine {
    support::engine(&json!({
        "issuers": [{"issuer": ISS, "audiences": ["cosmos"], "keys": {"pem": [KeyKind::Es256.public_pem()]}}],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
    }))
}

fn gateway(
    engine: *const iap_engine,
    policy: &serde_json::Value,
) -> Result<*const iap_cosmos_gateway, String> {
    let json = policy.to_string();
    let mut err = vec![0u8; 512];
    let mut written = 0usize;
    let mut gw = ptr::null();
    let rc = iap_cosmos_gateway_new(
        engine,
        json.as_ptr(),
        json.len(),
        err.as_mut_ptr(),
        err.len(),
        &mut written,
        &mut gw,
    );
    if rc == iap_result::Ok {
        Ok(gw)
    } else {
        assert!(gw.is_null(), "out-parameter written only on success");
        Err(String::from_utf8(err[..written].to_vec()).unwrap())
    }
}

fn text(v: iap_str<'_>) -> String {
    // SAFETY: every view read here comes from a decision that is still alive.
    String::from_utf8(unsafe { v.as_bytes() }.to_vec()).unwrap()
}

fn authorize(
    gw: *const iap_cosmos_gateway,
    method: &str,
    path: &str,
    auth: &str,
) -> (iap_cosmos_decision_view<'static>, *mut iap_cosmos_decision) {
    let req = iap_cosmos_request {
        method: iap_str::new(method.as_bytes()),
        path: iap_str::new(path.as_bytes()),
        authorization: iap_str::new(auth.as_bytes()),
        is_query: iap_str::new(b""),
        content_type: iap_str::new(b""),
        is_upsert: iap_str::new(b""),
        is_batch: iap_str::new(b""),
        body: iap_str::new(b""),
    };
    let mut d = ptr::null_mut();
    let mut view = MaybeUninit::<iap_cosmos_decision_view<'static>>::uninit();
    assert_eq!(
        iap_cosmos_authorize(gw, req, &mut d, view.as_mut_ptr()),
        iap_result::Ok
    );
    // SAFETY: iap_cosmos_authorize wrote the whole view with the decision.
    let view = unsafe { view.assume_init() };
    // The same view iap_cosmos_decision_get gives later.
    let mut again = MaybeUninit::<iap_cosmos_decision_view<'static>>::uninit();
    iap_cosmos_decision_get(d, again.as_mut_ptr());
    // SAFETY: iap_cosmos_decision_get wrote the whole view for a non-NULL decision.
    let again = unsafe { again.assume_init() };
    assert_eq!(format!("{view:?}"), format!("{again:?}"));
    (view, d)
}

#[test]
fn a_request_is_authorized_and_signed_through_the_abi() {
    let dir = std::env::temp_dir().join(format!("iap-cosmos-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let engine = engine();
    let gw = gateway(engine, &json!({
        "grants": [{"role": "reader", "actions": ["data_reader"], "scopes": ["dbs/app/colls/orders"]}],
        "account_key_file": key_file,
    }))
    .unwrap();
    // The gateway holds its own engine reference.
    iap_engine_free(engine);

    let signer = Signer::new(KeyKind::Es256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = signer.sign(&signer.header("k"), &json!({"iss": ISS, "sub": "alice", "aud": "cosmos", "iat": now, "exp": now + 300, "groups": ["readers"]}));

    let (v, d) = authorize(
        gw,
        "GET",
        "/dbs/app/colls/orders/docs/o%201",
        &format!("type=aad&ver=1.0&sig={token}"),
    );
    assert!(v.allowed, "{}", text(v.log_reason));
    assert_eq!(v.status, 200);
    assert_eq!(text(v.subject), "alice");
    assert_eq!(text(v.operation), "items/read on dbs/app/colls/orders");
    let expected = MasterKey::from_base64(KEY).unwrap().authorization(
        "GET",
        "docs",
        "dbs/app/colls/orders/docs/o 1",
        &text(v.date),
    );
    assert_eq!(text(v.authorization), expected);
    assert!(!v.account_document && !v.query && !v.upsert && !v.batch);
    iap_cosmos_decision_free(d);

    let (v, d) = authorize(
        gw,
        "DELETE",
        "/dbs/app/colls/orders/docs/o1",
        &format!("Bearer {token}"),
    );
    assert!(!v.allowed);
    assert_eq!(v.status, 403);
    assert!(text(v.body).contains("\"Forbidden\""), "{}", text(v.body));
    assert!(
        text(v.authorization).is_empty(),
        "no signature for a refused request"
    );
    iap_cosmos_decision_free(d);

    let (v, d) = authorize(gw, "GET", "/dbs/app/colls/orders/docs/o1", "");
    assert_eq!(v.status, 401);
    iap_cosmos_decision_free(d);

    // NULLs are refused, not dereferenced.
    let mut out = ptr::null_mut();
    let empty = iap_cosmos_request {
        method: iap_str::new(b""),
        path: iap_str::new(b""),
        authorization: iap_str::new(b""),
        is_query: iap_str::new(b""),
        content_type: iap_str::new(b""),
        is_upsert: iap_str::new(b""),
        is_batch: iap_str::new(b""),
        body: iap_str::new(b""),
    };
    assert_eq!(
        iap_cosmos_authorize(ptr::null(), empty, &mut out, ptr::null_mut()),
        iap_result::NullParameter
    );
    assert!(out.is_null());
    iap_cosmos_decision_get(ptr::null(), ptr::null_mut());
    iap_cosmos_decision_free(ptr::null_mut());
    iap_cosmos_gateway_free(gw);
    iap_cosmos_gateway_free(ptr::null());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_configs_say_why_without_the_secret() {
    let engine = engine();
    let grants = json!([{"role": "reader", "actions": ["items/read"], "scopes": ["dbs/app"]}]);
    for (policy, want) in [
        (
            json!({"grants": grants}),
            "set account_key_env, account_key_file or entra",
        ),
        (
            json!({"grants": grants, "account_key_env": "IAP_TEST_SURELY_UNSET"}),
            "$IAP_TEST_SURELY_UNSET is not set",
        ),
        (
            json!({"grants": [{"role": "r", "actions": ["items/write"], "scopes": ["dbs/a"]}], "account_key_env": "X"}),
            "unknown Cosmos DB data action",
        ),
        (
            json!({"grants": [{"role": "r", "actions": ["items/read"], "scopes": ["colls/a"]}], "account_key_env": "X"}),
            "bad scope",
        ),
        (
            json!({"grants": grants, "entra": {"token_url": "http://login.example.com/token", "client_id": "c", "client_secret_env": "X"}}),
            "must be https",
        ),
    ] {
        let err = gateway(engine, &policy).unwrap_err();
        assert!(err.contains(want), "{err} lacks {want}");
    }
    iap_engine_free(engine);
}

#[test]
fn account_rewrite_asks_for_a_bigger_buffer() {
    let body = br#"{"writableLocations":[{"name":"a","databaseAccountEndpoint":"https://x:1/"}],"readableLocations":[]}"#;
    let url = "https://gateway.example.com:8443/";
    let mut written = 0usize;
    let mut small = [0u8; 8];
    let rc = iap_cosmos_rewrite_account(
        body.as_ptr(),
        body.len(),
        iap_str::new(url.as_bytes()),
        small.as_mut_ptr(),
        small.len(),
        &mut written,
    );
    assert_eq!(rc, iap_result::BufferTooSmall);
    let mut buf = vec![0u8; written];
    let rc = iap_cosmos_rewrite_account(
        body.as_ptr(),
        body.len(),
        iap_str::new(url.as_bytes()),
        buf.as_mut_ptr(),
        buf.len(),
        &mut written,
    );
    assert_eq!(rc, iap_result::Ok);
    let doc: serde_json::Value = serde_json::from_slice(&buf[..written]).unwrap();
    assert_eq!(doc["writableLocations"][0]["databaseAccountEndpoint"], url);
    let rc = iap_cosmos_rewrite_account(
        b"nope".as_ptr(),
        4,
        iap_str::new(url.as_bytes()),
        buf.as_mut_ptr(),
        buf.len(),
        &mut written,
    );
    assert_eq!(rc, iap_result::InvalidParameter);
}

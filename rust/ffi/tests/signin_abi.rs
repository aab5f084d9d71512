//! The browser sign-in's C ABI as the Go handler calls it, with no provider reachable: a
//! sign-in built and freed, a redirect with its login cookie, sessions absent and unusable,
//! a refused callback, sign-out, and a decision on a session's ID token. Run under valgrind by
//! tests/leakcheck.sh, these also prove every outcome handed out is freed.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use std::mem::MaybeUninit;
use std::ptr;

use caddy_iap::*;
use common::{KeyKind, Signer};
use serde_json::json;

const ISS: &str = "https://idp.example.com/";
const CLIENT: &str = "gateway";

fn engine() -> *const iap_engine {
    support::engine(&json!({
        "issuers": [{
            "issuer": ISS, "audiences": ["api"], "login_client_id": CLIENT,
            "keys": {"pem": [KeyKind::Es256.public_pem()]},
        }],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/*"]}],
    }))
}

fn config() -> String {
    let secret = std::env::temp_dir().join(format!("iap-ffi-secret-{}", std::process::id()));
    std::fs::write(&secret, "s3cret").unwrap();
    json!({
        "issuer": ISS, "client_id": CLIENT, "client_secret_file": secret,
        "keys": ["CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk="],
        // Nothing listens on port 9: provider calls fail fast.
        "endpoints": {
            "authorization_endpoint": "http://127.0.0.1:9/auth",
            "token_endpoint": "http://127.0.0.1:9/token",
            "end_session_endpoint": "http://127.0.0.1:9/logout",
        },
        "fetch_timeout_ms": 500,
    })
    .to_string()
}

fn text(v: iap_str<'_>) -> String {
    // SAFETY: every view read here comes from an outcome that is still alive.
    String::from_utf8(unsafe { v.as_bytes() }.to_vec()).unwrap()
}

fn view(out: *mut iap_signin_outcome) -> iap_signin_outcome_view<'static> {
    let mut v = MaybeUninit::<iap_signin_outcome_view<'static>>::uninit();
    iap_signin_outcome_get(out, v.as_mut_ptr());
    // SAFETY: iap_signin_outcome_get wrote the whole view for a non-NULL outcome.
    unsafe { v.assume_init() }
}

fn cookies(v: &iap_signin_outcome_view<'_>) -> Vec<String> {
    // SAFETY: the view's array is alive with its outcome.
    let all = unsafe { std::slice::from_raw_parts(v.set_cookies, v.set_cookies_len) };
    all.iter().map(|c| text(*c)).collect()
}

fn s(text: &str) -> iap_str<'_> {
    iap_str::new(text.as_bytes())
}

#[test]
fn sign_in_calls_without_a_provider() {
    let engine = engine();
    let json = config();
    let mut signin = ptr::null();
    let rc = iap_signin_new(
        engine,
        json.as_ptr(),
        json.len(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
        &mut signin,
    );
    assert_eq!(rc, iap_result::Ok);

    // Begin: a redirect to the provider with one login cookie.
    let mut out = ptr::null_mut();
    assert_eq!(
        iap_signin_begin(
            signin,
            s("/orders"),
            s("https://app/.iap/callback"),
            s(""),
            &mut out
        ),
        iap_result::Ok
    );
    let v = view(out);
    assert_eq!(v.kind, iap_signin_kind::Redirect);
    let location = text(v.location);
    assert!(location.starts_with("http://127.0.0.1:9/auth?response_type=code&client_id=gateway"));
    let set = cookies(&v);
    assert_eq!(set.len(), 1);
    let login_cookie = set[0].split(';').next().unwrap().to_owned();
    let state = location
        .split('&')
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_owned();
    iap_signin_outcome_free(out);

    // The provider's refusal at the callback: an error page with a retry link.
    let query = format!("error=access_denied&state={state}");
    assert_eq!(
        iap_signin_callback(
            signin,
            s(&query),
            s(&login_cookie),
            s("https://app/.iap/callback"),
            &mut out
        ),
        iap_result::Ok
    );
    let v = view(out);
    assert_eq!(
        (v.kind, v.status, text(v.location).as_str()),
        (iap_signin_kind::Error, 403, "/orders")
    );
    assert_eq!(
        text(v.message),
        "The identity provider did not sign you in."
    );
    assert_eq!(cookies(&v).len(), 1, "the spent login cookie is cleared");
    iap_signin_outcome_free(out);

    // No session, then an unusable one.
    assert_eq!(
        iap_signin_session(signin, s("a=b"), &mut out),
        iap_result::Ok
    );
    assert_eq!(view(out).kind, iap_signin_kind::None);
    iap_signin_outcome_free(out);
    assert_eq!(
        iap_signin_session(signin, s("__Host-caddy-iap=forged"), &mut out),
        iap_result::Ok
    );
    let v = view(out);
    assert_eq!(v.kind, iap_signin_kind::Ended);
    assert_eq!(text(v.reason), "session cookie: Invalid");
    assert_eq!(cookies(&v).len(), 1);
    iap_signin_outcome_free(out);

    // Sign out: every chunk cleared, the provider's logout.
    assert_eq!(
        iap_signin_sign_out(signin, s(""), s("https://app/.iap/signed_out"), &mut out),
        iap_result::Ok
    );
    let v = view(out);
    assert!(text(v.location).starts_with("http://127.0.0.1:9/logout?client_id=gateway"));
    assert_eq!(cookies(&v).len(), 4);
    iap_signin_outcome_free(out);

    // Not UTF-8, NULLs.
    assert_eq!(
        iap_signin_session(signin, iap_str::new(&[0xff]), &mut out),
        iap_result::InvalidParameter
    );
    assert_eq!(
        iap_signin_session(ptr::null(), s(""), &mut out),
        iap_result::NullParameter
    );
    assert_eq!(
        iap_signin_session(signin, s(""), ptr::null_mut()),
        iap_result::NullParameter
    );
    iap_signin_outcome_get(ptr::null(), ptr::null_mut());
    iap_signin_outcome_free(ptr::null_mut());

    iap_signin_free(signin);
    iap_engine_free(engine);
}

#[test]
fn a_session_id_token_is_decided_only_as_a_session() {
    let engine = engine();
    let signer = Signer::new(KeyKind::Es256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id_token = signer.sign(
        &signer.header("k"),
        &json!({"iss": ISS, "sub": "alice", "aud": CLIENT, "iat": now, "exp": now + 300, "groups": ["readers"]}),
    );
    for (session, status) in [(true, 200), (false, 401)] {
        let req = iap_request {
            method: s("GET"),
            host: s("app"),
            path: s("/x"),
            token: s(&id_token),
            session,
        };
        let mut decision = ptr::null_mut();
        let mut v = MaybeUninit::<iap_decision_view<'_>>::uninit();
        assert_eq!(
            iap_engine_decide(engine, req, &mut decision, v.as_mut_ptr()),
            iap_result::Ok
        );
        // SAFETY: iap_engine_decide wrote the whole view with the decision.
        let v = unsafe { v.assume_init() };
        assert_eq!(v.status, status, "session = {session}");
        iap_decision_free(decision);
    }
    iap_engine_free(engine);
}

#[test]
fn bad_configs_say_why() {
    let engine = engine();
    let mut buf = [0u8; 256];
    let mut written = 0usize;
    let mut signin = ptr::null();
    let json = json!({"issuer": ISS, "client_id": CLIENT, "client_secret_env": "IAP_SURELY_UNSET", "keys": []}).to_string();
    let rc = iap_signin_new(
        engine,
        json.as_ptr(),
        json.len(),
        buf.as_mut_ptr(),
        buf.len(),
        &mut written,
        &mut signin,
    );
    assert_eq!(rc, iap_result::InvalidConfig);
    assert!(signin.is_null());
    assert_eq!(
        std::str::from_utf8(&buf[..written]).unwrap(),
        "login: client_secret: $IAP_SURELY_UNSET is not set"
    );
    iap_engine_free(engine);
}

//! The C ABI exercised as C would call it: ownership, NULL handling, error reporting, and a
//! request decided end to end through `iap_engine_decide` and `iap_engine_decide_into`.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use std::mem::MaybeUninit;
use std::ptr;

use caddy_iap::*;
use common::{KeyKind, Signer};
use serde_json::json;
use support::new_engine;

const ISS: &str = "https://idp.example.com/";

fn config() -> String {
    json!({
        "issuers": [{"issuer": ISS, "audiences": ["api"], "keys": {"pem": [KeyKind::Es256.public_pem()]}}],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/items/*"]}],
    })
    .to_string()
}

/// Copies a borrowed view out, as the Go side does.
fn text(v: iap_str<'_>) -> String {
    // SAFETY: every view read here comes from a decision that is still alive.
    String::from_utf8(unsafe { v.as_bytes() }.to_vec()).unwrap()
}

fn decide(
    engine: *const iap_engine,
    method: &str,
    path: &str,
    token: &str,
) -> (iap_decision_view<'static>, *mut iap_decision) {
    let req = iap_request {
        method: iap_str::new(method.as_bytes()),
        host: iap_str::new(b"api.example.com"),
        path: iap_str::new(path.as_bytes()),
        token: iap_str::new(token.as_bytes()),
        session: false,
    };
    let mut decision = ptr::null_mut();
    let mut view = MaybeUninit::<iap_decision_view<'static>>::uninit();
    assert_eq!(
        iap_engine_decide(engine, req, &mut decision, view.as_mut_ptr()),
        iap_result::Ok
    );
    // SAFETY: iap_engine_decide wrote the whole view with the decision.
    let view = unsafe { view.assume_init() };
    // The view the decide call wrote is the one iap_decision_get gives later.
    let mut again = MaybeUninit::<iap_decision_view<'static>>::uninit();
    iap_decision_get(decision, again.as_mut_ptr());
    // SAFETY: iap_decision_get wrote the whole view for a non-NULL decision.
    let again = unsafe { again.assume_init() };
    assert_eq!(format!("{view:?}"), format!("{again:?}"));
    (view, decision)
}

/// A reader's token for alice, valid for 300 s from now (also returned), with `extra` claims.
fn alice_token(extra: serde_json::Value) -> (String, u64) {
    let signer = Signer::new(KeyKind::Es256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({"iss": ISS, "sub": "alice", "aud": "api", "iat": now, "exp": now + 300,
                            "groups": ["readers"]});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    (signer.sign(&signer.header("k"), &claims), now)
}

#[test]
fn allow_and_deny_through_the_abi() {
    let engine = new_engine(&config()).unwrap();
    let (token, _) = alice_token(json!({}));

    let (view, d) = decide(engine, "GET", "/items/1", &token);
    assert!(view.allowed);
    assert_eq!(view.status, 200);
    assert_eq!(text(view.subject), "alice");
    assert_eq!(text(view.alg), "ES256");
    assert!(view.www_authenticate.data.is_null() && view.email.data.is_null());
    // SAFETY: the arrays are valid until iap_decision_free below.
    let roles = unsafe { std::slice::from_raw_parts(view.roles, view.roles_len) };
    assert_eq!(
        roles.iter().map(|r| text(*r)).collect::<Vec<_>>(),
        ["reader"]
    );
    // SAFETY: as above.
    let strip = unsafe { std::slice::from_raw_parts(view.strip_headers, view.strip_headers_len) };
    assert_eq!(
        strip.iter().map(|r| text(*r)).collect::<Vec<_>>(),
        [
            "X-IAP-User",
            "X-IAP-Email",
            "X-IAP-Roles",
            "X-IAP-Assertion"
        ],
        "the assertion header is stripped even with assertions off"
    );
    iap_decision_free(d);

    let (view, d) = decide(engine, "POST", "/items/1", &token);
    assert_eq!(
        (view.allowed, view.status, text(view.reason_name)),
        (false, 403, "forbidden".into())
    );
    iap_decision_free(d);

    let (view, d) = decide(engine, "GET", "/items/1", "");
    assert_eq!(
        (view.status, text(view.reason_name)),
        (401, "missing_token".into())
    );
    assert_eq!(text(view.www_authenticate), r#"Bearer realm="caddy-iap""#);
    // Empty views lend NULL, not Rust's dangling non-zero address for an empty slice: Go types
    // these fields as pointers and stops on a small non-zero one found on a stack it moves.
    for empty in [
        view.subject,
        view.email,
        view.name,
        view.issuer,
        view.kid,
        view.jti,
    ] {
        assert!(empty.len == 0 && empty.data.is_null(), "{empty:?}");
    }
    assert!(view.roles.is_null() && view.set_headers.is_null());
    // The engine may be released before a decision: the decision keeps what it borrows alive.
    iap_engine_free(engine);
    assert_eq!(view.strip_headers_len, 4);
    iap_decision_free(d);
}

/// Reads a record's buffer back into its strings, by the layout `iap_decision_record` documents.
fn record_strings(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_ne_bytes(len.try_into().unwrap()) as usize;
        out.push(String::from_utf8(tail[..len].to_vec()).unwrap());
        rest = &tail[len..];
    }
    out
}

fn decide_into(
    engine: *const iap_engine,
    token: &str,
    buf: &mut [u8],
) -> (iap_decision_record, *mut iap_decision) {
    let req = iap_request {
        method: iap_str::new(b"GET"),
        host: iap_str::new(b"api.example.com"),
        path: iap_str::new(b"/items/1"),
        token: iap_str::new(token.as_bytes()),
        session: false,
    };
    let mut record = iap_decision_record::default();
    let mut boxed = ptr::null_mut();
    let data = if buf.is_empty() {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    assert_eq!(
        iap_engine_decide_into(engine, req, data, buf.len(), &mut record, &mut boxed),
        iap_result::Ok
    );
    (record, boxed)
}

#[test]
fn decide_into_copies_the_decision_or_hands_it_over_boxed() {
    let engine = new_engine(&config()).unwrap();
    let (token, now) = alice_token(json!({"jti": "j1"}));

    let mut buf = [0u8; 1024];
    let (record, boxed) = decide_into(engine, &token, &mut buf);
    assert!(boxed.is_null(), "it fit: nothing to free");
    assert_eq!(
        (
            record.allowed,
            record.status,
            record.reason_code,
            record.expires_at
        ),
        (true, 200, 0, now + 300)
    );
    assert_eq!((record.roles_len, record.set_headers_len), (1, 2));
    let strings = record_strings(&buf[..record.len]);
    let fixed = [
        "allowed", "allowed", "", "alice", "", "", ISS, "k", "ES256", "j1",
    ];
    assert_eq!(strings[..10], fixed);
    assert_eq!(
        strings[10..],
        ["reader", "X-IAP-User", "alice", "X-IAP-Roles", "reader"]
    );
    assert!(
        buf[record.len..].iter().all(|&b| b == 0),
        "nothing past len"
    );

    // The same decision through the view, for the fields both carry.
    let (view, d) = decide(engine, "GET", "/items/1", &token);
    assert_eq!(
        (
            text(view.subject),
            text(view.issuer),
            text(view.jti),
            view.expires_at
        ),
        ("alice".into(), ISS.into(), "j1".into(), record.expires_at)
    );
    iap_decision_free(d);

    // Too small, or no buffer at all: the size needed, nothing written, the decision boxed.
    for size in [0, 8, record.len - 1] {
        let mut small = vec![0u8; size];
        let (short, boxed) = decide_into(engine, &token, &mut small);
        assert_eq!(short.len, record.len);
        assert!(small.iter().all(|&b| b == 0));
        assert!(!boxed.is_null());
        let mut view = MaybeUninit::<iap_decision_view<'static>>::uninit();
        iap_decision_get(boxed, view.as_mut_ptr());
        // SAFETY: iap_decision_get wrote the whole view for a non-NULL decision.
        let view = unsafe { view.assume_init() };
        assert_eq!((view.allowed, text(view.subject)), (true, "alice".into()));
        // Copied out into a buffer of the size asked for, it reads as the fitting call's did.
        let mut exact = vec![0u8; short.len];
        let mut copied = iap_decision_record::default();
        assert_eq!(
            iap_decision_copy(boxed, exact.as_mut_ptr(), exact.len(), &mut copied),
            iap_result::Ok
        );
        assert_eq!(
            format!("{copied:?}"),
            format!("{short:?}"),
            "the record of the call that boxed it"
        );
        assert_eq!(record_strings(&exact), strings);
        assert_eq!(
            iap_decision_copy(boxed, exact.as_mut_ptr(), exact.len(), ptr::null_mut()),
            iap_result::NullParameter
        );
        iap_decision_free(boxed);
    }
    assert_eq!(
        iap_decision_copy(
            ptr::null(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut iap_decision_record::default()
        ),
        iap_result::NullParameter
    );

    // A denial fits in a few bytes: its reason, a challenge, no identity.
    let (record, boxed) = decide_into(engine, "", &mut buf);
    assert!(boxed.is_null());
    assert_eq!(
        (record.allowed, record.status, record.set_headers_len),
        (false, 401, 0)
    );
    let strings = record_strings(&buf[..record.len]);
    assert_eq!(strings[0], "missing_token");
    assert_eq!(strings[2], r#"Bearer realm="caddy-iap""#);

    let req = iap_request {
        method: iap_str::new(b"GET"),
        host: iap_str::new(b"h"),
        path: iap_str::new(b"/"),
        token: iap_str::new(b""),
        session: false,
    };
    let (mut record, mut boxed) = (iap_decision_record::default(), ptr::null_mut());
    let null_cases: [(*const iap_engine, *mut u8, usize, bool, bool); 4] = [
        (ptr::null(), buf.as_mut_ptr(), buf.len(), true, true),
        (engine, ptr::null_mut(), 16, true, true),
        (engine, buf.as_mut_ptr(), buf.len(), false, true),
        (engine, buf.as_mut_ptr(), buf.len(), true, false),
    ];
    for (e, data, len, with_record, with_boxed) in null_cases {
        let rec: *mut iap_decision_record = if with_record {
            &mut record
        } else {
            ptr::null_mut()
        };
        let out: *mut *mut iap_decision = if with_boxed {
            &mut boxed
        } else {
            ptr::null_mut()
        };
        assert_eq!(
            iap_engine_decide_into(e, req, data, len, rec, out),
            iap_result::NullParameter
        );
    }
    assert!(boxed.is_null());
    iap_engine_free(engine);
}

#[test]
fn bad_config_reports_where_and_writes_no_engine() {
    let (rc, msg) = new_engine(r#"{"issuers":[]}"#).unwrap_err();
    assert_eq!(rc, iap_result::InvalidConfig);
    assert!(msg.contains("issuers"), "{msg}");

    let (rc, msg) = new_engine("{not json").unwrap_err();
    assert_eq!(rc, iap_result::InvalidConfig);
    assert!(msg.starts_with("config:"), "{msg}");

    // A message longer than the buffer is cut at a character boundary.
    let mut err = [0u8; 8];
    let mut written = 0;
    let mut engine = ptr::null();
    let json = r#"{"issuers":[]}"#;
    let rc = iap_engine_new(
        json.as_ptr(),
        json.len(),
        err.as_mut_ptr(),
        err.len(),
        &mut written,
        &mut engine,
    );
    assert_eq!((rc, written), (iap_result::InvalidConfig, 8));
}

#[test]
fn null_arguments_are_refused_not_dereferenced() {
    let mut engine = ptr::null();
    assert_eq!(
        iap_engine_new(
            ptr::null(),
            5,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
            &mut engine
        ),
        iap_result::NullParameter
    );
    let mut decision = ptr::null_mut();
    let empty = iap_request {
        method: iap_str::new(b""),
        host: iap_str::new(b""),
        path: iap_str::new(b""),
        token: iap_str::new(b""),
        session: false,
    };
    assert_eq!(
        iap_engine_decide(ptr::null(), empty, &mut decision, ptr::null_mut()),
        iap_result::NullParameter
    );
    assert!(decision.is_null());
    iap_engine_free(ptr::null());
    iap_decision_free(ptr::null_mut());
    iap_decision_get(ptr::null(), ptr::null_mut());
    iap_engine_stats_get(ptr::null(), ptr::null_mut());

    let engine = new_engine(&config()).unwrap();
    let bad = iap_request {
        method: iap_str::new(b"GET"),
        host: iap_str::new(b"h"),
        path: iap_str::new(&[0xff, 0xfe]),
        token: iap_str::new(b""),
        session: false,
    };
    assert_eq!(
        iap_engine_decide(engine, bad, &mut decision, ptr::null_mut()),
        iap_result::InvalidParameter
    );
    assert!(decision.is_null());
    iap_engine_free(engine);
}

#[test]
fn signing_keys_and_version() {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for alg in ["ES256", "EdDSA"] {
        assert_eq!(
            iap_generate_signing_key(alg.as_ptr(), alg.len(), buf.as_mut_ptr(), buf.len(), &mut n),
            iap_result::Ok
        );
        assert!(n > 40 && n < 256);
    }
    let alg = "HS256";
    assert_eq!(
        iap_generate_signing_key(alg.as_ptr(), alg.len(), buf.as_mut_ptr(), buf.len(), &mut n),
        iap_result::InvalidParameter
    );
    let alg = "ES256";
    assert_eq!(
        iap_generate_signing_key(alg.as_ptr(), alg.len(), buf.as_mut_ptr(), 10, &mut n),
        iap_result::BufferTooSmall
    );

    // SAFETY: iap_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(iap_version()) };
    assert_eq!(
        v.to_str().unwrap(),
        concat!("caddy-iap/", env!("CARGO_PKG_VERSION"))
    );
}

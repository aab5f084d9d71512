//! The PostgreSQL gateway's C ABI as the Go front calls it, without a database: a gateway
//! built and freed, logins refused before any connection (bad token, no grant), a sweep that
//! cannot connect reporting its error, stats, and NULL handling. Run under valgrind by
//! tests/leakcheck.sh, these also prove every object handed out is freed.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use std::mem::MaybeUninit;
use std::ptr;

use caddy_iap::*;
use common::{KeyKind, Signer};
use serde_json::json;

const ISS: &str = "https://idp.example.com/";

fn engine() -> *const iap_engine {
    support::engine(&json!({
        "issuers": [{"issuer": ISS, "audiences": ["db"], "keys": {"pem": [KeyKind::Es256.public_pem()]}}],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
    }))
}

fn text(v: iap_str<'_>) -> String {
    // SAFETY: every view read here comes from an object that is still alive.
    String::from_utf8(unsafe { v.as_bytes() }.to_vec()).unwrap()
}

fn login(
    gw: *const iap_pg_gateway,
    token: &str,
) -> (iap_pg_login_view<'static>, *mut iap_pg_login) {
    let req = iap_pg_login_request {
        token: iap_str::new(token.as_bytes()),
        user: iap_str::new(b""),
        database: iap_str::new(b"app"),
        fresh: false,
        session: false,
    };
    let mut out = ptr::null_mut();
    assert_eq!(iap_pg_gateway_login(gw, req, &mut out), iap_result::Ok);
    let mut view = MaybeUninit::<iap_pg_login_view<'static>>::uninit();
    iap_pg_login_get(out, view.as_mut_ptr());
    // SAFETY: iap_pg_login_get wrote the whole view for a non-NULL login.
    (unsafe { view.assume_init() }, out)
}

#[test]
fn refusals_sweeps_and_stats_without_a_database() {
    let engine = engine();
    // A port nothing listens on: every database round trip fails fast.
    let policy = json!({
        "admin_dsn": "host=127.0.0.1 port=1 user=iap_admin dbname=app sslmode=disable connect_timeout=2",
        "admin_password_env": "PATH",
        "grants": {"writer": ["app_writer"]},
    })
    .to_string();
    let mut gw = ptr::null();
    let rc = iap_pg_gateway_new(
        engine,
        policy.as_ptr(),
        policy.len(),
        ptr::null_mut(),
        0,
        ptr::null_mut(),
        &mut gw,
    );
    assert_eq!(rc, iap_result::Ok);
    iap_engine_free(engine); // the gateway keeps its own reference

    let (v, l) = login(gw, "not-a-token");
    assert!(!v.ok);
    assert_eq!(text(v.sqlstate), "28P01");
    assert!(text(v.password).is_empty());
    iap_pg_login_free(l);

    // A valid token whose roles have no grant: refused before any connection.
    let signer = Signer::new(KeyKind::Es256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = signer.sign(&signer.header("k"), &json!({"iss": ISS, "sub": "alice", "aud": "db", "iat": now, "exp": now + 300, "groups": ["readers"]}));
    let (v, l) = login(gw, &token);
    assert!(!v.ok);
    assert_eq!(text(v.sqlstate), "28000");
    assert_eq!(text(v.subject), "alice");
    // SAFETY: valid until iap_pg_login_free below.
    let roles = unsafe { std::slice::from_raw_parts(v.roles, v.roles_len) };
    assert_eq!(
        roles.iter().map(|r| text(*r)).collect::<Vec<_>>(),
        ["reader"]
    );
    iap_pg_login_free(l);

    let mut sweep = ptr::null_mut();
    assert_eq!(iap_pg_gateway_sweep(gw, &mut sweep), iap_result::Ok);
    let mut sv = MaybeUninit::<iap_pg_sweep_view<'static>>::uninit();
    iap_pg_sweep_get(sweep, sv.as_mut_ptr());
    // SAFETY: written for a non-NULL sweep.
    let sv = unsafe { sv.assume_init() };
    assert!(
        !text(sv.error).is_empty(),
        "a sweep that cannot connect says why"
    );
    assert_eq!(sv.deactivated_len + sv.dropped_len, 0);
    iap_pg_sweep_free(sweep);

    let mut stats = MaybeUninit::<iap_pg_stats>::uninit();
    iap_pg_gateway_stats(gw, stats.as_mut_ptr());
    // SAFETY: written for a non-NULL gateway.
    let stats = unsafe { stats.assume_init() };
    assert_eq!(stats.created + stats.reused, 0);

    // NULLs are refused or ignored, never dereferenced.
    let mut out = ptr::null_mut();
    let empty = iap_pg_login_request {
        token: iap_str::new(b""),
        user: iap_str::new(b""),
        database: iap_str::new(b""),
        fresh: false,
        session: false,
    };
    assert_eq!(
        iap_pg_gateway_login(ptr::null(), empty, &mut out),
        iap_result::NullParameter
    );
    assert_eq!(
        iap_pg_gateway_sweep(ptr::null(), &mut sweep),
        iap_result::NullParameter
    );
    iap_pg_login_get(ptr::null(), ptr::null_mut());
    iap_pg_sweep_get(ptr::null(), ptr::null_mut());
    iap_pg_login_free(ptr::null_mut());
    iap_pg_sweep_free(ptr::null_mut());
    iap_pg_gateway_stats(ptr::null(), ptr::null_mut());
    iap_pg_gateway_free(gw);
    iap_pg_gateway_free(ptr::null());
}

#[test]
fn bad_policy_is_reported_and_writes_no_gateway() {
    let engine = engine();
    let policy =
        br#"{"admin_dsn": "host=db.example.com user=a password=hunter2", "grants": {"r": ["g"]}}"#;
    let mut err = vec![0u8; 512];
    let mut written = 0usize;
    let mut gw = ptr::null();
    let rc = iap_pg_gateway_new(
        engine,
        policy.as_ptr(),
        policy.len(),
        err.as_mut_ptr(),
        err.len(),
        &mut written,
        &mut gw,
    );
    assert_eq!(rc, iap_result::InvalidConfig);
    assert!(gw.is_null());
    let msg = String::from_utf8(err[..written].to_vec()).unwrap();
    assert!(msg.contains("password"), "{msg}");
    assert!(
        !msg.contains("hunter2"),
        "the error echoed the password: {msg}"
    );
    iap_engine_free(engine);
}

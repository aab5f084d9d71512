//! The sign-in's own checks, with a real engine and ES256 ID tokens signed here. The provider's
//! endpoints point at a closed port: calls that reach it fail, which is what these tests want;
//! the full flow against a real provider is in tests/e2e/test_browser.py.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caddy_iap_core::{Clock, Config, Engine, HttpFetcher, Request};
use serde_json::{Value, json};

use super::*;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";
const CLIENT: &str = "gateway";
const CALLBACK: &str = "https://app.example.com/.iap/callback";
const NO_COOKIES: &[&str] = &[];

#[derive(Debug)]
struct Fixed;
impl Clock for Fixed {
    fn now(&self) -> u64 {
        NOW
    }
}

struct Idp {
    key: EcdsaKeyPair,
}

impl Idp {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        Self { key }
    }

    fn jwks(&self) -> String {
        let public = self.key.public_key().as_ref();
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..]),
        }]})
        .to_string()
    }

    fn id_token(&self, extra: Value) -> String {
        let mut claims = json!({
            "iss": ISS, "sub": "alice", "aud": CLIENT, "iat": NOW - 5, "exp": NOW + 600,
            "nonce": "n", "email": "alice@example.com", "email_verified": true,
            "groups": ["readers"],
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn engine(idp: &Idp) -> Engine {
    let config: Config = serde_json::from_value(json!({
        "issuers": [{
            "issuer": ISS, "audiences": ["https://api.example.com"],
            "keys": {"jwks_inline": idp.jwks()}, "login_client_id": CLIENT,
        }],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/*"]}],
    }))
    .unwrap();
    Engine::with_parts(&config, Arc::new(Fixed), Arc::new(HttpFetcher::new())).unwrap()
}

fn signin() -> SignIn {
    signin_with(json!({}))
}

/// A client secret file, shared by every test of this process.
fn secret_file() -> String {
    static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("iap-browser-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        path.to_str().unwrap().to_owned()
    })
    .clone()
}

fn signin_with(extra: Value) -> SignIn {
    let mut config = json!({
        "issuer": ISS, "client_id": CLIENT, "client_secret_file": secret_file(),
        "keys": [URL_SAFE_NO_PAD.encode([9u8; 32])],
        // Nothing listens on port 9: every call to the provider fails fast.
        "endpoints": {
            "authorization_endpoint": "http://127.0.0.1:9/auth",
            "token_endpoint": "http://127.0.0.1:9/token",
            "end_session_endpoint": "http://127.0.0.1:9/logout",
        },
        "fetch_timeout_ms": 500,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    SignIn::new(serde_json::from_value(config).unwrap()).unwrap()
}

/// The `name=value` of a `Set-Cookie`, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn query_param<'a>(url: &'a str, name: &str) -> &'a str {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
}

/// A sealed session for `id_token` as the browser would hold it.
fn session_cookies(s: &SignIn, session: &Session) -> Vec<String> {
    s.seal_session(session, session.seen_at, &[] as &[&str])
        .unwrap()
        .iter()
        .map(|c| cookie_pair(c))
        .collect()
}

fn session(id_token: String) -> Session {
    Session {
        iss: ISS.into(),
        sub: "alice".into(),
        created_at: NOW - 100,
        seen_at: NOW - 10,
        id_token,
        id_expires_at: NOW + 600,
        refresh_token: None,
    }
}

#[test]
fn begin_sends_pkce_state_and_nonce_and_a_login_cookie_per_state() {
    let s = signin();
    let r = s.begin("/orders?id=1", CALLBACK, NO_COOKIES, NOW).unwrap();
    assert!(
        r.location
            .starts_with("http://127.0.0.1:9/auth?response_type=code&client_id=gateway")
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert_eq!(query_param(&r.location, p).len(), 43, "{p}");
    }
    assert_eq!(query_param(&r.location, "code_challenge_method"), "S256");
    let state = query_param(&r.location, "state");
    assert_eq!(r.set_cookies.len(), 1);
    assert!(r.set_cookies[0].starts_with(&format!("__Host-caddy-iap-login-{}=", &state[..8])));
    assert!(r.set_cookies[0].ends_with("; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"));
    // The verifier stays in the sealed cookie; only its hash is in the URL.
    let other = s.begin("/", CALLBACK, NO_COOKIES, NOW).unwrap();
    assert_ne!(query_param(&other.location, "state"), state);
}

#[test]
fn callbacks_that_cannot_be_trusted_are_refused_with_a_retry_link() {
    let (s, idp) = (signin(), Idp::new());
    let e = engine(&idp);
    let r = s.begin("/orders", CALLBACK, NO_COOKIES, NOW).unwrap();
    let state = query_param(&r.location, "state").to_owned();
    let cookie = [cookie_pair(&r.set_cookies[0])];
    let call = |query: &str, cookies: &[String], now: u64| {
        s.callback(&e, query, cookies, CALLBACK, now).unwrap_err()
    };

    let no_cookie = call(&format!("code=c&state={state}"), &[], NOW);
    assert_eq!((no_cookie.status, no_cookie.message), (400, NO_LOGIN));
    assert_eq!(no_cookie.retry, "/");

    let other_state = format!("{}x", &state[..42]);
    let forged_cookie = [format!("__Host-caddy-iap-login-{}=x", &state[..8])];
    assert_eq!(
        call(&format!("code=c&state={state}"), &forged_cookie, NOW).message,
        NO_LOGIN
    );
    let mismatch = call(&format!("code=c&state={other_state}"), &cookie, NOW);
    assert_eq!(
        (mismatch.message, mismatch.retry.as_str()),
        (NO_LOGIN, "/orders")
    );

    let late = call(&format!("code=c&state={state}"), &cookie, NOW + 601);
    assert_eq!(late.message, EXPIRED);

    let refused = call(&format!("error=access_denied&state={state}"), &cookie, NOW);
    assert_eq!((refused.status, refused.message), (403, PROVIDER_REFUSED));
    assert_eq!(refused.reason, "the provider answered error=access_denied");
    // The spent login cookie is cleared.
    assert_eq!(
        refused.set_cookies,
        [format!(
            "__Host-caddy-iap-login-{}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax",
            &state[..8]
        )]
    );

    // Only a state shaped like ours names a cookie.
    for bad in [
        "code=%zz",
        "code=c",
        "code=c&state=short",
        "code=c&state=a%3Bb%3D%0D%0Axxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let e = call(bad, &cookie, NOW);
        assert_eq!((e.message, e.set_cookies.len()), (BAD_CALLBACK, 0), "{bad}");
    }

    // Neither the provider's refusal nor a callback without a code spends the state; the
    // first use with a code reaches the (unreachable) provider; its replay does not get that far.
    assert_eq!(
        call(&format!("state={state}"), &cookie, NOW).message,
        BAD_CALLBACK
    );
    let first = call(&format!("code=c&state={state}"), &cookie, NOW);
    assert_eq!((first.status, first.message), (502, PROVIDER_DOWN));
    let replay = call(&format!("code=c&state={state}"), &cookie, NOW);
    assert_eq!(replay.message, REPLAYED);
}

#[test]
fn the_return_path_is_same_site_only() {
    let (s, idp) = (signin(), Idp::new());
    let e = engine(&idp);
    for (asked, kept) in [
        ("/a/b?c=d", "/a/b?c=d"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
    ] {
        let r = s.begin(asked, CALLBACK, NO_COOKIES, NOW).unwrap();
        let state = query_param(&r.location, "state");
        let err = s
            .callback(
                &e,
                &format!("error=x&state={state}"),
                &[cookie_pair(&r.set_cookies[0])],
                CALLBACK,
                NOW,
            )
            .unwrap_err();
        assert_eq!(err.retry, kept, "{asked}");
    }
}

#[test]
fn a_session_yields_its_id_token_which_the_engine_accepts_only_as_a_session() {
    let (s, idp) = (signin(), Idp::new());
    let e = engine(&idp);
    let token = idp.id_token(json!({}));
    let cookies = session_cookies(&s, &session(token.clone()));
    let SessionState::Active {
        id_token,
        set_cookies,
        expires_at,
    } = s.session(&e, &cookies, NOW)
    else {
        panic!("not active");
    };
    assert_eq!(id_token, token);
    assert!(set_cookies.is_empty(), "seen 10s ago: no renewal yet");
    assert_eq!(expires_at, NOW - 100 + 12 * 3600);

    let as_session = e.decide(&Request::from_session(
        "GET",
        "app",
        "/x",
        id_token.as_bytes(),
    ));
    assert!(as_session.allowed(), "{}", as_session.reason);
    // The same ID token sent as a bearer token is for another audience.
    let as_bearer = e.decide(&Request::new("GET", "app", "/x", Some(id_token.as_bytes())));
    assert_eq!(as_bearer.status(), 401);
    // And an ID token for another client is no session.
    let foreign = idp.id_token(json!({"aud": "another-client"}));
    let d = e.decide(&Request::from_session(
        "GET",
        "app",
        "/x",
        foreign.as_bytes(),
    ));
    assert_eq!(d.status(), 401);
}

#[test]
fn sessions_renew_their_idle_clock_and_end_when_they_must() {
    let (s, idp) = (signin(), Idp::new());
    let e = engine(&idp);
    let mut old = session(idp.id_token(json!({})));
    old.seen_at = NOW - 400;
    let cookies = session_cookies(&s, &old);
    let SessionState::Active { set_cookies, .. } = s.session(&e, &cookies, NOW) else {
        panic!("not active");
    };
    assert_eq!(set_cookies.len(), 1, "renewed after 5 minutes");
    assert!(set_cookies[0].contains(&format!("Max-Age={}", 12 * 3600 - 100)));

    let ended = |cookies: &[String], now: u64| match s.session(&e, cookies, now) {
        SessionState::Ended {
            reason,
            set_cookies,
        } => (reason, set_cookies),
        other => panic!("{other:?}"),
    };
    // Idle for an hour.
    let mut idle = session(idp.id_token(json!({})));
    idle.seen_at = NOW - 3600;
    let (reason, clears) = ended(&session_cookies(&s, &idle), NOW);
    assert_eq!(reason, "session: Idle");
    assert_eq!(
        clears,
        ["__Host-caddy-iap=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"]
    );
    // The ID token runs out and there is no refresh token.
    let mut expiring = session(idp.id_token(json!({})));
    expiring.id_expires_at = NOW + 10;
    assert_eq!(
        ended(&session_cookies(&s, &expiring), NOW).0,
        "the ID token expired and there is no refresh token"
    );
    // With a refresh token but the provider unreachable, the still-valid ID token keeps
    // serving; once it has expired, the session ends.
    expiring.refresh_token = Some("r".into());
    assert!(matches!(
        s.session(&e, &session_cookies(&s, &expiring), NOW),
        SessionState::Active { .. }
    ));
    expiring.id_expires_at = NOW - 1;
    assert!(
        ended(&session_cookies(&s, &expiring), NOW)
            .0
            .starts_with("refresh: token endpoint:")
    );
    // Tampered, foreign-key and duplicated cookies.
    let good = session_cookies(&s, &session(idp.id_token(json!({}))));
    let (name, value) = good[0].split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(flipped).unwrap());
    assert_eq!(ended(&[tampered], NOW).0, "session cookie: Invalid");
    let foreign = signin_with(json!({"keys": [URL_SAFE_NO_PAD.encode([1u8; 32])]}));
    let foreign_cookies = session_cookies(&foreign, &session(idp.id_token(json!({}))));
    assert_eq!(ended(&foreign_cookies, NOW).0, "session cookie: Invalid");
    assert_eq!(
        ended(&[good[0].clone(), good[0].clone()], NOW).0,
        "two session cookies of one name"
    );
    assert!(matches!(
        s.session(&e, &["other=1"], NOW),
        SessionState::None
    ));
}

#[test]
fn rotated_keys_still_open_existing_sessions() {
    let idp = Idp::new();
    let e = engine(&idp);
    let (old, new) = (
        URL_SAFE_NO_PAD.encode([9u8; 32]),
        URL_SAFE_NO_PAD.encode([10u8; 32]),
    );
    let before = signin_with(json!({"keys": [old]}));
    let cookies = session_cookies(&before, &session(idp.id_token(json!({}))));
    let rotated = signin_with(json!({"keys": [new, old]}));
    assert!(matches!(
        rotated.session(&e, &cookies, NOW),
        SessionState::Active { .. }
    ));
    let retired = signin_with(json!({"keys": [new]}));
    assert!(matches!(
        retired.session(&e, &cookies, NOW),
        SessionState::Ended { .. }
    ));
}

#[test]
fn large_sessions_are_split_and_read_back() {
    let (s, idp) = (signin(), Idp::new());
    let e = engine(&idp);
    let big = idp.id_token(json!({"groups": ["readers"], "padding": "p".repeat(4000)}));
    let cookies = session_cookies(&s, &session(big.clone()));
    assert_eq!(cookies.len(), 3, "a 5.4 kB ID token takes three chunks");
    let SessionState::Active { id_token, .. } = s.session(&e, &cookies, NOW) else {
        panic!("not active");
    };
    assert_eq!(id_token, big);
    // A missing middle chunk is not a session.
    let holed = [cookies[0].clone(), cookies[2].clone()];
    assert!(matches!(
        s.session(&e, &holed, NOW),
        SessionState::Ended { .. }
    ));
}

#[test]
fn nonce_and_azp_bind_the_id_token_to_this_sign_in() {
    let (s, idp) = (signin(), Idp::new());
    let ok = idp.id_token(json!({}));
    assert_eq!(s.check_id_token_binding(&ok, Some("n")), Ok(()));
    assert!(s.check_id_token_binding(&ok, Some("other")).is_err());
    let no_nonce = idp.id_token(json!({"nonce": null}));
    assert!(s.check_id_token_binding(&no_nonce, Some("n")).is_err());
    let multi = idp.id_token(json!({"aud": [CLIENT, "other"]}));
    assert!(s.check_id_token_binding(&multi, Some("n")).is_err());
    let multi_azp = idp.id_token(json!({"aud": [CLIENT, "other"], "azp": CLIENT}));
    assert_eq!(s.check_id_token_binding(&multi_azp, Some("n")), Ok(()));
}

#[test]
fn sign_out_clears_every_chunk_and_ends_the_provider_session() {
    let s = signin();
    let r = s.sign_out(
        &["__Host-caddy-iap=x"],
        "https://app.example.com/.iap/signed-out",
        NOW,
    );
    assert_eq!(
        r.location,
        "http://127.0.0.1:9/logout?client_id=gateway&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2F.iap%2Fsigned-out"
    );
    assert_eq!(r.set_cookies.len(), MAX_CHUNKS);
    assert!(r.set_cookies.iter().all(|c| c.contains("Max-Age=0")));
}

#[test]
fn configs_are_checked() {
    let bad = |extra: Value| {
        let mut c = json!({
            "issuer": ISS, "client_id": CLIENT, "client_secret_file": secret_file(),
            "keys": [URL_SAFE_NO_PAD.encode([9u8; 32])],
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        SignIn::new(serde_json::from_value(c).unwrap()).unwrap_err()
    };
    assert_eq!(
        bad(json!({"client_secret_file": null, "client_secret_env": "IAP_SURELY_UNSET"})),
        "client_secret: $IAP_SURELY_UNSET is not set"
    );
    assert_eq!(bad(json!({"keys": []})), "keys: no cookie key");
    assert_eq!(
        bad(json!({"keys": ["AAAA"]})),
        "keys: a cookie key must be 32 bytes"
    );
    assert_eq!(bad(json!({"keys": ["!!"]})), "keys[0]: not base64");
    assert_eq!(
        bad(json!({"cookie_name": "a b"})),
        "cookie_name: \"a b\" must be a cookie name starting with __Host-"
    );
    assert!(
        bad(json!({"issuer": "http://idp.example.com"}))
            .starts_with("issuer: cannot use discovery")
    );
    assert_eq!(
        bad(json!({"login_timeout_secs": 5})),
        "login_timeout: must be between 30s and 1h"
    );
}

//! The engine end to end in-process: one suite per key type (RS256, ES256, EdDSA), with a
//! fixed clock and static keys; the network path is covered by keyset unit tests and the e2e
//! suite against a real OpenID provider.

mod common;

use std::sync::Arc;

use caddy_iap_core::danger::parse_jwks;
use caddy_iap_core::{Config, Engine, HttpFetcher, ReasonCode, Request};
use common::{KeyKind, ManualClock, Signer};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com/";

fn config(kind: KeyKind) -> Config {
    serde_json::from_value(json!({
        "issuers": [{
            "issuer": ISS,
            "audiences": ["https://api.example.com"],
            "keys": {"pem": [kind.public_pem()]},
            "algorithms": [kind.alg()],
        }],
        "roles": [
            {"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "db-readers"}]},
            {"role": "admin", "when": [{"claim": "https://example.com/roles", "op": "contains", "value": "admin"}]},
            {"role": "reader", "when": [{"claim": "scope", "op": "has", "value": "read:items"}]},
        ],
        "allow": [
            {"role": "reader", "methods": ["GET"], "paths": ["/items/*"]},
            {"role": "admin", "methods": ["*"], "paths": ["*"]},
        ],
        "assertion": {
            "audience": "orders-service",
            "ttl_secs": 300,
            "signing_keys": [base64_pkcs8()],
        },
    }))
    .unwrap()
}

fn base64_pkcs8() -> String {
    use base64::Engine as _;
    let der = caddy_iap_core::generate_signing_key(caddy_iap_core::Alg::ES256).unwrap();
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISS, "sub": "alice", "aud": "https://api.example.com",
        "iat": NOW - 10, "exp": NOW + 600, "email": "alice@example.com", "email_verified": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

struct Suite {
    signer: Signer,
    clock: Arc<ManualClock>,
    engine: Engine,
}

impl Suite {
    fn new(kind: KeyKind) -> Self {
        let clock = Arc::new(ManualClock::at(NOW));
        let engine =
            Engine::with_parts(&config(kind), clock.clone(), Arc::new(HttpFetcher::new())).unwrap();
        Self {
            signer: Signer::new(kind),
            clock,
            engine,
        }
    }

    fn token(&self, extra: Value) -> String {
        self.signer.sign(&self.signer.header("k1"), &claims(extra))
    }

    fn decide(&self, method: &str, path: &str, token: Option<&str>) -> caddy_iap_core::Decision {
        self.engine.decide(&Request::new(
            method,
            "api.example.com",
            path,
            token.map(str::as_bytes),
        ))
    }
}

fn header<'a>(d: &'a caddy_iap_core::Decision, name: &str) -> Option<&'a str> {
    d.set_headers().find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn each_suite(test: impl Fn(Suite)) {
    for kind in KeyKind::ALL {
        test(Suite::new(kind));
    }
}

#[test]
fn reader_gets_items_with_identity_headers_and_assertion() {
    each_suite(|s| {
        let token = s.token(json!({"groups": ["db-readers"]}));
        let d = s.decide("GET", "/items/42", Some(&token));
        assert!(d.allowed(), "{:?}: {}", s.signer.kind, d.reason);
        assert_eq!(header(&d, "X-IAP-User"), Some("alice"));
        assert_eq!(header(&d, "X-IAP-Email"), Some("alice@example.com"));
        assert_eq!(header(&d, "X-IAP-Roles"), Some("reader"));
        let assertion = header(&d, "X-IAP-Assertion").expect("assertion minted");
        assert!(!d.cache_hit);

        // The assertion verifies against the published JWKS and says who and what.
        let jwks = parse_jwks(s.engine.public_jwks().unwrap().as_bytes()).unwrap();
        let jws = caddy_iap_core::danger::parse_compact(assertion.as_bytes(), 8192).unwrap();
        assert!(jwks.keys.iter().any(|k| {
            k.verify(jws.header.alg, jws.signing_input, &jws.signature)
                .is_ok()
        }));
        let claims = jws.claims().unwrap().into_serde();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "orders-service");
        assert_eq!(claims["roles"], json!(["reader"]));
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!((iat, exp - iat), (NOW, 300));

        let again = s.decide("GET", "/items/42", Some(&token));
        assert!(again.allowed() && again.cache_hit);
        assert_eq!(
            header(&again, "X-IAP-Assertion"),
            Some(assertion),
            "assertion reused while fresh"
        );
    });
}

#[test]
fn roles_limit_routes() {
    each_suite(|s| {
        let reader = s.token(json!({"scope": "openid read:items"}));
        assert_eq!(s.decide("POST", "/items/1", Some(&reader)).status(), 403);
        let d = s.decide("GET", "/admin", Some(&reader));
        assert_eq!(d.status(), 403);
        assert_eq!(d.reason_code(), ReasonCode::Forbidden);
        assert!(
            d.reason.contains("scope=[openid read:items]"),
            "{}",
            d.reason
        );
        assert_eq!(d.set_headers().count(), 0);

        let admin = s.token(json!({"https://example.com/roles": ["admin"]}));
        assert!(s.decide("DELETE", "/admin/x", Some(&admin)).allowed());

        let nobody = s.token(json!({"groups": ["other"]}));
        assert_eq!(s.decide("GET", "/items/1", Some(&nobody)).status(), 403);
    });
}

#[test]
fn refusals_carry_status_reason_and_challenge() {
    each_suite(|s| {
        let d = s.decide("GET", "/items/1", None);
        assert_eq!(
            (d.status(), d.reason_code()),
            (401, ReasonCode::MissingToken)
        );
        assert_eq!(d.www_authenticate, r#"Bearer realm="caddy-iap""#);

        let cases: Vec<(String, ReasonCode)> = vec![
            (
                s.token(json!({"aud": "https://other.example.com"})),
                ReasonCode::AudienceMismatch,
            ),
            (
                s.token(json!({"iss": "https://idp.example.com"})),
                ReasonCode::UnknownIssuer,
            ),
            (s.token(json!({"exp": NOW - 120})), ReasonCode::BadTime),
            (s.token(json!({"exp": "9999999999"})), ReasonCode::BadClaims),
            (s.token(json!({"aud": 5})), ReasonCode::BadClaims),
            (s.token(json!({"iss": [ISS]})), ReasonCode::BadClaims),
            ("not-a-token".into(), ReasonCode::MalformedToken),
        ];
        for (token, reason) in cases {
            let d = s.decide("GET", "/items/1", Some(&token));
            assert_eq!(
                (d.status(), d.reason_code()),
                (401, reason),
                "{:?}: {}",
                s.signer.kind,
                d.reason
            );
            assert!(d.www_authenticate.contains("invalid_token"));
            assert!(!d.reason.contains(&token), "reason must not echo the token");
        }

        // A flipped signature byte.
        let good = s.token(json!({"groups": ["db-readers"]}));
        let mut bad = good.into_bytes();
        let last = bad.len() - 5;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let d = s.decide("GET", "/items/1", Some(std::str::from_utf8(&bad).unwrap()));
        assert_eq!(d.reason_code(), ReasonCode::BadSignature, "{}", d.reason);
    });
}

#[test]
fn cache_never_outlives_exp() {
    each_suite(|s| {
        let token = s.token(json!({"groups": ["db-readers"], "exp": NOW + 30}));
        assert!(s.decide("GET", "/items/1", Some(&token)).allowed());
        s.clock.set(NOW + 30);
        let d = s.decide("GET", "/items/1", Some(&token));
        assert!(d.allowed() && d.cache_hit);
        // Past exp the cache no longer answers; the fresh check still grants the leeway...
        s.clock.set(NOW + 31);
        let d = s.decide("GET", "/items/1", Some(&token));
        assert!(d.allowed() && !d.cache_hit, "{}", d.reason);
        // ...and past the leeway the token is refused.
        s.clock.set(NOW + 91);
        assert_eq!(
            s.decide("GET", "/items/1", Some(&token)).reason_code(),
            ReasonCode::BadTime
        );
    });
}

#[test]
fn cache_never_answers_for_a_clock_stepped_back() {
    each_suite(|s| {
        // Valid from NOW on (nbf); verified and cached at NOW.
        let token = s.token(json!({"groups": ["db-readers"], "nbf": NOW, "iat": NOW}));
        assert!(s.decide("GET", "/items/1", Some(&token)).allowed());
        // The clock is stepped back past the leeway: the uncached answer, not the cached one.
        s.clock.set(NOW - 120);
        let d = s.decide("GET", "/items/1", Some(&token));
        assert_eq!(d.reason_code(), ReasonCode::BadTime, "{}", d.reason);
        assert!(!d.cache_hit);
    });
}

#[test]
fn dot_segments_and_encoded_slashes_are_refused() {
    each_suite(|s| {
        let token = s.token(json!({"groups": ["db-readers"]}));
        for path in [
            "/items/../admin",
            "/items/%2e%2e/admin",
            "/items%2Fx",
            "/items/a\\b",
        ] {
            let d = s.decide("GET", path, Some(&token));
            assert_eq!(d.status(), 400, "{path}");
        }
    });
}

#[test]
fn identity_headers_never_carry_control_characters() {
    each_suite(|s| {
        let token = s.token(json!({"groups": ["db-readers"], "email": "a@b.c\r\nX-Evil: 1"}));
        let d = s.decide("GET", "/items/1", Some(&token));
        assert!(d.allowed());
        assert_eq!(header(&d, "X-IAP-Email"), None);
    });
}

#[test]
fn unverified_email_is_treated_as_absent() {
    each_suite(|s| {
        // "nOAuth": a provider where users set their own email, and a rule granting by domain.
        let mut c = config(s.signer.kind);
        c.roles.push(serde_json::from_value(json!({"role": "staff", "when": [{"claim": "email", "op": "suffix", "value": "@example.com"}]})).unwrap());
        c.allow.push(
            serde_json::from_value(
                json!({"role": "staff", "methods": ["GET"], "paths": ["/staff/*"]}),
            )
            .unwrap(),
        );
        let engine = Engine::with_parts(&c, s.clock.clone(), Arc::new(HttpFetcher::new())).unwrap();
        let decide = |token: &str| {
            engine.decide(&Request::new(
                "GET",
                "h",
                "/staff/x",
                Some(token.as_bytes()),
            ))
        };

        for verified in [json!(false), json!("true"), Value::Null] {
            let mut claims =
                claims(json!({"email": "ceo@example.com", "email_verified": verified}));
            if verified.is_null() {
                claims.as_object_mut().unwrap().remove("email_verified");
            }
            let d = decide(&s.signer.sign(&s.signer.header("k1"), &claims));
            assert_eq!(d.status(), 403, "email_verified={verified}: {}", d.reason);
            assert_eq!(d.identity.as_ref().unwrap().email, None);
        }
        let d = decide(&s.token(json!({"email": "ceo@example.com"})));
        assert!(d.allowed(), "verified email grants staff: {}", d.reason);

        // An issuer configured to vouch for every email it issues.
        c.issuers[0].trust_unverified_email = true;
        let engine = Engine::with_parts(&c, s.clock.clone(), Arc::new(HttpFetcher::new())).unwrap();
        let token = s.token(json!({"email": "ceo@example.com", "email_verified": false}));
        let d = engine.decide(&Request::new(
            "GET",
            "h",
            "/staff/x",
            Some(token.as_bytes()),
        ));
        assert!(d.allowed());
        assert_eq!(header(&d, "X-IAP-Email"), Some("ceo@example.com"));
    });
}

#[test]
fn assertion_never_outlives_the_token() {
    let s = Suite::new(KeyKind::Es256);
    let token = s.token(json!({"groups": ["db-readers"], "exp": NOW + 42}));
    let d = s.decide("GET", "/items/1", Some(&token));
    let jws = caddy_iap_core::danger::parse_compact(
        header(&d, "X-IAP-Assertion").unwrap().as_bytes(),
        8192,
    )
    .unwrap();
    assert_eq!(jws.claims().unwrap().into_serde()["exp"], NOW + 42);

    // A later token of the same person with a longer life gets its own, longer assertion.
    let later = s.token(json!({"groups": ["db-readers"], "exp": NOW + 600}));
    let d = s.decide("GET", "/items/1", Some(&later));
    let jws = caddy_iap_core::danger::parse_compact(
        header(&d, "X-IAP-Assertion").unwrap().as_bytes(),
        8192,
    )
    .unwrap();
    assert_eq!(jws.claims().unwrap().into_serde()["exp"], NOW + 300);
}

#[test]
fn default_header_names_stay_owned_when_renamed() {
    let mut c = config(KeyKind::Es256);
    c.headers = serde_json::from_value(
        json!({"user": "X-Remote-User", "email": "", "roles": "X-IAP-Roles"}),
    )
    .unwrap();
    c.assertion = None;
    let engine = Engine::new(&c).unwrap();
    let names: Vec<&str> = engine.strip_headers().iter().map(|h| &**h).collect();
    assert_eq!(
        names,
        [
            "X-Remote-User",
            "X-IAP-Roles",
            "X-IAP-User",
            "X-IAP-Email",
            "X-IAP-Assertion"
        ]
    );
}

#[test]
fn several_issuers_each_with_own_keys_and_scoped_rules() {
    // Corp (ES256) and a partner (EdDSA) trusted side by side; admin is granted only to corp
    // tokens, by scoping the rule with `claim iss equals <issuer>`.
    let partner = "https://partner.example.org";
    let c: Config = serde_json::from_value(json!({
        "issuers": [
            {"issuer": ISS, "audiences": ["https://api.example.com"], "keys": {"pem": [KeyKind::Es256.public_pem()]}},
            {"issuer": partner, "audiences": ["https://api.example.com"], "keys": {"pem": [KeyKind::EdDsa.public_pem()]}},
        ],
        "roles": [
            {"role": "admin", "when": [
                {"claim": "iss", "op": "equals", "value": ISS},
                {"claim": "groups", "op": "contains", "value": "admins"},
            ]},
            {"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "db-readers"}]},
        ],
        "allow": [
            {"role": "admin", "methods": ["*"], "paths": ["*"]},
            {"role": "reader", "methods": ["GET"], "paths": ["/items/*"]},
        ],
    }))
    .unwrap();
    let engine = Engine::with_parts(
        &c,
        Arc::new(ManualClock::at(NOW)),
        Arc::new(HttpFetcher::new()),
    )
    .unwrap();
    let decide = |signer: &Signer, iss: &str, path: &str| {
        let token = signer.sign(
            &signer.header("k"),
            &claims(json!({"iss": iss, "groups": ["admins", "db-readers"]})),
        );
        engine.decide(&Request::new("DELETE", "h", path, Some(token.as_bytes())))
    };
    let (corp, other) = (Signer::new(KeyKind::Es256), Signer::new(KeyKind::EdDsa));
    assert!(decide(&corp, ISS, "/admin").allowed());
    let d = decide(&other, partner, "/admin");
    assert_eq!(
        d.status(),
        403,
        "a partner token naming groups=admins is not a corp admin"
    );
    assert_eq!(&*d.identity.unwrap().issuer, partner);
    // Each issuer's tokens verify only with that issuer's keys.
    assert_eq!(decide(&other, ISS, "/admin").status(), 401);
    assert_eq!(decide(&corp, partner, "/admin").status(), 401);
}

#[test]
fn first_signing_key_signs_and_all_are_published() {
    let mut c = config(KeyKind::Es256);
    let (new, old) = (base64_pkcs8(), base64_pkcs8());
    c.assertion.as_mut().unwrap().signing_keys = vec![new, old];
    let engine = Engine::with_parts(
        &c,
        Arc::new(ManualClock::at(NOW)),
        Arc::new(HttpFetcher::new()),
    )
    .unwrap();
    let jwks: Value = serde_json::from_str(engine.public_jwks().unwrap()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(engine.assertion_kid(), Some(kids[0]));

    let signer = Signer::new(KeyKind::Es256);
    let token = signer.sign(
        &signer.header("k1"),
        &claims(json!({"groups": ["db-readers"]})),
    );
    let d = engine.decide(&Request::new(
        "GET",
        "h",
        "/items/1",
        Some(token.as_bytes()),
    ));
    let jws = caddy_iap_core::danger::parse_compact(
        header(&d, "X-IAP-Assertion").unwrap().as_bytes(),
        8192,
    )
    .unwrap();
    assert_eq!(jws.header.kid.as_deref(), Some(kids[0]));
}

#[test]
fn strip_list_names_every_owned_header() {
    let s = Suite::new(KeyKind::Es256);
    let names: Vec<&str> = s.engine.strip_headers().iter().map(|h| &**h).collect();
    assert_eq!(
        names,
        [
            "X-IAP-User",
            "X-IAP-Email",
            "X-IAP-Roles",
            "X-IAP-Assertion"
        ]
    );
}

#[test]
fn bad_configs_say_where() {
    let mut c = config(KeyKind::Es256);
    c.issuers[0].audiences.clear();
    assert!(
        Engine::new(&c)
            .unwrap_err()
            .to_string()
            .starts_with("issuers[0].audiences")
    );

    let c: Config = serde_json::from_value(json!({
        "issuers": [{"issuer": "http://idp.example.com", "audiences": ["a"]}]
    }))
    .unwrap();
    let e = Engine::new(&c).unwrap_err().to_string();
    assert!(
        e.contains("issuers[0].issuer") && e.contains("https"),
        "{e}"
    );

    let c: Result<Config, _> = serde_json::from_value(json!({"issuers": [], "bogus": 1}));
    assert!(c.unwrap_err().to_string().contains("bogus"));

    // The sign-in's client id may not also be a bearer audience.
    for (client, ok) in [
        ("gateway", true),
        ("https://api.example.com", false),
        ("", false),
    ] {
        let mut c = config(KeyKind::Es256);
        c.issuers[0].login_client_id = Some(client.into());
        let e = Engine::new(&c).err().map(|e| e.to_string());
        assert_eq!(e.is_none(), ok, "{client}: {e:?}");
        if let Some(e) = e {
            assert!(e.starts_with("issuers[0].login_client_id"), "{e}");
        }
    }
}

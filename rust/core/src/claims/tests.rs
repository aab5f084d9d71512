use serde_json::{Map, Value, json};

use super::{CheckedClaims, ClaimsPolicy, check, issuer};
use crate::error::TokenError;
use crate::json::JsonObject;

const NOW: u64 = 1_700_000_000;

fn policy() -> ClaimsPolicy {
    ClaimsPolicy {
        audiences: vec!["app".into(), "https://api.example/".into()],
        leeway: 60,
        max_lifetime: 3600,
    }
}

/// A valid claim set at `NOW`, with `changes` applied (a `null` change removes the claim).
fn claims(changes: Value) -> Map<String, Value> {
    let mut map = json!({"iss":"https://idp.example/","sub":"alice","aud":"app","exp":NOW + 600,"iat":NOW - 10})
        .as_object()
        .unwrap()
        .clone();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    map
}

fn checked(changes: Value) -> Result<CheckedClaims, TokenError> {
    check(&JsonObject::from(&claims(changes)), &policy(), NOW)
}

#[test]
fn accepts_a_valid_claim_set() {
    let c = checked(json!({"jti":"id-1","nbf":NOW - 5})).unwrap();
    assert_eq!(
        c,
        CheckedClaims {
            sub: "alice".into(),
            exp: NOW + 600,
            iat: Some(NOW - 10),
            jti: Some("id-1".into())
        }
    );
    let c = checked(json!({"iat":null})).unwrap();
    assert_eq!((c.iat, c.jti), (None, None));
}

#[test]
fn issuer_must_be_one_string() {
    assert_eq!(
        issuer(&JsonObject::from(&claims(json!({})))),
        Ok("https://idp.example/")
    );
    assert_eq!(
        issuer(&JsonObject::from(&claims(json!({"iss":null})))),
        Err(TokenError::MissingClaim { claim: "iss" })
    );
    for iss in [
        json!(["https://idp.example/"]),
        json!(1),
        json!(true),
        json!({"v":"x"}),
    ] {
        assert_eq!(
            issuer(&JsonObject::from(&claims(json!({ "iss": iss })))),
            Err(TokenError::ClaimType { claim: "iss" })
        );
    }
    // No normalization: the caller compares bytes, trailing slash included.
    assert_eq!(
        issuer(&JsonObject::from(&claims(
            json!({"iss":"https://idp.example"})
        ))),
        Ok("https://idp.example")
    );
}

#[test]
fn exp_is_a_required_non_negative_number() {
    assert_eq!(
        checked(json!({"exp":null})),
        Err(TokenError::MissingClaim { claim: "exp" })
    );
    for exp in [
        json!("1700000600"),
        json!(true),
        json!([NOW]),
        json!({"v":NOW}),
        json!(-1),
        json!(-0.5),
        json!(-1e300),
    ] {
        assert_eq!(
            checked(json!({ "exp": exp })),
            Err(TokenError::ClaimType { claim: "exp" }),
            "{exp}"
        );
    }
}

#[test]
fn nbf_iat_and_jti_are_typed_when_present() {
    for (claim, value) in [
        ("nbf", json!("0")),
        ("nbf", json!(-5)),
        ("iat", json!("0")),
        ("iat", json!(-1.5)),
        ("jti", json!(1)),
        ("jti", json!(["a"])),
    ] {
        let mut changes = Map::new();
        changes.insert(claim.into(), value.clone());
        assert_eq!(
            checked(Value::Object(changes)),
            Err(TokenError::ClaimType { claim }),
            "{claim} {value}"
        );
    }
}

#[test]
fn expiry_honours_the_leeway_and_floors_fractions() {
    let exp = NOW - 60;
    assert!(checked(json!({"exp":exp,"iat":exp - 10})).is_ok());
    assert_eq!(
        checked(json!({"exp":exp - 1,"iat":exp - 10})),
        Err(TokenError::Expired {
            now: NOW,
            exp: exp - 1
        })
    );
    // 0.9 s past the edge still floors to the edge.
    assert!(checked(json!({"exp":exp as f64 + 0.9,"iat":exp - 10})).is_ok());
    assert_eq!(
        checked(json!({"exp":exp as f64 - 0.1,"iat":exp - 10})),
        Err(TokenError::Expired {
            now: NOW,
            exp: exp - 1
        })
    );
    assert!(matches!(
        checked(json!({"exp":0})),
        Err(TokenError::Expired { exp: 0, .. })
    ));
}

#[test]
fn not_before_and_issued_at_honour_the_leeway_and_ceil_fractions() {
    assert!(checked(json!({"nbf":NOW + 60})).is_ok());
    assert_eq!(
        checked(json!({"nbf":NOW + 61})),
        Err(TokenError::NotYetValid {
            now: NOW,
            nbf: NOW + 61
        })
    );
    assert_eq!(
        checked(json!({"nbf":(NOW + 60) as f64 + 0.1})),
        Err(TokenError::NotYetValid {
            now: NOW,
            nbf: NOW + 61
        })
    );
    assert!(checked(json!({"iat":NOW + 60})).is_ok());
    assert_eq!(
        checked(json!({"iat":NOW + 61})),
        Err(TokenError::IssuedInFuture {
            now: NOW,
            iat: NOW + 61
        })
    );
    assert_eq!(
        checked(json!({"iat":(NOW + 60) as f64 + 0.5})),
        Err(TokenError::IssuedInFuture {
            now: NOW,
            iat: NOW + 61
        })
    );
}

#[test]
fn lifetime_is_capped() {
    assert!(checked(json!({"iat":NOW,"exp":NOW + 3600})).is_ok());
    assert_eq!(
        checked(json!({"iat":NOW,"exp":NOW + 3601})),
        Err(TokenError::LifetimeTooLong {
            lifetime: 3601,
            max: 3600
        })
    );
    // Without iat, the remaining lifetime counts.
    assert!(checked(json!({"iat":null,"exp":NOW + 3600})).is_ok());
    assert_eq!(
        checked(json!({"iat":null,"exp":NOW + 3601})),
        Err(TokenError::LifetimeTooLong {
            lifetime: 3601,
            max: 3600
        })
    );
}

#[test]
fn huge_numbers_saturate_instead_of_overflowing() {
    for exp in [
        json!(u64::MAX),
        json!(1e19),
        json!(1e300),
        json!(f64::MAX),
        json!(9007199254740993u64),
    ] {
        assert!(
            matches!(
                checked(json!({ "exp": exp })),
                Err(TokenError::LifetimeTooLong { .. })
            ),
            "{exp}"
        );
    }
    assert_eq!(
        checked(json!({"exp":1e300,"iat":null})),
        Err(TokenError::LifetimeTooLong {
            lifetime: u64::MAX - NOW,
            max: 3600
        })
    );
    for huge in [json!(u64::MAX), json!(1e300)] {
        assert!(matches!(
            checked(json!({ "nbf": huge.clone() })),
            Err(TokenError::NotYetValid { nbf: u64::MAX, .. })
        ));
        assert!(matches!(
            checked(json!({ "iat": huge })),
            Err(TokenError::IssuedInFuture { iat: u64::MAX, .. })
        ));
    }
    // Saturation at the other end: `now` and the leeway near u64::MAX.
    let wide = ClaimsPolicy {
        leeway: u64::MAX,
        max_lifetime: u64::MAX,
        ..policy()
    };
    assert!(
        check(
            &JsonObject::from(&claims(json!({"exp":0,"iat":0,"nbf":u64::MAX}))),
            &wide,
            u64::MAX
        )
        .is_ok()
    );
    // An issue time after the expiry: the lifetime saturates to 0 instead of wrapping.
    assert!(checked(json!({"iat":NOW + 30,"exp":NOW + 10})).is_ok());
}

#[test]
fn audience_is_a_string_or_non_empty_string_array_that_must_match() {
    for aud in [
        json!("app"),
        json!(["other", "app"]),
        json!(["https://api.example/"]),
    ] {
        assert!(checked(json!({ "aud": aud })).is_ok(), "{aud}");
    }
    assert_eq!(
        checked(json!({"aud":null})),
        Err(TokenError::MissingClaim { claim: "aud" })
    );
    for aud in [
        json!([]),
        json!(1),
        json!(true),
        json!({"aud":"app"}),
        json!(["app", 1]),
        json!([["app"]]),
        json!([null]),
    ] {
        assert_eq!(
            checked(json!({ "aud": aud })),
            Err(TokenError::ClaimType { claim: "aud" }),
            "{aud}"
        );
    }
    // Exact byte equality: no case folding, trimming or slash normalization.
    for aud in [
        json!("App"),
        json!("app "),
        json!("https://api.example"),
        json!(["other"]),
        json!(""),
    ] {
        assert_eq!(
            checked(json!({ "aud": aud })),
            Err(TokenError::AudienceMismatch),
            "{aud}"
        );
    }
}

#[test]
fn subject_is_a_required_non_empty_string() {
    assert_eq!(
        checked(json!({"sub":null})),
        Err(TokenError::MissingClaim { claim: "sub" })
    );
    for sub in [
        json!(""),
        json!(1),
        json!(["alice"]),
        json!({"id":"alice"}),
        json!(false),
    ] {
        assert_eq!(
            checked(json!({ "sub": sub })),
            Err(TokenError::ClaimType { claim: "sub" }),
            "{sub}"
        );
    }
}

#[test]
fn type_errors_win_over_time_errors() {
    // An expired token with a numeric aud reports the type problem.
    assert_eq!(
        checked(json!({"exp":0,"aud":5})),
        Err(TokenError::ClaimType { claim: "aud" })
    );
}

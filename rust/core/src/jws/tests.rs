use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use proptest::prelude::*;
use serde_json::json;

use super::{FORBIDDEN_HEADERS, Header, MEMO_ENTRIES, MEMO_MAX_SEGMENT, parse_compact};
use crate::alg::Alg;
use crate::error::TokenError;
use crate::json::Json;

const MAX: usize = 8192;
const CLAIMS: &str = r#"{"sub":"alice","aud":"app"}"#;

/// A compact token from raw header and payload JSON and signature bytes.
fn token(header: &str, payload: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header),
        B64.encode(payload),
        B64.encode(signature)
    )
}

/// A token with header `header` and a fixed payload and signature.
fn with_header(header: &str) -> String {
    token(header, CLAIMS, b"sig")
}

/// The error reading `token` gives, its claims included (panics if it accepted the token).
fn refused(token: &str) -> TokenError {
    match parse_compact(token.as_bytes(), MAX).and_then(|jws| jws.claims().map(|_| ())) {
        Ok(()) => panic!("accepted {token:?}"),
        Err(e) => e,
    }
}

/// The header of an accepted token (panics if it was refused).
fn header_of(token: &str) -> Header {
    parse_compact(token.as_bytes(), MAX).unwrap().header
}

/// `segment` with the last character moved to its successor in the base64url alphabet, which
/// sets a trailing bit when the segment's length is not a multiple of 4.
fn bump_last(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (head, last) = segment.split_at(segment.len() - 1);
    let i = ALPHABET
        .iter()
        .position(|&c| c == last.as_bytes()[0])
        .unwrap();
    format!("{head}{}", ALPHABET[(i + 1) % 64] as char)
}

#[test]
fn parses_a_well_formed_token() {
    let t = token(
        r#"{"alg":"ES256","kid":"k1","typ":"JWT","x-extra":[1]}"#,
        CLAIMS,
        &[1, 2, 3],
    );
    let jws = parse_compact(t.as_bytes(), MAX).unwrap();
    assert_eq!(jws.header.alg, Alg::ES256);
    assert_eq!(jws.header.kid.as_deref(), Some("k1"));
    assert_eq!(
        jws.claims().unwrap().get("sub").and_then(Json::as_str),
        Some("alice")
    );
    assert_eq!(jws.signature, [1, 2, 3]);
    let second_dot = t.rfind('.').unwrap();
    assert_eq!(jws.signing_input, &t.as_bytes()[..second_dot]);
}

#[test]
fn every_supported_alg_parses_case_sensitively() {
    for alg in Alg::ALL {
        assert_eq!(
            header_of(&with_header(&format!(r#"{{"alg":"{alg}"}}"#))),
            Header { alg, kid: None }
        );
    }
    assert_eq!(
        header_of(&with_header(r#"{"alg":"Ed25519"}"#)).alg,
        Alg::EdDSA
    );
}

#[test]
fn refuses_tokens_over_the_length_cap() {
    let t = with_header(r#"{"alg":"RS256"}"#);
    parse_compact(t.as_bytes(), t.len()).unwrap();
    assert_eq!(
        parse_compact(t.as_bytes(), t.len() - 1).unwrap_err(),
        TokenError::TooLong {
            len: t.len(),
            max: t.len() - 1
        }
    );
    // The cap comes first: a huge run of dots is refused without being split.
    let dots = ".".repeat(1 << 20);
    assert!(matches!(refused(&dots), TokenError::TooLong { .. }));
}

#[test]
fn refuses_anything_but_three_segments() {
    let t = with_header(r#"{"alg":"RS256"}"#);
    let parts: Vec<&str> = t.split('.').collect();
    let cases = [
        (String::new(), 1),
        (parts[0].to_owned(), 1),
        (parts[..2].join("."), 2),
        (format!("{t}."), 4),
        (format!("{t}.{}", parts[2]), 4),
        // JWE compact serialization.
        (
            format!(
                "{}.{}.{}.{}.{}",
                parts[0], "AAAA", "AAAA", parts[1], parts[2]
            ),
            5,
        ),
        ("....".to_owned(), 5),
    ];
    for (input, found) in cases {
        assert_eq!(
            refused(&input),
            TokenError::WrongSegmentCount { found },
            "{input:?}"
        );
    }
    // JSON serialization, even with dots inside its strings.
    let json = r#"{"payload":"a.b","protected":"c.d","signature":"e"}"#;
    assert_eq!(refused(json), TokenError::WrongSegmentCount { found: 1 });
}

#[test]
fn refuses_non_canonical_base64url() {
    // Lengths 25, 11 and 4 bytes: no segment is a multiple of 4 characters, so each has trailing bits.
    let t = token(r#"{"alg":"RS256","kid":"k"}"#, r#"{"sub":"x"}"#, b"sigs");
    let parts: Vec<&str> = t.split('.').collect();
    for (i, name) in ["header", "payload", "signature"].into_iter().enumerate() {
        let with = |replacement: String| {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[i] = replacement;
            p.join(".")
        };
        let segment = parts[i];
        assert_ne!(
            segment.len() % 4,
            0,
            "test needs a segment with trailing bits"
        );
        let bad = [
            String::new(),
            format!("{segment}="),
            format!("{segment}=="),
            format!(" {segment}"),
            format!("{segment}\n"),
            format!("{}+{}", &segment[..2], &segment[3..]),
            format!("{}/{}", &segment[..2], &segment[3..]),
            // One character too many leaves 6 dangling bits: never a valid length.
            format!("{segment}{}", "A".repeat(5 - segment.len() % 4)),
            bump_last(segment),
        ];
        for bad in bad {
            assert_eq!(
                refused(&with(bad.clone())),
                TokenError::BadBase64 { segment: name },
                "{name} {bad:?}"
            );
        }
        // Standard (non-URL) alphabet for bytes that differ: refused too.
        if i == 2 {
            let t = token(r#"{"alg":"RS256"}"#, CLAIMS, &[0xfb, 0xff]);
            let std = t.replace('-', "+").replace('_', "/");
            assert_ne!(std, t);
            assert_eq!(
                refused(&std),
                TokenError::BadBase64 {
                    segment: "signature"
                }
            );
        }
    }
}

#[test]
fn refuses_missing_none_and_unknown_algorithms() {
    assert_eq!(
        refused(&with_header("{}")),
        TokenError::DisallowedAlgorithm { alg: String::new() }
    );
    assert_eq!(
        refused(&with_header(r#"{"kid":"k"}"#)),
        TokenError::DisallowedAlgorithm { alg: String::new() }
    );
    for alg in [
        "none",
        "None",
        "NONE",
        "nOnE",
        "",
        "HS256",
        "HS384",
        "HS512",
        "rs256",
        "ES512",
        "RS256 ",
        "EdDSA\u{0}",
    ] {
        let header = json!({ "alg": alg }).to_string();
        let expected = crate::error::truncate_for_log(alg);
        assert_eq!(
            refused(&with_header(&header)),
            TokenError::DisallowedAlgorithm { alg: expected },
            "{alg:?}"
        );
    }
    // Logged values are truncated.
    let long = "A".repeat(500);
    let TokenError::DisallowedAlgorithm { alg } =
        refused(&with_header(&json!({ "alg": long }).to_string()))
    else {
        panic!()
    };
    assert_eq!(alg.chars().count(), 65);
    // alg:none with an empty signature fails on the algorithm or the empty signature, never passes.
    let t = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(CLAIMS)
    );
    assert!(matches!(
        refused(&t),
        TokenError::DisallowedAlgorithm { .. }
    ));
}

#[test]
fn refuses_non_string_alg_and_kid() {
    for header in [
        r#"{"alg":1}"#,
        r#"{"alg":null}"#,
        r#"{"alg":["RS256"]}"#,
        r#"{"alg":{"v":"RS256"}}"#,
    ] {
        assert!(
            matches!(
                refused(&with_header(header)),
                TokenError::BadJson {
                    segment: "header",
                    ..
                }
            ),
            "{header}"
        );
    }
    for kid in ["1", "null", "true", r#"["k"]"#, r#"{"k":1}"#] {
        let header = format!(r#"{{"alg":"RS256","kid":{kid}}}"#);
        assert!(
            matches!(
                refused(&with_header(&header)),
                TokenError::BadJson {
                    segment: "header",
                    ..
                }
            ),
            "{header}"
        );
    }
    // Hostile but well-typed kids are just strings here; they never reach a path or query.
    let header = header_of(&with_header(r#"{"alg":"RS256","kid":"../../dev/null"}"#));
    assert_eq!(header.kid.as_deref(), Some("../../dev/null"));
}

#[test]
fn refuses_untrusted_header_parameters_whatever_their_value() {
    for name in FORBIDDEN_HEADERS {
        for value in [json!(null), json!(false), json!([]), json!({}), json!("x")] {
            let header = json!({ "alg": "ES256", name: value }).to_string();
            assert_eq!(
                refused(&with_header(&header)),
                TokenError::ForbiddenHeader { name },
                "{header}"
            );
        }
    }
    // The embedded-jwk attack (CVE-2018-0114).
    let header = r#"{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}"#;
    assert_eq!(
        refused(&with_header(header)),
        TokenError::ForbiddenHeader { name: "jwk" }
    );
}

#[test]
fn typ_must_name_a_jwt() {
    for typ in [
        "JWT",
        "jwt",
        "Jwt",
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "application/jwt",
        "APPLICATION/JWT",
    ] {
        let header = json!({ "alg": "ES256", "typ": typ }).to_string();
        header_of(&with_header(&header));
    }
    for typ in [
        json!("JOSE"),
        json!("JWS"),
        json!(""),
        json!("JWT "),
        json!("secevent+jwt"),
        json!(1),
        json!(null),
    ] {
        let header = json!({ "alg": "ES256", "typ": typ }).to_string();
        assert_eq!(
            refused(&with_header(&header)),
            TokenError::ForbiddenHeader { name: "typ" },
            "{header}"
        );
    }
}

#[test]
fn header_and_payload_must_be_strict_json_objects() {
    let bad_header = [
        r#"{"alg":"RS256","alg":"RS256"}"#,
        r#"{"alg":"RS256","x":{"a":1,"a":1}}"#,
        "[]",
        "RS256",
        "{",
    ];
    for header in bad_header {
        assert!(
            matches!(
                refused(&with_header(header)),
                TokenError::BadJson {
                    segment: "header",
                    ..
                }
            ),
            "{header}"
        );
    }
    let bad_payload = [
        r#"{"sub":"a","sub":"b"}"#,
        r#"{"groups":[{"x":1,"x":2}]}"#,
        r#"{"aud":"a"} "trailing""#,
        "[]",
        "foo",
        "\"str\"",
    ];
    for payload in bad_payload {
        let t = token(r#"{"alg":"RS256"}"#, payload, b"sig");
        assert!(
            matches!(
                refused(&t),
                TokenError::BadJson {
                    segment: "payload",
                    ..
                }
            ),
            "{payload}"
        );
    }
}

#[test]
fn the_header_is_checked_before_the_payload() {
    // A token bad everywhere reports its header first.
    let t = token(r#"{"alg":"none"}"#, "not json", b"");
    assert!(matches!(
        refused(&t),
        TokenError::DisallowedAlgorithm { .. }
    ));
    let t = token(r#"{"alg":"RS256"}"#, "not json", b"");
    assert_eq!(
        refused(&t),
        TokenError::BadBase64 {
            segment: "signature"
        }
    );
}

#[test]
fn errors_and_debug_carry_no_token_bytes() {
    let secret = "TOPSECRETVALUE";
    let cases = [
        token(
            &format!(r#"{{"alg":"RS256","kid":"{secret}","kid":"x"}}"#),
            CLAIMS,
            b"s",
        ),
        token(
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"sub":"{secret}","sub":"{secret}"}}"#),
            b"s",
        ),
        token(
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"sub":{secret}}}"#),
            b"s",
        ),
        token(
            &format!(r#"{{"alg":"RS256","typ":"{secret}"}}"#),
            CLAIMS,
            b"s",
        ),
        token(
            &format!(r#"{{"alg":"RS256","jku":"{secret}"}}"#),
            CLAIMS,
            b"s",
        ),
    ];
    for t in cases {
        let e = refused(&t);
        assert!(!format!("{e} {e:?}").contains(secret), "{e:?}");
    }
    let t = token(
        r#"{"alg":"RS256"}"#,
        &format!(r#"{{"sub":"{secret}"}}"#),
        secret.as_bytes(),
    );
    let jws = parse_compact(t.as_bytes(), MAX).unwrap();
    assert!(!format!("{jws:?}").contains(secret));
    assert!(!format!("{jws:?}").contains(&B64.encode(secret)));
}

/// An RS256 header naming key `kid`.
fn rs256_kid(kid: &str) -> String {
    with_header(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#))
}

#[test]
fn a_remembered_header_reads_as_a_fresh_parse_would() {
    // As many headers as a thread remembers, then again in the other order: every second read
    // is a hit, shares the first read's `kid`, and reads as its own bytes.
    let kids: Vec<String> = (0..MEMO_ENTRIES).map(|i| format!("key-{i}")).collect();
    let first: Vec<Header> = kids.iter().map(|kid| header_of(&rs256_kid(kid))).collect();
    for (kid, before) in kids.iter().zip(&first).rev() {
        let again = header_of(&rs256_kid(kid));
        assert_eq!(again.alg, Alg::RS256);
        assert_eq!(again.kid.as_deref(), Some(kid.as_str()));
        assert!(Arc::ptr_eq(
            again.kid.as_ref().unwrap(),
            before.kid.as_ref().unwrap()
        ));
    }

    // More headers than it remembers, twice round: each still reads as its own bytes.
    let many: Vec<String> = (0..MEMO_ENTRIES * 2 + 1).map(|i| format!("k{i}")).collect();
    for _ in 0..2 {
        for kid in &many {
            assert_eq!(
                header_of(&rs256_kid(kid)).kid.as_deref(),
                Some(kid.as_str())
            );
        }
    }

    // A header past the memo's size limit is parsed afresh each time, to the same result.
    let long = "x".repeat(MEMO_MAX_SEGMENT);
    let (a, b) = (header_of(&rs256_kid(&long)), header_of(&rs256_kid(&long)));
    assert_eq!(a, b);
    assert!(!Arc::ptr_eq(
        a.kid.as_ref().unwrap(),
        b.kid.as_ref().unwrap()
    ));
}

#[test]
fn a_refused_header_is_refused_every_time() {
    let good = r#"{"alg":"ES256","kid":"k"}"#;
    header_of(&with_header(good));
    header_of(&with_header(good));
    // Refusals are not remembered: the same bytes are refused again, for the same reason.
    let forbidden = with_header(r#"{"alg":"ES256","kid":"k","jku":"x"}"#);
    for _ in 0..2 {
        assert!(matches!(
            refused(&forbidden),
            TokenError::ForbiddenHeader { name: "jku" }
        ));
    }
    // The accepted JSON with a trailing bit set is other bytes, refused as non-canonical.
    let encoded = B64.encode(good);
    assert_eq!(
        encoded.len() % 4,
        2,
        "the bump below must set a trailing bit"
    );
    let bumped = format!(
        "{}.{}.{}",
        bump_last(&encoded),
        B64.encode(CLAIMS),
        B64.encode("sig")
    );
    for _ in 0..2 {
        assert!(matches!(
            refused(&bumped),
            TokenError::BadBase64 { segment: "header" }
        ));
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(jws) = parse_compact(&bytes, 512) {
            let _ = jws.claims();
        }
    }

    #[test]
    fn never_panics_on_token_shaped_input(s in "[A-Za-z0-9_=+/.-]{0,300}") {
        if let Ok(jws) = parse_compact(s.as_bytes(), MAX) {
            let _ = jws.claims();
        }
    }

    #[test]
    fn any_inserted_character_outside_the_alphabet_is_refused(pos in 0usize..1000, c in "[=+/ \t\n%]") {
        let t = with_header(r#"{"alg":"ES256","kid":"k"}"#);
        let pos = pos % (t.len() + 1);
        let bad = format!("{}{c}{}", &t[..pos], &t[pos..]);
        prop_assert!(parse_compact(bad.as_bytes(), MAX).is_err());
    }
}

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};

use super::{
    MAX_JWKS_BYTES, MAX_JWKS_KEYS, VerifyingKey, has_roca_fingerprint, parse_jwks, parse_pem,
};
use crate::alg::Alg;
use crate::error::TokenError;
use crate::jws::parse_compact;

const RSA_PK8: &str = include_str!("../../tests/data/rsa2048.pk8.pem");
const RSA_SPKI: &str = include_str!("../../tests/data/rsa2048.spki.pem");
const P256_PK8: &str = include_str!("../../tests/data/p256.pk8.pem");
const P256_SPKI: &str = include_str!("../../tests/data/p256.spki.pem");
const P384_PK8: &str = include_str!("../../tests/data/p384.pk8.pem");
const P384_SPKI: &str = include_str!("../../tests/data/p384.spki.pem");
const ED25519_PK8: &str = include_str!("../../tests/data/ed25519.pk8.pem");
const ED25519_SPKI: &str = include_str!("../../tests/data/ed25519.spki.pem");
const RSA1024_SPKI: &str = include_str!("../../tests/data/rsa1024.spki.pem");
const RSA_E3_SPKI: &str = include_str!("../../tests/data/rsa2048-e3.spki.pem");
const P521_SPKI: &str = include_str!("../../tests/data/p521.spki.pem");

/// The DER inside a PEM file.
fn pem_der(pem: &str) -> Vec<u8> {
    STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap()
}

/// A test signing key for one algorithm.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    /// The fixture key that signs `alg`.
    fn for_alg(alg: Alg) -> Self {
        match alg {
            Alg::ES256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pem_der(P256_PK8),
                )
                .unwrap(),
            ),
            Alg::ES384 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &pem_der(P384_PK8),
                )
                .unwrap(),
            ),
            Alg::EdDSA => {
                Self::Ed(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(ED25519_PK8)).unwrap())
            }
            _ => Self::Rsa(RsaKeyPair::from_pkcs8(&pem_der(RSA_PK8)).unwrap()),
        }
    }

    /// The public key as a JWK without `alg`, `use` or `kid`.
    fn jwk(&self) -> Value {
        match self {
            Self::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty":"RSA","n":B64.encode(&c.n),"e":B64.encode(&c.e)})
            }
            Self::Ec(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let crv = if x.len() == 32 { "P-256" } else { "P-384" };
                json!({"kty":"EC","crv":crv,"x":B64.encode(x),"y":B64.encode(y)})
            }
            Self::Ed(k) => json!({"kty":"OKP","crv":"Ed25519","x":B64.encode(k.public_key())}),
        }
    }

    /// Signs `message` with `alg`.
    fn sign(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut sig).unwrap();
                sig
            }
            Self::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Self::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// A signed compact token with `header` and a small claim set.
    fn token(&self, alg: Alg, header: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(r#"{"sub":"alice"}"#)
        );
        format!("{input}.{}", B64.encode(self.sign(alg, input.as_bytes())))
    }
}

/// `jwk` with the members of `changes` set (a `null` change removes the member).
fn with(mut jwk: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            jwk.as_object_mut().unwrap().remove(k);
        } else {
            jwk[k] = v.clone();
        }
    }
    jwk
}

/// Parses a JWKS holding `jwk` alone and returns its one key.
fn one_key(jwk: &Value) -> VerifyingKey {
    let mut set = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
    assert_eq!(set.skipped, Vec::<String>::new());
    set.keys.pop().unwrap()
}

/// Parses a JWKS holding `jwk` alone, which must be skipped, and returns the reason.
fn skip_reason(jwk: &Value) -> String {
    let set = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
    assert!(set.keys.is_empty(), "accepted {jwk}");
    assert_eq!(set.skipped.len(), 1);
    let reason = set.skipped[0].strip_prefix("keys[0]: ").unwrap().to_owned();
    // No key material in reasons.
    for member in ["n", "x", "y", "d", "k"] {
        if let Some(Value::String(s)) = jwk.get(member) {
            assert!(s.len() < 8 || !reason.contains(&s[..8]), "{reason}");
        }
    }
    reason
}

#[test]
fn every_algorithm_signs_and_verifies_through_a_jwk_and_a_token() {
    for alg in Alg::ALL {
        let signer = Signer::for_alg(alg);
        let key = one_key(&with(
            signer.jwk(),
            json!({"alg": alg.as_str(), "kid": "k1", "use": "sig"}),
        ));
        assert_eq!((key.alg, key.kid.as_deref()), (alg, Some("k1")));

        let token = signer.token(
            alg,
            &json!({"alg": alg.as_str(), "kid": "k1", "typ": "JWT"}),
        );
        let jws = parse_compact(token.as_bytes(), 8192).unwrap();
        key.verify(jws.header.alg, jws.signing_input, &jws.signature)
            .unwrap();

        // Any change to the signature or the signed bytes fails.
        let mut sig = jws.signature.clone();
        *sig.last_mut().unwrap() ^= 1;
        assert_eq!(
            key.verify(alg, jws.signing_input, &sig),
            Err(TokenError::BadSignature),
            "{alg}"
        );
        let mut input = jws.signing_input.to_vec();
        input[3] ^= 1;
        assert_eq!(
            key.verify(alg, &input, &jws.signature),
            Err(TokenError::BadSignature),
            "{alg}"
        );
        assert_eq!(
            key.verify(alg, jws.signing_input, &[]),
            Err(TokenError::BadSignature),
            "{alg}"
        );
        assert_eq!(
            key.verify(alg, jws.signing_input, &[0; 1024]),
            Err(TokenError::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn a_key_verifies_only_its_own_algorithm() {
    let rsa = Signer::for_alg(Alg::RS256);
    let key = one_key(&rsa.jwk());
    assert_eq!(key.alg, Alg::RS256, "RSA without alg means RS256");
    let sig = rsa.sign(Alg::PS256, b"msg");
    assert_eq!(
        key.verify(Alg::PS256, b"msg", &sig),
        Err(TokenError::DisallowedAlgorithm {
            alg: "PS256".into()
        })
    );
    let ps = one_key(&with(rsa.jwk(), json!({"alg":"PS256"})));
    ps.verify(Alg::PS256, b"msg", &sig).unwrap();
    assert!(matches!(
        ps.verify(Alg::RS256, b"msg", &rsa.sign(Alg::RS256, b"msg")),
        Err(TokenError::DisallowedAlgorithm { .. })
    ));

    let ec = Signer::for_alg(Alg::ES256);
    let key = one_key(&ec.jwk());
    assert_eq!(key.alg, Alg::ES256);
    assert!(matches!(
        key.verify(Alg::ES384, b"m", &[0; 96]),
        Err(TokenError::DisallowedAlgorithm { .. })
    ));
    assert_eq!(one_key(&Signer::for_alg(Alg::ES384).jwk()).alg, Alg::ES384);
    let ed = Signer::for_alg(Alg::EdDSA);
    assert_eq!(one_key(&ed.jwk()).alg, Alg::EdDSA);
    assert_eq!(
        one_key(&with(ed.jwk(), json!({"alg":"Ed25519"}))).alg,
        Alg::EdDSA
    );
}

#[test]
fn alg_must_fit_the_key_type() {
    let rsa = Signer::for_alg(Alg::RS256).jwk();
    let p256 = Signer::for_alg(Alg::ES256).jwk();
    let p384 = Signer::for_alg(Alg::ES384).jwk();
    let ed = Signer::for_alg(Alg::EdDSA).jwk();
    for (jwk, alg) in [
        (&rsa, "ES256"),
        (&rsa, "EdDSA"),
        (&p256, "ES384"),
        (&p256, "RS256"),
        (&p384, "ES256"),
        (&ed, "ES256"),
    ] {
        assert!(
            skip_reason(&with(jwk.clone(), json!({ "alg": alg }))).contains("does not fit"),
            "{alg}"
        );
    }
    for alg in [
        "HS256", "ES512", "ES521", "ES224", "RSA1_5", "none", "rs256",
    ] {
        assert!(
            skip_reason(&with(rsa.clone(), json!({ "alg": alg }))).contains("is not supported"),
            "{alg}"
        );
    }
    assert_eq!(
        skip_reason(&with(rsa, json!({"alg":256}))),
        "alg is not a string"
    );
}

#[test]
fn symmetric_unknown_and_malformed_key_types_are_skipped() {
    let oct = json!({"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0","alg":"HS256"});
    assert_eq!(skip_reason(&oct), "kty \"oct\" is not supported");
    assert_eq!(
        skip_reason(&json!({"kty":"AKP","alg":"ML-DSA-44","pub":"AAAA"})),
        "kty \"AKP\" is not supported"
    );
    assert_eq!(
        skip_reason(&json!({"kty":"rsa"})),
        "kty \"rsa\" is not supported"
    );
    assert_eq!(
        skip_reason(&json!({"n":"AQAB","e":"AQAB"})),
        "kty is missing"
    );
    assert_eq!(skip_reason(&json!({"kty":["RSA"]})), "kty is not a string");
}

#[test]
fn use_key_ops_and_private_members_are_enforced() {
    let ec = Signer::for_alg(Alg::ES256).jwk();
    for changes in [json!({"use":"enc"}), json!({"use":"SIG"}), json!({"use":1})] {
        assert_eq!(
            skip_reason(&with(ec.clone(), changes)),
            "use is not \"sig\""
        );
    }
    for ops in [
        json!(["encrypt"]),
        json!(["sign"]),
        json!([]),
        json!("verify"),
        json!(["verify", 1]),
    ] {
        assert_eq!(
            skip_reason(&with(ec.clone(), json!({ "key_ops": ops }))),
            "key_ops does not allow \"verify\""
        );
    }
    one_key(&with(
        ec.clone(),
        json!({"key_ops":["sign","verify"],"use":"sig"}),
    ));
    for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        let reason = skip_reason(&with(ec.clone(), json!({ member: "AAAA" })));
        assert_eq!(reason, format!("private key member {member:?} is present"));
    }
    for kid in [json!(1), json!(["k"]), json!(null)] {
        if kid.is_null() {
            assert_eq!(one_key(&ec).kid, None);
        } else {
            assert_eq!(
                skip_reason(&with(ec.clone(), json!({ "kid": kid }))),
                "kid is not a string"
            );
        }
    }
}

#[test]
fn rsa_modulus_and_exponent_are_checked() {
    let rsa = Signer::for_alg(Alg::RS256).jwk();
    let n = B64.decode(rsa["n"].as_str().unwrap()).unwrap();
    let b64 = |bytes: &[u8]| Value::String(B64.encode(bytes));

    // Leading zero bytes are stripped, giving the same key.
    let padded = [&[0, 0][..], &n].concat();
    assert_eq!(
        one_key(&with(rsa.clone(), json!({ "n": b64(&padded) }))),
        one_key(&rsa)
    );

    // Fake odd moduli of a given byte length (only loading is tested).
    let odd = |len: usize| {
        let mut n = vec![0xc5; len];
        n[len - 1] = 0x01;
        n
    };
    for (n, bits) in [
        (odd(128), 1024),
        (odd(255), 2040),
        (odd(1025), 8200),
        (vec![], 0),
    ] {
        let reason = skip_reason(&with(rsa.clone(), json!({ "n": b64(&n) })));
        assert_eq!(
            reason,
            format!("RSA modulus has {bits} bits; 2048 to 8192 are accepted")
        );
    }
    for n in [odd(256), odd(1024), [&[0x01][..], &odd(256)].concat()] {
        one_key(&with(rsa.clone(), json!({ "n": b64(&n) })));
    }
    let mut even = n;
    *even.last_mut().unwrap() &= 0xfe;
    assert_eq!(
        skip_reason(&with(rsa.clone(), json!({ "n": b64(&even) }))),
        "RSA modulus is even"
    );

    for e in [
        &[1][..],
        &[2],
        &[0],
        &[],
        &[1, 0, 0],
        &[2, 0, 0, 0, 1],
        &[1, 0, 0, 0, 0, 1],
    ] {
        let reason = skip_reason(&with(rsa.clone(), json!({ "e": b64(e) })));
        assert_eq!(
            reason, "RSA exponent must be odd, at least 3 and below 2^33",
            "{e:?}"
        );
    }
    for e in [&[3][..], &[0, 1, 0, 1], &[1, 255, 255, 255, 255]] {
        one_key(&with(rsa.clone(), json!({ "e": b64(e) })));
    }
    assert_eq!(
        skip_reason(&with(rsa.clone(), json!({"e":null}))),
        "e is missing"
    );
    assert_eq!(skip_reason(&with(rsa, json!({"n":7}))), "n is not a string");
}

#[test]
fn members_must_be_canonical_base64url() {
    let rsa = Signer::for_alg(Alg::RS256).jwk();
    let n = rsa["n"].as_str().unwrap();
    let std = STANDARD.encode(B64.decode(n).unwrap());
    assert_ne!(
        std.trim_end_matches('='),
        n,
        "fixture should need the standard alphabet"
    );
    for bad in [
        format!("{n}="),
        format!("{n}=="),
        std,
        format!(" {n}"),
        format!("{}\n{}", &n[..40], &n[40..]),
    ] {
        assert_eq!(
            skip_reason(&with(rsa.clone(), json!({ "n": bad }))),
            "n is not canonical base64url"
        );
    }
    let ec = Signer::for_alg(Alg::ES256).jwk();
    let x = ec["x"].as_str().unwrap();
    assert_eq!(
        skip_reason(&with(ec.clone(), json!({ "x": format!("{x}=") }))),
        "x is not canonical base64url"
    );
    // 43 characters for 32 bytes: the last one carries 2 unused bits, which must be zero.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = ALPHABET
        .iter()
        .position(|&c| c == x.as_bytes()[42])
        .unwrap();
    assert_eq!(last & 3, 0);
    let flipped = format!("{}{}", &x[..42], ALPHABET[last ^ 1] as char);
    assert_eq!(
        skip_reason(&with(ec, json!({ "x": flipped }))),
        "x is not canonical base64url"
    );
}

#[test]
fn curves_and_coordinate_lengths_are_checked() {
    let p256 = Signer::for_alg(Alg::ES256).jwk();
    let p384 = Signer::for_alg(Alg::ES384).jwk();
    for crv in ["P-521", "secp256k1", "p-256", "X25519"] {
        assert_eq!(
            skip_reason(&with(p256.clone(), json!({ "crv": crv }))),
            format!("EC crv {crv:?} is not supported")
        );
    }
    assert_eq!(
        skip_reason(&with(p256.clone(), json!({"crv":null}))),
        "crv is missing"
    );
    assert_eq!(
        skip_reason(&with(p256.clone(), json!({"crv":1}))),
        "crv is not a string"
    );
    // P-256 coordinates labelled P-384, and the reverse.
    assert!(skip_reason(&with(p256.clone(), json!({"crv":"P-384"}))).contains("48 bytes"));
    assert!(skip_reason(&with(p384, json!({"crv":"P-256"}))).contains("32 bytes"));
    let short = B64.encode([7u8; 31]);
    assert!(skip_reason(&with(p256.clone(), json!({ "x": short }))).contains("32 bytes"));
    assert_eq!(skip_reason(&with(p256, json!({"y":null}))), "y is missing");

    let ed = Signer::for_alg(Alg::EdDSA).jwk();
    for crv in ["X25519", "Ed448", "ed25519"] {
        assert_eq!(
            skip_reason(&with(ed.clone(), json!({ "crv": crv }))),
            format!("OKP crv {crv:?} is not supported")
        );
    }
    assert_eq!(
        skip_reason(&with(ed, json!({ "x": B64.encode([1u8; 33]) }))),
        "Ed25519 public key must be 32 bytes"
    );
}

#[test]
fn an_ec_point_off_the_curve_is_skipped_at_load() {
    // Parsed once when the key set loads, so a point off the curve never becomes a key (it
    // would refuse every signature anyway; skipping it says why in the key errors).
    let signer = Signer::for_alg(Alg::ES256);
    let mut y = B64.decode(signer.jwk()["y"].as_str().unwrap()).unwrap();
    y[31] ^= 1;
    let reason = skip_reason(&with(signer.jwk(), json!({ "y": B64.encode(&y) })));
    assert!(
        reason.contains("crypto library refuses the ES256 key"),
        "{reason}"
    );
}

#[test]
fn the_key_set_document_is_strict_and_bounded() {
    let ok = Signer::for_alg(Alg::ES256).jwk();
    for doc in [
        "",
        "[]",
        "{}",
        r#"{"keys":{}}"#,
        r#"{"keys":"x"}"#,
        r#"{"keys":[]"#,
        r#"{"keys":[],"keys":[]}"#,
    ] {
        assert!(parse_jwks(doc.as_bytes()).is_err(), "{doc}");
    }
    // A duplicate inside one entry makes the whole document ambiguous.
    let dup = format!(
        r#"{{"keys":[{{"kty":"EC","kty":"EC","crv":"P-256","x":{},"y":{}}}]}}"#,
        ok["x"], ok["y"]
    );
    assert!(
        parse_jwks(dup.as_bytes())
            .unwrap_err()
            .contains("duplicate key")
    );
    assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().keys.is_empty());

    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
    assert!(
        parse_jwks(big.as_bytes())
            .unwrap_err()
            .contains("byte limit")
    );

    let many = json!({ "keys": vec![ok; MAX_JWKS_KEYS + 50] }).to_string();
    let set = parse_jwks(many.as_bytes()).unwrap();
    assert_eq!(set.keys.len(), MAX_JWKS_KEYS);
    assert_eq!(
        set.skipped,
        ["keys[100..]: 50 entries over the 100-key limit"]
    );
}

#[test]
fn bad_entries_are_skipped_one_by_one() {
    let ec = with(Signer::for_alg(Alg::ES256).jwk(), json!({"kid":"ec"}));
    let ed = with(Signer::for_alg(Alg::EdDSA).jwk(), json!({"kid":"ed"}));
    let doc = json!({"keys":[
        {"kty":"oct","k":"AAAA"},
        ec,
        "not an object",
        {"kty":"AKP","pub":"AAAA"},
        ed,
        with(ec, json!({"use":"enc"})),
    ]});
    let set = parse_jwks(doc.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
    assert_eq!(kids, ["ec", "ed"]);
    assert_eq!(
        set.skipped,
        [
            "keys[0]: kty \"oct\" is not supported",
            "keys[2]: not a JSON object",
            "keys[3]: kty \"AKP\" is not supported",
            "keys[5]: use is not \"sig\"",
        ]
    );
}

#[test]
fn debug_never_shows_key_material() {
    let jwk = Signer::for_alg(Alg::RS256).jwk();
    let key = one_key(&with(jwk.clone(), json!({"kid":"k1"})));
    let debug = format!("{key:?}");
    assert_eq!(debug, r#"VerifyingKey { kid: Some("k1"), alg: RS256, .. }"#);
    let set = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
    assert!(!format!("{set:?}").contains(&jwk["n"].as_str().unwrap()[..16]));
}

#[test]
fn roca_keys_are_refused() {
    // Wycheproof json_web_key_test tcId 7: an Infineon RSALib (ROCA) modulus.
    const ROCA_N: &str = "AanFpofbj7KjD4Lf-N2hVMKR7yewSyXhhbirIMTGpfYEhZ_lnt5UoK98DnKIgArXGTu3MaW_HhFw16HGaTDUHqPrId7fe4r11CqRw09yBFuW79V8sYIwHdzCaWflUI6auImYbVfoN9_nD5n8N8SY9DwXw7mwZM9wREPXoDPgOoIWl6q_MPsp7n0zs3Z5ZaiQWOOzl1S9OhwAfSiiOwz6efnXEaxuTEtPd7BjSx7NaFka8Dx9U7YqXy2RFj1O9PjyaDGuRh7YXsX3iMUSP_wSyHQg_c_qHRtKUsNSGCT7OZg0hzm2KphtjnayKJvC64vAbROBR4Ubg6Bxg9IQVZ-QYyE";
    assert!(has_roca_fingerprint(&B64.decode(ROCA_N).unwrap()));
    let reason = skip_reason(&json!({"kty":"RSA","n":ROCA_N,"e":"AQAB"}));
    assert_eq!(
        reason,
        "RSA modulus has the ROCA fingerprint (CVE-2017-15361)"
    );
    let rsa = Signer::for_alg(Alg::RS256).jwk();
    assert!(!has_roca_fingerprint(
        &B64.decode(rsa["n"].as_str().unwrap()).unwrap()
    ));
}

#[test]
fn pem_keys_load_and_verify() {
    for (pem, alg) in [
        (RSA_SPKI, Alg::RS256),
        (P256_SPKI, Alg::ES256),
        (P384_SPKI, Alg::ES384),
        (ED25519_SPKI, Alg::EdDSA),
    ] {
        let key = parse_pem(pem, None).unwrap();
        assert_eq!((key.alg, key.kid.as_deref()), (alg, None));
        let signer = Signer::for_alg(alg);
        key.verify(alg, b"message", &signer.sign(alg, b"message"))
            .unwrap();
        // The PEM and JWK forms of one key are the same key.
        assert_eq!(key, one_key(&signer.jwk()));
        // The algorithm may be stated if it fits.
        assert_eq!(parse_pem(pem, Some(alg)).unwrap(), key);
        // CRLF line endings and surrounding blank lines are fine.
        assert_eq!(
            parse_pem(&format!("\n{}\n", pem.replace('\n', "\r\n")), None).unwrap(),
            key
        );
    }
    let ps = parse_pem(RSA_SPKI, Some(Alg::PS384)).unwrap();
    let signer = Signer::for_alg(Alg::PS384);
    ps.verify(Alg::PS384, b"m", &signer.sign(Alg::PS384, b"m"))
        .unwrap();
    assert_eq!(parse_pem(RSA_E3_SPKI, None).unwrap().alg, Alg::RS256);
}

#[test]
fn pem_keys_follow_the_same_rules() {
    let err = |pem: &str, alg: Option<Alg>| parse_pem(pem, alg).unwrap_err();
    assert!(err(RSA1024_SPKI, None).contains("1024 bits"));
    assert!(err(P521_SPKI, None).contains("curve is not supported"));
    assert!(err(RSA_SPKI, Some(Alg::ES256)).contains("does not fit an RSA key"));
    assert!(err(P256_SPKI, Some(Alg::ES384)).contains("does not fit a P-256 key"));
    assert!(err(P384_SPKI, Some(Alg::RS256)).contains("does not fit a P-384 key"));
    assert!(err(ED25519_SPKI, Some(Alg::ES256)).contains("does not fit an Ed25519 key"));
}

#[test]
fn pem_framing_and_der_are_strict() {
    let body: String = RSA_SPKI
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let wrap = |label: &str, body: &str| {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    };
    let der = pem_der(RSA_SPKI);
    let with_der = |der: &[u8]| wrap("PUBLIC KEY", &STANDARD.encode(der));
    let mut bad = vec![
        wrap("RSA PUBLIC KEY", &body),
        wrap("PRIVATE KEY", &body),
        wrap("CERTIFICATE", &body),
        format!("{RSA_SPKI}{RSA_SPKI}"),
        format!("junk\n{RSA_SPKI}"),
        wrap("PUBLIC KEY", &body.replace('A', "*")),
        wrap("PUBLIC KEY", ""),
        // Trailing data, truncation, a wrong outer tag, a long-form length that should be short.
        with_der(&[&der[..], &[0]].concat()),
        with_der(&der[..der.len() - 1]),
        with_der(&[&[0x31], &der[1..]].concat()),
        with_der(&[0x30, 0x81, 0x03, 0x02, 0x01, 0x00]),
        with_der(&[0x30, 0x80, 0x00, 0x00]),
    ];
    // Compressed EC point.
    let mut p256 = pem_der(P256_SPKI);
    let at = p256.len() - 65;
    assert_eq!(p256[at], 0x04);
    p256[at] = 0x02;
    bad.push(with_der(&p256));
    // Unused bits in the BIT STRING.
    let mut ed = pem_der(ED25519_SPKI);
    let at = ed.len() - 33;
    ed[at] = 1;
    bad.push(with_der(&ed));
    for pem in bad {
        assert!(parse_pem(&pem, None).is_err(), "{pem}");
    }
    // A negative modulus INTEGER (high bit set without the 0x00 prefix).
    let mut negative = der;
    let at = negative
        .windows(4)
        .position(|w| w == [0x02, 0x82, 0x01, 0x01])
        .unwrap();
    negative[at + 4] = 0x80;
    assert!(parse_pem(&with_der(&negative), None).is_err());
}

/// Where the vendored Wycheproof vectors live.
fn wycheproof(file: &str) -> Value {
    let dir = std::env::var("WYCHEPROOF_DIR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/wycheproof"
        )
        .into()
    });
    let path = format!("{dir}/{file}");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

#[test]
fn wycheproof_pem_and_jwk_forms_give_the_same_key() {
    let hex = |s: &str| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>()
    };
    let mut compared = 0;
    for (file, jwk_of) in [
        ("ecdsa_secp256r1_sha256_p1363_test.json", "publicKey"),
        ("ed25519_test.json", "publicKeyJwk"),
        ("rsa_signature_2048_sha256_test.json", "keyJwk"),
    ] {
        for group in wycheproof(file)["testGroups"].as_array().unwrap() {
            let jwk = if jwk_of == "publicKey" {
                let point = hex(group["publicKey"]["uncompressed"].as_str().unwrap());
                json!({"kty":"EC","crv":"P-256","x":B64.encode(&point[1..33]),"y":B64.encode(&point[33..])})
            } else {
                with(group[jwk_of].clone(), json!({"kid":null}))
            };
            let from_pem = parse_pem(group["publicKeyPem"].as_str().unwrap(), None).unwrap();
            assert_eq!(from_pem, one_key(&jwk), "{file}");
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared}");
}

#[test]
fn small_order_ed25519_keys_are_refused() {
    // The identity point: with it ring accepts R = identity, S = 0 over any message.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut signed_identity = identity;
    signed_identity[31] |= 0x80;
    for x in [identity, signed_identity, [0u8; 32]] {
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(x)});
        assert!(skip_reason(&jwk).contains("small-order"), "{x:?}");
    }
}

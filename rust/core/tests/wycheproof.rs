//! Wycheproof (C2SP) vectors against the token parser, the key loader and the verifier.
//!
//! The vectors are read from `shared/testdata/wycheproof/` (override with `WYCHEPROOF_DIR`). A
//! missing file fails the test; it is never skipped.
//!
//! JWS and JWK vectors run through the same path as a real token: `parse_jwks` on the group's
//! key set, `parse_compact` on the token, key selection by `kid`, `VerifyingKey::verify`. Every
//! "invalid" case must be refused somewhere on that path. Every "valid" case must be accepted,
//! unless its tcId is allow-listed below with the reason our policy is stricter.
//!
//! Most Wycheproof JWS payloads are not JSON (`foo`, empty, binary), so a JWT parser refuses them
//! before the signature is looked at. So that those cases still test the signature layer, a token
//! refused only for its payload is checked again with a `{}` payload standing in for parsing and
//! the original signing input for verification. An invalid case that passes this JWS-layer check
//! fails the test just as if it had been accepted outright.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use caddy_iap_core::danger::{VerifyingKey, parse_compact, parse_jwks};
use caddy_iap_core::{Alg, TokenError};
use serde_json::{Value, json};

/// Token length cap used for every case (the engine's default).
const MAX_TOKEN: usize = 8192;

/// What an allow-listed valid case must do instead of being accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instead {
    /// Refused as a JWT only for its payload; the signature verifies at the JWS layer.
    JwsLayerOnly,
    /// Refused outright, at every layer.
    Refused,
}

/// Valid cases of one file that our policy handles differently, with the reason.
struct Allowed {
    ids: &'static [u64],
    instead: Instead,
    reason: &'static str,
}

/// json_web_signature_test.json: every valid case is here, because none of them is a JWT.
const JWS_ALLOWED: &[Allowed] = &[
    Allowed {
        ids: &[
            18, 33, 260, 261, 262, 263, 265, 266, 267, 269, 270, 271, 273, 274, 275, 287, 288, 321,
            322, 323, 326, 327, 328, 345, 349, 378,
        ],
        instead: Instead::JwsLayerOnly,
        reason: "payload is not a JSON object, so not a JWT; the signature is verified at the JWS layer",
    },
    Allowed {
        ids: &[259, 264, 268, 272, 320, 325],
        instead: Instead::JwsLayerOnly,
        reason: "empty payload is refused (a JWT needs a claims set); the signature is verified at the JWS layer",
    },
    Allowed {
        ids: &[346, 350],
        instead: Instead::Refused,
        reason: "token alg PS384 but the JWK says PS256: each key has exactly one algorithm (RFC 8725bis §3.1)",
    },
    Allowed {
        ids: &[347, 351],
        instead: Instead::Refused,
        reason: "ES512 on P-521 is not supported",
    },
    Allowed {
        ids: &[1, 348, 352, 357, 358, 359, 372, 373, 376, 377],
        instead: Instead::Refused,
        reason: "HMAC is never accepted: kty oct keys are skipped and HS* algs refused",
    },
];

/// json_web_key_test.json.
const JWK_ALLOWED: &[Allowed] = &[
    Allowed {
        ids: &[5],
        instead: Instead::JwsLayerOnly,
        reason: "payload is not a JSON object, so not a JWT; the signature is verified at the JWS layer",
    },
    Allowed {
        ids: &[2, 13, 14, 15],
        instead: Instead::Refused,
        reason: "HMAC is never accepted: kty oct keys are skipped and HS* algs refused",
    },
];

/// json_web_key_test.json groups (by first tcId) whose key set must yield a usable key; every
/// other group's key set must be skipped entirely when loading.
const JWK_GROUPS_WITH_A_KEY: &[u64] = &[
    1, // mixed set: the EC public key loads, the oct key is skipped
    5, // plain RS256 key
       // (22, an EC point off the curve, is skipped at load: keys are parsed and checked once)
];

#[test]
fn json_web_signature_vectors() {
    let counts = run_jose_file("json_web_signature_test.json", JWS_ALLOWED, |_, _| {});
    assert!(
        counts.values().map(Counts::total).sum::<usize>() >= 401,
        "not every case ran"
    );
}

#[test]
fn json_web_key_vectors() {
    let counts = run_jose_file("json_web_key_test.json", JWK_ALLOWED, |first_id, keys| {
        let expected = usize::from(JWK_GROUPS_WITH_A_KEY.contains(&first_id));
        assert_eq!(
            keys.len(),
            expected,
            "group starting at tcId {first_id}: usable keys"
        );
    });
    assert!(
        counts.values().map(Counts::total).sum::<usize>() >= 26,
        "not every case ran"
    );
}

#[test]
fn ecdsa_p256_p1363_primitive_vectors() {
    run_primitive_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Alg::ES256,
        |group| {
            let point = hex(group["publicKey"]["uncompressed"].as_str().unwrap());
            json!({"kty":"EC","crv":"P-256","x":B64.encode(&point[1..33]),"y":B64.encode(&point[33..])})
        },
    );
}

#[test]
fn ed25519_primitive_vectors() {
    run_primitive_file("ed25519_test.json", Alg::EdDSA, |group| {
        group["publicKeyJwk"].clone()
    });
}

#[test]
fn rsa_pkcs1_2048_sha256_primitive_vectors() {
    run_primitive_file("rsa_signature_2048_sha256_test.json", Alg::RS256, |group| {
        group["keyJwk"].clone()
    });
}

/// Per-label tallies of how cases ended.
#[derive(Debug, Default)]
struct Counts {
    valid_accepted: usize,
    valid_jws_layer_only: usize,
    valid_refused_by_policy: usize,
    invalid_refused: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.valid_accepted
            + self.valid_jws_layer_only
            + self.valid_refused_by_policy
            + self.invalid_refused
    }
}

/// Runs a JsonWebSignature or JsonWebKey file. `check_keys` sees each group's first tcId and
/// loaded keys. Returns the tallies per key algorithm, after printing them.
fn run_jose_file(
    file: &str,
    allowed: &[Allowed],
    check_keys: impl Fn(u64, &[VerifyingKey]),
) -> BTreeMap<String, Counts> {
    let doc = load(file);
    let allow_list: BTreeMap<u64, &Allowed> = allowed
        .iter()
        .flat_map(|a| a.ids.iter().map(move |&id| (id, a)))
        .collect();
    let mut used = Vec::new();
    let mut failures = Vec::new();
    let mut per_alg: BTreeMap<String, Counts> = BTreeMap::new();
    let mut invalid_stages: BTreeMap<String, usize> = BTreeMap::new();

    for group in doc["testGroups"].as_array().unwrap() {
        // A JsonWebSignature group has one JWK; a JsonWebKey group has a whole key set.
        let key_doc = group.get("public").unwrap_or(&group["private"]);
        let key_set = if key_doc.get("keys").is_some() {
            key_doc.clone()
        } else {
            json!({ "keys": [key_doc] })
        };
        let parsed = parse_jwks(key_set.to_string().as_bytes()).unwrap();
        let tests = group["tests"].as_array().unwrap();
        check_keys(tests[0]["tcId"].as_u64().unwrap(), &parsed.keys);

        let label = key_label(&key_set["keys"][0]);
        let mut counts = Counts::default();
        for case in tests {
            let id = case["tcId"].as_u64().unwrap();
            let token = case["jws"].as_str().unwrap();
            let full = verify_token(token, &parsed.keys);
            let jws_layer = match &full {
                Err(Refusal::Payload) => Some(verify_jws_layer(token, &parsed.keys)),
                _ => None,
            };
            let outcome = format!(
                "tcId {id} ({}): full {full:?}, JWS layer {jws_layer:?}",
                case["comment"]
            );
            match (case["result"].as_str().unwrap(), allow_list.get(&id)) {
                ("invalid", _) if full.is_err() && !matches!(jws_layer, Some(Ok(()))) => {
                    counts.invalid_refused += 1;
                    *invalid_stages.entry(stage(&full, &jws_layer)).or_default() += 1;
                }
                ("invalid", _) => failures.push(format!("invalid case accepted: {outcome}")),
                ("valid", None) if full.is_ok() => counts.valid_accepted += 1,
                ("valid", Some(a))
                    if a.instead == Instead::JwsLayerOnly && jws_layer == Some(Ok(())) =>
                {
                    counts.valid_jws_layer_only += 1;
                    used.push(id);
                }
                ("valid", Some(a))
                    if a.instead == Instead::Refused
                        && full.is_err()
                        && jws_layer != Some(Ok(())) =>
                {
                    counts.valid_refused_by_policy += 1;
                    used.push(id);
                }
                ("valid", Some(a)) => {
                    failures.push(format!("allow-listed ({}) but {outcome}", a.reason))
                }
                ("valid", None) => failures.push(format!("valid case refused: {outcome}")),
                (other, _) => failures.push(format!("tcId {id}: unknown result {other:?}")),
            }
        }
        println!(
            "{file} group {:?} [{label}] tcId {}..: keys {} (skipped: {:?}); valid accepted {}, valid JWS-layer only {}, \
             valid refused by policy {}, invalid refused {}",
            group["comment"].as_str().unwrap_or(""),
            tests[0]["tcId"],
            parsed.keys.len(),
            parsed.skipped,
            counts.valid_accepted,
            counts.valid_jws_layer_only,
            counts.valid_refused_by_policy,
            counts.invalid_refused,
        );
        let total = per_alg.entry(label).or_default();
        total.valid_accepted += counts.valid_accepted;
        total.valid_jws_layer_only += counts.valid_jws_layer_only;
        total.valid_refused_by_policy += counts.valid_refused_by_policy;
        total.invalid_refused += counts.invalid_refused;
    }
    for (label, c) in &per_alg {
        println!("{file} total [{label}]: {c:?}");
    }
    println!("{file} invalid cases by where they were refused: {invalid_stages:?}");
    let stale: Vec<_> = allow_list.keys().filter(|id| !used.contains(id)).collect();
    assert!(
        stale.is_empty(),
        "{file}: allow-listed tcIds that did not occur or behaved otherwise: {stale:?}"
    );
    assert!(
        failures.is_empty(),
        "{file}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        per_alg.values().map(Counts::total).sum::<usize>() > 0,
        "{file}: no case ran"
    );
    per_alg
}

/// Why a token was refused, as far as the allow-list cares.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Refused only because the payload is not a JWT claims set (not a JSON object, or empty).
    Payload,
    /// Refused for any other reason.
    Other(String),
}

/// Where a refused case was stopped: parsing, key loading/selection or verification, in the
/// full path or at the JWS layer.
fn stage(full: &Result<(), Refusal>, jws_layer: &Option<Result<(), String>>) -> String {
    let first_word = |s: &str| s.split(':').next().unwrap_or("").to_owned();
    match (full, jws_layer) {
        (Err(Refusal::Other(e)), _) => first_word(e),
        (_, Some(Err(e))) => format!("JWS layer {}", first_word(e)),
        _ => "?".into(),
    }
}

/// The production path: parse strictly, pick the key by `kid`, verify.
fn verify_token(token: &str, keys: &[VerifyingKey]) -> Result<(), Refusal> {
    let jws = match parse_compact(token.as_bytes(), MAX_TOKEN).and_then(|jws| {
        jws.claims()?;
        Ok(jws)
    }) {
        Ok(jws) => jws,
        Err(TokenError::BadJson {
            segment: "payload", ..
        }) => return Err(Refusal::Payload),
        Err(TokenError::BadBase64 { segment: "payload" })
            if token.split('.').nth(1) == Some("") =>
        {
            return Err(Refusal::Payload);
        }
        Err(e) => return Err(Refusal::Other(format!("parse: {e}"))),
    };
    let key = select(keys, jws.header.kid.as_deref()).map_err(Refusal::Other)?;
    key.verify(jws.header.alg, jws.signing_input, &jws.signature)
        .map_err(|e| Refusal::Other(format!("verify: {e}")))
}

/// The JWS layer of a token refused for its payload alone: the header and signature go through
/// `parse_compact` (with `{}` standing in for the payload), and the signature is verified over
/// the original signing input. The payload must still be canonical base64url.
fn verify_jws_layer(token: &str, keys: &[VerifyingKey]) -> Result<(), String> {
    let [header, payload, signature] = token.split('.').collect::<Vec<_>>()[..] else {
        return Err("not three segments".into());
    };
    B64.decode(payload)
        .map_err(|_| "payload is not canonical base64url")?;
    let stand_in = format!("{header}.{}.{signature}", B64.encode("{}"));
    let jws = parse_compact(stand_in.as_bytes(), MAX_TOKEN).map_err(|e| format!("parse: {e}"))?;
    let key = select(keys, jws.header.kid.as_deref())?;
    let signing_input = format!("{header}.{payload}");
    key.verify(jws.header.alg, signing_input.as_bytes(), &jws.signature)
        .map_err(|e| format!("verify: {e}"))
}

/// The one key with this `kid` (any key when the token has none); none or several is a refusal.
fn select<'k>(keys: &'k [VerifyingKey], kid: Option<&str>) -> Result<&'k VerifyingKey, String> {
    let mut matching = keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
    match (matching.next(), matching.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err("key: none usable for this kid".into()),
        (Some(_), Some(_)) => Err("key: several match this kid".into()),
    }
}

/// A label for tallies: the JWK's `alg`, else its `kty`/`crv`.
fn key_label(jwk: &Value) -> String {
    match (
        jwk["alg"].as_str(),
        jwk["kty"].as_str(),
        jwk["crv"].as_str(),
    ) {
        (Some(alg), _, _) => alg.to_owned(),
        (None, Some(kty), Some(crv)) => format!("{kty} {crv}"),
        (None, kty, _) => kty.unwrap_or("?").to_owned(),
    }
}

/// Runs a primitive signature file through `VerifyingKey::verify`, with each group's key built
/// from a JWK by `jwk_of`.
fn run_primitive_file(file: &str, alg: Alg, jwk_of: impl Fn(&Value) -> Value) {
    let doc = load(file);
    let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let jwk = jwk_of(group);
        let mut parsed = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
        let key = parsed.keys.pop();
        for case in group["tests"].as_array().unwrap() {
            let id = &case["tcId"];
            let (msg, sig) = (
                hex(case["msg"].as_str().unwrap()),
                hex(case["sig"].as_str().unwrap()),
            );
            let verdict = match &key {
                Some(key) => key.verify(alg, &msg, &sig).map_err(|e| e.to_string()),
                None => Err(format!("key refused: {:?}", parsed.skipped)),
            };
            match (case["result"].as_str().unwrap(), verdict) {
                ("valid", Ok(())) => valid += 1,
                ("invalid", Err(_)) => invalid += 1,
                ("acceptable", _) => acceptable += 1,
                (expected, got) => failures.push(format!(
                    "tcId {id} ({}): expected {expected}, got {got:?}",
                    case["comment"]
                )),
            }
        }
    }
    println!(
        "{file} [{alg}]: valid accepted {valid}, invalid refused {invalid}, acceptable (either) {acceptable}"
    );
    assert!(
        failures.is_empty(),
        "{file}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(valid > 0 && invalid > 0, "{file}: no case ran");
}

/// Reads one vector file.
fn load(file: &str) -> Value {
    let dir = std::env::var("WYCHEPROOF_DIR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/wycheproof"
        )
        .to_owned()
    });
    let path = format!("{dir}/{file}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (set WYCHEPROOF_DIR)"));
    serde_json::from_slice(&bytes).unwrap()
}

/// Decodes lowercase hex.
fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

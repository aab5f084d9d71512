//! Role rules and a claims set built from fuzz input, through the real engine: the claims are
//! signed (Ed25519) into a token and `decide` maps them to roles. The compiled, indexed matcher
//! is checked against a direct reading of the rules (`reference_roles`).
//!
//! Properties:
//! - the engine refuses the config exactly when a rule is malformed (`valid_config`);
//! - a verified token gets exactly the roles the reference grants, in role-table order, after
//!   an unverified `email` is dropped ("nOAuth");
//! - the request is allowed exactly when one of those roles has an allow rule.
//!
//! Names and values are mostly drawn from small pools, so that rules and claims meet.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caddy_iap_fuzz::{AUD, ISS, NOW, decide, engine, pem_der};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const ROLES: [&str; 8] = ["admin", "reader", "writer", "a,b", " x", "", "r\u{1}", "ü"];
const CLAIMS: [&str; 14] = [
    "groups",
    "scope",
    "email",
    "realm_access.roles",
    "realm_access",
    "https://example.com/roles",
    "http://x",
    "a.b.c",
    "iss",
    "sub",
    "a..b",
    ".x",
    "",
    "roles",
];
const KEYS: [&str; 10] = [
    "groups",
    "scope",
    "email",
    "realm_access",
    "roles",
    "https://example.com/roles",
    "a",
    "b",
    "c",
    "email_verified",
];
const VALUES: [&str; 14] = [
    "admins",
    "db-readers",
    "read:items",
    "a",
    "ab",
    "b",
    "",
    "a b",
    "@example.com",
    "alice@example.com",
    "ü",
    "üx",
    "x ü",
    " ",
];

/// A string from a pool, or any string.
#[derive(Arbitrary, Debug)]
enum Pick {
    Pool(u8),
    Free(String),
}

impl Pick {
    fn get(&self, pool: &[&str]) -> String {
        match self {
            Self::Pool(i) => pool[usize::from(*i) % pool.len()].to_owned(),
            Self::Free(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Cond {
    claim: Pick,
    op: u8,
    value: Pick,
}

#[derive(Arbitrary, Debug)]
struct Rule {
    role: Pick,
    when: Vec<Cond>,
}

/// A claim value.
#[derive(Arbitrary, Debug)]
enum Json {
    Str(Pick),
    /// Values joined by one or more spaces (an OAuth `scope`).
    Words(Vec<Pick>, bool),
    Num(i64),
    Bool(bool),
    Null,
    Arr(Vec<Json>),
    Obj(Vec<(Pick, Json)>),
}

impl Json {
    fn to_value(&self, depth: usize) -> Value {
        if depth > 6 {
            return Value::Null;
        }
        match self {
            Self::Str(p) => p.get(&VALUES).into(),
            Self::Words(words, double) => {
                let sep = if *double { "  " } else { " " };
                let words: Vec<String> = words.iter().map(|w| w.get(&VALUES)).collect();
                words.join(sep).into()
            }
            Self::Num(n) => (*n).into(),
            Self::Bool(b) => (*b).into(),
            Self::Null => Value::Null,
            Self::Arr(items) => items.iter().map(|j| j.to_value(depth + 1)).collect(),
            Self::Obj(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.get(&KEYS), v.to_value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<Rule>,
    allow: Vec<Pick>,
    claims: Vec<(Pick, Json)>,
    trust_unverified_email: bool,
}

/// A rule as strings: role, then (claim, op, value) conditions.
type Rules = Vec<(String, Vec<(String, &'static str, String)>)>;

const OPS: [&str; 5] = ["equals", "contains", "has", "prefix", "suffix"];

static SIGNER: LazyLock<Ed25519KeyPair> = LazyLock::new(|| {
    let pem = include_str!("../../rust/core/tests/data/ed25519.pk8.pem");
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(pem)).unwrap()
});

fuzz_target!(|input: Input| {
    let rules: Rules = input
        .rules
        .iter()
        .map(|r| {
            let when = r
                .when
                .iter()
                .map(|c| {
                    let op = OPS[usize::from(c.op) % OPS.len()];
                    (c.claim.get(&CLAIMS), op, c.value.get(&VALUES))
                })
                .collect();
            (r.role.get(&ROLES), when)
        })
        .collect();
    let allow: Vec<String> = input.allow.iter().map(|p| p.get(&ROLES)).collect();
    let config = json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "keys": {"pem": [include_str!("../../rust/core/tests/data/ed25519.spki.pem")]},
                     "trust_unverified_email": input.trust_unverified_email}],
        "roles": rules.iter().map(|(role, when)| json!({
            "role": role,
            "when": when.iter().map(|(claim, op, value)| json!({"claim": claim, "op": op, "value": value})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "allow": allow.iter().map(|role| json!({"role": role, "methods": ["*"], "paths": ["*"]})).collect::<Vec<_>>(),
        "cache": {"max_entries": 0},
        "max_token_bytes": 65536,
    });
    let engine = engine(config);
    let valid = valid_config(&rules, &allow);
    let engine = match engine {
        Ok(engine) => {
            assert!(
                valid,
                "a malformed config was accepted: {rules:?} {allow:?}"
            );
            engine
        }
        Err(e) => {
            assert!(!valid, "a well-formed config was refused: {e}");
            return;
        }
    };

    let mut claims: Map<String, Value> = input
        .claims
        .iter()
        .map(|(k, v)| (k.get(&KEYS), v.to_value(1)))
        .collect();
    // Registered claims are fixed so the token verifies; `nbf` and `jti` are left out.
    claims.remove("nbf");
    claims.remove("jti");
    for (k, v) in [
        ("iss", json!(ISS)),
        ("sub", json!("alice")),
        ("aud", json!(AUD)),
        ("iat", json!(NOW)),
        ("exp", json!(NOW + 60)),
    ] {
        claims.insert(k.into(), v);
    }
    let payload = serde_json::to_vec(&claims).unwrap();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    let signature = SIGNER.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let d = decide(&engine, "/x", token.as_bytes());
    let identity = d
        .identity
        .as_ref()
        .unwrap_or_else(|| panic!("a signed token was refused: {}", d.reason));

    if !input.trust_unverified_email && claims.get("email_verified") != Some(&Value::Bool(true)) {
        claims.remove("email");
    }
    let want = reference_roles(&rules, &allow, &claims);
    let got: Vec<&str> = identity.roles.iter().map(|r| &**r).collect();
    assert_eq!(got, want, "claims {}", Value::Object(claims.clone()));
    let allowed = want.iter().any(|r| allow.iter().any(|a| a == r));
    assert_eq!(d.allowed(), allowed, "{}", d.reason);
});

/// Whether the engine must accept these rules (role names fit for the roles header, at least
/// one condition per rule, claim paths without empty segments, non-empty values, no space in
/// a `has` value).
fn valid_config(rules: &Rules, allow: &[String]) -> bool {
    let role_ok = |name: &str| {
        !name.is_empty()
            && !name.contains(',')
            && !name.chars().any(char::is_control)
            && name.trim() == name
    };
    let claim_ok = |claim: &str| {
        claim.starts_with("http://")
            || claim.starts_with("https://")
            || (!claim.is_empty() && claim.split('.').all(|s| !s.is_empty()))
    };
    rules.iter().all(|(role, when)| {
        role_ok(role)
            && !when.is_empty()
            && when.iter().all(|(claim, op, value)| {
                claim_ok(claim) && !value.is_empty() && !(*op == "has" && value.contains(' '))
            })
    }) && allow.iter().all(|r| role_ok(r))
}

/// The roles `claims` earn, read straight from the rules: a rule grants its role when all its
/// conditions hold. Ordered as the engine's role table: first appearance in rules, then allow.
fn reference_roles<'a>(
    rules: &'a Rules,
    allow: &'a [String],
    claims: &Map<String, Value>,
) -> Vec<&'a str> {
    let granted: Vec<&str> = rules
        .iter()
        .filter(|(_, when)| when.iter().all(|(c, op, v)| holds(claims, c, op, v)))
        .map(|(role, _)| role.as_str())
        .collect();
    let mut order: HashMap<&str, usize> = HashMap::new();
    for name in rules
        .iter()
        .map(|(r, _)| r.as_str())
        .chain(allow.iter().map(String::as_str))
    {
        let next = order.len();
        order.entry(name).or_insert(next);
    }
    let mut out: Vec<&str> = Vec::new();
    for role in granted {
        if !out.contains(&role) {
            out.push(role);
        }
    }
    out.sort_by_key(|r| order[r]);
    out
}

/// Whether the condition `claim op value` holds. Only strings, and string elements of arrays,
/// ever match; `has` splits a string (not an array element) at spaces.
fn holds(claims: &Map<String, Value>, claim: &str, op: &str, value: &str) -> bool {
    let found = if claim.starts_with("http://") || claim.starts_with("https://") {
        claims.get(claim)
    } else {
        let mut parts = claim.split('.');
        let first = parts.next().and_then(|p| claims.get(p));
        parts.fold(first, |v, p| v?.as_object()?.get(p))
    };
    let test = |s: &str, whole: bool| match op {
        "equals" | "contains" => s == value,
        "has" if whole => s.split(' ').any(|w| w == value),
        "has" => s == value,
        "prefix" => s.starts_with(value),
        "suffix" => s.ends_with(value),
        _ => unreachable!(),
    };
    match found {
        Some(Value::String(s)) => test(s, true),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|s| test(s, false)),
        _ => false,
    }
}

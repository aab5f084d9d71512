//! Properties of the engine over generated inputs, for each key type (RS256, ES256, EdDSA): one
//! issuer with an inline JWKS, a hand-moved clock, and the real `Engine::decide`.
//!
//! - a valid token with any single bit flipped is refused;
//! - a valid token re-encoded non-canonically (padding, standard alphabet, trailing bits set,
//!   whitespace, segments reordered) is refused;
//! - validity and identity do not depend on JSON key order or insignificant whitespace;
//! - with the verified-token cache on, a sequence of decisions across exp/nbf/iat boundaries is
//!   the same, call by call, as with the cache off.
//!
//! Tokens are signed outside the generated cases where possible: RSA signing is slow in debug.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use caddy_iap_core::{Config, Decision, Engine, HttpFetcher, ReasonCode, Request};
use common::{KeyKind, ManualClock, Signer};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com/";
const AUD: &str = "https://api.example.com";
/// The engine's default clock-skew leeway, in seconds.
const LEEWAY: i64 = 60;
/// The engine's default longest token lifetime, in seconds.
const MAX_LIFETIME: i64 = 86_400;

/// Runs `test` on `cases` values of `strategy`; a failure panics with the shrunk input.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        // Shrinking re-runs signatures; a few hundred steps find a small case well enough.
        max_shrink_iters: 512,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// The `kid` of each fixture key in the issuer's JWKS.
fn kid(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rs256 => "rs",
        KeyKind::Es256 => "es",
        KeyKind::EdDsa => "ed",
    }
}

/// Reads one DER TLV with a definite length: (tag, contents, rest).
fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (input[0], input[1]);
    let (len, start) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    (tag, &input[start..start + len], &input[start + len..])
}

/// The fixture's public key as a JWK, read from its SPKI PEM.
fn jwk(kind: KeyKind) -> Value {
    let pem = kind.public_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = STANDARD.decode(body).unwrap();
    let (_, spki, _) = der(&spki);
    let (_, _algorithm, rest) = der(spki);
    let (tag, bits, _) = der(rest);
    assert_eq!((tag, bits[0]), (0x03, 0), "BIT STRING without unused bits");
    let key = &bits[1..];
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match kind {
        KeyKind::Rs256 => {
            let (_, rsa, _) = der(key);
            let (_, n, rest) = der(rsa);
            let (_, e, _) = der(rest);
            let n = n.strip_prefix(&[0]).unwrap_or(n);
            json!({"kty": "RSA", "kid": kid(kind), "alg": "RS256", "n": b64(n), "e": b64(e)})
        }
        KeyKind::Es256 => {
            assert_eq!((key.len(), key[0]), (65, 4), "uncompressed P-256 point");
            json!({"kty": "EC", "crv": "P-256", "kid": kid(kind), "x": b64(&key[1..33]), "y": b64(&key[33..])})
        }
        KeyKind::EdDsa => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid(kind), "x": b64(key)}),
    }
}

/// One issuer trusting all three fixture keys through an inline JWKS; `reader` may GET /items/*.
fn config(cache_entries: usize) -> Config {
    let jwks = json!({"keys": KeyKind::ALL.map(jwk)}).to_string();
    serde_json::from_value(json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "keys": {"jwks_inline": jwks}}],
        "roles": [{"role": "reader", "when": [{"claim": "groups", "op": "contains", "value": "db-readers"}]}],
        "allow": [{"role": "reader", "methods": ["GET"], "paths": ["/items/*"]}],
        "cache": {"max_entries": cache_entries},
    }))
    .unwrap()
}

fn engine(clock: &Arc<ManualClock>, cache_entries: usize) -> Engine {
    Engine::with_parts(
        &config(cache_entries),
        clock.clone(),
        Arc::new(HttpFetcher::new()),
    )
    .unwrap()
}

/// A reader's claims, valid at `NOW`, as (key, value) pairs in the usual order.
fn claim_pairs() -> Vec<(&'static str, Value)> {
    vec![
        ("iss", json!(ISS)),
        ("sub", json!("alice")),
        ("aud", json!([AUD, "other"])),
        ("iat", json!(NOW - 10)),
        ("exp", json!(NOW + 600)),
        ("email", json!("alice@example.com")),
        ("email_verified", json!(true)),
        ("name", json!("Alice Ünïcode")),
        ("groups", json!(["db-readers", "staff"])),
    ]
}

fn header_pairs(kind: KeyKind) -> Vec<(&'static str, Value)> {
    vec![
        ("alg", json!(kind.alg())),
        ("typ", json!("JWT")),
        ("kid", json!(kid(kind))),
    ]
}

fn object(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// The signers, one valid token per key type, and an engine (cache on) at `NOW`.
struct Fixture {
    signers: Vec<Signer>,
    tokens: Vec<String>,
    engine: Engine,
}

impl Fixture {
    fn new() -> Self {
        let signers: Vec<Signer> = KeyKind::ALL.into_iter().map(Signer::new).collect();
        let tokens = signers
            .iter()
            .map(|s| s.sign(&object(&header_pairs(s.kind)), &object(&claim_pairs())))
            .collect();
        let fixture = Self {
            signers,
            tokens,
            engine: engine(&Arc::new(ManualClock::at(NOW)), 1024),
        };
        for token in &fixture.tokens {
            let d = fixture.decide(token.as_bytes());
            assert!(d.allowed(), "the unmodified token is allowed: {}", d.reason);
        }
        fixture
    }

    fn decide(&self, token: &[u8]) -> Decision {
        self.engine.decide(&Request::new(
            "GET",
            "api.example.com",
            "/items/1",
            Some(token),
        ))
    }
}

/// (allowed, status, reason code): what must not depend on the cache.
fn outcome(d: &Decision) -> (bool, u16, ReasonCode) {
    (d.allowed(), d.status(), d.reason_code())
}

/// Refused as an invalid token: a 401, never a 5xx or an allow.
fn refused(d: &Decision, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!d.allowed(), "{what}: allowed");
    prop_assert_eq!(d.status(), 401, "{}: {}", what, d.reason);
    Ok(())
}

#[test]
fn any_single_bit_flip_is_refused() {
    let f = Fixture::new();
    check(
        512,
        (0..KeyKind::ALL.len(), any::<Index>(), 0..8u8),
        |(k, at, bit)| {
            let mut token = f.tokens[k].clone().into_bytes();
            let i = at.index(token.len());
            token[i] ^= 1 << bit;
            let what = format!("{:?} bit {bit} of byte {i}", KeyKind::ALL[k]);
            refused(&f.decide(&token), &what)
        },
    );
}

/// The same, exhaustively: every bit of every byte (about 10,000 decisions).
#[test]
fn every_single_bit_flip_is_refused() {
    let f = Fixture::new();
    for (kind, token) in KeyKind::ALL.iter().zip(&f.tokens) {
        for i in 0..token.len() {
            for bit in 0..8 {
                let mut flipped = token.clone().into_bytes();
                flipped[i] ^= 1 << bit;
                let what = format!("{kind:?} bit {bit} of byte {i}");
                refused(&f.decide(&flipped), &what).unwrap();
            }
        }
    }
}

/// A way to re-encode a token that a strict parser must refuse.
#[derive(Debug, Clone)]
enum Reencoding {
    /// `=` padding on a segment whose length is not a multiple of 4.
    Padding(Index),
    /// The standard alphabet (`+/`) in the segments of this bit mask (1..=7).
    StandardAlphabet(u8),
    /// Non-zero unused low bits in the last character of a segment.
    TrailingBits(Index, u8),
    /// One whitespace character inserted.
    Whitespace(Index, char),
    /// The three segments in another order (permutation 1..=5 of 0..=5).
    Reordered(usize),
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const PERMUTATIONS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

impl Reencoding {
    fn strategy() -> impl Strategy<Value = Self> {
        prop_oneof![
            any::<Index>().prop_map(Self::Padding),
            (1..8u8).prop_map(Self::StandardAlphabet),
            (any::<Index>(), 1..=15u8).prop_map(|(i, b)| Self::TrailingBits(i, b)),
            (
                any::<Index>(),
                prop::sample::select(vec![' ', '\t', '\n', '\r', '\u{b}', '\u{c}'])
            )
                .prop_map(|(i, c)| Self::Whitespace(i, c)),
            (1..6usize).prop_map(Self::Reordered),
        ]
    }

    /// The re-encoded token, or `None` when this re-encoding leaves `token` as it is.
    fn apply(&self, token: &str) -> Option<String> {
        let mut segs: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Segments with unused bits in their last character (length 2 or 3 mod 4).
        let partial: Vec<usize> = (0..3).filter(|&i| segs[i].len() % 4 != 0).collect();
        match *self {
            Self::Padding(at) => {
                let seg = &mut segs[partial[at.index(partial.len())]];
                let pad = 4 - seg.len() % 4;
                seg.extend(std::iter::repeat_n('=', pad));
            }
            Self::StandardAlphabet(mask) => {
                for (i, seg) in segs.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 {
                        *seg = seg.replace('-', "+").replace('_', "/");
                    }
                }
            }
            Self::TrailingBits(at, bits) => {
                let seg = &mut segs[partial[at.index(partial.len())]];
                let unused = if seg.len() % 4 == 2 { 4 } else { 2 };
                let mask = (1u8 << unused) - 1;
                let last = seg.pop()?;
                let value = ALPHABET.iter().position(|&c| c == last as u8)? as u8;
                let set = (bits - 1) % mask + 1; // 1..=mask
                seg.push(ALPHABET[usize::from(value | set)] as char);
            }
            Self::Whitespace(at, c) => {
                let mut token = token.to_owned();
                token.insert(at.index(token.len() + 1), c);
                return Some(token);
            }
            Self::Reordered(p) => {
                let order = PERMUTATIONS[p];
                segs = order.iter().map(|&i| segs[i].clone()).collect();
            }
        }
        let out = segs.join(".");
        (out != token).then_some(out)
    }
}

#[test]
fn non_canonical_encodings_are_refused() {
    let f = Fixture::new();
    // The signature is 256 or 64 bytes: its last character always has unused bits.
    for token in &f.tokens {
        assert_ne!(token.rsplit('.').next().unwrap().len() % 4, 0);
    }
    check(
        1024,
        (0..KeyKind::ALL.len(), Reencoding::strategy()),
        |(k, how)| {
            let changed = how.apply(&f.tokens[k]);
            // Only the standard alphabet can leave a token as it is (no `-` or `_` in it).
            prop_assume!(changed.is_some());
            let token = changed.unwrap_or_default();
            let what = format!("{:?} {how:?}", KeyKind::ALL[k]);
            refused(&f.decide(token.as_bytes()), &what)
        },
    );
}

/// Insignificant JSON whitespace, drawn in turn from a generated list.
struct Spacing {
    choices: Vec<usize>,
    next: usize,
}

impl Spacing {
    const WS: [&'static str; 6] = ["", " ", "\n", "\t", "\r\n  ", "   "];

    fn take(&mut self) -> &'static str {
        let ws = Self::WS[self.choices[self.next % self.choices.len()]];
        self.next += 1;
        ws
    }

    /// Writes `v` with whitespace around every structural character; top-level keys in the
    /// order of `pairs` when given.
    fn write(&mut self, out: &mut String, v: &Value) {
        match v {
            Value::Object(map) => {
                let pairs: Vec<(&str, Value)> =
                    map.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                self.object(out, &pairs);
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(self.take());
                    self.write(out, item);
                    out.push_str(self.take());
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }

    fn object(&mut self, out: &mut String, pairs: &[(&str, Value)]) {
        out.push_str(self.take());
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(self.take());
            out.push_str(&Value::from(*k).to_string());
            out.push_str(self.take());
            out.push(':');
            out.push_str(self.take());
            self.write(out, v);
            out.push_str(self.take());
        }
        out.push('}');
        out.push_str(self.take());
    }
}

#[test]
fn json_key_order_and_whitespace_do_not_matter() {
    let f = Fixture::new();
    let baseline: Vec<Decision> = f.tokens.iter().map(|t| f.decide(t.as_bytes())).collect();
    let strategy = (
        0..KeyKind::ALL.len(),
        Just(header_pairs(KeyKind::Rs256)).prop_shuffle(),
        Just(claim_pairs()).prop_shuffle(),
        prop::collection::vec(0..Spacing::WS.len(), 1..48),
    );
    check(256, strategy, |(k, mut header, claims, choices)| {
        let signer = &f.signers[k];
        // Same keys for every kind; the values are this kind's.
        let kind_header = object(&header_pairs(signer.kind));
        for (name, value) in &mut header {
            *value = kind_header[*name].clone();
        }
        let mut spacing = Spacing { choices, next: 0 };
        let (mut h, mut p) = (String::new(), String::new());
        spacing.object(&mut h, &header);
        spacing.object(&mut p, &claims);
        let token = signer.sign_raw(h.as_bytes(), p.as_bytes());
        let d = f.decide(token.as_bytes());
        prop_assert!(d.allowed(), "{:?} {h} {p}: {}", signer.kind, d.reason);
        let (got, want) = (
            d.identity.clone().unwrap(),
            baseline[k].identity.clone().unwrap(),
        );
        prop_assert_eq!(
            (&got.issuer, &got.subject, &got.email, &got.name),
            (&want.issuer, &want.subject, &want.email, &want.name)
        );
        prop_assert_eq!(&got.roles, &want.roles);
        prop_assert_eq!(
            (got.expires_at, &got.kid, got.alg),
            (want.expires_at, &want.kid, want.alg)
        );
        prop_assert_eq!(
            d.set_headers().collect::<Vec<_>>(),
            baseline[k].set_headers().collect::<Vec<_>>()
        );
        Ok(())
    });
}

/// A token's time claims relative to `NOW` and a walk of the clock.
#[derive(Debug, Clone)]
struct Timeline {
    kind: usize,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    /// Add half a second to each time claim (NumericDates may have fractions).
    fractional: bool,
    /// Where the clock starts, relative to `NOW`.
    start: i64,
    /// Forward steps of the clock, in seconds, with a decision after each.
    steps: Vec<u64>,
}

impl Timeline {
    fn strategy() -> impl Strategy<Value = Self> {
        // Offsets straddling the leeway window on both sides, and lifetimes around the maximum.
        let near = -(3 * LEEWAY)..=3 * LEEWAY;
        let exp = prop_oneof![
            3 => near.clone(),
            1 => (MAX_LIFETIME - 2 * LEEWAY)..=(MAX_LIFETIME + 2 * LEEWAY),
        ];
        (
            0..KeyKind::ALL.len(),
            exp,
            prop::option::of(near.clone()),
            prop::option::of(near.clone()),
            any::<bool>(),
            near,
            prop::collection::vec(prop_oneof![0..=2u64, 0..=90u64], 1..24),
        )
            .prop_map(|(kind, exp, nbf, iat, fractional, start, steps)| Self {
                kind,
                exp,
                nbf,
                iat,
                fractional,
                start,
                steps,
            })
    }

    fn claims(&self) -> Value {
        let at = |offset: i64| {
            let t = NOW.checked_add_signed(offset).unwrap();
            if self.fractional {
                json!(t as f64 + 0.5)
            } else {
                json!(t)
            }
        };
        let mut claims = object(&claim_pairs());
        claims["exp"] = at(self.exp);
        match self.iat {
            Some(iat) => claims["iat"] = at(iat),
            None => drop(claims.as_object_mut().unwrap().remove("iat")),
        }
        if let Some(nbf) = self.nbf {
            claims["nbf"] = at(nbf);
        }
        claims
    }
}

#[test]
fn cached_decisions_equal_uncached_across_time_boundaries() {
    let signers: Vec<Signer> = KeyKind::ALL.into_iter().map(Signer::new).collect();
    let hits = std::cell::Cell::new(0u64);
    let outcomes = std::cell::RefCell::new(std::collections::HashSet::new());
    check(256, Timeline::strategy(), |t| {
        let signer = &signers[t.kind];
        let token = signer.sign(&object(&header_pairs(signer.kind)), &t.claims());
        let clock = Arc::new(ManualClock::at(NOW.checked_add_signed(t.start).unwrap()));
        let (cached, uncached) = (engine(&clock, 1024), engine(&clock, 0));
        let decide = |e: &Engine| {
            e.decide(&Request::new(
                "GET",
                "api.example.com",
                "/items/1",
                Some(token.as_bytes()),
            ))
        };
        let mut now = clock.0.load(std::sync::atomic::Ordering::SeqCst);
        for (call, step) in t.steps.iter().enumerate() {
            now += step;
            clock.set(now);
            let want = outcome(&decide(&uncached));
            // Twice: the first call may fill the cache, the second then answers from it.
            for _ in 0..2 {
                let d = decide(&cached);
                prop_assert_eq!(
                    outcome(&d),
                    want,
                    "call {} at NOW{:+}, cache_hit={}: {}",
                    call,
                    now as i64 - NOW as i64,
                    d.cache_hit,
                    d.reason
                );
            }
            outcomes.borrow_mut().insert(want);
        }
        hits.set(hits.get() + cached.stats().cache_hits);
        prop_assert_eq!(uncached.stats().cache_hits, 0);
        Ok(())
    });
    // The generated timelines did reach the interesting states.
    assert!(hits.get() > 0, "the cache never answered");
    let outcomes = outcomes.into_inner();
    for reason in [ReasonCode::Allowed, ReasonCode::BadTime] {
        assert!(
            outcomes.iter().any(|o| o.2 == reason),
            "no {reason:?} in {outcomes:?}"
        );
    }
}

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::fetch::{FetchError, FetchResponse};

/// A clock the test moves by hand.
#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A stand-in for the network: serves fixed bodies per URL and counts requests.
#[derive(Debug, Default)]
struct FakeNetwork {
    bodies: Mutex<HashMap<String, Result<Vec<u8>, FetchError>>>,
    hits: AtomicUsize,
    /// Extra time each fetch takes (a slow provider).
    delay: Mutex<Duration>,
}

impl FakeNetwork {
    fn serve(&self, url: &str, body: Result<Vec<u8>, FetchError>) {
        self.bodies.lock().insert(url.to_owned(), body);
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl KeyFetcher for FakeNetwork {
    fn get(&self, url: &str, _: Duration, _: usize) -> Result<FetchResponse, FetchError> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        // Make concurrent callers overlap with the fetch.
        std::thread::sleep(Duration::from_millis(20) + *self.delay.lock());
        let body = self
            .bodies
            .lock()
            .get(url)
            .cloned()
            .unwrap_or(Err(FetchError::Status(404)));
        body.map(|body| FetchResponse {
            body,
            max_age: Some(3600),
        })
    }
}

fn ec_jwk(kid: &str) -> String {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    format!(
        r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65])
    )
}

fn jwks(keys: &[&str]) -> Vec<u8> {
    format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
}

const JWKS_URL: &str = "http://127.0.0.1:1/jwks";

fn remote(
    net: &Arc<FakeNetwork>,
    clock: &Arc<ManualClock>,
    source: RemoteSource,
) -> Arc<IssuerKeys> {
    let policy = RefreshPolicy {
        kid_miss_cooldown: 30,
        refresh_min: 300,
        refresh_max: 86_400,
        timeout: Duration::from_secs(2),
    };
    Arc::new(IssuerKeys::remote(
        "http://127.0.0.1:1",
        source,
        policy,
        net.clone(),
        clock.clone(),
        Arc::new(FetchStats::default()),
    ))
}

#[test]
fn first_lookup_waits_for_the_first_fetch() {
    let net = Arc::new(FakeNetwork::default());
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    keys.start();
    let snap = keys.lookup(Some("a"), Alg::ES256).unwrap();
    assert_eq!(snap.candidates(Some("a"), Alg::ES256).count(), 1);
    assert_eq!(
        snap.candidates(Some("a"), Alg::RS256).count(),
        0,
        "one algorithm per key"
    );
    assert_eq!(net.hits(), 1);
}

#[test]
fn unknown_kid_flood_fetches_once_per_cooldown() {
    let net = Arc::new(FakeNetwork::default());
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    keys.lookup(Some("a"), Alg::ES256).unwrap();
    assert_eq!(net.hits(), 1);

    let threads: Vec<_> = (0..64)
        .map(|i| {
            let keys = keys.clone();
            std::thread::spawn(move || {
                let kid = format!("random-{i}");
                keys.lookup(Some(&kid), Alg::ES256)
                    .unwrap()
                    .candidates(Some(&kid), Alg::ES256)
                    .count()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    assert_eq!(
        net.hits(),
        2,
        "64 unknown kids inside one cooldown: one fetch"
    );

    clock.0.store(31, Ordering::SeqCst);
    keys.lookup(Some("other"), Alg::ES256).unwrap();
    assert_eq!(
        net.hits(),
        3,
        "after the cooldown one more fetch is allowed"
    );
}

#[test]
fn rotation_is_followed_and_removed_keys_bump_the_epoch() {
    let net = Arc::new(FakeNetwork::default());
    let (a, b) = (ec_jwk("a"), ec_jwk("b"));
    net.serve(JWKS_URL, Ok(jwks(&[&a])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    let first = keys.lookup(Some("a"), Alg::ES256).unwrap();

    net.serve(JWKS_URL, Ok(jwks(&[&b, &a])));
    let added = keys.lookup(Some("b"), Alg::ES256).unwrap();
    assert_eq!(added.candidates(Some("b"), Alg::ES256).count(), 1);
    assert_eq!(
        added.epoch, first.epoch,
        "adding a key keeps cached verifications"
    );

    net.serve(JWKS_URL, Ok(jwks(&[&b])));
    clock.0.store(100, Ordering::SeqCst);
    let removed = keys.lookup(Some("c"), Alg::ES256).unwrap();
    assert_eq!(removed.candidates(Some("a"), Alg::ES256).count(), 0);
    assert_eq!(
        removed.epoch,
        first.epoch + 1,
        "a removed key flushes cached verifications"
    );
}

#[test]
fn failed_fetch_keeps_last_known_good_keys() {
    let net = Arc::new(FakeNetwork::default());
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    keys.lookup(Some("a"), Alg::ES256).unwrap();

    net.serve(
        JWKS_URL,
        Err(FetchError::Transport("connection refused".into())),
    );
    clock.0.store(10_000, Ordering::SeqCst);
    let snap = keys.lookup(Some("unknown"), Alg::ES256).unwrap();
    assert_eq!(snap.candidates(Some("a"), Alg::ES256).count(), 1);
    assert!(keys.last_error().unwrap().contains("connection refused"));

    net.serve(
        JWKS_URL,
        Ok(b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}".to_vec()),
    );
    clock.0.store(20_000, Ordering::SeqCst);
    let snap = keys.lookup(Some("unknown2"), Alg::ES256).unwrap();
    assert_eq!(
        snap.candidates(Some("a"), Alg::ES256).count(),
        1,
        "a set with no usable key is not installed"
    );
}

#[test]
fn dead_provider_without_keys_is_unavailable_and_not_hammered() {
    let net = Arc::new(FakeNetwork::default());
    net.serve(
        JWKS_URL,
        Err(FetchError::Transport("connection refused".into())),
    );
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    assert_eq!(keys.lookup(Some("a"), Alg::ES256).unwrap_err(), Unavailable);
    for _ in 0..10 {
        assert_eq!(keys.lookup(Some("a"), Alg::ES256).unwrap_err(), Unavailable);
    }
    assert_eq!(net.hits(), 1, "retries wait for the retry interval");
    // Back-off: 1 s after the first failure, then 2 s, 4 s, ...
    clock.0.store(1, Ordering::SeqCst);
    assert_eq!(keys.lookup(Some("a"), Alg::ES256).unwrap_err(), Unavailable);
    assert_eq!(net.hits(), 2);
    clock.0.store(2, Ordering::SeqCst);
    assert_eq!(keys.lookup(Some("a"), Alg::ES256).unwrap_err(), Unavailable);
    assert_eq!(net.hits(), 2, "second retry waits 2 s");
    clock.0.store(31, Ordering::SeqCst);
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    assert!(keys.lookup(Some("a"), Alg::ES256).is_ok());
}

#[test]
fn discovery_issuer_must_match_byte_for_byte() {
    let net = Arc::new(FakeNetwork::default());
    let doc =
        |iss: &str| Ok(format!(r#"{{"issuer":"{iss}","jwks_uri":"{JWKS_URL}"}}"#).into_bytes());
    net.serve(
        "http://127.0.0.1:1/.well-known/openid-configuration",
        doc("http://127.0.0.1:1/"),
    );
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::Discovery);
    assert_eq!(keys.lookup(Some("a"), Alg::ES256).unwrap_err(), Unavailable);
    assert!(keys.last_error().unwrap().contains("does not equal"));

    net.serve(
        "http://127.0.0.1:1/.well-known/openid-configuration",
        doc("http://127.0.0.1:1"),
    );
    clock.0.store(31, Ordering::SeqCst);
    assert!(keys.lookup(Some("a"), Alg::ES256).is_ok());
}

#[test]
fn a_slow_provider_holds_at_most_max_waiters_requests() {
    let net = Arc::new(FakeNetwork::default());
    net.serve(JWKS_URL, Ok(jwks(&[&ec_jwk("a")])));
    let clock = Arc::new(ManualClock::default());
    let keys = remote(&net, &clock, RemoteSource::JwksUrl(JWKS_URL.into()));
    keys.lookup(Some("a"), Alg::ES256).unwrap();

    *net.delay.lock() = Duration::from_millis(1500);
    clock.0.store(1_000, Ordering::SeqCst);
    let started = Instant::now();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let keys = keys.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let kid = format!("random-{i}");
                let snap = keys.lookup(Some(&kid), Alg::ES256).unwrap();
                assert_eq!(
                    snap.candidates(Some("a"), Alg::ES256).count(),
                    1,
                    "known keys stay"
                );
                t.elapsed()
            })
        })
        .collect();
    let waited = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|d| *d > Duration::from_millis(500))
        .count();
    assert!(
        waited <= MAX_WAITERS,
        "{waited} requests waited on one slow fetch"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(net.hits(), 2, "one kid-miss fetch for the whole flood");
}

#[test]
fn retry_delay_backs_off_to_a_bound() {
    let delays: Vec<u64> = (1..=8).map(|f| retry_delay(f, 300)).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(retry_delay(6, 5), 5, "never beyond refresh_min");
}

#[test]
fn discovery_url_strips_one_trailing_slash() {
    assert_eq!(
        discovery_url("https://a.example/"),
        "https://a.example/.well-known/openid-configuration"
    );
    assert_eq!(
        discovery_url("https://a.example/t/v2.0"),
        "https://a.example/t/v2.0/.well-known/openid-configuration"
    );
}

#[test]
fn discovery_documents_are_parsed_strictly() {
    let iss = "https://idp.example.com/";
    let ok = br#"{"issuer":"https://idp.example.com/","jwks_uri":"https://idp.example.com/jwks"}"#;
    assert_eq!(
        parse_discovery(iss, ok).unwrap(),
        "https://idp.example.com/jwks"
    );
    for bad in [
        // Two issuers: which one a parser keeps is up to the parser.
        &br#"{"issuer":"https://evil.example/","issuer":"https://idp.example.com/","jwks_uri":"https://idp.example.com/jwks"}"#[..],
        // Invalid UTF-8 in a field nobody reads (found by the discovery_doc fuzz target).
        b"{\"issuer\":\"https://idp.example.com/\",\"x\":\"\xff\",\"jwks_uri\":\"https://idp.example.com/jwks\"}",
        br#"{"issuer":"https://idp.example.com/","jwks_uri":7}"#,
        br#"["issuer"]"#,
    ] {
        assert!(parse_discovery(iss, bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

//! One issuer's verification keys: static (inline JWKS or PEM) or remote (OIDC discovery or a
//! JWKS URL), refreshed in the background.
//!
//! Rules, from reference/token-validation.md:
//! - refresh every `clamp(Cache-Control max-age or 10 min, refresh_min, refresh_max)`;
//! - an unknown `kid` triggers at most one fetch per cooldown, single-flight;
//! - a failed fetch keeps the last known good keys and retries after `min(30 s, refresh_min)`;
//! - fetches run on their own thread; a request waits for one only when the issuer has no keys
//!   yet or its `kid` is unknown, and never longer than the fetch timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::alg::Alg;
use crate::clock::Clock;
use crate::fetch::{KeyFetcher, check_url};
use crate::jwk::{VerifyingKey, parse_jwks};

/// Largest discovery document or key set accepted.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Refresh interval when the server sends no `max-age`.
const DEFAULT_REFRESH_SECS: u64 = 600;
/// Longest retry delay after failed fetches (also bounded by `refresh_min`). Retries back off
/// 1, 2, 4, ... seconds up to this, so a provider that was briefly down (or, for the demo
/// issuer, not listening yet) is picked up within a second or two, and a dead one is asked at
/// most twice a minute.
const MAX_RETRY_SECS: u64 = 30;

/// Where a remote issuer's keys are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteSource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// This JWKS URL.
    JwksUrl(String),
}

/// Timing bounds of a remote key set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshPolicy {
    pub(crate) kid_miss_cooldown: u64,
    pub(crate) refresh_min: u64,
    pub(crate) refresh_max: u64,
    pub(crate) timeout: Duration,
}

/// Counters shared by every key set of an engine.
#[derive(Debug, Default)]
pub(crate) struct FetchStats {
    pub(crate) ok: AtomicU64,
    pub(crate) error: AtomicU64,
    pub(crate) kid_miss_refused: AtomicU64,
}

/// The keys in force at one moment. Replaced whole, never mutated.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    keys: Vec<VerifyingKey>,
    /// Bumped whenever a key disappears, so cached verifications made with it are dropped.
    pub(crate) epoch: u64,
    loaded: bool,
}

impl Snapshot {
    /// Keys that may verify a token with this `kid` and `alg`: same `alg`, and same `kid` when
    /// both name one (a token without `kid`, or a key without one such as a configured PEM key,
    /// matches on the algorithm alone).
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.alg == alg && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
        })
    }

    fn has_candidate(&self, kid: Option<&str>, alg: Alg) -> bool {
        self.candidates(kid, alg).next().is_some()
    }
}

/// Fetch bookkeeping, guarded by one mutex.
#[derive(Debug, Default)]
struct Schedule {
    in_flight: bool,
    /// Incremented when a fetch finishes; waiters watch it change.
    completed: u64,
    next_refresh: u64,
    last_kid_miss_fetch: Option<u64>,
    /// When the last fetch started; with no keys yet, a failed fetch is retried no sooner than
    /// `retry_delay()` so a dead provider is not hammered by every request.
    last_attempt: Option<u64>,
    /// Fetches failed in a row (0 after a success).
    failures: u32,
    last_error: Option<String>,
}

/// One issuer's keys.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    issuer: String,
    remote: Option<Remote>,
    current: RwLock<Arc<Snapshot>>,
    schedule: Mutex<Schedule>,
    fetched: Condvar,
    /// Requests currently waiting for a fetch (bounded by `MAX_WAITERS`).
    waiters: AtomicUsize,
    /// `current.epoch`, readable without the lock.
    epoch: AtomicU64,
}

#[derive(Debug)]
struct Remote {
    source: RemoteSource,
    policy: RefreshPolicy,
    fetcher: Arc<dyn KeyFetcher>,
    clock: Arc<dyn Clock>,
    stats: Arc<FetchStats>,
}

/// Most requests that may wait at once for one issuer's fetch.
const MAX_WAITERS: usize = 32;

/// A place among the waiters, given back on drop.
struct WaiterSlot<'a>(&'a AtomicUsize);

impl<'a> WaiterSlot<'a> {
    fn take(waiters: &'a AtomicUsize) -> Option<Self> {
        if waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            waiters.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(waiters))
    }
}

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why no usable key snapshot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

impl IssuerKeys {
    /// Keys given in the config; never refreshed.
    pub(crate) fn fixed(issuer: &str, keys: Vec<VerifyingKey>) -> Self {
        Self {
            issuer: issuer.to_owned(),
            remote: None,
            current: RwLock::new(Arc::new(Snapshot {
                keys,
                epoch: 0,
                loaded: true,
            })),
            schedule: Mutex::new(Schedule::default()),
            fetched: Condvar::new(),
            waiters: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Keys fetched from the network. Call [`Self::start`] to begin the first fetch.
    pub(crate) fn remote(
        issuer: &str,
        source: RemoteSource,
        policy: RefreshPolicy,
        fetcher: Arc<dyn KeyFetcher>,
        clock: Arc<dyn Clock>,
        stats: Arc<FetchStats>,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            remote: Some(Remote {
                source,
                policy,
                fetcher,
                clock,
                stats,
            }),
            current: RwLock::new(Arc::new(Snapshot::default())),
            schedule: Mutex::new(Schedule::default()),
            fetched: Condvar::new(),
            waiters: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// Starts the first fetch in the background (no network I/O on the caller's thread).
    pub(crate) fn start(self: &Arc<Self>) {
        if let Some(remote) = &self.remote {
            let mut schedule = self.schedule.lock();
            self.spawn_fetch(&mut schedule, remote.clock.now());
        }
    }

    /// The issuer these keys belong to.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The epoch of the keys in force (see [`Snapshot::epoch`]). Read on every cache hit, so
    /// it is mirrored in an atomic instead of taking the snapshot lock.
    pub(crate) fn current_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The last fetch error, for diagnostics.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.schedule.lock().last_error.clone()
    }

    /// The keys to verify a token with `kid`/`alg`. May wait (bounded) for a first fetch, or
    /// for a refresh when the `kid` is unknown and the cooldown allows one.
    pub(crate) fn lookup(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<Snapshot>, Unavailable> {
        let snapshot = self.current.read().clone();
        let Some(remote) = &self.remote else {
            return Ok(snapshot);
        };
        let now = remote.clock.now();
        if snapshot.loaded && snapshot.has_candidate(kid, alg) {
            self.refresh_if_due(now);
            return Ok(snapshot);
        }
        let mut schedule = self.schedule.lock();
        if !snapshot.loaded && !schedule.in_flight {
            let retry = retry_delay(schedule.failures, remote.policy.refresh_min);
            if schedule
                .last_attempt
                .is_some_and(|t| now.saturating_sub(t) < retry)
            {
                return Err(Unavailable);
            }
        }
        if snapshot.loaded {
            // Unknown kid: one fetch per cooldown, whoever asks. A fetch already in flight
            // (a scheduled refresh) counts as this cooldown's fetch.
            let cooled = schedule
                .last_kid_miss_fetch
                .is_none_or(|t| now.saturating_sub(t) >= remote.policy.kid_miss_cooldown);
            if !cooled && !schedule.in_flight {
                remote
                    .stats
                    .kid_miss_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(snapshot);
            }
            if cooled {
                schedule.last_kid_miss_fetch = Some(now);
            }
        }
        if !schedule.in_flight {
            self.spawn_fetch(&mut schedule, now);
        }
        // Each waiter is a request thread (a cgo call pins an OS thread): bound how many may
        // wait, so a flood of unknown kids while the provider is slow cannot exhaust threads.
        let Some(_slot) = WaiterSlot::take(&self.waiters) else {
            drop(schedule);
            remote
                .stats
                .kid_miss_refused
                .fetch_add(1, Ordering::Relaxed);
            return if snapshot.loaded {
                Ok(snapshot)
            } else {
                Err(Unavailable)
            };
        };
        let seen = schedule.completed;
        let fetches = if remote.source == RemoteSource::Discovery {
            2
        } else {
            1
        };
        let deadline =
            Instant::now() + remote.policy.timeout * fetches + Duration::from_millis(250);
        while schedule.completed == seen {
            if self.fetched.wait_until(&mut schedule, deadline).timed_out() {
                break;
            }
        }
        drop(schedule);
        let snapshot = self.current.read().clone();
        if snapshot.loaded {
            Ok(snapshot)
        } else {
            Err(Unavailable)
        }
    }

    fn refresh_if_due(self: &Arc<Self>, now: u64) {
        // Cheap check first: most requests see a fresh key set and take no lock.
        let Some(mut schedule) = self.schedule.try_lock() else {
            return;
        };
        if !schedule.in_flight && now >= schedule.next_refresh {
            self.spawn_fetch(&mut schedule, now);
        }
    }

    fn spawn_fetch(self: &Arc<Self>, schedule: &mut Schedule, now: u64) {
        schedule.in_flight = true;
        schedule.last_attempt = Some(now);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("iap-keys".into())
            .spawn(move || me.fetch_and_install());
        if let Err(e) = spawned {
            schedule.in_flight = false;
            schedule.last_error = Some(format!("cannot start fetch thread: {e}"));
        }
    }

    fn fetch_and_install(&self) {
        let Some(remote) = &self.remote else { return };
        // A panic must not leave `in_flight` set forever (no fetch would ever run again).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fetch(remote)))
            .unwrap_or_else(|_| Err("key fetch panicked".to_owned()));
        let now = remote.clock.now();
        let mut schedule = self.schedule.lock();
        match result {
            Ok((keys, max_age)) => {
                remote.stats.ok.fetch_add(1, Ordering::Relaxed);
                let interval = max_age.unwrap_or(DEFAULT_REFRESH_SECS).clamp(
                    remote.policy.refresh_min,
                    remote.policy.refresh_max.max(remote.policy.refresh_min),
                );
                schedule.next_refresh = now.saturating_add(interval);
                schedule.last_error = None;
                schedule.failures = 0;
                let mut current = self.current.write();
                let removed = current.keys.iter().any(|old| !keys.contains(old));
                let epoch = current.epoch + u64::from(removed);
                self.epoch.store(epoch, Ordering::Release);
                *current = Arc::new(Snapshot {
                    keys,
                    epoch,
                    loaded: true,
                });
            }
            Err(e) => {
                remote.stats.error.fetch_add(1, Ordering::Relaxed);
                schedule.failures = schedule.failures.saturating_add(1);
                let retry = retry_delay(schedule.failures, remote.policy.refresh_min);
                schedule.next_refresh = now.saturating_add(retry);
                schedule.last_error = Some(e);
            }
        }
        schedule.in_flight = false;
        schedule.completed += 1;
        self.fetched.notify_all();
    }

    /// Discovery (if configured), then the key set. Errors are log lines without key material.
    fn fetch(&self, remote: &Remote) -> Result<(Vec<VerifyingKey>, Option<u64>), String> {
        let timeout = remote.policy.timeout;
        let jwks_uri = match &remote.source {
            RemoteSource::JwksUrl(url) => url.clone(),
            RemoteSource::Discovery => {
                let url = discovery_url(&self.issuer);
                let doc = remote
                    .fetcher
                    .get(&url, timeout, MAX_DOCUMENT_BYTES)
                    .map_err(|e| format!("discovery {url}: {e}"))?;
                parse_discovery(&self.issuer, &doc.body)
                    .map_err(|e| format!("discovery {url}: {e}"))?
            }
        };
        let resp = remote
            .fetcher
            .get(&jwks_uri, timeout, MAX_DOCUMENT_BYTES)
            .map_err(|e| format!("key set {jwks_uri}: {e}"))?;
        let parsed = parse_jwks(&resp.body).map_err(|e| format!("key set {jwks_uri}: {e}"))?;
        if parsed.keys.is_empty() {
            return Err(format!(
                "key set {jwks_uri}: no usable key ({})",
                parsed.skipped.join("; ")
            ));
        }
        Ok((parsed.keys, resp.max_age))
    }
}

/// Seconds to wait before retrying after `failures` failed fetches in a row: 1, 2, 4, ... up to
/// `MAX_RETRY_SECS`, and never more than `refresh_min`.
fn retry_delay(failures: u32, refresh_min: u64) -> u64 {
    let backoff = 1u64 << failures.saturating_sub(1).min(5);
    backoff.min(MAX_RETRY_SECS).min(refresh_min.max(1))
}

/// Reads the OpenID Provider Metadata document served for `issuer`: its `issuer` must equal the
/// configured one byte for byte, and its `jwks_uri` must be a URL we fetch from. Returns the
/// `jwks_uri`; errors are log lines.
pub fn parse_discovery(issuer: &str, body: &[u8]) -> Result<String, String> {
    // The strict parser, as for tokens and key sets: the whole document must be valid JSON
    // without repeated keys, not just the two fields read here.
    let doc = crate::json::parse_object(body, "discovery document")
        .map_err(|e| format!("not a valid document: {e}"))?;
    let field = |name: &str| match doc.get(name) {
        Some(crate::json::Json::String(s)) => Ok(&**s),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("no {name}")),
    };
    let (doc_issuer, jwks_uri) = (field("issuer")?, field("jwks_uri")?);
    if doc_issuer != issuer {
        return Err(format!(
            "issuer {doc_issuer:?} does not equal the configured {issuer:?}"
        ));
    }
    check_url(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
    Ok(jwks_uri.to_owned())
}

/// OpenID Connect Discovery 1.0 §4: strip one trailing slash, append the well-known path.
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.strip_suffix('/').unwrap_or(issuer)
    )
}

#[cfg(test)]
mod tests;

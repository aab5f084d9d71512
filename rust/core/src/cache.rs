//! The verified-token cache: skips parsing and signature checks for a token seen before.
//!
//! Keyed by SHA-256 over the engine's policy fingerprint and the whole token, so two configs
//! never share an entry and a lossy key can't map a forged token onto a good one. Only
//! successes are cached; an entry never outlives the token's `exp`, and it is ignored once a key
//! of its issuer has disappeared (the issuer's key-set epoch moved on).
//!
//! In front of the shared map each thread keeps its own copies of the few entries it hits
//! again and again (see [`Recent`]), so a token hot on several cores costs no cache-line
//! traffic between them.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest::{Context, SHA256};
use quick_cache::sync::Cache;

use crate::engine::{Identity, TokenSource};

/// A cached verification.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) identity: Arc<Identity>,
    /// Index of the issuer that verified the token.
    pub(crate) issuer: usize,
    /// That issuer's key-set epoch at verification time.
    pub(crate) epoch: u64,
    /// Valid while `now <= valid_until` (the token's `exp`).
    pub(crate) valid_until: u64,
    /// The clock when it was verified. `nbf`/`iat` held then, so they hold at any later time;
    /// a clock stepped back before it is re-checked from scratch.
    pub(crate) verified_at: u64,
}

impl Entry {
    /// Whether the entry still answers at `now`, given its issuer's current key-set epoch.
    fn valid(&self, now: u64, epoch_of: &impl Fn(usize) -> u64) -> bool {
        now <= self.valid_until && now >= self.verified_at && epoch_of(self.issuer) == self.epoch
    }
}

/// Bounded cache of verified tokens.
#[derive(Debug)]
pub(crate) struct TokenCache {
    entries: Option<Cache<[u8; 32], Entry>>,
    policy: [u8; 32],
    /// Tells this cache's entries apart from another's in the threads' [`Recent`] copies: two
    /// engines with the same policy have the same keys, but not the same key-set epochs.
    id: u64,
}

/// Source of [`TokenCache::id`]s.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

impl TokenCache {
    /// A cache holding at most `max_entries` (0 disables it), salted with the policy fingerprint.
    pub(crate) fn new(max_entries: usize, policy: [u8; 32]) -> Self {
        Self {
            entries: (max_entries > 0).then(|| Cache::new(max_entries)),
            policy,
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The key for `token`.
    pub(crate) fn key(&self, token: &[u8], source: TokenSource) -> [u8; 32] {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&self.policy);
        // A session's ID token and the same bytes sent as a bearer token are checked against
        // different audiences, so they never share an entry.
        ctx.update(&[source as u8]);
        ctx.update(token);
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// A still-valid entry. `epoch_of` gives an issuer's current key-set epoch.
    pub(crate) fn get(
        &self,
        key: &[u8; 32],
        now: u64,
        epoch_of: impl Fn(usize) -> u64,
    ) -> Option<Entry> {
        let entries = self.entries.as_ref()?;
        if let Some(entry) = with_recent(|r| r.get(self.id, key)).flatten() {
            if entry.valid(now, &epoch_of) {
                return Some(entry);
            }
            with_recent(|r| r.forget(self.id, key));
        }
        let entry = entries.get(key)?;
        if !entry.valid(now, &epoch_of) {
            entries.remove(key);
            return None;
        }
        with_recent(|r| r.hit(self.id, key, &entry));
        Some(entry)
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, key: [u8; 32], entry: Entry) {
        if let Some(entries) = &self.entries {
            entries.insert(key, entry);
        }
    }

    /// Number of entries (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |c| c.len())
    }
}

/// Entries a thread holds a copy of.
const RECENT_COPIES: usize = 4;
/// Keys a thread remembers hitting in the shared map, with how often.
const RECENT_KEYS: usize = 8;
/// Hits in the shared map a key needs before it may be copied.
const COPY_AFTER: u32 = 2;
/// Every this many hits in the shared map, all counts halve, so old favourites give way.
const AGING_PERIOD: u32 = 64;

thread_local! {
    static RECENT: RefCell<Recent> = const { RefCell::new(Recent::new()) };
}

/// Runs `f` on this thread's [`Recent`]; `None` while the thread is being torn down.
fn with_recent<R>(f: impl FnOnce(&mut Recent) -> R) -> Option<R> {
    RECENT.try_with(|r| f(&mut r.borrow_mut())).ok()
}

/// One thread's recent hits in the shared map. A hit there takes the shard's read lock and
/// clones the identity's `Arc`: two writes to lines every core shares, so with one token hot on
/// several cores each request waits for the others. A key this thread keeps hitting gets its
/// own copy of the entry, whose identity `Arc` (and count) no other thread touches (the strings
/// inside stay shared: they are only read); later hits read only that copy.
///
/// A copy answers exactly as the shared entry would: the same key, the same entry, the same
/// validity check on every use ([`Entry::valid`]), and it is dropped once invalid. Copies are
/// per cache ([`TokenCache::id`]); a retired engine's copies are freed when newer ones push them
/// out or the thread ends.
///
/// A key is copied only when it has been hit in the shared map more often than the least-used
/// copy has been used: a thread cycling through more hot tokens than it has copies keeps the
/// copies it has, instead of making one (a few allocations and shared writes) per request.
struct Recent {
    copies: [Option<Copied>; RECENT_COPIES],
    keys: [Seen; RECENT_KEYS],
    next_key: usize,
    since_aging: u32,
}

struct Copied {
    cache: u64,
    key: [u8; 32],
    entry: Entry,
    uses: u32,
}

#[derive(Clone, Copy)]
struct Seen {
    cache: u64,
    key: [u8; 32],
    hits: u32,
}

impl Seen {
    /// Matches nothing: cache ids start at 1.
    const NONE: Self = Self {
        cache: 0,
        key: [0; 32],
        hits: 0,
    };
}

impl Recent {
    const fn new() -> Self {
        Self {
            copies: [const { None }; RECENT_COPIES],
            keys: [Seen::NONE; RECENT_KEYS],
            next_key: 0,
            since_aging: 0,
        }
    }

    /// This thread's copy of the entry for (`cache`, `key`).
    fn get(&mut self, cache: u64, key: &[u8; 32]) -> Option<Entry> {
        let c = self
            .copies
            .iter_mut()
            .flatten()
            .find(|c| c.cache == cache && c.key == *key)?;
        c.uses = c.uses.saturating_add(1);
        Some(c.entry.clone())
    }

    fn forget(&mut self, cache: u64, key: &[u8; 32]) {
        for slot in &mut self.copies {
            if slot
                .as_ref()
                .is_some_and(|c| c.cache == cache && c.key == *key)
            {
                *slot = None;
            }
        }
    }

    /// Notes a hit in the shared map, and copies the entry when its key has earned a slot.
    fn hit(&mut self, cache: u64, key: &[u8; 32], entry: &Entry) {
        self.age();
        let seen = match self
            .keys
            .iter()
            .position(|s| s.cache == cache && s.key == *key)
        {
            Some(i) => i,
            None => {
                let i = self.next_key;
                self.next_key = (i + 1) % RECENT_KEYS;
                self.keys[i] = Seen {
                    cache,
                    key: *key,
                    hits: 0,
                };
                i
            }
        };
        let hits = self.keys[seen].hits.saturating_add(1);
        self.keys[seen].hits = hits;
        if hits < COPY_AFTER {
            return;
        }
        let Some(slot) = self.slot_for(hits) else {
            return;
        };
        self.keys[seen] = Seen::NONE;
        self.copies[slot] = Some(Copied {
            cache,
            key: *key,
            entry: Entry {
                identity: Arc::new(Identity::clone(&entry.identity)),
                ..entry.clone()
            },
            uses: hits,
        });
    }

    /// An empty slot, or the least-used copy's if it was used less than `hits` times.
    fn slot_for(&self, hits: u32) -> Option<usize> {
        let uses = |i: usize| self.copies[i].as_ref().map(|c| c.uses);
        let victim =
            (0..RECENT_COPIES).min_by_key(|&i| uses(i).map_or(0, |u| u.saturating_add(1)))?;
        match uses(victim) {
            Some(u) if u >= hits => None,
            _ => Some(victim),
        }
    }

    fn age(&mut self) {
        self.since_aging += 1;
        if self.since_aging < AGING_PERIOD {
            return;
        }
        self.since_aging = 0;
        for c in self.copies.iter_mut().flatten() {
            c.uses /= 2;
        }
        for s in &mut self.keys {
            s.hits /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Identity;

    fn entry(identity: &Arc<Identity>, valid_until: u64) -> Entry {
        Entry {
            identity: identity.clone(),
            issuer: 0,
            epoch: 7,
            valid_until,
            verified_at: 100,
        }
    }

    const EPOCH_7: fn(usize) -> u64 = |_| 7;

    #[test]
    fn a_key_hit_twice_is_answered_from_the_threads_own_copy() {
        let cache = TokenCache::new(16, [1; 32]);
        let shared = Arc::new(Identity::for_tests("alice"));
        let key = cache.key(b"token", TokenSource::Bearer);
        cache.insert(key, entry(&shared, 200));
        let first = cache.get(&key, 150, EPOCH_7).unwrap();
        let second = cache.get(&key, 150, EPOCH_7).unwrap();
        assert!(Arc::ptr_eq(&first.identity, &shared) && Arc::ptr_eq(&second.identity, &shared));
        let third = cache.get(&key, 150, EPOCH_7).unwrap();
        assert!(
            !Arc::ptr_eq(&third.identity, &shared),
            "not the thread's copy"
        );
        assert_eq!(third.identity.subject, shared.subject);
        assert_eq!((third.valid_until, third.epoch), (200, 7));

        // Another thread starts from the shared map.
        std::thread::scope(|s| {
            s.spawn(|| {
                let there = cache.get(&key, 150, EPOCH_7).unwrap();
                assert!(Arc::ptr_eq(&there.identity, &shared));
            });
        });
    }

    #[test]
    fn a_copy_is_checked_like_the_shared_entry() {
        let cache = TokenCache::new(16, [2; 32]);
        let shared = Arc::new(Identity::for_tests("bob"));
        let key = cache.key(b"token", TokenSource::Bearer);
        cache.insert(key, entry(&shared, 200));
        for _ in 0..3 {
            cache.get(&key, 150, EPOCH_7).unwrap();
        }
        // Expired, the clock stepped back before verification, a key of the issuer gone: each
        // refused, copy or not.
        assert!(cache.get(&key, 201, EPOCH_7).is_none());
        cache.insert(key, entry(&shared, 200));
        for _ in 0..3 {
            cache.get(&key, 150, EPOCH_7).unwrap();
        }
        assert!(cache.get(&key, 99, EPOCH_7).is_none());
        cache.insert(key, entry(&shared, 200));
        for _ in 0..3 {
            cache.get(&key, 150, EPOCH_7).unwrap();
        }
        assert!(cache.get(&key, 150, |_| 8).is_none());
        assert!(
            cache.get(&key, 150, EPOCH_7).is_none(),
            "refused once, gone"
        );
    }

    #[test]
    fn copies_belong_to_their_cache() {
        let a = TokenCache::new(16, [3; 32]);
        let b = TokenCache::new(16, [3; 32]); // same policy, so the same keys
        let shared = Arc::new(Identity::for_tests("carol"));
        let key = a.key(b"token", TokenSource::Bearer);
        assert_eq!(key, b.key(b"token", TokenSource::Bearer));
        a.insert(key, entry(&shared, 200));
        for _ in 0..3 {
            a.get(&key, 150, EPOCH_7).unwrap();
        }
        assert!(b.get(&key, 150, EPOCH_7).is_none());
    }

    #[test]
    fn more_hot_keys_than_copies_settle_instead_of_trading_copies() {
        let cache = TokenCache::new(64, [4; 32]);
        let shared = Arc::new(Identity::for_tests("dave"));
        let keys: Vec<[u8; 32]> = (0..RECENT_COPIES + 2)
            .map(|i| cache.key(format!("token {i}").as_bytes(), TokenSource::Bearer))
            .collect();
        for key in &keys {
            cache.insert(*key, entry(&shared, 200));
        }
        let copied = |key: &[u8; 32]| {
            let e = cache.get(key, 150, EPOCH_7).unwrap();
            !Arc::ptr_eq(&e.identity, &shared)
        };
        for _ in 0..3 {
            keys.iter().for_each(|k| _ = copied(k));
        }
        // From now on the same keys are answered from copies every round: none is traded.
        let settled: Vec<bool> = keys.iter().map(copied).collect();
        assert_eq!(settled.iter().filter(|&&c| c).count(), RECENT_COPIES);
        for _ in 0..20 {
            assert_eq!(keys.iter().map(copied).collect::<Vec<_>>(), settled);
        }
    }
}

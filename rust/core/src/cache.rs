//! The verified-token cache: skips parsing and signature checks for a token seen before.
//!
//! Keyed by SHA-256 over the engine's policy fingerprint and the whole token, so two configs
//! never share an entry and a lossy key can't map a forged token onto a good one. Only
//! successes are cached; an entry never outlives the token's `exp`, and it is ignored once a key
//! of its issuer has disappeared (the issuer's key-set epoch moved on).

use std::sync::Arc;

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

/// Bounded cache of verified tokens.
#[derive(Debug)]
pub(crate) struct TokenCache {
    entries: Option<Cache<[u8; 32], Entry>>,
    policy: [u8; 32],
}

impl TokenCache {
    /// A cache holding at most `max_entries` (0 disables it), salted with the policy fingerprint.
    pub(crate) fn new(max_entries: usize, policy: [u8; 32]) -> Self {
        Self {
            entries: (max_entries > 0).then(|| Cache::new(max_entries)),
            policy,
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
        let entry = entries.get(key)?;
        if now > entry.valid_until
            || now < entry.verified_at
            || epoch_of(entry.issuer) != entry.epoch
        {
            entries.remove(key);
            return None;
        }
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

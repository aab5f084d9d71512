//! Time is injected so expiry edges are tested with a fixed clock; validation never reads
//! the system time directly.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in whole seconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            // A clock before 1970 is a broken host; 0 makes every token look expired (fail closed).
            .unwrap_or(0)
    }
}

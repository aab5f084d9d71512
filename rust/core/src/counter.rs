//! A counter that many threads add to at once without fighting over one cache line.
//!
//! A plain `AtomicU64` bumped on every request is one line every core writes: each add waits for
//! the line to come back from the core that added last, and every field sharing the line misses
//! too. Here each thread adds to a slot of its own (threads share a slot only past
//! [`STRIPES`]), each slot on lines of its own; a read sums the slots.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per counter: more than the cores that take requests at once on most machines.
const STRIPES: usize = 16;

/// One slot, alone on its cache lines (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A monotonic event counter for metrics.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    slots: [Slot; STRIPES],
}

/// Hands each thread the next slot index, round robin.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

impl StripedCounter {
    /// Adds one.
    pub(crate) fn incr(&self) {
        let i = STRIPE.with(|s| *s);
        self.slots[i].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total so far (adds in flight may or may not be counted).
    pub(crate) fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_all_count() {
        let c = StripedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..STRIPES + 3 {
                s.spawn(|| (0..1000).for_each(|_| c.incr()));
            }
        });
        assert_eq!(c.get(), (STRIPES as u64 + 3) * 1000);
    }

    #[test]
    fn slots_do_not_share_cache_lines() {
        assert_eq!(align_of::<Slot>(), 128);
        assert_eq!(size_of::<Slot>(), 128);
    }
}

//! Counted admission limits: concurrent sessions per relay, concurrent subscriptions per session.
//!
//! Plain logic, no I/O. A [`Slots`] hands out at most `limit` [`Slot`]s at a time; a slot is
//! given back when it is dropped, so whatever owns the work (a session task, a subscription
//! task) owns its slot and releases it however that work ends, aborted tasks included.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The highest `--max-requests-per-session` accepted. Each request is a QUIC stream the peer
/// may hold open; the session layer grants that credit as it is used.
pub const MAX_REQUESTS_PER_SESSION: usize = 1_000_000;

/// A counter of things in use, with an upper bound.
#[derive(Debug)]
pub struct Slots {
    limit: usize,
    used: AtomicUsize,
}

impl Slots {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// A slot, or `None` when `limit` are in use. Never over-admits under concurrent callers.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One admitted session or subscription; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().expect("first");
        let b = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none(), "third is over the limit");
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert_eq!(slots.in_use(), 1);
        let c = slots.try_acquire().expect("a freed slot is reused");
        assert!(slots.try_acquire().is_none());
        drop((b, c));
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn zero_admits_nothing() {
        let slots = Slots::new(0);
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn concurrent_callers_never_exceed_the_limit() {
        let slots = Slots::new(5);
        let admitted = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Some(slot) = slots.try_acquire() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            peak.fetch_max(slots.in_use(), Ordering::Relaxed);
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert!(admitted.load(Ordering::Relaxed) > 0);
        assert!(peak.load(Ordering::Relaxed) <= 5);
        assert_eq!(slots.in_use(), 0);
    }
}

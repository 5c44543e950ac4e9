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

/// Slots counted per source address: at most `limit` per address at a time.
#[derive(Debug)]
pub struct PerAddress {
    limit: usize,
    used: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerAddress {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Default::default(),
        })
    }

    /// A slot for `addr`, or `None` when it holds `limit` already. IPv4-mapped IPv6 addresses
    /// count as their IPv4 address.
    pub fn try_acquire(self: &Arc<Self>, addr: std::net::IpAddr) -> Option<AddressSlot> {
        let addr = addr.to_canonical();
        let mut used = self.used.lock().expect("poisoned");
        let n = used.entry(addr).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), addr))
    }

    /// Slots `addr` holds now.
    pub fn in_use(&self, addr: std::net::IpAddr) -> usize {
        let used = self.used.lock().expect("poisoned");
        used.get(&addr.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection of an address; dropping it frees the slot.
#[derive(Debug)]
pub struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().expect("poisoned");
        if let Some(n) = used.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                used.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_on_its_own() {
        let per = PerAddress::new(2);
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let one = per.try_acquire(a).unwrap();
        let _two = per.try_acquire(mapped).expect("the same address, mapped");
        assert!(per.try_acquire(a).is_none(), "a third from one address");
        let _other = per.try_acquire(b).expect("another address is not affected");
        drop(one);
        assert_eq!(per.in_use(a), 1);
        assert!(per.try_acquire(a).is_some());
    }

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

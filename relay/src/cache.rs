//! The per-track group cache: the relay's memory of recent groups, and its eviction policy.
//!
//! Pure logic: no I/O, no clock. Callers pass `now`. [`crate::fanout`] wraps a [`GroupStore`]
//! in a lock and a change signal.
//!
//! Policy:
//! * Groups are kept in arrival order. The newest group is never evicted, so a new subscriber
//!   can always start at its first object (a keyframe, for video published one GOP per group).
//! * Older groups are evicted, oldest first, while the track holds more than `max_bytes`, more
//!   than `max_groups`, or when a group is older than `max_age` (measured from when it was
//!   opened). A group still being written can be evicted too if it is that old or that large:
//!   subscribers still reading it lose its remaining objects (their stream is reset).
//! * One object larger than `max_bytes` is refused (the publisher is misbehaving).

use std::{collections::VecDeque, time::Duration};

use bytes::Bytes;
use moqcast_media::moq::ExtensionHeaders;
use tokio::time::Instant;

/// Limits of one track's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_bytes: usize,
    pub max_groups: usize,
    pub max_age: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_groups: 64,
            max_age: Duration::from_secs(30),
        }
    }
}

/// One cached object.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub id: u64,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
}

/// One cached group (a subgroup stream, for the tracks we relay: one per group).
#[derive(Debug)]
pub struct CachedGroup {
    pub id: u64,
    pub subgroup: u64,
    pub priority: u8,
    pub objects: Vec<CachedObject>,
    /// The publisher finished the group's stream cleanly.
    pub complete: bool,
    /// The publisher reset the group's stream: what is cached is all there will be.
    pub aborted: bool,
    pub opened: Instant,
    pub bytes: usize,
}

impl CachedGroup {
    /// No more objects will arrive.
    pub fn ended(&self) -> bool {
        self.complete || self.aborted
    }
}

/// Why the store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("group {0} was already received")]
    DuplicateGroup(u64),
    #[error("object for unknown or evicted group {0}")]
    UnknownGroup(u64),
    #[error("object {object} of group {group} does not follow object {last}")]
    ObjectOrder { group: u64, object: u64, last: u64 },
    #[error("object of {0} bytes exceeds the track cache budget")]
    ObjectTooLarge(usize),
}

/// The groups of one track.
#[derive(Debug)]
pub struct GroupStore {
    limits: CacheLimits,
    groups: VecDeque<CachedGroup>,
    bytes: usize,
    /// Groups evicted so far (for metrics).
    pub evicted: u64,
}

impl GroupStore {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            groups: VecDeque::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// Bytes of payload held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The group with the highest id.
    pub fn newest(&self) -> Option<&CachedGroup> {
        self.groups.iter().max_by_key(|g| g.id)
    }

    pub fn get(&self, id: u64) -> Option<&CachedGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// Cached groups in ascending id order.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.groups.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        ids
    }

    /// The largest (group, object) location cached.
    pub fn largest(&self) -> Option<(u64, u64)> {
        let g = self.newest()?;
        let last = g.objects.last()?;
        Some((g.id, last.id))
    }

    /// Opens a group.
    pub fn open(&mut self, id: u64, subgroup: u64, priority: u8, now: Instant) -> Result<(), CacheError> {
        if self.groups.iter().any(|g| g.id == id && g.subgroup == subgroup) {
            return Err(CacheError::DuplicateGroup(id));
        }
        self.groups.push_back(CachedGroup {
            id,
            subgroup,
            priority,
            objects: Vec::new(),
            complete: false,
            aborted: false,
            opened: now,
            bytes: 0,
        });
        self.evict(now);
        Ok(())
    }

    /// Appends an object to an open group.
    pub fn push(&mut self, group: u64, object: CachedObject, now: Instant) -> Result<(), CacheError> {
        let size = object.payload.len();
        if size > self.limits.max_bytes {
            return Err(CacheError::ObjectTooLarge(size));
        }
        let g = self
            .groups
            .iter_mut()
            .find(|g| g.id == group && !g.ended())
            .ok_or(CacheError::UnknownGroup(group))?;
        if let Some(last) = g.objects.last() {
            if object.id <= last.id {
                return Err(CacheError::ObjectOrder {
                    group,
                    object: object.id,
                    last: last.id,
                });
            }
        }
        g.bytes += size;
        g.objects.push(object);
        self.bytes += size;
        self.evict(now);
        Ok(())
    }

    /// Marks a group finished (`clean`) or aborted.
    pub fn end(&mut self, group: u64, clean: bool) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.id == group && !g.ended()) {
            if clean {
                g.complete = true;
            } else {
                g.aborted = true;
            }
        }
    }

    /// Applies the limits at `now`. Returns how many groups were evicted.
    pub fn evict(&mut self, now: Instant) -> usize {
        let newest = match self.newest() {
            Some(g) => g.id,
            None => return 0,
        };
        let mut evicted = 0;
        loop {
            let over_bytes = self.bytes > self.limits.max_bytes;
            let over_count = self.groups.len() > self.limits.max_groups.max(1);
            let Some(oldest) = self.groups.front() else { break };
            let too_old = now.saturating_duration_since(oldest.opened) > self.limits.max_age;
            if oldest.id == newest || !(over_bytes || over_count || too_old) {
                // The front may be a newer group arriving out of order; only evict from the
                // front, and never the newest.
                if oldest.id == newest && self.groups.len() > 1 && (over_bytes || over_count) {
                    // Rotate the newest to the back so older ones can go.
                    let g = self.groups.pop_front().expect("non-empty");
                    self.groups.push_back(g);
                    continue;
                }
                break;
            }
            let g = self.groups.pop_front().expect("non-empty");
            self.bytes -= g.bytes;
            evicted += 1;
        }
        self.evicted += evicted as u64;
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(id: u64, len: usize) -> CachedObject {
        CachedObject {
            id,
            properties: ExtensionHeaders::default(),
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    fn limits(bytes: usize, groups: usize, age_ms: u64) -> CacheLimits {
        CacheLimits {
            max_bytes: bytes,
            max_groups: groups,
            max_age: Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn keeps_newest_group_and_evicts_by_bytes() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 100, 60_000));
        for g in 0..5u64 {
            s.open(g, 0, 0, t0).unwrap();
            s.push(g, obj(0, 400), t0).unwrap();
            s.end(g, true);
        }
        // 5 x 400 bytes with a 1000-byte budget: only the two newest fit.
        assert_eq!(s.ids(), vec![3, 4]);
        assert!(s.bytes() <= 1000);
        assert_eq!(s.evicted, 3);
        assert_eq!(s.newest().unwrap().id, 4);
    }

    #[test]
    fn evicts_by_age_with_injected_time() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 100, 2_000));
        s.open(0, 0, 0, t0).unwrap();
        s.open(1, 0, 0, t0 + Duration::from_millis(1500)).unwrap();
        assert_eq!(s.ids(), vec![0, 1]);
        s.evict(t0 + Duration::from_millis(2500));
        assert_eq!(s.ids(), vec![1]);
        // The newest group survives however old it is.
        s.evict(t0 + Duration::from_secs(100));
        assert_eq!(s.ids(), vec![1]);
    }

    #[test]
    fn evicts_by_count() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 3, 60_000));
        for g in 0..10 {
            s.open(g, 0, 0, t0).unwrap();
        }
        assert_eq!(s.ids(), vec![7, 8, 9]);
    }

    #[test]
    fn newest_group_is_never_evicted_even_if_alone_over_budget() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 10, 60_000));
        s.open(0, 0, 0, t0).unwrap();
        for i in 0..4 {
            s.push(0, obj(i, 300), t0).unwrap();
        }
        assert_eq!(s.ids(), vec![0]);
        assert_eq!(s.bytes(), 1200);
        // The next group pushes it out.
        s.open(1, 0, 0, t0).unwrap();
        s.push(1, obj(0, 10), t0).unwrap();
        assert_eq!(s.ids(), vec![1]);
    }

    #[test]
    fn rejects_bad_input() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 10, 60_000));
        assert_eq!(s.push(9, obj(0, 1), t0), Err(CacheError::UnknownGroup(9)));
        s.open(1, 0, 0, t0).unwrap();
        assert_eq!(s.open(1, 0, 0, t0), Err(CacheError::DuplicateGroup(1)));
        s.push(1, obj(5, 1), t0).unwrap();
        assert!(matches!(s.push(1, obj(5, 1), t0), Err(CacheError::ObjectOrder { .. })));
        assert_eq!(s.push(1, obj(6, 2000), t0), Err(CacheError::ObjectTooLarge(2000)));
        s.end(1, true);
        assert_eq!(s.push(1, obj(7, 1), t0), Err(CacheError::UnknownGroup(1)));
        assert_eq!(s.largest(), Some((1, 5)));
    }

    #[test]
    fn out_of_order_newest_is_kept() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 2, 60_000));
        s.open(5, 0, 0, t0).unwrap();
        s.open(3, 0, 0, t0).unwrap();
        s.open(4, 0, 0, t0).unwrap();
        // Two groups max; 5 is newest and must stay.
        assert!(s.ids().contains(&5));
        assert_eq!(s.len(), 2);
    }
}

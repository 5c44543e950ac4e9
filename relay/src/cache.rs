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
use moqcast_media::moq::{transport::data::ObjectStatus, wire, ExtensionHeaders};
use tokio::time::Instant;

/// Limits of one track's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_bytes: usize,
    /// Distinct group ids kept.
    pub max_groups: usize,
    pub max_age: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        // Enough for a few seconds of high-bitrate video per track; a live relay rarely needs
        // more than the newest group (docs/BENCHMARKS.md has the memory measurements).
        Self {
            max_bytes: 8 * 1024 * 1024,
            max_groups: 16,
            max_age: Duration::from_secs(10),
        }
    }
}

/// One cached object (or an End of Group / End of Track marker).
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub id: u64,
    pub status: ObjectStatus,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
    /// Datagram tracks: this object closed its group.
    pub end_of_group: bool,
    /// The object's header on a subgroup stream that starts at its subgroup's first cached
    /// object (draft-18 §11.4.2), encoded once by [`GroupStore::push`] and shared by every
    /// subscriber's stream. Pumps therefore always start a subgroup at its first cached object.
    pub header: Bytes,
}

impl CachedObject {
    pub fn new(id: u64, properties: ExtensionHeaders, payload: Bytes) -> Self {
        Self {
            id,
            status: ObjectStatus::NormalObject,
            properties,
            payload,
            end_of_group: false,
            header: Bytes::new(),
        }
    }
}

/// Identifies a cache entry: a subgroup of a group.
pub type Key = (u64, u64);

/// One cached subgroup stream.
#[derive(Debug)]
pub struct CachedGroup {
    pub id: u64,
    pub subgroup: u64,
    pub priority: u8,
    pub objects: Vec<CachedObject>,
    /// The publisher finished the stream cleanly.
    pub complete: bool,
    /// The publisher reset the stream: what is cached is all there will be.
    pub aborted: bool,
    pub opened: Instant,
    pub bytes: usize,
}

impl CachedGroup {
    /// No more objects will arrive.
    pub fn ended(&self) -> bool {
        self.complete || self.aborted
    }

    pub fn key(&self) -> Key {
        (self.id, self.subgroup)
    }
}

/// Why the store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("subgroup {1} of group {0} was already received")]
    DuplicateGroup(u64, u64),
    #[error("object for unknown or evicted subgroup {1} of group {0}")]
    UnknownGroup(u64, u64),
    #[error("object {object} of group {group} does not follow object {last}")]
    ObjectOrder { group: u64, object: u64, last: u64 },
    #[error("object of {0} bytes exceeds the track cache budget")]
    ObjectTooLarge(usize),
    #[error("group {0} outgrew the track cache budget")]
    GroupTooLarge(u64),
    #[error("object {object} of group {group} cannot be encoded: {reason}")]
    Encode {
        group: u64,
        object: u64,
        reason: String,
    },
}

/// The recent subgroups of one track.
#[derive(Debug)]
pub struct GroupStore {
    limits: CacheLimits,
    groups: VecDeque<CachedGroup>,
    bytes: usize,
    /// Entries evicted so far (for metrics).
    pub evicted: u64,
    /// Subgroups opened so far: readers rescan [`GroupStore::keys`] only when it moved.
    opened: u64,
}

impl GroupStore {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            groups: VecDeque::new(),
            bytes: 0,
            evicted: 0,
            opened: 0,
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// Bytes of payload held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Cached subgroups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The highest group id cached.
    pub fn newest_group(&self) -> Option<u64> {
        self.groups.iter().map(|g| g.id).max()
    }

    /// The lowest group id cached.
    pub fn oldest_group(&self) -> Option<u64> {
        self.groups.iter().map(|g| g.id).min()
    }

    /// Distinct group ids cached.
    pub fn group_count(&self) -> usize {
        let mut ids: Vec<u64> = self.groups.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn get(&self, key: Key) -> Option<&CachedGroup> {
        self.groups.iter().find(|g| g.key() == key)
    }

    /// How many subgroups were ever opened here (a change counter for new keys).
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Cached subgroups in ascending (group, subgroup) order.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.groups.iter().map(CachedGroup::key).collect();
        keys.sort_unstable();
        keys
    }

    /// The largest (group, object) location cached.
    pub fn largest(&self) -> Option<(u64, u64)> {
        self.groups
            .iter()
            .filter_map(|g| {
                g.objects
                    .iter()
                    .filter(|o| o.status == ObjectStatus::NormalObject)
                    .map(|o| (g.id, o.id))
                    .max()
            })
            .max()
    }

    /// Opens a subgroup.
    pub fn open(
        &mut self,
        id: u64,
        subgroup: u64,
        priority: u8,
        now: Instant,
    ) -> Result<(), CacheError> {
        if self.get((id, subgroup)).is_some() {
            return Err(CacheError::DuplicateGroup(id, subgroup));
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
        self.opened += 1;
        self.evict(now);
        Ok(())
    }

    /// Appends an object to an open subgroup.
    pub fn push(&mut self, key: Key, object: CachedObject, now: Instant) -> Result<(), CacheError> {
        let size = object.payload.len();
        if size > self.limits.max_bytes {
            return Err(CacheError::ObjectTooLarge(size));
        }
        let g = self
            .groups
            .iter_mut()
            .find(|g| g.key() == key && !g.ended())
            .ok_or(CacheError::UnknownGroup(key.0, key.1))?;
        if g.bytes + size > self.limits.max_bytes {
            // Even the newest group is bounded: a publisher that never starts a new group
            // cannot grow the relay's memory. The group ends here (aborted).
            g.aborted = true;
            return Err(CacheError::GroupTooLarge(key.0));
        }
        let previous = g.objects.last().map(|last| last.id);
        if let Some(last) = previous {
            if object.id <= last {
                return Err(CacheError::ObjectOrder {
                    group: key.0,
                    object: object.id,
                    last,
                });
            }
        }
        let mut object = object;
        object.header =
            wire::object_header(previous, object.id, &object.properties, size, object.status)
                .map_err(|e| CacheError::Encode {
                    group: key.0,
                    object: object.id,
                    reason: e.to_string(),
                })?;
        g.bytes += size;
        g.objects.push(object);
        self.bytes += size;
        self.evict(now);
        Ok(())
    }

    /// Marks a subgroup finished (`clean`) or aborted.
    pub fn end(&mut self, key: Key, clean: bool) {
        if let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.key() == key && !g.ended())
        {
            if clean {
                g.complete = true;
            } else {
                g.aborted = true;
            }
        }
    }

    /// Ends every subgroup still being written as aborted (its upstream was replaced: nothing
    /// more will arrive for it); returns how many.
    pub fn abort_open(&mut self) -> usize {
        let mut n = 0;
        for g in self.groups.iter_mut().filter(|g| !g.ended()) {
            g.aborted = true;
            n += 1;
        }
        n
    }

    /// Index of the oldest entry, by when it was opened, skipping the newest group's entries
    /// when `keep_newest`.
    fn oldest_index(&self, keep_newest: bool) -> Option<usize> {
        let newest = if keep_newest {
            self.newest_group()
        } else {
            None
        };
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| Some(g.id) != newest)
            .min_by_key(|(_, g)| (g.opened, g.id))
            .map(|(i, _)| i)
    }

    /// The entries the relay-wide budget may evict, oldest first (the order
    /// [`Self::evict_oldest`] takes them in): all but the newest group's when `keep_newest`.
    pub fn evictable(&self, keep_newest: bool) -> Vec<crate::budget::Evictable> {
        let newest = if keep_newest {
            self.newest_group()
        } else {
            None
        };
        let mut v: Vec<&CachedGroup> = self
            .groups
            .iter()
            .filter(|g| Some(g.id) != newest)
            .collect();
        v.sort_unstable_by_key(|g| (g.opened, g.id));
        v.into_iter()
            .map(|g| crate::budget::Evictable {
                opened: g.opened,
                bytes: g.bytes,
            })
            .collect()
    }

    /// Evicts up to `n` of the oldest entries (never the newest group's when `keep_newest`),
    /// for the relay-wide budget. Returns the entries and payload bytes evicted. These are not
    /// counted in [`Self::evicted`], which counts the track's own limits.
    pub fn evict_oldest(&mut self, n: usize, keep_newest: bool) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        while count < n {
            let Some(idx) = self.oldest_index(keep_newest) else {
                break;
            };
            let g = self.groups.remove(idx).expect("index in range");
            self.bytes -= g.bytes;
            bytes += g.bytes;
            count += 1;
        }
        (count, bytes)
    }

    /// Applies the limits at `now`: evicts the oldest subgroups, never those of the newest
    /// group. Returns how many subgroups were evicted.
    pub fn evict(&mut self, now: Instant) -> usize {
        let mut evicted = 0;
        loop {
            let over_bytes = self.bytes > self.limits.max_bytes;
            let over_count = self.group_count() > self.limits.max_groups.max(1);
            // The oldest entry not of the newest group.
            let Some(idx) = self.oldest_index(true) else {
                break;
            };
            let too_old =
                now.saturating_duration_since(self.groups[idx].opened) > self.limits.max_age;
            if !(over_bytes || over_count || too_old) {
                break;
            }
            let g = self.groups.remove(idx).expect("index in range");
            self.bytes -= g.bytes;
            evicted += 1;
        }
        self.evicted += evicted as u64;
        evicted
    }
}

/// The group IDs a track's cache gives the groups of its upstreams, so that they only ever
/// increase for its subscribers when the upstream changes (a take-over hands the track to
/// another publisher, whose group IDs may start again at 0).
///
/// Each upstream is an *epoch*. The first group an epoch delivers fixes its offset: if its ID
/// is below every group the cache has seen, the epoch's groups are moved up to follow the last
/// one; otherwise they keep their IDs. A group of the epoch below its first group (a stream that
/// arrived late) cannot be placed without colliding with an earlier epoch and is refused, as is
/// anything routed under an epoch that is no longer current (the previous publisher's streams
/// still in flight). Pure logic: [`crate::track::TrackCache`] keeps one under its lock.
#[derive(Debug, Default, Clone)]
pub struct GroupNumbers {
    epoch: u64,
    /// One past the highest group ID given out, over every epoch.
    next: u64,
    /// `next` when the current epoch began: its groups are placed at or above it.
    floor: u64,
    /// Added to the current epoch's group IDs; fixed by its first group.
    offset: Option<u64>,
}

/// Why a group could not be numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    #[error("a group of upstream {0}, which was replaced by upstream {1}")]
    Stale(u64, u64),
    #[error("group {0} precedes its upstream's first group")]
    BeforeFirst(u64),
}

impl GroupNumbers {
    /// The current upstream.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new upstream takes over: its groups will follow every group numbered so far.
    pub fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.floor = self.next;
        self.offset = None;
        self.epoch
    }

    /// The cache's ID for group `group` of upstream `epoch`.
    pub fn number(&mut self, epoch: u64, group: u64) -> Result<u64, NumberError> {
        if epoch != self.epoch {
            return Err(NumberError::Stale(epoch, self.epoch));
        }
        let floor = self.floor;
        let offset = *self
            .offset
            .get_or_insert_with(|| floor.saturating_sub(group));
        let id = group
            .checked_add(offset)
            .filter(|id| *id >= floor && *id < u64::MAX)
            .ok_or(NumberError::BeforeFirst(group))?;
        self.next = self.next.max(id + 1);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(id: u64, len: usize) -> CachedObject {
        CachedObject::new(id, ExtensionHeaders::default(), Bytes::from(vec![0u8; len]))
    }

    fn ids(s: &GroupStore) -> Vec<u64> {
        let mut v: Vec<u64> = s.keys().iter().map(|k| k.0).collect();
        v.dedup();
        v
    }

    fn limits(bytes: usize, groups: usize, age_ms: u64) -> CacheLimits {
        CacheLimits {
            max_bytes: bytes,
            max_groups: groups,
            max_age: Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn object_headers_are_encoded_once_relative_to_the_previous_cached_object() {
        use moqcast_media::moq::transport::{coding::Decode, data::SubgroupObjectExt};
        let mut s = GroupStore::new(limits(10_000, 4, 60_000));
        let t = Instant::now();
        s.open(7, 0, 0, t).unwrap();
        s.push((7, 0), obj(2, 10), t).unwrap();
        s.push((7, 0), obj(3, 0), t).unwrap();
        let mut end = obj(9, 0);
        end.status = ObjectStatus::EndOfGroup;
        s.push((7, 0), end, t).unwrap();
        let decoded: Vec<(u64, usize, Option<ObjectStatus>)> = s
            .get((7, 0))
            .unwrap()
            .objects
            .iter()
            .map(|o| {
                let mut b = o.header.clone();
                let h = SubgroupObjectExt::decode(&mut b).unwrap();
                assert!(b.is_empty(), "one header per object");
                (h.object_id_delta, h.payload_length, h.status)
            })
            .collect();
        // First object: its id; then the gap minus one. An empty normal object says so.
        assert_eq!(
            decoded,
            vec![
                (2, 10, None),
                (0, 0, Some(ObjectStatus::NormalObject)),
                (5, 0, Some(ObjectStatus::EndOfGroup)),
            ]
        );
    }

    #[test]
    fn keeps_newest_group_and_evicts_by_bytes() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 100, 60_000));
        for g in 0..5u64 {
            s.open(g, 0, 0, t0).unwrap();
            s.push((g, 0), obj(0, 400), t0).unwrap();
            s.end((g, 0), true);
        }
        // 5 x 400 bytes with a 1000-byte budget: only the two newest fit.
        assert_eq!(ids(&s), vec![3, 4]);
        assert!(s.bytes() <= 1000);
        assert_eq!(s.evicted, 3);
        assert_eq!(s.newest_group(), Some(4));
    }

    #[test]
    fn evicts_by_age_with_injected_time() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 100, 2_000));
        s.open(0, 0, 0, t0).unwrap();
        s.open(1, 0, 0, t0 + Duration::from_millis(1500)).unwrap();
        assert_eq!(ids(&s), vec![0, 1]);
        s.evict(t0 + Duration::from_millis(2500));
        assert_eq!(ids(&s), vec![1]);
        // The newest group survives however old it is.
        s.evict(t0 + Duration::from_secs(100));
        assert_eq!(ids(&s), vec![1]);
    }

    #[test]
    fn evicts_by_count() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 3, 60_000));
        for g in 0..10 {
            s.open(g, 0, 0, t0).unwrap();
        }
        assert_eq!(ids(&s), vec![7, 8, 9]);
    }

    #[test]
    fn newest_group_is_kept_but_bounded() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 10, 60_000));
        s.open(0, 0, 0, t0).unwrap();
        for i in 0..3 {
            s.push((0, 0), obj(i, 300), t0).unwrap();
        }
        // A fourth object would take the group past the budget: the group is cut off there.
        assert_eq!(
            s.push((0, 0), obj(3, 300), t0),
            Err(CacheError::GroupTooLarge(0))
        );
        assert!(s.get((0, 0)).unwrap().aborted);
        assert_eq!(ids(&s), vec![0]);
        assert_eq!(s.bytes(), 900);
        // The next group pushes it out.
        s.open(1, 0, 0, t0).unwrap();
        s.push((1, 0), obj(0, 800), t0).unwrap();
        assert_eq!(ids(&s), vec![1]);
    }

    #[test]
    fn rejects_bad_input() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1000, 10, 60_000));
        assert_eq!(
            s.push((9, 0), obj(0, 1), t0),
            Err(CacheError::UnknownGroup(9, 0))
        );
        s.open(1, 0, 0, t0).unwrap();
        assert_eq!(s.open(1, 0, 0, t0), Err(CacheError::DuplicateGroup(1, 0)));
        s.push((1, 0), obj(5, 1), t0).unwrap();
        assert!(matches!(
            s.push((1, 0), obj(5, 1), t0),
            Err(CacheError::ObjectOrder { .. })
        ));
        assert_eq!(
            s.push((1, 0), obj(6, 2000), t0),
            Err(CacheError::ObjectTooLarge(2000))
        );
        s.end((1, 0), true);
        assert_eq!(
            s.push((1, 0), obj(7, 1), t0),
            Err(CacheError::UnknownGroup(1, 0))
        );
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
        assert!(ids(&s).contains(&5));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn budget_eviction_takes_oldest_and_spares_the_newest_group() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 100, 60_000));
        for g in 0..3u64 {
            let at = t0 + Duration::from_millis(100 * g);
            s.open(g, 0, 0, at).unwrap();
            s.push((g, 0), obj(0, 100 + g as usize), at).unwrap();
        }
        // Group 2 is the newest: not a candidate while the track is live.
        let e = s.evictable(true);
        assert_eq!(
            e.iter().map(|e| e.bytes).collect::<Vec<_>>(),
            vec![100, 101]
        );
        assert_eq!(e[0].opened, t0);
        assert_eq!(s.evictable(false).len(), 3);
        // Asking for more than is evictable stops at the newest group.
        assert_eq!(s.evict_oldest(5, true), (2, 201));
        assert_eq!(ids(&s), vec![2]);
        assert_eq!(s.bytes(), 102);
        assert_eq!(s.evicted, 0, "budget evictions are not the track's own");
        assert_eq!(s.evict_oldest(5, true), (0, 0));
        // An ended track may lose its newest group too.
        assert_eq!(s.evict_oldest(5, false), (1, 102));
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn subgroups_of_one_group_count_as_one_group() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(limits(1 << 20, 2, 60_000));
        for g in 0..3u64 {
            for sg in 0..4u64 {
                s.open(g, sg, 0, t0).unwrap();
                s.push((g, sg), obj(sg, 10), t0).unwrap();
            }
        }
        assert_eq!(s.group_count(), 2);
        assert_eq!(s.len(), 8);
        assert_eq!(s.largest(), Some((2, 3)));
    }

    /// A take-over's publisher may number its groups from 0 again: the cache moves them up
    /// after the last group its subscribers saw, so IDs only increase; the previous
    /// publisher's late streams and groups from before the new upstream's first are refused.
    #[test]
    fn group_ids_keep_increasing_across_upstreams() {
        let mut n = GroupNumbers::default();
        // The first upstream keeps its IDs, late streams included.
        assert_eq!(n.number(0, 40), Ok(40));
        assert_eq!(n.number(0, 39), Ok(39));
        assert_eq!(n.number(0, 41), Ok(41));
        // A take-over: the new publisher starts at 0.
        let b = n.next_epoch();
        assert_eq!(n.number(0, 42), Err(NumberError::Stale(0, b)));
        assert_eq!(n.number(b, 0), Ok(42));
        assert_eq!(n.number(b, 1), Ok(43));
        assert_eq!(n.number(b, 3), Ok(45));
        assert_eq!(n.number(b, 2), Ok(44), "late within the epoch is fine");
        // Hand-back to a publisher whose IDs are already past ours: they are kept.
        let a = n.next_epoch();
        assert_eq!(n.number(a, 100), Ok(100));
        assert_eq!(n.number(a, 45), Err(NumberError::BeforeFirst(45)));
        // And one that starts below the last ID: moved up, its earlier groups refused.
        let c = n.next_epoch();
        assert_eq!(n.number(c, 7), Ok(101));
        assert_eq!(n.number(c, 6), Err(NumberError::BeforeFirst(6)));
        assert_eq!(
            n.number(c, u64::MAX - 1),
            Err(NumberError::BeforeFirst(u64::MAX - 1))
        );
        assert_eq!(n.epoch(), c);
    }
}

//! What one subscriber gets of a track, decided without I/O.
//!
//! [`Policy`] remembers where a subscription stands: its window (where it starts and ends,
//! FORWARD), the groups below which it never goes, the subgroups it has seen, and for each open
//! subgroup the next object to send. Given the track's cache ([`GroupStore`]), whether the
//! upstream ended, and how many bytes the subscriber's connection may still take (its backlog
//! budget), [`Policy::plan`] says what to do now:
//!
//! - **Start.** The first object of the newest cached group (video starts on a keyframe), the
//!   oldest (a subscription that waited for the track), the next group, or a requested group and
//!   object (Absolute Start/Range), never below the oldest cached group.
//! - **Follow.** Every new subgroup from there on is opened; new objects are sent in order.
//! - **Throttle.** Objects are sent only while the budget lasts; the rest waits in the cache.
//! - **Skip.** A throttled subscriber for which a newer group exists gives up its older
//!   subgroups (reset `TOO_FAR_BEHIND`) and goes on at the newest group.
//! - **Evicted.** A subgroup evicted from the cache while the subscriber still reads it was too
//!   far behind: reset `TOO_FAR_BEHIND`.
//! - **End.** When the upstream ended, or an Absolute Range passed its end group: complete
//!   subgroups finish, partial ones are reset, and the subscription is done.
//!
//! `fanout::pump` runs it against a live cache and carries out the plan on QUIC streams.

use std::collections::BTreeSet;

use moqcast_media::moq::transport;

use crate::cache::{CachedObject, GroupStore, Key};

/// Why a track ended, or could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    #[error("no such track")]
    NotFound,
    #[error("timed out waiting for the track")]
    Timeout,
    #[error("cancelled")]
    Cancel,
    /// The broadcast was handed to another publisher (a take-over, or its previous publisher
    /// serving it again) that does not have this track.
    #[error("the broadcast's new publisher has no such track")]
    NotWithNewPublisher,
    /// Ended upstream with this PUBLISH_DONE status (draft-18 §9.12).
    #[error("ended upstream with status {0:#x}")]
    Closed(u64),
    #[error("{0}")]
    Internal(String),
}

impl TrackError {
    /// The REQUEST_ERROR code for a subscription refused with this (draft-18 §9.6).
    pub fn request_error_code(&self) -> u64 {
        use transport::message::RequestErrorCode as C;
        (match self {
            Self::NotFound | Self::NotWithNewPublisher => C::DoesNotExist,
            Self::Timeout => C::Timeout,
            Self::Closed(_) => C::DoesNotExist,
            Self::Cancel | Self::Internal(_) => C::InternalError,
        }) as u64
    }

    /// The PUBLISH_DONE status of a subscription whose track ended this way (`None`: cleanly).
    pub fn publish_done_status(err: Option<&TrackError>) -> u64 {
        use transport::message::PublishDoneCode as D;
        match err {
            None => D::TrackEnded as u64,
            Some(Self::Closed(code)) => *code,
            Some(Self::Cancel) => D::SubscriptionEnded as u64,
            // The track is over as far as this broadcast's publisher goes; the reason says why.
            Some(Self::NotWithNewPublisher) => D::TrackEnded as u64,
            Some(Self::NotFound | Self::Timeout | Self::Internal(_)) => D::InternalError as u64,
        }
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first object of the newest cached group (default: video starts on a keyframe).
    Newest,
    /// Everything still cached (a subscription that was waiting before the track existed).
    Oldest,
    /// The first group after the newest cached one.
    NextGroup,
    /// A given group (from a given object on), or the newest if that one is no longer cached.
    Group(u64, u64),
}

/// What a subscription asked for (draft-18 §5.1.2 filters, §9.2.8 FORWARD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Start,
    /// The last group delivered (AbsoluteRange); the subscription ends after it.
    pub end_group: Option<u64>,
    /// FORWARD=0: the subscription holds but no objects are sent.
    pub forward: bool,
}

impl Window {
    pub fn live(start: Start) -> Self {
        Self {
            start,
            end_group: None,
            forward: true,
        }
    }
}

/// Stream reset codes (draft-18 §3.5) the policy asks for.
pub mod reset {
    /// The subscriber fell too far behind for this subgroup.
    pub const TOO_FAR_BEHIND: u64 = 0x5;
    /// The track ended before the subgroup was complete.
    pub const TRACK_ENDED: u64 = 0x2;
}

/// One open subgroup of this subscriber.
#[derive(Debug, Clone)]
struct Lane {
    key: Key,
    /// Index of the next object to send in the cached subgroup.
    next: usize,
}

/// What to do now for one subscriber.
#[derive(Debug, Default)]
pub struct Plan {
    /// Subgroups to open, in order, with their priority.
    pub open: Vec<(Key, u8)>,
    /// Objects to send, per subgroup, in order (open subgroups first, then the new ones).
    pub send: Vec<(Key, Vec<CachedObject>)>,
    /// Subgroups delivered in full: finish their streams.
    pub finish: Vec<Key>,
    /// Subgroups to abandon, with a reset code ([`reset`]).
    pub reset: Vec<(Key, u64)>,
    /// Subgroups given up because the subscriber was behind (skip or eviction).
    pub dropped: usize,
    /// Whether a skip to the newest group happened.
    pub skipped: bool,
    /// The budget ran out with objects left to send.
    pub throttled: bool,
    /// The subscription is over, with this result.
    pub done: Option<Result<(), TrackError>>,
}

/// A subscriber's position in a track. See the module documentation.
#[derive(Debug)]
pub struct Policy {
    window: Window,
    /// Groups below this are never opened; `None` until the cache has a group.
    floor: Option<u64>,
    /// Subgroups at or above the floor already opened.
    seen: BTreeSet<Key>,
    lanes: Vec<Lane>,
    /// The store's `opened()` count at the last scan for new subgroups.
    scanned: Option<u64>,
    done: bool,
}

impl Policy {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            floor: None,
            seen: BTreeSet::new(),
            lanes: Vec::new(),
            scanned: None,
            done: false,
        }
    }

    /// Subgroups open now.
    pub fn open_lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Decides what to send now. `ended` is `Some` once the upstream ended (`Some(None)`
    /// cleanly); `room` is how many payload bytes the subscriber's connection may still take.
    pub fn plan(
        &mut self,
        store: &GroupStore,
        ended: Option<Option<TrackError>>,
        mut room: u64,
    ) -> Plan {
        let mut plan = Plan::default();
        if self.done {
            plan.done = Some(Ok(()));
            return plan;
        }
        self.place(store);
        self.scan(store, &mut plan);

        // Send what the budget allows, subgroup by subgroup.
        let mut finished = Vec::new();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let Some(group) = store.get(lane.key) else {
                // Evicted while this subscriber still read it.
                plan.reset.push((lane.key, reset::TOO_FAR_BEHIND));
                plan.dropped += 1;
                finished.push(i);
                continue;
            };
            let pending = group.objects.get(lane.next..).unwrap_or_default();
            let mut objects = Vec::new();
            for obj in pending {
                if plan.throttled || room == 0 {
                    plan.throttled = true;
                    break;
                }
                room = room.saturating_sub(obj.payload.len() as u64);
                objects.push(obj.clone());
            }
            lane.next += objects.len();
            if !objects.is_empty() {
                plan.send.push((lane.key, objects));
            }
            if group.ended() && lane.next >= group.objects.len() {
                if group.aborted {
                    // The publisher reset it (or it outgrew the cache): reset it downstream too.
                    plan.reset.push((lane.key, reset::TOO_FAR_BEHIND));
                    plan.dropped += 1;
                } else {
                    plan.finish.push(lane.key);
                }
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            self.lanes.swap_remove(i);
        }

        // Behind, and a newer group exists: give up the older subgroups' undelivered
        // remainder and go on at the newest group, which starts with a keyframe.
        if plan.throttled {
            if let Some(newest) = store.newest_group() {
                let before = self.lanes.len();
                self.lanes.retain(|l| {
                    if l.key.0 < newest {
                        plan.reset.push((l.key, reset::TOO_FAR_BEHIND));
                        false
                    } else {
                        true
                    }
                });
                let stale = before - self.lanes.len();
                plan.dropped += stale;
                plan.skipped = stale > 0;
            }
        }

        // The end: the upstream is gone, or the window is past its end group.
        let window_done = self.window.end_group.is_some_and(|end| {
            store.newest_group().is_some_and(|n| n > end) && self.lanes.is_empty()
        });
        if let Some(err) = ended {
            self.end_lanes(store, &mut plan);
            plan.done = Some(match err {
                None => Ok(()),
                Some(e) => Err(e),
            });
            self.done = true;
        } else if window_done {
            plan.done = Some(Ok(()));
            self.done = true;
        }
        plan
    }

    /// Finishes complete subgroups and resets partial ones, at the end of the subscription.
    fn end_lanes(&mut self, store: &GroupStore, plan: &mut Plan) {
        for lane in self.lanes.drain(..) {
            let complete = store
                .get(lane.key)
                .is_some_and(|g| g.complete && g.objects.len() == lane.next);
            if complete {
                plan.finish.push(lane.key);
            } else {
                plan.reset.push((lane.key, reset::TRACK_ENDED));
            }
        }
    }

    /// Sets the floor once the cache has a group.
    fn place(&mut self, store: &GroupStore) {
        if self.floor.is_some() || !self.window.forward {
            return;
        }
        if let (Some(newest), Some(oldest)) = (store.newest_group(), store.oldest_group()) {
            self.floor = Some(match self.window.start {
                Start::Newest => newest,
                Start::Oldest => oldest,
                Start::NextGroup => newest + 1,
                Start::Group(g, _) => g.max(oldest),
            });
        }
    }

    /// Opens the subgroups that appeared since the last scan (only when the store opened one).
    fn scan(&mut self, store: &GroupStore, plan: &mut Plan) {
        let Some(floor) = self.floor else {
            return;
        };
        if self.scanned == Some(store.opened()) {
            return;
        }
        self.scanned = Some(store.opened());
        let (start_group, start_object) = match self.window.start {
            Start::Group(g, o) => (Some(g), o),
            _ => (None, 0),
        };
        for key in store.keys() {
            let wanted = self.window.end_group.is_none_or(|end| key.0 <= end);
            if key.0 < floor || !wanted || self.seen.contains(&key) {
                continue;
            }
            let group = store.get(key).expect("listed");
            let next = if Some(key.0) == start_group {
                group
                    .objects
                    .iter()
                    .take_while(|o| o.id < start_object)
                    .count()
            } else {
                0
            };
            self.seen.insert(key);
            plan.open.push((key, group.priority));
            self.lanes.push(Lane { key, next });
        }
        // Forget keys of groups that fell out of the cache (keeps `seen` bounded).
        if let Some(oldest) = store.oldest_group() {
            let lanes = &self.lanes;
            self.seen
                .retain(|k| k.0 >= oldest || lanes.iter().any(|l| l.key == *k));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::time::Instant;

    use super::*;
    use crate::cache::CacheLimits;

    fn store() -> GroupStore {
        GroupStore::new(CacheLimits {
            max_bytes: 1 << 20,
            max_groups: 100,
            max_age: Duration::from_secs(600),
        })
    }

    /// Appends object `o` of `size` bytes to group `g` (opening it at `now`).
    fn push(s: &mut GroupStore, g: u64, o: u64, size: usize, now: Instant) {
        if s.get((g, 0)).is_none() {
            s.open(g, 0, 7, now).unwrap();
        }
        let obj = CachedObject::new(o, Default::default(), Bytes::from(vec![0u8; size]));
        s.push((g, 0), obj, now).unwrap();
    }

    fn sent(plan: &Plan) -> Vec<(u64, u64)> {
        plan.send
            .iter()
            .flat_map(|(k, objs)| objs.iter().map(move |o| (k.0, o.id)))
            .collect()
    }

    const PLENTY: u64 = u64::MAX;

    #[test]
    fn a_new_subscriber_starts_at_the_newest_groups_first_object_and_follows_the_live_edge() {
        let t0 = Instant::now();
        let mut s = store();
        for g in 0..3 {
            for o in 0..3 {
                push(&mut s, g, o, 10, t0 + Duration::from_millis(g * 100));
            }
            if g < 2 {
                s.end((g, 0), true);
            }
        }
        let mut p = Policy::new(Window::live(Start::Newest));
        let plan = p.plan(&s, None, PLENTY);
        assert_eq!(plan.open, vec![((2, 0), 7)]);
        assert_eq!(sent(&plan), vec![(2, 0), (2, 1), (2, 2)]);
        assert!(plan.finish.is_empty() && plan.done.is_none());
        // A new object, then the group ends and the next starts.
        push(&mut s, 2, 3, 10, t0 + Duration::from_millis(250));
        assert_eq!(sent(&p.plan(&s, None, PLENTY)), vec![(2, 3)]);
        s.end((2, 0), true);
        push(&mut s, 3, 0, 10, t0 + Duration::from_millis(300));
        let plan = p.plan(&s, None, PLENTY);
        assert_eq!(plan.finish, vec![(2, 0)]);
        assert_eq!(plan.open, vec![((3, 0), 7)]);
        assert_eq!(sent(&plan), vec![(3, 0)]);
    }

    #[test]
    fn start_positions_follow_the_filter() {
        let t0 = Instant::now();
        let mut s = store();
        for g in 0..4 {
            for o in 0..4 {
                push(&mut s, g, o, 10, t0);
            }
        }
        let first = |start| {
            let mut p = Policy::new(Window::live(start));
            sent(&p.plan(&s, None, PLENTY)).first().copied()
        };
        assert_eq!(first(Start::Oldest), Some((0, 0)));
        assert_eq!(first(Start::Newest), Some((3, 0)));
        assert_eq!(first(Start::NextGroup), None, "nothing until group 4");
        assert_eq!(
            first(Start::Group(2, 3)),
            Some((2, 3)),
            "Absolute Start inside a group"
        );
        assert_eq!(first(Start::Group(9, 0)), None);
    }

    #[test]
    fn an_absolute_range_ends_after_its_end_group() {
        let t0 = Instant::now();
        let mut s = store();
        for g in 0..2 {
            push(&mut s, g, 0, 10, t0);
        }
        let mut p = Policy::new(Window {
            start: Start::Group(0, 0),
            end_group: Some(1),
            forward: true,
        });
        let plan = p.plan(&s, None, PLENTY);
        assert_eq!(sent(&plan), vec![(0, 0), (1, 0)]);
        s.end((0, 0), true);
        s.end((1, 0), true);
        push(&mut s, 2, 0, 10, t0);
        let plan = p.plan(&s, None, PLENTY);
        assert_eq!(plan.finish, vec![(0, 0), (1, 0)]);
        assert!(plan.open.is_empty(), "group 2 is past the range");
        assert_eq!(plan.done, Some(Ok(())));
    }

    #[test]
    fn forward_zero_sends_nothing() {
        let mut s = store();
        push(&mut s, 0, 0, 10, Instant::now());
        let mut p = Policy::new(Window {
            forward: false,
            ..Window::live(Start::Newest)
        });
        let plan = p.plan(&s, None, PLENTY);
        assert!(plan.open.is_empty() && plan.send.is_empty());
    }

    #[test]
    fn a_throttled_subscriber_waits_then_skips_to_the_newest_group() {
        let t0 = Instant::now();
        let mut s = store();
        for o in 0..10 {
            push(&mut s, 0, o, 100, t0);
        }
        let mut p = Policy::new(Window::live(Start::Oldest));
        // Room for three objects.
        let plan = p.plan(&s, None, 300);
        assert_eq!(sent(&plan).len(), 3);
        assert!(plan.throttled && !plan.skipped, "no newer group to skip to");
        // Still no room: nothing is sent, nothing is dropped.
        let plan = p.plan(&s, None, 0);
        assert!(plan.send.is_empty() && plan.throttled && plan.reset.is_empty());
        // A newer group appears while it is still behind: group 0 is given up.
        s.end((0, 0), true);
        push(&mut s, 1, 0, 100, t0 + Duration::from_secs(1));
        let plan = p.plan(&s, None, 0);
        assert_eq!(plan.open, vec![((1, 0), 7)]);
        assert!(plan.skipped);
        assert_eq!(plan.reset, vec![((0, 0), reset::TOO_FAR_BEHIND)]);
        assert_eq!(plan.dropped, 1);
        // With room again it goes on at group 1.
        assert_eq!(sent(&p.plan(&s, None, PLENTY)), vec![(1, 0)]);
    }

    #[test]
    fn a_subgroup_evicted_while_read_is_reset_too_far_behind() {
        let t0 = Instant::now();
        let mut s = GroupStore::new(CacheLimits {
            max_bytes: 1 << 20,
            max_groups: 2,
            max_age: Duration::from_secs(600),
        });
        push(&mut s, 0, 0, 10, t0);
        push(&mut s, 0, 1, 10, t0);
        let mut p = Policy::new(Window::live(Start::Oldest));
        assert_eq!(sent(&p.plan(&s, None, 10)), vec![(0, 0)]);
        // Two newer groups push group 0 out of the cache.
        push(&mut s, 1, 0, 10, t0);
        push(&mut s, 2, 0, 10, t0);
        let plan = p.plan(&s, None, PLENTY);
        assert!(plan.reset.contains(&((0, 0), reset::TOO_FAR_BEHIND)));
        assert_eq!(sent(&plan), vec![(1, 0), (2, 0)]);
    }

    #[test]
    fn when_the_upstream_ends_complete_subgroups_finish_and_partial_ones_reset() {
        let t0 = Instant::now();
        let mut s = store();
        push(&mut s, 0, 0, 10, t0);
        s.open(0, 1, 7, t0).unwrap();
        let obj = CachedObject::new(0, Default::default(), Bytes::from_static(b"x"));
        s.push((0, 1), obj, t0).unwrap();
        let mut p = Policy::new(Window::live(Start::Oldest));
        assert_eq!(p.plan(&s, None, PLENTY).open.len(), 2);
        s.end((0, 0), true);
        let plan = p.plan(&s, Some(None), PLENTY);
        assert_eq!(plan.finish, vec![(0, 0)]);
        assert_eq!(plan.reset, vec![((0, 1), reset::TRACK_ENDED)]);
        assert_eq!(plan.done, Some(Ok(())));
        assert_eq!(p.open_lanes(), 0);
        // An upstream that failed ends the subscription with its error.
        let mut p = Policy::new(Window::live(Start::Oldest));
        let plan = p.plan(&s, Some(Some(TrackError::Closed(0x4))), PLENTY);
        assert_eq!(plan.done, Some(Err(TrackError::Closed(0x4))));
    }
}

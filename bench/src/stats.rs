//! What was published, what each subscription received, and how the two compare.
//!
//! Pure bookkeeping: no I/O, no clock (callers pass wall-clock microseconds). The publisher
//! writes a [`TrackLedger`] per track; each subscription keeps a [`TrackStats`]; [`compare`]
//! decides which groups a subscription should have received and how much of them it did.
//!
//! A subscription is expected to receive every group that the publisher *started after the
//! subscription's SUBSCRIBE was sent* and that started inside the measured window. The group
//! in progress at SUBSCRIBE time is not expected (relays differ: ours replays it from its
//! first object, others start mid-group or at the next group), and its objects are left out
//! of the latency figures because a replayed object's "latency" is its age, not transit time.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use crate::hist::Histogram;

/// The most groups one subscription tallies (a bound on memory; far above any sane run).
pub const MAX_TALLIES: usize = 1 << 16;

/// One group as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: u64,
    /// Wall-clock µs when its first object was written.
    pub start_us: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// What the publisher wrote into one track.
#[derive(Debug, Default)]
pub struct TrackLedger {
    /// The id of the group being written, plus one (0: none yet).
    current: AtomicU64,
    groups: Mutex<Vec<GroupRecord>>,
}

impl TrackLedger {
    pub fn start_group(&self, id: u64, now_us: u64) {
        self.groups.lock().expect("poisoned").push(GroupRecord {
            id,
            start_us: now_us,
            objects: 0,
            bytes: 0,
        });
        self.current.store(id + 1, Ordering::Release);
    }

    /// Counts one object of `bytes` in the current group.
    pub fn object(&self, bytes: usize) {
        if let Some(g) = self.groups.lock().expect("poisoned").last_mut() {
            g.objects += 1;
            g.bytes += bytes as u64;
        }
    }

    /// The group being written now, if any.
    pub fn current_group(&self) -> Option<u64> {
        self.current.load(Ordering::Acquire).checked_sub(1)
    }

    pub fn groups(&self) -> Vec<GroupRecord> {
        self.groups.lock().expect("poisoned").clone()
    }
}

/// The measured window, in wall-clock µs: `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_us: u64,
    pub end_us: u64,
}

impl Window {
    pub fn contains(&self, us: u64) -> bool {
        (self.start_us..self.end_us).contains(&us)
    }

    pub fn seconds(&self) -> f64 {
        self.end_us.saturating_sub(self.start_us) as f64 / 1e6
    }
}

/// Objects and bytes one subscription received of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub group: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// One received object, for `--latency-trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRow {
    pub group: u64,
    /// Its SEND_TIME property (wall-clock µs), when it had one.
    pub send_us: Option<u64>,
    /// Wall-clock µs when the subscriber had it.
    pub recv_us: u64,
}

/// What one track subscription received.
#[derive(Debug, Clone)]
pub struct TrackStats {
    /// Index of the track in the publisher's ledgers.
    pub track: usize,
    /// Wall-clock µs when SUBSCRIBE was sent (or the connection attempt failed).
    pub subscribe_us: u64,
    /// Groups with a larger id than this are expected (`None`: every group).
    pub after_group: Option<u64>,
    pub first_object_us: Option<u64>,
    /// Per-group counts, in arrival order of each group's first object.
    pub tallies: Vec<Tally>,
    /// Objects and payload bytes received while the window was open (throughput).
    pub window_objects: u64,
    pub window_bytes: u64,
    pub total_objects: u64,
    pub total_bytes: u64,
    pub error: Option<String>,
    /// Every object received, in order (only with `--latency-trace`).
    pub trace: Vec<TraceRow>,
}

impl TrackStats {
    pub fn new(track: usize, subscribe_us: u64, after_group: Option<u64>) -> Self {
        Self {
            track,
            subscribe_us,
            after_group,
            first_object_us: None,
            tallies: Vec::new(),
            window_objects: 0,
            window_bytes: 0,
            total_objects: 0,
            total_bytes: 0,
            error: None,
            trace: Vec::new(),
        }
    }

    fn expects(&self, group: u64) -> bool {
        self.after_group.is_none_or(|after| group > after)
    }

    /// Whether an object of `group` stamped `send_us` is a latency sample: of an expected
    /// group, sent inside the window.
    pub fn is_latency_sample(&self, group: u64, send_us: Option<u64>, window: &Window) -> bool {
        self.expects(group) && send_us.is_some_and(|s| window.contains(s))
    }

    /// Accounts one received object. `send_us` is its SEND_TIME property; latency is recorded
    /// into `latency` (µs) for objects of expected groups sent inside the window.
    pub fn on_object(
        &mut self,
        group: u64,
        bytes: usize,
        send_us: Option<u64>,
        now_us: u64,
        window: &Window,
        latency: &Histogram,
    ) {
        let bytes = bytes as u64;
        self.first_object_us.get_or_insert(now_us);
        self.total_objects += 1;
        self.total_bytes += bytes;
        if window.contains(now_us) {
            self.window_objects += 1;
            self.window_bytes += bytes;
        }
        if let Some(send) = send_us.filter(|_| self.is_latency_sample(group, send_us, window)) {
            latency.record(now_us.saturating_sub(send));
        }
        if !self.expects(group) {
            return;
        }
        // Objects of one group arrive in order and groups mostly in order: look from the end.
        if let Some(t) = self
            .tallies
            .iter_mut()
            .rev()
            .take(8)
            .find(|t| t.group == group)
        {
            t.objects += 1;
            t.bytes += bytes;
        } else if let Some(t) = self.tallies.iter_mut().find(|t| t.group == group) {
            t.objects += 1;
            t.bytes += bytes;
        } else if self.tallies.len() < MAX_TALLIES {
            self.tallies.push(Tally {
                group,
                objects: 1,
                bytes,
            });
        }
    }

    /// SUBSCRIBE to first object, in µs.
    pub fn join_us(&self) -> Option<u64> {
        self.first_object_us
            .map(|first| first.saturating_sub(self.subscribe_us))
    }
}

/// Expected against delivered, summed over subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delivery {
    pub expected_objects: u64,
    pub expected_bytes: u64,
    pub delivered_objects: u64,
    pub delivered_bytes: u64,
    pub expected_groups: u64,
    pub complete_groups: u64,
}

impl Delivery {
    /// Fraction of expected groups not fully received.
    pub fn group_loss(&self) -> f64 {
        if self.expected_groups == 0 {
            return 0.0;
        }
        1.0 - self.complete_groups as f64 / self.expected_groups as f64
    }
}

/// Compares each subscription with the ledger of its track. `ledgers[i]` are the groups of
/// track `i`. Delivered counts never exceed what was published.
pub fn compare<'a>(
    ledgers: &[Vec<GroupRecord>],
    subs: impl IntoIterator<Item = &'a TrackStats>,
    window: &Window,
) -> Delivery {
    let mut d = Delivery::default();
    for s in subs {
        let Some(ledger) = ledgers.get(s.track) else {
            continue;
        };
        let mut tallies = s.tallies.clone();
        tallies.sort_unstable_by_key(|t| t.group);
        for g in ledger {
            if !s.expects(g.id) || !window.contains(g.start_us) {
                continue;
            }
            d.expected_groups += 1;
            d.expected_objects += g.objects;
            d.expected_bytes += g.bytes;
            if let Ok(i) = tallies.binary_search_by_key(&g.id, |t| t.group) {
                let t = tallies[i];
                d.delivered_objects += t.objects.min(g.objects);
                d.delivered_bytes += t.bytes.min(g.bytes);
                if t.objects >= g.objects {
                    d.complete_groups += 1;
                }
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(groups: u64, objects: u64, size: u64, period_us: u64) -> Vec<GroupRecord> {
        (0..groups)
            .map(|id| GroupRecord {
                id,
                start_us: 1_000_000 + id * period_us,
                objects,
                bytes: objects * size,
            })
            .collect()
    }

    #[test]
    fn ledger_tracks_the_current_group() {
        let l = TrackLedger::default();
        assert_eq!(l.current_group(), None);
        l.start_group(0, 10);
        l.object(100);
        l.object(50);
        l.start_group(1, 20);
        l.object(7);
        assert_eq!(l.current_group(), Some(1));
        let g = l.groups();
        assert_eq!(
            (g[0].objects, g[0].bytes, g[1].objects, g[1].bytes),
            (2, 150, 1, 7)
        );
    }

    #[test]
    fn only_groups_started_after_subscribe_and_in_the_window_are_expected() {
        // 10 groups of 4 objects, one per second from t = 1 s.
        let ledgers = vec![ledger(10, 4, 100, 1_000_000)];
        let window = Window {
            start_us: 3_000_000,
            end_us: 9_000_000,
        };
        let h = Histogram::default();
        // Subscribed during group 4: expects groups 5..=7 (8 starts at 9 s, outside).
        let mut s = TrackStats::new(0, 5_001_000, Some(4));
        for g in 4..10u64 {
            // Group 6 loses one object.
            let n = if g == 6 { 3 } else { 4 };
            for o in 0..n {
                let send = 1_000_000 + g * 1_000_000 + o * 1000;
                s.on_object(g, 100, Some(send), send + 2_000, &window, &h);
            }
        }
        let d = compare(&ledgers, &[s.clone()], &window);
        assert_eq!(d.expected_groups, 3);
        assert_eq!(d.complete_groups, 2);
        assert_eq!(d.expected_objects, 12);
        assert_eq!(d.delivered_objects, 11);
        assert_eq!(d.delivered_bytes, 1100);
        assert!((d.group_loss() - 1.0 / 3.0).abs() < 1e-9);
        // Latency: only groups 5..=7 sent in the window (4 + 3 + 4 objects), 2 ms each.
        assert_eq!(h.count(), 11);
        assert_eq!(h.quantile(0.5), Some(2_000));
        assert_eq!(s.join_us(), Some(1_000));
    }

    #[test]
    fn a_subscription_that_got_nothing_loses_everything() {
        let ledgers = vec![ledger(5, 2, 10, 1_000_000)];
        let window = Window {
            start_us: 0,
            end_us: u64::MAX,
        };
        let s = TrackStats::new(0, 0, None);
        let d = compare(&ledgers, &[s], &window);
        assert_eq!(d.expected_groups, 5);
        assert_eq!(d.delivered_objects, 0);
        assert_eq!(d.group_loss(), 1.0);
    }
}

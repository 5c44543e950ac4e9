//! The relay-wide cache budget: which cached subgroups to evict when all track caches together
//! hold more payload than `--cache-total-bytes`.
//!
//! Plain logic, no I/O, no clock: callers describe each track's evictable subgroups (oldest
//! first, with when they were opened and their payload bytes) and get back how many of each
//! track's oldest subgroups to evict. [`crate::track::CacheBudget`] applies the plan.
//!
//! Policy:
//! * Only evictable subgroups are candidates. The newest group of a live track never is (a new
//!   subscriber starts at its first object), so the budget can be exceeded by the newest groups
//!   alone; each of those is still bounded by the per-track `--cache-bytes`.
//! * Each eviction takes the oldest evictable subgroup of the track with the most evictable
//!   bytes (ties: the track whose oldest evictable subgroup is oldest). Large caches shrink
//!   first and small ones (audio, captions, catalogs) keep their history; within a track the
//!   order is the per-track order, oldest first.
//! * Evictions stop as soon as at least `excess` bytes are freed.

use tokio::time::Instant;

/// One evictable subgroup of a track, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evictable {
    pub opened: Instant,
    pub bytes: usize,
}

/// How many of each track's oldest evictable subgroups to evict (same order as `tracks`) so that
/// at least `excess` bytes are freed, or as close as the candidates allow.
pub fn plan(tracks: &[Vec<Evictable>], excess: u64) -> Vec<usize> {
    let mut evict = vec![0usize; tracks.len()];
    let mut remaining: Vec<u64> = tracks
        .iter()
        .map(|t| t.iter().map(|e| e.bytes as u64).sum())
        .collect();
    let mut freed = 0u64;
    while freed < excess {
        let victim = (0..tracks.len())
            .filter(|&i| remaining[i] > 0)
            // Most evictable bytes first; among equals, the oldest next subgroup.
            .max_by(|&a, &b| {
                remaining[a]
                    .cmp(&remaining[b])
                    .then_with(|| tracks[b][evict[b]].opened.cmp(&tracks[a][evict[a]].opened))
            });
        let Some(i) = victim else { break };
        let e = tracks[i][evict[i]];
        evict[i] += 1;
        remaining[i] -= e.bytes as u64;
        freed += e.bytes as u64;
    }
    evict
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn track(t0: Instant, groups: &[(u64, usize)]) -> Vec<Evictable> {
        groups
            .iter()
            .map(|&(ms, bytes)| Evictable {
                opened: t0 + Duration::from_millis(ms),
                bytes,
            })
            .collect()
    }

    #[test]
    fn nothing_to_do_under_budget() {
        let t0 = Instant::now();
        let tracks = vec![track(t0, &[(0, 100), (10, 100)])];
        assert_eq!(plan(&tracks, 0), vec![0]);
        assert_eq!(plan(&[], 500), Vec::<usize>::new());
    }

    #[test]
    fn largest_track_shrinks_first_oldest_subgroup_first() {
        let t0 = Instant::now();
        // Video: three 1000-byte groups; audio: three 100-byte groups (older).
        let tracks = vec![
            track(t0, &[(1000, 1000), (2000, 1000), (3000, 1000)]),
            track(t0, &[(0, 100), (1000, 100), (2000, 100)]),
        ];
        // 1500 bytes over: video's two oldest groups go, audio keeps everything.
        assert_eq!(plan(&tracks, 1500), vec![2, 0]);
        // 2500 over: video down to 1000 evictable bytes... then still the largest: all three.
        assert_eq!(plan(&tracks, 2500), vec![3, 0]);
        // Past what video alone holds, audio gives up its oldest too.
        assert_eq!(plan(&tracks, 3050), vec![3, 1]);
    }

    #[test]
    fn equal_tracks_evict_the_oldest_first() {
        let t0 = Instant::now();
        let tracks = vec![
            track(t0, &[(500, 100), (1500, 100)]),
            track(t0, &[(0, 100), (1000, 100)]),
        ];
        // Same bytes: the track whose oldest subgroup is older (the second) goes first, then
        // the first (now the larger), alternating.
        assert_eq!(plan(&tracks, 100), vec![0, 1]);
        assert_eq!(plan(&tracks, 200), vec![1, 1]);
        assert_eq!(plan(&tracks, 300), vec![1, 2]);
    }

    #[test]
    fn stops_when_candidates_run_out() {
        let t0 = Instant::now();
        let tracks = vec![track(t0, &[(0, 10)]), Vec::new(), track(t0, &[(5, 0)])];
        // Only 10 evictable bytes anywhere: evict them and stop; empty subgroups free nothing.
        assert_eq!(plan(&tracks, 1_000_000), vec![1, 0, 0]);
    }
}

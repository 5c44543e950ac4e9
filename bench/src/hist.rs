//! A fixed-size, lock-free latency histogram (HDR-style log-linear buckets).
//!
//! Values are unsigned integers (the bench records microseconds). Below `2^P` every value has
//! its own bucket; above, each power of two is split into `2^(P-1)` equal buckets, so a
//! reported percentile is within `2^-(P-1)` (0.8 % with `P = 8`) of the true value. Memory is
//! fixed (about 60 KB) whatever the number of samples, and recording is one atomic add, so
//! every subscriber task records into one shared histogram.

use std::sync::atomic::{AtomicU64, Ordering};

/// Linear buckets below `2^P`; `2^(P-1)` buckets per power of two above.
const P: u32 = 8;
const LINEAR: usize = 1 << P;
const HALF: usize = 1 << (P - 1);
/// Shifts 1..=64-P cover every u64.
const BUCKETS: usize = LINEAR + (64 - P as usize) * HALF;

/// The bucket index of `v`.
fn index(v: u64) -> usize {
    if v < LINEAR as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb + 1 - P;
    LINEAR + (shift as usize - 1) * HALF + ((v >> shift) as usize - HALF)
}

/// The middle of bucket `i` (the value a percentile in it reports).
fn value(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let off = i - LINEAR;
    let shift = (off / HALF) as u32 + 1;
    let low = ((off % HALF + HALF) as u64) << shift;
    low + (1u64 << shift) / 2
}

/// Concurrent histogram of u64 samples.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max: AtomicU64,
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.counts[index(v)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The largest value recorded (exact), `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count() > 0).then(|| self.max.load(Ordering::Relaxed))
    }

    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum.load(Ordering::Relaxed) as f64 / n as f64)
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest bucket holding at least
    /// `ceil(q * count)` samples, reported at its middle and never above the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(value(i).min(self.max.load(Ordering::Relaxed)));
            }
        }
        self.max()
    }
}

/// Quantile of a sorted slice (nearest rank), for small sample sets such as join times.
pub fn sorted_quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(i >= last, "{v}");
            last = i;
            let mid = value(i);
            let err = mid.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / HALF as f64, "{v} -> {mid}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), Some(10_000));
        for (q, want) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), Some(10_000));
        assert!(Histogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn sorted_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(sorted_quantile(&v, 0.5), Some(50));
        assert_eq!(sorted_quantile(&v, 0.99), Some(99));
        assert_eq!(sorted_quantile(&v, 1.0), Some(100));
        assert_eq!(sorted_quantile(&[], 0.5), None);
    }
}

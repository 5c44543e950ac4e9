//! Relay counters and gauges, rendered as Prometheus text at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters. Gauges go up and down; counters only up.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions: AtomicU64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub subscriptions: AtomicU64,
    pub subscriptions_total: AtomicU64,
    pub subscriptions_rejected: AtomicU64,
    pub broadcasts: AtomicU64,
    pub tracks: AtomicU64,
    pub bytes_in: AtomicU64,
    pub objects_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub objects_out: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub cache_budget_bytes: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub cache_budget_evictions: AtomicU64,
    pub cache_budget_evicted_bytes: AtomicU64,
    pub groups_dropped: AtomicU64,
    pub slow_skips: AtomicU64,
    pub direct_streams: AtomicU64,
    pub direct_resets: AtomicU64,
    pub direct_ingest_streams: AtomicU64,
    pub errors: AtomicU64,
    pub session_errors: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 24] = [
            (
                "moqcast_sessions",
                "gauge",
                "Open MoQ sessions",
                &self.sessions,
            ),
            (
                "moqcast_sessions_total",
                "counter",
                "MoQ sessions accepted",
                &self.sessions_total,
            ),
            (
                "moqcast_sessions_rejected_total",
                "counter",
                "Connections refused at the session limit",
                &self.sessions_rejected,
            ),
            (
                "moqcast_subscriptions",
                "gauge",
                "Active downstream subscriptions",
                &self.subscriptions,
            ),
            (
                "moqcast_subscriptions_total",
                "counter",
                "Downstream subscriptions accepted",
                &self.subscriptions_total,
            ),
            (
                "moqcast_subscriptions_rejected_total",
                "counter",
                "SUBSCRIBEs refused at the per-session subscription limit",
                &self.subscriptions_rejected,
            ),
            (
                "moqcast_broadcasts",
                "gauge",
                "Announced broadcasts (namespaces)",
                &self.broadcasts,
            ),
            (
                "moqcast_tracks",
                "gauge",
                "Tracks with an upstream subscription and a cache",
                &self.tracks,
            ),
            (
                "moqcast_bytes_in_total",
                "counter",
                "Object payload bytes received from publishers",
                &self.bytes_in,
            ),
            (
                "moqcast_objects_in_total",
                "counter",
                "Objects received from publishers",
                &self.objects_in,
            ),
            (
                "moqcast_bytes_out_total",
                "counter",
                "Object payload bytes handed to subscribers",
                &self.bytes_out,
            ),
            (
                "moqcast_objects_out_total",
                "counter",
                "Objects handed to subscribers",
                &self.objects_out,
            ),
            (
                "moqcast_cache_bytes",
                "gauge",
                "Payload bytes held in track caches",
                &self.cache_bytes,
            ),
            (
                "moqcast_cache_budget_bytes",
                "gauge",
                "Relay-wide budget of payload bytes in track caches",
                &self.cache_budget_bytes,
            ),
            (
                "moqcast_cache_evictions_total",
                "counter",
                "Cached subgroups evicted by their track's own limits (bytes, groups, age)",
                &self.cache_evictions,
            ),
            (
                "moqcast_cache_budget_evictions_total",
                "counter",
                "Cached subgroups evicted to keep all caches within the relay-wide budget",
                &self.cache_budget_evictions,
            ),
            (
                "moqcast_cache_budget_evicted_bytes_total",
                "counter",
                "Payload bytes evicted to keep all caches within the relay-wide budget",
                &self.cache_budget_evicted_bytes,
            ),
            (
                "moqcast_groups_dropped_total",
                "counter",
                "Groups dropped for subscribers that fell behind",
                &self.groups_dropped,
            ),
            (
                "moqcast_slow_subscriber_skips_total",
                "counter",
                "Times a slow subscriber was moved to the newest group",
                &self.slow_skips,
            ),
            (
                "moqcast_direct_streams_total",
                "counter",
                "Subgroup streams the relay opened and wrote itself (--forwarder direct)",
                &self.direct_streams,
            ),
            (
                "moqcast_direct_ingest_streams_total",
                "counter",
                "Publishers' subgroup streams the relay read itself (--forwarder direct)",
                &self.direct_ingest_streams,
            ),
            (
                "moqcast_direct_stream_resets_total",
                "counter",
                "Of those, streams reset before their end (subscriber behind, track ended mid-group, cancelled)",
                &self.direct_resets,
            ),
            (
                "moqcast_errors_total",
                "counter",
                "Malformed or refused upstream data",
                &self.errors,
            ),
            (
                "moqcast_session_errors_total",
                "counter",
                "Sessions that ended with an error",
                &self.session_errors,
            ),
        ];
        let mut out = String::with_capacity(4096);
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Per-shard gauges (`--runtime sharded`), in the same format.
pub fn render_shards(p: &crate::shard::Placement) -> String {
    let mut out = String::with_capacity(512);
    let mut family = |name: &str, help: &str, value: &dyn Fn(usize) -> String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for i in 0..p.shards() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", value(i));
        }
    };
    family(
        "moqcast_shard_busy_ratio",
        "Share of its thread's time the shard was busy, recently",
        &|i| format!("{:.3}", f64::from(p.busy(i)) / 1000.0),
    );
    family(
        "moqcast_shard_awake_ratio",
        "Share of the time the shard's thread was awake (not waiting for events), recently",
        &|i| format!("{:.3}", f64::from(p.awake(i)) / 1000.0),
    );
    family(
        "moqcast_shard_connections",
        "Connections on the shard (handshakes included)",
        &|i| p.sessions(i).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP moqcast_shard_placement_target The shard new connections go to\n# TYPE moqcast_shard_placement_target gauge\nmoqcast_shard_placement_target {}",
        p.target()
    );
    let _ = writeln!(
        out,
        "# HELP moqcast_coalescing 1 while a shard is saturated and every shard coalesces what subscribers are sent\n# TYPE moqcast_coalescing gauge\nmoqcast_coalescing {}",
        u8::from(p.coalescing())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.sessions.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("# TYPE moqcast_sessions gauge\nmoqcast_sessions 2\n"));
        assert!(text.contains("moqcast_bytes_out_total 0"));
        for name in [
            "moqcast_subscriptions_rejected_total",
            "moqcast_cache_budget_bytes",
            "moqcast_cache_evictions_total",
            "moqcast_cache_budget_evictions_total",
            "moqcast_cache_budget_evicted_bytes_total",
            "moqcast_direct_streams_total",
            "moqcast_direct_stream_resets_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}

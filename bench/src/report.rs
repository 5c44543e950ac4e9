//! Turns an [`Outcome`] into the report: a table for people, one JSON object for scripts.

use serde_json::{json, Map, Value};

use crate::{
    hist::sorted_quantile,
    run::{Options, Outcome, SubscriberResult},
    stats::{compare, TrackStats},
};

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

fn tracks_of<'a>(subs: impl Iterator<Item = &'a SubscriberResult>) -> Vec<&'a TrackStats> {
    subs.flat_map(|s| &s.tracks).collect()
}

/// The report as one JSON object (keys in a stable order). The main figures are those of the
/// subscribers on normal links; slow-link subscribers (`--slow-subscribers`) are under `slow_*`.
pub fn build(opts: &Options, out: &Outcome) -> Value {
    let normal: Vec<&SubscriberResult> = out.subscribers.iter().filter(|s| !s.slow).collect();
    let tracks = tracks_of(normal.iter().copied());
    let delivery = compare(&out.ledgers, tracks.iter().copied(), &out.window);
    let seconds = out.window.seconds();

    let mut joins: Vec<u64> = tracks.iter().filter_map(|t| t.join_us()).collect();
    joins.sort_unstable();
    let mut connects: Vec<u64> = normal.iter().filter_map(|s| s.connect_us).collect();
    connects.sort_unstable();
    let connected = connects.len();
    let joins_missing = normal
        .iter()
        .filter(|s| s.connect_us.is_some())
        .flat_map(|s| &s.tracks)
        .filter(|t| t.first_object_us.is_none())
        .count();
    let errors: Vec<&str> = normal
        .iter()
        .flat_map(|s| {
            s.error
                .iter()
                .chain(s.tracks.iter().filter_map(|t| t.error.as_ref()))
        })
        .map(String::as_str)
        .collect();
    let window_bytes: u64 = tracks.iter().map(|t| t.window_bytes).sum();
    let window_objects: u64 = tracks.iter().map(|t| t.window_objects).sum();
    let gbit = window_bytes as f64 * 8.0 / 1e9;
    let per_gbit = |cpu: Option<f64>| cpu.filter(|_| gbit > 0.0).map(|c| round(c / gbit, 3));
    let pct = |cpu: Option<f64>| {
        cpu.filter(|_| seconds > 0.0)
            .map(|c| round(c / seconds * 100.0, 1))
    };

    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("url", json!(opts.url.as_str()));
    put("subscribers", json!(opts.subscribers));
    put("broadcasts", json!(opts.broadcasts));
    put("tracks", json!(opts.tracks));
    put("bitrate", json!(opts.bitrate));
    put("fps", json!(opts.fps));
    put("group_frames", json!(opts.group_frames));
    put("object_bytes", json!(opts.object_size()));
    put("duration_s", json!(round(seconds, 3)));
    put("warmup_s", json!(opts.warmup.as_secs_f64()));
    put("join_spread_s", json!(opts.join_spread.as_secs_f64()));
    put(
        "endpoints",
        json!(opts.endpoints.clamp(1, opts.subscribers.max(1))),
    );
    put("subscribers_connected", json!(connected));
    put("subscriptions", json!(tracks.len()));
    put("published_objects", json!(out.published.objects));
    put(
        "published_objects_window",
        json!(out.published.window_objects),
    );
    // Below 1.0 the publisher itself fell behind real time (the machine is saturated).
    let nominal = seconds * opts.fps * (opts.broadcasts * opts.tracks) as f64;
    put(
        "publish_ratio",
        json!((nominal > 0.0).then(|| round(out.published.window_objects as f64 / nominal, 4))),
    );
    put("expected_objects", json!(delivery.expected_objects));
    put("delivered_objects", json!(delivery.delivered_objects));
    put("expected_bytes", json!(delivery.expected_bytes));
    put("delivered_bytes", json!(delivery.delivered_bytes));
    put(
        "delivery_ratio",
        json!((delivery.expected_bytes > 0).then(|| round(
            delivery.delivered_bytes as f64 / delivery.expected_bytes as f64,
            5
        ))),
    );
    put("expected_groups", json!(delivery.expected_groups));
    put("complete_groups", json!(delivery.complete_groups));
    put("group_loss", json!(round(delivery.group_loss(), 5)));
    put("received_objects_window", json!(window_objects));
    put("received_bytes_window", json!(window_bytes));
    put(
        "throughput_mbps",
        json!(round(
            window_bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6,
            2
        )),
    );
    put("latency_samples", json!(out.latency.count()));
    put("latency_p50_ms", json!(ms(out.latency.quantile(0.50))));
    put("latency_p90_ms", json!(ms(out.latency.quantile(0.90))));
    put("latency_p99_ms", json!(ms(out.latency.quantile(0.99))));
    put("latency_max_ms", json!(ms(out.latency.max())));
    put(
        "latency_mean_ms",
        json!(out.latency.mean().map(|v| round(v / 1000.0, 3))),
    );
    put("joins", json!(joins.len()));
    put("joins_missing", json!(joins_missing));
    put("join_p50_ms", json!(ms(sorted_quantile(&joins, 0.50))));
    put("join_p99_ms", json!(ms(sorted_quantile(&joins, 0.99))));
    put("join_max_ms", json!(ms(joins.last().copied())));
    put(
        "connect_p50_ms",
        json!(ms(sorted_quantile(&connects, 0.50))),
    );
    put(
        "connect_p99_ms",
        json!(ms(sorted_quantile(&connects, 0.99))),
    );
    put("errors", json!(errors.len() + out.lost_tasks));
    put("first_error", json!(errors.first()));
    put("publisher_error", json!(out.published.error));
    if let Some(relay) = &out.relay {
        put(
            "relay_cpu_seconds",
            json!(relay.cpu_seconds.map(|c| round(c, 3))),
        );
        put("relay_cpu_percent", json!(pct(relay.cpu_seconds)));
        put("relay_cpu_per_gbit", json!(per_gbit(relay.cpu_seconds)));
        put(
            "relay_peak_rss_mb",
            json!(relay.peak_rss_mb.map(|v| round(v, 1))),
        );
        put(
            "relay_rss_max_mb",
            json!(relay.rss_max_mb.map(|v| round(v, 1))),
        );
    }
    // The origin feeding the relay under test: its CPU per Gbit/s the subscribers got.
    if let Some(origin) = &out.origin {
        put(
            "origin_cpu_seconds",
            json!(origin.cpu_seconds.map(|c| round(c, 3))),
        );
        put("origin_cpu_per_gbit", json!(per_gbit(origin.cpu_seconds)));
        put(
            "origin_peak_rss_mb",
            json!(origin.peak_rss_mb.map(|v| round(v, 1))),
        );
    }
    put(
        "bench_cpu_seconds",
        json!(out.bench.cpu_seconds.map(|c| round(c, 3))),
    );
    put("bench_cpu_percent", json!(pct(out.bench.cpu_seconds)));
    put("bench_cpu_per_gbit", json!(per_gbit(out.bench.cpu_seconds)));
    put(
        "bench_peak_rss_mb",
        json!(out.bench.peak_rss_mb.map(|v| round(v, 1))),
    );
    if opts.slow_subscribers > 0 {
        let slow: Vec<&SubscriberResult> = out.subscribers.iter().filter(|s| s.slow).collect();
        let slow_tracks = tracks_of(slow.iter().copied());
        let d = compare(&out.ledgers, slow_tracks.iter().copied(), &out.window);
        let bytes: u64 = slow_tracks.iter().map(|t| t.window_bytes).sum();
        let slow_errors = slow
            .iter()
            .flat_map(|s| {
                s.error
                    .iter()
                    .chain(s.tracks.iter().filter_map(|t| t.error.as_ref()))
            })
            .count();
        put("slow_subscribers", json!(slow.len()));
        put("slow_rate_kbps", json!(opts.slow_rate / 1000));
        put("slow_queue_bytes", json!(opts.slow_queue_bytes));
        put(
            "slow_delivery_ratio",
            json!((d.expected_bytes > 0)
                .then(|| round(d.delivered_bytes as f64 / d.expected_bytes as f64, 5))),
        );
        put("slow_group_loss", json!(round(d.group_loss(), 5)));
        put(
            "slow_throughput_kbps",
            json!(round(bytes as f64 * 8.0 / seconds.max(1e-9) / 1e3, 1)),
        );
        put("slow_latency_samples", json!(out.slow_latency.count()));
        put(
            "slow_latency_p50_ms",
            json!(ms(out.slow_latency.quantile(0.50))),
        );
        put(
            "slow_latency_p99_ms",
            json!(ms(out.slow_latency.quantile(0.99))),
        );
        put("slow_link_drops", json!(out.slow_link_drops));
        put("slow_errors", json!(slow_errors));
    }
    if let Some(idle) = &out.idle {
        put("idle_sessions", json!(idle.requested));
        put("idle_sessions_connected", json!(idle.connected));
        put("idle_first_error", json!(idle.first_error));
        put(
            "relay_rss_before_idle_mb",
            json!(idle.relay_rss_before_mb.map(|v| round(v, 2))),
        );
        put(
            "relay_rss_after_idle_mb",
            json!(idle.relay_rss_after_mb.map(|v| round(v, 2))),
        );
        let per = idle
            .relay_rss_before_mb
            .zip(idle.relay_rss_after_mb)
            .filter(|_| idle.connected > 0)
            .map(|(a, b)| round((b - a) * 1024.0 / idle.connected as f64, 1));
        put("relay_rss_per_idle_session_kb", json!(per));
    }
    if let Some(rm) = &out.relay_metrics {
        put(
            "relay_cache_bytes_max_mb",
            json!(rm.cache_bytes_max.map(|b| round(b / 1048576.0, 2))),
        );
        put(
            "relay_cache_budget_mb",
            json!(rm
                .end
                .get("moqcast_cache_budget_bytes")
                .map(|b| round(b / 1048576.0, 2))),
        );
        // Counters' change over the window.
        let delta: Map<String, Value> = rm
            .end
            .iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .map(|(k, v)| {
                let d = v - rm.start.get(k).copied().unwrap_or(0.0);
                (k.clone(), json!(d))
            })
            .collect();
        put("relay_metrics_delta", Value::Object(delta));
    }
    put("udp_rcvbuf_drops", json!(out.udp_drops.map(|d| d.rcvbuf)));
    put("udp_sndbuf_drops", json!(out.udp_drops.map(|d| d.sndbuf)));
    put("loadavg_start", json!(out.loadavg_start));
    put("loadavg_end", json!(out.loadavg_end));
    put(
        "host_steal_percent",
        json!(out.host_steal.percent.map(|v| round(v, 1))),
    );
    put(
        "host_steal_worst_second_percent",
        json!(out.host_steal.worst_second_percent.map(|v| round(v, 1))),
    );
    put(
        "nproc",
        json!(std::thread::available_parallelism().map(|n| n.get()).ok()),
    );
    Value::Object(m)
}

/// Every received object as CSV, one row each: which subscriber (its place in the run's
/// results) and track, the group, SEND_TIME and arrival (wall-clock µs), the latency, and
/// whether it counts in the latency figures (sent inside the window, of a group the
/// subscription expected).
pub fn write_trace(out: &Outcome, mut w: impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        w,
        "subscriber,slow,track,group,send_unix_us,recv_unix_us,latency_us,counted"
    )?;
    for (i, sub) in out.subscribers.iter().enumerate() {
        for t in &sub.tracks {
            for r in &t.trace {
                let (send, lat) = match r.send_us {
                    Some(s) => (s.to_string(), r.recv_us.saturating_sub(s).to_string()),
                    None => (String::new(), String::new()),
                };
                let counted = t.is_latency_sample(r.group, r.send_us, &out.window);
                writeln!(
                    w,
                    "{i},{},{},{},{send},{},{lat},{}",
                    u8::from(sub.slow),
                    t.track,
                    r.group,
                    r.recv_us,
                    u8::from(counted)
                )?;
            }
        }
    }
    w.flush()
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A two-column table of the report's main figures.
pub fn table(r: &Value) -> String {
    let g = |k: &str| show(&r[k]);
    let mut rows: Vec<(String, String)> = vec![
        ("relay".into(), g("url")),
        (
            "load".into(),
            format!(
                "1 publisher -> {} subscribers ({} connected), {} broadcast(s) x {} track(s)",
                g("subscribers"),
                g("subscribers_connected"),
                g("broadcasts"),
                g("tracks")
            ),
        ),
        (
            "media".into(),
            format!(
                "{} bit/s per track, {} fps, {}-frame groups, {}-byte objects",
                g("bitrate"),
                g("fps"),
                g("group_frames"),
                g("object_bytes")
            ),
        ),
        (
            "window".into(),
            format!("{} s after {} s warmup", g("duration_s"), g("warmup_s")),
        ),
        (
            "published".into(),
            format!(
                "{} objects in the window ({} of real time)",
                g("published_objects_window"),
                g("publish_ratio")
            ),
        ),
        (
            "delivered objects".into(),
            format!(
                "{} / {} expected",
                g("delivered_objects"),
                g("expected_objects")
            ),
        ),
        (
            "delivered bytes".into(),
            format!(
                "{} / {} ({})",
                g("delivered_bytes"),
                g("expected_bytes"),
                g("delivery_ratio")
            ),
        ),
        (
            "group loss".into(),
            format!(
                "{} ({} of {} groups complete)",
                g("group_loss"),
                g("complete_groups"),
                g("expected_groups")
            ),
        ),
        (
            "throughput".into(),
            format!("{} Mbit/s received", g("throughput_mbps")),
        ),
        (
            "latency ms".into(),
            format!(
                "p50 {}  p90 {}  p99 {}  max {}",
                g("latency_p50_ms"),
                g("latency_p90_ms"),
                g("latency_p99_ms"),
                g("latency_max_ms")
            ),
        ),
        (
            "join ms".into(),
            format!(
                "p50 {}  p99 {}  max {}  ({} never joined)",
                g("join_p50_ms"),
                g("join_p99_ms"),
                g("join_max_ms"),
                g("joins_missing")
            ),
        ),
        (
            "connect ms".into(),
            format!("p50 {}  p99 {}", g("connect_p50_ms"), g("connect_p99_ms")),
        ),
        (
            "relay".into(),
            format!(
                "cpu {} s ({} %), {} cpu-s/Gbit, peak rss {} MiB",
                g("relay_cpu_seconds"),
                g("relay_cpu_percent"),
                g("relay_cpu_per_gbit"),
                g("relay_peak_rss_mb")
            ),
        ),
        (
            "bench".into(),
            format!(
                "cpu {} s ({} %), {} cpu-s/Gbit, peak rss {} MiB",
                g("bench_cpu_seconds"),
                g("bench_cpu_percent"),
                g("bench_cpu_per_gbit"),
                g("bench_peak_rss_mb")
            ),
        ),
        (
            "udp drops".into(),
            format!(
                "{} receive-buffer, {} send-buffer (machine-wide, in the window)",
                g("udp_rcvbuf_drops"),
                g("udp_sndbuf_drops")
            ),
        ),
        (
            "load average".into(),
            format!("{} -> {}", g("loadavg_start"), g("loadavg_end")),
        ),
        (
            "host steal %".into(),
            format!(
                "{} over the window, {} in its worst second (CPU the hypervisor gave to other guests)",
                g("host_steal_percent"),
                g("host_steal_worst_second_percent")
            ),
        ),
        (
            "errors".into(),
            format!("{} (first: {})", g("errors"), g("first_error")),
        ),
    ];
    if !r["slow_subscribers"].is_null() {
        rows.push((
            "slow links".into(),
            format!(
                "{} subscriber(s) at {} kbit/s: received {} kbit/s, delivered {}, group loss {}, latency p50 {} p99 {} ms, {} datagrams dropped, {} errors",
                g("slow_subscribers"),
                g("slow_rate_kbps"),
                g("slow_throughput_kbps"),
                g("slow_delivery_ratio"),
                g("slow_group_loss"),
                g("slow_latency_p50_ms"),
                g("slow_latency_p99_ms"),
                g("slow_link_drops"),
                g("slow_errors")
            ),
        ));
    }
    if !r["idle_sessions"].is_null() {
        rows.push((
            "idle sessions".into(),
            format!(
                "{} of {} connected; relay rss {} -> {} MiB: {} KiB per idle session",
                g("idle_sessions_connected"),
                g("idle_sessions"),
                g("relay_rss_before_idle_mb"),
                g("relay_rss_after_idle_mb"),
                g("relay_rss_per_idle_session_kb")
            ),
        ));
    }
    if !r["relay_metrics_delta"].is_null() {
        rows.push((
            "relay metrics".into(),
            format!(
                "cache max {} MiB (budget {} MiB); in the window: {}",
                g("relay_cache_bytes_max_mb"),
                g("relay_cache_budget_mb"),
                r["relay_metrics_delta"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(_, v)| v.as_f64().is_some_and(|v| v != 0.0))
                            .map(|(k, v)| format!("{} +{}", k.trim_start_matches("moqcast_"), v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        s.push_str(&format!("{k:<width$}  {v}\n"));
    }
    s
}

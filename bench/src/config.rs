//! The configuration of `moqcast-bench`: one struct read from the command line (clap, defaults
//! shown by `--help`) and (de)serializable with serde (`deny_unknown_fields`; every field
//! written, so a run's settings can be stored beside its report and read back).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use moqcast_client::ClientTls;
use serde::{Deserialize, Serialize};

use crate::run;

/// Load generator for MoQ (draft-18) relays.
#[derive(Debug, Clone, PartialEq, Parser, Serialize, Deserialize)]
#[command(name = "moqcast-bench", version)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Relay URL: `moqt://host:port` (raw QUIC) or `https://host:port/` (WebTransport).
    #[arg(long, env = "MOQCAST_BENCH_URL")]
    #[serde(with = "moqcast_client::cli::url_text")]
    pub url: url::Url,
    /// Subscriber sessions (each subscribes to every track of one broadcast, round-robin).
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Bits per second of each track.
    #[arg(long, default_value_t = 2_000_000)]
    pub bitrate: u64,
    /// Objects (frames) per second of each track.
    #[arg(long, default_value_t = 60.0)]
    pub fps: f64,
    /// Objects per group.
    #[arg(long, default_value_t = 60)]
    pub group_frames: u64,
    /// Tracks per broadcast.
    #[arg(long, default_value_t = 1)]
    pub tracks: usize,
    /// Broadcasts (namespaces), all from the one publisher session.
    #[arg(long, default_value_t = 1)]
    pub broadcasts: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds after the first subscriber starts that are left out of the statistics.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Subscribers start evenly spread over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    pub join_spread: f64,
    /// Most seconds to wait after publishing stops for in-flight objects.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// QUIC client endpoints (UDP sockets) the subscriber sessions share; 0 gives each
    /// subscriber its own, as real viewers have (up to 1024). A shared endpoint funnels its
    /// packets through one quinn endpoint task and one socket buffer: at 300 subscribers, 12
    /// shared sockets gave 1.1-5x the p99 latency of one each (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 0)]
    pub endpoints: usize,
    /// Subscriber handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Accept any relay certificate (development relays with self-signed certificates).
    #[arg(long)]
    pub tls_disable_verify: bool,
    /// Pin the relay certificate by SHA-256 (hex) instead.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Measure this relay process: CPU over the window (/proc/PID/stat), peak memory.
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// Publish to this relay instead of --url (an origin of a cluster, with the subscribers
    /// on an edge at --url).
    #[arg(long)]
    #[serde(default, with = "moqcast_client::cli::url_text::option")]
    pub publish_url: Option<url::Url>,
    /// Measure this second relay process too (the origin feeding the edge), as --relay-pid.
    #[arg(long)]
    pub origin_pid: Option<u32>,
    /// The relay's Prometheus metrics (e.g. http://127.0.0.1:8080/metrics): report its cache
    /// size (largest sampled) and its counters' change over the window.
    #[arg(long)]
    #[serde(default, with = "moqcast_client::cli::url_text::option")]
    pub relay_metrics: Option<url::Url>,
    /// Also connect this many sessions that do nothing (no subscription) before the
    /// subscribers start; with --relay-pid, report the relay's memory per idle session.
    #[arg(long, default_value_t = 0)]
    pub idle_sessions: usize,
    /// The first K subscribers reach the relay through a slow link (a UDP shaper in this
    /// process: relay-to-subscriber traffic paced at --slow-rate-kbps, excess dropped). Their
    /// figures are reported apart (slow_*); the main figures are the other subscribers'.
    #[arg(long, default_value_t = 0)]
    pub slow_subscribers: usize,
    /// Rate of each slow link, kbit/s.
    #[arg(long, default_value_t = 200)]
    pub slow_rate_kbps: u64,
    /// Queue of each slow link, in milliseconds at its rate (at least 16 KiB).
    #[arg(long, default_value_t = 250)]
    pub slow_queue_ms: u64,
    /// Broadcast name prefix (broadcasts are PREFIX-0, PREFIX-1, ...); default bench-PID.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Also print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Write every received object (send and arrival times, latency) to this CSV file, to see
    /// when latency rose rather than only its percentiles. Rows are kept in memory until the
    /// end: 32 bytes per object (1000 subscribers at 60 fps for 20 s: 38 MB).
    #[arg(long)]
    pub latency_trace: Option<std::path::PathBuf>,
}

impl BenchConfig {
    /// What to run.
    pub fn options(&self) -> anyhow::Result<run::Options> {
        let mut tls = ClientTls {
            disable_verify: self.tls_disable_verify,
            ..Default::default()
        };
        if let Some(fp) = &self.fingerprint {
            tls.pin_hex(fp)?;
        }
        anyhow::ensure!(self.fps > 0.0, "--fps must be positive");
        anyhow::ensure!(self.slow_rate_kbps > 0, "--slow-rate-kbps must be positive");
        let slow_rate = self.slow_rate_kbps * 1000;
        let slow_queue_bytes =
            ((slow_rate / 8) * self.slow_queue_ms / 1000).max(16 * 1024) as usize;
        let endpoints = match self.endpoints {
            0 => self.subscribers.clamp(1, 1024),
            n => n,
        };
        Ok(run::Options {
            url: self.url.clone(),
            tls,
            subscribers: self.subscribers,
            bitrate: self.bitrate,
            fps: self.fps,
            group_frames: self.group_frames,
            tracks: self.tracks,
            broadcasts: self.broadcasts,
            duration: seconds(self.duration, "duration")?,
            warmup: seconds(self.warmup, "warmup")?,
            join_spread: seconds(self.join_spread, "join-spread")?,
            drain: seconds(self.drain, "drain")?,
            endpoints,
            connect_concurrency: self.connect_concurrency,
            relay_pid: self.relay_pid,
            publish_url: self.publish_url.clone(),
            origin_pid: self.origin_pid,
            relay_metrics: self.relay_metrics.clone(),
            idle_sessions: self.idle_sessions,
            slow_subscribers: self.slow_subscribers,
            slow_rate,
            slow_queue_bytes,
            trace: self.latency_trace.is_some(),
            prefix: self
                .prefix
                .clone()
                .unwrap_or_else(|| format!("bench-{}", std::process::id())),
        })
    }
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{flag} {v}: expected seconds >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_show_in_help_and_the_config_round_trips() {
        let cfg = BenchConfig::try_parse_from(["moqcast-bench", "--url", "moqt://127.0.0.1:4443"])
            .unwrap();
        let help = BenchConfig::command().render_long_help().to_string();
        assert!(help.contains("[default: 2000000]"), "{help}");
        let back: BenchConfig =
            serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let mut json = serde_json::to_value(&cfg).unwrap();
        json["subscriber"] = 3.into();
        assert!(serde_json::from_value::<BenchConfig>(json).is_err());

        let opts = cfg.options().unwrap();
        assert_eq!(opts.endpoints, 1, "one endpoint per subscriber by default");
        assert_eq!(opts.slow_queue_bytes, 16 * 1024);
        assert_eq!(opts.duration, Duration::from_secs(10));
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_named() {
        let mut cfg =
            BenchConfig::try_parse_from(["moqcast-bench", "--url", "moqt://127.0.0.1:4443"])
                .unwrap();
        cfg.warmup = -1.0;
        let err = cfg.options().unwrap_err();
        assert!(err.to_string().contains("--warmup"), "{err}");
        cfg.warmup = 1.0;
        cfg.fps = 0.0;
        assert!(cfg.options().unwrap_err().to_string().contains("--fps"));
    }
}

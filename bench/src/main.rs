//! `moqcast-bench`: one publisher and N subscribers in one process, speaking MoQ draft-18 to
//! any relay, reporting delivery, one-way latency, join time and the relay's CPU and memory.
//!
//! ```text
//! moqcast-bench --url moqt://127.0.0.1:4443 --tls-disable-verify --subscribers 100 \
//!     --duration 10 --warmup 2 --relay-pid $(pidof moqcast-relay) --json
//! ```
//!
//! See docs/BENCHMARKS.md for the method and results.

mod hist;
mod procfs;
mod report;
mod run;
mod scrape;
mod shaper;
mod stats;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use moqcast_client::ClientTls;

/// Load generator for MoQ (draft-18) relays.
#[derive(Debug, Parser)]
#[command(name = "moqcast-bench", version)]
struct Args {
    /// Relay URL: `moqt://host:port` (raw QUIC) or `https://host:port/` (WebTransport).
    #[arg(long, env = "MOQCAST_BENCH_URL")]
    url: url::Url,
    /// Subscriber sessions (each subscribes to every track of one broadcast, round-robin).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Bits per second of each track.
    #[arg(long, default_value_t = 2_000_000)]
    bitrate: u64,
    /// Objects (frames) per second of each track.
    #[arg(long, default_value_t = 60.0)]
    fps: f64,
    /// Objects per group.
    #[arg(long, default_value_t = 60)]
    group_frames: u64,
    /// Tracks per broadcast.
    #[arg(long, default_value_t = 1)]
    tracks: usize,
    /// Broadcasts (namespaces), all from the one publisher session.
    #[arg(long, default_value_t = 1)]
    broadcasts: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds after the first subscriber starts that are left out of the statistics.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Subscribers start evenly spread over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    join_spread: f64,
    /// Most seconds to wait after publishing stops for in-flight objects.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// QUIC client endpoints (UDP sockets) the subscriber sessions share; 0 gives each
    /// subscriber its own, as real viewers have (up to 1024). A shared endpoint funnels its
    /// packets through one quinn endpoint task and one socket buffer: at 300 subscribers, 12
    /// shared sockets gave 1.1-5x the p99 latency of one each (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 0)]
    endpoints: usize,
    /// Subscriber handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Accept any relay certificate (development relays with self-signed certificates).
    #[arg(long)]
    tls_disable_verify: bool,
    /// Pin the relay certificate by SHA-256 (hex) instead.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Measure this relay process: CPU over the window (/proc/PID/stat), peak memory.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// The relay's Prometheus metrics (e.g. http://127.0.0.1:8080/metrics): report its cache
    /// size (largest sampled) and its counters' change over the window.
    #[arg(long)]
    relay_metrics: Option<url::Url>,
    /// Also connect this many sessions that do nothing (no subscription) before the
    /// subscribers start; with --relay-pid, report the relay's memory per idle session.
    #[arg(long, default_value_t = 0)]
    idle_sessions: usize,
    /// The first K subscribers reach the relay through a slow link (a UDP shaper in this
    /// process: relay-to-subscriber traffic paced at --slow-rate-kbps, excess dropped). Their
    /// figures are reported apart (slow_*); the main figures are the other subscribers'.
    #[arg(long, default_value_t = 0)]
    slow_subscribers: usize,
    /// Rate of each slow link, kbit/s.
    #[arg(long, default_value_t = 200)]
    slow_rate_kbps: u64,
    /// Queue of each slow link, in milliseconds at its rate (at least 16 KiB).
    #[arg(long, default_value_t = 250)]
    slow_queue_ms: u64,
    /// Broadcast name prefix (broadcasts are PREFIX-0, PREFIX-1, ...); default bench-PID.
    #[arg(long)]
    prefix: Option<String>,
    /// Also print the report as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Write every received object (send and arrival times, latency) to this CSV file, to see
    /// when latency rose rather than only its percentiles. Rows are kept in memory until the
    /// end: 32 bytes per object (1000 subscribers at 60 fps for 20 s: 38 MB).
    #[arg(long)]
    latency_trace: Option<std::path::PathBuf>,
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{flag} {v}: expected seconds >= 0"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // moq-transport logs every stream cut at teardown as an error: thousands of
                // lines per run. The report counts failures; RUST_LOG=debug shows them.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,moq_transport=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut tls = ClientTls {
        disable_verify: args.tls_disable_verify,
        ..Default::default()
    };
    if let Some(fp) = &args.fingerprint {
        tls.pin_hex(fp)?;
    }
    anyhow::ensure!(args.fps > 0.0, "--fps must be positive");
    anyhow::ensure!(args.slow_rate_kbps > 0, "--slow-rate-kbps must be positive");
    let slow_rate = args.slow_rate_kbps * 1000;
    let slow_queue_bytes = ((slow_rate / 8) * args.slow_queue_ms / 1000).max(16 * 1024) as usize;
    let endpoints = match args.endpoints {
        0 => args.subscribers.clamp(1, 1024),
        n => n,
    };
    let opts = run::Options {
        url: args.url,
        tls,
        subscribers: args.subscribers,
        bitrate: args.bitrate,
        fps: args.fps,
        group_frames: args.group_frames,
        tracks: args.tracks,
        broadcasts: args.broadcasts,
        duration: seconds(args.duration, "duration")?,
        warmup: seconds(args.warmup, "warmup")?,
        join_spread: seconds(args.join_spread, "join-spread")?,
        drain: seconds(args.drain, "drain")?,
        endpoints,
        connect_concurrency: args.connect_concurrency,
        relay_pid: args.relay_pid,
        relay_metrics: args.relay_metrics,
        idle_sessions: args.idle_sessions,
        slow_subscribers: args.slow_subscribers,
        slow_rate,
        slow_queue_bytes,
        trace: args.latency_trace.is_some(),
        prefix: args
            .prefix
            .unwrap_or_else(|| format!("bench-{}", std::process::id())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcome = runtime.block_on(run::run(opts.clone()))?;
    if let Some(path) = &args.latency_trace {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--latency-trace {}", path.display()))?;
        report::write_trace(&outcome, std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = report::build(&opts, &outcome);
    print!("{}", report::table(&report));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

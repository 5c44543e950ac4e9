//! `moqcast-hostile`: the relay's hostile-peer suite. For each attack it measures a bystander
//! (`moqcast-bench`: one publisher, a few subscribers) twice in a row, once quiet and once while
//! the attack runs, and checks that the relay admits the bystander's new subscribers, loses
//! none of its groups, answers `/healthz`, stays within its memory budget, and that the
//! bystander's p50 and p99 latency stay within the tolerance of the quiet run next to it.
//!
//! ```text
//! moqcast-hostile --url moqt://127.0.0.1:4443 --http 127.0.0.1:8080 \
//!     --relay-pid $(pidof moqcast-relay) --rounds 3 --duration 5
//! ```
//!
//! Exit status 1 when any check fails. See docs/security.md ("The hostile-peer suite").

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Parser;
use moqcast_bench::hostile::{self, Attack, Counts, Tally, Target};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Hostile peers against a relay, with a bystander measuring"
)]
struct Args {
    /// The relay's raw-QUIC URL (`moqt://host:port`).
    #[arg(long)]
    url: url::Url,
    /// The relay's plain HTTP address (`host:port`).
    #[arg(long)]
    http: SocketAddr,
    /// The relay's process: its memory is checked against --max-rss-mb.
    #[arg(long)]
    relay_pid: u32,
    /// Attacks to run (comma-separated); all by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    attacks: Vec<Attack>,
    /// Measured seconds of each bystander run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Quiet/attacked pairs per attack; the medians over the rounds are compared.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The bystander's subscribers.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// The bystander's bitrate (bits per second of its one track).
    #[arg(long, default_value_t = 1_000_000)]
    bitrate: u64,
    /// The bystander's frames per second (a group each second).
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Scales every attack (connections, rates).
    #[arg(long, default_value_t = 1.0)]
    intensity: f64,
    /// The relay's memory budget: its resident set must stay below this.
    #[arg(long, default_value_t = 512.0)]
    max_rss_mb: f64,
    /// Allowed rise of the bystander's p50 and p99 over the quiet run, as a fraction.
    #[arg(long, default_value_t = 0.10)]
    tolerance: f64,
    /// Allowed rise of p50 in milliseconds on top of --tolerance (for noisy shared machines,
    /// such as a test run beside other tests; 0 is the strict check).
    #[arg(long, default_value_t = 0.0)]
    slack_p50_ms: f64,
    /// The same for p99.
    #[arg(long, default_value_t = 0.0)]
    slack_p99_ms: f64,
    /// A large file on the relay's HTTP side, for the slow readers.
    #[arg(long, default_value = "/assets/viewer.js.map")]
    slow_path: String,
    /// Send the `garbage-datagrams` attack here instead of the relay's QUIC port: a control
    /// run, where the machine pays for the same sends (and a reader of this socket for the
    /// receives) but the relay sees none of them. On a machine whose cores the attacker shares
    /// with the relay and the bystander, it tells the relay's share of a rise from the rest.
    #[arg(long)]
    datagrams_to: Option<SocketAddr>,
    /// The moqcast-bench binary (default: next to this one).
    #[arg(long)]
    bench: Option<PathBuf>,
    /// Also print each result as a JSON line.
    #[arg(long)]
    json: bool,
}

/// One bystander run, as moqcast-bench reported it.
#[derive(Debug, Clone, Serialize)]
struct Bystander {
    p50_ms: f64,
    p99_ms: f64,
    connected: u64,
    errors: u64,
    group_loss: f64,
    rss_max_mb: f64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    attack: Attack,
    size: String,
    quiet: Vec<Bystander>,
    attacked: Vec<Bystander>,
    quiet_p50_ms: f64,
    quiet_p99_ms: f64,
    attacked_p50_ms: f64,
    attacked_p99_ms: f64,
    healthz_failures: u64,
    counts: Counts,
    failures: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,moq_transport=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcomes = runtime.block_on(suite(&args))?;
    print!("{}", table(&outcomes, &args));
    if args.json {
        for o in &outcomes {
            println!("{}", serde_json::to_string(o)?);
        }
    }
    let failed: Vec<_> = outcomes
        .iter()
        .flat_map(|o| {
            o.failures
                .iter()
                .map(move |f| format!("{}: {f}", o.attack.name()))
        })
        .collect();
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("FAIL {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

async fn suite(args: &Args) -> anyhow::Result<Vec<Outcome>> {
    let quic = args
        .url
        .socket_addrs(|| Some(443))
        .context("--url")?
        .into_iter()
        .next()
        .context("--url resolves to nothing")?;
    let target = Target {
        quic,
        http: args.http,
        datagrams_to: args.datagrams_to.unwrap_or(quic),
        slow_path: args.slow_path.clone(),
    };
    let attacks = if args.attacks.is_empty() {
        Attack::ALL.to_vec()
    } else {
        args.attacks.clone()
    };
    let mut outcomes = Vec::new();
    for attack in attacks {
        let tally = Arc::new(Tally::default());
        let mut quiet = Vec::new();
        let mut attacked = Vec::new();
        let mut healthz_failures = 0;
        for round in 0..args.rounds {
            quiet.push(bystander(args, &format!("quiet-{}-{round}", attack.name())).await?);
            // The attack ramps up for 2 s, then the bystander connects (new viewers, admitted
            // or not) and measures while it goes on.
            let ramp = Duration::from_secs(2);
            let until = Instant::now() + ramp + Duration::from_secs_f64(args.duration + 2.5);
            let running = tokio::spawn(hostile::run(
                attack,
                target.clone(),
                args.intensity,
                until,
                tally.clone(),
            ));
            let health = tokio::spawn(probe_health(args.http, until));
            tokio::time::sleep(ramp).await;
            attacked.push(bystander(args, &format!("{}-{round}", attack.name())).await?);
            healthz_failures += health.await.unwrap_or(1);
            let _ = running.await;
            // Let the relay notice the attackers' departure before the next quiet run.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        outcomes.push(judge(
            args,
            attack,
            quiet,
            attacked,
            healthz_failures,
            tally.counts(),
        ));
        if let Some(o) = outcomes.last() {
            eprintln!(
                "{:<18} p50 {:.2} -> {:.2} ms, p99 {:.2} -> {:.2} ms{}",
                attack.name(),
                o.quiet_p50_ms,
                o.attacked_p50_ms,
                o.quiet_p99_ms,
                o.attacked_p99_ms,
                if o.failures.is_empty() {
                    String::new()
                } else {
                    format!("  FAIL: {}", o.failures.join("; "))
                }
            );
        }
    }
    Ok(outcomes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn judge(
    args: &Args,
    attack: Attack,
    quiet: Vec<Bystander>,
    attacked: Vec<Bystander>,
    healthz_failures: u64,
    counts: Counts,
) -> Outcome {
    let q50 = median(quiet.iter().map(|b| b.p50_ms).collect());
    let q99 = median(quiet.iter().map(|b| b.p99_ms).collect());
    let a50 = median(attacked.iter().map(|b| b.p50_ms).collect());
    let a99 = median(attacked.iter().map(|b| b.p99_ms).collect());
    let mut failures = Vec::new();
    let b50 = q50 * (1.0 + args.tolerance) + args.slack_p50_ms;
    let b99 = q99 * (1.0 + args.tolerance) + args.slack_p99_ms;
    // NaN (no samples) fails too.
    if a50.is_nan() || a50 > b50 {
        failures.push(format!("p50 {a50:.2} ms over {b50:.2} (quiet {q50:.2})"));
    }
    if a99.is_nan() || a99 > b99 {
        failures.push(format!("p99 {a99:.2} ms over {b99:.2} (quiet {q99:.2})"));
    }
    for b in &attacked {
        if b.connected < args.subscribers as u64 || b.errors > 0 {
            failures.push(format!(
                "{} of {} new subscribers admitted, {} errors",
                b.connected, args.subscribers, b.errors
            ));
        }
        if b.group_loss > 0.0 {
            failures.push(format!("group loss {}", b.group_loss));
        }
    }
    let rss = quiet
        .iter()
        .chain(&attacked)
        .map(|b| b.rss_max_mb)
        .fold(0.0, f64::max);
    if rss > args.max_rss_mb {
        failures.push(format!(
            "relay memory {rss:.0} MB over its budget of {:.0} MB",
            args.max_rss_mb
        ));
    }
    if healthz_failures > 0 {
        failures.push(format!("/healthz failed {healthz_failures} times"));
    }
    Outcome {
        attack,
        size: attack.size(args.intensity),
        quiet,
        attacked,
        quiet_p50_ms: q50,
        quiet_p99_ms: q99,
        attacked_p50_ms: a50,
        attacked_p99_ms: a99,
        healthz_failures,
        counts,
        failures,
    }
}

/// Runs moqcast-bench once and reads its JSON report.
async fn bystander(args: &Args, prefix: &str) -> anyhow::Result<Bystander> {
    let bench = match &args.bench {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("moqcast-bench"),
    };
    let group = args.fps.round().max(1.0).to_string();
    let mut cmd = Command::new(&bench);
    cmd.args(["--url", args.url.as_str(), "--tls-disable-verify"])
        .args(["--subscribers", &args.subscribers.to_string()])
        .args(["--bitrate", &args.bitrate.to_string()])
        .args(["--fps", &args.fps.to_string(), "--group-frames", &group])
        .args(["--duration", &args.duration.to_string()])
        .args(["--warmup", "1", "--drain", "2"])
        .args(["--relay-pid", &args.relay_pid.to_string()])
        .args(["--prefix", &format!("bystander-{prefix}"), "--json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running {}", bench.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().last() else {
        bail!(
            "moqcast-bench printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let r: Value =
        serde_json::from_str(line).with_context(|| format!("moqcast-bench's report: {line}"))?;
    let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    Ok(Bystander {
        p50_ms: num("latency_p50_ms"),
        p99_ms: num("latency_p99_ms"),
        connected: r["subscribers_connected"].as_u64().unwrap_or(0),
        errors: r["errors"].as_u64().unwrap_or(u64::MAX),
        group_loss: num("group_loss"),
        rss_max_mb: r["relay_rss_max_mb"]
            .as_f64()
            .or(r["relay_peak_rss_mb"].as_f64())
            .unwrap_or(0.0),
    })
}

/// GETs /healthz from 127.0.0.1 every 500 ms until `until`; returns the failures.
async fn probe_health(http: SocketAddr, until: Instant) -> u64 {
    let mut failures = 0;
    while Instant::now() < until {
        let ok = tokio::task::spawn_blocking(move || healthz(http))
            .await
            .unwrap_or(false);
        if !ok {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    failures
}

fn healthz(http: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

fn table(outcomes: &[Outcome], args: &Args) -> String {
    let mut t = format!(
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7}  {}\n",
        "attack",
        "quiet p50",
        "p50",
        "quiet p99",
        "p99",
        "RSS MB",
        "health",
        "verdict",
        "attack size; sent/closed by relay/answered/refused/unexpected"
    );
    for o in outcomes {
        let rss = o
            .quiet
            .iter()
            .chain(&o.attacked)
            .map(|b| b.rss_max_mb)
            .fold(0.0, f64::max);
        let c = o.counts;
        t.push_str(&format!(
            "{:<18} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>6} {:>7}  {}; {}/{}/{}/{}/{}\n",
            o.attack.name(),
            o.quiet_p50_ms,
            o.attacked_p50_ms,
            o.quiet_p99_ms,
            o.attacked_p99_ms,
            rss,
            if o.healthz_failures == 0 {
                "ok"
            } else {
                "FAIL"
            },
            if o.failures.is_empty() {
                "pass"
            } else {
                "FAIL"
            },
            o.size,
            c.attempts,
            c.closed_by_relay,
            c.answered,
            c.refused,
            c.unexpected,
        ));
    }
    t.push_str(&format!(
        "latency bound: quiet x {:.2} (+ {:.1} ms p50, + {:.1} ms p99); {} round(s) of {} s; memory budget {:.0} MB\n",
        1.0 + args.tolerance,
        args.slack_p50_ms,
        args.slack_p99_ms,
        args.rounds,
        args.duration,
        args.max_rss_mb
    ));
    t
}

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use moqcast_client::cli::{init_tracing, TlsArgs};
use moqcast_publisher::subscribe::{run, SubscribeOptions};

/// Subscribe to a broadcast on a MoQ relay: record it to MP4, print its catalog or statistics.
#[derive(Debug, Parser)]
#[command(name = "moqcast-subscribe", version)]
struct Cli {
    /// Relay URL: https://host:port/ (WebTransport) or moqt://host:port (raw QUIC).
    #[arg(long, env = "MOQCAST_URL")]
    url: url::Url,
    /// Broadcast name.
    #[arg(long, env = "MOQCAST_BROADCAST")]
    broadcast: String,
    /// Record audio and video into this MP4 file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Print the catalog JSON.
    #[arg(long)]
    catalog: bool,
    /// Print per-track objects, bytes and one-way latency at the end.
    #[arg(long)]
    stats: bool,
    /// Print the statistics as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Seconds to keep retrying while the broadcast is not announced yet.
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
    /// Write the final caption cues received to this WebVTT file (the live captioner's
    /// `<broadcast>/ai` track if there is one, else the broadcast's own).
    #[arg(long)]
    captions: Option<PathBuf>,
    /// Print the delay from the end of each utterance in the audio to its final cue (p50, p95).
    #[arg(long)]
    caption_latency: bool,
    /// Preferred caption language.
    #[arg(long)]
    caption_lang: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let opts = SubscribeOptions {
        url: cli.url,
        broadcast: cli.broadcast,
        tls: cli.tls.client_tls()?,
        output: cli.output,
        duration: cli.duration.map(Duration::from_secs_f64),
        print_catalog: cli.catalog,
        stats: cli.stats || cli.json,
        wait: Duration::from_secs_f64(cli.wait),
        captions: cli.captions,
        caption_latency: cli.caption_latency,
        caption_lang: cli.caption_lang,
    };
    let caption_latency = opts.caption_latency;
    let summary = tokio::select! {
        res = run(opts) => res?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    if cli.stats {
        print!("{}", summary.table());
    } else if caption_latency {
        if let Some(c) = &summary.captions {
            let f = |v: Option<f64>| {
                v.map(|x| format!("{x:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "caption latency: p50 {} p95 {} over {} final cues",
                f(c.latency(0.5)),
                f(c.latency(0.95)),
                c.measured()
            );
        }
    }
    if cli.json {
        println!("{}", summary.json());
    }
    Ok(())
}

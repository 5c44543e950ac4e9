use std::{path::PathBuf, time::Duration};

use clap::Parser;
use moqcast_publisher::{
    cli::{init_tracing, TlsArgs},
    ingest::{IngestOptions, Input},
    publish::{run, PublishOptions},
};

/// Publish live audio/video to a MoQ relay as an MSF catalog plus LOC tracks.
#[derive(Debug, Parser)]
#[command(name = "moqcast-publish", version)]
struct Cli {
    /// Relay URL: https://host:port/ (WebTransport) or moqt://host:port (raw QUIC).
    #[arg(long, env = "MOQCAST_URL")]
    url: url::Url,
    /// Broadcast name (the MoQ namespace), e.g. "demo".
    #[arg(long, env = "MOQCAST_BROADCAST")]
    broadcast: String,
    /// "testsrc" (test pattern + tone), a media file, or "-" for fMP4/MPEG-TS on stdin.
    #[arg(long, default_value = "testsrc")]
    input: String,
    /// Repeat a file input forever.
    #[arg(long = "loop")]
    looping: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let input = match cli.input.as_str() {
        "testsrc" => Input::TestSrc,
        "-" => Input::Stdin,
        path => Input::File(PathBuf::from(path)),
    };
    let opts = PublishOptions {
        url: cli.url,
        broadcast: cli.broadcast,
        tls: cli.tls.client_tls()?,
        ingest: IngestOptions {
            input,
            looping: cli.looping,
            realtime: true,
        },
        duration: cli.duration.map(Duration::from_secs_f64),
    };
    tokio::select! {
        res = run(opts) => res,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

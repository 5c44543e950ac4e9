use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use moqcast_client::cli::{init_tracing, TlsArgs};
use moqcast_publisher::{
    captions::{parse_webvtt, ExtraTrackOptions},
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
    /// A WebVTT file to publish as a caption track `captions-<lang>`; cue times count from
    /// the start of the publication.
    #[arg(long, value_name = "FILE.vtt")]
    captions: Option<PathBuf>,
    /// BCP 47 language of --captions.
    #[arg(long, default_value = "en", requires = "captions")]
    captions_lang: String,
    /// Also publish the original audio as a second audio track `audio-<LANG>` ("Dub (LANG,
    /// test)") in the same altGroup, to exercise a viewer's audio menu.
    #[arg(long, value_name = "LANG")]
    test_dub: Option<String>,
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
    let captions = match &cli.captions {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read the captions file {}", path.display()))?;
            let cues =
                parse_webvtt(&text).with_context(|| format!("captions file {}", path.display()))?;
            Some((cues, cli.captions_lang.clone()))
        }
        None => None,
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
        extra_tracks: ExtraTrackOptions {
            captions,
            test_dub: cli.test_dub,
        },
    };
    tokio::select! {
        res = run(opts) => res,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

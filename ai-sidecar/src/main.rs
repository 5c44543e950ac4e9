//! `moqcast-sidecar`: live captions for broadcasts on a moqcast (or any draft-18 MoQ) relay.
//!
//! ```text
//! moqcast-sidecar --url https://localhost:4443/ --broadcast demo [--broadcast other | --prefix live]
//! ```
//!
//! See `ai-sidecar/README.md`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use moqcast_client::{cli::TlsArgs, Client};
use moqcast_media::moq;
use moqcast_sidecar::{
    metrics::Metrics,
    model::{DecodeOptions, WhisperModel},
    recognize::Recognizer,
    segment::SegmenterConfig,
    service::{self, Shared},
    transcriber::Whisper,
    vad::VadConfig,
};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "moqcast-sidecar",
    version,
    about = "Live Whisper captions for MoQ broadcasts, published back as WebVTT caption tracks"
)]
struct Args {
    /// Relay URL: `https://host:port/` (WebTransport) or `moqt://host:port` (raw QUIC).
    #[arg(long, env = "MOQCAST_URL", default_value = "https://localhost:4443/")]
    url: Url,
    /// A broadcast to caption (repeat, or comma-separate, for several).
    #[arg(long = "broadcast", env = "MOQCAST_BROADCAST", value_delimiter = ',')]
    broadcasts: Vec<String>,
    /// Caption every broadcast announced under this prefix (SUBSCRIBE_NAMESPACE); `""` for all.
    #[arg(long, env = "MOQCAST_PREFIX")]
    prefix: Option<String>,
    /// Whisper model: a local directory (HF safetensors, or faster-whisper/CTranslate2), or a
    /// Hugging Face hub id found in the local hub cache. Default: the model that
    /// scripts/fetch-model.sh installs (Whisper tiny.en).
    #[arg(long, env = "MOQCAST_WHISPER_MODEL")]
    model: Option<String>,
    /// Fetch a hub id that is not in the local cache (needs network access to the hub).
    #[arg(long, env = "MOQCAST_ALLOW_DOWNLOAD")]
    allow_download: bool,
    /// Language of the speech and the captions (BCP 47; English-only models need `en`).
    #[arg(long, env = "MOQCAST_LANGUAGE", default_value = "en")]
    language: String,
    /// Beam size for final cues (1 = greedy). Partial cues are always greedy. Beam 5 (the
    /// default, as in faster-whisper and OpenAI's whisper) cut the word error rate from 18% to 13%
    /// on the caption benchmark for about 50% more CPU per final (docs/BENCHMARKS.md).
    #[arg(long, env = "MOQCAST_BEAM_SIZE", default_value_t = 5)]
    beam_size: usize,
    /// Inference threads (default: all cores).
    #[arg(long, env = "MOQCAST_THREADS")]
    threads: Option<usize>,
    /// `cpu`, or `cuda` (build with `--features cuda`).
    #[arg(long, env = "MOQCAST_DEVICE", default_value = "cpu")]
    device: String,
    /// Address of the HTTP endpoint serving /metrics, /status and /healthz.
    #[arg(long, env = "MOQCAST_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    metrics_addr: SocketAddr,
    /// How often a partial cue is produced while someone speaks, ms.
    #[arg(long, env = "MOQCAST_PARTIAL_EVERY_MS", default_value_t = 1000)]
    partial_every_ms: u64,
    /// The pause that ends an utterance, ms.
    #[arg(long, env = "MOQCAST_PAUSE_MS", default_value_t = 500)]
    pause_ms: u64,
    /// Longest utterance before it is cut, ms (at most 29000).
    #[arg(long, env = "MOQCAST_MAX_UTTERANCE_MS", default_value_t = 15_000)]
    max_utterance_ms: u64,
    /// Speech waiting for recognition per broadcast before utterances are merged or skipped, ms.
    #[arg(long, env = "MOQCAST_MAX_BACKLOG_MS", default_value_t = 20_000)]
    max_backlog_ms: u64,
    #[command(flatten)]
    tls: TlsArgs,
}

fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => candle_core::Device::new_cuda(0).context(
            "--device cuda: no usable CUDA device (or this build lacks the `cuda` feature)",
        ),
        other => anyhow::bail!("--device {other:?}: expected cpu or cuda"),
    }
}

#[cfg(feature = "download")]
fn download(id: &str) -> Result<std::path::PathBuf, String> {
    moqcast_sidecar::locate::download(id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        // candle's CPU kernels size their pools from RAYON_NUM_THREADS; set before any starts.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    moqcast_client::cli::init_tracing();
    if args.broadcasts.is_empty() && args.prefix.is_none() {
        anyhow::bail!("nothing to caption: pass --broadcast NAME (repeatable) or --prefix PREFIX");
    }
    if args.max_utterance_ms > moqcast_sidecar::recognize::MAX_JOB_MS {
        anyhow::bail!(
            "--max-utterance-ms must be at most {}",
            moqcast_sidecar::recognize::MAX_JOB_MS
        );
    }
    if args.beam_size == 0 {
        anyhow::bail!("--beam-size must be at least 1");
    }

    #[cfg(feature = "download")]
    let fetch: Option<moqcast_sidecar::locate::Downloader<'_>> =
        args.allow_download.then_some(&download as _);
    #[cfg(not(feature = "download"))]
    let fetch: Option<moqcast_sidecar::locate::Downloader<'_>> = None;
    #[cfg(not(feature = "download"))]
    if args.allow_download {
        anyhow::bail!("--allow-download needs a build with the `download` feature");
    }
    let dir = moqcast_sidecar::locate::locate(args.model.as_deref(), fetch)?;
    let device = device(&args.device)?;
    let started = std::time::Instant::now();
    let model = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || WhisperModel::load(&dir, &device)
    })
    .await?
    .with_context(|| format!("loading the Whisper model from {}", dir.display()))?;
    if !model.is_multilingual() && !args.language.starts_with("en") {
        anyhow::bail!(
            "the model at {} is English-only; --language {} needs a multilingual model",
            dir.display(),
            args.language
        );
    }
    tracing::info!(model = %dir.display(), format = ?model.format, took = ?started.elapsed(), "model loaded");

    let metrics = Arc::new(Metrics::default());
    let transcriber = Whisper::new(
        model,
        DecodeOptions {
            beam_size: args.beam_size,
            ..Default::default()
        },
        &args.language,
    );
    let recognizer = Recognizer::start(transcriber, args.max_backlog_ms, metrics.clone())
        .context("starting the recognition thread")?;

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics, status at /status");
    let http = tokio::spawn(serve_http(listener, metrics.clone()));

    let client = Client::new(&args.tls.client_tls()?)?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        url: args.url.clone(),
        recognizer,
        metrics,
        segmenter: SegmenterConfig {
            vad: VadConfig {
                hangover_frames: (args.pause_ms / 20).max(1) as u32,
                ..Default::default()
            },
            partial_every_ms: args.partial_every_ms,
            max_utterance_ms: args.max_utterance_ms,
            ..Default::default()
        },
        language: args.language.clone(),
        catalog_wait: Duration::from_secs(30),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut running = std::collections::BTreeSet::new();
    for b in &args.broadcasts {
        let b = b.trim_matches('/').to_string();
        if running.insert(b.clone()) {
            tasks.spawn(service::run_broadcast(shared.clone(), b, stop_rx.clone()));
        }
    }
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel::<String>(64);
    if let Some(prefix) = args.prefix.clone() {
        tasks.spawn(discover(shared.clone(), prefix, found_tx, stop_rx.clone()));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            Some(b) = found_rx.recv() => {
                if running.insert(b.clone()) {
                    tracing::info!(broadcast = %b, "found a broadcast to caption");
                    tasks.spawn(service::run_broadcast(shared.clone(), b, stop_rx.clone()));
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    http.abort();
    client.close().await;
    Ok(())
}

/// Watches `prefix` with SUBSCRIBE_NAMESPACE and reports every broadcast announced below it
/// (except the sidecar's own `.../ai` namespaces).
async fn discover(
    shared: Arc<Shared>,
    prefix: String,
    found: tokio::sync::mpsc::Sender<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let attempt = async {
            let conn = shared.client.connect(&shared.url).await?;
            let mut subscriber = conn.subscriber.clone();
            let session = conn.session.run();
            tokio::pin!(session);
            let prefix_ns = moq::as_prefix(&moq::namespace(&prefix));
            let watch = tokio::select! {
                res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
                w = subscriber.subscribe_namespace(prefix_ns, Default::default()) => w?,
            };
            loop {
                tokio::select! {
                    res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
                    ev = watch.next() => match ev? {
                        Some(moq::transport::session::NamespaceEvent::Added(ns)) => {
                            let path = moq::broadcast_path(&ns);
                            let own = path == "ai" || path.ends_with("/ai") || path.contains("/ai/");
                            if !own && !path.is_empty() && found.send(path).await.is_err() {
                                return Ok(());
                            }
                        }
                        Some(_) => {}
                        None => anyhow::bail!("namespace subscription ended"),
                    },
                }
            }
        };
        tokio::select! {
            res = attempt => if let Err(e) = res {
                tracing::warn!(prefix = %prefix, error = format!("{e:#}"), "broadcast discovery failed; retrying");
            },
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::{routing::get, Router};
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/status",
            get(move || {
                let m = m2.clone();
                async move { axum::Json(m.status_json()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}

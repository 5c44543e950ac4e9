//! Speech synthesis providers: espeak-ng and SVOX Pico run as programs (their libraries are
//! GPL / non-free: the sidecar never links them), and an OpenAI-compatible
//! `/v1/audio/speech` endpoint. Each returns mono PCM at the rate the engine made it
//! ([`Speech`]); the dubbing resamples it to 48 kHz.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moqcast_media::wav;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::lang;
use crate::providers::openai::Endpoint;
use crate::stage::{BoxFuture, Provider, ProviderError, Speech, SynthRequest, Synthesis};

/// Longest text spoken in one request, in characters (a caption is far shorter).
pub const MAX_TEXT_CHARS: usize = 2_000;

pub(crate) fn check_text(r: &SynthRequest) -> Result<String, ProviderError> {
    let text: String = r
        .text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT_CHARS)
        .collect();
    if text.trim().is_empty() {
        return Err(ProviderError::Unsupported("nothing to say".into()));
    }
    Ok(text)
}

fn from_wav(bytes: &[u8], engine: &str) -> Result<Speech, ProviderError> {
    let w = wav::parse(bytes).map_err(|e| ProviderError::Failed(format!("{engine}: {e}")))?;
    Ok(Speech {
        samples: w.samples,
        rate: w.rate,
    })
}

/// Whether `program` runs (`program --version`).
fn runs(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// espeak-ng, one program run per request (20-30 ms): `espeak-ng -v LANG --stdout`, the text
/// on standard input.
#[derive(Debug)]
pub struct Espeak {
    name: String,
    voice: String,
}

impl Espeak {
    /// The espeak-ng provider for `language`, or why it cannot serve it.
    pub fn new(name: &str, language: &str, voice: Option<&str>) -> Result<Self, String> {
        if !runs("espeak-ng", "--version") {
            return Err("espeak-ng is not installed (Debian: apt-get install espeak-ng)".into());
        }
        let voice = match voice {
            Some(v) => v.to_string(),
            None => {
                let primary = lang::primary(language);
                let out = std::process::Command::new("espeak-ng")
                    .arg(format!("--voices={primary}"))
                    .output()
                    .map_err(|e| format!("espeak-ng --voices: {e}"))?;
                let listed = String::from_utf8_lossy(&out.stdout).lines().count();
                if listed < 2 {
                    return Err(format!("espeak-ng has no voice for {language}"));
                }
                primary
            }
        };
        Ok(Self {
            name: name.to_string(),
            voice,
        })
    }
}

impl Provider<Synthesis> for Espeak {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SynthRequest) -> BoxFuture<Result<Speech, ProviderError>> {
        let voice = self.voice.clone();
        Box::pin(async move {
            let text = check_text(&request)?;
            let out = run_espeak(&["-v", &voice, "--stdout"], &text).await?;
            from_wav(&out, "espeak-ng")
        })
    }
}

/// Runs the `espeak-ng` program with `args`, `input` on its stdin: its stdout, or why it failed
/// (its exit status and the start of its stderr).
pub(crate) async fn run_espeak(args: &[&str], input: &str) -> Result<Vec<u8>, ProviderError> {
    let mut child = Command::new("espeak-ng")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProviderError::Failed(format!("starting espeak-ng: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(input.as_bytes())
        .await
        .map_err(|e| ProviderError::Failed(format!("writing to espeak-ng: {e}")))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ProviderError::Failed(format!("espeak-ng: {e}")))?;
    if !out.status.success() {
        return Err(exited(&format!("espeak-ng {}", args.join(" ")), &out));
    }
    Ok(out.stdout)
}

/// Why a program failed: its exit status and the start of its stderr.
fn exited(program: &str, out: &std::process::Output) -> ProviderError {
    let err: String = String::from_utf8_lossy(&out.stderr)
        .chars()
        .take(200)
        .collect();
    ProviderError::Failed(format!("{program} exited with {}: {err}", out.status))
}

/// SVOX Pico's voices: (language tag prefix, pico2wave's name).
const PICO_VOICES: &[(&str, &str)] = &[
    ("en-gb", "en-GB"),
    ("en", "en-US"),
    ("es", "es-ES"),
    ("fr", "fr-FR"),
    ("de", "de-DE"),
    ("it", "it-IT"),
];

/// pico2wave's voice for a language tag.
pub fn pico_voice(language: &str) -> Option<&'static str> {
    let lower = language.to_ascii_lowercase();
    PICO_VOICES
        .iter()
        .find(|(p, _)| lower == *p || lower.starts_with(&format!("{p}-")))
        .or_else(|| {
            let primary = lang::primary(language);
            PICO_VOICES.iter().find(|(p, _)| *p == primary)
        })
        .map(|(_, v)| *v)
}

/// SVOX Pico (Debian non-free `libttspico-utils`): `pico2wave -l es-ES -w FILE.wav TEXT`,
/// 16 kHz mono. It writes only to a file named `*.wav`: one temporary file per request.
#[derive(Debug)]
pub struct Pico {
    name: String,
    voice: &'static str,
    dir: PathBuf,
}

static PICO_FILES: AtomicU64 = AtomicU64::new(0);

impl Pico {
    pub fn new(name: &str, language: &str) -> Result<Self, String> {
        let voice = pico_voice(language)
            .ok_or_else(|| format!("SVOX Pico has no voice for {language} (en, es, fr, de, it)"))?;
        if !runs("pico2wave", "--help") {
            return Err(
                "pico2wave is not installed (Debian non-free: apt-get install libttspico-utils; scripts/setup.sh)"
                    .into(),
            );
        }
        Ok(Self {
            name: name.to_string(),
            voice,
            dir: std::env::temp_dir(),
        })
    }
}

/// Removes a file when dropped (also when the request is abandoned).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Provider<Synthesis> for Pico {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SynthRequest) -> BoxFuture<Result<Speech, ProviderError>> {
        let voice = self.voice;
        let file = TempFile(self.dir.join(format!(
            "moqcast-pico-{}-{}.wav",
            std::process::id(),
            PICO_FILES.fetch_add(1, Ordering::Relaxed)
        )));
        Box::pin(async move {
            let text = check_text(&request)?;
            let out = Command::new("pico2wave")
                .args(["-l", voice, "-w"])
                .arg(&file.0)
                .arg("--")
                .arg(text.trim())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| ProviderError::Failed(format!("starting pico2wave: {e}")))?;
            if !out.status.success() {
                return Err(exited("pico2wave", &out));
            }
            let bytes = tokio::fs::read(&file.0)
                .await
                .map_err(|e| ProviderError::Failed(format!("reading pico2wave's file: {e}")))?;
            from_wav(&bytes, "pico2wave")
        })
    }
}

/// The rate of OpenAI's `pcm` answers (signed 16-bit little-endian, mono, no header).
pub const OPENAI_PCM_RATE: u32 = 24_000;

/// An OpenAI-compatible `POST {base}/audio/speech` (OpenAI, LocalAI, Kokoro-FastAPI, openedai-
/// speech...): JSON `{model, input, voice, response_format: "wav"}`. A WAV answer is read
/// tolerantly; a headerless answer is taken as `pcm` (16-bit, 24 kHz).
pub struct OpenAiSpeech {
    name: String,
    client: reqwest::Client,
    endpoint: Arc<Endpoint>,
    voice: String,
}

impl OpenAiSpeech {
    pub fn new(name: &str, client: reqwest::Client, endpoint: Endpoint, voice: &str) -> Self {
        Self {
            name: name.to_string(),
            client,
            endpoint: Arc::new(endpoint),
            voice: voice.to_string(),
        }
    }
}

/// Reads an `/audio/speech` answer: WAV, or raw 16-bit PCM at [`OPENAI_PCM_RATE`].
pub fn speech_answer(bytes: &[u8]) -> Result<Speech, ProviderError> {
    if bytes.starts_with(b"RIFF") {
        return from_wav(bytes, "the speech endpoint");
    }
    if bytes.len() < 2 || bytes.starts_with(b"{") || bytes.starts_with(b"ID3") {
        let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(100)]).into();
        return Err(ProviderError::Failed(format!(
            "the speech endpoint answered neither WAV nor PCM: {shown:?}"
        )));
    }
    Ok(Speech {
        samples: bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect(),
        rate: OPENAI_PCM_RATE,
    })
}

impl Provider<Synthesis> for OpenAiSpeech {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SynthRequest) -> BoxFuture<Result<Speech, ProviderError>> {
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        let voice = self.voice.clone();
        Box::pin(async move {
            let text = check_text(&request)?;
            let body = serde_json::json!({
                "model": endpoint.model,
                "input": text.trim(),
                "voice": voice,
                "response_format": "wav",
                "language": lang::primary(&request.language),
            });
            let req = client.post(endpoint.url("audio/speech")).json(&body);
            let bytes = super::openai::post(&endpoint, req).await?;
            speech_answer(&bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pico_voices_by_tag() {
        assert_eq!(pico_voice("es"), Some("es-ES"));
        assert_eq!(pico_voice("es-MX"), Some("es-ES"));
        assert_eq!(pico_voice("en-GB"), Some("en-GB"));
        assert_eq!(pico_voice("en"), Some("en-US"));
        assert_eq!(pico_voice("fr-CA"), Some("fr-FR"));
        assert_eq!(pico_voice("ja"), None);
    }

    #[test]
    fn speech_answers_wav_or_pcm() {
        let w = wav::write_pcm16(&[0.5; 100], 22_050);
        let s = speech_answer(&w).unwrap();
        assert_eq!((s.samples.len(), s.rate), (100, 22_050));
        let s = speech_answer(&[0, 64, 0, 192]).unwrap();
        assert_eq!(s.rate, OPENAI_PCM_RATE);
        assert_eq!(s.samples, vec![0.5, -0.5]);
        assert!(speech_answer(b"{\"error\":\"x\"}").is_err());
    }

    #[tokio::test]
    async fn espeak_speaks_spanish() {
        let e = Espeak::new("espeak-ng", "es", None).expect("espeak-ng is installed");
        let s = e
            .call(SynthRequest {
                text: "Hola, buenos días a todos.".into(),
                language: "es".into(),
            })
            .await
            .unwrap();
        assert_eq!(s.rate, 22_050);
        let secs = s.samples.len() as f64 / 22_050.0;
        assert!((0.8..5.0).contains(&secs), "{secs} s");
        let peak = s.samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.1, "speech, not silence: peak {peak}");
        assert!(Espeak::new("espeak-ng", "xx-nonexistent", None).is_err());
        let err = e
            .call(SynthRequest {
                text: " \n".into(),
                language: "es".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported(_)));
    }

    #[tokio::test]
    async fn pico_speaks_spanish_where_installed() {
        // scripts/setup.sh installs it where Debian's non-free component can be enabled.
        let p = match Pico::new("pico", "es") {
            Ok(p) => p,
            Err(e) => {
                assert!(e.contains("pico2wave is not installed"), "{e}");
                return;
            }
        };
        let s = p
            .call(SynthRequest {
                text: "-Hola, buenos días a todos.".into(),
                language: "es".into(),
            })
            .await
            .unwrap();
        assert_eq!(s.rate, 16_000);
        let secs = s.samples.len() as f64 / 16_000.0;
        assert!((0.8..5.0).contains(&secs), "{secs} s");
        assert!(Pico::new("pico", "ja")
            .unwrap_err()
            .contains("no voice for ja"));
    }
}

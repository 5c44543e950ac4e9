//! Loading a Whisper model directory in either supported format, and greedy decoding.
//!
//! - Hugging Face: `config.json` (candle's `whisper::Config` fields), `tokenizer.json`, `*.safetensors`.
//! - CTranslate2 (faster-whisper): `model.bin`, `config.json` (suppressed tokens), `tokenizer.json`;
//!   converted to f32 on load by [`crate::ct2`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_transformers::models::whisper::{self, model::Whisper};
use tokenizers::Tokenizer;

use crate::audio::{LogMel, MelFrontEnd};
use crate::ct2::{self, Ct2Model, Ct2WhisperConfig};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model directory {0} does not exist or is not a directory (run scripts/fetch-model.sh to fetch the default model)")]
    NotADirectory(PathBuf),
    #[error("model directory {dir} has no {what} (expected HF safetensors + config.json + tokenizer.json, or CTranslate2 model.bin + config.json + tokenizer.json)")]
    Missing { dir: PathBuf, what: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid config: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not a valid tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tokenizer has no token {0:?}")]
    MissingToken(&'static str),
    #[error("CTranslate2 model {path}: {source}")]
    Ct2 {
        path: PathBuf,
        #[source]
        source: ct2::Ct2Error,
    },
    #[error("model weights do not fit the config: {0}")]
    Weights(#[source] candle_core::Error),
    #[error("{seconds:.1} s of audio is longer than the model's {max_seconds} s window")]
    TooLong { seconds: f64, max_seconds: f64 },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    HfSafetensors,
    CTranslate2,
}

/// Token ids the decoder needs.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    pub transcribe: u32,
    pub no_timestamps: u32,
    /// `<|en|>`, used for multilingual models.
    pub en: Option<u32>,
}

/// A transcription and where the time went.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    pub tokens: Vec<u32>,
    pub mel: Duration,
    pub encode: Duration,
    pub decode: Duration,
}

impl Transcript {
    pub fn total(&self) -> Duration {
        self.mel + self.encode + self.decode
    }
}

pub struct WhisperModel {
    pub model: Whisper,
    pub config: whisper::Config,
    pub tokenizer: Tokenizer,
    pub format: ModelFormat,
    pub tokens: SpecialTokens,
    /// Tokens suppressed at the first sampled position (space and end of text).
    pub suppress_begin: Vec<u32>,
    pub device: Device,
    front_end: MelFrontEnd,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn require(dir: &Path, file: &str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::Missing {
            dir: dir.to_path_buf(),
            what: file.to_string(),
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|source| ModelError::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// Which format a directory holds, if any.
pub fn detect_format(dir: &Path) -> Result<ModelFormat> {
    if !dir.is_dir() {
        return Err(ModelError::NotADirectory(dir.to_path_buf()));
    }
    if dir.join("model.bin").is_file() {
        return Ok(ModelFormat::CTranslate2);
    }
    if !safetensors_files(dir)?.is_empty() {
        return Ok(ModelFormat::HfSafetensors);
    }
    Err(ModelError::Missing {
        dir: dir.to_path_buf(),
        what: "model.bin or *.safetensors".into(),
    })
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[derive(serde::Deserialize, Default)]
struct HfGenerationConfig {
    #[serde(default)]
    begin_suppress_tokens: Vec<u32>,
}

impl WhisperModel {
    /// Load a model directory (either format) onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let format = detect_format(dir)?;
        let config_path = require(dir, "config.json")?;
        let tokenizer_path = require(dir, "tokenizer.json")?;
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::Tokenizer {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
        let token = |s: &'static str| tokenizer.token_to_id(s).ok_or(ModelError::MissingToken(s));
        let tokens = SpecialTokens {
            sot: token(whisper::SOT_TOKEN)?,
            eot: token(whisper::EOT_TOKEN)?,
            transcribe: token(whisper::TRANSCRIBE_TOKEN)?,
            no_timestamps: token(whisper::NO_TIMESTAMPS_TOKEN)?,
            en: tokenizer.token_to_id("<|en|>"),
        };
        let (config, vb, suppress_begin) = match format {
            ModelFormat::CTranslate2 => {
                let bin = require(dir, "model.bin")?;
                let ct2_err = |source| ModelError::Ct2 {
                    path: bin.clone(),
                    source,
                };
                let ct2_cfg: Ct2WhisperConfig = json(&config_path)?;
                let m = Ct2Model::open(&bin).map_err(ct2_err)?;
                let config = ct2::whisper_config(&m, &ct2_cfg).map_err(ct2_err)?;
                let vb = ct2::whisper_var_builder(&m, device).map_err(ct2_err)?;
                let begin = if ct2_cfg.suppress_ids_begin.is_empty() {
                    vec![220, tokens.eot]
                } else {
                    ct2_cfg.suppress_ids_begin
                };
                (config, vb, begin)
            }
            ModelFormat::HfSafetensors => {
                let config: whisper::Config = json(&config_path)?;
                let files = safetensors_files(dir)?;
                // SAFETY: the files are memory-mapped read-only; modifying them while loaded is UB,
                // as with every mmap-based loader.
                let vb = unsafe {
                    candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, device)
                }
                .map_err(ModelError::Weights)?;
                let gen = dir.join("generation_config.json");
                let begin = if gen.is_file() {
                    json::<HfGenerationConfig>(&gen)?.begin_suppress_tokens
                } else {
                    vec![]
                };
                let begin = if begin.is_empty() {
                    vec![220, tokens.eot]
                } else {
                    begin
                };
                (config, vb, begin)
            }
        };
        let model = Whisper::load(&vb, config.clone()).map_err(ModelError::Weights)?;
        Ok(Self {
            front_end: MelFrontEnd::new(config.num_mel_bins),
            model,
            config,
            tokenizer,
            format,
            tokens,
            suppress_begin,
            device: device.clone(),
        })
    }

    /// English-only models (`*.en`) have one token fewer than multilingual ones.
    pub fn is_multilingual(&self) -> bool {
        self.config.vocab_size >= 51865
    }

    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        self.front_end.log_mel(samples)
    }

    /// Greedy, no-timestamp transcription of up to 30 s of 16 kHz mono audio. The mel transform runs on
    /// the real samples only; the encoder then sees the full 3000-frame window the model was trained
    /// on (fed only the real frames, tiny.en hallucinates and repeats itself).
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript> {
        let t0 = Instant::now();
        let n_frames = 2 * self.config.max_source_positions;
        let mel = self.log_mel(samples);
        if mel.n_frames > n_frames {
            return Err(ModelError::TooLong {
                seconds: samples.len() as f64 / crate::audio::SAMPLE_RATE as f64,
                max_seconds: (n_frames * crate::audio::HOP_LENGTH / crate::audio::SAMPLE_RATE)
                    as f64,
            });
        }
        let mel = mel.padded(n_frames);
        let mel = mel.to_tensor(&self.device)?;
        let t1 = Instant::now();
        let audio = self.model.encoder.forward(&mel, true)?;
        // Make the lazy/asynchronous backends finish the encoder before timing the decoder.
        audio.device().synchronize()?;
        let t2 = Instant::now();
        let tokens = self.greedy(&audio)?;
        let text = self
            .tokenizer
            .decode(&tokens, true)
            .map(|s| s.trim().to_string())
            .map_err(|e| ModelError::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                reason: e.to_string(),
            })?;
        let t3 = Instant::now();
        Ok(Transcript {
            text,
            tokens,
            mel: t1 - t0,
            encode: t2 - t1,
            decode: t3 - t2,
        })
    }

    /// Greedy decoding of encoder output; returns the text tokens (without the prompt and end of
    /// text). No self-attention key/value cache yet: each step reruns the whole prefix.
    pub fn greedy(&mut self, audio: &Tensor) -> Result<Vec<u32>> {
        let mut tokens = vec![self.tokens.sot];
        if self.is_multilingual() {
            if let Some(en) = self.tokens.en {
                tokens.push(en);
            }
            tokens.push(self.tokens.transcribe);
        }
        tokens.push(self.tokens.no_timestamps);
        let prompt = tokens.len();
        let vocab = self.config.vocab_size;
        // Suppress configured tokens and, in no-timestamp mode, every timestamp token.
        let mut suppress = vec![0f32; vocab];
        for &t in &self.config.suppress_tokens {
            if let Some(s) = suppress.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        for s in suppress
            .iter_mut()
            .skip(self.tokens.no_timestamps as usize + 1)
        {
            *s = f32::NEG_INFINITY;
        }
        let suppress = Tensor::from_vec(suppress, vocab, &self.device)?;
        let mut begin = vec![0f32; vocab];
        for &t in &self.suppress_begin {
            if let Some(s) = begin.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        let begin = Tensor::from_vec(begin, vocab, &self.device)?;
        let max_len = self.config.max_target_positions / 2;
        for i in 0..max_len {
            let input = Tensor::new(tokens.as_slice(), &self.device)?.unsqueeze(0)?;
            let hidden = self.model.decoder.forward(&input, audio, i == 0)?;
            let (_, seq, _) = hidden.dims3()?;
            let logits = self
                .model
                .decoder
                .final_linear(&hidden.i((..1, seq - 1..))?)?
                .i(0)?
                .i(0)?;
            let mut logits = logits.broadcast_add(&suppress)?;
            if i == 0 {
                logits = logits.broadcast_add(&begin)?;
            }
            let next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if next == self.tokens.eot {
                break;
            }
            tokens.push(next);
        }
        Ok(tokens[prompt..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_directory_errors_clearly() {
        let err = WhisperModel::load("/nonexistent/moqcast-model", &Device::Cpu)
            .err()
            .unwrap();
        assert!(matches!(err, ModelError::NotADirectory(_)));
        assert!(err.to_string().contains("scripts/fetch-model.sh"));

        let dir = std::env::temp_dir().join(format!("moqcast-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = WhisperModel::load(&dir, &Device::Cpu).err().unwrap();
        assert!(matches!(err, ModelError::Missing { .. }), "{err}");

        // A corrupt model.bin (with valid companions absent first, then present).
        std::fs::write(dir.join("model.bin"), b"\x06\0\0\0\x05\0Whis").unwrap();
        let err = WhisperModel::load(&dir, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Loading a Whisper model directory in either supported format, and decoding: greedy or beam
//! search over our own decoder with a key/value cache, with no-speech probability, average log
//! probability, a repetition guard, text prompts and optional temperature fallback.
//!
//! - Hugging Face: `config.json` (candle's `whisper::Config` fields), `tokenizer.json`, `*.safetensors`.
//! - CTranslate2 (faster-whisper): `model.bin`, `config.json` (suppressed tokens), `tokenizer.json`;
//!   converted to f32 on load by [`crate::ct2`].
//!
//! # The library API
//!
//! ```no_run
//! use moqcast_sidecar::model::{DecodeOptions, Language, Task, WhisperModel};
//! # fn main() -> Result<(), moqcast_sidecar::model::ModelError> {
//! # let pcm: Vec<f32> = vec![];
//! // `scripts/fetch-model.sh base` installs the multilingual Whisper base;
//! // `locate::locate(Some("base"), None)` finds it.
//! let mut model = WhisperModel::load("/path/to/whisper-base", &candle_core::Device::Cpu)?;
//! // Up to 30 s of 16 kHz mono speech in any language: its text, and the language heard.
//! let t = model.transcribe_with(&pcm, &DecodeOptions {
//!     language: Language::Auto,
//!     beam_size: 5,
//!     ..Default::default()
//! })?;
//! println!("{} ({}, p = {:?})", t.text, t.language, t.language_probability);
//! // The same speech as English text (Whisper's translate task), the language given.
//! let en = model.transcribe_with(&pcm, &DecodeOptions {
//!     task: Task::Translate,
//!     language: Language::fixed("es"),
//!     ..Default::default()
//! })?;
//! // Only the language: probabilities of every language, most likely first.
//! let ranked = model.detect_language(&pcm)?;
//! # Ok(()) }
//! ```
//!
//! [`crate::transcriber::transcribe_recording`] takes a recording of any length: it cuts it into
//! utterances at pauses, as the live sidecar does, and returns timed segments. English-only models
//! (`*.en`, such as the default tiny.en) take only English and the transcribe task; asking them
//! for another language or for translation is an error ([`ModelError::Unsupported`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::whisper;
use tokenizers::Tokenizer;

use decoder::{Audio, Cache, Decoder};
use encoder::Encoder;
pub use layers::Precision;
use search::{Outcome, Search, Step, Suppress};

mod decoder;
mod encoder;
mod int8;
mod kernels;
pub mod language;
mod layers;
mod mel;
mod search;

pub use language::{Language, Task};

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
    #[error("Whisper has no language {0:?} (expected a BCP-47 tag such as \"es\" or \"pt-BR\", or \"auto\")")]
    UnknownLanguage(String),
    #[error("{what} needs a multilingual Whisper model; this one is English-only (try `--model base`, fetched by `scripts/fetch-model.sh base`)")]
    Unsupported { what: String },
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
    /// `<|translate|>`.
    pub translate: Option<u32>,
    /// Language tokens of a multilingual model, by Whisper code (empty for English-only models).
    pub languages: Vec<(&'static str, u32)>,
    /// `<|nospeech|>` (`<|nocaptions|>` in older vocabularies).
    pub no_speech: Option<u32>,
    /// `<|startofprev|>`, which introduces a text prompt.
    pub start_of_prev: Option<u32>,
}

/// How a transcription is searched for.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// 1: greedy; more: beam search with that many hypotheses (faster-whisper uses 5).
    pub beam_size: usize,
    /// Beam search stops once `round(beam_size * patience)` hypotheses have ended (OpenAI's
    /// `patience`; 1 is the usual setting).
    pub patience: f32,
    /// Text that came before (for continuity across segments), given to the model after
    /// `<|startofprev|>`; only its last 223 tokens are used.
    pub prompt: Option<String>,
    /// Text already said at the start of the audio (OpenAI's `prefix`): decoded as if the model
    /// had written it, so the output continues after it and leaves it out. With the audio of
    /// the previous utterance in front of the current one, this gives the model the previous
    /// words to hear and read (see [`crate::transcriber::RecordingOptions::audio_context_ms`]).
    /// At most 112 tokens of it are used (its last ones).
    pub prefix: Option<String>,
    /// Most text tokens to generate (Whisper's limit is 224, half its 448 positions).
    pub max_tokens: usize,
    /// Stop a hypothesis whose tail repeats one n-gram (8 equal tokens, 4 equal pairs, or 3 equal
    /// longer runs), keeping one copy.
    pub repetition_guard: bool,
    /// Temperatures to retry with (sampling, then greedy per step) when the decode at temperature 0
    /// looks like a loop or `avg_logprob` is under `logprob_threshold`, unless it looks like
    /// silence (`no_speech_prob` over `no_speech_threshold`). Empty: no fallback. OpenAI uses
    /// `[0.2, 0.4, 0.6, 0.8, 1.0]`.
    pub fallback_temperatures: Vec<f32>,
    pub logprob_threshold: f32,
    pub no_speech_threshold: f32,
    /// Seed for temperature sampling (decodes are reproducible).
    pub seed: u64,
    /// How much of the 30 s encoder window to compute.
    pub window: EncoderWindow,
    /// Transcribe, or translate into English (multilingual models only).
    pub task: Task,
    /// The spoken language, or [`Language::Auto`] to detect it (multilingual models only; an
    /// English-only model takes `en` and treats `Auto` as `en`).
    pub language: Language,
}

/// How many mel frames the encoder runs over. The encoder's cost grows with the window (a little
/// faster than linearly), and so does the decoder's cross-attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderWindow {
    /// The 30 s window Whisper was trained on, however short the audio.
    Full,
    /// The audio and at least `pad_ms` of silence after it, in whole seconds. Without enough
    /// trailing silence to attend to, Whisper tends to stop early or to repeat the sentence it
    /// has transcribed (which the repetition guard cuts); with `fallback`, a decode whose
    /// `avg_logprob` is under the threshold (and which does not look like silence) is redone over
    /// the full window.
    Fit { pad_ms: u32, fallback: bool },
}

impl Default for DecodeOptions {
    /// Greedy, no prompt, repetition guard on, no temperature fallback, the encoder over the
    /// audio and 2 s of silence (with the full window as a fallback).
    fn default() -> Self {
        Self {
            beam_size: 1,
            patience: 1.0,
            prompt: None,
            prefix: None,
            max_tokens: 224,
            repetition_guard: true,
            fallback_temperatures: vec![],
            logprob_threshold: -1.0,
            no_speech_threshold: 0.6,
            seed: 0x5eed,
            window: EncoderWindow::Fit {
                pad_ms: 2000,
                fallback: true,
            },
            task: Task::Transcribe,
            language: Language::default(),
        }
    }
}

/// One language's probability, from [`WhisperModel::detect_language`].
#[derive(Debug, Clone, PartialEq)]
pub struct LanguageProbability {
    /// BCP-47 tag (Whisper's code, except Javanese `jv`).
    pub language: String,
    pub probability: f32,
}

/// A transcription and where the time went.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    /// Text tokens (no special tokens).
    pub tokens: Vec<u32>,
    /// Mean log probability of the tokens, end of text included (OpenAI's `avg_logprob`; below
    /// about -1 the text is unreliable).
    pub avg_logprob: f32,
    /// Probability of the no-speech token at the start-of-transcript position (OpenAI's
    /// `no_speech_prob`): high on silence and noise, where any text is likely a hallucination.
    pub no_speech_prob: f32,
    /// Temperature of the decode that produced the text (0 unless a fallback was taken).
    pub temperature: f32,
    /// The text looked like a loop: the repetition guard cut it, or few of its tokens are distinct.
    pub repetitive: bool,
    /// Mel frames the encoder ran over for this text (3000 for the full 30 s window).
    pub frames: usize,
    /// BCP-47 tag of the spoken language: the one asked for, or the one detected.
    pub language: String,
    /// With [`Language::Auto`] on a multilingual model: the detected language's probability.
    pub language_probability: Option<f32>,
    /// What was done: with [`Task::Translate`] `text` is English.
    pub task: Task,
    pub mel: Duration,
    /// Encoder, and the cross-attention keys and values of the decoder.
    pub encode: Duration,
    pub decode: Duration,
}

impl Transcript {
    pub fn total(&self) -> Duration {
        self.mel + self.encode + self.decode
    }
}

/// How the weights are held in memory (see [`Precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The encoder multiplies 1500 rows (fewer with [`EncoderWindow::Fit`]) at a time, where f32
    /// gemm is the fastest; candle's q8_0/q4_0 products are several times slower there.
    pub encoder: Precision,
    /// The decoder multiplies one row per hypothesis: [`Precision::Int8`] reads a quarter of the
    /// bytes of f32.
    pub decoder: Precision,
}

impl Default for LoadOptions {
    /// f32 encoder, [`Precision::Int8`] decoder.
    fn default() -> Self {
        Self {
            encoder: Precision::F32,
            decoder: Precision::Int8,
        }
    }
}

pub struct WhisperModel {
    pub config: whisper::Config,
    pub tokenizer: Tokenizer,
    pub format: ModelFormat,
    pub tokens: SpecialTokens,
    /// Tokens suppressed at the first sampled position (space and end of text).
    pub suppress_begin: Vec<u32>,
    pub device: Device,
    pub load_options: LoadOptions,
    encoder: Encoder,
    decoder: Decoder,
    front_end: MelFrontEnd,
    fast_mel: mel::FastMel,
}

// The model is moved into a worker thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<WhisperModel>();
};

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

/// English-only models (`*.en`) have one token fewer than multilingual ones.
fn is_multilingual(config: &whisper::Config) -> bool {
    config.vocab_size >= 51865
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
    /// Load a model directory (either format) onto `device`, with [`LoadOptions::default`].
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, LoadOptions::default())
    }

    /// Load a model directory (either format) onto `device`.
    pub fn load_with(dir: impl AsRef<Path>, device: &Device, options: LoadOptions) -> Result<Self> {
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
        let mut tokens = SpecialTokens {
            sot: token(whisper::SOT_TOKEN)?,
            eot: token(whisper::EOT_TOKEN)?,
            transcribe: token(whisper::TRANSCRIBE_TOKEN)?,
            no_timestamps: token(whisper::NO_TIMESTAMPS_TOKEN)?,
            translate: tokenizer.token_to_id("<|translate|>"),
            languages: language::LANGUAGES
                .iter()
                .filter_map(|(code, _)| {
                    Some((*code, tokenizer.token_to_id(&format!("<|{code}|>"))?))
                })
                .collect(),
            no_speech: tokenizer
                .token_to_id("<|nospeech|>")
                .or_else(|| tokenizer.token_to_id("<|nocaptions|>")),
            start_of_prev: tokenizer.token_to_id("<|startofprev|>"),
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
        if !is_multilingual(&config) {
            tokens.languages.clear();
        }
        let encoder = Encoder::load(vb.pp("model.encoder"), &config, options.encoder)
            .map_err(ModelError::Weights)?;
        let decoder = Decoder::load(vb.pp("model.decoder"), &config, options.decoder)
            .map_err(ModelError::Weights)?;
        Ok(Self {
            front_end: MelFrontEnd::new(config.num_mel_bins),
            fast_mel: mel::FastMel::new(config.num_mel_bins)?,
            encoder,
            decoder,
            config,
            tokenizer,
            format,
            tokens,
            suppress_begin,
            device: device.clone(),
            load_options: options,
        })
    }

    /// English-only models (`*.en`) have one token fewer than multilingual ones.
    pub fn is_multilingual(&self) -> bool {
        is_multilingual(&self.config)
    }

    /// BCP-47 tags of the languages this model can be given or detect (`["en"]` for an
    /// English-only model).
    pub fn languages(&self) -> Vec<&'static str> {
        if self.tokens.languages.is_empty() {
            return vec!["en"];
        }
        self.tokens
            .languages
            .iter()
            .map(|(c, _)| language::bcp47(c))
            .collect()
    }

    /// Whether this model can do what `opts` asks (language and task), without running it: for
    /// checking a configuration at start. [`Self::transcribe_with`] checks the same.
    pub fn check_options(&self, opts: &DecodeOptions) -> Result<()> {
        self.checked_language(opts).map(|_| ())
    }

    /// Whisper's code and token for what `opts` asks, checked against the model, before any
    /// work: `None` for [`Language::Auto`] on a multilingual model, and for English-only models.
    fn checked_language(&self, opts: &DecodeOptions) -> Result<Option<(&'static str, u32)>> {
        let multilingual = !self.tokens.languages.is_empty();
        if opts.task == Task::Translate && (!multilingual || self.tokens.translate.is_none()) {
            return Err(ModelError::Unsupported {
                what: "the translate task".into(),
            });
        }
        match &opts.language {
            Language::Auto => Ok(None),
            Language::Fixed(tag) => {
                let code = language::whisper_code(tag)
                    .ok_or_else(|| ModelError::UnknownLanguage(tag.clone()))?;
                if !multilingual {
                    return if code == "en" {
                        Ok(None)
                    } else {
                        Err(ModelError::Unsupported {
                            what: format!("language {tag:?}"),
                        })
                    };
                }
                self.tokens
                    .languages
                    .iter()
                    .find(|(c, _)| *c == code)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| ModelError::UnknownLanguage(tag.clone()))
            }
        }
    }

    /// Probabilities of the spoken language in up to 30 s of 16 kHz mono audio, most likely
    /// first (Whisper's language-token probabilities after `<|startoftranscript|>`, over the
    /// encoder window [`DecodeOptions::default`] uses). An English-only model answers `en` with
    /// probability 1.
    pub fn detect_language(&mut self, samples: &[f32]) -> Result<Vec<LanguageProbability>> {
        if self.tokens.languages.is_empty() {
            return Ok(vec![LanguageProbability {
                language: "en".into(),
                probability: 1.0,
            }]);
        }
        let mel = self.checked_mel(samples)?;
        let frames = self.windows(&mel, &DecodeOptions::default())[0].0;
        let audio = self.encode(&mel.padded(frames).to_tensor(&self.device)?)?;
        self.language_probabilities(&audio)
    }

    /// Language probabilities over encoded audio, most likely first.
    fn language_probabilities(&self, audio: &Audio) -> Result<Vec<LanguageProbability>> {
        let mut cache = Cache::default();
        let hidden = self
            .decoder
            .forward(&[self.tokens.sot], 1, audio, &mut cache)?;
        let logits = self.decoder.row_logits(&hidden, 0)?;
        let langs = &self.tokens.languages;
        let max = langs
            .iter()
            .map(|(_, t)| logits[*t as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = langs
            .iter()
            .map(|(_, t)| (logits[*t as usize] - max).exp())
            .collect();
        let sum: f32 = exp.iter().sum();
        let mut out: Vec<LanguageProbability> = langs
            .iter()
            .zip(exp)
            .map(|((code, _), e)| LanguageProbability {
                language: language::bcp47(code).to_string(),
                probability: e / sum,
            })
            .collect();
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        Ok(out)
    }

    /// Whisper's log-mel spectrogram (as [`crate::audio::MelFrontEnd::log_mel`], through matrix
    /// products).
    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        self.fast_mel
            .log_mel(samples)
            .unwrap_or_else(|_| self.front_end.log_mel(samples))
    }

    /// Greedy, no-timestamp transcription of up to 30 s of 16 kHz mono audio
    /// ([`DecodeOptions::default`]).
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript> {
        self.transcribe_with(samples, &DecodeOptions::default())
    }

    /// No-timestamp transcription of up to 30 s of 16 kHz mono audio. The mel transform runs on
    /// the real samples only; the encoder sees them followed by silence, over the window
    /// `opts.window` asks for (the full 3000 frames, or fewer). An empty or silent input gives a
    /// high `no_speech_prob` and, usually, a word or two of text ("you").
    pub fn transcribe_with(&mut self, samples: &[f32], opts: &DecodeOptions) -> Result<Transcript> {
        let fixed = self.checked_language(opts)?;
        let t0 = Instant::now();
        let mel = self.checked_mel(samples)?;
        let mel_time = t0.elapsed();
        let (mut encode, mut decode) = (Duration::ZERO, Duration::ZERO);
        for (frames, fallback) in self.windows(&mel, opts) {
            let t1 = Instant::now();
            let audio = self.encode(&mel.padded(frames).to_tensor(&self.device)?)?;
            let t2 = Instant::now();
            let decoded = self.decode(&audio, opts, fixed)?;
            let t3 = Instant::now();
            encode += t2 - t1;
            decode += t3 - t2;
            if fallback
                && (decoded.doubtful(opts) || says_it_twice(&self.text(&decoded.outcome.tokens)?))
            {
                continue;
            }
            let Decoded {
                outcome,
                temperature,
                no_speech_prob,
                language,
                language_probability,
            } = decoded;
            let text = self.text(&outcome.tokens)?;
            return Ok(Transcript {
                text,
                avg_logprob: outcome.avg_logprob() as f32,
                no_speech_prob,
                temperature,
                repetitive: search::looks_repetitive(&outcome),
                tokens: outcome.tokens,
                frames,
                language: language::bcp47(language).to_string(),
                language_probability,
                task: opts.task,
                mel: mel_time,
                encode,
                decode: decode + t3.elapsed(),
            });
        }
        unreachable!("the last window never falls back")
    }

    /// The encoder windows to try, in order, as (mel frames, whether a doubtful decode falls back
    /// to the next); the last is the full window.
    fn windows(&self, mel: &LogMel, opts: &DecodeOptions) -> Vec<(usize, bool)> {
        let full = self.encoder.max_frames();
        let mut windows = vec![];
        if let EncoderWindow::Fit { pad_ms, fallback } = opts.window {
            let pad = pad_ms as usize * crate::audio::SAMPLE_RATE / crate::audio::HOP_LENGTH / 1000;
            // Whole seconds (100 frames), so that a few window sizes recur.
            let frames = (mel.n_frames + pad).div_ceil(100) * 100;
            if frames < full {
                windows.push((frames, fallback));
            }
        }
        windows.push((full, false));
        windows
    }

    /// Decode encoded audio: beam search or greedy, then temperature fallback if asked for.
    /// `fixed` is the checked language token ([`Self::checked_language`]); without one a
    /// multilingual model detects the language first.
    fn decode(
        &self,
        audio: &Audio,
        opts: &DecodeOptions,
        fixed: Option<(&'static str, u32)>,
    ) -> Result<Decoded> {
        let (language, language_probability) = match fixed {
            Some(lang) => (Some(lang), None),
            None if self.tokens.languages.is_empty() => (None, None),
            None => {
                let best = self
                    .language_probabilities(audio)?
                    .into_iter()
                    .next()
                    .expect("a multilingual model has languages");
                let code = language::whisper_code(&best.language).expect("a Whisper language");
                let token = self
                    .tokens
                    .languages
                    .iter()
                    .find(|(c, _)| *c == code)
                    .copied()
                    .expect("a language of this model");
                (Some(token), Some(best.probability))
            }
        };
        let (mut initial, sot_index) =
            self.initial_tokens(opts.prompt.as_deref(), language.map(|l| l.1), opts.task)?;
        if let Some(prefix) = opts.prefix.as_deref().filter(|p| !p.trim().is_empty()) {
            let ids = self.text_tokens(prefix)?;
            initial.extend_from_slice(&ids[ids.len().saturating_sub(112)..]);
        }
        let mut cache = Cache::default();
        let hidden = self.decoder.forward(&initial, 1, audio, &mut cache)?;
        let no_speech_prob = match self.tokens.no_speech {
            Some(t) => search::probability(&self.decoder.row_logits(&hidden, sot_index)?, t),
            None => 0.0,
        };
        let first = self.decoder.row_logits(&hidden, initial.len() - 1)?;
        let search = self.search(opts, initial.len());
        let run = |temperature: f32, rng: &mut search::Rng| -> Result<Decoded> {
            let mut step = CachedStep {
                decoder: &self.decoder,
                audio,
                cache: cache.clone(),
                rows: 1,
            };
            let outcome = if temperature == 0.0 && opts.beam_size > 1 {
                search.beam(&mut step, first.clone(), opts.beam_size, opts.patience)?
            } else {
                search.sample(&mut step, first.clone(), temperature, rng)?
            };
            Ok(Decoded {
                outcome,
                temperature,
                no_speech_prob,
                language: language.map_or("en", |l| l.0),
                language_probability,
            })
        };
        let mut rng = search::Rng::new(opts.seed);
        let mut best = run(0.0, &mut rng)?;
        if best.needs_fallback(opts) {
            for &t in &opts.fallback_temperatures {
                let d = run(t, &mut rng)?;
                let done = !d.needs_fallback(opts);
                if done || d.better_than(&best) {
                    best = d;
                }
                if done {
                    break;
                }
            }
        }
        Ok(best)
    }

    /// Greedy decoding that reruns the whole token sequence at every step instead of using the
    /// key/value cache: slow, for checking the cached decoder against.
    pub fn transcribe_without_cache(&mut self, samples: &[f32]) -> Result<Vec<u32>> {
        let mel = self.checked_mel(samples)?;
        let audio = self.encode(
            &mel.padded(self.encoder.max_frames())
                .to_tensor(&self.device)?,
        )?;
        let (initial, _) =
            self.initial_tokens(None, self.language_token("en"), Task::Transcribe)?;
        let mut step = UncachedStep {
            decoder: &self.decoder,
            audio: &audio,
            tokens: initial,
        };
        let first = step.last_logits()?;
        let search = self.search(&DecodeOptions::default(), step.tokens.len());
        Ok(search
            .sample(&mut step, first, 0.0, &mut search::Rng::new(1))?
            .tokens)
    }

    /// The mel spectrogram of up to 30 s of audio.
    fn checked_mel(&self, samples: &[f32]) -> Result<LogMel> {
        let n_frames = self.encoder.max_frames();
        let mel = self.log_mel(samples);
        if mel.n_frames > n_frames {
            return Err(ModelError::TooLong {
                seconds: samples.len() as f64 / crate::audio::SAMPLE_RATE as f64,
                max_seconds: (n_frames * crate::audio::HOP_LENGTH / crate::audio::SAMPLE_RATE)
                    as f64,
            });
        }
        Ok(mel)
    }

    /// Encoder output and the decoder's cross-attention keys and values for it.
    fn encode(&self, mel: &Tensor) -> Result<Audio> {
        let enc = self.encoder.forward(mel)?;
        let audio = self.decoder.audio(&enc)?;
        // Make the lazy/asynchronous backends finish before the decoder is timed.
        enc.device().synchronize()?;
        Ok(audio)
    }

    /// Text tokens of ` text` (a leading space, as Whisper's transcripts start), special tokens
    /// left out.
    fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(format!(" {}", text.trim()), false)
            .map_err(|e| ModelError::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                reason: e.to_string(),
            })?;
        Ok(enc
            .get_ids()
            .iter()
            .copied()
            .filter(|&t| t < self.tokens.eot)
            .collect())
    }

    fn language_token(&self, code: &str) -> Option<u32> {
        self.tokens
            .languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, t)| *t)
    }

    /// `[<|startofprev|> prompt...] <|startoftranscript|> [<|xx|> <|transcribe|translate|>]
    /// <|notimestamps|>` and the index of `<|startoftranscript|>` in it. English-only models
    /// take neither a language nor a task token.
    fn initial_tokens(
        &self,
        prompt: Option<&str>,
        language: Option<u32>,
        task: Task,
    ) -> Result<(Vec<u32>, usize)> {
        let mut tokens = vec![];
        if let (Some(prompt), Some(prev)) = (prompt, self.tokens.start_of_prev) {
            if !prompt.trim().is_empty() {
                let ids = self.text_tokens(prompt)?;
                let keep = (self.decoder.max_positions() / 2).saturating_sub(1);
                tokens.push(prev);
                tokens.extend_from_slice(&ids[ids.len().saturating_sub(keep)..]);
            }
        }
        let sot_index = tokens.len();
        tokens.push(self.tokens.sot);
        if self.is_multilingual() {
            if let Some(lang) = language {
                tokens.push(lang);
            }
            tokens.push(match (task, self.tokens.translate) {
                (Task::Translate, Some(t)) => t,
                _ => self.tokens.transcribe,
            });
        }
        tokens.push(self.tokens.no_timestamps);
        Ok((tokens, sot_index))
    }

    fn search(&self, opts: &DecodeOptions, initial_len: usize) -> Search {
        // Every special token (they all follow end of text) and timestamp, and the configured list.
        let vocab = self.decoder.vocab_size() as u32;
        let mut always: Vec<u32> = (self.tokens.eot + 1..vocab).collect();
        always.extend(self.config.suppress_tokens.iter().copied());
        Search {
            eot: self.tokens.eot,
            suppress: Suppress {
                always,
                begin: self.suppress_begin.clone(),
            },
            max_tokens: opts
                .max_tokens
                .min(self.decoder.max_positions().saturating_sub(initial_len)),
            repetition_guard: opts.repetition_guard,
        }
    }

    fn text(&self, tokens: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(tokens, true)
            .map(|s| s.trim().to_string())
            .map_err(|e| ModelError::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                reason: e.to_string(),
            })
    }
}

/// One decode of one encoded window.
struct Decoded {
    outcome: Outcome,
    temperature: f32,
    no_speech_prob: f32,
    /// Whisper code of the language the text was decoded in.
    language: &'static str,
    language_probability: Option<f32>,
}

impl Decoded {
    /// Looks like a loop or is improbable, and does not look like silence (where the caller drops
    /// the text anyway).
    fn needs_fallback(&self, opts: &DecodeOptions) -> bool {
        (search::looks_repetitive(&self.outcome)
            || (self.outcome.avg_logprob() as f32) < opts.logprob_threshold)
            && self.no_speech_prob <= opts.no_speech_threshold
    }

    /// Improbable or looping even after the repetition guard, and not silence: worth another
    /// look over the full window. (A loop the guard cut cleanly is common with a short window,
    /// where the model repeats the sentence it has just transcribed; the cut text is usually right.)
    fn doubtful(&self, opts: &DecodeOptions) -> bool {
        let o = &self.outcome;
        ((o.avg_logprob() as f32) < opts.logprob_threshold
            || (o.tokens.len() >= 24 && search::diversity(&o.tokens) < 0.3))
            && self.no_speech_prob <= opts.no_speech_threshold
    }

    fn better_than(&self, other: &Decoded) -> bool {
        match (
            search::looks_repetitive(&self.outcome),
            search::looks_repetitive(&other.outcome),
        ) {
            (false, true) => true,
            (true, false) => false,
            _ => self.outcome.avg_logprob() > other.outcome.avg_logprob(),
        }
    }
}

/// Whether `text` is one phrase said two to four times over (case and punctuation aside):
/// "Thank you. Thank you." Over a window cut short, Whisper tends to transcribe short speech and
/// then start it again, a loop too short for the repetition guard; the full window reads it once.
fn says_it_twice(text: &str) -> bool {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    (2..=4).any(|k| {
        let n = words.len();
        n >= k && n % k == 0 && {
            let part = &words[..n / k];
            words.chunks(n / k).all(|c| c == part)
        }
    })
}

/// Decoding with the key/value cache; the cache rows follow the surviving hypotheses.
struct CachedStep<'a> {
    decoder: &'a Decoder,
    audio: &'a Audio,
    cache: Cache,
    rows: usize,
}

impl Step for CachedStep<'_> {
    fn step(&mut self, parents: &[u32], tokens: &[u32]) -> candle_core::Result<Vec<Vec<f32>>> {
        let same_rows =
            parents.len() == self.rows && parents.iter().enumerate().all(|(i, &p)| p as usize == i);
        if !same_rows {
            self.cache.select(parents)?;
        }
        self.rows = parents.len();
        let hidden = self
            .decoder
            .forward(tokens, tokens.len(), self.audio, &mut self.cache)?;
        self.decoder.all_logits(&hidden)
    }
}

/// Decoding of a single hypothesis without a cache: the whole sequence at every step.
struct UncachedStep<'a> {
    decoder: &'a Decoder,
    audio: &'a Audio,
    tokens: Vec<u32>,
}

impl UncachedStep<'_> {
    fn last_logits(&self) -> candle_core::Result<Vec<f32>> {
        let mut cache = Cache::default();
        let hidden = self
            .decoder
            .forward(&self.tokens, 1, self.audio, &mut cache)?;
        self.decoder.row_logits(&hidden, self.tokens.len() - 1)
    }
}

impl Step for UncachedStep<'_> {
    fn step(&mut self, parents: &[u32], tokens: &[u32]) -> candle_core::Result<Vec<Vec<f32>>> {
        if parents != [0] || tokens.len() != 1 {
            candle_core::bail!("the uncached decoder follows a single hypothesis");
        }
        self.tokens.push(tokens[0]);
        Ok(vec![self.last_logits()?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_said_again_is_noticed() {
        assert!(says_it_twice("Thank you. Thank you."));
        assert!(says_it_twice("out on the railway. Out on the railway."));
        assert!(says_it_twice("Yes. Yes! Yes?"));
        assert!(!says_it_twice("Thank you."));
        assert!(!says_it_twice("Thank you. Thank them."));
        assert!(!says_it_twice(""));
        assert!(!says_it_twice("no, no, no, I said no"));
    }

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

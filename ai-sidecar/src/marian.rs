//! Machine translation with Marian models (Helsinki-NLP's opus-mt and their like) through
//! `candle_transformers::models::marian`, from a local Hugging Face-format directory. The
//! sidecar serves any language pair an operator has weights for; nothing is downloaded.
//!
//! ```no_run
//! use moqcast_sidecar::marian::MarianTranslator;
//! # fn main() -> Result<(), moqcast_sidecar::marian::MarianError> {
//! let mt = MarianTranslator::load("/models/opus-mt-en-es", &candle_core::Device::Cpu)?;
//! let es = mt.translate("Good evening and welcome to the late news.")?;
//! # Ok(()) }
//! ```
//!
//! # The directory
//!
//! - `config.json`: the Hugging Face `MarianConfig` (`d_model`, `encoder_layers`, `vocab_size`,
//!   `pad_token_id`, `eos_token_id`, `decoder_start_token_id`, `activation_function`, ...).
//!   Post-norm models with static sinusoidal positions and embeddings shared by the encoder,
//!   decoder and output (every opus-mt model) are supported; others are refused at load.
//! - `model.safetensors` (or any `*.safetensors`): Hugging Face names (`model.shared.weight`,
//!   `model.encoder.layers.N.*`, `final_logits_bias`). Helsinki-NLP repositories that carry only
//!   `pytorch_model.bin` need a one-time conversion (for example
//!   `transformers.MarianMTModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`).
//! - A tokenizer, either of:
//!   - **SentencePiece** (what opus-mt directories ship): `source.spm` and `vocab.json`, with
//!     `target_vocab.json` for models with separate vocabularies. Read in pure Rust
//!     ([`sentencepiece`]): no C++ `sentencepiece` build, no network.
//!   - **`tokenizer.json`** (a `tokenizers` file whose ids are the model's, as candle's
//!     marian-mt example converts them): used when there is no `source.spm`. Output ids decode
//!     through `target_vocab.json` or `vocab.json` when present, else through its own vocabulary.
//!
//! Multi-target models (opus-mt-en-ROMANCE and the like) want the target language as a token
//! such as `>>es<<` at the start of the text; [`MarianTranslator::language_tokens`] lists them and
//! [`MarianTranslator::translate`] passes a leading one through as that token.
//!
//! Decoding is greedy with the decoder's key/value cache; the pad token is never produced, and
//! output stops at the end-of-sentence token or after [`MarianTranslator::max_tokens`].

pub mod sentencepiece;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::marian;
use tokenizers::Tokenizer;

use sentencepiece::{SpmError, SpmModel};

/// Why a Marian directory could not be loaded or a text translated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarianError {
    #[error("Marian model directory {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("Marian model directory {dir} has no {what} (expected config.json, *.safetensors, and source.spm + vocab.json or tokenizer.json)")]
    Missing { dir: PathBuf, what: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid Marian config or vocabulary: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path} is not a usable SentencePiece model: {source}")]
    SentencePiece {
        path: PathBuf,
        #[source]
        source: SpmError,
    },
    #[error("{path} is not a valid tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("the vocabulary has no {0:?} token")]
    MissingToken(String),
    #[error("model weights do not fit the config: {0}")]
    Weights(#[source] candle_core::Error),
    #[error("the text is {tokens} tokens long; the model takes at most {max}")]
    TooLong { tokens: usize, max: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = MarianError> = std::result::Result<T, E>;

/// `config.json` as Hugging Face writes it for Marian models; fields missing from older files
/// take `MarianConfig`'s defaults.
#[derive(Debug, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    #[serde(default)]
    decoder_vocab_size: Option<usize>,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    encoder_layers: usize,
    encoder_ffn_dim: usize,
    encoder_attention_heads: usize,
    decoder_layers: usize,
    decoder_ffn_dim: usize,
    decoder_attention_heads: usize,
    #[serde(default = "default_activation")]
    activation_function: candle_nn::Activation,
    d_model: usize,
    #[serde(default)]
    decoder_start_token_id: Option<u32>,
    #[serde(default = "yes")]
    scale_embedding: bool,
    pad_token_id: u32,
    eos_token_id: u32,
    #[serde(default)]
    forced_eos_token_id: Option<u32>,
    #[serde(default = "yes")]
    share_encoder_decoder_embeddings: bool,
    #[serde(default)]
    normalize_before: bool,
    #[serde(default = "yes")]
    static_position_embeddings: bool,
}

fn default_positions() -> usize {
    512
}

fn default_activation() -> candle_nn::Activation {
    candle_nn::Activation::Swish
}

fn yes() -> bool {
    true
}

/// Source text to token ids.
enum SourceTokenizer {
    /// SentencePiece pieces, mapped to ids through `vocab.json`.
    SentencePiece {
        tokenizer: Tokenizer,
        vocab: HashMap<String, u32>,
    },
    /// A `tokenizers` file whose ids are the model's.
    Json(Tokenizer),
}

/// A loaded Marian model (see the module documentation). `translate` takes `&self`: each call
/// runs on its own copy of the model's state (the weights are shared), so one translator can
/// serve several threads.
pub struct MarianTranslator {
    model: marian::MTModel,
    source: SourceTokenizer,
    /// Target id to piece.
    target_pieces: Vec<Option<String>>,
    /// Ids never shown in the output: end of sentence, padding, unknown.
    hidden: Vec<u32>,
    eos: u32,
    pad: u32,
    unk: u32,
    start: u32,
    source_vocab_size: usize,
    target_vocab_size: usize,
    max_positions: usize,
    max_tokens: Option<usize>,
    languages: Vec<String>,
    device: Device,
    dir: PathBuf,
}

// Translators are shared with, or moved into, worker threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MarianTranslator>();
};

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| MarianError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|source| MarianError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| MarianError::Io {
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

/// Id to piece, from a `vocab.json` (piece to id).
fn pieces_of(vocab: &HashMap<String, u32>) -> Vec<Option<String>> {
    let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    let mut pieces = vec![None; n];
    for (piece, &id) in vocab {
        pieces[id as usize] = Some(piece.clone());
    }
    pieces
}

fn is_language_token(piece: &str) -> bool {
    piece.len() > 4 && piece.starts_with(">>") && piece.ends_with("<<")
}

impl MarianTranslator {
    /// Loads a model directory (see the module documentation) onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(MarianError::NotADirectory(dir.to_path_buf()));
        }
        let missing = |what: &str| MarianError::Missing {
            dir: dir.to_path_buf(),
            what: what.to_string(),
        };
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(missing("config.json"));
        }
        let cfg: ConfigFile = json(&config_path)?;
        let unsupported = |what: String| MarianError::Unsupported {
            path: config_path.clone(),
            what,
        };
        if let Some(t) = cfg.model_type.as_deref().filter(|t| *t != "marian") {
            return Err(unsupported(format!(
                "model_type {t:?} is not a Marian model"
            )));
        }
        if cfg.normalize_before {
            return Err(unsupported(
                "pre-norm models (normalize_before) are not supported by candle's Marian".into(),
            ));
        }
        if !cfg.static_position_embeddings {
            return Err(unsupported(
                "learned position embeddings are not supported by candle's Marian".into(),
            ));
        }
        let target_vocab_size = cfg.decoder_vocab_size.unwrap_or(cfg.vocab_size);
        if !cfg.share_encoder_decoder_embeddings || target_vocab_size != cfg.vocab_size {
            return Err(unsupported(
                "separate source and target embeddings are not supported by candle's Marian".into(),
            ));
        }
        if cfg.d_model % cfg.encoder_attention_heads != 0
            || cfg.d_model % cfg.decoder_attention_heads != 0
        {
            return Err(unsupported(
                "d_model is not a multiple of the attention heads".into(),
            ));
        }
        let config = marian::Config {
            vocab_size: cfg.vocab_size,
            decoder_vocab_size: Some(target_vocab_size),
            max_position_embeddings: cfg.max_position_embeddings,
            encoder_layers: cfg.encoder_layers,
            encoder_ffn_dim: cfg.encoder_ffn_dim,
            encoder_attention_heads: cfg.encoder_attention_heads,
            decoder_layers: cfg.decoder_layers,
            decoder_ffn_dim: cfg.decoder_ffn_dim,
            decoder_attention_heads: cfg.decoder_attention_heads,
            use_cache: true,
            is_encoder_decoder: true,
            activation_function: cfg.activation_function,
            d_model: cfg.d_model,
            decoder_start_token_id: cfg.decoder_start_token_id.unwrap_or(cfg.pad_token_id),
            scale_embedding: cfg.scale_embedding,
            pad_token_id: cfg.pad_token_id,
            eos_token_id: cfg.eos_token_id,
            forced_eos_token_id: cfg.forced_eos_token_id.unwrap_or(cfg.eos_token_id),
            share_encoder_decoder_embeddings: true,
        };

        // The tokenizer first: it is cheap and its errors are the likeliest.
        let spm_path = dir.join("source.spm");
        let vocab_path = dir.join("vocab.json");
        let target_vocab_path = dir.join("target_vocab.json");
        let tokenizer_path = dir.join("tokenizer.json");
        let (source, source_vocab) = if spm_path.is_file() {
            if !vocab_path.is_file() {
                return Err(missing("vocab.json (source.spm's pieces to model ids)"));
            }
            let spm = SpmModel::parse(&read(&spm_path)?)
                .and_then(|m| m.tokenizer())
                .map_err(|source| MarianError::SentencePiece {
                    path: spm_path.clone(),
                    source,
                })?;
            let vocab: HashMap<String, u32> = json(&vocab_path)?;
            (
                SourceTokenizer::SentencePiece {
                    tokenizer: spm,
                    vocab: vocab.clone(),
                },
                vocab,
            )
        } else if tokenizer_path.is_file() {
            let t = Tokenizer::from_file(&tokenizer_path).map_err(|e| MarianError::Tokenizer {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
            let vocab: HashMap<String, u32> = t.get_vocab(true).into_iter().collect();
            (SourceTokenizer::Json(t), vocab)
        } else {
            return Err(missing("source.spm + vocab.json or tokenizer.json"));
        };
        let target_vocab: HashMap<String, u32> = if target_vocab_path.is_file() {
            json(&target_vocab_path)?
        } else if vocab_path.is_file() {
            json(&vocab_path)?
        } else {
            source_vocab.clone()
        };
        let check_ids = |vocab: &HashMap<String, u32>, path: &Path, size: usize| match vocab
            .values()
            .find(|&&id| id as usize >= size)
        {
            Some(id) => Err(MarianError::Unsupported {
                path: path.to_path_buf(),
                what: format!("token id {id} is past the model's vocabulary of {size}"),
            }),
            None => Ok(()),
        };
        let vocab_file = if vocab_path.is_file() {
            &vocab_path
        } else {
            &tokenizer_path
        };
        check_ids(&source_vocab, vocab_file, cfg.vocab_size)?;
        check_ids(&target_vocab, vocab_file, target_vocab_size)?;
        let unk = *source_vocab
            .get("<unk>")
            .ok_or_else(|| MarianError::MissingToken("<unk>".into()))?;
        let target_pieces = pieces_of(&target_vocab);
        let mut languages: Vec<String> = source_vocab
            .keys()
            .filter(|p| is_language_token(p))
            .cloned()
            .collect();
        languages.sort();

        let files = safetensors_files(dir)?;
        if files.is_empty() {
            return Err(missing("*.safetensors (model.safetensors)"));
        }
        // SAFETY: the files are memory-mapped read-only; modifying them while loaded is UB, as
        // with every mmap-based loader.
        let vb =
            unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
                .map_err(MarianError::Weights)?;
        let model = marian::MTModel::new(&config, vb).map_err(MarianError::Weights)?;
        Ok(Self {
            model,
            source,
            target_pieces,
            hidden: vec![config.eos_token_id, config.pad_token_id, unk],
            eos: config.eos_token_id,
            pad: config.pad_token_id,
            unk,
            start: config.decoder_start_token_id,
            source_vocab_size: cfg.vocab_size,
            target_vocab_size,
            max_positions: cfg.max_position_embeddings,
            max_tokens: None,
            languages,
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// The directory the model came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Target-language tokens of a multi-target model (`>>es<<`, ...); empty for one-pair
    /// models.
    pub fn language_tokens(&self) -> &[String] {
        &self.languages
    }

    /// Most tokens a translation may have. Default: twice the source's plus 16, within the
    /// model's positions.
    pub fn max_tokens(&self, source_tokens: usize) -> usize {
        self.max_tokens
            .unwrap_or(2 * source_tokens + 16)
            .min(self.max_positions.saturating_sub(1))
            .max(1)
    }

    /// Sets a fixed [`Self::max_tokens`] (`None`: the default).
    pub fn set_max_tokens(&mut self, max: Option<usize>) {
        self.max_tokens = max;
    }

    /// The model's input for `text`: its pieces' ids and the end-of-sentence id. A leading
    /// `>>xx<<` is kept as one token.
    pub fn encode_source(&self, text: &str) -> Result<Vec<u32>> {
        let text = text.trim();
        let (code, rest) = match text.find("<<") {
            Some(end) if text.starts_with(">>") && is_language_token(&text[..end + 2]) => {
                (Some(&text[..end + 2]), &text[end + 2..])
            }
            _ => (None, text),
        };
        let tokenize_err = |reason: String| MarianError::Tokenizer {
            path: self.dir.join("tokenizer"),
            reason,
        };
        let mut ids = vec![];
        let (tokenizer, vocab) = match &self.source {
            SourceTokenizer::SentencePiece { tokenizer, vocab } => (tokenizer, Some(vocab)),
            SourceTokenizer::Json(t) => (t, None),
        };
        if let Some(code) = code {
            let id = match vocab {
                Some(v) => v.get(code).copied(),
                None => tokenizer.token_to_id(code),
            };
            ids.push(id.ok_or_else(|| MarianError::MissingToken(code.to_string()))?);
        }
        if !rest.trim().is_empty() {
            let enc = tokenizer
                .encode(rest.trim(), false)
                .map_err(|e| tokenize_err(e.to_string()))?;
            match vocab {
                Some(vocab) => ids.extend(
                    enc.get_tokens()
                        .iter()
                        .map(|t| vocab.get(t).copied().unwrap_or(self.unk)),
                ),
                None => ids.extend_from_slice(enc.get_ids()),
            }
        }
        ids.push(self.eos);
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.source_vocab_size)
        {
            return Err(tokenize_err(format!(
                "token id {bad} is past the model's vocabulary"
            )));
        }
        if ids.len() > self.max_positions {
            return Err(MarianError::TooLong {
                tokens: ids.len(),
                max: self.max_positions,
            });
        }
        Ok(ids)
    }

    /// Greedy decoding of source ids (from [`Self::encode_source`]): the output ids, without
    /// the start token, ending with end of sentence unless [`Self::max_tokens`] cut it.
    pub fn translate_ids(&self, source: &[u32]) -> Result<Vec<u32>> {
        // Each call works on its own copy: the key/value caches live in the model's layers.
        let mut model = self.model.clone();
        model.reset_kv_cache();
        let input = Tensor::new(source, &self.device)?.unsqueeze(0)?;
        let encoded = model.encoder().forward(&input, 0)?;
        let max = self.max_tokens(source.len());
        let mut out = vec![self.start];
        for step in 0..max {
            let from = if step == 0 { 0 } else { out.len() - 1 };
            let ids = Tensor::new(&out[from..], &self.device)?.unsqueeze(0)?;
            let logits = model.decode(&ids, &encoded, from)?.squeeze(0)?;
            let last = logits.get(logits.dim(0)? - 1)?;
            let mut logits = last.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            // Hugging Face's generation config bans the pad token (it is also the start token).
            if let Some(l) = logits.get_mut(self.pad as usize) {
                *l = f32::NEG_INFINITY;
            }
            let next = logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 {
                        (i, l)
                    } else {
                        best
                    }
                })
                .0 as u32;
            out.push(next);
            if next == self.eos {
                break;
            }
        }
        out.remove(0);
        Ok(out)
    }

    /// Text of output ids: pieces joined, `▁` as spaces; end of sentence, padding, unknown and
    /// `>>xx<<` language tokens left out.
    pub fn decode_target(&self, ids: &[u32]) -> String {
        let text: String = ids
            .iter()
            .filter(|id| !self.hidden.contains(id))
            .filter_map(|&id| {
                self.target_pieces
                    .get(id as usize)
                    .and_then(|p| p.as_deref())
            })
            .filter(|p| !is_language_token(p))
            .collect();
        text.replace('▁', " ").trim().to_string()
    }

    /// Translates one text (a sentence or a caption; at most the model's positions in tokens).
    /// Empty or blank text translates to an empty string without running the model.
    pub fn translate(&self, text: &str) -> Result<String> {
        if text.trim().is_empty() {
            return Ok(String::new());
        }
        let ids = self.encode_source(text)?;
        Ok(self.decode_target(&self.translate_ids(&ids)?))
    }

    /// Size of the target vocabulary (the logits' width).
    pub fn target_vocab_size(&self) -> usize {
        self.target_vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_and_files_are_named() {
        let err = MarianTranslator::load("/nonexistent/opus-mt", &Device::Cpu)
            .err()
            .unwrap();
        assert!(matches!(err, MarianError::NotADirectory(_)), "{err}");
        let dir = std::env::temp_dir().join(format!("moqcast-marian-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = MarianTranslator::load(&dir, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::write(dir.join("config.json"), "{\"vocab_size\": 4}").unwrap();
        let err = MarianTranslator::load(&dir, &Device::Cpu).err().unwrap();
        assert!(matches!(err, MarianError::Json { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

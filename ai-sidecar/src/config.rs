//! `moqcast-sidecar`'s configuration: one struct that is both the command line (clap, with
//! environment variables) and the TOML file (`--config`, serde), so every setting has one name.
//!
//! Precedence: a flag or environment variable, then the file, then the default shown by
//! `--help`. The file may also hold `[providers.NAME]` tables ([`ProviderConfig`]), which have
//! no flags. Unknown keys are errors.
//!
//! ```toml
//! broadcast = ["demo"]
//! translate = ["es", "fr"]
//! recognize_chain = ["whisper", "remote-whisper"]
//! translate_chain = ["apertium", "openai-chat"]
//!
//! [providers.remote-whisper]
//! kind = "openai-transcribe"
//! url = "http://10.0.0.5:8000/v1"
//!
//! [providers.openai-chat]
//! model = "gpt-4o-mini"
//! api_key_env = "OPENAI_API_KEY"
//! budget_ms = 2000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::providers::ProviderConfig;

/// See the module documentation.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(
    name = "moqcast-sidecar",
    version,
    about = "Live Whisper captions, and their translations, for MoQ broadcasts, published back as WebVTT caption tracks"
)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// TOML file with any of these settings (the names below in snake_case, for example
    /// `translate_chain = ["apertium", "openai-chat"]`) and `[providers.NAME]` tables. Flags and
    /// environment variables take precedence over it.
    #[arg(long, env = "MOQCAST_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Relay URL: `https://host:port/` (WebTransport) or `moqt://host:port` (raw QUIC).
    #[arg(long, env = "MOQCAST_URL", default_value = "https://localhost:4443/")]
    pub url: Url,
    /// A broadcast to caption (repeat, or comma-separate, for several).
    #[arg(long, env = "MOQCAST_BROADCAST", value_delimiter = ',')]
    pub broadcast: Vec<String>,
    /// Caption every broadcast announced under this prefix (SUBSCRIBE_NAMESPACE); `""` for all.
    #[arg(long, env = "MOQCAST_PREFIX")]
    pub prefix: Option<String>,
    /// Whisper model: a local directory (HF safetensors, or faster-whisper/CTranslate2), or a
    /// Hugging Face hub id found in the local hub cache. Default: the model that
    /// scripts/fetch-model.sh installs (Whisper tiny.en).
    #[arg(long, env = "MOQCAST_WHISPER_MODEL")]
    pub model: Option<String>,
    /// Fetch a hub id that is not in the local cache (needs network access to the hub).
    #[arg(long, env = "MOQCAST_ALLOW_DOWNLOAD")]
    pub allow_download: bool,
    /// Language of the speech and of the source captions (BCP 47; English-only models need `en`).
    #[arg(long, env = "MOQCAST_LANGUAGE", default_value = "en")]
    pub language: String,
    /// Target languages of translated caption tracks (`captions-<lang>`), comma-separated.
    #[arg(long, env = "MOQCAST_TRANSLATE", value_delimiter = ',')]
    pub translate: Vec<String>,
    /// Speech recognition providers, in order: each request goes to the first healthy one and
    /// falls over to the next on an error, a timeout or a latency-budget overrun.
    #[arg(
        long,
        env = "MOQCAST_RECOGNIZE_CHAIN",
        value_delimiter = ',',
        default_value = "whisper"
    )]
    pub recognize_chain: Vec<String>,
    /// Translation providers, in order (those that lack a language pair are left out of that
    /// pair's chain).
    #[arg(
        long,
        env = "MOQCAST_TRANSLATE_CHAIN",
        value_delimiter = ',',
        default_value = "apertium"
    )]
    pub translate_chain: Vec<String>,
    /// Dubbed audio tracks (`audio-<lang>`, Opus) spoken from the translated captions of these
    /// languages, comma-separated; each must also be in `--translate`.
    #[arg(long, env = "MOQCAST_DUB", value_delimiter = ',')]
    pub dub: Vec<String>,
    /// Speech synthesis providers for the dubs, in order (those that lack a language are left
    /// out of that language's chain).
    #[arg(
        long,
        env = "MOQCAST_SYNTHESIZE_CHAIN",
        value_delimiter = ',',
        default_value = "pico,espeak-ng"
    )]
    pub synthesize_chain: Vec<String>,
    /// Directory of Piper voices (`NAME.onnx` + `NAME.onnx.json`) for the `piper` synthesis
    /// provider; the voice for a dub is the one whose `language.code` matches. Default:
    /// `~/.cache/moqcast/piper-voices`, where scripts/setup.sh installs the English voice.
    #[arg(long, env = "MOQCAST_PIPER_VOICES")]
    pub piper_voices: Option<PathBuf>,
    /// ONNX Runtime's shared library, which the `piper` provider loads at run time. Default:
    /// `~/.cache/moqcast/onnxruntime/libonnxruntime.so` (scripts/setup.sh, from the PyPI
    /// `onnxruntime` wheel).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,
    /// Mix the original audio under the dubbed voice at this level, dB (for example -18); off
    /// by default.
    #[arg(long, env = "MOQCAST_DUB_ORIGINAL_DB", allow_hyphen_values = true)]
    pub dub_original_db: Option<f32>,
    /// How far the dub runs behind the source audio, ms: a cue's speech must be synthesized by
    /// then to start at the cue's start (later ones start late, counted). Viewers delay their
    /// playout by this much to keep the voice in step with the picture.
    #[arg(long, env = "MOQCAST_DUB_DELAY_MS", default_value_t = 8_000)]
    pub dub_delay_ms: u64,
    /// Cues waiting for synthesis per dub; past it the oldest is skipped (counted).
    #[arg(long, env = "MOQCAST_DUB_QUEUE", default_value_t = 4)]
    pub dub_queue: usize,
    /// Final cues waiting for translation per broadcast and language; past it the oldest is
    /// skipped (counted), never the source captions delayed.
    #[arg(long, env = "MOQCAST_TRANSLATE_QUEUE", default_value_t = 8)]
    pub translate_queue: usize,
    /// A cue that waited longer than this for translation is skipped (counted), ms.
    #[arg(long, env = "MOQCAST_TRANSLATE_MAX_WAIT_MS", default_value_t = 10_000)]
    pub translate_max_wait_ms: u64,
    /// Beam size for final cues (1 = greedy). Partial cues are always greedy. Beam 5 (the
    /// default, as in faster-whisper and OpenAI's whisper) cut the word error rate from 18% to 13%
    /// on the caption benchmark for about 50% more CPU per final (docs/BENCHMARKS.md).
    #[arg(long, env = "MOQCAST_BEAM_SIZE", default_value_t = 5)]
    pub beam_size: usize,
    /// Audio of a broadcast's previous final utterances (whole utterances, up to this much, ms)
    /// that the local Whisper hears before each final one, with their text as the decode's
    /// prefix: it then decodes the new speech in context, as it would inside a recording. 0:
    /// each utterance alone. Costs encoder time (the window grows with the context); see
    /// docs/BENCHMARKS.md ("Captions: long recordings").
    #[arg(long, env = "MOQCAST_AUDIO_CONTEXT_MS", default_value_t = crate::transcriber::DEFAULT_AUDIO_CONTEXT_MS)]
    pub audio_context_ms: u64,
    /// Inference threads (default: all cores).
    #[arg(long, env = "MOQCAST_THREADS")]
    pub threads: Option<usize>,
    /// `cpu`, or `cuda` (build with `--features cuda`).
    #[arg(long, env = "MOQCAST_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Address of the HTTP endpoint serving /metrics, /status and /healthz.
    #[arg(long, env = "MOQCAST_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: SocketAddr,
    /// How often a partial cue is produced while someone speaks, ms.
    #[arg(long, env = "MOQCAST_PARTIAL_EVERY_MS", default_value_t = 1000)]
    pub partial_every_ms: u64,
    /// The pause that ends an utterance, ms.
    #[arg(long, env = "MOQCAST_PAUSE_MS", default_value_t = 500)]
    pub pause_ms: u64,
    /// Audio kept before the first voiced frame of an utterance, ms (the voice detector hears a
    /// word's soft start late).
    #[arg(long, env = "MOQCAST_PRE_ROLL_MS", default_value_t = crate::segment::DEFAULT_PRE_ROLL_MS)]
    pub pre_roll_ms: u64,
    /// Longest utterance before it is cut, ms (at most 29000).
    #[arg(long, env = "MOQCAST_MAX_UTTERANCE_MS", default_value_t = 15_000)]
    pub max_utterance_ms: u64,
    /// Speech waiting for recognition per broadcast before utterances are merged or skipped, ms.
    #[arg(long, env = "MOQCAST_MAX_BACKLOG_MS", default_value_t = 20_000)]
    pub max_backlog_ms: u64,
    /// Accept any relay certificate (development only).
    #[arg(long, env = "MOQCAST_TLS_DISABLE_VERIFY")]
    pub tls_disable_verify: bool,
    /// Accept only the relay certificate with this SHA-256 fingerprint (hex, as served by the
    /// relay at /certificate.sha256).
    #[arg(long, env = "MOQCAST_TLS_FINGERPRINT")]
    pub tls_fingerprint: Vec<String>,
    /// Token (JWT) for a relay with auth on; it must allow subscribing to the broadcasts and
    /// publishing `<broadcast>/ai`. `moqcast-token sign` mints one.
    #[arg(long, env = "MOQCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Provider settings, from the file only (`[providers.NAME]`).
    #[arg(skip)]
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The configuration from the process's command line, environment and `--config` file.
    /// Prints help or a usage error and exits, as clap does, when the command line asks.
    pub fn load() -> Result<Self, ConfigError> {
        let matches = Self::command().get_matches();
        Self::from_matches(&matches)
    }

    /// The configuration from `args` (the first is the program name), the environment and the
    /// file `--config` names.
    pub fn parse_from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command()
            .try_get_matches_from(args)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Self::from_matches(&matches)
    }

    fn from_matches(matches: &clap::ArgMatches) -> Result<Self, ConfigError> {
        let cli =
            Self::from_arg_matches(matches).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let Some(path) = cli.config.clone() else {
            cli.validate()?;
            return Ok(cli);
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let parse = |reason: String| ConfigError::Parse {
            path: shown.clone(),
            reason,
        };
        let file: toml::Table = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let mut merged = serde_json::to_value(&cli).map_err(|e| parse(e.to_string()))?;
        let ids: Vec<String> = Self::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for (key, value) in file {
            let from_command_line = ids.contains(&key)
                && matches!(
                    matches.value_source(&key),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
            if key == "config" {
                return Err(parse("`config` cannot name another file".into()));
            }
            if !from_command_line {
                let value = serde_json::to_value(value).map_err(|e| parse(e.to_string()))?;
                merged[key] = value;
            }
        }
        // Names the field at fault: `providers.llm.budget_ms: invalid type ...`.
        let mut config: Config =
            serde_path_to_error::deserialize(merged).map_err(|e| parse(e.to_string()))?;
        config.config = Some(path);
        config.validate()?;
        Ok(config)
    }

    /// Checks what does not depend on the machine (models and engines are checked at start).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        if self.broadcast.is_empty() && self.prefix.is_none() {
            return invalid(
                "nothing to caption: pass --broadcast NAME (repeatable) or --prefix PREFIX".into(),
            );
        }
        if self.max_utterance_ms > crate::recognize::MAX_JOB_MS {
            return invalid(format!(
                "--max-utterance-ms must be at most {}",
                crate::recognize::MAX_JOB_MS
            ));
        }
        if self.audio_context_ms > crate::recognize::MAX_JOB_MS {
            return invalid(format!(
                "--audio-context-ms must be at most {} (Whisper hears 30 s at once)",
                crate::recognize::MAX_JOB_MS
            ));
        }
        if self.beam_size == 0 {
            return invalid("--beam-size must be at least 1".into());
        }
        if self.translate_queue == 0 {
            return invalid("--translate-queue must be at least 1".into());
        }
        let source = crate::lang::primary(&self.language);
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.translate {
            let p = crate::lang::primary(t);
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return invalid(format!(
                    "--translate {t:?}: expected BCP 47 tags such as es,fr"
                ));
            }
            if p == source {
                return invalid(format!(
                    "--translate {t}: the speech is already in {} (--language {})",
                    crate::lang::english_name(t),
                    self.language
                ));
            }
            if !seen.insert(t.to_ascii_lowercase()) {
                return invalid(format!("--translate names {t} twice"));
            }
        }
        for d in &self.dub {
            if !self.translate.iter().any(|t| t.eq_ignore_ascii_case(d)) {
                return invalid(format!(
                    "--dub {d}: the dub speaks the translated captions: add {d} to --translate"
                ));
            }
        }
        if self.dub.len()
            != self
                .dub
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        {
            return invalid("--dub names a language twice".into());
        }
        if self.dub_queue == 0 {
            return invalid("--dub-queue must be at least 1".into());
        }
        if let Some(db) = self.dub_original_db {
            if !(-120.0..=0.0).contains(&db) {
                return invalid(format!(
                    "--dub-original-db {db}: expected a level from -120 to 0 dB"
                ));
            }
        }
        Ok(())
    }

    /// How to trust the relay's certificate.
    pub fn client_tls(&self) -> Result<moqcast_client::ClientTls, ConfigError> {
        let mut tls = moqcast_client::ClientTls {
            disable_verify: self.tls_disable_verify,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        };
        for fp in &self.tls_fingerprint {
            tls.pin_hex(fp)
                .map_err(|e| ConfigError::Invalid(format!("--tls-fingerprint {fp}: {e}")))?;
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("moqcast-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_file_fills_in_and_flags_win() {
        let path = write(
            "merge",
            r#"
            broadcast = ["demo"]
            translate = ["es", "fr"]
            translate_chain = ["apertium", "llm"]
            beam_size = 2
            [providers.llm]
            kind = "openai-chat"
            url = "http://127.0.0.1:8000/v1"
            budget_ms = 1500
            "#,
        );
        let c = Config::parse_from_args([
            "moqcast-sidecar",
            "--config",
            path.to_str().unwrap(),
            "--beam-size",
            "3",
        ])
        .unwrap();
        assert_eq!(c.broadcast, vec!["demo"]);
        assert_eq!(c.translate, vec!["es", "fr"]);
        assert_eq!(c.translate_chain, vec!["apertium", "llm"]);
        assert_eq!(c.recognize_chain, vec!["whisper"], "the default");
        assert_eq!(c.beam_size, 3, "the flag wins");
        assert_eq!(c.providers["llm"].budget_ms, Some(1500));
        assert_eq!(c.providers["llm"].kind.as_deref(), Some("openai-chat"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn piper_settings_from_the_file_and_flags() {
        let path = write(
            "piper",
            r#"
            broadcast = ["demo"]
            synthesize_chain = ["joe", "espeak-ng"]
            piper_voices = "/srv/voices"
            ort_dylib_path = "/opt/ort/libonnxruntime.so"
            [providers.joe]
            kind = "piper"
            voice = "en_US-joe-medium"
            threads = 2
            "#,
        );
        let c = Config::parse_from_args(["s", "--config", path.to_str().unwrap()]).unwrap();
        // (An environment variable would win over the file.)
        if std::env::var_os("MOQCAST_PIPER_VOICES").is_none() {
            assert_eq!(c.piper_voices, Some(PathBuf::from("/srv/voices")));
        }
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            assert_eq!(
                c.ort_dylib_path,
                Some(PathBuf::from("/opt/ort/libonnxruntime.so"))
            );
        }
        assert_eq!(c.providers["joe"].threads, Some(2));
        let c = Config::parse_from_args([
            "s",
            "--config",
            path.to_str().unwrap(),
            "--piper-voices",
            "/tmp/v",
        ])
        .unwrap();
        assert_eq!(
            c.piper_voices,
            Some(PathBuf::from("/tmp/v")),
            "the flag wins"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let path = write(
            "typo",
            "broadcast = [\"x\"]\ntranslate_chian = [\"apertium\"]\n",
        );
        let e = Config::parse_from_args(["s", "--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("translate_chian"), "{e}");
        std::fs::remove_file(path).unwrap();
        let path = write(
            "secret",
            "broadcast = [\"x\"]\n[providers.llm]\nkind = \"openai-chat\"\napi_key = \"sk-1\"\n",
        );
        let e = Config::parse_from_args(["s", "--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("api_key"),
            "keys come from api_key_env only: {e}"
        );
        std::fs::remove_file(path).unwrap();
        let e =
            Config::parse_from_args(["s", "--broadcast", "x", "--translate", "en"]).unwrap_err();
        assert!(e.to_string().contains("already in English"), "{e}");
        let e = Config::parse_from_args(["s", "--broadcast", "x", "--dub", "es"]).unwrap_err();
        assert!(e.to_string().contains("add es to --translate"), "{e}");
        let c = Config::parse_from_args([
            "s",
            "--broadcast",
            "x",
            "--translate",
            "es,fr",
            "--dub",
            "es",
            "--dub-original-db",
            "-18",
        ])
        .unwrap();
        assert_eq!(c.dub, vec!["es"]);
        assert_eq!(c.dub_original_db, Some(-18.0));
        assert_eq!(c.synthesize_chain, vec!["pico", "espeak-ng"]);
        let e = Config::parse_from_args(["s"]).unwrap_err();
        assert!(e.to_string().contains("nothing to caption"), "{e}");
    }
}

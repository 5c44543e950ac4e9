//! The providers of each stage, and the chains the configuration names.
//!
//! | kind | stage | what |
//! |---|---|---|
//! | `whisper` | recognize | the local Whisper model (`--model`) |
//! | `openai-transcribe` | recognize | an OpenAI-compatible `/v1/audio/transcriptions` endpoint |
//! | `apertium` | translate | Apertium, run as a program (en <-> es on Debian: `apertium-eng-spa`) |
//! | `openai-chat` | translate | an LLM through an OpenAI-compatible `/v1/chat/completions` endpoint |
//! | `marian` | translate | a Marian/opus-mt model from a local directory, on candle |
//! | `whisper-translate` | translate | speech of any language into English: the local multilingual Whisper's translate task |
//! | `pico` | synthesize | SVOX Pico, run as a program (`pico2wave`, Debian non-free `libttspico-utils`: en, es, fr, de, it) |
//! | `espeak-ng` | synthesize | espeak-ng, run as a program (about 100 languages) |
//! | `openai-speech` | synthesize | an OpenAI-compatible `/v1/audio/speech` endpoint |
//! | `piper` | synthesize | Piper voices (ONNX) from a local directory (`--piper-voices`), through ONNX Runtime |
//!
//! A chain names providers: a kind, or the name of a `[providers.NAME]` table of the
//! configuration whose `kind` says which engine it is (two endpoints of one kind get two
//! names). A provider that cannot serve (not installed, a language pair it lacks, a credential
//! that is not set) is left out of the chain and reported as [`Unavailable`]; the sidecar says so
//! at start and serves the rest.

pub mod apertium;
pub mod marian;
pub mod openai;
pub mod piper;
pub mod speech;
pub mod whisper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::Unavailable;
use crate::recognize::{Text, Transcriber};
use crate::stage::{
    Chain, ChainMetrics, Member, Provider, Recognition, SpeechRequest, Stage, SynthRequest,
    Synthesis, TranslateRequest, Translation,
};

/// A provider's settings: a `[providers.NAME]` table of the configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The engine (`whisper`, `openai-transcribe`, `apertium`, `openai-chat`, `marian`,
    /// `whisper-translate`, `pico`, `espeak-ng`, `openai-speech`, `piper`); default: the table's name.
    pub kind: Option<String>,
    /// OpenAI-compatible API base, for example `http://127.0.0.1:8000/v1`. Default
    /// `https://api.openai.com/v1`.
    pub url: Option<String>,
    /// The model the endpoint should use. Default `gpt-4o-mini` (chat), `whisper-1`
    /// (transcriptions), `tts-1` (speech).
    pub model: Option<String>,
    /// The environment variable that holds the API key (never the key itself). Default
    /// `OPENAI_API_KEY` when `url` is OpenAI's; none for another `url`.
    pub api_key_env: Option<String>,
    /// A call still running after this is abandoned, ms.
    pub timeout_ms: Option<u64>,
    /// A call still running after this lets the next provider of the chain start, ms.
    pub budget_ms: Option<u64>,
    /// How often a provider out of the rotation is probed, ms.
    pub probe_every_ms: Option<u64>,
    /// Apertium's data directory (default `$APERTIUM_DATADIR`, else `/usr/share/apertium`).
    pub datadir: Option<PathBuf>,
    /// A Marian model directory (config.json, *.safetensors, the tokenizer); for `piper`, a
    /// voice directory other than `--piper-voices`.
    pub dir: Option<PathBuf>,
    /// The language pairs a Marian model serves (`["en-es"]`); default: from an `opus-mt-FROM-TO`
    /// directory name.
    pub pairs: Option<Vec<String>>,
    /// The voice a synthesizer speaks with: an endpoint's voice name (`openai-speech`, default
    /// `alloy`), an espeak-ng voice (`es+f3`; default: the language's own) or a Piper voice's
    /// file name without `.onnx` (`en_US-joe-medium`; default: the one for the language).
    pub voice: Option<String>,
    /// ONNX Runtime threads of a `piper` provider (default 1: it shares the cores with Whisper,
    /// and one thread was the faster on a loaded 2-core machine; docs/BENCHMARKS.md).
    pub threads: Option<usize>,
}

/// The engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whisper,
    OpenAiTranscribe,
    Apertium,
    OpenAiChat,
    Marian,
    WhisperTranslate,
    Pico,
    Espeak,
    OpenAiSpeech,
    Piper,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Whisper,
        Kind::OpenAiTranscribe,
        Kind::Apertium,
        Kind::OpenAiChat,
        Kind::Marian,
        Kind::WhisperTranslate,
        Kind::Pico,
        Kind::Espeak,
        Kind::OpenAiSpeech,
        Kind::Piper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Whisper => "whisper",
            Kind::OpenAiTranscribe => "openai-transcribe",
            Kind::Apertium => "apertium",
            Kind::OpenAiChat => "openai-chat",
            Kind::Marian => "marian",
            Kind::WhisperTranslate => "whisper-translate",
            Kind::Pico => "pico",
            Kind::Espeak => "espeak-ng",
            Kind::OpenAiSpeech => "openai-speech",
            Kind::Piper => "piper",
        }
    }

    /// Whether it needs the local Whisper model.
    pub fn uses_whisper(self) -> bool {
        matches!(self, Kind::Whisper | Kind::WhisperTranslate)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The stage it serves.
    pub fn stage(self) -> &'static str {
        match self {
            Kind::Whisper | Kind::OpenAiTranscribe => Recognition::NAME,
            Kind::Apertium | Kind::OpenAiChat | Kind::Marian | Kind::WhisperTranslate => {
                Translation::NAME
            }
            Kind::Pico | Kind::Espeak | Kind::OpenAiSpeech | Kind::Piper => Synthesis::NAME,
        }
    }

    /// Default probe interval, ms: local models probe less often (a probe costs CPU).
    fn probe_every(self) -> u64 {
        match self {
            Kind::Whisper | Kind::WhisperTranslate => 30_000,
            Kind::Marian | Kind::Piper => 10_000,
            _ => PROBE_EVERY_MS,
        }
    }

    /// Default (timeout, budget), ms.
    fn limits(self) -> (u64, u64) {
        match self {
            Kind::Whisper => (60_000, 10_000),
            Kind::OpenAiTranscribe => (15_000, 5_000),
            Kind::Apertium => (5_000, 1_000),
            Kind::OpenAiChat => (10_000, 3_000),
            Kind::Marian => (10_000, 2_000),
            Kind::WhisperTranslate => (30_000, 5_000),
            Kind::Pico | Kind::Espeak => (5_000, 1_000),
            Kind::OpenAiSpeech => (15_000, 4_000),
            // About 0.1 s of inference per second of speech on 2 cores; the first call loads
            // the voice (about 0.5 s) unless a warm-up did.
            Kind::Piper => (10_000, 3_000),
        }
    }
}

/// The default probe interval of remote and program providers, ms.
pub const PROBE_EVERY_MS: u64 = 5_000;

/// Builds chains from the configuration. Providers are made once per name (per name and
/// language pair for Apertium) and shared by every chain and broadcast.
pub struct Providers {
    configs: BTreeMap<String, ProviderConfig>,
    metrics: Arc<dyn ChainMetrics>,
    client: Mutex<Option<reqwest::Client>>,
    /// The local Whisper model, loaded by the caller, or why it could not be.
    whisper: Option<Result<whisper::SharedWhisper, String>>,
    /// Where models run (Marian).
    device: candle_core::Device,
    /// Marian models by provider name, loaded on first use.
    marian: Mutex<BTreeMap<String, Result<marian::SharedMarian, String>>>,
    /// Where Piper voices and ONNX Runtime are.
    piper: PiperSettings,
    /// Piper engines by provider name, opened on first use.
    piper_engines: Mutex<BTreeMap<String, Result<Arc<piper::Engine>, String>>>,
}

/// Where the `piper` provider finds its voices and ONNX Runtime.
#[derive(Debug, Clone)]
pub struct PiperSettings {
    /// The voice directory (`--piper-voices`).
    pub voices: PathBuf,
    /// `libonnxruntime.so` (`ORT_DYLIB_PATH`).
    pub ort_dylib: PathBuf,
    /// ONNX Runtime threads, unless the provider's table sets `threads`.
    pub threads: usize,
}

impl Default for PiperSettings {
    fn default() -> Self {
        Self {
            voices: piper::default_voices_dir(),
            ort_dylib: piper::default_ort_dylib(),
            threads: 1,
        }
    }
}

impl Providers {
    pub fn new(configs: BTreeMap<String, ProviderConfig>, metrics: Arc<dyn ChainMetrics>) -> Self {
        Self {
            configs,
            metrics,
            client: Mutex::new(None),
            whisper: None,
            device: candle_core::Device::Cpu,
            marian: Mutex::new(BTreeMap::new()),
            piper: PiperSettings::default(),
            piper_engines: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where Piper voices and ONNX Runtime are (default: where scripts/setup.sh puts them).
    pub fn with_piper(mut self, settings: PiperSettings) -> Self {
        self.piper = settings;
        self
    }

    /// The Piper engine of provider `name`, opened once.
    fn piper_engine(&self, name: &str) -> Result<Arc<piper::Engine>, String> {
        let mut engines = self.piper_engines.lock().expect("piper lock");
        engines
            .entry(name.to_string())
            .or_insert_with(|| {
                let cfg = self.config(name);
                let dir = cfg.dir.unwrap_or_else(|| self.piper.voices.clone());
                piper::Engine::open(
                    &dir,
                    cfg.voice.as_deref(),
                    &self.piper.ort_dylib,
                    cfg.threads.unwrap_or(self.piper.threads),
                )
                .map(Arc::new)
            })
            .clone()
    }

    /// The local Whisper model (`whisper` and `whisper-translate` in a chain), or why there is
    /// none.
    pub fn with_whisper(mut self, whisper: Result<whisper::SharedWhisper, String>) -> Self {
        self.whisper = Some(whisper);
        self
    }

    /// The device models run on (default: the CPU).
    pub fn with_device(mut self, device: candle_core::Device) -> Self {
        self.device = device;
        self
    }

    /// Whether any chain in `chains` names a provider that needs the local Whisper model.
    pub fn needs_whisper(&self, chains: &[&[String]]) -> bool {
        chains
            .iter()
            .flat_map(|c| c.iter())
            .any(|n| self.kind(n).is_ok_and(Kind::uses_whisper))
    }

    fn whisper(&self) -> Result<whisper::SharedWhisper, String> {
        match &self.whisper {
            Some(w) => w.clone(),
            None => Err("no local model loaded".into()),
        }
    }

    fn marian_model(&self, name: &str) -> Result<marian::SharedMarian, String> {
        let mut cache = self.marian.lock().expect("marian lock");
        cache
            .entry(name.to_string())
            .or_insert_with(|| {
                let dir = self.config(name).dir.ok_or_else(|| {
                    format!("[providers.{name}] needs dir = \"/path/to/opus-mt-FROM-TO\"")
                })?;
                marian::load(&dir, &self.device)
            })
            .clone()
    }

    /// Checks that every name in `chain` is a kind of `stage`, or a table whose kind is.
    pub fn check_names(&self, stage: &'static str, chain: &[String]) -> Result<(), String> {
        if chain.is_empty() {
            return Err(format!("the {stage} chain is empty"));
        }
        for name in chain {
            let kind = self.kind(name)?;
            if kind.stage() != stage {
                return Err(format!(
                    "{name:?} is a {} provider ({}), not a {stage} one",
                    kind.stage(),
                    kind.name()
                ));
            }
        }
        for (name, cfg) in &self.configs {
            if cfg.kind.is_none() && Kind::parse(name).is_none() {
                return Err(format!(
                    "[providers.{name}] needs a kind (one of {})",
                    kinds()
                ));
            }
        }
        Ok(())
    }

    fn kind(&self, name: &str) -> Result<Kind, String> {
        let kind = self
            .configs
            .get(name)
            .and_then(|c| c.kind.clone())
            .unwrap_or_else(|| name.to_string());
        Kind::parse(&kind).ok_or_else(|| {
            format!(
                "unknown provider {name:?}: a chain names a kind ({}) or a [providers.NAME] table with a kind",
                kinds()
            )
        })
    }

    fn config(&self, name: &str) -> ProviderConfig {
        self.configs.get(name).cloned().unwrap_or_default()
    }

    fn member<S: Stage>(
        &self,
        name: &str,
        kind: Kind,
        provider: Arc<dyn Provider<S>>,
    ) -> Member<S> {
        let cfg = self.config(name);
        let (timeout, budget) = kind.limits();
        let timeout = cfg.timeout_ms.unwrap_or(timeout);
        Member {
            provider,
            timeout: Duration::from_millis(timeout),
            budget: Duration::from_millis(cfg.budget_ms.unwrap_or(budget).min(timeout)),
            probe_every: Duration::from_millis(cfg.probe_every_ms.unwrap_or(kind.probe_every())),
        }
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let mut c = self.client.lock().expect("client lock");
        if let Some(c) = &*c {
            return Ok(c.clone());
        }
        let client = openai::http_client()?;
        *c = Some(client.clone());
        Ok(client)
    }

    fn endpoint(&self, name: &str, default_model: &str) -> Result<openai::Endpoint, String> {
        let cfg = self.config(name);
        let default_base = "https://api.openai.com/v1";
        let base = cfg.url.clone().unwrap_or_else(|| default_base.to_string());
        let key_env = cfg
            .api_key_env
            .clone()
            .or_else(|| (base == default_base).then(|| "OPENAI_API_KEY".to_string()));
        let api_key = match key_env {
            Some(var) => match std::env::var(&var) {
                Ok(k) if !k.is_empty() => Some(k),
                _ => {
                    return Err(format!(
                        "no API key: the environment variable {var} (api_key_env) is not set"
                    ))
                }
            },
            None => None,
        };
        Ok(openai::Endpoint {
            base,
            model: cfg.model.unwrap_or_else(|| default_model.to_string()),
            api_key,
        })
    }

    /// The recognition chain for speech in `language` (`None`: detect it).
    pub fn recognition(
        &self,
        chain: &[String],
        language: Option<&str>,
    ) -> (Option<Chain<Recognition>>, Vec<Unavailable>) {
        let mut members = Vec::new();
        let mut unavailable = Vec::new();
        for name in chain {
            let made: Result<Arc<dyn Provider<Recognition>>, String> = match self.kind(name) {
                Ok(Kind::Whisper) => self
                    .whisper()
                    .map(|w| Arc::new(whisper::LocalWhisper::new(name, w)) as _),
                Ok(Kind::OpenAiTranscribe) => self.endpoint(name, "whisper-1").and_then(|e| {
                    Ok(Arc::new(openai::OpenAiTranscribe::new(name, self.client()?, e)) as _)
                }),
                Ok(k) => Err(format!("{} is not a recognition provider", k.name())),
                Err(e) => Err(e),
            };
            match made {
                Ok(p) => {
                    let kind = self.kind(name).expect("made");
                    members.push(self.member(name, kind, p));
                }
                Err(reason) => unavailable.push(Unavailable {
                    stage: Recognition::NAME.into(),
                    provider: name.clone(),
                    reason,
                }),
            }
        }
        if members.is_empty() {
            return (None, unavailable);
        }
        let probe = SpeechRequest {
            samples: vec![0.0; 16_000].into(),
            is_final: false,
            language: language.map(str::to_string),
            stream: None,
        };
        let name = language.unwrap_or("auto").to_string();
        (
            Some(Chain::new(name, members, probe, self.metrics.clone())),
            unavailable,
        )
    }

    /// The translation chain `from` -> `to`: the providers of `chain` that serve the pair.
    pub fn translation(
        &self,
        chain: &[String],
        from: &str,
        to: &str,
    ) -> (Option<Chain<Translation>>, Vec<Unavailable>) {
        let mut members = Vec::new();
        let mut unavailable = Vec::new();
        for name in chain {
            let made: Result<Arc<dyn Provider<Translation>>, String> = match self.kind(name) {
                Ok(Kind::Apertium) => {
                    let dir = apertium::datadir(self.config(name).datadir.as_deref());
                    apertium::Apertium::new(name, &dir, from, to).map(|a| Arc::new(a) as _)
                }
                Ok(Kind::OpenAiChat) => self.endpoint(name, "gpt-4o-mini").and_then(|e| {
                    Ok(Arc::new(openai::OpenAiChat::new(name, self.client()?, e)) as _)
                }),
                Ok(Kind::Marian) => self.marian_model(name).and_then(|m| {
                    let cfg = self.config(name);
                    let pairs = marian::pairs(m.dir(), cfg.pairs.as_deref())?;
                    Ok(Arc::new(marian::Marian::new(name, m, &pairs, from, to)?) as _)
                }),
                Ok(Kind::WhisperTranslate) => self.whisper().and_then(|w| {
                    Ok(Arc::new(whisper::WhisperTranslate::new(name, w, from, to)?) as _)
                }),
                Ok(k) => Err(format!("{} is not a translation provider", k.name())),
                Err(e) => Err(e),
            };
            match made {
                Ok(p) => {
                    let kind = self.kind(name).expect("made");
                    members.push(self.member(name, kind, p));
                }
                Err(reason) => unavailable.push(Unavailable {
                    stage: format!("{} {from}->{to}", Translation::NAME),
                    provider: name.clone(),
                    reason,
                }),
            }
        }
        if members.is_empty() {
            return (None, unavailable);
        }
        (
            Some(Chain::new(
                format!("{from}-{to}"),
                members,
                TranslateRequest::probe(from, to),
                self.metrics.clone(),
            )),
            unavailable,
        )
    }
}

impl Providers {
    /// The synthesis chain for speech in `language`: the providers of `chain` that speak it.
    pub fn synthesis(
        &self,
        chain: &[String],
        language: &str,
    ) -> (Option<Chain<Synthesis>>, Vec<Unavailable>) {
        let mut members = Vec::new();
        let mut unavailable = Vec::new();
        for name in chain {
            let cfg = self.config(name);
            let made: Result<Arc<dyn Provider<Synthesis>>, String> = match self.kind(name) {
                Ok(Kind::Pico) => speech::Pico::new(name, language).map(|p| Arc::new(p) as _),
                Ok(Kind::Espeak) => speech::Espeak::new(name, language, cfg.voice.as_deref())
                    .map(|p| Arc::new(p) as _),
                Ok(Kind::OpenAiSpeech) => self.endpoint(name, "tts-1").and_then(|e| {
                    let voice = cfg.voice.as_deref().unwrap_or("alloy");
                    Ok(Arc::new(speech::OpenAiSpeech::new(name, self.client()?, e, voice)) as _)
                }),
                Ok(Kind::Piper) => self.piper_engine(name).and_then(|engine| {
                    if piper::voice_for(engine.voices(), language).is_none() {
                        return Err(format!(
                            "no Piper voice for {language} in {} (voices: {})",
                            engine.dir().display(),
                            engine
                                .voices()
                                .iter()
                                .map(|v| v.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    Ok(Arc::new(piper::Piper::new(name, engine).for_language(language)) as _)
                }),
                Ok(k) => Err(format!("{} is not a synthesis provider", k.name())),
                Err(e) => Err(e),
            };
            match made {
                Ok(p) => {
                    let kind = self.kind(name).expect("made");
                    members.push(self.member(name, kind, p));
                }
                Err(reason) => unavailable.push(Unavailable {
                    stage: format!("{} {language}", Synthesis::NAME),
                    provider: name.clone(),
                    reason,
                }),
            }
        }
        if members.is_empty() {
            return (None, unavailable);
        }
        (
            Some(Chain::new(
                format!("speak-{language}"),
                members,
                SynthRequest::probe(language),
                self.metrics.clone(),
            )),
            unavailable,
        )
    }
}

fn kinds() -> String {
    Kind::ALL.map(Kind::name).join(", ")
}

/// A recognition chain as the recognition worker's [`Transcriber`]: the worker thread waits
/// for the chain on the runtime.
pub struct ChainTranscriber {
    chain: Chain<Recognition>,
    runtime: tokio::runtime::Handle,
    language: Option<String>,
}

impl ChainTranscriber {
    /// `language`: the speech's language, or `None` to detect it.
    pub fn new(
        chain: Chain<Recognition>,
        runtime: tokio::runtime::Handle,
        language: Option<String>,
    ) -> Self {
        Self {
            chain,
            runtime,
            language,
        }
    }
}

impl Transcriber for ChainTranscriber {
    fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String> {
        self.transcribe_in(samples, is_final, None)
    }

    fn transcribe_in(
        &mut self,
        samples: &[f32],
        is_final: bool,
        language: Option<&str>,
    ) -> Result<Text, String> {
        self.request(None, samples, is_final, language)
    }

    fn transcribe_stream(
        &mut self,
        stream: u64,
        samples: &[f32],
        is_final: bool,
        language: Option<&str>,
    ) -> Result<Text, String> {
        self.request(Some(stream), samples, is_final, language)
    }
}

impl ChainTranscriber {
    fn request(
        &mut self,
        stream: Option<u64>,
        samples: &[f32],
        is_final: bool,
        language: Option<&str>,
    ) -> Result<Text, String> {
        let request = SpeechRequest {
            samples: Arc::from(samples),
            is_final,
            language: language
                .map(str::to_string)
                .or_else(|| self.language.clone()),
            stream,
        };
        let t = self
            .runtime
            .block_on(self.chain.call(request))
            .map_err(|e| e.to_string())?;
        Ok(Text {
            text: t.text,
            avg_logprob: t.avg_logprob,
            no_speech_prob: t.no_speech_prob,
            language: t.language,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::NoMetrics;

    #[test]
    fn names_resolve_to_kinds_and_unavailable_providers_say_why() {
        let mut configs = BTreeMap::new();
        configs.insert(
            "local-llm".to_string(),
            ProviderConfig {
                kind: Some("openai-chat".into()),
                url: Some("http://127.0.0.1:9/v1".into()),
                ..Default::default()
            },
        );
        configs.insert(
            "cloud".to_string(),
            ProviderConfig {
                kind: Some("openai-chat".into()),
                api_key_env: Some("MOQCAST_TEST_UNSET_KEY".into()),
                ..Default::default()
            },
        );
        configs.insert(
            "apertium".to_string(),
            ProviderConfig {
                datadir: Some("/nonexistent".into()),
                ..Default::default()
            },
        );
        let p = Providers::new(configs, Arc::new(NoMetrics));
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(p
            .check_names("translate", &names(&["apertium", "local-llm", "cloud"]))
            .is_ok());
        let e = p
            .check_names("translate", &names(&["whisper"]))
            .unwrap_err();
        assert!(e.contains("not a translate one"), "{e}");
        let e = p.check_names("translate", &names(&["deepl"])).unwrap_err();
        assert!(e.contains("unknown provider \"deepl\""), "{e}");

        let (chain, unavailable) =
            p.translation(&names(&["apertium", "local-llm", "cloud"]), "en", "es");
        let chain = chain.expect("local-llm serves");
        assert_eq!(chain.providers(), vec!["local-llm"]);
        assert_eq!(chain.name(), "en-es");
        let why: Vec<_> = unavailable
            .iter()
            .map(|u| format!("{}: {}", u.provider, u.reason))
            .collect();
        assert!(
            why[0].starts_with("apertium: Apertium is not installed"),
            "{why:?}"
        );
        assert!(
            why[1].contains("MOQCAST_TEST_UNSET_KEY (api_key_env) is not set"),
            "{why:?}"
        );

        let (chain, unavailable) = p.recognition(&names(&["whisper"]), Some("en"));
        assert!(chain.is_none());
        assert_eq!(unavailable[0].reason, "no local model loaded");
        assert!(p.needs_whisper(&[&names(&["apertium", "whisper-translate"])]));
        assert!(!p.needs_whisper(&[&names(&["apertium", "local-llm"])]));
        let (chain, unavailable) =
            p.translation(&names(&["marian", "whisper-translate"]), "es", "en");
        assert!(chain.is_none());
        assert!(
            unavailable[0].reason.contains("needs dir"),
            "{unavailable:?}"
        );
        assert_eq!(unavailable[1].reason, "no local model loaded");

        // Synthesis: pico has no Japanese voice; espeak-ng (installed) has one.
        assert!(p
            .check_names(
                "synthesize",
                &names(&["pico", "espeak-ng", "openai-speech"])
            )
            .is_ok());
        let (chain, unavailable) = p.synthesis(&names(&["pico", "espeak-ng"]), "ja");
        assert_eq!(chain.expect("espeak-ng").providers(), vec!["espeak-ng"]);
        assert!(
            unavailable[0].reason.contains("no voice for ja"),
            "{unavailable:?}"
        );
        let (chain, _) = p.synthesis(&names(&["apertium"]), "es");
        assert!(chain.is_none());
    }
}

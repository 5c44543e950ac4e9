//! Sidecar metrics and per-broadcast status: Prometheus series (`GET /metrics`, text format
//! 0.0.4 through the `prometheus-client` crate's encoder, as the relay's) and JSON
//! (`GET /status`) on the sidecar's HTTP port.
//!
//! Process-wide figures (recognition time, provider calls) are `prometheus-client` metrics.
//! Per-broadcast figures live in one map that both `/status` and a scrape-time collector read,
//! so each is counted once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::stage::{ChainMetrics, ChainStatus, Failure};

/// What the sidecar is doing for one broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connecting to the relay or waiting for the broadcast's catalog.
    Waiting,
    /// The catalog lists no audio track: nothing to caption.
    NoAudio,
    /// The audio codec cannot be decoded.
    UnsupportedAudio,
    /// Caption tracks are published; nobody subscribes, so no inference runs.
    Idle,
    /// Someone subscribes: audio is being recognised.
    Captioning,
    /// The relay connection failed; retrying.
    Error,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Waiting,
        Status::NoAudio,
        Status::UnsupportedAudio,
        Status::Idle,
        Status::Captioning,
        Status::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::NoAudio => "no_audio",
            Status::UnsupportedAudio => "unsupported_audio",
            Status::Idle => "idle",
            Status::Captioning => "captioning",
            Status::Error => "error",
        }
    }
}

/// Per-broadcast figures.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastMetrics {
    pub status: Status,
    /// Why, for `no_audio`, `unsupported_audio` and `error`.
    pub detail: Option<String>,
    /// Subscriptions to the source-language caption track.
    pub subscribers: u64,
    pub audio_ms: u64,
    pub decode_errors: u64,
    pub partial_cues: u64,
    pub final_cues: u64,
    pub partials_superseded: u64,
    pub merged: u64,
    pub skipped_ms: u64,
    /// Delay from the end of an utterance's audio arriving to its final cue being published.
    pub final_delay_ms_sum: u64,
    pub final_delay_count: u64,
    /// Translated caption tracks by language.
    pub translations: BTreeMap<String, TranslationMetrics>,
    /// Dubbed audio tracks by language.
    pub dubs: BTreeMap<String, DubMetrics>,
}

impl Default for BroadcastMetrics {
    fn default() -> Self {
        Self {
            status: Status::Waiting,
            detail: None,
            subscribers: 0,
            audio_ms: 0,
            decode_errors: 0,
            partial_cues: 0,
            final_cues: 0,
            partials_superseded: 0,
            merged: 0,
            skipped_ms: 0,
            final_delay_ms_sum: 0,
            final_delay_count: 0,
            translations: BTreeMap::new(),
            dubs: BTreeMap::new(),
        }
    }
}

/// One translated caption track of a broadcast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TranslationMetrics {
    /// Subscriptions to the track; it is translated only while there are some.
    pub subscribers: u64,
    /// Translated final cues published.
    pub cues: u64,
    /// Cues not translated because translation fell behind (queue full or too old).
    pub skipped: u64,
    /// Cues not translated because every provider of the chain failed.
    pub failed: u64,
    /// Delay from the end of the utterance's audio to the translated cue being published.
    pub delay_ms_sum: u64,
    pub delay_count: u64,
}

/// One dubbed audio track of a broadcast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DubMetrics {
    /// Subscriptions to the track; speech is synthesized only while there are some.
    pub subscribers: u64,
    /// Cues spoken and placed on the dub's timeline.
    pub spoken: u64,
    /// Cues left unspoken because synthesis fell behind (queue full).
    pub skipped: u64,
    /// Cues left unspoken because every provider of the chain failed.
    pub failed: u64,
    /// Cues whose speech came after their end had been published (skipped).
    pub expired: u64,
    /// Cues whose speech started late (came after their start), and by how much in all.
    pub late: u64,
    pub late_ms: u64,
    /// Cues sped up to fit, and cues cut at their end (too long even sped up 1.3x).
    pub stretched: u64,
    pub cut: u64,
    /// Opus packets published.
    pub packets: u64,
    /// From a cue's translation to its speech being placed.
    pub synth_ms_sum: u64,
    pub synth_count: u64,
}

/// A provider that cannot serve, as found at start.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unavailable {
    pub stage: String,
    pub provider: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    stage: &'static str,
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    stage: &'static str,
    provider: String,
    failure: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabels {
    stage: &'static str,
    chain: String,
    provider: String,
}

type StatusSource = Box<dyn Fn() -> ChainStatus + Send + Sync>;

/// State read at scrape time and by `/status`.
#[derive(Default)]
struct Shared {
    broadcasts: Mutex<BTreeMap<String, BroadcastMetrics>>,
    inference_us: AtomicU64,
    inference_audio_ms: AtomicU64,
    queued_ms: AtomicU64,
    chains: Mutex<Vec<StatusSource>>,
    unavailable: Mutex<Vec<Unavailable>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Process-wide metrics.
pub struct Metrics {
    registry: Registry,
    shared: Arc<Shared>,
    inferences: Family<KindLabel, Counter>,
    hallucinations: Counter,
    recognition_errors: Counter,
    results_dropped: Counter,
    provider_calls: Family<ProviderLabels, Counter>,
    provider_failures: Family<FailureLabels, Counter>,
    provider_fallbacks: Family<ProviderLabels, Counter>,
    provider_latency: Family<ProviderLabels, Histogram>,
    provider_up: Family<ChainLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("moqcast_sidecar");
        let shared = Arc::new(Shared::default());
        let inferences = Family::<KindLabel, Counter>::default();
        registry.register("inferences", "Recognitions run", inferences.clone());
        let hallucinations = Counter::default();
        registry.register(
            "hallucinations",
            "Results dropped as no speech (no_speech_prob high, low confidence)",
            hallucinations.clone(),
        );
        let recognition_errors = Counter::default();
        registry.register(
            "recognition_errors",
            "Recognitions that failed (every provider of the chain)",
            recognition_errors.clone(),
        );
        let results_dropped = Counter::default();
        registry.register(
            "results_dropped",
            "Results dropped because a broadcast could not take them",
            results_dropped.clone(),
        );
        let provider_calls = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Requests sent to a stage's provider (probes excluded)",
            provider_calls.clone(),
        );
        let provider_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Calls that failed: error, timeout, or over_budget (answered after the latency budget)",
            provider_failures.clone(),
        );
        let provider_fallbacks = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_fallbacks",
            "Requests that moved on from this provider to the next one of the chain",
            provider_fallbacks.clone(),
        );
        let provider_latency =
            Family::<ProviderLabels, Histogram>::new_with_constructor(|| -> Histogram {
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            });
        registry.register(
            "provider_latency_seconds",
            "Time a provider took to answer or fail (calls abandoned for a faster provider excluded)",
            provider_latency.clone(),
        );
        let provider_up = Family::<ChainLabels, Gauge>::default();
        registry.register(
            "provider_up",
            "1 while the provider is in its chain's rotation, 0 while it is probed",
            provider_up.clone(),
        );
        registry.register_collector(Box::new(Scrape(shared.clone())));
        Self {
            registry,
            shared,
            inferences,
            hallucinations,
            recognition_errors,
            results_dropped,
            provider_calls,
            provider_failures,
            provider_fallbacks,
            provider_latency,
            provider_up,
        }
    }

    /// Updates one broadcast's figures.
    pub fn with(&self, broadcast: &str, f: impl FnOnce(&mut BroadcastMetrics)) {
        if let Ok(mut map) = self.shared.broadcasts.lock() {
            f(map.entry(broadcast.to_string()).or_default());
        }
    }

    /// Updates one translated track's figures.
    pub fn with_translation(
        &self,
        broadcast: &str,
        lang: &str,
        f: impl FnOnce(&mut TranslationMetrics),
    ) {
        self.with(broadcast, |b| {
            f(b.translations.entry(lang.to_string()).or_default())
        });
    }

    /// Updates one dub track's figures.
    pub fn with_dub(&self, broadcast: &str, lang: &str, f: impl FnOnce(&mut DubMetrics)) {
        self.with(broadcast, |b| {
            f(b.dubs.entry(lang.to_string()).or_default())
        });
    }

    pub fn set_status(&self, broadcast: &str, status: Status, detail: Option<String>) {
        self.with(broadcast, |b| {
            b.status = status;
            b.detail = detail;
        });
    }

    pub fn broadcast(&self, broadcast: &str) -> Option<BroadcastMetrics> {
        self.shared.broadcasts.lock().ok()?.get(broadcast).cloned()
    }

    pub fn partial_superseded(&self, broadcast: &str) {
        self.with(broadcast, |b| b.partials_superseded += 1);
    }

    pub fn utterances_merged(&self, broadcast: &str) {
        self.with(broadcast, |b| b.merged += 1);
    }

    pub fn audio_skipped(&self, broadcast: &str, audio_ms: u64) {
        self.with(broadcast, |b| b.skipped_ms += audio_ms);
    }

    pub fn inference(&self, is_final: bool, audio_ms: u64, took: Duration) {
        self.shared
            .inference_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.shared
            .inference_audio_ms
            .fetch_add(audio_ms, Ordering::Relaxed);
        let kind = if is_final { "final" } else { "partial" };
        self.inferences.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn set_queued_ms(&self, ms: u64) {
        self.shared.queued_ms.store(ms, Ordering::Relaxed);
    }

    pub fn hallucination(&self) {
        self.hallucinations.inc();
    }

    pub fn recognition_error(&self) {
        self.recognition_errors.inc();
    }

    pub fn result_dropped(&self) {
        self.results_dropped.inc();
    }

    /// Lists a chain in `/status` (which provider serves it now).
    pub fn add_chain(&self, status: impl Fn() -> ChainStatus + Send + Sync + 'static) {
        if let Ok(mut c) = self.shared.chains.lock() {
            c.push(Box::new(status));
        }
    }

    /// Providers that cannot serve, found when their chains were built (shown by `/status`).
    pub fn add_unavailable(&self, list: Vec<Unavailable>) {
        if let Ok(mut u) = self.shared.unavailable.lock() {
            for x in list {
                if !u.contains(&x) {
                    u.push(x);
                }
            }
        }
    }

    /// Inference time over audio time of everything recognised so far.
    pub fn real_time_factor(&self) -> f64 {
        self.shared.real_time_factor()
    }

    /// `GET /status`: every broadcast's figures and every chain's provider, as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let map = self
            .shared
            .broadcasts
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let chains: Vec<ChainStatus> = self
            .shared
            .chains
            .lock()
            .map(|c| c.iter().map(|f| f()).collect())
            .unwrap_or_default();
        let unavailable = self
            .shared
            .unavailable
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        serde_json::json!({
            "broadcasts": map,
            "real_time_factor": self.real_time_factor(),
            "queued_audio_ms": self.shared.queued_ms.load(Ordering::Relaxed),
            "chains": chains,
            "unavailable": unavailable,
        })
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    /// The content type of [`Self::render`].
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

impl ChainMetrics for Metrics {
    fn call(&self, stage: &'static str, provider: &str) {
        self.provider_calls
            .get_or_create(&ProviderLabels {
                stage,
                provider: provider.to_string(),
            })
            .inc();
    }

    fn latency(&self, stage: &'static str, provider: &str, took: Duration) {
        self.provider_latency
            .get_or_create(&ProviderLabels {
                stage,
                provider: provider.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    fn failure(&self, stage: &'static str, provider: &str, why: Failure) {
        self.provider_failures
            .get_or_create(&FailureLabels {
                stage,
                provider: provider.to_string(),
                failure: why.as_str(),
            })
            .inc();
    }

    fn fallback(&self, stage: &'static str, provider: &str) {
        self.provider_fallbacks
            .get_or_create(&ProviderLabels {
                stage,
                provider: provider.to_string(),
            })
            .inc();
    }

    fn health(&self, stage: &'static str, chain: &str, provider: &str, up: bool) {
        self.provider_up
            .get_or_create(&ChainLabels {
                stage,
                chain: chain.to_string(),
                provider: provider.to_string(),
            })
            .set(i64::from(up));
    }
}

impl Shared {
    fn real_time_factor(&self) -> f64 {
        let audio = self.inference_audio_ms.load(Ordering::Relaxed);
        if audio == 0 {
            return 0.0;
        }
        self.inference_us.load(Ordering::Relaxed) as f64 / 1000.0 / audio as f64
    }
}

/// Encodes the per-broadcast map and derived figures at scrape time.
#[derive(Debug)]
struct Scrape(Arc<Shared>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
) -> Result<(), std::fmt::Error> {
    let proto = ConstCounter::new(0.0);
    let mut family = encoder.encode_descriptor(name, help, None, proto.metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
) -> Result<(), std::fmt::Error> {
    let proto = ConstGauge::new(0.0);
    let mut family = encoder.encode_descriptor(name, help, None, proto.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let none = Vec::new;
        counter(
            &mut e,
            "inference_seconds",
            "Time spent in speech recognition",
            [(none(), get(&s.inference_us) / 1e6)],
        )?;
        counter(
            &mut e,
            "inference_audio_seconds",
            "Audio recognised (partials count each time they are recognised)",
            [(none(), get(&s.inference_audio_ms) / 1e3)],
        )?;
        gauge(
            &mut e,
            "real_time_factor",
            "Inference time over audio time so far (below 1 keeps up)",
            [(none(), s.real_time_factor())],
        )?;
        gauge(
            &mut e,
            "queued_audio_seconds",
            "Final utterances waiting for recognition",
            [(none(), get(&s.queued_ms) / 1e3)],
        )?;
        let map = s.broadcasts.lock().map(|m| m.clone()).unwrap_or_default();
        let by = |b: &str| vec![("broadcast", b.to_string())];
        gauge(
            &mut e,
            "broadcast_status",
            "What the sidecar does for a broadcast (1 for the current status)",
            map.iter().flat_map(|(name, b)| {
                Status::ALL.into_iter().map(move |st| {
                    (
                        vec![
                            ("broadcast", name.clone()),
                            ("status", st.name().to_string()),
                        ],
                        f64::from(u8::from(b.status == st)),
                    )
                })
            }),
        )?;
        type Field = fn(&BroadcastMetrics) -> f64;
        let counters: [(&str, &str, Field); 7] = [
            ("audio_seconds", "Audio decoded", |b| {
                b.audio_ms as f64 / 1e3
            }),
            (
                "decode_errors",
                "Audio objects that could not be decoded",
                |b| b.decode_errors as f64,
            ),
            ("partial_cues", "Partial cues published", |b| {
                b.partial_cues as f64
            }),
            ("final_cues", "Final cues published", |b| {
                b.final_cues as f64
            }),
            (
                "partials_superseded",
                "Partials replaced by newer ones before recognition (behind real time)",
                |b| b.partials_superseded as f64,
            ),
            (
                "utterances_merged",
                "Final utterances merged into one recognition (behind real time)",
                |b| b.merged as f64,
            ),
            (
                "audio_skipped_seconds",
                "Speech skipped without captions (far behind real time)",
                |b| b.skipped_ms as f64 / 1e3,
            ),
        ];
        for (name, help, field) in counters {
            counter(
                &mut e,
                name,
                help,
                map.iter().map(|(b, m)| (by(b), field(m))),
            )?;
        }
        gauge(
            &mut e,
            "caption_subscribers",
            "Subscriptions to the broadcast's source-language caption track",
            map.iter().map(|(b, m)| (by(b), m.subscribers as f64)),
        )?;
        gauge(
            &mut e,
            "final_cue_delay_seconds_avg",
            "Mean delay from an utterance's end to its final cue",
            map.iter().map(|(b, m)| {
                (
                    by(b),
                    m.final_delay_ms_sum as f64 / 1e3 / m.final_delay_count.max(1) as f64,
                )
            }),
        )?;
        let per_lang = |f: fn(&TranslationMetrics) -> f64| {
            map.iter()
                .flat_map(move |(b, m)| {
                    m.translations.iter().map(move |(lang, t)| {
                        (vec![("broadcast", b.clone()), ("lang", lang.clone())], f(t))
                    })
                })
                .collect::<Vec<_>>()
        };
        gauge(
            &mut e,
            "translation_subscribers",
            "Subscriptions to a translated caption track (translated only while above 0)",
            per_lang(|t| t.subscribers as f64),
        )?;
        counter(
            &mut e,
            "translated_cues",
            "Translated final cues published",
            per_lang(|t| t.cues as f64),
        )?;
        counter(
            &mut e,
            "translations_skipped",
            "Cues left untranslated because translation fell behind (queue full or too old)",
            per_lang(|t| t.skipped as f64),
        )?;
        counter(
            &mut e,
            "translations_failed",
            "Cues left untranslated because every provider of the chain failed",
            per_lang(|t| t.failed as f64),
        )?;
        gauge(
            &mut e,
            "translated_cue_delay_seconds_avg",
            "Mean delay from an utterance's end to its translated cue",
            per_lang(|t| t.delay_ms_sum as f64 / 1e3 / t.delay_count.max(1) as f64),
        )?;
        let per_dub = |f: fn(&DubMetrics) -> f64| {
            map.iter()
                .flat_map(move |(b, m)| {
                    m.dubs.iter().map(move |(lang, d)| {
                        (vec![("broadcast", b.clone()), ("lang", lang.clone())], f(d))
                    })
                })
                .collect::<Vec<_>>()
        };
        gauge(
            &mut e,
            "dub_subscribers",
            "Subscriptions to a dubbed audio track (spoken only while above 0)",
            per_dub(|d| d.subscribers as f64),
        )?;
        type DubField = fn(&DubMetrics) -> f64;
        let dub_counters: [(&str, &str, DubField); 9] = [
            (
                "dub_cues_spoken",
                "Cues spoken on a dubbed audio track",
                |d| d.spoken as f64,
            ),
            (
                "dub_cues_skipped",
                "Cues left unspoken because synthesis fell behind (queue full)",
                |d| d.skipped as f64,
            ),
            (
                "dub_cues_failed",
                "Cues left unspoken because every synthesis provider failed",
                |d| d.failed as f64,
            ),
            (
                "dub_cues_expired",
                "Cues whose speech came after their end was published",
                |d| d.expired as f64,
            ),
            (
                "dub_cues_late",
                "Cues whose speech started after their start",
                |d| d.late as f64,
            ),
            (
                "dub_late_seconds",
                "How late late cues started, in all",
                |d| d.late_ms as f64 / 1e3,
            ),
            (
                "dub_cues_stretched",
                "Cues sped up (at most 1.3x) to fit",
                |d| d.stretched as f64,
            ),
            (
                "dub_cues_cut",
                "Cues cut at their end (too long even sped up)",
                |d| d.cut as f64,
            ),
            (
                "dub_packets",
                "Opus packets published on dubbed audio tracks",
                |d| d.packets as f64,
            ),
        ];
        for (name, help, field) in dub_counters {
            counter(&mut e, name, help, per_dub(field))?;
        }
        gauge(
            &mut e,
            "dub_synthesis_seconds_avg",
            "Mean time from a translated cue to its speech being placed",
            per_dub(|d| d.synth_ms_sum as f64 / 1e3 / d.synth_count.max(1) as f64),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_counters_and_providers() {
        let m = Metrics::default();
        m.set_status("demo", Status::Captioning, None);
        m.set_status("radio\"x", Status::NoAudio, Some("no audio track".into()));
        m.audio_skipped("demo", 1500);
        m.inference(true, 2000, Duration::from_millis(500));
        m.with_translation("demo", "es", |t| {
            t.cues += 2;
            t.skipped += 1;
        });
        m.call("translate", "apertium");
        m.latency("translate", "apertium", Duration::from_millis(20));
        m.failure("translate", "apertium", Failure::Timeout);
        m.fallback("translate", "apertium");
        m.health("translate", "en-es", "apertium", false);
        let text = m.render();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        has("moqcast_sidecar_broadcast_status{broadcast=\"demo\",status=\"captioning\"} 1.0");
        has("moqcast_sidecar_broadcast_status{broadcast=\"radio\\\"x\",status=\"no_audio\"} 1.0");
        has("moqcast_sidecar_audio_skipped_seconds_total{broadcast=\"demo\"} 1.5");
        has("moqcast_sidecar_real_time_factor 0.25");
        has("moqcast_sidecar_inferences_total{kind=\"final\"} 1");
        has("moqcast_sidecar_translated_cues_total{broadcast=\"demo\",lang=\"es\"} 2.0");
        has("moqcast_sidecar_translations_skipped_total{broadcast=\"demo\",lang=\"es\"} 1.0");
        has("moqcast_sidecar_provider_calls_total{stage=\"translate\",provider=\"apertium\"} 1");
        has("moqcast_sidecar_provider_errors_total{stage=\"translate\",provider=\"apertium\",failure=\"timeout\"} 1");
        has(
            "moqcast_sidecar_provider_fallbacks_total{stage=\"translate\",provider=\"apertium\"} 1",
        );
        has("moqcast_sidecar_provider_up{stage=\"translate\",chain=\"en-es\",provider=\"apertium\"} 0");
        assert!(text.contains(
            "moqcast_sidecar_provider_latency_seconds_count{stage=\"translate\",provider=\"apertium\"} 1"
        ));
        let json = m.status_json();
        assert_eq!(json["broadcasts"]["radio\"x"]["status"], "no_audio");
        assert_eq!(json["broadcasts"]["demo"]["translations"]["es"]["cues"], 2);
    }
}

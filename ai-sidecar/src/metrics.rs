//! Sidecar counters and per-broadcast status, rendered as Prometheus text (`GET /metrics`) and
//! JSON (`GET /status`) on the sidecar's own HTTP port.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::recognize::Degradation;

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
        }
    }
}

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    broadcasts: Mutex<BTreeMap<String, BroadcastMetrics>>,
    inference_us: AtomicU64,
    inference_audio_ms: AtomicU64,
    inferences_partial: AtomicU64,
    inferences_final: AtomicU64,
    queued_ms: AtomicU64,
    hallucinations: AtomicU64,
    recognition_errors: AtomicU64,
    results_dropped: AtomicU64,
}

impl Metrics {
    /// Updates one broadcast's figures.
    pub fn with(&self, broadcast: &str, f: impl FnOnce(&mut BroadcastMetrics)) {
        if let Ok(mut map) = self.broadcasts.lock() {
            f(map.entry(broadcast.to_string()).or_default());
        }
    }

    pub fn set_status(&self, broadcast: &str, status: Status, detail: Option<String>) {
        self.with(broadcast, |b| {
            b.status = status;
            b.detail = detail;
        });
    }

    pub fn broadcast(&self, broadcast: &str) -> Option<BroadcastMetrics> {
        self.broadcasts.lock().ok()?.get(broadcast).cloned()
    }

    pub fn degraded(&self, broadcast: &str, d: Degradation) {
        self.with(broadcast, |b| match d {
            Degradation::PartialSuperseded => b.partials_superseded += 1,
            Degradation::Merged => b.merged += 1,
            Degradation::Skipped { audio_ms } => b.skipped_ms += audio_ms,
        });
    }

    pub fn inference(&self, is_final: bool, audio_ms: u64, took: Duration) {
        self.inference_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.inference_audio_ms
            .fetch_add(audio_ms, Ordering::Relaxed);
        let n = if is_final {
            &self.inferences_final
        } else {
            &self.inferences_partial
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_queued_ms(&self, ms: u64) {
        self.queued_ms.store(ms, Ordering::Relaxed);
    }

    pub fn hallucination(&self) {
        self.hallucinations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn recognition_error(&self) {
        self.recognition_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn result_dropped(&self) {
        self.results_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Inference time over audio time of everything recognised so far.
    pub fn real_time_factor(&self) -> f64 {
        let audio = self.inference_audio_ms.load(Ordering::Relaxed);
        if audio == 0 {
            return 0.0;
        }
        self.inference_us.load(Ordering::Relaxed) as f64 / 1000.0 / audio as f64
    }

    /// `GET /status`: every broadcast's figures as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let map = self
            .broadcasts
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        serde_json::json!({
            "broadcasts": map,
            "real_time_factor": self.real_time_factor(),
            "queued_audio_ms": self.queued_ms.load(Ordering::Relaxed),
        })
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut single = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        single(
            "moqcast_sidecar_inference_seconds_total",
            "counter",
            "Time spent in speech recognition",
            format!("{:.6}", get(&self.inference_us) as f64 / 1e6),
        );
        single(
            "moqcast_sidecar_inference_audio_seconds_total",
            "counter",
            "Audio recognised (partials count each time they are recognised)",
            format!("{:.3}", get(&self.inference_audio_ms) as f64 / 1e3),
        );
        single(
            "moqcast_sidecar_real_time_factor",
            "gauge",
            "Inference time over audio time so far (below 1 keeps up)",
            format!("{:.4}", self.real_time_factor()),
        );
        single(
            "moqcast_sidecar_queued_audio_seconds",
            "gauge",
            "Final utterances waiting for recognition",
            format!("{:.3}", get(&self.queued_ms) as f64 / 1e3),
        );
        single(
            "moqcast_sidecar_hallucinations_total",
            "counter",
            "Results dropped as no speech (no_speech_prob high, low confidence)",
            get(&self.hallucinations).to_string(),
        );
        single(
            "moqcast_sidecar_recognition_errors_total",
            "counter",
            "Recognitions that failed",
            get(&self.recognition_errors).to_string(),
        );
        single(
            "moqcast_sidecar_results_dropped_total",
            "counter",
            "Results dropped because a broadcast could not take them",
            get(&self.results_dropped).to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP moqcast_sidecar_inferences_total Recognitions run\n# TYPE moqcast_sidecar_inferences_total counter"
        );
        for (kind, v) in [
            ("partial", &self.inferences_partial),
            ("final", &self.inferences_final),
        ] {
            let _ = writeln!(
                s,
                "moqcast_sidecar_inferences_total{{kind=\"{kind}\"}} {}",
                get(v)
            );
        }
        let map = self
            .broadcasts
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let label = |b: &str| b.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            s,
            "# HELP moqcast_sidecar_broadcast_status What the sidecar does for a broadcast (1 for the current status)\n# TYPE moqcast_sidecar_broadcast_status gauge"
        );
        for (name, b) in &map {
            for st in Status::ALL {
                let _ = writeln!(
                    s,
                    "moqcast_sidecar_broadcast_status{{broadcast=\"{}\",status=\"{}\"}} {}",
                    label(name),
                    st.name(),
                    u8::from(b.status == st)
                );
            }
        }
        type Field = fn(&BroadcastMetrics) -> String;
        let rows: [(&str, &str, &str, Field); 9] = [
            (
                "moqcast_sidecar_caption_subscribers",
                "gauge",
                "Subscriptions to the broadcast's caption track",
                |b| b.subscribers.to_string(),
            ),
            (
                "moqcast_sidecar_audio_seconds_total",
                "counter",
                "Audio decoded",
                |b| format!("{:.3}", b.audio_ms as f64 / 1e3),
            ),
            (
                "moqcast_sidecar_decode_errors_total",
                "counter",
                "Audio objects that could not be decoded",
                |b| b.decode_errors.to_string(),
            ),
            (
                "moqcast_sidecar_partial_cues_total",
                "counter",
                "Partial cues published",
                |b| b.partial_cues.to_string(),
            ),
            (
                "moqcast_sidecar_final_cues_total",
                "counter",
                "Final cues published",
                |b| b.final_cues.to_string(),
            ),
            (
                "moqcast_sidecar_partials_superseded_total",
                "counter",
                "Partials replaced by newer ones before recognition (behind real time)",
                |b| b.partials_superseded.to_string(),
            ),
            (
                "moqcast_sidecar_utterances_merged_total",
                "counter",
                "Final utterances merged into one recognition (behind real time)",
                |b| b.merged.to_string(),
            ),
            (
                "moqcast_sidecar_audio_skipped_seconds_total",
                "counter",
                "Speech skipped without captions (far behind real time)",
                |b| format!("{:.3}", b.skipped_ms as f64 / 1e3),
            ),
            (
                "moqcast_sidecar_final_cue_delay_seconds_avg",
                "gauge",
                "Mean delay from an utterance's end to its final cue",
                |b| {
                    format!(
                        "{:.3}",
                        b.final_delay_ms_sum as f64 / 1e3 / b.final_delay_count.max(1) as f64
                    )
                },
            ),
        ];
        for (name, kind, help, field) in rows {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (b, m) in &map {
                let _ = writeln!(s, "{name}{{broadcast=\"{}\"}} {}", label(b), field(m));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_and_counters() {
        let m = Metrics::default();
        m.set_status("demo", Status::Captioning, None);
        m.set_status("radio\"x", Status::NoAudio, Some("no audio track".into()));
        m.degraded("demo", Degradation::Skipped { audio_ms: 1500 });
        m.inference(true, 2000, Duration::from_millis(500));
        let text = m.render();
        assert!(text.contains(
            "moqcast_sidecar_broadcast_status{broadcast=\"demo\",status=\"captioning\"} 1"
        ));
        assert!(text.contains(
            "moqcast_sidecar_broadcast_status{broadcast=\"radio\\\"x\",status=\"no_audio\"} 1"
        ));
        assert!(
            text.contains("moqcast_sidecar_audio_skipped_seconds_total{broadcast=\"demo\"} 1.500")
        );
        assert!(text.contains("moqcast_sidecar_real_time_factor 0.2500"));
        let json = m.status_json();
        assert_eq!(json["broadcasts"]["radio\"x"]["status"], "no_audio");
    }
}

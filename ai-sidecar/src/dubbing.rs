//! Dubbed audio tracks (`--dub LANG`): the translated final cues of a language, spoken by its
//! synthesis chain and published as `audio-<lang>` (Opus, LOC) in `<broadcast>/ai`.
//!
//! * [`DubLane`] runs while the dub track has subscribers: a bounded queue of cues and one task
//!   that speaks them in order through the language's [`Chain`] and resamples the speech to
//!   48 kHz. A cue that arrives while the queue is full pushes the oldest waiting one out
//!   (counted): the dub skips rather than drifts.
//! * [`DubOutput`] places the speech on the [`Timeline`] and, as the source audio arrives,
//!   encodes the frames up to the source's media time less the dub's delay and writes them,
//!   a group per second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moqcast_client::TrackPublisher;
use moqcast_media::loc::{LocProperties, TIMESCALE_US};
use tokio::sync::{mpsc, Notify};

use crate::dub::{self, Placement, Timeline, Upsampler};
use crate::opus_out::OpusEncoder;
use crate::stage::{Chain, SynthRequest, Synthesis};
use crate::translate::TranslatedCue;

/// Frames per group (one second).
pub const FRAMES_PER_GROUP: u64 = 50;

/// The name of a dub track.
pub fn dub_track_name(lang: &str) -> String {
    format!("audio-{lang}")
}

/// A cue's speech, ready to place.
#[derive(Debug, Clone)]
pub struct SpokenCue {
    pub utterance: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub lang: String,
    /// 48 kHz mono.
    pub samples: Vec<f32>,
    /// Which provider spoke it is in the chain's metrics; this is how long the cue waited and
    /// was spoken.
    pub took: Duration,
}

/// What a dub lane reports.
#[derive(Debug, Clone)]
pub enum DubEvent {
    Spoken(SpokenCue),
    /// Cues pushed out of the full queue.
    Skipped {
        lang: String,
        cues: u64,
    },
    /// A cue every provider of the chain failed.
    Failed {
        lang: String,
        utterance: u64,
    },
}

struct LaneShared {
    queue: Mutex<VecDeque<(TranslatedCue, Instant)>>,
    wake: Notify,
}

/// One broadcast's speech synthesis for one dub language. Dropping it stops its task and drops
/// the cues it has queued.
pub struct DubLane {
    lang: String,
    capacity: usize,
    shared: Arc<LaneShared>,
    events: mpsc::Sender<DubEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl DubLane {
    pub fn start(
        chain: Chain<Synthesis>,
        lang: &str,
        capacity: usize,
        events: mpsc::Sender<DubEvent>,
    ) -> Self {
        let shared = Arc::new(LaneShared {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(chain, lang.to_string(), shared.clone(), events.clone()));
        Self {
            lang: lang.to_string(),
            capacity: capacity.max(1),
            shared,
            events,
            task,
        }
    }

    pub fn lang(&self) -> &str {
        &self.lang
    }

    /// Queues a translated cue; never waits.
    pub fn submit(&self, cue: TranslatedCue) {
        let mut skipped = 0;
        {
            let mut q = self.shared.queue.lock().expect("dub lane lock");
            while q.len() >= self.capacity {
                q.pop_front();
                skipped += 1;
            }
            q.push_back((cue, Instant::now()));
        }
        self.shared.wake.notify_one();
        if skipped > 0 {
            let _ = self.events.try_send(DubEvent::Skipped {
                lang: self.lang.clone(),
                cues: skipped,
            });
        }
    }
}

impl Drop for DubLane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    chain: Chain<Synthesis>,
    lang: String,
    shared: Arc<LaneShared>,
    events: mpsc::Sender<DubEvent>,
) {
    chain.warm().await;
    loop {
        let next = shared.queue.lock().expect("dub lane lock").pop_front();
        let Some((cue, queued)) = next else {
            shared.wake.notified().await;
            continue;
        };
        // A cue that continues a sentence may start with its punctuation (". El tiempo"):
        // some voices pause for it.
        let text = cue
            .text
            .trim_start_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
            .to_string();
        if text.is_empty() {
            continue;
        }
        let request = SynthRequest {
            text,
            language: lang.clone(),
        };
        let event = match chain.call(request).await {
            Ok(speech) => match dub::resample(
                dub::trim_silence(&speech.samples, speech.rate),
                speech.rate,
                dub::RATE,
            ) {
                Ok(samples) => DubEvent::Spoken(SpokenCue {
                    utterance: cue.utterance,
                    start_us: cue.start_us,
                    end_us: cue.end_us,
                    lang: lang.clone(),
                    samples,
                    took: queued.elapsed(),
                }),
                Err(e) => {
                    tracing::warn!(lang = %lang, error = %e, "speech could not be resampled");
                    DubEvent::Failed {
                        lang: lang.clone(),
                        utterance: cue.utterance,
                    }
                }
            },
            Err(e) => {
                tracing::warn!(lang = %lang, utterance = cue.utterance, error = %e, "cue not spoken");
                DubEvent::Failed {
                    lang: lang.clone(),
                    utterance: cue.utterance,
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// The dub's timeline, encoder and group count for one published track (see the module
/// documentation).
pub struct DubOutput {
    lang: String,
    timeline: Timeline,
    encoder: OpusEncoder,
    upsampler: Option<Upsampler>,
    delay_us: u64,
    written: u64,
}

impl DubOutput {
    /// `original_db`: mix the original audio (16 kHz, as decoded for recognition) under the
    /// voice at this level. `delay`: how far the dub runs behind the source.
    pub fn new(lang: &str, original_db: Option<f32>, delay: Duration) -> anyhow::Result<Self> {
        let upsampler = match original_db {
            Some(_) => Some(Upsampler::new(16_000).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(Self {
            lang: lang.to_string(),
            timeline: Timeline::new(original_db),
            encoder: OpusEncoder::new()?,
            upsampler,
            delay_us: delay.as_micros() as u64,
            written: 0,
        })
    }

    pub fn lang(&self) -> &str {
        &self.lang
    }

    pub fn counters(&self) -> &dub::Counters {
        &self.timeline.counters
    }

    /// Places a cue's speech; `None` when it came after its cue's end had been published.
    pub fn speech(&mut self, cue: SpokenCue) -> Option<Placement> {
        self.timeline.place(cue.start_us, cue.end_us, cue.samples)
    }

    /// The source audio from `start_us` (16 kHz mono) arrived: writes the dub's frames up to
    /// its end less the delay. Returns the frames written.
    pub fn source_audio(
        &mut self,
        start_us: u64,
        samples: &[f32],
        track: &mut TrackPublisher,
    ) -> anyhow::Result<u64> {
        if let Some(u) = &mut self.upsampler {
            for (t, piece) in u.push(start_us, samples) {
                self.timeline.push_original(t, piece);
            }
        }
        let end = start_us + samples.len() as u64 * 1_000_000 / 16_000;
        let mut n = 0;
        for frame in self.timeline.pull(end.saturating_sub(self.delay_us)) {
            for (ts, packet) in self.encoder.encode(&frame)? {
                if self.written % FRAMES_PER_GROUP == 0 {
                    track.start_group()?;
                }
                let mut props = LocProperties::media_time(ts, TIMESCALE_US);
                props.send_time_us = Some(moqcast_media::time::unix_micros());
                track.write(props.to_extension_headers(), Bytes::from(packet))?;
                self.written += 1;
                n += 1;
            }
        }
        Ok(n)
    }
}

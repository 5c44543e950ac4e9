//! The recognition worker: one thread owns the model and serves every captioned broadcast
//! from a bounded queue.
//!
//! [`Backlog`] is the queue policy, plain code without I/O or threads:
//!
//! * a broadcast has at most one partial waiting; a newer partial replaces it (a stale partial
//!   is worth nothing once a longer one exists), and a final removes its utterance's partial;
//! * finals wait in order, bounded by the seconds of audio they hold. When inference falls
//!   behind and the bound is passed, the two oldest finals are **merged** into one job (one
//!   encoder pass instead of two) while they fit Whisper's window, and otherwise the oldest is
//!   **skipped**. Both are counted ([`Degradation`]), never queued without bound;
//! * the worker takes finals before partials, oldest first, across broadcasts.
//!
//! [`Recognizer`] runs the worker thread; each broadcast talks to it through a [`Lane`], whose
//! drop withdraws the broadcast's queued work.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::segment::{Utterance, SAMPLE_RATE};

/// Longest job: Whisper sees 30 s at most.
pub const MAX_JOB_MS: u64 = 29_000;

/// What a transcriber returns for one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub text: String,
    /// Mean log-probability of the chosen tokens.
    pub avg_logprob: f32,
    /// Probability that the audio holds no speech.
    pub no_speech_prob: f32,
    /// The language heard (BCP 47), when the recogniser says (detected with `--language auto`).
    pub language: Option<String>,
}

/// A speech recogniser the worker can drive (Whisper in production).
pub trait Transcriber: Send + 'static {
    /// Transcribes 16 kHz mono audio; `is_final` asks for the best (slower) decode.
    fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String>;

    /// As [`Self::transcribe`], in `language` (BCP 47) when given: a broadcast whose language
    /// was detected keeps it (set up to detect, a recogniser would otherwise detect it again for
    /// each utterance). By default the language is ignored.
    fn transcribe_in(
        &mut self,
        samples: &[f32],
        is_final: bool,
        language: Option<&str>,
    ) -> Result<Text, String> {
        let _ = language;
        self.transcribe(samples, is_final)
    }

    /// As [`Self::transcribe_in`], for an utterance of `stream` (the worker's lane, one per
    /// broadcast): a recogniser that keeps context across utterances (the local Whisper's
    /// audio context) keeps it per stream. By default the stream is ignored.
    fn transcribe_stream(
        &mut self,
        stream: u64,
        samples: &[f32],
        is_final: bool,
        language: Option<&str>,
    ) -> Result<Text, String> {
        let _ = stream;
        self.transcribe_in(samples, is_final, language)
    }
}

/// The worker's result for one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognized {
    pub utterance: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub is_final: bool,
    /// Empty when nothing was said (or it was judged a hallucination).
    pub text: String,
    /// How long inference took.
    pub inference: Duration,
    /// Seconds of audio recognised.
    pub audio_ms: u64,
    /// Ids of utterances merged into this one (their cues are replaced by this one).
    pub merged: Vec<u64>,
    /// The language heard, when the recogniser says.
    pub language: Option<String>,
    /// A final's audio, when the recogniser was started with [`Recognizer::keep_audio`] (for
    /// translation engines that translate speech).
    pub audio: Option<std::sync::Arc<[f32]>>,
}

/// Work the backlog gave up, to be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degradation {
    /// A waiting partial was replaced by a newer one.
    PartialSuperseded,
    /// Two finals were merged into one job.
    Merged,
    /// A final was dropped; this much audio will have no caption.
    Skipped { audio_ms: u64 },
}

#[derive(Debug)]
struct Job {
    utterance: Utterance,
    merged: Vec<u64>,
    queued_at: Instant,
}

#[derive(Debug, Default)]
struct LaneQueue {
    partial: Option<Job>,
    finals: VecDeque<Job>,
}

fn audio_ms(u: &Utterance) -> u64 {
    u.samples.len() as u64 * 1000 / SAMPLE_RATE
}

/// The queue policy (see the module documentation).
#[derive(Debug)]
pub struct Backlog {
    /// Most seconds of final audio waiting per broadcast.
    max_backlog_ms: u64,
    lanes: BTreeMap<u64, LaneQueue>,
}

impl Backlog {
    pub fn new(max_backlog_ms: u64) -> Self {
        Self {
            max_backlog_ms,
            lanes: BTreeMap::new(),
        }
    }

    pub fn open(&mut self, lane: u64) {
        self.lanes.entry(lane).or_default();
    }

    /// Drops a lane and everything it has queued.
    pub fn close(&mut self, lane: u64) {
        self.lanes.remove(&lane);
    }

    /// Audio waiting in finals, ms, over all lanes.
    pub fn queued_ms(&self) -> u64 {
        self.lanes
            .values()
            .flat_map(|l| l.finals.iter())
            .map(|j| audio_ms(&j.utterance))
            .sum()
    }

    /// Queues an utterance for `lane` at time `now`; returns what had to give way.
    pub fn submit(&mut self, lane: u64, utterance: Utterance, now: Instant) -> Vec<Degradation> {
        let mut out = Vec::new();
        let Some(l) = self.lanes.get_mut(&lane) else {
            return out;
        };
        let job = Job {
            utterance,
            merged: Vec::new(),
            queued_at: now,
        };
        if !job.utterance.is_final {
            if l.partial.replace(job).is_some() {
                out.push(Degradation::PartialSuperseded);
            }
            return out;
        }
        if l.partial
            .as_ref()
            .is_some_and(|p| p.utterance.id == job.utterance.id)
        {
            l.partial = None;
        }
        l.finals.push_back(job);
        let max = self.max_backlog_ms;
        loop {
            let queued: u64 = l.finals.iter().map(|j| audio_ms(&j.utterance)).sum();
            if queued <= max || l.finals.len() < 2 {
                break;
            }
            let a = audio_ms(&l.finals[0].utterance);
            let b = audio_ms(&l.finals[1].utterance);
            if a + b <= MAX_JOB_MS {
                let first = l.finals.pop_front().expect("two finals");
                let second = l.finals.front_mut().expect("two finals");
                let mut samples = first.utterance.samples;
                samples.extend_from_slice(&second.utterance.samples);
                second.utterance.samples = samples;
                second.utterance.start_us = first.utterance.start_us;
                second.merged.push(first.utterance.id);
                second.merged.extend(first.merged);
                second.queued_at = first.queued_at;
                out.push(Degradation::Merged);
            } else {
                let dropped = l.finals.pop_front().expect("two finals");
                out.push(Degradation::Skipped {
                    audio_ms: audio_ms(&dropped.utterance),
                });
            }
        }
        out
    }

    /// The next job: the oldest final of any lane, else the oldest partial.
    fn take(&mut self) -> Option<(u64, Job)> {
        let oldest_final = self
            .lanes
            .iter()
            .filter_map(|(id, l)| l.finals.front().map(|j| (*id, j.queued_at)))
            .min_by_key(|(_, t)| *t)
            .map(|(id, _)| id);
        if let Some(id) = oldest_final {
            let job = self.lanes.get_mut(&id)?.finals.pop_front()?;
            return Some((id, job));
        }
        let oldest_partial = self
            .lanes
            .iter()
            .filter_map(|(id, l)| l.partial.as_ref().map(|j| (*id, j.queued_at)))
            .min_by_key(|(_, t)| *t)
            .map(|(id, _)| id)?;
        let job = self.lanes.get_mut(&oldest_partial)?.partial.take()?;
        Some((oldest_partial, job))
    }

    /// The next utterance to recognise, for tests and the worker.
    pub fn next_job(&mut self) -> Option<(u64, Utterance, Vec<u64>)> {
        self.take().map(|(id, j)| (id, j.utterance, j.merged))
    }
}

/// When a result is dropped as a likely hallucination (OpenAI's rule: the model thinks there is
/// no speech and is not confident in what it wrote).
pub fn is_hallucination(t: &Text) -> bool {
    (t.no_speech_prob > 0.6 && t.avg_logprob < -1.0) || t.avg_logprob < -2.0
}

struct Shared {
    backlog: Mutex<(Backlog, BTreeMap<u64, mpsc::Sender<Recognized>>, bool)>,
    wake: Condvar,
    metrics: Arc<Metrics>,
    keep_audio: std::sync::atomic::AtomicBool,
    /// The language of each lane that has one.
    languages: Mutex<BTreeMap<u64, String>>,
}

/// Runs the recognition worker thread. Dropping it stops the thread after the current job.
pub struct Recognizer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_lane: std::sync::atomic::AtomicU64,
}

/// One broadcast's access to the [`Recognizer`]. Dropping it withdraws its queued work.
pub struct Lane {
    id: u64,
    broadcast: String,
    shared: Arc<Shared>,
}

impl Recognizer {
    pub fn start(
        mut transcriber: impl Transcriber,
        max_backlog_ms: u64,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            backlog: Mutex::new((Backlog::new(max_backlog_ms), BTreeMap::new(), false)),
            wake: Condvar::new(),
            metrics,
            keep_audio: Default::default(),
            languages: Default::default(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("recognizer".into())
            .spawn(move || loop {
                let (lane, job, tx, language) = {
                    let mut guard = worker.backlog.lock().expect("recognizer lock");
                    loop {
                        if guard.2 {
                            return;
                        }
                        if let Some((lane, job)) = guard.0.take() {
                            let tx = guard.1.get(&lane).cloned();
                            let language = worker
                                .languages
                                .lock()
                                .ok()
                                .and_then(|l| l.get(&lane).cloned());
                            worker
                                .metrics
                                .set_queued_ms(guard.0.queued_ms());
                            break (lane, job, tx, language);
                        }
                        guard = worker.wake.wait(guard).expect("recognizer lock");
                    }
                };
                let Some(tx) = tx else { continue };
                let u = job.utterance;
                let started = Instant::now();
                let res =
                    transcriber.transcribe_stream(lane, &u.samples, u.is_final, language.as_deref());
                let inference = started.elapsed();
                let ms = audio_ms(&u);
                worker.metrics.inference(u.is_final, ms, inference);
                let (text, language) = match res {
                    Ok(t) if is_hallucination(&t) => {
                        tracing::debug!(lane, text = %t.text, t.avg_logprob, t.no_speech_prob, "dropped as no speech");
                        worker.metrics.hallucination();
                        (String::new(), None)
                    }
                    Ok(t) => (t.text, t.language),
                    Err(e) => {
                        tracing::warn!(lane, error = %e, "recognition failed");
                        worker.metrics.recognition_error();
                        (String::new(), None)
                    }
                };
                let keep = u.is_final
                    && !text.is_empty()
                    && worker.keep_audio.load(std::sync::atomic::Ordering::Relaxed);
                let result = Recognized {
                    utterance: u.id,
                    start_us: u.start_us,
                    end_us: u.end_us,
                    is_final: u.is_final,
                    text,
                    inference,
                    audio_ms: ms,
                    merged: job.merged,
                    language,
                    audio: keep.then(|| std::sync::Arc::from(u.samples)),
                };
                if tx.try_send(result).is_err() {
                    worker.metrics.result_dropped();
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
            next_lane: Default::default(),
        })
    }

    /// Hands each final result its audio ([`Recognized::audio`]), for a translation engine that
    /// translates speech (Whisper's translate task).
    pub fn keep_audio(&self, keep: bool) {
        self.shared
            .keep_audio
            .store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    /// Opens a lane for `broadcast` whose speech is in `language` (see
    /// [`Transcriber::transcribe_in`]).
    pub fn lane_in(&self, broadcast: &str, language: &str) -> (Lane, mpsc::Receiver<Recognized>) {
        let (lane, rx) = self.lane(broadcast);
        if let Ok(mut l) = self.shared.languages.lock() {
            l.insert(lane.id, language.to_string());
        }
        (lane, rx)
    }

    /// Opens a lane for `broadcast`; its results arrive on the receiver (bounded).
    pub fn lane(&self, broadcast: &str) -> (Lane, mpsc::Receiver<Recognized>) {
        let id = self
            .next_lane
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(32);
        let mut guard = self.shared.backlog.lock().expect("recognizer lock");
        guard.0.open(id);
        guard.1.insert(id, tx);
        drop(guard);
        (
            Lane {
                id,
                broadcast: broadcast.to_string(),
                shared: self.shared.clone(),
            },
            rx,
        )
    }
}

impl Drop for Recognizer {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.shared.backlog.lock() {
            guard.2 = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Lane {
    /// Queues an utterance; degradations are counted in the metrics.
    pub fn submit(&self, utterance: Utterance) {
        let mut guard = self.shared.backlog.lock().expect("recognizer lock");
        let metrics = &self.shared.metrics;
        for d in guard.0.submit(self.id, utterance, Instant::now()) {
            match d {
                Degradation::PartialSuperseded => metrics.partial_superseded(&self.broadcast),
                Degradation::Merged => metrics.utterances_merged(&self.broadcast),
                Degradation::Skipped { audio_ms } => {
                    metrics.audio_skipped(&self.broadcast, audio_ms)
                }
            }
        }
        self.shared.metrics.set_queued_ms(guard.0.queued_ms());
        drop(guard);
        self.shared.wake.notify_one();
    }

    /// Withdraws everything this lane has queued (the lane stays open).
    pub fn clear(&self) {
        let mut guard = self.shared.backlog.lock().expect("recognizer lock");
        guard.0.close(self.id);
        guard.0.open(self.id);
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.shared.backlog.lock() {
            guard.0.close(self.id);
            guard.1.remove(&self.id);
        }
        if let Ok(mut l) = self.shared.languages.lock() {
            l.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utt(id: u64, start_s: u64, secs: u64, is_final: bool) -> Utterance {
        Utterance {
            id,
            start_us: start_s * 1_000_000,
            end_us: (start_s + secs) * 1_000_000,
            samples: vec![0.0; (secs * SAMPLE_RATE) as usize],
            is_final,
        }
    }

    #[test]
    fn partials_coalesce_and_finals_come_first() {
        let mut b = Backlog::new(20_000);
        let t = Instant::now();
        b.open(1);
        b.open(2);
        assert!(b.submit(1, utt(0, 0, 1, false), t).is_empty());
        assert_eq!(
            b.submit(1, utt(0, 0, 2, false), t),
            vec![Degradation::PartialSuperseded]
        );
        b.submit(2, utt(5, 0, 1, false), t);
        b.submit(2, utt(4, 0, 3, true), t + Duration::from_millis(1));
        let (lane, u, _) = b.next_job().unwrap();
        assert_eq!((lane, u.id, u.is_final), (2, 4, true), "final first");
        let (lane, u, _) = b.next_job().unwrap();
        assert_eq!(
            (lane, u.id, u.samples.len()),
            (1, 0, 32_000),
            "newest partial"
        );
        let (lane, u, _) = b.next_job().unwrap();
        assert_eq!((lane, u.id), (2, 5));
        assert!(b.next_job().is_none());
        // A final removes its own partial.
        b.submit(1, utt(7, 0, 1, false), t);
        b.submit(1, utt(7, 0, 2, true), t);
        assert!(b.next_job().unwrap().1.is_final);
        assert!(b.next_job().is_none());
    }

    #[test]
    fn a_backlog_merges_then_skips_and_stays_bounded() {
        let mut b = Backlog::new(10_000);
        let t = Instant::now();
        b.open(1);
        let mut degradations = Vec::new();
        for i in 0..4 {
            degradations.extend(b.submit(1, utt(i, i * 5, 4, true), t));
        }
        // Past 10 s queued, the oldest finals merge (one encoder pass) while they fit in one
        // Whisper window: all four become one 16 s job.
        assert_eq!(degradations, vec![Degradation::Merged; 3]);
        assert_eq!(b.queued_ms(), 16_000);
        for i in 4..12 {
            degradations.extend(b.submit(1, utt(i, i * 5, 6, true), t));
            assert!(b.queued_ms() <= MAX_JOB_MS + 6_000, "{}", b.queued_ms());
        }
        // A merged job cannot grow past the window: then the oldest is skipped.
        assert!(degradations
            .iter()
            .any(|d| matches!(d, Degradation::Skipped { audio_ms } if *audio_ms >= 4_000)));
        let (_, first, merged) = b.next_job().unwrap();
        assert!(first.samples.len() as u64 <= MAX_JOB_MS * 16);
        assert!(first.start_us < first.end_us);
        let _ = merged;
        b.close(1);
        assert!(b.next_job().is_none());
        assert_eq!(b.submit(1, utt(99, 0, 1, true), t), vec![], "closed lane");
    }

    #[test]
    fn merged_job_keeps_the_first_start_and_lists_ids() {
        let mut b = Backlog::new(3_000);
        let t = Instant::now();
        b.open(1);
        b.submit(1, utt(1, 10, 2, true), t);
        b.submit(1, utt(2, 13, 2, true), t);
        let (_, u, merged) = b.next_job().unwrap();
        assert_eq!((u.id, u.start_us, u.end_us), (2, 10_000_000, 15_000_000));
        assert_eq!(merged, vec![1]);
        assert_eq!(u.samples.len(), 64_000);
    }

    #[test]
    fn hallucination_rule() {
        let t = |avg_logprob, no_speech_prob| Text {
            text: "Thank you.".into(),
            avg_logprob,
            no_speech_prob,
            language: None,
        };
        assert!(is_hallucination(&t(-1.2, 0.9)));
        assert!(!is_hallucination(&t(-0.3, 0.9)));
        assert!(!is_hallucination(&t(-1.2, 0.1)));
        assert!(is_hallucination(&t(-2.5, 0.0)));
    }

    /// The worker thread end to end with a transcriber that reports what it heard.
    #[test]
    fn worker_serves_lanes_and_stops_on_drop() {
        struct Count;
        impl Transcriber for Count {
            fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String> {
                Ok(Text {
                    text: format!("{} {}", samples.len(), is_final),
                    avg_logprob: -0.1,
                    no_speech_prob: 0.0,
                    language: Some("en".into()),
                })
            }
        }
        let metrics = Arc::new(Metrics::default());
        let rec = Recognizer::start(Count, 10_000, metrics.clone()).unwrap();
        let (lane, mut rx) = rec.lane("demo");
        lane.submit(utt(3, 1, 2, true));
        let r = rx.blocking_recv().unwrap();
        assert_eq!(r.text, "32000 true");
        assert_eq!((r.utterance, r.start_us, r.audio_ms), (3, 1_000_000, 2000));
        assert_eq!(
            (r.language.as_deref(), r.audio.is_some()),
            (Some("en"), false)
        );
        rec.keep_audio(true);
        lane.submit(utt(4, 4, 1, true));
        let r = rx.blocking_recv().unwrap();
        assert_eq!(
            r.audio.map(|a| a.len()),
            Some(16_000),
            "a final keeps its audio"
        );
        drop(lane);
        drop(rec);
        assert!(rx.blocking_recv().is_none(), "lane closed");
    }

    /// Each lane (broadcast) is its own stream to the transcriber, so that context kept across
    /// utterances (Whisper's audio context) never mixes two broadcasts.
    #[test]
    fn each_lane_is_one_stream() {
        struct Streams;
        impl Transcriber for Streams {
            fn transcribe(&mut self, _: &[f32], _: bool) -> Result<Text, String> {
                Err("called without its stream".into())
            }
            fn transcribe_stream(
                &mut self,
                stream: u64,
                _: &[f32],
                is_final: bool,
                language: Option<&str>,
            ) -> Result<Text, String> {
                Ok(Text {
                    text: format!("stream {stream} {is_final} {language:?}"),
                    avg_logprob: -0.1,
                    no_speech_prob: 0.0,
                    language: None,
                })
            }
        }
        let rec = Recognizer::start(Streams, 10_000, Arc::new(Metrics::default())).unwrap();
        let (a, mut rx_a) = rec.lane("a");
        let (b, mut rx_b) = rec.lane_in("b", "es");
        a.submit(utt(1, 0, 1, true));
        let first_a = rx_a.blocking_recv().unwrap().text;
        b.submit(utt(1, 0, 1, false));
        let first_b = rx_b.blocking_recv().unwrap().text;
        a.submit(utt(2, 2, 1, true));
        assert_eq!(
            rx_a.blocking_recv().unwrap().text,
            first_a,
            "same lane, same stream"
        );
        assert!(first_a.ends_with("true None"), "{first_a}");
        assert!(first_b.ends_with("false Some(\"es\")"), "{first_b}");
        let stream = |t: &str| t.split(' ').nth(1).unwrap().to_string();
        assert_ne!(stream(&first_a), stream(&first_b), "two lanes, two streams");
    }
}

//! Translated captions: each final cue of the source captions, translated into each target
//! language that has subscribers, keeping the source cue's id and media times.
//!
//! One [`LanguageLane`] per broadcast and target language runs while that language's caption
//! track has subscribers. It owns a bounded queue ([`Queue`], plain code without I/O) and one
//! task that translates the queued cues in order through the language pair's [`Chain`], with the
//! recent cues and their translations as context. When translation falls behind:
//!
//! * a cue that arrives while the queue is full pushes the oldest waiting cue out;
//! * a cue that waited longer than the maximum wait is dropped when its turn comes.
//!
//! Both are counted ([`LaneEvent::Skipped`]). The source captions never wait for translation:
//! [`LanguageLane::submit`] never blocks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::stage::{Chain, TranslateRequest, Translation};

/// Earlier cues given to the translator as context.
pub const CONTEXT_CUES: usize = 3;

/// A final source cue to translate.
#[derive(Debug, Clone)]
pub struct SourceCue {
    pub utterance: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub text: String,
    /// The utterance's audio, for engines that translate speech (Whisper's translate task).
    pub audio: Option<Arc<[f32]>>,
}

/// A translated cue, with the source cue's id and times.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedCue {
    pub utterance: u64,
    pub start_us: u64,
    pub end_us: u64,
    pub lang: String,
    pub text: String,
    /// How long the cue waited and was translated.
    pub took: Duration,
}

/// What a lane reports besides translations.
#[derive(Debug, Clone, PartialEq)]
pub enum LaneEvent {
    Translated(TranslatedCue),
    /// Cues dropped because translation fell behind.
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

#[derive(Debug)]
struct Job {
    cue: SourceCue,
    queued_at: Instant,
}

/// The bounded queue of one lane (see the module documentation).
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    max_wait: Duration,
    jobs: VecDeque<Job>,
}

impl Queue {
    pub fn new(capacity: usize, max_wait: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_wait,
            jobs: VecDeque::new(),
        }
    }

    /// Queues a cue at `now`; returns how many older cues it pushed out.
    pub fn push(&mut self, cue: SourceCue, now: Instant) -> u64 {
        let mut skipped = 0;
        while self.jobs.len() >= self.capacity {
            self.jobs.pop_front();
            skipped += 1;
        }
        self.jobs.push_back(Job {
            cue,
            queued_at: now,
        });
        skipped
    }

    /// The next cue to translate at `now`, and how many too old to be worth it were dropped.
    pub fn pop(&mut self, now: Instant) -> (Option<(SourceCue, Instant)>, u64) {
        let mut skipped = 0;
        while let Some(job) = self.jobs.pop_front() {
            if now.duration_since(job.queued_at) > self.max_wait {
                skipped += 1;
                continue;
            }
            return (Some((job.cue, job.queued_at)), skipped);
        }
        (None, skipped)
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
}

/// One broadcast's translator into one language. Dropping it stops its task and drops the
/// cues it has queued.
pub struct LanguageLane {
    lang: String,
    shared: Arc<Shared>,
    events: mpsc::Sender<LaneEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl LanguageLane {
    /// Starts translating into `chain`'s target language, from `from` to `to`. Results and
    /// counts go to `events` (bounded: when its reader is slow the lane waits, never the
    /// source captions).
    pub fn start(
        chain: Chain<Translation>,
        from: &str,
        to: &str,
        queue: Queue,
        events: mpsc::Sender<LaneEvent>,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(
            chain,
            from.to_string(),
            to.to_string(),
            shared.clone(),
            events.clone(),
        ));
        Self {
            lang: to.to_string(),
            shared,
            events,
            task,
        }
    }

    pub fn lang(&self) -> &str {
        &self.lang
    }

    /// Queues a final cue; never waits.
    pub fn submit(&self, cue: SourceCue) {
        let skipped = self
            .shared
            .queue
            .lock()
            .expect("lane lock")
            .push(cue, Instant::now());
        self.shared.wake.notify_one();
        if skipped > 0 {
            // A full event channel loses a count rather than block the source captions.
            let _ = self.events.try_send(LaneEvent::Skipped {
                lang: self.lang.clone(),
                cues: skipped,
            });
        }
    }

    /// Cues waiting.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().expect("lane lock").len()
    }
}

impl Drop for LanguageLane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    chain: Chain<Translation>,
    from: String,
    to: String,
    shared: Arc<Shared>,
    events: mpsc::Sender<LaneEvent>,
) {
    // A program to start or data to load is paid for now, not by the first cue (which waits
    // in the queue if it comes sooner).
    chain.warm().await;
    let mut context: VecDeque<(String, String)> = VecDeque::new();
    loop {
        let (cue, queued_at) = loop {
            let (next, skipped) = shared.queue.lock().expect("lane lock").pop(Instant::now());
            if skipped > 0
                && events
                    .send(LaneEvent::Skipped {
                        lang: to.clone(),
                        cues: skipped,
                    })
                    .await
                    .is_err()
            {
                return;
            }
            match next {
                Some(job) => break job,
                None => shared.wake.notified().await,
            }
        };
        let request = TranslateRequest {
            text: cue.text.clone(),
            from: from.clone(),
            to: to.clone(),
            context: context.iter().cloned().collect(),
            audio: cue.audio.clone(),
        };
        let event = match chain.call(request).await {
            Ok(text) => {
                context.push_back((cue.text.clone(), text.clone()));
                while context.len() > CONTEXT_CUES {
                    context.pop_front();
                }
                LaneEvent::Translated(TranslatedCue {
                    utterance: cue.utterance,
                    start_us: cue.start_us,
                    end_us: cue.end_us,
                    lang: to.clone(),
                    text,
                    took: queued_at.elapsed(),
                })
            }
            Err(e) => {
                tracing::warn!(lang = %to, utterance = cue.utterance, error = %e, "cue not translated");
                LaneEvent::Failed {
                    lang: to.clone(),
                    utterance: cue.utterance,
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{BoxFuture, Member, NoMetrics, Provider, ProviderError};

    fn cue(n: u64) -> SourceCue {
        SourceCue {
            utterance: n,
            start_us: n * 1_000_000,
            end_us: n * 1_000_000 + 500_000,
            text: format!("cue {n}"),
            audio: None,
        }
    }

    #[test]
    fn the_queue_is_bounded_by_count_and_wait() {
        let t = Instant::now();
        let mut q = Queue::new(3, Duration::from_secs(5));
        for n in 0..3 {
            assert_eq!(q.push(cue(n), t), 0);
        }
        assert_eq!(q.push(cue(3), t), 1, "the oldest is pushed out");
        let (next, skipped) = q.pop(t);
        assert_eq!((next.unwrap().0.utterance, skipped), (1, 0));
        let (next, skipped) = q.pop(t + Duration::from_secs(6));
        assert_eq!((next.map(|n| n.0.utterance), skipped), (None, 2), "too old");
        assert!(q.is_empty());
    }

    /// Upper-cases, slowly, and says what context it saw.
    struct Upper(Duration);
    impl Provider<Translation> for Upper {
        fn name(&self) -> &str {
            "upper"
        }
        fn call(&self, r: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
            let d = self.0;
            Box::pin(async move {
                tokio::time::sleep(d).await;
                Ok(format!("{} [{}]", r.text.to_uppercase(), r.context.len()))
            })
        }
    }

    fn chain(delay: Duration) -> Chain<Translation> {
        Chain::new(
            "en-es",
            vec![Member {
                provider: Arc::new(Upper(delay)),
                timeout: Duration::from_secs(10),
                budget: Duration::from_secs(10),
                probe_every: Duration::from_secs(1),
            }],
            TranslateRequest::probe("en", "es"),
            Arc::new(NoMetrics),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn cues_come_out_in_order_with_their_ids_times_and_context() {
        let (tx, mut rx) = mpsc::channel(16);
        let lane = LanguageLane::start(
            chain(Duration::from_millis(50)),
            "en",
            "es",
            Queue::new(8, Duration::from_secs(10)),
            tx,
        );
        for n in 0..5 {
            lane.submit(cue(n));
        }
        for n in 0..5 {
            let LaneEvent::Translated(t) = rx.recv().await.unwrap() else {
                panic!("a translation")
            };
            assert_eq!(
                (t.utterance, t.start_us, t.end_us),
                (n, n * 1_000_000, n * 1_000_000 + 500_000)
            );
            assert_eq!(t.text, format!("CUE {n} [{}]", n.min(CONTEXT_CUES as u64)));
            assert_eq!(t.lang, "es");
        }
    }

    /// Records its warm-up and its calls, in order; warming takes a while.
    struct Warmed(Arc<Mutex<Vec<String>>>);
    impl Provider<Translation> for Warmed {
        fn name(&self) -> &str {
            "warmed"
        }
        fn call(&self, r: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
            self.0.lock().unwrap().push(format!("call {}", r.text));
            Box::pin(async move { Ok(r.text) })
        }
        fn warm(&self) -> BoxFuture<()> {
            let log = self.0.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                log.lock().unwrap().push("warm".into());
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_warms_its_translator_before_the_first_cue() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain = Chain::new(
            "en-es",
            vec![Member {
                provider: Arc::new(Warmed(log.clone())),
                timeout: Duration::from_secs(10),
                budget: Duration::from_secs(10),
                probe_every: Duration::from_secs(1),
            }],
            TranslateRequest::probe("en", "es"),
            Arc::new(NoMetrics),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let lane = LanguageLane::start(
            chain,
            "en",
            "es",
            Queue::new(8, Duration::from_secs(10)),
            tx,
        );
        tokio::task::yield_now().await;
        // A cue that comes during the warm-up waits for it, then is translated.
        lane.submit(cue(0));
        let LaneEvent::Translated(t) = rx.recv().await.unwrap() else {
            panic!("a translation")
        };
        assert_eq!(t.utterance, 0);
        assert_eq!(
            *log.lock().unwrap(),
            vec!["warm".to_string(), "call cue 0".to_string()]
        );
        // Warmed once per lane, not per cue.
        lane.submit(cue(1));
        rx.recv().await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_translator_skips_cues_and_counts_them() {
        let (tx, mut rx) = mpsc::channel(64);
        let lane = LanguageLane::start(
            chain(Duration::from_secs(1)),
            "en",
            "es",
            Queue::new(2, Duration::from_secs(10)),
            tx,
        );
        // Ten cues at once: one is being translated, two wait, seven are pushed out.
        for n in 0..10 {
            lane.submit(cue(n));
            tokio::task::yield_now().await;
        }
        assert!(lane.queued() <= 2);
        let mut translated = Vec::new();
        let mut skipped = 0;
        while translated.len() + skipped < 10 {
            match rx.recv().await.unwrap() {
                LaneEvent::Translated(t) => translated.push(t.utterance),
                LaneEvent::Skipped { cues, .. } => skipped += cues as usize,
                LaneEvent::Failed { .. } => panic!("no failures"),
            }
        }
        assert_eq!(translated, vec![0, 8, 9], "the first, then the newest");
        assert_eq!(skipped, 7);
        drop(lane);
    }
}

//! Pluggable stages with ordered fallback chains.
//!
//! A **stage** is one step of the sidecar's pipeline: speech recognition ([`Recognition`]),
//! translation ([`Translation`]) and speech synthesis for dubbed audio ([`Synthesis`]: text and
//! language in, PCM out), each with its own request and response types and the same [`Chain`]. A **provider** ([`Provider`]) is one engine that serves a
//! stage: local Whisper, an OpenAI-compatible endpoint, Apertium, Marian.
//!
//! A [`Chain`] is the ordered list of providers the configuration names for a stage, for
//! example `translate_chain = ["apertium", "openai-chat"]`. Each request goes to the first
//! healthy provider, and moves on to the next one when that provider
//!
//! * fails (an error, an HTTP 500, a dead program),
//! * runs past its **timeout** (the request is abandoned), or
//! * runs past its **latency budget**: the next provider is started at once while the slow one
//!   keeps running, and whichever answers first serves the request.
//!
//! Every request gets at most one answer, so a caption comes out once whatever fails. A
//! provider that failed or overran its budget is taken out of the rotation and **probed** in
//! the background (a canned request every [`Member::probe_every`]); when a probe answers within
//! the budget, the provider is taken back and serves again from the next request. While every
//! provider is down, requests still try them all, in chain order.
//!
//! The rotation itself ([`Health`]) is plain code without I/O; [`Chain::call`] is the async glue
//! around it. Calls, errors, fallbacks, latency and the serving provider go to [`ChainMetrics`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;

/// A boxed future, as providers return them (object-safe traits cannot use `async fn`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One step of the pipeline: what a request and a response are.
pub trait Stage: Send + Sync + 'static {
    /// The name in metrics, status and configuration (`recognize`, `translate`).
    const NAME: &'static str;
    type Request: Clone + Send + Sync + 'static;
    type Response: Send + 'static;
}

/// An engine that serves stage `S`.
pub trait Provider<S: Stage>: Send + Sync + 'static {
    /// The provider's name in the configuration (`apertium`, `openai-chat`, or an operator's
    /// name for a second endpoint of the same kind).
    fn name(&self) -> &str;
    /// Serves one request. The future owns what it needs (`'static`): a chain may keep it
    /// running past the latency budget while the next provider starts.
    fn call(&self, request: S::Request) -> BoxFuture<Result<S::Response, ProviderError>>;
    /// Gets ready to serve (starts a program, loads its data) so that the first request does
    /// not pay for it. Called when work is about to start (a language gains subscribers); a
    /// failure is left for the first request to find. Default: nothing to do.
    fn warm(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// Why a provider did not serve a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderError {
    /// The engine answered with an error (an HTTP status, a failed program, a model error).
    #[error("{0}")]
    Failed(String),
    /// The engine cannot serve this request at all (a language pair it lacks).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Why a chain moved on from a provider, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    Error,
    Timeout,
    OverBudget,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Timeout => "timeout",
            Failure::OverBudget => "over_budget",
        }
    }
}

/// Every provider of a chain failed one request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("every provider of the {stage} chain {chain:?} failed: {}", .failures.iter().map(|(p, f)| format!("{p}: {f}")).collect::<Vec<_>>().join("; "))]
pub struct ChainError {
    pub stage: &'static str,
    pub chain: String,
    /// Each provider tried, with what went wrong.
    pub failures: Vec<(String, String)>,
}

/// A provider in a chain, with its limits.
pub struct Member<S: Stage> {
    pub provider: Arc<dyn Provider<S>>,
    /// A call still running after this is abandoned.
    pub timeout: Duration,
    /// A call still running after this lets the next provider start; the first answer wins.
    pub budget: Duration,
    /// How often a provider out of the rotation is probed.
    pub probe_every: Duration,
}

impl<S: Stage> Clone for Member<S> {
    fn clone(&self) -> Self {
        Self {
            provider: self.provider.clone(),
            timeout: self.timeout,
            budget: self.budget,
            probe_every: self.probe_every,
        }
    }
}

/// Which providers of a chain are in the rotation: plain state, time passed in.
#[derive(Debug, Clone)]
pub struct Health {
    down: Vec<Option<Down>>,
}

/// A provider out of the rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Down {
    pub since: Instant,
    pub why: Failure,
    pub detail: String,
}

impl Health {
    pub fn new(providers: usize) -> Self {
        Self {
            down: vec![None; providers],
        }
    }

    /// The order in which to try providers: those in the rotation in chain order, then those
    /// out of it (a last resort: still better than no answer).
    pub fn order(&self) -> Vec<usize> {
        let up = (0..self.down.len()).filter(|&i| self.down[i].is_none());
        let down = (0..self.down.len()).filter(|&i| self.down[i].is_some());
        up.chain(down).collect()
    }

    /// The provider that serves the next request, if any is in the rotation.
    pub fn serving(&self) -> Option<usize> {
        self.down.iter().position(Option::is_none)
    }

    /// Takes provider `i` out of the rotation; true when it was in (start probing it).
    pub fn mark_down(&mut self, i: usize, why: Failure, detail: String, now: Instant) -> bool {
        let was_up = self.down[i].is_none();
        if was_up {
            self.down[i] = Some(Down {
                since: now,
                why,
                detail,
            });
        }
        was_up
    }

    /// Takes provider `i` back into the rotation.
    pub fn mark_up(&mut self, i: usize) {
        self.down[i] = None;
    }

    pub fn down(&self, i: usize) -> Option<&Down> {
        self.down[i].as_ref()
    }
}

/// Where a chain reports what it does (the sidecar's [`crate::metrics::Metrics`]; tests
/// record). Probes are not counted as calls.
pub trait ChainMetrics: Send + Sync + 'static {
    /// A request was sent to `provider`.
    fn call(&self, stage: &'static str, provider: &str);
    /// A call to `provider` ended (answered or failed) after `took`.
    fn latency(&self, stage: &'static str, provider: &str, took: Duration);
    /// A call to `provider` failed, timed out, or overran its latency budget.
    fn failure(&self, stage: &'static str, provider: &str, why: Failure);
    /// A request moved on from `provider` to the next one.
    fn fallback(&self, stage: &'static str, provider: &str);
    /// Provider `provider` of `chain` went out of (`false`) or back into (`true`) the rotation.
    fn health(&self, stage: &'static str, chain: &str, provider: &str, up: bool);
}

/// A [`ChainMetrics`] that records nothing.
pub struct NoMetrics;

impl ChainMetrics for NoMetrics {
    fn call(&self, _: &'static str, _: &str) {}
    fn latency(&self, _: &'static str, _: &str, _: Duration) {}
    fn failure(&self, _: &'static str, _: &str, _: Failure) {}
    fn fallback(&self, _: &'static str, _: &str) {}
    fn health(&self, _: &'static str, _: &str, _: &str, _: bool) {}
}

/// What `/status` shows of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStatus {
    pub stage: &'static str,
    pub chain: String,
    /// The provider serving new requests (`null` while every one is down).
    pub serving: Option<String>,
    pub providers: Vec<ProviderStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    pub name: String,
    pub up: bool,
    /// Why it is out of the rotation.
    pub failure: Option<Failure>,
    pub detail: Option<String>,
    /// Seconds since it went out of the rotation.
    pub down_for_s: Option<f64>,
}

struct Inner<S: Stage> {
    stage_name: &'static str,
    name: String,
    members: Vec<Member<S>>,
    health: Mutex<Health>,
    metrics: Arc<dyn ChainMetrics>,
    /// A canned request that probes a provider out of the rotation.
    probe: S::Request,
}

/// See the module documentation. Cloning shares the chain (and its rotation).
pub struct Chain<S: Stage> {
    inner: Arc<Inner<S>>,
}

impl<S: Stage> Clone for Chain<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

type Attempt<T> = BoxFuture<(usize, Duration, Result<T, (Failure, String)>)>;

impl<S: Stage> Chain<S> {
    /// A chain named `name` (for example `en-es`) of `members`, in order. `probe` is the
    /// request that tests whether a provider out of the rotation works again.
    ///
    /// # Panics
    /// When `members` is empty: a stage with no provider is refused at start, not here.
    pub fn new(
        name: impl Into<String>,
        members: Vec<Member<S>>,
        probe: S::Request,
        metrics: Arc<dyn ChainMetrics>,
    ) -> Self {
        assert!(!members.is_empty(), "a chain needs a provider");
        let name = name.into();
        for m in &members {
            metrics.health(S::NAME, &name, m.provider.name(), true);
        }
        Self {
            inner: Arc::new(Inner {
                stage_name: S::NAME,
                health: Mutex::new(Health::new(members.len())),
                name,
                members,
                metrics,
                probe,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The providers' names, in chain order.
    pub fn providers(&self) -> Vec<String> {
        self.inner
            .members
            .iter()
            .map(|m| m.provider.name().to_string())
            .collect()
    }

    /// The provider serving new requests.
    pub fn serving(&self) -> Option<String> {
        let h = self.inner.health.lock().expect("chain lock");
        h.serving()
            .map(|i| self.inner.members[i].provider.name().to_string())
    }

    pub fn status(&self) -> ChainStatus {
        let h = self.inner.health.lock().expect("chain lock");
        let now = Instant::now();
        ChainStatus {
            stage: self.inner.stage_name,
            chain: self.inner.name.clone(),
            serving: h
                .serving()
                .map(|i| self.inner.members[i].provider.name().to_string()),
            providers: self
                .inner
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let d = h.down(i);
                    ProviderStatus {
                        name: m.provider.name().to_string(),
                        up: d.is_none(),
                        failure: d.map(|d| d.why),
                        detail: d.map(|d| d.detail.clone()),
                        down_for_s: d.map(|d| now.duration_since(d.since).as_secs_f64()),
                    }
                })
                .collect(),
        }
    }

    /// Warms the provider serving new requests ([`Provider::warm`]), for at most its timeout.
    pub async fn warm(&self) {
        let i = self.inner.health.lock().expect("chain lock").order()[0];
        let m = &self.inner.members[i];
        if tokio::time::timeout(m.timeout, m.provider.warm())
            .await
            .is_err()
        {
            tracing::debug!(chain = %self.inner.name, provider = m.provider.name(), "warm-up past the timeout");
        }
    }

    /// Serves one request (see the module documentation). Cancel-safe: dropping the future
    /// abandons the calls in flight.
    pub async fn call(&self, request: S::Request) -> Result<S::Response, ChainError> {
        let inner = &self.inner;
        let stage = inner.stage_name;
        let order = inner.health.lock().expect("chain lock").order();
        let mut failures = Vec::new();
        let mut inflight: FuturesUnordered<Attempt<S::Response>> = FuturesUnordered::new();
        let mut next = 0;
        // Providers whose budget ran out during this request (counted once).
        let mut overran = vec![false; inner.members.len()];
        // When the newest attempt's budget runs out: armed only while there is a next provider
        // to start, and the budget is shorter than the timeout.
        let mut budget_at: Option<(usize, tokio::time::Instant)> = None;
        let start = |i: usize| -> Attempt<S::Response> {
            let m = &inner.members[i];
            inner.metrics.call(stage, m.provider.name());
            let fut = m.provider.call(request.clone());
            let timeout = m.timeout;
            Box::pin(async move {
                let t0 = tokio::time::Instant::now();
                let res = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err((Failure::Error, e.to_string())),
                    Err(_) => Err((Failure::Timeout, format!("no answer within {timeout:?}"))),
                };
                (i, t0.elapsed(), res)
            })
        };
        let launch = |next: &mut usize,
                      inflight: &mut FuturesUnordered<Attempt<S::Response>>,
                      budget_at: &mut Option<(usize, tokio::time::Instant)>| {
            let i = order[*next];
            *next += 1;
            inflight.push(start(i));
            let m = &inner.members[i];
            *budget_at = (*next < order.len() && m.budget < m.timeout)
                .then(|| (i, tokio::time::Instant::now() + m.budget));
        };
        launch(&mut next, &mut inflight, &mut budget_at);
        loop {
            let armed = budget_at.map(|(_, at)| at);
            let budget_timer = async move {
                match armed {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((i, took, res)) = inflight.next() => {
                    let name = inner.members[i].provider.name();
                    inner.metrics.latency(stage, name, took);
                    match res {
                        Ok(v) => {
                            let budget = inner.members[i].budget;
                            if took > budget && !overran[i] {
                                inner.metrics.failure(stage, name, Failure::OverBudget);
                                self.take_out(i, Failure::OverBudget, format!("answered in {took:?}, over its {budget:?} budget"));
                            }
                            return Ok(v);
                        }
                        Err((why, detail)) => {
                            inner.metrics.failure(stage, name, why);
                            tracing::debug!(stage, chain = %inner.name, provider = name, failure = why.as_str(), %detail, "provider failed a request");
                            failures.push((name.to_string(), format!("{}: {detail}", why.as_str())));
                            self.take_out(i, why, detail);
                            let newest = budget_at.is_some_and(|(b, _)| b == i);
                            if newest || inflight.is_empty() {
                                if next < order.len() {
                                    inner.metrics.fallback(stage, name);
                                    launch(&mut next, &mut inflight, &mut budget_at);
                                } else if inflight.is_empty() {
                                    return Err(ChainError {
                                        stage,
                                        chain: inner.name.clone(),
                                        failures,
                                    });
                                } else {
                                    budget_at = None;
                                }
                            }
                        }
                    }
                }
                () = budget_timer => {
                    let (i, _) = budget_at.expect("armed");
                    let name = inner.members[i].provider.name();
                    let budget = inner.members[i].budget;
                    tracing::debug!(stage, chain = %inner.name, provider = name, ?budget, "provider over its latency budget; starting the next");
                    overran[i] = true;
                    inner.metrics.failure(stage, name, Failure::OverBudget);
                    inner.metrics.fallback(stage, name);
                    self.take_out(i, Failure::OverBudget, format!("no answer within its {budget:?} budget"));
                    launch(&mut next, &mut inflight, &mut budget_at);
                }
            }
        }
    }

    /// Takes provider `i` out of the rotation and starts probing it.
    fn take_out(&self, i: usize, why: Failure, detail: String) {
        let inner = &self.inner;
        if inner.members.len() == 1 {
            // Nothing else could serve: keep it, and spend nothing on probes.
            return;
        }
        let newly = inner.health.lock().expect("chain lock").mark_down(
            i,
            why,
            detail.clone(),
            Instant::now(),
        );
        if !newly {
            return;
        }
        let name = inner.members[i].provider.name().to_string();
        tracing::warn!(stage = inner.stage_name, chain = %inner.name, provider = %name, failure = why.as_str(), %detail, next = ?self.serving(), "provider taken out of the rotation; probing it");
        inner
            .metrics
            .health(inner.stage_name, &inner.name, &name, false);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(probe(Arc::downgrade(&self.inner), i));
        }
    }
}

/// Probes provider `i` until it answers within its budget, then takes it back. Stops when the
/// chain is dropped.
async fn probe<S: Stage>(chain: Weak<Inner<S>>, i: usize) {
    loop {
        let (fut, member) = {
            let Some(inner) = chain.upgrade() else { return };
            let m = inner.members[i].clone();
            tokio::time::sleep(m.probe_every).await;
            (m.provider.call(inner.probe.clone()), m)
        };
        let t0 = tokio::time::Instant::now();
        let res = tokio::time::timeout(member.timeout, fut).await;
        let took = t0.elapsed();
        let Some(inner) = chain.upgrade() else { return };
        let name = member.provider.name();
        match res {
            Ok(Ok(_)) if took <= member.budget => {
                inner.health.lock().expect("chain lock").mark_up(i);
                inner
                    .metrics
                    .health(inner.stage_name, &inner.name, name, true);
                tracing::info!(stage = inner.stage_name, chain = %inner.name, provider = name, ?took, "provider answers again; back in the rotation");
                return;
            }
            Ok(Ok(_)) => {
                tracing::debug!(
                    stage = inner.stage_name,
                    provider = name,
                    ?took,
                    "probe over budget"
                )
            }
            Ok(Err(e)) => {
                tracing::debug!(stage = inner.stage_name, provider = name, error = %e, "probe failed")
            }
            Err(_) => tracing::debug!(stage = inner.stage_name, provider = name, "probe timed out"),
        }
    }
}

/// Speech recognition: 16 kHz mono audio in, text out.
pub struct Recognition;

impl Stage for Recognition {
    const NAME: &'static str = "recognize";
    type Request = SpeechRequest;
    type Response = Transcript;
}

/// One utterance to recognise.
#[derive(Debug, Clone)]
pub struct SpeechRequest {
    /// 16 kHz mono samples.
    pub samples: Arc<[f32]>,
    /// A final cue (the best decode) rather than a partial one.
    pub is_final: bool,
    /// The spoken language (BCP 47), or `None` to detect it.
    pub language: Option<String>,
    /// The stream (a broadcast's recognition lane) the utterance belongs to, when it is one of
    /// a stream's: a recogniser that hears across utterances (the local Whisper's audio context)
    /// keeps that context per stream. `None`: an utterance on its own.
    pub stream: Option<u64>,
}

/// What a recogniser heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Mean log-probability of the chosen tokens (0 when the engine does not say).
    pub avg_logprob: f32,
    /// Probability that the audio holds no speech (0 when the engine does not say).
    pub no_speech_prob: f32,
    /// The language heard, when the engine says.
    pub language: Option<String>,
}

/// Translation of caption text.
pub struct Translation;

impl Stage for Translation {
    const NAME: &'static str = "translate";
    type Request = TranslateRequest;
    type Response = String;
}

/// One caption to translate.
#[derive(Debug, Clone)]
pub struct TranslateRequest {
    pub text: String,
    /// Source and target languages (BCP 47).
    pub from: String,
    pub to: String,
    /// The captions just before this one and their translations, oldest first, so that an
    /// engine that can read context (an LLM) translates a sentence cut in two as one.
    pub context: Vec<(String, String)>,
    /// The utterance's audio (16 kHz mono), for engines that translate speech directly
    /// (Whisper's translate task).
    pub audio: Option<Arc<[f32]>>,
}

impl TranslateRequest {
    /// The request that probes a translator out of the rotation: a word, and half a second of
    /// silence for engines that translate speech.
    pub fn probe(from: &str, to: &str) -> Self {
        Self {
            text: "Hello.".into(),
            from: from.into(),
            to: to.into(),
            context: Vec::new(),
            audio: Some(vec![0.0; 8_000].into()),
        }
    }
}

/// Speech synthesis: text in a language in, mono PCM out (dubbed audio).
pub struct Synthesis;

impl Stage for Synthesis {
    const NAME: &'static str = "synthesize";
    type Request = SynthRequest;
    type Response = Speech;
}

/// One caption to speak.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRequest {
    pub text: String,
    /// The language to speak (BCP 47).
    pub language: String,
}

impl SynthRequest {
    /// The request that probes a synthesizer out of the rotation.
    pub fn probe(language: &str) -> Self {
        Self {
            text: "1".into(),
            language: language.into(),
        }
    }
}

/// Mono PCM at a known rate, as a synthesizer made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    pub samples: Vec<f32>,
    /// Samples per second.
    pub rate: u32,
}

impl Speech {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A translator whose behaviour the test sets: answer after a delay, or fail.
    struct Fake {
        name: &'static str,
        mode: Arc<Mutex<(Duration, bool)>>,
        calls: Arc<AtomicUsize>,
    }

    impl Provider<Translation> for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn call(&self, r: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
            let (delay, fail) = *self.mode.lock().unwrap();
            self.calls.fetch_add(1, Ordering::SeqCst);
            let name = self.name;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    Err(ProviderError::Failed("HTTP 500".into()))
                } else {
                    Ok(format!("{name}:{}", r.text))
                }
            })
        }
    }

    type Mode = Arc<Mutex<(Duration, bool)>>;

    fn fake(name: &'static str) -> (Member<Translation>, Mode, Arc<AtomicUsize>) {
        let mode = Arc::new(Mutex::new((Duration::from_millis(10), false)));
        let calls = Arc::new(AtomicUsize::new(0));
        let m = Member {
            provider: Arc::new(Fake {
                name,
                mode: mode.clone(),
                calls: calls.clone(),
            }),
            timeout: Duration::from_millis(1000),
            budget: Duration::from_millis(300),
            probe_every: Duration::from_millis(500),
        };
        (m, mode, calls)
    }

    fn req(text: &str) -> TranslateRequest {
        TranslateRequest {
            text: text.into(),
            ..TranslateRequest::probe("en", "es")
        }
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);
    impl Recorded {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
    }
    impl ChainMetrics for Recorded {
        fn call(&self, _: &'static str, p: &str) {
            self.push(format!("call {p}"));
        }
        fn latency(&self, _: &'static str, _: &str, _: Duration) {}
        fn failure(&self, _: &'static str, p: &str, f: Failure) {
            self.push(format!("{} {p}", f.as_str()));
        }
        fn fallback(&self, _: &'static str, p: &str) {
            self.push(format!("fallback {p}"));
        }
        fn health(&self, _: &'static str, _: &str, p: &str, up: bool) {
            self.push(format!("{p} up={up}"));
        }
    }

    #[test]
    fn health_orders_the_rotation_first_then_the_rest() {
        let mut h = Health::new(3);
        let now = Instant::now();
        assert_eq!(h.order(), vec![0, 1, 2]);
        assert!(h.mark_down(0, Failure::Timeout, "slow".into(), now));
        assert!(!h.mark_down(0, Failure::Error, "again".into(), now));
        assert_eq!(h.down(0).unwrap().why, Failure::Timeout);
        assert_eq!((h.order(), h.serving()), (vec![1, 2, 0], Some(1)));
        h.mark_down(1, Failure::Error, "500".into(), now);
        h.mark_down(2, Failure::Error, "500".into(), now);
        assert_eq!((h.order(), h.serving()), (vec![0, 1, 2], None));
        h.mark_up(1);
        assert_eq!((h.order(), h.serving()), (vec![1, 0, 2], Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_falls_over_and_a_probe_takes_the_provider_back() {
        let (a, a_mode, a_calls) = fake("a");
        let (b, _, _) = fake("b");
        let rec = Arc::new(Recorded::default());
        let chain = Chain::new("en-es", vec![a, b], req("probe"), rec.clone());
        assert_eq!(chain.call(req("one")).await.unwrap(), "a:one");
        a_mode.lock().unwrap().1 = true;
        assert_eq!(chain.call(req("two")).await.unwrap(), "b:two");
        assert_eq!(chain.serving().as_deref(), Some("b"));
        // Out of the rotation, `a` gets no requests, only probes.
        let before = a_calls.load(Ordering::SeqCst);
        assert_eq!(chain.call(req("three")).await.unwrap(), "b:three");
        assert_eq!(a_calls.load(Ordering::SeqCst), before);
        let status = chain.status();
        assert!(!status.providers[0].up);
        assert_eq!(status.providers[0].failure, Some(Failure::Error));
        // It recovers; the next probe takes it back.
        a_mode.lock().unwrap().1 = false;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(chain.serving().as_deref(), Some("a"));
        assert_eq!(chain.call(req("four")).await.unwrap(), "a:four");
        let log = rec.0.lock().unwrap().join(", ");
        assert!(
            log.contains("call a, error a, a up=false, fallback a, call b"),
            "{log}"
        );
        assert!(log.contains("a up=true"), "{log}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_times_out_and_the_next_provider_serves() {
        let (mut a, a_mode, _) = fake("a");
        a.budget = a.timeout; // no hedging: only the timeout moves on
        let (b, _, _) = fake("b");
        let chain = Chain::new("en-es", vec![a, b], req("probe"), Arc::new(NoMetrics));
        a_mode.lock().unwrap().0 = Duration::from_secs(3600);
        let t0 = tokio::time::Instant::now();
        assert_eq!(chain.call(req("x")).await.unwrap(), "b:x");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
            "{took:?}"
        );
        assert_eq!(chain.status().providers[0].failure, Some(Failure::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_starts_the_next_and_the_first_answer_wins() {
        let (a, a_mode, _) = fake("a");
        let (b, b_mode, _) = fake("b");
        let chain = Chain::new("en-es", vec![a, b], req("probe"), Arc::new(NoMetrics));
        // `a` answers in 500 ms, past its 300 ms budget: `b` starts at 300 ms and answers at 310.
        a_mode.lock().unwrap().0 = Duration::from_millis(500);
        let t0 = tokio::time::Instant::now();
        assert_eq!(chain.call(req("x")).await.unwrap(), "b:x");
        assert!(t0.elapsed() < Duration::from_millis(400));
        assert_eq!(chain.serving().as_deref(), Some("b"));
        // Both slow: the slow first one still wins when it answers first.
        a_mode.lock().unwrap().0 = Duration::from_millis(10);
        b_mode.lock().unwrap().0 = Duration::from_millis(800);
        tokio::time::sleep(Duration::from_millis(600)).await; // `a` probed back in
        assert_eq!(chain.serving().as_deref(), Some("a"));
        a_mode.lock().unwrap().0 = Duration::from_millis(400);
        assert_eq!(chain.call(req("y")).await.unwrap(), "a:y");
        // An answer past the budget with nobody to hedge to is used, and counted.
        let (only, only_mode, _) = fake("only");
        let rec = Arc::new(Recorded::default());
        let single = Chain::new("en-fr", vec![only], req("probe"), rec.clone());
        only_mode.lock().unwrap().0 = Duration::from_millis(400);
        assert_eq!(single.call(req("z")).await.unwrap(), "only:z");
        assert!(rec
            .0
            .lock()
            .unwrap()
            .contains(&"over_budget only".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_provider_fails_the_error_names_each() {
        let (a, a_mode, _) = fake("a");
        let (b, b_mode, _) = fake("b");
        a_mode.lock().unwrap().1 = true;
        b_mode.lock().unwrap().1 = true;
        let chain = Chain::new("en-es", vec![a, b], req("probe"), Arc::new(NoMetrics));
        let e = chain.call(req("x")).await.unwrap_err();
        assert_eq!(e.failures.len(), 2);
        assert!(
            e.to_string().contains("a: error: HTTP 500; b: error"),
            "{e}"
        );
        // Both down: the next request still tries them, in chain order.
        a_mode.lock().unwrap().1 = false;
        assert_eq!(chain.call(req("y")).await.unwrap(), "a:y");
    }
}

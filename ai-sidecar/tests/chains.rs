//! Fallback chains against real HTTP servers speaking the OpenAI-compatible APIs (audio
//! transcriptions, chat completions), run in-process: the servers fail (HTTP 500), stall (past
//! the timeout), answer slowly (past the latency budget) and recover, while utterances go
//! through the sidecar's recognition worker, the translation lane and the cue writers. The
//! chains fall over and back, and every cue comes out exactly once in each language.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use moqcast_media::caption::{CaptionTimeline, Cue};
use moqcast_sidecar::{
    cues::CueWriter,
    metrics::Metrics,
    providers::{ChainTranscriber, ProviderConfig, Providers},
    recognize::Recognizer,
    segment::{Utterance, SAMPLE_RATE},
    stage::Chain,
    translate::{LaneEvent, LanguageLane, Queue, SourceCue},
};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// HTTP 500.
    Fail,
    /// No answer for a minute.
    Stall,
    /// Answers after `Fake::slow`.
    Slow,
}

/// An OpenAI-compatible server whose behaviour the test switches.
struct Fake {
    name: &'static str,
    mode: Mutex<Mode>,
    slow: Duration,
    requests: AtomicUsize,
}

impl Fake {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

async fn behave(f: &Fake) -> Result<(), StatusCode> {
    f.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *f.mode.lock().unwrap();
    match mode {
        Mode::Ok => Ok(()),
        Mode::Fail => Err(StatusCode::INTERNAL_SERVER_ERROR),
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        Mode::Slow => {
            tokio::time::sleep(f.slow).await;
            Ok(())
        }
    }
}

/// Chat completions: "es: <caption> <server>".
async fn chat(
    State(f): State<Arc<Fake>>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, StatusCode> {
    behave(&f).await?;
    let user = body["messages"][1]["content"].as_str().unwrap_or("");
    let caption = user.rsplit("Caption to translate:\n").next().unwrap_or("");
    Ok(Json(json!({
        "choices": [{ "message": { "role": "assistant", "content": format!("es: {caption} <{}>", f.name) } }]
    })))
}

/// Audio transcriptions: the utterance number is the WAV's first sample / 100 - 1.
async fn transcribe(
    State(f): State<Arc<Fake>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, StatusCode> {
    behave(&f).await?;
    // The WAV's data chunk (the multipart headers say "form-data" before it).
    let wave = body
        .windows(8)
        .position(|w| w == b"WAVEfmt ")
        .ok_or(StatusCode::BAD_REQUEST)?;
    let data = wave
        + body[wave..]
            .windows(4)
            .position(|w| w == b"data")
            .ok_or(StatusCode::BAD_REQUEST)?;
    let first = i16::from_le_bytes([body[data + 8], body[data + 9]]);
    let text = if first == 0 {
        String::new() // a probe's silence
    } else {
        format!("utterance {} <{}>", first / 100 - 1, f.name)
    };
    Ok(Json(json!({
        "text": text,
        "language": "english",
        "segments": [{ "avg_logprob": -0.2, "no_speech_prob": 0.01 }],
    })))
}

async fn serve(name: &'static str, slow: Duration) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        name,
        mode: Mutex::new(Mode::Ok),
        slow,
        requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/transcriptions", post(transcribe))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, addr)
}

fn endpoint(kind: &str, addr: SocketAddr, timeout_ms: u64, budget_ms: u64) -> ProviderConfig {
    ProviderConfig {
        kind: Some(kind.into()),
        url: Some(format!("http://{addr}/v1")),
        model: Some("test".into()),
        timeout_ms: Some(timeout_ms),
        budget_ms: Some(budget_ms),
        probe_every_ms: Some(100),
        ..Default::default()
    }
}

/// Utterance `n`: 0.5 s whose samples encode `n`.
fn utterance(n: u64) -> Utterance {
    let v = ((n + 1) * 100) as f32 / 32767.0;
    Utterance {
        id: n,
        start_us: n * 2_000_000,
        end_us: n * 2_000_000 + 500_000,
        samples: vec![v; SAMPLE_RATE as usize / 2],
        is_final: true,
    }
}

async fn wait_serving<S: moqcast_sidecar::stage::Stage>(chain: &Chain<S>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while chain.serving().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{} is not taken back: {:?}",
            want,
            chain.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cues published per language: id -> every final cue announced with that id.
#[derive(Default)]
struct Published(BTreeMap<String, Vec<Cue>>);

impl Published {
    fn add(&mut self, payload: &[u8], announced: &[Cue]) {
        // What a subscriber reads parses; the cues the object announces are the new ones.
        CaptionTimeline::parse(payload).expect("a valid caption object");
        for c in announced.iter().filter(|c| c.is_final) {
            self.0
                .entry(c.id.clone().unwrap())
                .or_default()
                .push(c.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_fall_over_and_back_and_every_cue_comes_out_once() {
    let (ra, ra_addr) = serve("ra", Duration::ZERO).await;
    let (_rb, rb_addr) = serve("rb", Duration::ZERO).await;
    let (ta, ta_addr) = serve("ta", Duration::from_millis(2000)).await;
    let (_tb, tb_addr) = serve("tb", Duration::ZERO).await;
    let mut configs = BTreeMap::new();
    // Recognition: no hedging (budget = timeout), a stall is a timeout.
    configs.insert(
        "ra".into(),
        endpoint("openai-transcribe", ra_addr, 1500, 1500),
    );
    configs.insert(
        "rb".into(),
        endpoint("openai-transcribe", rb_addr, 5000, 5000),
    );
    // Translation: past 600 ms the next provider starts; past 4 s a call is abandoned.
    configs.insert("ta".into(), endpoint("openai-chat", ta_addr, 4000, 600));
    configs.insert("tb".into(), endpoint("openai-chat", tb_addr, 5000, 5000));
    let metrics = Arc::new(Metrics::new());
    let providers = Providers::new(configs, metrics.clone());
    let names = |v: [&str; 2]| v.map(String::from).to_vec();
    let (rchain, unavailable) = providers.recognition(&names(["ra", "rb"]), Some("en"));
    assert!(unavailable.is_empty(), "{unavailable:?}");
    let rchain = rchain.unwrap();
    let (tchain, unavailable) = providers.translation(&names(["ta", "tb"]), "en", "es");
    assert!(unavailable.is_empty(), "{unavailable:?}");
    let tchain = tchain.unwrap();
    {
        let (r, t) = (rchain.clone(), tchain.clone());
        metrics.add_chain(move || r.status());
        metrics.add_chain(move || t.status());
    }

    let transcriber = ChainTranscriber::new(
        rchain.clone(),
        tokio::runtime::Handle::current(),
        Some("en".into()),
    );
    let recognizer = Recognizer::start(transcriber, 60_000, metrics.clone()).unwrap();
    let (lane, mut results) = recognizer.lane("demo");
    let (events_tx, mut events) = tokio::sync::mpsc::channel(32);
    let spanish = LanguageLane::start(
        tchain.clone(),
        "en",
        "es",
        Queue::new(8, Duration::from_secs(30)),
        events_tx,
    );
    let mut en_writer = CueWriter::default();
    let mut es_writer = CueWriter::default();
    let mut en = Published::default();
    let mut es = Published::default();
    let mut next = 0u64;

    // Speaks `n` utterances; returns who recognised and who translated each.
    let mut speak = async |n: u64| -> Vec<(String, String)> {
        let mut served = Vec::new();
        for _ in 0..n {
            let id = next;
            next += 1;
            lane.submit(utterance(id));
            let r = tokio::time::timeout(Duration::from_secs(20), results.recv())
                .await
                .expect("a recognition result")
                .unwrap();
            assert_eq!(r.utterance, id);
            let obj = en_writer.on_result(&r).expect("a cue");
            en.add(&obj.payload, &obj.cues);
            spanish.submit(SourceCue {
                utterance: r.utterance,
                start_us: r.start_us,
                end_us: r.end_us,
                text: r.text.clone(),
                audio: None,
            });
            let t = match tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("a translation")
                .unwrap()
            {
                LaneEvent::Translated(t) => t,
                other => panic!("utterance {id}: {other:?}"),
            };
            assert_eq!(t.utterance, id);
            let obj = es_writer.on_translated(&t).expect("a cue");
            es.add(&obj.payload, &obj.cues);
            let recognised_by = r.text.rsplit('<').next().unwrap().trim_end_matches('>');
            let translated_by = t.text.rsplit('<').next().unwrap().trim_end_matches('>');
            served.push((recognised_by.to_string(), translated_by.to_string()));
        }
        served
    };
    let pairs = |a: &str, b: &str, n: usize| vec![(a.to_string(), b.to_string()); n];

    // Healthy: the first providers serve.
    assert_eq!(speak(2).await, pairs("ra", "ta", 2));
    // HTTP 500 from both first providers: the second ones serve, the first are probed.
    ra.set(Mode::Fail);
    ta.set(Mode::Fail);
    assert_eq!(speak(2).await, pairs("rb", "tb", 2));
    assert_eq!(rchain.serving().as_deref(), Some("rb"));
    assert_eq!(tchain.serving().as_deref(), Some("tb"));
    let status = metrics.status_json();
    assert_eq!(status["chains"][1]["serving"], "tb", "{status}");
    assert_eq!(
        status["chains"][1]["providers"][0]["failure"], "error",
        "{status}"
    );
    // They recover: a probe takes each back.
    ra.set(Mode::Ok);
    ta.set(Mode::Ok);
    wait_serving(&rchain, "ra").await;
    wait_serving(&tchain, "ta").await;
    assert_eq!(speak(2).await, pairs("ra", "ta", 2));
    // Recognition stalls (past its 1.5 s timeout); translation answers after 2 s, past its
    // 600 ms budget: the next provider starts at 600 ms and answers first.
    ra.set(Mode::Stall);
    ta.set(Mode::Slow);
    let t0 = Instant::now();
    assert_eq!(speak(1).await, pairs("rb", "tb", 1));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(8000),
        "a 1.5 s timeout, then rb; a 600 ms budget, then tb: {took:?}"
    );
    assert_eq!(speak(1).await, pairs("rb", "tb", 1));
    // Translation stalls too (the budget moves on again); recognition recovers.
    ta.set(Mode::Stall);
    ra.set(Mode::Ok);
    wait_serving(&rchain, "ra").await;
    assert_eq!(speak(2).await, pairs("ra", "tb", 2));
    ta.set(Mode::Ok);
    wait_serving(&tchain, "ta").await;
    assert_eq!(speak(2).await, pairs("ra", "ta", 2));

    // Every cue exactly once in each language, with the same ids and times.
    let ids: Vec<String> = (0..next).map(|n| format!("u{n}")).collect();
    assert_eq!(en.0.keys().cloned().collect::<Vec<_>>().len(), ids.len());
    for id in &ids {
        let e = &en.0[id];
        let s = &es.0[id];
        assert_eq!(
            (e.len(), s.len()),
            (1, 1),
            "{id} published once in each language"
        );
        assert_eq!(
            (e[0].start_ms, e[0].end_ms),
            (s[0].start_ms, s[0].end_ms),
            "{id}"
        );
        let n = &id[1..];
        assert!(
            e[0].text.starts_with(&format!("utterance {n} ")),
            "{:?}",
            e[0]
        );
        assert!(
            s[0].text.starts_with(&format!("es: utterance {n} ")),
            "{:?}",
            s[0]
        );
    }
    assert_eq!(es.0.len(), ids.len());

    // The counts say what happened.
    let text = metrics.render();
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    for (labels, at_least) in [
        (r#"stage="recognize",provider="ra",failure="error""#, 1.0),
        (r#"stage="recognize",provider="ra",failure="timeout""#, 1.0),
        (r#"stage="translate",provider="ta",failure="error""#, 1.0),
        (
            r#"stage="translate",provider="ta",failure="over_budget""#,
            1.0,
        ),
    ] {
        let v = value(&format!(
            "moqcast_sidecar_provider_errors_total{{{labels}}} "
        ));
        assert!(v >= at_least, "{labels}: {v}");
    }
    assert!(
        value(r#"moqcast_sidecar_provider_fallbacks_total{stage="translate",provider="ta"} "#)
            >= 2.0
    );
    assert!(
        value(r#"moqcast_sidecar_provider_calls_total{stage="recognize",provider="rb"} "#) >= 4.0
    );
    assert_eq!(
        value(r#"moqcast_sidecar_provider_up{stage="translate",chain="en-es",provider="ta"} "#),
        1.0
    );
    assert!(
        text.contains(r#"moqcast_sidecar_provider_latency_seconds_bucket{le="#)
            || text.contains("moqcast_sidecar_provider_latency_seconds_bucket{stage=")
    );
    drop(spanish);
    drop(lane);
}

//! The synthesis chain against real HTTP servers speaking the OpenAI speech API
//! (`POST /v1/audio/speech`), run in-process: the first server fails (HTTP 500), recovers,
//! stalls (past the latency budget and the timeout) and recovers again, while cues go through
//! the sidecar's dub lane. Every cue is spoken exactly once, by the server the rotation says,
//! and comes out resampled to 48 kHz.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use moqcast_media::wav;
use moqcast_sidecar::{
    dubbing::{DubEvent, DubLane},
    metrics::Metrics,
    providers::{ProviderConfig, Providers},
    stage::Chain,
    translate::TranslatedCue,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Stall,
}

/// A speech server: cue `n` ("cue n") is (n + 1) tenths of a second of a constant level that
/// names the server, as a 24 kHz WAV; the probe's text gets a tenth.
struct Fake {
    level: f32,
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    /// Cues answered (not probes).
    answered: Mutex<Vec<u64>>,
}

async fn speech(
    State(f): State<Arc<Fake>>,
    Json(body): Json<Value>,
) -> Result<Vec<u8>, StatusCode> {
    f.requests.fetch_add(1, Ordering::SeqCst);
    let mode = *f.mode.lock().unwrap();
    match mode {
        Mode::Ok => {}
        Mode::Fail => return Err(StatusCode::INTERNAL_SERVER_ERROR),
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
    if body["response_format"] != "wav" || body["voice"] != "nova" || body["model"] != "tts-test" {
        return Err(StatusCode::BAD_REQUEST);
    }
    let input = body["input"].as_str().unwrap_or("");
    let tenths = match input.strip_prefix("cue ") {
        Some(n) => {
            let n: u64 = n.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
            f.answered.lock().unwrap().push(n);
            n + 1
        }
        None => 1,
    };
    Ok(wav::write_pcm16(
        &vec![f.level; 2_400 * tenths as usize],
        24_000,
    ))
}

fn set(f: &Fake, mode: Mode) {
    *f.mode.lock().unwrap() = mode;
}

async fn serve(level: f32) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        level,
        mode: Mutex::new(Mode::Ok),
        requests: AtomicUsize::new(0),
        answered: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/audio/speech", post(speech))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, addr)
}

fn endpoint(addr: SocketAddr, timeout_ms: u64, budget_ms: u64) -> ProviderConfig {
    ProviderConfig {
        kind: Some("openai-speech".into()),
        url: Some(format!("http://{addr}/v1")),
        model: Some("tts-test".into()),
        voice: Some("nova".into()),
        timeout_ms: Some(timeout_ms),
        budget_ms: Some(budget_ms),
        probe_every_ms: Some(100),
        ..Default::default()
    }
}

async fn wait_serving(chain: &Chain<moqcast_sidecar::stage::Synthesis>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while chain.serving().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{want} is not serving: {:?}",
            chain.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synthesis_chain_falls_over_and_back_and_every_cue_is_spoken_once() {
    let (a, a_addr) = serve(0.25).await;
    let (b, b_addr) = serve(0.5).await;
    let mut configs = BTreeMap::new();
    // Past 500 ms the next server starts; past 3 s a call is abandoned.
    configs.insert("speech-a".to_string(), endpoint(a_addr, 3_000, 500));
    configs.insert("speech-b".to_string(), endpoint(b_addr, 5_000, 5_000));
    let metrics = Arc::new(Metrics::new());
    let providers = Providers::new(configs, metrics.clone());
    let chain_names = ["speech-a".to_string(), "speech-b".to_string()];
    let (chain, unavailable) = providers.synthesis(&chain_names, "es");
    assert!(unavailable.is_empty(), "{unavailable:?}");
    let chain = chain.unwrap();
    let (tx, mut events) = tokio::sync::mpsc::channel(16);
    let lane = DubLane::start(chain.clone(), "es", 16, tx);

    let mut next = 0u64;
    // Speaks `n` cues one after the other; returns which server spoke each (by its level).
    let mut speak = async |n: u64| -> Vec<&'static str> {
        let mut who = Vec::new();
        for _ in 0..n {
            let id = next;
            next += 1;
            lane.submit(TranslatedCue {
                utterance: id,
                start_us: id * 2_000_000,
                end_us: id * 2_000_000 + 1_000_000,
                lang: "es".into(),
                text: format!("cue {id}"),
                took: Duration::ZERO,
            });
            let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("the cue is spoken")
                .unwrap();
            let DubEvent::Spoken(s) = event else {
                panic!("cue {id}: {event:?}");
            };
            assert_eq!(s.utterance, id);
            assert_eq!(
                (s.start_us, s.end_us),
                (id * 2_000_000, id * 2_000_000 + 1_000_000)
            );
            // (id + 1) tenths of a second, resampled from 24 to 48 kHz.
            let want = 4_800 * (id as usize + 1);
            assert!(
                s.samples.len().abs_diff(want) <= 48,
                "cue {id}: {} samples",
                s.samples.len()
            );
            let mid = s.samples[s.samples.len() / 2];
            who.push(if (mid - 0.25).abs() < 0.01 {
                "a"
            } else if (mid - 0.5).abs() < 0.01 {
                "b"
            } else {
                panic!("cue {id}: level {mid}")
            });
        }
        who
    };

    assert_eq!(speak(2).await, ["a", "a"]);
    // A fails: B speaks; A is probed and taken back once it answers.
    set(&a, Mode::Fail);
    assert_eq!(speak(2).await, ["b", "b"]);
    set(&a, Mode::Ok);
    wait_serving(&chain, "speech-a").await;
    assert_eq!(speak(1).await, ["a"]);
    // A stalls: past its budget B starts and answers; A's call is abandoned.
    set(&a, Mode::Stall);
    let t0 = Instant::now();
    assert_eq!(speak(2).await, ["b", "b"]);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    set(&a, Mode::Ok);
    wait_serving(&chain, "speech-a").await;
    assert_eq!(speak(2).await, ["a", "a"]);

    // Every cue spoken exactly once: each server's answers, without repeats, make them all.
    let (sa, sb) = (
        a.answered.lock().unwrap().clone(),
        b.answered.lock().unwrap().clone(),
    );
    let mut all: Vec<u64> = sa.iter().chain(&sb).copied().collect();
    all.sort();
    assert_eq!(sa, vec![0, 1, 4, 7, 8], "A answered these cues");
    assert_eq!(sb, vec![2, 3, 5, 6], "B answered these cues");
    assert_eq!(all, (0..9).collect::<Vec<_>>());
    assert!(events.try_recv().is_err(), "no second answer for any cue");

    let text = metrics.render();
    for line in [
        "moqcast_sidecar_provider_calls_total{stage=\"synthesize\",provider=\"speech-a\"} 7",
        "moqcast_sidecar_provider_errors_total{stage=\"synthesize\",provider=\"speech-a\",failure=\"error\"} 1",
        "moqcast_sidecar_provider_errors_total{stage=\"synthesize\",provider=\"speech-a\",failure=\"over_budget\"} 1",
        "moqcast_sidecar_provider_calls_total{stage=\"synthesize\",provider=\"speech-b\"} 4",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}

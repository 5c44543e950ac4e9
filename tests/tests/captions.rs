//! The AI sidecar end to end: relay + `moqcast-publish` of espeak-ng speech + `moqcast-sidecar`
//! with the real Whisper tiny.en model + `moqcast-subscribe --captions --caption-latency`.
//!
//! Needs the model (scripts/fetch-model.sh), espeak-ng, sox and ffmpeg (scripts/setup.sh
//! installs all of them); the tests fail, naming the fix, when one is missing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moqcast_tests::{
    command,
    speech::{
        sidecar_command, speech_video, speech_wav, video_only, whisper_model_dir, word_recall,
    },
    ChildGuard, TempDir, TestRelay,
};

/// Sentences tiny.en transcribes well from espeak-ng speech.
const SENTENCES: [&str; 3] = [
    "This is a live broadcast with automatic captions.",
    "The weather today is sunny and warm.",
    "Thank you for watching and have a good night.",
];

fn free_tcp_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// GET on the sidecar's HTTP port; `None` while it is not listening yet (the model loads first).
fn try_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn status(metrics: SocketAddr) -> serde_json::Value {
    try_get(metrics, "/status")
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn broadcast_status(metrics: SocketAddr, broadcast: &str) -> String {
    status(metrics)["broadcasts"][broadcast]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn counter(metrics: SocketAddr, line_prefix: &str) -> f64 {
    try_get(metrics, "/metrics")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls the sidecar's /status until `broadcast` has `want`.
async fn wait_status(
    metrics: SocketAddr,
    broadcast: &str,
    want: &str,
    sidecar: &mut ChildGuard,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let b = broadcast.to_string();
        let got = tokio::task::spawn_blocking(move || broadcast_status(metrics, &b))
            .await
            .unwrap();
        if got == want {
            return;
        }
        assert!(
            sidecar.try_wait().is_none(),
            "the sidecar exited: {}",
            sidecar.stderr_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "{broadcast} did not reach status {want:?} within {timeout:?} (it is {got:?}): {}",
            sidecar.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn publish(
    relay: &TestRelay,
    broadcast: &str,
    input: &std::path::Path,
    dir: &TempDir,
) -> ChildGuard {
    let mut cmd = command("moqcast-publish");
    cmd.args([
        "--url",
        &relay.url("https"),
        "--tls-fingerprint",
        &relay.fingerprint,
        "--broadcast",
        broadcast,
        "--loop",
        "--input",
    ])
    .arg(input);
    ChildGuard::spawn(
        &format!("publish-{}", broadcast.replace('/', "_")),
        &mut cmd,
        &dir.0,
    )
}

/// Speech in, WebVTT captions out, on the media timeline, while someone subscribes, and only
/// then. Beside it, a broadcast without audio gets the status `no_audio` and does not disturb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_captions_spoken_broadcast_while_subscribed() {
    moqcast_tests::init_tracing();
    let dir = TempDir::new("captions");
    let wav = speech_wav(&dir.0, "talk", &SENTENCES, "en-us", 2.0, 1.5);
    let talk = speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let mute = video_only(&dir.path("mute.mp4"), 3);

    let relay = TestRelay::start(&[]).await;
    let metrics = free_tcp_addr();
    let mut sidecar = {
        // Both broadcasts are found under the prefix (SUBSCRIBE_NAMESPACE).
        let metrics = metrics.to_string();
        let extra = ["--prefix", "live", "--metrics-addr", &metrics];
        let mut cmd = sidecar_command(&relay.url("https"), &relay.fingerprint, &extra);
        cmd.env("RUST_LOG", "info,moq_transport=off,quinn=warn");
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    let _talk = publish(&relay, "live/talk", &talk, &dir);
    let _mute = publish(&relay, "live/mute", &mute, &dir);

    // Published but not subscribed: the caption track exists, nothing is recognised.
    wait_status(
        metrics,
        "live/talk",
        "idle",
        &mut sidecar,
        Duration::from_secs(60),
    )
    .await;
    wait_status(
        metrics,
        "live/mute",
        "no_audio",
        &mut sidecar,
        Duration::from_secs(30),
    )
    .await;
    let mute_detail = status(metrics)["broadcasts"]["live/mute"]["detail"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(mute_detail.contains("no audio track"), "{mute_detail}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        counter(metrics, "moqcast_sidecar_inferences_total{kind=\"final\"} "),
        0.0
    );
    assert_eq!(
        counter(
            metrics,
            "moqcast_sidecar_inferences_total{kind=\"partial\"} "
        ),
        0.0
    );

    // A subscriber for one and a half passes of the looping speech.
    let vtt = dir.path("out.vtt");
    let mut sub = {
        let mut cmd = command("moqcast-subscribe");
        cmd.args([
            "--url",
            &relay.url("https"),
            "--tls-fingerprint",
            &relay.fingerprint,
            "--broadcast",
            "live/talk",
        ])
        .args([
            "--duration",
            "26",
            "--wait",
            "20",
            "--caption-latency",
            "--json",
            "--captions",
        ])
        .arg(&vtt);
        ChildGuard::spawn("subscribe", &mut cmd, &dir.0)
    };
    let exit = tokio::task::spawn_blocking(move || {
        let s = sub.wait_timeout(Duration::from_secs(60));
        (s, sub.stdout(), sub.stderr())
    })
    .await
    .unwrap();
    let (code, stdout, stderr) = exit;
    assert!(
        matches!(code, Some(s) if s.success()),
        "subscriber failed: {code:?}\n{stdout}\n{stderr}\nsidecar: {}",
        sidecar.stderr_tail(40)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let captions = &json["captions"];
    println!("captions: {captions}");
    let text = std::fs::read_to_string(&vtt).expect("the WebVTT file was written");
    println!("{text}");
    assert!(text.starts_with("WEBVTT"));
    let recall = word_recall(&SENTENCES.join(" "), &text);
    assert!(
        recall >= 0.7,
        "only {:.0}% of the spoken words are in the captions:\n{text}\nsidecar: {}",
        recall * 100.0,
        sidecar.stderr_tail(40)
    );
    assert!(
        captions["final_cues"].as_u64().unwrap_or(0) >= 3,
        "{captions}"
    );
    assert!(
        captions["partial_cues"].as_u64().unwrap_or(0) >= 1,
        "partial cues while speaking: {captions}"
    );
    let p50 = captions["caption_latency_p50_ms"]
        .as_f64()
        .expect("caption latency measured");
    assert!(
        captions["caption_latency_measured"].as_u64().unwrap_or(0) >= 3,
        "{captions}"
    );
    // Live, not after the fact: each final arrives within seconds of its utterance's end.
    assert!(p50 > 0.0 && p50 < 8000.0, "caption latency p50 {p50} ms");
    // Cue times are on the broadcast's media timeline: within the looping file's span
    // (2 s lead-in, about 12 s of speech per pass), as WebVTT "HH:MM:SS.mmm --> ...".
    assert!(text.contains(" --> "));

    // The last subscriber left: recognition stops.
    wait_status(
        metrics,
        "live/talk",
        "idle",
        &mut sidecar,
        Duration::from_secs(15),
    )
    .await;
    let finals = counter(metrics, "moqcast_sidecar_inferences_total{kind=\"final\"} ");
    assert!(finals >= 3.0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let partials = counter(
        metrics,
        "moqcast_sidecar_inferences_total{kind=\"partial\"} ",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counter(
            metrics,
            "moqcast_sidecar_inferences_total{kind=\"partial\"} "
        ),
        partials,
        "no recognition without subscribers"
    );
    assert_eq!(
        broadcast_status(metrics, "live/mute"),
        "no_audio",
        "the other broadcast is unaffected"
    );

    // SIGTERM: a clean exit.
    if let Some(pid) = sidecar.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let code =
            tokio::task::spawn_blocking(move || sidecar.wait_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        assert!(
            matches!(code, Some(s) if s.success()),
            "sidecar exit on SIGTERM: {code:?}"
        );
    }
    relay.stop().await;
}

/// A missing or corrupt model is a clear error at start, before anything connects.
#[test]
fn sidecar_refuses_missing_or_corrupt_models_clearly() {
    let dir = TempDir::new("bad-model");
    let run = |model: &std::path::Path| {
        let out = command("moqcast-sidecar")
            .args([
                "--url",
                "https://localhost:1/",
                "--broadcast",
                "x",
                "--metrics-addr",
                "127.0.0.1:0",
                "--model",
            ])
            .arg(model)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&dir.path("nonexistent"));
    assert!(
        err.contains("neither a directory nor a Hugging Face hub id"),
        "{err}"
    );
    let empty = dir.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = run(&empty);
    assert!(err.contains("model.bin or *.safetensors"), "{err}");
    // A truncated CTranslate2 model with valid companions.
    let model = whisper_model_dir();
    let bad = dir.path("truncated");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), bad.join(f)).unwrap();
    }
    let bytes = std::fs::read(model.join("model.bin")).unwrap();
    std::fs::write(bad.join("model.bin"), &bytes[..bytes.len() / 3]).unwrap();
    let err = run(&bad);
    assert!(
        err.contains("model.bin") && err.to_lowercase().contains("truncated"),
        "{err}"
    );
}

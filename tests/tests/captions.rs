//! The AI sidecar end to end: relay + `moqcast-publish` of espeak-ng speech + `moqcast-sidecar`
//! with the real Whisper tiny.en model and Apertium + `moqcast-subscribe --captions
//! --caption-latency`, in English and in Spanish (`--caption-lang es`).
//!
//! Needs the model (scripts/fetch-model.sh), espeak-ng, sox, ffmpeg and Apertium with its
//! English-Spanish pair (scripts/setup.sh installs all of them); the tests fail, naming the fix,
//! when one is missing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moqcast_tests::{
    command,
    speech::{
        sidecar_command, speech_video, speech_wav, video_only, whisper_model_dir, word_recall,
    },
    without_colours, ChildGuard, TempDir, TestRelay,
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

/// The cues of a WebVTT file by id: (the timing line, the text).
fn vtt_cues(vtt: &str) -> std::collections::BTreeMap<String, (String, String)> {
    vtt.split("\n\n")
        .filter_map(|block| {
            let lines: Vec<&str> = block.lines().collect();
            let at = lines.iter().position(|l| l.contains(" --> "))?;
            let id = lines.get(at.checked_sub(1)?)?.to_string();
            Some((id, (lines[at].to_string(), lines[at + 1..].join(" "))))
        })
        .collect()
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
    // Spanish through Apertium; no provider here translates into French: the sidecar says so
    // and serves the rest.
    let config = dir.path("sidecar.toml");
    std::fs::write(&config, "translate = [\"es\", \"fr\"]\n").unwrap();
    let mut sidecar = {
        // Both broadcasts are found under the prefix (SUBSCRIBE_NAMESPACE).
        let metrics = metrics.to_string();
        let extra = [
            "--prefix",
            "live",
            "--metrics-addr",
            &metrics,
            "--config",
            config.to_str().unwrap(),
        ];
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
    let said = sidecar.stderr_tail(200);
    assert!(
        said.contains("cannot serve captions-fr") && said.contains("no Apertium pair for en->fr"),
        "the sidecar says what it cannot serve: {said}"
    );
    let unavailable = status(metrics)["unavailable"].to_string();
    assert!(unavailable.contains("en->fr"), "{unavailable}");
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
    let translations =
        "moqcast_sidecar_provider_calls_total{stage=\"translate\",provider=\"apertium\"} ";
    assert_eq!(
        counter(metrics, translations),
        0.0,
        "no translation without subscribers"
    );

    // Two subscribers for one and a half passes of the looping speech: the English captions
    // and their Spanish translation.
    let subscriber = |lang: &str, vtt: &std::path::Path| {
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
            "--caption-lang",
            lang,
            "--captions",
        ])
        .arg(vtt);
        ChildGuard::spawn(&format!("subscribe-{lang}"), &mut cmd, &dir.0)
    };
    let (vtt, vtt_es) = (dir.path("out.vtt"), dir.path("out-es.vtt"));
    let subs = [subscriber("en", &vtt), subscriber("es", &vtt_es)];
    let mut outputs = Vec::new();
    for mut sub in subs {
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
        outputs.push(json["captions"].clone());
    }
    let (captions, captions_es) = (&outputs[0], &outputs[1]);
    println!("captions: {captions}\nSpanish: {captions_es}");
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

    // The Spanish track: Apertium's translations, each with the id and the media times of an
    // English cue, measured live as well.
    assert!(
        captions_es["track"]
            .as_str()
            .unwrap_or("")
            .ends_with("live/talk/ai/captions-es"),
        "{captions_es}"
    );
    let es_text = std::fs::read_to_string(&vtt_es).expect("the Spanish WebVTT file was written");
    println!("{es_text}");
    let (en_cues, es_cues) = (vtt_cues(&text), vtt_cues(&es_text));
    assert!(es_cues.len() >= 3, "Spanish cues: {es_text}");
    for (id, (times, es)) in &es_cues {
        let (en_times, en) = en_cues
            .get(id)
            .unwrap_or_else(|| panic!("Spanish cue {id} has no English cue: {text}\n{es_text}"));
        assert_eq!(
            times, en_times,
            "cue {id} keeps the English cue's media times"
        );
        assert_ne!(es, en, "cue {id} is translated");
    }
    let spanish = word_recall("tiempo hoy soleado gracias noche emisión", &es_text);
    assert!(
        spanish >= 0.5,
        "{:.0}% of the expected Spanish words: {es_text}",
        spanish * 100.0
    );
    assert!(
        captions_es["caption_latency_measured"]
            .as_u64()
            .unwrap_or(0)
            >= 3,
        "{captions_es}"
    );
    let p50_es = captions_es["caption_latency_p50_ms"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        p50_es > 0.0 && p50_es < 10_000.0,
        "translated caption latency p50 {p50_es} ms"
    );
    let translated = status(metrics)["broadcasts"]["live/talk"]["translations"]["es"].clone();
    assert!(
        translated["cues"].as_u64().unwrap_or(0) >= 3,
        "{translated}"
    );

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
    let es = &status(metrics)["broadcasts"]["live/talk"]["translations"]["es"];
    assert_eq!(es["subscribers"], 0, "{es}");
    let calls = counter(metrics, translations);
    assert!(calls >= 3.0, "{calls} translations");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        counter(metrics, translations),
        calls,
        "no translation without subscribers"
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

/// Without Apertium, or without the model, the sidecar says at start what it cannot serve and
/// serves the rest: the first publishes English captions only; the second, whose local model is
/// missing, recognises with the next provider of its chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_without_apertium_or_model_says_what_it_cannot_serve() {
    moqcast_tests::init_tracing();
    let dir = TempDir::new("cannot-serve");
    let wav = speech_wav(&dir.0, "talk", &SENTENCES[..1], "en-us", 1.0, 1.0);
    let talk = speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let relay = TestRelay::start(&[]).await;
    let _a = publish(&relay, "live/a", &talk, &dir);
    let _b = publish(&relay, "live/b", &talk, &dir);

    let no_apertium = dir.path("no-apertium.toml");
    std::fs::write(
        &no_apertium,
        "translate = [\"es\"]\n[providers.apertium]\ndatadir = \"/nonexistent/apertium\"\n",
    )
    .unwrap();
    let metrics_a = free_tcp_addr();
    let mut a = {
        let m = metrics_a.to_string();
        let extra = [
            "--broadcast",
            "live/a",
            "--metrics-addr",
            &m,
            "--config",
            no_apertium.to_str().unwrap(),
        ];
        let mut cmd = sidecar_command(&relay.url("https"), &relay.fingerprint, &extra);
        ChildGuard::spawn("sidecar-a", &mut cmd, &dir.0)
    };
    let no_model = dir.path("no-model.toml");
    std::fs::write(
        &no_model,
        "recognize_chain = [\"whisper\", \"remote\"]\n[providers.remote]\nkind = \"openai-transcribe\"\nurl = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    let metrics_b = free_tcp_addr();
    let mut b = {
        let mut cmd = command("moqcast-sidecar");
        cmd.args([
            "--url",
            &relay.url("https"),
            "--tls-fingerprint",
            &relay.fingerprint,
        ])
        .args([
            "--broadcast",
            "live/b",
            "--metrics-addr",
            &metrics_b.to_string(),
        ])
        .arg("--model")
        .arg(dir.path("no-such-model"))
        .arg("--config")
        .arg(&no_model);
        ChildGuard::spawn("sidecar-b", &mut cmd, &dir.0)
    };
    wait_status(metrics_a, "live/a", "idle", &mut a, Duration::from_secs(60)).await;
    wait_status(metrics_b, "live/b", "idle", &mut b, Duration::from_secs(60)).await;

    let said = a.stderr_tail(200);
    assert!(
        said.contains("cannot serve captions-es") && said.contains("Apertium is not installed"),
        "{said}"
    );
    let unavailable = status(metrics_a)["unavailable"].to_string();
    assert!(unavailable.contains("apertium"), "{unavailable}");
    let said = b.stderr_tail(200);
    assert!(
        said.contains("left out of the chain") && said.contains("no-such-model"),
        "{said}"
    );
    let chains = status(metrics_b)["chains"].clone();
    assert_eq!(chains[0]["stage"], "recognize", "{chains}");
    assert_eq!(chains[0]["providers"][0]["name"], "remote", "{chains}");
    relay.stop().await;
}

/// Spanish speech, the multilingual model (`--model base`) and `--language auto`: the sidecar
/// detects Spanish and publishes `captions-es`, and English captions (`--translate en`) from
/// Whisper's translate task (`whisper-translate`, Apertium behind it), with the Spanish cues'
/// ids and times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_detects_spanish_and_translates_it_into_english() {
    moqcast_tests::init_tracing();
    let dir = TempDir::new("auto-language");
    // Whisper base detects these espeak-ng sentences as Spanish (p 0.95 and 0.92 with
    // faster-whisper); it hears others, such as "Hoy hace un día muy bonito en la ciudad.", as
    // Thai or Japanese.
    let sentences = [
        "La música es muy importante para todos nosotros.",
        "Gracias por vernos y hasta mañana.",
    ];
    let wav = speech_wav(&dir.0, "habla", &sentences, "es", 1.5, 2.0);
    let media = speech_video(&wav, &dir.path("habla.mp4"), "aac");
    let relay = TestRelay::start(&[]).await;
    let _publisher = publish(&relay, "live/es", &media, &dir);
    let metrics = free_tcp_addr();
    let mut sidecar = {
        let mut cmd = command("moqcast-sidecar");
        cmd.args([
            "--url",
            &relay.url("https"),
            "--tls-fingerprint",
            &relay.fingerprint,
        ])
        .args([
            "--broadcast",
            "live/es",
            "--metrics-addr",
            &metrics.to_string(),
        ])
        .args(["--model", "base", "--language", "auto", "--beam-size", "1"])
        .args(["--partial-every-ms", "4000", "--translate", "en"])
        .args(["--translate-chain", "whisper-translate,apertium"])
        .env("RUST_LOG", "info,moq_transport=off,quinn=warn");
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    // The language is detected from the first speech, then the tracks are published.
    wait_status(
        metrics,
        "live/es",
        "idle",
        &mut sidecar,
        Duration::from_secs(90),
    )
    .await;
    let said = without_colours(&sidecar.stderr_tail(200));
    assert!(
        said.lines()
            .any(|l| l.contains("spoken language detected") && l.contains("language=es ")),
        "{said}"
    );

    let subscriber = |lang: &str, vtt: &std::path::Path| {
        let mut cmd = command("moqcast-subscribe");
        cmd.args([
            "--url",
            &relay.url("https"),
            "--tls-fingerprint",
            &relay.fingerprint,
        ])
        .args([
            "--broadcast",
            "live/es",
            "--duration",
            "24",
            "--wait",
            "20",
            "--json",
        ])
        .args(["--caption-lang", lang, "--captions"])
        .arg(vtt);
        ChildGuard::spawn(&format!("subscribe-{lang}"), &mut cmd, &dir.0)
    };
    let (vtt_es, vtt_en) = (dir.path("es.vtt"), dir.path("en.vtt"));
    let mut tracks = Vec::new();
    for mut sub in [subscriber("es", &vtt_es), subscriber("en", &vtt_en)] {
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let s = sub.wait_timeout(Duration::from_secs(60));
            (s, sub.stdout(), sub.stderr())
        })
        .await
        .unwrap();
        assert!(
            matches!(code, Some(s) if s.success()),
            "subscriber failed: {code:?}\n{stdout}\n{stderr}\nsidecar: {}",
            sidecar.stderr_tail(40)
        );
        let json: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
        tracks.push(json["captions"]["track"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(tracks, ["live/es/ai/captions-es", "live/es/ai/captions-en"]);
    let (es, en) = (
        std::fs::read_to_string(&vtt_es).unwrap(),
        std::fs::read_to_string(&vtt_en).unwrap(),
    );
    println!(
        "{es}\n{en}\nsidecar: {}",
        without_colours(&sidecar.stderr_tail(80))
    );
    let recall = word_recall(&sentences.join(" "), &es);
    assert!(
        recall >= 0.6,
        "{:.0}% of the Spanish words: {es}",
        recall * 100.0
    );
    let english = word_recall("music important thank tomorrow", &en);
    assert!(
        english >= 0.6,
        "{:.0}% of the English words: {en}\nsidecar: {}",
        english * 100.0,
        without_colours(&sidecar.stderr_tail(60))
    );
    let (es_cues, en_cues) = (vtt_cues(&es), vtt_cues(&en));
    assert!(!en_cues.is_empty(), "{en}");
    for (id, (times, _)) in &en_cues {
        assert_eq!(
            Some(times),
            es_cues.get(id).map(|c| &c.0),
            "cue {id}: {es}\n{en}"
        );
    }
    relay.stop().await;
}

//! Dubbed audio end to end: relay + `moqcast-publish` of English espeak-ng speech +
//! `moqcast-sidecar --translate es --dub es` (Whisper tiny.en, Apertium, SVOX Pico or
//! espeak-ng) + a subscriber of `<broadcast>/ai` `audio-es` on the client library. The dub
//! decodes, its timestamps run on in 20 ms steps without a gap, and the speech segments found
//! in it by voice activity start within 300 ms of their cues' start.
//!
//! Needs the model (scripts/fetch-model.sh), espeak-ng, sox, ffmpeg and Apertium with its
//! English-Spanish pair (scripts/setup.sh installs all of them).

use std::time::{Duration, Instant};

use moqcast_client::{Client, TrackSubscription};
use moqcast_media::loc::LocProperties;
use moqcast_sidecar::{
    audio_in::AudioDecoder,
    vad::{Vad, VadConfig, VadEvent, FRAME_SAMPLES},
};
use moqcast_tests::{
    command,
    speech::{sidecar_command, speech_video, speech_wav},
    without_colours, ChildGuard, TempDir, TestRelay,
};

const SENTENCES: [&str; 3] = [
    "This is a live broadcast with automatic captions.",
    "The weather today is sunny and warm.",
    "Thank you for watching and have a good night.",
];

/// How far the dub runs behind the source in this test, ms.
const DELAY_MS: u64 = 9_000;

/// `(start_ms, end_ms)` of each "dubbed cue" the sidecar logged (the cue on the media
/// timeline).
fn dubbed_cues(log: &str) -> Vec<(u64, u64)> {
    let field = |l: &str, name: &str| -> Option<u64> {
        let v = l.split(&format!(" {name}=")).nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    without_colours(log)
        .lines()
        .filter(|l| l.contains("dubbed cue") && !l.contains("skipped"))
        .filter_map(|l| Some((field(l, "start_ms")?, field(l, "end_ms")?)))
        .collect()
}

/// A counter or gauge from the sidecar's /metrics (0 when absent or not yet listening).
fn metric(addr: std::net::SocketAddr, line_prefix: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metric_async(addr: std::net::SocketAddr, line_prefix: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || metric(addr, line_prefix))
        .await
        .unwrap()
}

const SYNTH_CALLS: &str = "moqcast_sidecar_provider_calls_total{stage=\"synthesize\",provider=\"";
const DUB_SUBSCRIBERS: &str =
    "moqcast_sidecar_dub_subscribers{broadcast=\"live/dub\",lang=\"es\"} ";
const DUB_SPOKEN: &str =
    "moqcast_sidecar_dub_cues_spoken_total{broadcast=\"live/dub\",lang=\"es\"} ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dub_speaks_translated_cues_at_their_start() {
    moqcast_tests::init_tracing();
    let dir = TempDir::new("dub");
    let wav = speech_wav(&dir.0, "talk", &SENTENCES, "en-us", 2.0, 1.5);
    let talk = speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let relay = TestRelay::start(&[]).await;
    let delay = DELAY_MS.to_string();
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics_addr.to_string();
    let sidecar = {
        let extra = [
            "--metrics-addr",
            &metrics_arg,
            "--broadcast",
            "live/dub",
            "--translate",
            "es",
            "--dub",
            "es",
            "--dub-delay-ms",
            &delay,
        ];
        let mut cmd = sidecar_command(&relay.url("https"), &relay.fingerprint, &extra);
        cmd.env("RUST_LOG", "info,moq_transport=off,quinn=warn");
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    let _publisher = {
        let mut cmd = command("moqcast-publish");
        cmd.args([
            "--url",
            &relay.url("https"),
            "--tls-fingerprint",
            &relay.fingerprint,
            "--broadcast",
            "live/dub",
            "--loop",
            "--input",
        ])
        .arg(&talk);
        ChildGuard::spawn("publish", &mut cmd, &dir.0)
    };

    // The dub's catalog entry, then its audio, on the client library.
    let client = Client::new(&moqcast_tests::insecure_tls()).unwrap();
    let url: url::Url = relay.url("https").parse().unwrap();
    let conn = client.connect(&url).await.unwrap();
    let session = tokio::spawn(conn.session.run());
    let _session = AbortOnDrop(session.abort_handle());
    let cat = tokio::time::timeout(
        Duration::from_secs(40),
        moqcast_client::fetch_catalog(&conn.subscriber, "live/dub/ai", Duration::from_secs(40)),
    )
    .await
    .unwrap_or_else(|_| panic!("no ai catalog: {}", sidecar.stderr_tail(30)))
    .unwrap_or_else(|e| panic!("no ai catalog ({e}): {}", sidecar.stderr_tail(30)));
    let track = cat
        .track("audio-es")
        .unwrap_or_else(|| panic!("no audio-es in {}", String::from_utf8_lossy(&cat.to_json())))
        .clone();
    assert_eq!(track.label.as_deref(), Some("Spanish (dubbed)"));
    assert_eq!(track.codec.as_deref(), Some("opus"));
    assert!(track.alt_group.is_some());
    // Published, not yet listened to: nothing is spoken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let synth_calls = |text: &str| -> f64 {
        without_colours(text)
            .lines()
            .filter_map(|l| l.strip_prefix(SYNTH_CALLS))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let all_metrics = |addr: std::net::SocketAddr| async move {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("the sidecar's metrics endpoint");
            write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap()
    };
    assert_eq!(
        synth_calls(&all_metrics(metrics_addr).await),
        0.0,
        "no speech synthesized before anyone listens"
    );
    let info = moqcast_client::audio_info(&cat, &track).unwrap();
    let mut decoder = AudioDecoder::new(&info).unwrap();
    let (mut sub, driver) = TrackSubscription::new(&conn.subscriber, "live/dub/ai", "audio-es");
    let _driver = AbortOnDrop(tokio::spawn(driver).abort_handle());

    // 16 kHz audio of the dub by media time, 20 ms per object.
    let mut first_ts: Option<u64> = None;
    let mut last_ts: Option<u64> = None;
    let mut audio: Vec<f32> = Vec::new();
    let mut objects = 0u64;
    let started = Instant::now();
    let record = Duration::from_secs(30);
    while started.elapsed() < record {
        let obj = match tokio::time::timeout(Duration::from_secs(15), sub.next()).await {
            Ok(Ok(Some(o))) => o,
            other => panic!(
                "the dub stopped ({:?}) after {objects} objects: {}",
                other.map(|r| r.map(|o| o.is_some())),
                sidecar.stderr_tail(40)
            ),
        };
        let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
        let ts = props.timestamp_us().expect("a LOC timestamp");
        if let Some(last) = last_ts {
            assert_eq!(ts, last + 20_000, "continuous 20 ms frames");
        }
        first_ts.get_or_insert(ts);
        last_ts = Some(ts);
        let pcm = decoder.decode(&obj.payload).expect("the dub decodes");
        // The first packet gives less (the decoder's pre-skip); place each at its time.
        let at = ((ts - first_ts.unwrap()) * 16 / 1000) as usize;
        audio.resize(at, 0.0);
        audio.extend_from_slice(&pcm[pcm.len().saturating_sub(320)..]);
        objects += 1;
    }
    let (first_ts, last_ts) = (first_ts.unwrap(), last_ts.unwrap());
    assert!(metric_async(metrics_addr, DUB_SPOKEN).await >= 2.0);
    // The listener leaves: the dub stops speaking.
    drop(sub);
    drop(_driver);
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric_async(metrics_addr, DUB_SUBSCRIBERS).await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the dub's subscription did not end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = synth_calls(&all_metrics(metrics_addr).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        synth_calls(&all_metrics(metrics_addr).await),
        calls,
        "nothing spoken once the last listener left"
    );
    assert!(objects >= 1_000, "{objects} objects in {record:?}");

    // Speech segments by voice activity (a pause of 400 ms ends one), in media time.
    let mut vad = Vad::new(VadConfig {
        hangover_frames: 20,
        ..Default::default()
    });
    let mut segments = Vec::new();
    for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
        if let Some(VadEvent::SpeechStart { frames_ago }) = vad.push_frame(frame) {
            segments.push(first_ts + (i as u64 - u64::from(frames_ago)) * 20_000);
        }
    }
    let log = sidecar.stderr_tail(5_000);
    let cues: Vec<(u64, u64)> = dubbed_cues(&log)
        .into_iter()
        .map(|(s, e)| (s * 1000, e * 1000))
        .filter(|&(s, _)| s >= first_ts && s + 500_000 < last_ts)
        .collect();
    println!("dub {first_ts}..{last_ts} us, cues {cues:?}, speech starts {segments:?}");
    for l in without_colours(&log).lines().filter(|l| l.contains("cue")) {
        println!("{l}");
    }
    assert!(
        cues.len() >= 2,
        "at least two dubbed cues within the recording: {cues:?}\n{}",
        log.lines()
            .filter(|l| l.contains("cue"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every cue's speech starts within 300 ms of the cue's start...
    for (c, _) in &cues {
        let nearest = segments
            .iter()
            .map(|s| s.abs_diff(*c))
            .min()
            .unwrap_or(u64::MAX);
        assert!(
            nearest <= 300_000,
            "cue at {c} us: the nearest speech starts {nearest} us away: {segments:?}"
        );
    }
    // ... and there is no speech outside the cues (a pause inside one may split its speech).
    for s in segments
        .iter()
        .filter(|&&s| s >= cues[0].0 && s + 500_000 < last_ts)
    {
        assert!(
            cues.iter()
                .any(|&(a, b)| *s + 300_000 >= a && *s <= b + 300_000),
            "speech at {s} us is in no cue: {cues:?}"
        );
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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

/// A relay, `moqcast-publish` of looped English speech as `broadcast`, and `moqcast-sidecar
/// --translate es --dub es` with `extra` flags, its metrics on `metrics_addr`; `ai` is the
/// sidecar's catalog (with `audio-es` in it), read over `subscriber`.
struct Rig {
    // Dropped in this order: the session, the processes, the relay, the directory.
    _session: AbortOnDrop,
    subscriber: moqcast_media::moq::Subscriber,
    ai: moqcast_media::catalog::Catalog,
    metrics_addr: std::net::SocketAddr,
    _publisher: ChildGuard,
    sidecar: ChildGuard,
    _relay: TestRelay,
    _dir: TempDir,
}

impl Rig {
    async fn start(name: &str, broadcast: &str, extra: &[&str]) -> Rig {
        let dir = TempDir::new(name);
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
            let mut args = vec![
                "--metrics-addr",
                &metrics_arg,
                "--broadcast",
                broadcast,
                "--translate",
                "es",
                "--dub",
                "es",
                "--dub-delay-ms",
                &delay,
            ];
            args.extend_from_slice(extra);
            let mut cmd = sidecar_command(&relay.url("https"), &relay.fingerprint, &args);
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
                broadcast,
                "--loop",
                "--input",
            ])
            .arg(&talk);
            ChildGuard::spawn("publish", &mut cmd, &dir.0)
        };

        // The dub's catalog entry, on the client library.
        let client = Client::new(&moqcast_tests::insecure_tls()).unwrap();
        let url: url::Url = relay.url("https").parse().unwrap();
        let conn = client.connect(&url).await.unwrap();
        let _session = AbortOnDrop(tokio::spawn(conn.session.run()).abort_handle());
        let ai_name = format!("{broadcast}/ai");
        let ai = tokio::time::timeout(
            Duration::from_secs(40),
            moqcast_client::fetch_catalog(&conn.subscriber, &ai_name, Duration::from_secs(40)),
        )
        .await
        .unwrap_or_else(|_| panic!("no ai catalog: {}", sidecar.stderr_tail(30)))
        .unwrap_or_else(|e| panic!("no ai catalog ({e}): {}", sidecar.stderr_tail(30)));
        Rig {
            _dir: dir,
            _relay: relay,
            sidecar,
            _publisher,
            subscriber: conn.subscriber,
            _session,
            ai,
            metrics_addr,
        }
    }

    /// `audio-es` of the sidecar's catalog.
    fn dub_track(&self) -> moqcast_media::catalog::Track {
        self.ai
            .track("audio-es")
            .unwrap_or_else(|| {
                panic!(
                    "no audio-es in {}",
                    String::from_utf8_lossy(&self.ai.to_json())
                )
            })
            .clone()
    }
}

/// 16 kHz audio of a track by media time, as it arrived over `record`.
struct Recording {
    first_ts: u64,
    last_ts: u64,
    audio: Vec<f32>,
    objects: u64,
}

/// Subscribes to `track` of `broadcast` and decodes what arrives for `record`, each object
/// placed at its timestamp. With `steps_us`, the objects must be that far apart with none
/// missing (a continuous track), in whatever order they arrived.
async fn record_audio(
    rig: &Rig,
    cat: &moqcast_media::catalog::Catalog,
    broadcast: &str,
    track: &moqcast_media::catalog::Track,
    record: Duration,
    steps_us: Option<u64>,
) -> Recording {
    let info = moqcast_client::audio_info(cat, track).unwrap();
    let mut decoder = AudioDecoder::new(&info).unwrap();
    let (mut sub, driver) = TrackSubscription::new(&rig.subscriber, broadcast, &track.name);
    let _driver = AbortOnDrop(tokio::spawn(driver).abort_handle());
    let mut first_ts: Option<u64> = None;
    let mut last_ts: Option<u64> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut reordered = 0u64;
    let mut audio: Vec<f32> = Vec::new();
    let mut objects = 0u64;
    let started = Instant::now();
    while started.elapsed() < record {
        let obj = match tokio::time::timeout(Duration::from_secs(15), sub.next()).await {
            Ok(Ok(Some(o))) => o,
            other => panic!(
                "{broadcast} {} stopped ({:?}) after {objects} objects: {}",
                track.name,
                other.map(|r| r.map(|o| o.is_some())),
                rig.sidecar.stderr_tail(40)
            ),
        };
        let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
        let ts = props.timestamp_us().expect("a LOC timestamp");
        // Each group is its own stream: the first objects of a group may overtake the last
        // ones of the group before. Audio is placed by its timestamp, whatever the order.
        if first_ts.is_some_and(|first| ts < first) || !seen.insert(ts) {
            continue;
        }
        if last_ts.is_some_and(|last| ts < last) {
            reordered += 1;
        }
        let first = *first_ts.get_or_insert(ts);
        last_ts = Some(last_ts.map_or(ts, |last| last.max(ts)));
        let pcm = decoder.decode(&obj.payload).expect("the audio decodes");
        // Each object's 16 kHz samples at its time; the first Opus packet gives less (the
        // decoder's pre-skip), AAC frames give 341 or 342.
        let per_object = match steps_us {
            Some(step) => (step * 16 / 1000) as usize,
            None => pcm.len(),
        };
        let pcm = &pcm[pcm.len().saturating_sub(per_object)..];
        let at = ((ts - first) * 16 / 1000) as usize;
        if audio.len() < at + pcm.len() {
            audio.resize(at + pcm.len(), 0.0);
        }
        audio[at..at + pcm.len()].copy_from_slice(pcm);
        objects += 1;
    }
    let (first, last) = (first_ts.unwrap(), last_ts.unwrap());
    if let Some(step) = steps_us {
        // Continuous: every frame between the first and the last (less the last 200 ms, which
        // may still be on their way when the recording stopped) arrived.
        let end = last.saturating_sub(200_000).max(first);
        let expected = (end - first) / step + 1;
        let got = seen.range(first..=end).count() as u64;
        assert!(
            got == expected && seen.range(first..=end).all(|t| (t - first) % step == 0),
            "continuous {step} us frames from {first} to {end} us: {got} of {expected} ({reordered} out of order)"
        );
        println!(
            "{broadcast} {}: {objects} objects, continuous, {reordered} arrived out of order",
            track.name
        );
    }
    Recording {
        first_ts: first,
        last_ts: last,
        audio,
        objects,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dub_speaks_translated_cues_at_their_start() {
    moqcast_tests::init_tracing();
    let rig = Rig::start("dub", "live/dub", &[]).await;
    let (sidecar, metrics_addr) = (&rig.sidecar, rig.metrics_addr);
    let track = rig.dub_track();
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
    let record = Duration::from_secs(30);
    let Recording {
        first_ts,
        last_ts,
        audio,
        objects,
    } = record_audio(&rig, &rig.ai, "live/dub/ai", &track, record, Some(20_000)).await;
    assert!(metric_async(metrics_addr, DUB_SPOKEN).await >= 2.0);
    // The listener left when the recording ended: the dub stops speaking.
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

/// `--dub-original-db -20`: the original audio runs under the voice at a tenth of its
/// amplitude. Both tracks are recorded over the same stretch of media time; the gain of the
/// original found in the dub (the median of its least-squares gain over the source's loud
/// frames, at the best alignment within 100 ms) is -20 dB within the codecs' error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dub_mixes_the_original_underneath_at_its_level() {
    moqcast_tests::init_tracing();
    let rig = Rig::start("dub-mix", "live/mix", &["--dub-original-db", "-20"]).await;
    let dub = rig.dub_track();
    let cat = moqcast_client::fetch_catalog(&rig.subscriber, "live/mix", Duration::from_secs(20))
        .await
        .unwrap();
    let source = cat.audio_tracks().next().expect("an audio track").clone();
    // The dub runs DELAY_MS behind: 25 s of both share about 16 s of media time.
    let record = Duration::from_secs(25);
    let (src, dubbed) = tokio::join!(
        record_audio(&rig, &cat, "live/mix", &source, record, None),
        record_audio(&rig, &rig.ai, "live/mix/ai", &dub, record, Some(20_000)),
    );
    let from = src.first_ts.max(dubbed.first_ts);
    let to = src.last_ts.min(dubbed.last_ts);
    assert!(
        to > from + 8_000_000,
        "too little media time in both: source {}..{}, dub {}..{}",
        src.first_ts,
        src.last_ts,
        dubbed.first_ts,
        dubbed.last_ts
    );
    let at = |r: &Recording, ts: u64| ((ts - r.first_ts) * 16 / 1000) as usize;
    let margin = 1_600; // 100 ms
    let n = at(&dubbed, to) - at(&dubbed, from) - 2 * margin;
    let d = &dubbed.audio[at(&dubbed, from) + margin..][..n];
    let s0 = at(&src, from) + margin;
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    // The alignment with the strongest normalised correlation.
    let (offset, corr) = (-(margin as i64)..=margin as i64)
        .step_by(2)
        .map(|o| {
            let s = &src.audio[(s0 as i64 + o) as usize..][..n];
            (
                o,
                dot(d, s) / (dot(s, s).sqrt() * dot(d, d).sqrt()).max(1e-9),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let s = &src.audio[(s0 as i64 + offset) as usize..][..n];
    // The gain per 40 ms frame where the source is loud, and its median: where the dub's voice
    // is silent the frame holds only the original (its gain exactly); where it speaks the
    // voice scatters the ratio both ways.
    let frames: Vec<(&[f32], &[f32])> = d.chunks_exact(640).zip(s.chunks_exact(640)).collect();
    let mut energies: Vec<f64> = frames.iter().map(|(_, s)| dot(s, s)).collect();
    energies.sort_by(f64::total_cmp);
    let loud = energies[energies.len() / 2].max(1e-6);
    let mut ratios: Vec<f64> = frames
        .iter()
        .filter(|(_, s)| dot(s, s) >= loud)
        .map(|(d, s)| dot(d, s) / dot(s, s))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let gain = ratios[ratios.len() / 2];
    let db = 20.0 * gain.max(1e-6).log10();
    println!(
        "{:.1} s of media time in both ({} source, {} dub objects): the original is in the dub at {db:.1} dB (gain {gain:.3}, correlation {corr:.3}, offset {:.1} ms)",
        n as f64 / 16_000.0,
        src.objects,
        dubbed.objects,
        offset as f64 / 16.0
    );
    assert!(
        (-25.0..=-16.0).contains(&db),
        "the original should be mixed in at -20 dB, found {db:.1} dB (correlation {corr:.3}): {}",
        rig.sidecar.stderr_tail(20)
    );
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

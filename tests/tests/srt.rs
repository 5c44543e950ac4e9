//! SRT ingest end to end: FFmpeg pushes H.264 + AAC in MPEG-TS the way OBS does
//! (`-f mpegts "srt://HOST:PORT?streamid=KEY"`) into the relay's `--srt-bind` listener (libsrt
//! as the caller, srt-tokio in the relay), and `moqcast-subscribe --output` records the
//! broadcast over MoQ; ffprobe counts the frames and checks their timestamps.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use moqcast_tests::ingest::{audio_frame_times, check_recording, finish, metric, record};
use moqcast_tests::{init_tracing, probe, ChildGuard, TempDir, TestRelay};

fn push(name: &str, url: &str, seconds: u32, dir: &Path) -> ChildGuard {
    moqcast_tests::ffmpeg_srt_push(name, url, seconds, dir)
}

/// `srt://127.0.0.1:PORT?streamid=STREAMID`. FFmpeg passes the streamid to libsrt as it is
/// written (no percent-decoding), `#!::` included, as OBS does.
fn srt_url(relay: &TestRelay, streamid: &str) -> String {
    let addr = relay.srt.expect("the relay has --srt-bind");
    // linger: deliver what is still queued when FFmpeg closes (live mode drops it by default).
    format!(
        "srt://127.0.0.1:{}?streamid={streamid}&linger=2",
        addr.port()
    )
}

/// Waits until `/broadcasts` contains `needle`.
async fn wait_listed(relay: &TestRelay, needle: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = relay.http_get("/broadcasts");
        if list.contains(needle) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An FFmpeg that should be refused at connect: it fails within 10 s.
async fn refused(mut ffmpeg: ChildGuard) {
    let (status, tail) = tokio::task::spawn_blocking(move || {
        let s = ffmpeg.wait_timeout(Duration::from_secs(10));
        (s, ffmpeg.stderr_tail(5))
    })
    .await
    .unwrap();
    assert!(
        matches!(status, Some(s) if !s.success()),
        "ffmpeg should be refused at connect: {status:?} {tail}"
    );
}

/// The main path: FFmpeg publishes over SRT with the streamid as the broadcast name
/// (no keys configured), a MoQ recorder gets at least 95% of the frames, correctly timed, and
/// the relay shows the ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_over_srt_is_recorded_over_moq() {
    init_tracing();
    let relay = TestRelay::start(&["--srt-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("srt-main");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "demo", &out, f64::from(seconds) + 5.0, &dir.0);
    let mut publisher = push("ffmpeg", &srt_url(&relay, "demo"), seconds, &dir.0);

    // While it publishes, the relay lists the broadcast and its ingest, with every track.
    let listed = wait_listed(&relay, "\"srt\"", "the SRT publisher never went live").await;
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let demo = v
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["broadcast"] == "demo")
        .unwrap_or_else(|| panic!("demo not listed: {listed}"));
    assert_eq!(demo["srt"]["connected"], true, "{listed}");
    for track in ["catalog", "video", "audio"] {
        assert!(
            demo["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == track),
            "{listed}"
        );
    }

    tokio::task::spawn_blocking(move || {
        finish(&mut publisher, Duration::from_secs(20));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    check_recording(&out, f64::from(seconds), 0.2, "SRT recording");
    let video = metric(&relay, "moqcast_srt_ingest_video_frames_total");
    let audio = metric(&relay, "moqcast_srt_ingest_audio_frames_total");
    eprintln!("SRT ingest: {video} video frames, {audio} audio frames");
    assert!(video as f64 >= 0.95 * 180.0, "{video} video frames of 180");
    assert!(audio as f64 >= 0.95 * 281.0, "{audio} audio frames of 281");
    assert_eq!(metric(&relay, "moqcast_srt_refused_total"), 0);
    assert_eq!(metric(&relay, "moqcast_rtmp_ingest_video_frames_total"), 0);
    relay.stop().await;
}

/// Opus in MPEG-TS (FFmpeg's libopus through its mpegts muxer): the Opus packets are carried
/// as they came (no transcoding), so the recording's audio is Opus that decodes, at least 95% of
/// the 20 ms packets, 20 ms apart, beside the H.264 video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_over_srt_is_recorded_over_moq() {
    init_tracing();
    let relay = TestRelay::start(&["--srt-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("srt-opus");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "opus", &out, f64::from(seconds) + 5.0, &dir.0);
    let url = srt_url(&relay, "opus");
    let mut publisher = moqcast_tests::ffmpeg_srt_push_opus("ffmpeg", &url, seconds, &dir.0);
    let listed = wait_listed(&relay, "\"srt\"", "the SRT Opus publisher never went live").await;
    assert!(listed.contains("\"opus\""), "{listed}");
    tokio::task::spawn_blocking(move || {
        finish(&mut publisher, Duration::from_secs(20));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();

    check_recording(&out, f64::from(seconds), 0.2, "SRT Opus recording");
    let streams = probe(&out);
    let audio = streams
        .iter()
        .find(|s| s.0 == "audio")
        .unwrap_or_else(|| panic!("no audio in {streams:?}"));
    assert_eq!(audio.1, "opus", "{streams:?}");
    let packets = f64::from(seconds) * 50.0;
    assert!(
        audio.2 as f64 >= 0.95 * packets,
        "{} Opus frames decoded of {packets}",
        audio.2
    );
    let times = audio_frame_times(&out);
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let median = steps[steps.len() / 2];
    assert!(
        (median - 0.02).abs() < 0.001,
        "Opus frames {median} s apart"
    );
    assert!(steps[0] > 0.0, "repeated audio timestamps");
    let ingested = metric(&relay, "moqcast_srt_ingest_audio_frames_total");
    eprintln!(
        "SRT Opus: {ingested} audio frames ingested, {} decoded, largest step {:.3} s",
        audio.2,
        steps.last().unwrap()
    );
    assert!(ingested as f64 >= 0.95 * packets, "{ingested} of {packets}");
    relay.stop().await;
}

/// With a key file (shared with RTMP): an unknown key and a caller asking to play
/// (`m=request`) are rejected in the SRT handshake (FFmpeg fails at once, the refusals are
/// counted, nothing is published), and two publishers with their keys, one in the SRT access
/// control syntax, publish two broadcasts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_keys_refuse_strangers_and_two_publishers_work_at_once() {
    init_tracing();
    let dir = TempDir::new("srt-keys");
    let keys = dir.path("keys.toml");
    std::fs::write(
        &keys,
        "\"k-alpha\" = \"studio/a\"\n\"k-beta\" = \"studio/b\"\n",
    )
    .unwrap();
    let relay = TestRelay::start(&[
        "--srt-bind",
        "127.0.0.1:0",
        "--rtmp-keys",
        keys.to_str().unwrap(),
    ])
    .await;

    refused(push("stranger", &srt_url(&relay, "studio/a"), 5, &dir.0)).await;
    assert_eq!(metric(&relay, "moqcast_srt_refused_total"), 1);
    refused(push(
        "player",
        &srt_url(&relay, "#!::r=k-alpha,m=request"),
        5,
        &dir.0,
    ))
    .await;
    assert_eq!(metric(&relay, "moqcast_srt_refused_total"), 2);
    assert_eq!(relay.http_get("/broadcasts").trim(), "[]");

    let seconds = 6;
    let (out_a, out_b) = (dir.path("a.mp4"), dir.path("b.mp4"));
    let mut rec_a = record(&relay, "studio/a", &out_a, f64::from(seconds) + 5.0, &dir.0);
    let mut rec_b = record(&relay, "studio/b", &out_b, f64::from(seconds) + 5.0, &dir.0);
    let mut pub_a = push(
        "alpha",
        &srt_url(&relay, "#!::r=k-alpha,m=publish"),
        seconds,
        &dir.0,
    );
    let mut pub_b = push("beta", &srt_url(&relay, "k-beta"), seconds, &dir.0);
    tokio::task::spawn_blocking(move || {
        finish(&mut pub_a, Duration::from_secs(20));
        finish(&mut pub_b, Duration::from_secs(20));
        finish(&mut rec_a, Duration::from_secs(20));
        finish(&mut rec_b, Duration::from_secs(20));
    })
    .await
    .unwrap();
    check_recording(&out_a, f64::from(seconds), 0.2, "publisher a");
    check_recording(&out_b, f64::from(seconds), 0.2, "publisher b");
    assert_eq!(metric(&relay, "moqcast_srt_refused_total"), 2);
    relay.stop().await;
}

/// A second publisher on a key that is live is rejected, and a caller sending bytes that are
/// no MPEG-TS is disconnected (its own connection only); the first publisher goes on
/// undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_srt_publisher_is_refused_and_malformed_ts_is_dropped() {
    use futures::{SinkExt, StreamExt};
    init_tracing();
    let relay = TestRelay::start(&["--srt-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("srt-busy");
    let out = dir.path("rec.mp4");
    let seconds = 7;
    let mut recorder = record(&relay, "busy", &out, f64::from(seconds) + 5.0, &dir.0);
    let mut first = push("first", &srt_url(&relay, "busy"), seconds, &dir.0);
    wait_listed(&relay, "\"busy\"", "the first publisher never went live").await;

    // A caller whose messages are not MPEG-TS.
    let addr = relay.srt.unwrap();
    let errors_before = metric(&relay, "moqcast_errors_total");
    let mut junk = srt_tokio::SrtSocket::builder()
        .call(addr, Some("junk"))
        .await
        .expect("the relay accepts the junk caller's key");
    for i in 0..20u8 {
        let message = bytes::Bytes::from(vec![i; 1316]);
        if junk
            .send((std::time::Instant::now(), message))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(Ok(_)) = junk.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "the relay kept the malformed connection");
    assert!(
        metric(&relay, "moqcast_errors_total") - errors_before >= moqcast_relay::srt::MAX_MALFORMED
    );
    assert!(!relay.http_get("/broadcasts").contains("junk"));

    refused(push("second", &srt_url(&relay, "busy"), seconds, &dir.0)).await;
    assert_eq!(metric(&relay, "moqcast_srt_refused_total"), 1);
    tokio::task::spawn_blocking(move || {
        finish(&mut first, Duration::from_secs(20));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    check_recording(&out, f64::from(seconds), 0.2, "the first publisher");
    relay.stop().await;
}

/// A publisher that drops and reconnects with the same streamid within the resume window
/// keeps its viewers: one recording holds both connections' frames, their timestamps going
/// on across the gap (MPEG-TS timestamps of the second connection start anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_srt_publisher_keeps_its_viewers() {
    init_tracing();
    let relay = TestRelay::start(&["--srt-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("srt-resume");
    let out = dir.path("rec.mp4");
    let (first_s, second_s) = (4u32, 4u32);
    let mut recorder = record(&relay, "again", &out, 18.0, &dir.0);
    let mut first = push("first", &srt_url(&relay, "again"), first_s, &dir.0);
    tokio::task::spawn_blocking(move || finish(&mut first, Duration::from_secs(15)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = push("second", &srt_url(&relay, "again"), second_s, &dir.0);
    tokio::task::spawn_blocking(move || {
        finish(&mut second, Duration::from_secs(15));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    let times = check_recording(&out, f64::from(first_s + second_s), 7.0, "reconnection");
    let largest = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    assert!(
        largest >= 1.4,
        "no gap between the connections ({largest} s): the second was not recorded as such"
    );
    assert_eq!(metric(&relay, "moqcast_srt_ingest_reconnects_total"), 1);
    relay.stop().await;
}

/// A publisher that goes silent (FFmpeg stopped with SIGSTOP: its SRT keepalives stop too) is
/// disconnected after `--srt-timeout-ms`, counted, and its broadcast waits for it to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_srt_publisher_times_out() {
    init_tracing();
    let relay = TestRelay::start(&["--srt-bind", "127.0.0.1:0", "--srt-timeout-ms", "1000"]).await;
    let dir = TempDir::new("srt-silent");
    let mut ffmpeg = push("ffmpeg", &srt_url(&relay, "quiet"), 20, &dir.0);
    wait_listed(
        &relay,
        "\"connected\":true",
        "the publisher never went live",
    )
    .await;
    let pid = ffmpeg.id().expect("ffmpeg runs").to_string();
    let stop = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stop.success());
    let stopped = Instant::now();
    while metric(&relay, "moqcast_srt_timeouts_total") == 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(4),
            "the silent publisher was not timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(800),
        "timed out before --srt-timeout-ms"
    );
    let list = relay.http_get("/broadcasts");
    assert!(list.contains("\"connected\":false"), "{list}");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    ffmpeg.kill();
    relay.stop().await;
}

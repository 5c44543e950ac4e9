//! RTMP ingest end to end: FFmpeg pushes H.264 + AAC the way OBS does (`-f flv rtmp://...`)
//! into the relay's `--rtmp-bind` listener, and `moqcast-subscribe --output` records the
//! broadcast over MoQ; ffprobe counts the frames and checks their timestamps.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use moqcast_tests::ingest::{check_recording, finish, metric, record};
use moqcast_tests::{init_tracing, ChildGuard, TempDir, TestRelay};

fn push(name: &str, url: &str, seconds: u32, dir: &Path) -> ChildGuard {
    moqcast_tests::ffmpeg_rtmp_push(name, url, seconds, dir)
}

fn rtmp_url(relay: &TestRelay, key: &str) -> String {
    let addr = relay.rtmp.expect("the relay has --rtmp-bind");
    format!("rtmp://127.0.0.1:{}/live/{key}", addr.port())
}

/// The main path: FFmpeg publishes over RTMP with the key as the broadcast name
/// (no keys configured), a MoQ recorder gets at least 95% of the frames, correctly timed, and
/// the relay shows the ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_over_rtmp_is_recorded_over_moq() {
    init_tracing();
    let relay = TestRelay::start(&["--rtmp-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("rtmp-main");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "demo", &out, f64::from(seconds) + 5.0, &dir.0);
    let mut publisher = push("ffmpeg", &rtmp_url(&relay, "demo"), seconds, &dir.0);

    // While it publishes, the relay lists the broadcast and its ingest.
    let deadline = Instant::now() + Duration::from_secs(8);
    let listed = loop {
        let list = relay.http_get("/broadcasts");
        if list.contains("\"rtmp\"") || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let demo = v
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["broadcast"] == "demo")
        .unwrap_or_else(|| panic!("demo not listed: {listed}"));
    assert_eq!(demo["rtmp"]["connected"], true, "{listed}");
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
    check_recording(&out, f64::from(seconds), 0.2, "RTMP recording");
    assert!(metric(&relay, "moqcast_rtmp_ingest_video_frames_total") as f64 >= 0.95 * 180.0);
    assert_eq!(metric(&relay, "moqcast_rtmp_refused_total"), 0);
    relay.stop().await;
}

/// With a key file: an unknown key is refused at once (FFmpeg fails, the refusal is counted,
/// nothing is published), and two publishers with their keys publish two broadcasts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refuse_strangers_and_two_publishers_work_at_once() {
    init_tracing();
    let dir = TempDir::new("rtmp-keys");
    let keys = dir.path("keys.toml");
    std::fs::write(
        &keys,
        "\"k-alpha\" = \"studio/a\"\n\"k-beta\" = \"studio/b\"\n",
    )
    .unwrap();
    let relay = TestRelay::start(&[
        "--rtmp-bind",
        "127.0.0.1:0",
        "--rtmp-keys",
        keys.to_str().unwrap(),
    ])
    .await;

    let mut stranger = push("stranger", &rtmp_url(&relay, "studio/a"), 5, &dir.0);
    let status = tokio::task::spawn_blocking(move || {
        let s = stranger.wait_timeout(Duration::from_secs(10));
        (s, stranger.stderr_tail(5))
    })
    .await
    .unwrap();
    assert!(
        matches!(status.0, Some(s) if !s.success()),
        "ffmpeg with an unknown key should fail at once: {status:?}"
    );
    assert_eq!(metric(&relay, "moqcast_rtmp_refused_total"), 1);
    assert_eq!(relay.http_get("/broadcasts").trim(), "[]");

    let seconds = 6;
    let (out_a, out_b) = (dir.path("a.mp4"), dir.path("b.mp4"));
    let mut rec_a = record(&relay, "studio/a", &out_a, f64::from(seconds) + 5.0, &dir.0);
    let mut rec_b = record(&relay, "studio/b", &out_b, f64::from(seconds) + 5.0, &dir.0);
    let mut pub_a = push("alpha", &rtmp_url(&relay, "k-alpha"), seconds, &dir.0);
    let mut pub_b = push("beta", &rtmp_url(&relay, "k-beta"), seconds, &dir.0);
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
    assert_eq!(metric(&relay, "moqcast_rtmp_refused_total"), 1);
    relay.stop().await;
}

/// A second publisher on a key that is live is refused, and so is a client sending a malformed
/// chunk stream; the first publisher goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_on_a_live_key_is_refused() {
    init_tracing();
    let relay = TestRelay::start(&["--rtmp-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("rtmp-busy");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "busy", &out, f64::from(seconds) + 5.0, &dir.0);
    let mut first = push("first", &rtmp_url(&relay, "busy"), seconds, &dir.0);
    // Wait until the first one is on air.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !relay.http_get("/broadcasts").contains("\"busy\"") {
        assert!(
            Instant::now() < deadline,
            "the first publisher never went live"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A client whose chunk stream makes rml_rtmp 0.8.0 panic (an input the fuzz target found)
    // loses its own connection only.
    let rtmp = relay.rtmp.unwrap();
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let input = include_bytes!("../../fuzz/seeds/rtmp_session/chunk_length_overflow.bin");
        let mut s = std::net::TcpStream::connect(rtmp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The first byte is the fuzz target's mode; the rest goes to the relay as it is.
        s.write_all(&input[1..]).unwrap();
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).is_ok()
    })
    .await
    .unwrap();
    assert!(closed, "the relay did not close the malformed connection");
    let mut second = push("second", &rtmp_url(&relay, "busy"), seconds, &dir.0);
    tokio::task::spawn_blocking(move || {
        let s = second.wait_timeout(Duration::from_secs(10));
        assert!(
            matches!(s, Some(s) if !s.success()),
            "the second publisher should be refused: {s:?}"
        );
        finish(&mut first, Duration::from_secs(20));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    assert_eq!(metric(&relay, "moqcast_rtmp_refused_total"), 1);
    check_recording(&out, f64::from(seconds), 0.2, "the first publisher");
    relay.stop().await;
}

/// A publisher that drops and reconnects with the same key within the resume window keeps its
/// viewers: one recording holds both connections' frames, their timestamps going on across
/// the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_publisher_keeps_its_viewers() {
    init_tracing();
    let relay = TestRelay::start(&["--rtmp-bind", "127.0.0.1:0"]).await;
    let dir = TempDir::new("rtmp-resume");
    let out = dir.path("rec.mp4");
    let (first_s, second_s) = (4u32, 4u32);
    let mut recorder = record(&relay, "again", &out, 18.0, &dir.0);
    let mut first = push("first", &rtmp_url(&relay, "again"), first_s, &dir.0);
    tokio::task::spawn_blocking(move || finish(&mut first, Duration::from_secs(15)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = push("second", &rtmp_url(&relay, "again"), second_s, &dir.0);
    tokio::task::spawn_blocking(move || {
        finish(&mut second, Duration::from_secs(15));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    // The recording spans both connections: the hole where the publisher was away is at
    // least the 1.5 s it waited, plus FFmpeg's start-up (seconds on a loaded 2-core machine),
    // and less than the resume window plus that.
    let times = check_recording(&out, f64::from(first_s + second_s), 7.0, "reconnection");
    let largest = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    assert!(
        largest >= 1.4,
        "no gap between the connections ({largest} s): the second was not recorded as such"
    );
    assert_eq!(metric(&relay, "moqcast_rtmp_ingest_reconnects_total"), 1);
    relay.stop().await;
}

/// A publisher that goes silent (FFmpeg stopped with SIGSTOP, its TCP connection still open)
/// is disconnected after `--rtmp-timeout-ms`, counted, and its broadcast waits for it to
/// reconnect; a connection that never completes the handshake is closed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_times_out() {
    init_tracing();
    let relay =
        TestRelay::start(&["--rtmp-bind", "127.0.0.1:0", "--rtmp-timeout-ms", "1000"]).await;
    let dir = TempDir::new("rtmp-silent");
    let mut ffmpeg = push("ffmpeg", &rtmp_url(&relay, "quiet"), 20, &dir.0);
    let deadline = Instant::now() + Duration::from_secs(8);
    while !relay.http_get("/broadcasts").contains("\"connected\":true") {
        assert!(Instant::now() < deadline, "the publisher never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = ffmpeg.id().expect("ffmpeg runs").to_string();
    let stop = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stop.success());
    let stopped = Instant::now();
    while metric(&relay, "moqcast_rtmp_timeouts_total") == 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the silent publisher was not timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(900),
        "timed out before --rtmp-timeout-ms"
    );
    let list = relay.http_get("/broadcasts");
    assert!(list.contains("\"connected\":false"), "{list}");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    ffmpeg.kill();

    // A client that connects and sends nothing.
    let rtmp = relay.rtmp.unwrap();
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(rtmp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).is_ok()
    })
    .await
    .unwrap();
    assert!(
        closed,
        "a client silent in the handshake was not disconnected"
    );
    assert_eq!(metric(&relay, "moqcast_rtmp_timeouts_total"), 2);
    relay.stop().await;
}

/// RTMPS: FFmpeg pushes `-f flv rtmps://...` to `--rtmps-bind` (TLS with the relay's own,
/// here generated, certificate; FFmpeg does not verify it by default), and the recorder gets
/// the frames; plain RTMP on the TLS port fails without publishing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_over_rtmps_is_recorded_over_moq() {
    init_tracing();
    let relay = TestRelay::start(&["--rtmps-bind", "127.0.0.1:0"]).await;
    assert!(
        relay.rtmp.is_none(),
        "no plain RTMP listener without --rtmp-bind"
    );
    let port = relay.rtmps.expect("the relay has --rtmps-bind").port();
    let dir = TempDir::new("rtmps");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut plain = push(
        "plain",
        &format!("rtmp://127.0.0.1:{port}/live/clear"),
        2,
        &dir.0,
    );
    let mut recorder = record(&relay, "secure", &out, f64::from(seconds) + 5.0, &dir.0);
    let mut publisher = push(
        "ffmpeg",
        &format!("rtmps://127.0.0.1:{port}/live/secure"),
        seconds,
        &dir.0,
    );
    tokio::task::spawn_blocking(move || {
        let s = plain.wait_timeout(Duration::from_secs(15));
        assert!(
            matches!(s, Some(s) if !s.success()),
            "plain RTMP on the RTMPS port should fail: {s:?}"
        );
        finish(&mut publisher, Duration::from_secs(20));
        finish(&mut recorder, Duration::from_secs(20));
    })
    .await
    .unwrap();
    check_recording(&out, f64::from(seconds), 0.2, "RTMPS recording");
    assert!(metric(&relay, "moqcast_rtmp_ingest_video_frames_total") as f64 >= 0.95 * 180.0);
    relay.stop().await;
}

//! Take-overs of a live broadcast name keep its viewers: the relay hands each watched track to
//! the new publisher (and back to the previous one when the new one leaves) without ending the
//! viewers' subscriptions. Real relay, real `moqcast-publish` and `moqcast-subscribe` binaries,
//! auth on: the take-over is made with a token that may publish the name.

use std::{
    path::Path,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use moq_token::{Algorithm, Claims, Key, KeyId};
use moqcast_tests::{command, init_tracing, without_colours, ChildGuard, TempDir, TestRelay};

fn key(dir: &Path, id: &str) -> Key {
    let key = Key::generate(Algorithm::HS256, Some(KeyId::decode(id).unwrap())).unwrap();
    key.to_file(dir.join(format!("{id}.jwk"))).unwrap();
    key
}

fn token(key: &Key, put: &[&str], get: &[&str]) -> String {
    let claims = Claims::default()
        .with_root("live")
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(Some(SystemTime::now() + Duration::from_secs(600)));
    key.sign(&claims).unwrap()
}

fn publisher(
    url: &str,
    broadcast: &str,
    token: &str,
    dir: &Path,
    name: &str,
    seconds: Option<u64>,
) -> ChildGuard {
    let mut cmd = command("moqcast-publish");
    cmd.args(["--url", url, "--broadcast", broadcast, "--input", "testsrc"])
        .args(["--token", token, "--tls-disable-verify"]);
    if let Some(s) = seconds {
        cmd.args(["--duration", &s.to_string()]);
    }
    ChildGuard::spawn(name, &mut cmd, dir)
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The recording's video decode times (seconds), in file order.
fn video_dts(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// Publisher A is live and `moqcast-subscribe` records it. Publisher B takes the name over
/// with a token that may publish it: the recording goes on with B's frames, and the viewer
/// never resubscribes. B leaves while A is still connected: A serves the name again and the
/// recording keeps growing. The file's timeline runs on across both changes of publisher
/// (B's clock starts again at 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_hands_the_viewers_over_and_back_without_ending_their_subscriptions() {
    init_tracing();
    let dir = TempDir::new("takeover");
    let keys = dir.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let k = key(&keys, "root");
    let relay = TestRelay::start(&["--auth-key", keys.to_str().unwrap()]).await;
    let url = relay.url("moqt");
    let name = "live/show";
    let streamer = token(&k, &["show"], &[]);
    let viewer = token(&k, &[], &[""]);
    let state = relay.state.clone();
    let m = &state.metrics;
    let session_of = || state.origin.get(name).map(|b| b.session);

    let _a = publisher(&url, name, &streamer, &dir.0, "a", None);
    eventually("A's announcement", Duration::from_secs(15), || {
        session_of().is_some()
    })
    .await;
    let a_session = session_of().unwrap();
    let recording = dir.path("show.mp4");
    let mut sub = {
        let mut cmd = command("moqcast-subscribe");
        cmd.args(["--url", &url, "--broadcast", name, "--json"])
            .args(["--token", &viewer, "--tls-disable-verify"])
            .args(["--duration", "12", "--output", recording.to_str().unwrap()]);
        ChildGuard::spawn("subscribe", &mut cmd, &dir.0)
    };
    eventually(
        "the viewer's subscriptions",
        Duration::from_secs(10),
        || m.subscriptions.load(Ordering::Relaxed) >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let subscribed = m.subscriptions_total.load(Ordering::Relaxed);

    // B takes the name over for 3 s.
    let mut b = publisher(&url, name, &streamer, &dir.0, "b", Some(3));
    eventually("B's take-over", Duration::from_secs(10), || {
        session_of().is_some_and(|s| s != a_session)
    })
    .await;
    let handed = m.tracks_handed_over.load(Ordering::Relaxed);
    assert!(handed >= 2, "video and audio handed over, saw {handed}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = m.objects_out.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(session_of(), Some(a_session), "B still serves the name");
    let during_b = m.objects_out.load(Ordering::Relaxed) - before;
    assert!(
        during_b >= 40,
        "the viewer got {during_b} objects of B's in 1.5 s"
    );

    // B leaves; A, still connected, serves the name again, to the same subscriptions.
    assert!(b.wait_timeout(Duration::from_secs(10)).is_some(), "B ends");
    eventually("the hand-back to A", Duration::from_secs(8), || {
        session_of() == Some(a_session)
    })
    .await;
    eventually("A's tracks handed back", Duration::from_secs(5), || {
        m.tracks_handed_over.load(Ordering::Relaxed) >= handed + 2
    })
    .await;
    let back = m.objects_out.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = m.objects_out.load(Ordering::Relaxed) - back;
    assert!(
        after >= 40,
        "the viewer got {after} objects of A's in 1.5 s"
    );
    assert_eq!(
        m.subscriptions_total.load(Ordering::Relaxed),
        subscribed,
        "the viewer never had to subscribe again"
    );

    let status = sub
        .wait_timeout(Duration::from_secs(15))
        .expect("the subscriber ends after its duration");
    assert!(
        status.success(),
        "{}",
        without_colours(&sub.stderr_tail(20))
    );
    let stats: serde_json::Value = sub
        .stdout()
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary: {}", sub.stdout()));
    let video = stats["tracks"]["video"]["objects"].as_u64().unwrap_or(0);
    assert!(video >= 200, "{stats}");
    // Every frame went into the one recording, on one timeline: B's frames follow A's rather
    // than being squeezed into a tick each (B's clock starts again at 0), and the file spans
    // about the time recorded. The one hole allowed: audio and video keep B's sync, and the
    // first audio the relay got from B (its newest audio group) may start a second or two
    // before its first video group.
    let dts = video_dts(&recording);
    assert!(
        dts.len() as u64 >= 200,
        "{} video frames recorded",
        dts.len()
    );
    let steps: Vec<f64> = dts.windows(2).map(|w| w[1] - w[0]).collect();
    let squeezed = steps.iter().filter(|s| **s < 0.005).count();
    assert!(squeezed <= 3, "{squeezed} frames squeezed together");
    let longest = steps.iter().copied().fold(0.0, f64::max);
    let holes: Vec<String> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 0.2)
        .map(|(i, s)| format!("{s:.2} s after frame {i} at {:.2} s", dts[i]))
        .collect();
    let span = dts[dts.len() - 1] - dts[0];
    assert!(
        longest < 3.0 && (9.0..16.0).contains(&span),
        "a {longest} s hole in the recording of {} frames over {span:.2} s: {holes:?}\n{}",
        dts.len(),
        sub.stderr_tail(20)
    );
    relay.stop().await;
}

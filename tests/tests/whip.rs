//! WHIP ingest end to end (RFC 9725): FFmpeg 9's `whip` muxer publishes H.264 + Opus over
//! WebRTC to the relay's `POST /whip/NAME` (media on `--webrtc-addr`), `moqcast-subscribe
//! --output` records the broadcast over MoQ, and ffprobe counts and times the frames. Bad
//! requests (no or wrong token, malformed offer, busy name) are refused with their status while
//! a broadcast runs, without disturbing it; a publisher's DELETE ends its broadcast at once, and
//! one that vanishes is ended by the timeout.
//!
//! FFmpeg 9 comes from the PyPI wheel `imageio-ffmpeg` 0.8.1 that scripts/setup.sh installs
//! (hash pinned) into ~/.cache/moqcast/imageio-ffmpeg; `MOQCAST_WHIP_FFMPEG` overrides it.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use moq_token::{Algorithm, Key, KeyId};
use moqcast_tests::ingest::{
    audio_frame_times, check_recording, finish, metric, record, video_frame_times,
};
use moqcast_tests::tokens::{key, publish_token as token};
use moqcast_tests::{init_tracing, ChildGuard, TempDir, TestRelay};

/// The FFmpeg with the `whip` muxer.
fn whip_ffmpeg() -> PathBuf {
    if let Some(p) = std::env::var_os("MOQCAST_WHIP_FFMPEG") {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let dir = Path::new(&home).join(".cache/moqcast/imageio-ffmpeg/imageio_ffmpeg/binaries");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ffmpeg-"))
                })
        })
        .unwrap_or_else(|| {
            panic!(
                "no FFmpeg with the whip muxer in {}: run scripts/setup.sh (or set MOQCAST_WHIP_FFMPEG)",
                dir.display()
            )
        })
}

/// FFmpeg publishing a 320x240 30 fps test pattern (libx264, a keyframe every second, no
/// B-frames) and a 440 Hz tone (libopus) for `seconds` over WHIP to `url`.
fn whip_push(name: &str, url: &str, token: Option<&str>, seconds: u32, dir: &Path) -> ChildGuard {
    let mut cmd = Command::new(whip_ffmpeg());
    cmd.args(["-hide_banner", "-v", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args(["-pix_fmt", "yuv420p", "-g", "30", "-bf", "0"])
        .args(["-c:a", "libopus", "-b:a", "64k", "-ac", "2"]);
    if let Some(t) = token {
        cmd.args(["-authorization", t]);
    }
    cmd.args(["-f", "whip", url]);
    ChildGuard::spawn(name, &mut cmd, dir)
}

fn whip_url(relay: &TestRelay, name: &str) -> String {
    format!("http://{}/whip/{name}", relay.http)
}

/// An HTTP/1.1 response: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req += &format!("{n}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Waits (at most `within`) until the relay lists `name` (`present`) or no longer does.
async fn wait_listed(relay: &TestRelay, name: &str, present: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&relay.http_get("/broadcasts")).unwrap_or_default();
        let listed = list
            .as_array()
            .is_some_and(|l| l.iter().any(|b| b["broadcast"] == name));
        if listed == present {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The main path: FFmpeg publishes over WHIP, a MoQ recorder gets at least 95% of the
/// frames, correctly timed (video 1/30 s apart, audio as long as the video), the relay lists
/// the ingest, and the publisher's DELETE at its end takes the broadcast away at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_over_whip_is_recorded_over_moq() {
    init_tracing();
    // A long timeout: the broadcast must end by the DELETE, not by the timeout.
    let relay = TestRelay::start(&[
        "--webrtc-addr",
        "127.0.0.1:0",
        "--webrtc-timeout-ms",
        "30000",
    ])
    .await;
    let dir = TempDir::new("whip-main");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "demo", &out, f64::from(seconds) + 6.0, &dir.0);
    let mut publisher = whip_push("ffmpeg", &whip_url(&relay, "demo"), None, seconds, &dir.0);

    assert!(
        wait_listed(&relay, "demo", true, Duration::from_secs(10)).await,
        "the WHIP broadcast was never listed: {}",
        publisher.stderr_tail(10)
    );
    let list: serde_json::Value = serde_json::from_str(&relay.http_get("/broadcasts")).unwrap();
    let demo = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["broadcast"] == "demo")
        .unwrap()
        .clone();
    assert_eq!(demo["whip"]["connected"], true, "{demo}");
    assert_eq!(metric(&relay, "moqcast_whip_sessions"), 1);

    let publisher = tokio::task::spawn_blocking(move || {
        finish(&mut publisher, Duration::from_secs(25));
        publisher
    })
    .await
    .unwrap();
    // FFmpeg's DELETE ends the broadcast at once (the timeout is 30 s).
    assert!(
        wait_listed(&relay, "demo", false, Duration::from_secs(3)).await,
        "the broadcast outlived its publisher's DELETE: {}",
        publisher.stderr_tail(10)
    );
    assert_eq!(metric(&relay, "moqcast_whip_sessions"), 0);
    assert_eq!(metric(&relay, "moqcast_whip_timeouts_total"), 0);
    tokio::task::spawn_blocking(move || finish(&mut recorder, Duration::from_secs(25)))
        .await
        .unwrap();

    let video = check_recording(&out, f64::from(seconds), 0.2, "WHIP recording");
    let audio = audio_frame_times(&out);
    let span = |t: &[f64]| t.last().unwrap_or(&0.0) - t.first().unwrap_or(&0.0);
    println!(
        "WHIP recording: {} audio frames over {:.3} s, first audio {:.3} s, first video {:.3} s",
        audio.len(),
        span(&audio),
        audio.first().unwrap_or(&0.0),
        video.first().unwrap_or(&0.0)
    );
    assert!(
        (span(&audio) - span(&video)).abs() < 0.5,
        "audio spans {:.3} s, video {:.3} s",
        span(&audio),
        span(&video)
    );
    assert!(
        (audio[0] - video[0]).abs() < 0.3,
        "audio starts at {:.3} s, video at {:.3} s",
        audio[0],
        video[0]
    );
    assert!(metric(&relay, "moqcast_whip_ingest_video_frames_total") as f64 >= 0.95 * 180.0);
    assert!(metric(&relay, "moqcast_webrtc_rtp_packets_total") > 0);
    assert_eq!(metric(&relay, "moqcast_whip_refused_total"), 0);
    relay.stop().await;
}

/// An SDP offer as FFmpeg 9's `whip` muxer makes it (H.264 + Opus, no candidates).
const FFMPEG_OFFER: &str = "v=0\r\no=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\ns=FFmpegPublishSession\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:2f1ef9da\r\na=ice-pwd:9157c23523decca0052ca8d49fd30a42\r\n\
a=fingerprint:sha-256 35:27:D9:83:33:94:90:41:76:ED:95:E9:37:63:FF:F4:F3:D0:4B:7E:98:D4:02:A9:1A:E9:57:00:D9:F7:41:13\r\n\
a=setup:passive\r\na=mid:0\r\na=sendonly\r\na=msid:FFmpeg audio\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=ssrc:3755938624 cname:FFmpeg\r\na=ssrc:3755938624 msid:FFmpeg audio\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 106 105\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:2f1ef9da\r\na=ice-pwd:9157c23523decca0052ca8d49fd30a42\r\n\
a=fingerprint:sha-256 35:27:D9:83:33:94:90:41:76:ED:95:E9:37:63:FF:F4:F3:D0:4B:7E:98:D4:02:A9:1A:E9:57:00:D9:F7:41:13\r\n\
a=setup:passive\r\na=mid:1\r\na=sendonly\r\na=msid:FFmpeg video\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:106 H264/90000\r\n\
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64000d\r\na=rtcp-fb:106 nack\r\n\
a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=106\r\na=ssrc-group:FID 3755938625 3755938626\r\n\
a=ssrc:3755938625 cname:FFmpeg\r\na=ssrc:3755938625 msid:FFmpeg video\r\n";

/// With tokens (`--auth-key`): FFmpeg publishes `live/alice` with its Bearer token; meanwhile
/// requests with no token, a token of another key, a token for another broadcast, a malformed
/// offer, a second publisher of the same name and the wrong content type are refused with their
/// statuses and reasons, and the running broadcast is recorded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_leave_the_running_broadcast_alone() {
    init_tracing();
    let dir = TempDir::new("whip-refusals");
    let keys = dir.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let good = key(&keys, "good");
    let stranger = Key::generate(Algorithm::HS256, Some(KeyId::decode("good").unwrap())).unwrap();
    let alice = token(&good, "live", &["alice"]);
    let relay = TestRelay::start(&[
        "--auth-key",
        keys.to_str().unwrap(),
        "--auth-public-subscribe",
        "live",
        "--webrtc-addr",
        "127.0.0.1:0",
    ])
    .await;
    let out = dir.path("rec.mp4");
    let seconds = 8;
    let mut recorder = record(&relay, "live/alice", &out, f64::from(seconds) + 6.0, &dir.0);
    let mut publisher = whip_push(
        "ffmpeg",
        &whip_url(&relay, "live/alice"),
        Some(&alice),
        seconds,
        &dir.0,
    );
    assert!(
        wait_listed(&relay, "live/alice", true, Duration::from_secs(10)).await,
        "the WHIP broadcast was never listed: {}",
        publisher.stderr_tail(10)
    );

    let http = relay.http;
    let sdp = ("Content-Type", "application/sdp");
    let bearer = |t: &str| format!("Bearer {t}");
    // No token: 401, with the scheme to use.
    let r = request(http, "POST", "/whip/live/bob", &[sdp], FFMPEG_OFFER);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.body.contains("token"), "{}", r.body);
    // A token signed by another key: 401.
    let forged = token(&stranger, "live", &["alice"]);
    let r = request(
        http,
        "POST",
        "/whip/live/alice",
        &[sdp, ("Authorization", &bearer(&forged))],
        FFMPEG_OFFER,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // A good token for another broadcast: 403.
    let r = request(
        http,
        "POST",
        "/whip/live/bob",
        &[sdp, ("Authorization", &bearer(&alice))],
        FFMPEG_OFFER,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // A malformed offer: 400 with the reason.
    let r = request(
        http,
        "POST",
        "/whip/live/alice/cam2",
        &[sdp, ("Authorization", &bearer(&alice))],
        "v=0\r\nm=video banana\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("malformed SDP offer"), "{}", r.body);
    let r = request(
        http,
        "POST",
        "/whip/live/alice/cam2",
        &[sdp, ("Authorization", &bearer(&alice))],
        "hello",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A second publisher of the live broadcast: 409, the first keeps it.
    let r = request(
        http,
        "POST",
        "/whip/live/alice",
        &[sdp, ("Authorization", &bearer(&alice))],
        FFMPEG_OFFER,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("another publisher"), "{}", r.body);
    // Another content type: 415.
    let r = request(
        http,
        "POST",
        "/whip/live/alice/cam2",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer(&alice)),
        ],
        "{}",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    // DELETE of a session that does not exist: 404. OPTIONS: what the endpoint takes.
    let r = request(http, "DELETE", "/whip-session/0123456789abcdef", &[], "");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = request(http, "OPTIONS", "/whip/live/alice", &[], "");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    assert!(metric(&relay, "moqcast_whip_refused_total") >= 7);
    assert_eq!(metric(&relay, "moqcast_whip_sessions"), 1);

    tokio::task::spawn_blocking(move || {
        finish(&mut publisher, Duration::from_secs(25));
        finish(&mut recorder, Duration::from_secs(25));
    })
    .await
    .unwrap();
    println!(
        "beside refusals: the relay took {} video frames; subscriber skips {}, groups dropped {}",
        metric(&relay, "moqcast_whip_ingest_video_frames_total"),
        metric(&relay, "moqcast_slow_subscriber_skips_total"),
        metric(&relay, "moqcast_groups_dropped_total"),
    );
    check_recording(
        &out,
        f64::from(seconds),
        0.2,
        "WHIP recording beside refusals",
    );
    relay.stop().await;
}

/// A publisher that vanishes without a DELETE (killed) is ended by `--webrtc-timeout-ms`: its
/// broadcast leaves the origin and the session's slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_publisher_is_ended_by_the_timeout() {
    init_tracing();
    let relay = TestRelay::start(&[
        "--webrtc-addr",
        "127.0.0.1:0",
        "--webrtc-timeout-ms",
        "2000",
        "--webrtc-max-sessions",
        "1",
    ])
    .await;
    let dir = TempDir::new("whip-vanish");
    let mut publisher = whip_push("ffmpeg", &whip_url(&relay, "gone"), None, 60, &dir.0);
    assert!(
        wait_listed(&relay, "gone", true, Duration::from_secs(10)).await,
        "the WHIP broadcast was never listed: {}",
        publisher.stderr_tail(10)
    );
    // The only session slot is taken: another offer gets 503.
    let r = request(
        relay.http,
        "POST",
        "/whip/other",
        &[("Content-Type", "application/sdp")],
        FFMPEG_OFFER,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let killed = Instant::now();
    publisher.kill();
    assert!(
        wait_listed(&relay, "gone", false, Duration::from_secs(10)).await,
        "the broadcast of a vanished publisher stayed"
    );
    let took = killed.elapsed();
    println!("vanished WHIP publisher ended after {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "ended after {took:?}: not by the timeout"
    );
    assert_eq!(
        metric(&relay, "moqcast_whip_timeouts_total")
            + metric(&relay, "moqcast_webrtc_ice_failures_total"),
        1
    );
    assert_eq!(metric(&relay, "moqcast_whip_sessions"), 0);
    relay.stop().await;
}

/// A UDP link between a WHIP publisher and the relay's WebRTC socket that drops every 20th
/// SRTP/SRTCP datagram the publisher sends (5%; RFC 7983: first byte 128-191). STUN and DTLS
/// pass, so the session comes up; media must be recovered by NACK retransmission.
struct LossyLink {
    /// Where the publisher sends (the relay advertises it with `--webrtc-host`).
    front: std::net::UdpSocket,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LossyLink {
    fn bind() -> Self {
        Self {
            front: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            dropped: Default::default(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }

    /// Forwards between the publisher and `relay` until the task is aborted.
    async fn run(self, relay: SocketAddr) {
        use std::sync::atomic::Ordering;
        self.front.set_nonblocking(true).unwrap();
        let front = tokio::net::UdpSocket::from_std(self.front).unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(relay).await.unwrap();
        let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut publisher = None;
        let mut media = 0u64;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    publisher = Some(from);
                    if (128..=191).contains(&a[0]) {
                        media += 1;
                        if media.is_multiple_of(20) {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = back.send(&a[..n]).await;
                }
                Ok(n) = back.recv(&mut b) => {
                    if let Some(p) = publisher {
                        let _ = front.send_to(&b[..n], p).await;
                    }
                }
            }
        }
    }
}

/// With 5% of the publisher's media datagrams lost on the way, NACK retransmission recovers
/// them: the recording still has at least 95% of the frames, whole and correctly timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_is_recovered_by_retransmission() {
    init_tracing();
    let link = LossyLink::bind();
    let advertised = link.addr().to_string();
    let dropped = link.dropped.clone();
    let relay =
        TestRelay::start(&["--webrtc-addr", "127.0.0.1:0", "--webrtc-host", &advertised]).await;
    let media = relay.state.whip.as_ref().unwrap().local;
    let forwarder = tokio::spawn(link.run(media));
    let dir = TempDir::new("whip-loss");
    let out = dir.path("rec.mp4");
    let seconds = 6;
    let mut recorder = record(&relay, "lossy", &out, f64::from(seconds) + 6.0, &dir.0);
    let mut publisher = whip_push("ffmpeg", &whip_url(&relay, "lossy"), None, seconds, &dir.0);
    tokio::task::spawn_blocking(move || {
        finish(&mut publisher, Duration::from_secs(25));
        finish(&mut recorder, Duration::from_secs(25));
    })
    .await
    .unwrap();
    forwarder.abort();
    let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
    let nacks = metric(&relay, "moqcast_webrtc_nacks_total");
    let lost = metric(&relay, "moqcast_webrtc_packets_lost_total");
    println!(
        "5% loss: {dropped} datagrams dropped, {nacks} NACKs sent, {lost} packets never recovered"
    );
    assert!(dropped > 20, "the link dropped only {dropped} datagrams");
    assert!(nacks > 0, "no NACK was sent");
    let times = video_frame_times(&out);
    println!(
        "5% loss: {} video frames recorded, {:?} to {:?} s",
        times.len(),
        times.first(),
        times.last()
    );
    check_recording(&out, f64::from(seconds), 0.2, "WHIP recording with 5% loss");
    relay.stop().await;
}

/// The signalling alone (RFC 9725 §4): an offer gets `201 Created` with an answer that accepts
/// both media with the relay's candidate, and a `Location`; PATCH takes trickled candidates
/// (`204`), refuses an ICE restart (`501`) and other content types (`415`); DELETE ends the
/// session (`200`, then `404`) and frees its broadcast name for the next offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_is_answered_and_its_session_patched_and_deleted() {
    init_tracing();
    let relay = TestRelay::start(&["--webrtc-addr", "127.0.0.1:0"]).await;
    let media = relay.state.whip.as_ref().unwrap().local;
    let http = relay.http;
    let sdp = ("Content-Type", "application/sdp");
    let r = request(http, "POST", "/whip/signalling", &[sdp], FFMPEG_OFFER);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert_eq!(
        r.header("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    let location = r.header("location").expect("a Location").to_string();
    assert!(location.starts_with("/whip-session/"), "{location}");
    // Both media accepted, the relay's host candidate, and the DTLS role FFmpeg's passive asks.
    let answer = &r.body;
    assert!(
        answer.contains("m=audio 9 ") && answer.contains("m=video 9 "),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("127.0.0.1 {} typ host", media.port())),
        "{answer}"
    );
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert_eq!(metric(&relay, "moqcast_whip_sessions"), 1);

    let frag = ("Content-Type", "application/trickle-ice-sdpfrag");
    let candidate = "a=ice-ufrag:2f1ef9da\r\na=ice-pwd:9157c23523decca0052ca8d49fd30a42\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                     a=candidate:1 1 udp 2113929471 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
    let r = request(http, "PATCH", &location, &[frag], candidate);
    assert_eq!(r.status, 204, "{}", r.body);
    let restart = candidate.replace("2f1ef9da", "0000ffff");
    let r = request(http, "PATCH", &location, &[frag], &restart);
    assert_eq!(r.status, 501, "{}", r.body);
    let r = request(http, "PATCH", &location, &[sdp], candidate);
    assert_eq!(r.status, 415, "{}", r.body);

    // The name is taken while the session lives, free once it is deleted.
    let r = request(http, "POST", "/whip/signalling", &[sdp], FFMPEG_OFFER);
    assert_eq!(r.status, 409, "{}", r.body);
    let r = request(http, "DELETE", &location, &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(http, "DELETE", &location, &[], "");
    assert_eq!(r.status, 404, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&relay, "moqcast_whip_sessions") != 0 {
        assert!(Instant::now() < deadline, "the deleted session stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = request(http, "POST", "/whip/signalling", &[sdp], FFMPEG_OFFER);
    assert_eq!(r.status, 201, "{}", r.body);
    relay.stop().await;
}

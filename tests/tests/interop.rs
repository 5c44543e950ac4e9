//! Interoperability with independent draft-18 implementations (Cloudflare's moq-rs, installed
//! by scripts/setup.sh): our publisher and subscriber through `moq-relay-ietf`, `moq-clock-ietf`
//! through our relay, and the `moq-test-client` conformance cases against our relay.
//!
//! Every child process runs under a [`ChildGuard`] (killed on drop) and is waited for with a
//! timeout; ports are picked free at run time.

use std::time::{Duration, Instant};

use moqcast_tests::{
    command, h264_video_frames_with_audio, init_tracing, peer_bin, ChildGuard, MoqRelayIetf,
    TempDir, TestRelay,
};

const PUBLISH_SECONDS: u64 = 8;
const FPS: u64 = 30;

/// `moqcast-publish --input testsrc` and `moqcast-subscribe` (started 1 s later) through
/// moq-relay-ietf; the recording must hold H.264 video (>= 90% of the frames) and audio.
fn publish_and_record_through_moq_relay_ietf(scheme: &str) {
    init_tracing();
    let relay = MoqRelayIetf::start();
    let url = relay.url(scheme);
    let dir = TempDir::new(&format!("interop-pubsub-{scheme}"));
    let out = dir.path("out.mp4");

    let mut publisher = ChildGuard::spawn(
        "moqcast-publish",
        command("moqcast-publish")
            .args([
                "--url",
                &url,
                "--broadcast",
                "demo",
                "--input",
                "testsrc",
                "--tls-disable-verify",
            ])
            .args(["--duration", &PUBLISH_SECONDS.to_string()]),
        &dir.0,
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut subscriber = ChildGuard::spawn(
        "moqcast-subscribe",
        command("moqcast-subscribe")
            .args([
                "--url",
                &url,
                "--broadcast",
                "demo",
                "--tls-disable-verify",
                "--duration",
                "10",
            ])
            .arg("--output")
            .arg(&out)
            .arg("--json"),
        &dir.0,
    );

    let pub_status = publisher.wait_timeout(Duration::from_secs(PUBLISH_SECONDS + 20));
    let sub_status = subscriber.wait_timeout(Duration::from_secs(30));
    assert!(
        matches!(pub_status, Some(s) if s.success()),
        "publisher over {url}: {pub_status:?} (None = timed out)\n{}",
        publisher.stderr_tail(20)
    );
    assert!(
        matches!(sub_status, Some(s) if s.success()),
        "subscriber over {url}: {sub_status:?} (None = timed out)\n{}\nrelay:\n{}",
        subscriber.stderr_tail(20),
        relay.child.stderr_tail(20)
    );
    assert!(
        out.exists(),
        "no recording; subscriber said: {}\n{}",
        subscriber.stdout(),
        subscriber.stderr_tail(20)
    );

    let stats = subscriber.stdout();
    let frames =
        h264_video_frames_with_audio(&out, &format!("recording over {url}; stats {stats}"));
    let published = PUBLISH_SECONDS * FPS;
    assert!(
        frames * 100 >= published * 90,
        "recorded {frames} of {published} video frames over {url}; stats {stats}"
    );
}

#[test]
fn our_publisher_and_subscriber_through_moq_relay_ietf() {
    publish_and_record_through_moq_relay_ietf("https");
}

/// moq-relay-ietf also accepts raw QUIC (ALPN `moqt-18`) on the same port: checked with
/// `moq-test-client --relay moqt://...` and with our own tools here.
#[test]
fn our_publisher_and_subscriber_through_moq_relay_ietf_over_raw_quic() {
    publish_and_record_through_moq_relay_ietf("moqt");
}

/// A line that moq-clock-ietf prints for each object: `YYYY-MM-DD HH:MM:SS`.
fn is_time_line(line: &str) -> bool {
    let b = line.trim().as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        })
}

fn time_lines(s: &str) -> usize {
    s.lines().filter(|l| is_time_line(l)).count()
}

/// Builds a multi-threaded runtime and starts our relay on it; the test thread itself stays
/// free for blocking waits on child processes.
fn our_relay() -> (tokio::runtime::Runtime, TestRelay) {
    our_relay_with(&[])
}

fn our_relay_with(args: &[&str]) -> (tokio::runtime::Runtime, TestRelay) {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = rt.block_on(TestRelay::start(args));
    (rt, relay)
}

#[test]
fn moq_clock_through_our_relay() {
    let (rt, relay) = our_relay();
    let dir = TempDir::new("interop-clock");
    let port = relay.port();
    let clock = peer_bin("moq-clock-ietf");

    let mut publisher = ChildGuard::spawn(
        "clock-publish",
        std::process::Command::new(&clock)
            .args([
                "--tls-disable-verify",
                "--publish",
                "--namespace",
                "interop-clock",
                "--track",
                "now",
            ])
            .arg(format!("https://localhost:{port}/")),
        &dir.0,
    );
    // The publisher prints each time it publishes: wait for the first one.
    assert!(
        publisher.wait_for_output(Duration::from_secs(10), |out, _| time_lines(out) >= 1),
        "moq-clock-ietf publisher did not start publishing over https: exit {:?}\n{}",
        publisher.try_wait(),
        publisher.stderr_tail(20)
    );
    std::thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    let mut subscriber = ChildGuard::spawn(
        "clock-subscribe",
        std::process::Command::new(&clock)
            .args([
                "--tls-disable-verify",
                "--namespace",
                "interop-clock",
                "--track",
                "now",
            ])
            .arg(format!("moqt://localhost:{port}")),
        &dir.0,
    );
    let got = subscriber.wait_for_output(Duration::from_secs(6), |out, _| time_lines(out) >= 3);
    let elapsed = start.elapsed();
    let (sub_out, sub_exit, sub_err) = (
        subscriber.stdout(),
        subscriber.try_wait(),
        subscriber.stderr_tail(20),
    );
    subscriber.kill();
    publisher.kill();
    rt.block_on(relay.stop());
    assert!(
        got,
        "moq-clock-ietf subscriber over moqt:// printed {} time lines in {elapsed:?} (want >= 3 within 6 s); \
         exit {sub_exit:?}\nstdout:\n{sub_out}\nstderr:\n{sub_err}\npublisher stderr:\n{}",
        time_lines(&sub_out),
        publisher.stderr_tail(10)
    );
}

/// One test case of moq-test-client's TAP output.
#[derive(Debug)]
struct TapCase {
    ok: bool,
    number: u32,
    name: String,
    /// The `message:` of its YAML block, if any.
    message: Option<String>,
}

/// Parses TAP 14 as moq-test-client writes it: `1..N`, `ok N - name` / `not ok N - name`,
/// each optionally followed by an indented YAML block (`---` ... `...`).
fn parse_tap(tap: &str) -> (Option<u32>, Vec<TapCase>) {
    let mut plan = None;
    let mut cases: Vec<TapCase> = Vec::new();
    for line in tap.lines() {
        if let Some(n) = line.strip_prefix("1..") {
            plan = n.trim().parse().ok();
        } else if let Some((ok, rest)) = line
            .strip_prefix("ok ")
            .map(|r| (true, r))
            .or_else(|| line.strip_prefix("not ok ").map(|r| (false, r)))
        {
            let (num, name) = rest.split_once(" - ").unwrap_or((rest, ""));
            cases.push(TapCase {
                ok,
                number: num.trim().parse().unwrap_or(0),
                name: name.trim().to_string(),
                message: None,
            });
        } else if let Some(msg) = line.trim_start().strip_prefix("message:") {
            if let Some(last) = cases.last_mut() {
                last.message = Some(msg.trim().trim_matches('"').to_string());
            }
        }
    }
    (plan, cases)
}

/// The conformance client against the relay's default data path, where the relay writes the
/// subgroup streams itself (PUBLISH_DONE's Stream Count among what it checks).
#[test]
fn moq_test_client_against_our_relay() {
    moq_test_client_against(&[]);
}

fn moq_test_client_against(relay_args: &[&str]) {
    let (rt, relay) = our_relay_with(relay_args);
    let dir = TempDir::new("interop-test-client");
    let url = format!("https://localhost:{}", relay.port());
    let mut client = ChildGuard::spawn(
        "moq-test-client",
        std::process::Command::new(peer_bin("moq-test-client")).args([
            "--relay",
            &url,
            "--tls-disable-verify",
        ]),
        &dir.0,
    );
    // All 18 cases take about 15 s against a relay that fails half of them; allow far more
    // (nextest kills a test after 3 minutes).
    let status = client.wait_timeout(Duration::from_secs(150));
    let tap = client.stdout();
    let stderr_tail = client.stderr_tail(15);
    rt.block_on(relay.stop());

    let (plan, cases) = parse_tap(&tap);
    let failures: Vec<String> = cases
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "  not ok {} - {}: {}",
                c.number,
                c.name,
                c.message.as_deref().unwrap_or("(no message)")
            )
        })
        .collect();
    let passed = cases.iter().filter(|c| c.ok).count();
    let summary = format!(
        "moq-test-client against our relay: {passed} of {} planned cases passed, exit {status:?} (None = timed out)\n{}",
        plan.map_or("?".to_string(), |p| p.to_string()),
        failures.join("\n")
    );
    let plan = plan.unwrap_or_else(|| {
        panic!("no TAP plan line in moq-test-client output:\n{tap}\nstderr:\n{stderr_tail}")
    });
    assert!(plan > 0, "{summary}");
    assert!(
        failures.is_empty() && cases.len() == plan as usize,
        "{summary}\n(ran {} of {plan} cases)\nstderr tail:\n{stderr_tail}",
        cases.len()
    );
    assert!(
        matches!(status, Some(s) if s.success()),
        "{summary}\nstderr tail:\n{stderr_tail}"
    );
}

#[test]
fn tap_parser_reads_moq_test_client_output() {
    let tap = "TAP version 14\n# moq-test-client v0.2.0\n1..2\nok 1 - setup-only\n  ---\n  duration_ms: 4\n  ...\n\
               not ok 2 - rendezvous-timeout\n  ---\n  duration_ms: 4\n  message: \"expected TIMEOUT, got: x\"\n  ...\n";
    let (plan, cases) = parse_tap(tap);
    assert_eq!(plan, Some(2));
    assert_eq!(cases.len(), 2);
    assert!(cases[0].ok && cases[0].name == "setup-only" && cases[0].message.is_none());
    assert!(!cases[1].ok && cases[1].number == 2);
    assert_eq!(
        cases[1].message.as_deref(),
        Some("expected TIMEOUT, got: x")
    );
    assert!(is_time_line("2026-11-21 07:30:31") && !is_time_line("2026-11-21T07:30:31Z"));
}

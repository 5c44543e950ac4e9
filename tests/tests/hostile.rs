//! Findings of a hostile client against the relay (issue 26), each a test that failed before
//! its fix.

use std::{sync::atomic::Ordering, time::Duration};

use moqcast_client::Client;
use moqcast_media::moq::quinn;
use moqcast_tests::{init_tracing, insecure_tls, TestRelay};

/// Lock-out without SETUP: raw QUIC connections that finish the handshake and never send SETUP
/// were kept for ever (keep-alives), so `--max-sessions` of them locked every viewer out. Now
/// the session layer closes them after 10 s (CONTROL_MESSAGE_TIMEOUT, 0x11) and their slots
/// admit viewers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_setup_are_closed_and_free_their_slots() {
    init_tracing();
    let relay = TestRelay::start(&["--max-sessions", "3"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let attacker = Client::new(&insecure_tls()).unwrap();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(attacker.connect_quic(&url).await.expect("QUIC handshake"));
    }
    let viewer = Client::new(&insecure_tls()).unwrap();
    assert!(
        viewer.connect(&url).await.is_err(),
        "the idle connections hold every slot"
    );
    for conn in &idle {
        let reason = tokio::time::timeout(Duration::from_secs(15), conn.closed())
            .await
            .expect("closed by the SETUP deadline");
        match reason {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), 0x11, "CONTROL_MESSAGE_TIMEOUT")
            }
            other => panic!("closed otherwise: {other:?}"),
        }
    }
    let state = relay.state.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while state.sessions.in_use() > 0 {
        assert!(std::time::Instant::now() < deadline, "slots freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = viewer.connect(&url).await.expect("a viewer gets in again");
    assert!(conn.quic.close_reason().is_none());
    assert_eq!(
        relay
            .state
            .metrics
            .sessions_rejected
            .load(Ordering::Relaxed),
        1
    );
    relay.stop().await;
}

/// HTTP side without timers: connections with unfinished headers were never timed out, so
/// slowloris held thousands and `/healthz` failed. Now a connection past
/// `--max-http-connections` is closed at once, and one whose headers do not arrive within
/// `--http-header-timeout-ms` is closed then: health checks answer again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_capped_and_timed_out() {
    use std::io::{Read, Write};
    init_tracing();
    let relay = TestRelay::start(&[
        "--max-http-connections",
        "20",
        "--http-header-timeout-ms",
        "500",
    ])
    .await;
    let addr = relay.http;
    let slow: Vec<_> = (0..60)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = relay.state.metrics.http_refused.load(Ordering::Relaxed);
    assert!(
        refused >= 40,
        "{refused} connections refused over the cap of 20"
    );
    // Within the header timeout (and a margin), every slow connection is closed by the relay
    // and a health check answers.
    let started = std::time::Instant::now();
    let health = tokio::task::spawn_blocking(move || loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ =
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                return reply;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    });
    let reply = tokio::time::timeout(Duration::from_secs(3), health)
        .await
        .expect("/healthz answers once the slow connections time out")
        .unwrap();
    assert!(reply.contains("ok"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(3));
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        // Closed by the relay: EOF, a reset, or a 408 before the close.
        match s.read(&mut buf) {
            Ok(n) if n == 0 || buf[..n].starts_with(b"HTTP/1.1 408") => {}
            Ok(n) => panic!("unexpected {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "a slow connection was left open: {e}"
            ),
        }
    }
    relay.stop().await;
}

/// Unanswered handshakes were expensive: no address validation and no per-address cap. Now a
/// source address holds at most `--max-sessions-per-ip` connections (others are unaffected), and
/// past `--retry-above` handshakes in progress new peers must answer a QUIC Retry first, which
/// a real client does without noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_per_address_and_validated_under_load() {
    init_tracing();
    let relay = TestRelay::start(&[
        "--max-sessions-per-ip",
        "2",
        "--retry-above",
        "0",
        "--worker-threads",
        "1",
    ])
    .await;
    let v4: url::Url = format!("moqt://127.0.0.1:{}", relay.port())
        .parse()
        .unwrap();
    let v6: url::Url = format!("moqt://[::1]:{}", relay.port()).parse().unwrap();
    let client = Client::new(&insecure_tls()).unwrap();
    let a = client.connect(&v4).await.expect("first from 127.0.0.1");
    let b = client.connect(&v4).await.expect("second from 127.0.0.1");
    assert!(
        client.connect(&v4).await.is_err(),
        "a third from one address is refused"
    );
    let c = client.connect(&v6).await.expect("::1 is another address");
    let m = &relay.state.metrics;
    assert_eq!(m.sessions_rejected_per_address.load(Ordering::Relaxed), 1);
    // `--retry-above 0`: every new peer was asked to validate its address, and got in.
    assert!(m.quic_retries.load(Ordering::Relaxed) >= 3);
    for conn in [&a, &b, &c] {
        assert!(conn.quic.close_reason().is_none());
    }
    drop(a);
    client.close().await;
    relay.stop().await;
}

/// Garbage shaped as QUIC Initials (the `garbage-datagrams` attack, 10,000 a second of them)
/// became a failing session each: a task, a span and an info line ("session ended with an
/// error") for every datagram, on the threads that serve viewers, and the bystander's p99 rose
/// from 2 to 18 ms. Now the first packet is authenticated in the accept loop and a failure is
/// only counted (`moqcast_quic_initials_dropped_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_initials_are_dropped_without_a_session() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port()));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = [0u8; 1200];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        for b in datagram.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // A well-formed Initial header (QUIC v1, 8-byte connection IDs, no token, the length
        // of the rest) over a random payload: it passes every check up to authentication.
        datagram[0] = 0xC0 | (datagram[0] & 0x0F);
        datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        datagram[5] = 8;
        datagram[14] = 8;
        datagram[23] = 0;
        let rest = (datagram.len() - 26) as u16;
        datagram[24..26].copy_from_slice(&(0x4000 | rest).to_be_bytes());
        socket.send_to(&datagram, target).unwrap();
        if x.is_multiple_of(8) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // About a quarter pass the header checks (reserved bits) and reach authentication.
    let m = &relay.state.metrics;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while m.quic_initials_dropped.load(Ordering::Relaxed) < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} garbage Initials dropped",
            m.quic_initials_dropped.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        m.session_errors.load(Ordering::Relaxed),
        0,
        "no session for garbage"
    );
    assert_eq!(relay.state.sessions.in_use(), 0);
    // A real client still gets in.
    let client = Client::new(&insecure_tls()).unwrap();
    let url: url::Url = relay.url("moqt").parse().unwrap();
    client.connect(&url).await.expect("a viewer gets in");
    client.close().await;
    relay.stop().await;
}

/// Runs `moqcast-hostile` (the hostile-peer suite) with these attacks against a relay binary of
/// its own, and checks the suite's verdicts: the relay admits the bystander's new subscribers
/// during every attack, loses none of its groups, answers `/healthz`, stays within a 256 MB
/// resident set, never panics, and the bystander's p50 and p99 stay within 10% of the quiet run
/// beside each attack plus a fixed slack (2 ms p50, 25 ms p99): one 3-second round on a 2-core
/// machine that also runs the attacker swings p99 by 10 ms or more between quiet runs. The
/// findings this suite made (p50 1 -> 25 ms, p99 4.9 s, 418 MB) are far outside it; the strict
/// figures (no slack, three rounds, release build) are in docs/security.md.
async fn hostile_suite(attacks: &str) {
    init_tracing();
    let port = moqcast_tests::free_udp_port();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = moqcast_tests::TempDir::new("hostile-suite");
    let log = dir.path("relay.log");
    let web = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    let mut relay = moqcast_tests::command("moqcast-relay")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--http-bind", &http.to_string()])
        .args(["--tls-generate", "localhost,127.0.0.1"])
        .args(["--web-dir", &web.display().to_string()])
        .args(["--cache-total-bytes", &(64 << 20).to_string()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(http).is_err()
        || moqcast_tests::http_get(http, "/healthz").trim() != "ok"
    {
        assert!(std::time::Instant::now() < deadline, "relay never healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = relay.id().to_string();
    let url = format!("moqt://127.0.0.1:{port}");
    let http_arg = http.to_string();
    let attacks = attacks.to_string();
    let run = tokio::task::spawn_blocking(move || {
        moqcast_tests::command("moqcast-hostile")
            .args(["--url", &url, "--http", &http_arg, "--relay-pid", &pid])
            .args(["--attacks", &attacks, "--duration", "3"])
            .args(["--subscribers", "8", "--fps", "60"])
            .args(["--max-rss-mb", "256", "--tolerance", "0.10"])
            .args(["--slack-p50-ms", "2", "--slack-p99-ms", "25"])
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the suite finishes")
        .unwrap();
    let alive = relay.try_wait().unwrap().is_none();
    let _ = relay.kill();
    let _ = relay.wait();
    let relay_log = std::fs::read_to_string(&log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(alive, "the relay died:\n{relay_log}");
    assert!(
        !relay_log.contains("panicked"),
        "the relay panicked:\n{relay_log}"
    );
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_suite_malformed_and_out_of_order_messages() {
    hostile_suite("garbage,truncated,oversize,out-of-order,unknown-params").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_suite_floods_and_silent_handshakes() {
    hostile_suite("request-flood,stream-flood,no-setup,handshake-flood,garbage-datagrams").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_suite_announcement_churn_and_slow_http_clients() {
    hostile_suite("announce-churn,slowloris,slow-readers").await;
}

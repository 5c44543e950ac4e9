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

//! Findings of a hostile client against the relay (issue 26), each a test that failed before
//! its fix.

use std::{sync::atomic::Ordering, time::Duration};

use moqcast_client::{Client, ClientTls};
use moqcast_media::moq::quinn;
use moqcast_tests::{init_tracing, TestRelay};

fn insecure() -> ClientTls {
    ClientTls {
        disable_verify: true,
        ..Default::default()
    }
}

/// Lock-out without SETUP: raw QUIC connections that finish the handshake and never send SETUP
/// were kept for ever (keep-alives), so `--max-sessions` of them locked every viewer out. Now
/// the session layer closes them after 10 s (CONTROL_MESSAGE_TIMEOUT, 0x11) and their slots
/// admit viewers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_setup_are_closed_and_free_their_slots() {
    init_tracing();
    let relay = TestRelay::start(&["--max-sessions", "3"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let attacker = Client::new(&insecure()).unwrap();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(attacker.connect_quic(&url).await.expect("QUIC handshake"));
    }
    let viewer = Client::new(&insecure()).unwrap();
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

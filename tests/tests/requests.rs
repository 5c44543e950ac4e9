//! Request limits by protocol, end to end through the relay: one session holding thousands of
//! subscriptions (the shape of a relay-to-relay link) is served in full, and a session past the
//! configured limit is refused at once with EXCESSIVE_LOAD, never left unanswered.
//!
//! Both ends here are moqcast's own session layer (`moqcast-session`) over raw QUIC; the relay
//! is the real one on loopback.

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::BytesMut;
use moqcast_client::Client;
use moqcast_media::moq::{
    self,
    transport::{coding::KeyValuePairs, data::ObjectStatus, message::TrackExtensions},
    wire,
};
use moqcast_session::{
    draft18::UniStream,
    io::{self as moqt, IncomingRequest},
    Config, Role,
};
use moqcast_tests::{init_tracing, insecure_tls, TestRelay};

/// A client session of our own over raw QUIC, driven by a task of its own.
struct Peer {
    session: moqt::Session,
    incoming: moqt::Incoming,
    _driver: tokio::task::JoinHandle<moqt::Error>,
    _client: Client,
}

async fn connect(url: &url::Url) -> Peer {
    let client = Client::new(&insecure_tls()).unwrap();
    let conn = client.connect_quic(url).await.expect("QUIC connect");
    let wt = web_transport_quinn::Session::raw(
        conn.clone(),
        url.clone(),
        web_transport_quinn::proto::ConnectResponse::default(),
    );
    let (session, incoming, driver) =
        moqt::establish(wt, Some(conn), Role::Client, Config::default());
    let driver = tokio::spawn(driver.run());
    tokio::time::timeout(Duration::from_secs(10), session.ready())
        .await
        .expect("SETUP in time")
        .expect("SETUP");
    Peer {
        session,
        incoming,
        _driver: driver,
        _client: client,
    }
}

/// Announces `broadcast` and answers every SUBSCRIBE with one object whose payload is the
/// track's name, on a stream of its own; the subscriptions stay open.
async fn serve_any_track(mut peer: Peer, broadcast: &str) {
    let _announcement = peer
        .session
        .publish_namespace(moq::namespace(broadcast), KeyValuePairs::default())
        .await
        .expect("PUBLISH_NAMESPACE");
    let mut serving = Vec::new();
    let mut writers = tokio::task::JoinSet::new();
    while let Some(req) = peer.incoming.requests.recv().await {
        let IncomingRequest::Subscribe(sub) = req else {
            continue;
        };
        let name = sub.msg.track_name.to_string_lossy().into_owned();
        let alias = sub.request_id();
        let s = sub
            .accept(alias, KeyValuePairs::default(), TrackExtensions::default())
            .await
            .expect("SUBSCRIBE_OK");
        let mut stream = s.open_stream().await.expect("data stream");
        serving.push(s);
        writers.spawn(async move {
            let mut bytes = wire::subgroup_header(alias, 0, 0, 0).unwrap().to_vec();
            bytes.extend_from_slice(
                &wire::object_header(
                    None,
                    0,
                    &Default::default(),
                    name.len(),
                    ObjectStatus::NormalObject,
                )
                .unwrap(),
            );
            bytes.extend_from_slice(name.as_bytes());
            stream.write_all(&bytes).await.unwrap();
            let _ = stream.finish();
        });
        while writers.try_join_next().is_some() {}
    }
}

/// Reads one subgroup stream: (track alias, payload of its first object).
async fn read_one(stream: moqt::DataStream) -> (u64, Vec<u8>) {
    let moqt::DataStream { head, mut recv, .. } = stream;
    let mut buf = BytesMut::from(&head[..]);
    loop {
        let mut cursor = &buf[..];
        use moq::transport::coding::Decode;
        if let Ok(kind) = moq::transport::data::StreamHeaderType::decode(&mut cursor) {
            if let Ok(h) = moq::transport::data::SubgroupHeader::decode(kind, &mut cursor) {
                let used = buf.len() - cursor.len();
                let mut rest = buf.split_off(used);
                let mut parser = wire::SubgroupParser::new(kind.has_extension_headers(), 1 << 20);
                loop {
                    if let Some(obj) = parser.next(&mut rest).unwrap() {
                        return (h.track_alias, obj.payload.to_vec());
                    }
                    let chunk = recv
                        .read_chunk(4096, true)
                        .await
                        .unwrap()
                        .expect("object before the end of the stream");
                    rest.extend_from_slice(&chunk.bytes);
                }
            }
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().expect("header");
        buf.extend_from_slice(&chunk.bytes);
    }
}

/// 5,000 subscriptions on one session, each to a track of its own, all answered with
/// SUBSCRIBE_OK and all delivering their object; the relay holds 5,000 upstream subscriptions
/// on the publisher's one session too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_holds_five_thousand_subscriptions_through_the_relay() {
    init_tracing();
    const N: usize = 5_000;
    let relay = TestRelay::start(&[]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let publisher = connect(&url).await;
    let serving = tokio::spawn(serve_any_track(publisher, "many"));
    // The announcement reaches the relay before the first SUBSCRIBE.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let subscriber = Arc::new(connect(&url).await);
    let started = std::time::Instant::now();
    let mut subscribes = tokio::task::JoinSet::new();
    for i in 0..N {
        let session = subscriber.session.clone();
        subscribes.spawn(async move {
            let sub = session
                .subscribe(
                    moq::namespace("many"),
                    &format!("t{i}"),
                    KeyValuePairs::default(),
                )
                .await;
            (i, sub)
        });
    }
    let mut subs = Vec::with_capacity(N);
    let mut aliases = std::collections::HashMap::new();
    while let Some(res) = subscribes.join_next().await {
        let (i, sub) = res.unwrap();
        let sub = sub.unwrap_or_else(|e| panic!("SUBSCRIBE t{i}: {e}"));
        aliases.insert(sub.track_alias, i);
        subs.push(sub);
    }
    let answered = started.elapsed();
    assert_eq!(subs.len(), N);
    assert_eq!(
        aliases.len(),
        N,
        "every subscription has an alias of its own"
    );

    let Ok(mut peer) = Arc::try_unwrap(subscriber) else {
        panic!("the subscriber is still shared");
    };
    let mut readers = tokio::task::JoinSet::new();
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < N {
        tokio::select! {
            Some(stream) = peer.incoming.data.recv() => {
                assert_eq!(stream.kind, UniStream::Subgroup);
                readers.spawn(read_one(stream));
            }
            Some(res) = readers.join_next(), if !readers.is_empty() => {
                let (alias, payload) = res.unwrap();
                let i = aliases[&alias];
                assert_eq!(payload, format!("t{i}").as_bytes(), "object of t{i}");
                assert!(got.insert(i), "t{i} delivered twice");
            }
            () = tokio::time::sleep_until(deadline) => {
                panic!("only {} of {N} subscriptions delivered their object", got.len());
            }
        }
    }
    tracing::info!(?answered, total = ?started.elapsed(), "5000 subscriptions served");
    assert_eq!(
        relay
            .state
            .metrics
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(subs);
    serving.abort();
    relay.stop().await;
}

/// Past `--max-requests-per-session` a request is refused at once with REQUEST_ERROR
/// EXCESSIVE_LOAD; the session stays up and serves the requests it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_session_limit_gets_excessive_load_at_once() {
    init_tracing();
    const LIMIT: usize = 50;
    let relay = TestRelay::start(&["--max-requests-per-session", "50"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let publisher = connect(&url).await;
    let serving = tokio::spawn(serve_any_track(publisher, "limited"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let peer = connect(&url).await;
    let mut subs = Vec::new();
    for i in 0..LIMIT {
        subs.push(
            peer.session
                .subscribe(
                    moq::namespace("limited"),
                    &format!("t{i}"),
                    KeyValuePairs::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("SUBSCRIBE t{i}: {e}")),
        );
    }
    let asked = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(2),
        peer.session.subscribe(
            moq::namespace("limited"),
            "one-too-many",
            KeyValuePairs::default(),
        ),
    )
    .await
    .expect("answered, not left waiting")
    .err()
    .expect("refused");
    assert!(
        matches!(err, moqt::Error::Refused { code: 0x9, .. }),
        "{err:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let metrics = relay.state.metrics.render();
    assert!(
        metrics.contains("\nmoqcast_requests_refused_total 1\n"),
        "{metrics}"
    );
    // One ends: the next is served on the same session.
    subs.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.session
        .subscribe(moq::namespace("limited"), "after", KeyValuePairs::default())
        .await
        .expect("served once below the limit again");
    serving.abort();
    relay.stop().await;
}

/// Shutdown drains (SIGTERM in the binary): every session gets GOAWAY, a session that leaves
/// then lets the relay stop before `--drain-ms` is over, and one that stays is closed at the end
/// of the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_waits_for_sessions_to_leave() {
    init_tracing();
    let relay = TestRelay::start(&["--drain-ms", "3000"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let leaving = connect(&url).await;
    let staying = connect(&url).await;
    let state = relay.state.clone();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(relay.stop());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while leaving.session.goaway_received().is_none() {
        assert!(std::time::Instant::now() < deadline, "GOAWAY within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let goaway = staying.session.goaway_received().expect("both got GOAWAY");
    assert_eq!(goaway.timeout_ms, 3000);
    assert_eq!(state.live.lock().unwrap().len(), 2);
    // The one that leaves is gone from the relay; the other is closed when the drain ends.
    drop(leaving);
    tokio::time::timeout(Duration::from_secs(6), stopping)
        .await
        .expect("the relay stops")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "the drain waited for the staying session: {took:?}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), staying.session.closed()).await;
    assert!(closed.is_ok(), "the staying session was closed");
}

/// `--max-request-rate`: past a burst of the request limit, a session's requests are taken at
/// the configured rate (the relay stops accepting its request streams meanwhile), and the
/// waits are counted. Found by the hostile-peer suite: two sessions refusing-as-fast-as-asked
/// made 39,000 requests a second and took a bystander's p50 from 0.7 to 9.6 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_rate_wait_for_it() {
    init_tracing();
    let relay = TestRelay::start(&[
        "--max-requests-per-session",
        "20",
        "--max-request-rate",
        "50",
    ])
    .await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let peer = connect(&url).await;
    let started = std::time::Instant::now();
    // 20 at once (the burst), then 50 more at 50 a second: about a second.
    for i in 0..70 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            peer.session.subscribe(
                moq::namespace(&format!("missing-{i}")),
                "video",
                KeyValuePairs::default(),
            ),
        )
        .await
        .expect("answered");
        assert!(answer.is_err(), "nothing is published");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(850),
        "70 requests in {took:?}: the rate did not hold"
    );
    let metrics = relay.state.metrics.render();
    let waited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("moqcast_requests_rate_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the metric");
    assert!(waited >= 40, "{waited} waits counted");
    relay.stop().await;
}

//! The relay's defined behaviour under stress: slow subscribers, publishers that leave,
//! reconnect or are replaced, and hostile input. Real sockets, real media, real binaries.

use std::{
    process::{Child, Output, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::Bytes;
use moqcast_bench::shaper::Shaper;
use moqcast_client::{
    BroadcastPublisher, Client, ClientTls, ReceivedObject, TrackPublisher, TrackSubscription,
};
use moqcast_media::moq::{self, serve};
use moqcast_tests::{command, init_tracing, insecure_tls, without_colours, TestRelay};

fn publish(url: &str, broadcast: &str, seconds: u64) -> Child {
    command("moqcast-publish")
        .args([
            "--url",
            url,
            "--broadcast",
            broadcast,
            "--input",
            "testsrc",
            "--tls-disable-verify",
        ])
        .args(["--duration", &seconds.to_string()])
        .spawn()
        .unwrap()
}

async fn subscribe_json(
    url: String,
    broadcast: &str,
    seconds: f64,
    extra: &[&str],
) -> (Output, Option<serde_json::Value>) {
    let mut c = command("moqcast-subscribe");
    c.args([
        "--url",
        &url,
        "--broadcast",
        broadcast,
        "--tls-disable-verify",
        "--json",
    ])
    .args(["--duration", &seconds.to_string()])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (out, json)
}

fn objects(stats: &serde_json::Value, track: &str) -> u64 {
    stats["tracks"][track]["objects"].as_u64().unwrap_or(0)
}

async fn wait_child(mut child: Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// A subscriber behind a 200 kbit/s link (a fraction of the test pattern's bitrate) falls
/// behind: the relay drops its stale groups and moves it to the newest one, while a subscriber
/// on a good link keeps receiving every frame at low latency and the cache stays in budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_loses_only_its_own_groups() {
    init_tracing();
    let cache_budget = 4_000_000u64;
    let relay = TestRelay::start(&[
        "--subscriber-backlog-bytes",
        "131072",
        "--cache-bytes",
        &cache_budget.to_string(),
    ])
    .await;
    let url = relay.url("moqt");
    let publisher = publish(&url, "demo", 12);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let shaper = Shaper::start(relay.quic, 200_000, 64 * 1024).await.unwrap();
    let slow_url = format!("moqt://127.0.0.1:{}", shaper.addr.port());
    let fast = subscribe_json(url.clone(), "demo", 9.0, &[]);
    let slow = subscribe_json(slow_url, "demo", 9.0, &[]);
    // Meanwhile: both subscribers' video and audio subscriptions share one upstream
    // subscription (one cache) per track.
    let state = relay.state.clone();
    let sampler = tokio::spawn(async move {
        let (mut max_subs, mut max_tracks_then) = (0, 0);
        for _ in 0..80 {
            let subs = state.metrics.subscriptions.load(Ordering::Relaxed);
            let tracks = state.metrics.tracks.load(Ordering::Relaxed);
            if subs > max_subs {
                (max_subs, max_tracks_then) = (subs, tracks);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (max_subs, max_tracks_then)
    });
    let ((fast_out, fast), (_slow_out, slow)) = tokio::join!(fast, slow);
    let (max_subs, tracks_then) = sampler.await.unwrap();
    assert!(
        max_subs >= 4,
        "expected 2 subscribers x 2 tracks, saw {max_subs} subscriptions"
    );
    assert!(
        tracks_then <= 3,
        "{max_subs} subscriptions used {tracks_then} upstream tracks"
    );
    assert!(
        fast_out.status.success(),
        "fast subscriber failed: {}",
        String::from_utf8_lossy(&fast_out.stderr)
    );
    let fast = fast.unwrap();

    // ~9 s at 30 fps; the fast subscriber misses nothing.
    assert!(objects(&fast, "video") >= 250, "fast subscriber got {fast}");
    let p50 = fast["tracks"]["video"]["latency_p50_ms"].as_f64().unwrap();
    assert!(p50 < 100.0, "fast subscriber's median latency {p50} ms");

    let m = &relay.state.metrics;
    let skips = m.slow_skips.load(Ordering::Relaxed) + m.groups_dropped.load(Ordering::Relaxed);
    assert!(
        skips > 0,
        "the relay never dropped groups for the slow subscriber; slow got {slow:?}"
    );
    let cache = m.cache_bytes.load(Ordering::Relaxed);
    assert!(cache <= 2 * cache_budget, "cache holds {cache} bytes");
    // The relay wrote the subgroup streams itself, and the slow subscriber's stale groups were
    // reset rather than sent.
    let direct = m.direct_streams.load(Ordering::Relaxed);
    assert!(direct >= 8, "only {direct} direct subgroup streams");
    assert!(m.direct_resets.load(Ordering::Relaxed) > 0);
    let _ = wait_child(publisher).await;
    relay.stop().await;
}

/// A publisher that leaves ends its tracks for subscribers; one that comes back (or a new one
/// taking over the same broadcast) is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_leaves_reconnects_and_is_replaced() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let url = relay.url("moqt");

    // 1. Leaves: the subscriber's tracks end soon after the publisher does.
    let first = publish(&url, "show", 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let (out, stats) = subscribe_json(url.clone(), "show", 20.0, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "subscriber did not notice the publisher leaving"
    );
    assert!(objects(&stats.unwrap(), "video") > 0);
    assert!(wait_child(first).await.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        relay.state.origin.get("show").is_none(),
        "broadcast still listed after its publisher left"
    );

    // 2. Reconnects: the same broadcast name is served again.
    let second = publish(&url, "show", 4);
    let (out, stats) = subscribe_json(url.clone(), "show", 2.0, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(objects(&stats.unwrap(), "video") > 20);

    // 3. Replaced: a second publisher of the same name takes over; the old one's session stays up.
    let old_session = relay.state.origin.get("show").unwrap().session;
    let third = publish(&url, "show", 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new_session = relay.state.origin.get("show").unwrap().session;
    assert_ne!(
        old_session, new_session,
        "the newest publisher should own the broadcast"
    );
    let (out, stats) = subscribe_json(url.clone(), "show", 1.0, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(objects(&stats.unwrap(), "video") > 0);
    let _ = wait_child(second).await;
    let _ = wait_child(third).await;
    relay.stop().await;
}

/// Garbage, oversize messages and bad catalogs end only the offending session; everyone else
/// is still served and the relay never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_closes_only_that_session() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let url = relay.url("moqt");
    let publisher = publish(&url, "good", 8);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let tls = ClientTls {
        disable_verify: true,
        ..Default::default()
    };
    let client = Client::new(&tls).unwrap();
    let moqt: url::Url = url.parse().unwrap();

    // Garbage on the control stream.
    let conn = client.connect_quic(&moqt).await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let _ = s.finish();
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("relay closes a garbage session");
    tracing::info!(%err, "garbage session closed");

    // An oversize control message: SETUP (0x2f00) claiming a 16-bit length of 65535 bytes then
    // far more payload than any message may have.
    let conn = client.connect_quic(&moqt).await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let mut msg = vec![0x40, 0x20, 0xff, 0xff];
    msg.extend(std::iter::repeat_n(0x41u8, 70_000));
    let _ = s.write_all(&msg).await;
    let _ = s.finish();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("relay closes an oversize session");

    // A broadcast with a catalog that is not JSON: subscribers get a clear error.
    let conn = client.connect(&moqt).await.unwrap();
    let mut bad = BroadcastPublisher::new("bad");
    let mut cat = bad.create_track("catalog").unwrap();
    cat.start_group().unwrap();
    cat.write(
        Default::default(),
        Bytes::from_static(b"{\"version\": oops"),
    )
    .unwrap();
    let mut pubr = conn.publisher;
    let session = conn.session;
    let bad_task = tokio::spawn(async move {
        tokio::select! {
            _ = session.run() => {},
            _ = bad.announce(&mut pubr) => {},
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, _) = subscribe_json(url.clone(), "bad", 3.0, &["--wait", "1"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("catalog of \"bad\" is invalid"),
        "unclear error: {stderr}"
    );

    // A wrong URL gets a clear error from the client.
    let (out, _) = subscribe_json("ftp://127.0.0.1:1/".into(), "good", 1.0, &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported URL scheme"));

    // Everyone else is still served.
    let (out, stats) = subscribe_json(url.clone(), "good", 2.0, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(objects(&stats.unwrap(), "video") > 20);
    assert!(relay.state.metrics.session_errors.load(Ordering::Relaxed) >= 2);
    assert_eq!(relay.http_get("/healthz").trim(), "ok");
    bad_task.abort();
    let _ = wait_child(publisher).await;
    relay.stop().await;
}

/// Polls `cond` for up to 5 s.
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(5), cond).await
}

/// Publishes `broadcast` with `names` as tracks through the relay (announced, no objects yet);
/// the task runs the publisher's session until aborted.
async fn publish_tracks(
    relay: &TestRelay,
    url: &url::Url,
    broadcast: &str,
    names: &[&str],
) -> (tokio::task::JoinHandle<()>, Vec<TrackPublisher>) {
    let publisher = Client::new(&insecure_tls()).unwrap();
    let conn = publisher.connect(url).await.unwrap();
    let mut bp = BroadcastPublisher::new(broadcast);
    let tracks = names.iter().map(|t| bp.create_track(t).unwrap()).collect();
    let (mut p, session) = (conn.publisher, conn.session);
    let publishing = tokio::spawn(async move {
        let _client = publisher;
        tokio::select! {
            _ = session.run() => {},
            _ = bp.announce(&mut p) => {},
        }
    });
    let state = relay.state.clone();
    let name = broadcast.to_string();
    eventually("the announcement", || state.origin.get(&name).is_some()).await;
    (publishing, tracks)
}

/// A subscriber of one track through the relay; its tasks end when it drops.
struct Subscribed {
    client: Client,
    quic: moq::quinn::Connection,
    sub: TrackSubscription,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Subscribed {
    /// The track's next object, within 5 s; `what` names it in the failure.
    async fn next_object(&mut self, what: &str) -> ReceivedObject {
        tokio::time::timeout(Duration::from_secs(5), self.sub.next())
            .await
            .unwrap_or_else(|_| panic!("object {what} did not arrive"))
            .expect("the track reads")
            .expect("the track goes on")
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Subscribes to `broadcast`/`track` and waits until the relay subscribed upstream.
async fn subscribe_upstream(
    relay: &TestRelay,
    url: &url::Url,
    broadcast: &str,
    track: &str,
) -> Subscribed {
    let client = Client::new(&insecure_tls()).unwrap();
    let conn = client.connect(url).await.unwrap();
    let session = tokio::spawn(conn.session.run()).abort_handle();
    let (sub, driver) = TrackSubscription::new(&conn.subscriber, broadcast, track);
    let driver = tokio::spawn(driver).abort_handle();
    let state = relay.state.clone();
    eventually("the subscription upstream", || {
        state.metrics.tracks.load(Ordering::Relaxed) == 1
    })
    .await;
    Subscribed {
        client,
        quic: conn.quic,
        sub,
        tasks: [session, driver],
    }
}

/// `--max-sessions`: connections past the limit are refused (and counted) while the admitted
/// sessions carry on; when one leaves, a new connection is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_refuses_connections_over_it() {
    init_tracing();
    let relay = TestRelay::start(&["--max-sessions", "2"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let mut admitted = Vec::new();
    for i in 0..2 {
        let client = Client::new(&insecure_tls()).unwrap();
        let conn = client
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("session {i} is within the limit: {e}"));
        admitted.push((client, conn));
    }
    let extra = Client::new(&insecure_tls()).unwrap();
    let err = match extra.connect(&url).await {
        Ok(_) => panic!("a third session was admitted over --max-sessions 2"),
        Err(e) => e,
    };
    tracing::info!(%err, "third session refused");
    let m = &relay.state.metrics;
    assert_eq!(m.sessions_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(m.sessions.load(Ordering::Relaxed), 2);
    assert_eq!(relay.state.sessions.in_use(), 2);
    let metrics = relay.http_get("/metrics");
    assert!(
        metrics.contains("moqcast_sessions_rejected_total 1"),
        "{metrics}"
    );

    // One leaves: the slot is free again and the next connection gets in.
    let (client, conn) = admitted.remove(0);
    drop(conn);
    client.close().await;
    let state = relay.state.clone();
    eventually("the departed session's slot", || {
        state.sessions.in_use() < 2
    })
    .await;
    let conn = extra
        .connect(&url)
        .await
        .expect("admitted once a session left");
    assert_eq!(m.sessions.load(Ordering::Relaxed), 2);
    assert_eq!(m.sessions_rejected.load(Ordering::Relaxed), 1);
    assert!(
        admitted[0].1.quic.close_reason().is_none(),
        "the admitted session stays up"
    );
    drop(conn);
    relay.stop().await;
}

/// `--max-subscriptions-per-session`: a SUBSCRIBE past the limit gets REQUEST_ERROR
/// EXCESSIVE_LOAD; the session stays up, and once one of its subscriptions ends a new SUBSCRIBE
/// is accepted on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limit_refuses_excess_subscribes_and_keeps_the_session() {
    init_tracing();
    let relay = TestRelay::start(&["--max-subscriptions-per-session", "2"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();

    // A publisher of three tracks.
    let (publishing, _tracks) = publish_tracks(&relay, &url, "limits", &["a", "b", "c"]).await;

    // One subscriber session asks for all three.
    let client = Client::new(&insecure_tls()).unwrap();
    let conn = client.connect(&url).await.unwrap();
    let mut subscriber = conn.subscriber.clone();
    let session = tokio::spawn(conn.session.run());
    let track = |name: &str| serve::Track::new(moq::namespace("limits"), name).produce();
    let (wa, _ra) = track("a");
    let a = subscriber
        .subscribe_open(wa)
        .await
        .expect("first SUBSCRIBE");
    let (wb, _rb) = track("b");
    let _b = subscriber
        .subscribe_open(wb)
        .await
        .expect("second SUBSCRIBE");
    let (wc, _rc) = track("c");
    let err = match subscriber.subscribe_open(wc).await {
        Ok(_) => panic!("a third SUBSCRIBE was accepted over the limit of 2"),
        Err(e) => e,
    };
    assert!(
        matches!(err, serve::ServeError::Closed(0x9)),
        "expected REQUEST_ERROR EXCESSIVE_LOAD (0x9), got {err:?}"
    );
    let m = &relay.state.metrics;
    assert_eq!(m.subscriptions_rejected.load(Ordering::Relaxed), 1);
    assert!(relay
        .http_get("/metrics")
        .contains("moqcast_subscriptions_rejected_total 1"));

    // The session is still up: ending one subscription (UNSUBSCRIBE) makes room for another.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    let c = loop {
        let (wc, rc) = track("c");
        match subscriber.subscribe_open(wc).await {
            Ok(c) => break (c, rc),
            Err(serve::ServeError::Closed(0x9)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("SUBSCRIBE after an UNSUBSCRIBE failed: {e:?}"),
        }
    };
    assert!(!session.is_finished(), "the subscriber's session ended");
    assert!(conn.quic.close_reason().is_none());
    assert_eq!(m.session_errors.load(Ordering::Relaxed), 0);
    // The relay counts a subscription once its SUBSCRIBE_OK is sent: the gauge may trail the
    // subscriber's `subscribe_open` by a moment.
    let state = relay.state.clone();
    eventually("the subscriptions gauge at 2", || {
        state.metrics.subscriptions.load(Ordering::Relaxed) == 2
    })
    .await;

    // The subscriber leaves without unsubscribing: its subscriptions end with its session,
    // and the gauge follows.
    drop(c);
    client.close().await;
    let state = relay.state.clone();
    eventually("the subscriptions gauge to fall to 0", || {
        state.metrics.subscriptions.load(Ordering::Relaxed) == 0
    })
    .await;
    session.abort();
    publishing.abort();
    relay.stop().await;
}

/// A SUBSCRIBE for a track the publisher does not have is refused at once, also for a deeper
/// namespace the relay routes to the publisher by prefix (a viewer asking for `<b>/ai` before
/// the captioner announces it): the publisher answers DOES_NOT_EXIST instead of leaving the
/// request open until the relay's 10 s upstream wait gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tracks_of_a_broadcast_are_refused_promptly() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();

    let (publishing, mut tracks) = publish_tracks(&relay, &url, "known", &["a"]).await;
    tracks[0].start_group().unwrap();
    tracks[0]
        .write(Default::default(), Bytes::from_static(b"x"))
        .unwrap();

    let client = Client::new(&insecure_tls()).unwrap();
    let conn = client.connect(&url).await.unwrap();
    let mut subscriber = conn.subscriber.clone();
    let session = tokio::spawn(conn.session.run());
    for (namespace, name) in [("known", "missing"), ("known/ai", "catalog")] {
        let (w, _r) = serve::Track::new(moq::namespace(namespace), name).produce();
        let started = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(15), subscriber.subscribe_open(w))
            .await
            .unwrap_or_else(|_| panic!("SUBSCRIBE {namespace}/{name} got no answer in 15 s"));
        assert!(res.is_err(), "SUBSCRIBE {namespace}/{name} was accepted");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "SUBSCRIBE {namespace}/{name} was refused only after {:?}",
            started.elapsed()
        );
    }
    // The known track is still served.
    let (w, _r) = serve::Track::new(moq::namespace("known"), "a").produce();
    let _known = subscriber
        .subscribe_open(w)
        .await
        .expect("SUBSCRIBE known/a");
    session.abort();
    publishing.abort();
    relay.stop().await;
}

/// A client whose address changes mid-session (NAT rebinding, a new network) keeps its
/// session although the relay serves from 4 shards, each with its own socket on the port: the
/// new 4-tuple hashes to any of them, and only the connection-ID steering brings the packets
/// to the shard that holds the connection (moqcast_relay::shard). Without it, each of the 8
/// moves would lose the session with probability 3/4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_client_address_changes_across_shards() {
    init_tracing();
    let relay = TestRelay::start(&["--runtime", "sharded", "--worker-threads", "4"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let (publishing, mut tracks) = publish_tracks(&relay, &url, "moving", &["v"]).await;

    let mut subscriber = subscribe_upstream(&relay, &url, "moving", "v").await;
    let mut ports = std::collections::HashSet::new();
    for round in 0..8u8 {
        if round > 0 {
            let socket = std::net::UdpSocket::bind("[::]:0")
                .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
                .unwrap();
            ports.insert(socket.local_addr().unwrap().port());
            subscriber.client.rebind(socket).unwrap();
        }
        tracks[0].start_group().unwrap();
        tracks[0]
            .write(Default::default(), Bytes::from(vec![round; 1000]))
            .unwrap();
        let object = subscriber
            .next_object(&format!("after address change {round}"))
            .await;
        assert_eq!(
            object.payload,
            Bytes::from(vec![round; 1000]),
            "round {round}"
        );
    }
    assert_eq!(ports.len(), 7, "every move used a new port");
    assert!(
        subscriber.quic.close_reason().is_none(),
        "the session is still up"
    );
    assert_eq!(
        relay.state.metrics.session_errors.load(Ordering::Relaxed),
        0
    );
    publishing.abort();
    relay.stop().await;
}

/// An idle sharded relay places new connections on its first shard (pack, then spread), and
/// reports where they are in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sharded_relay_packs_new_sessions_onto_its_first_shard() {
    init_tracing();
    let relay = TestRelay::start(&["--runtime", "sharded", "--worker-threads", "4"]).await;
    let url: url::Url = relay.url("moqt").parse().unwrap();
    let client = Client::new(&insecure_tls()).unwrap();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let conn = client.connect(&url).await.unwrap();
        sessions.push((conn.quic.clone(), tokio::spawn(conn.session.run())));
    }
    let placement = relay.state.placement.clone().expect("sharded");
    eventually("six sessions on shard 0", || placement.sessions(0) == 6).await;
    assert_eq!((1..4).map(|i| placement.sessions(i)).sum::<u64>(), 0);
    assert_eq!(placement.target(), 0);
    let metrics = relay.http_get("/metrics");
    assert!(
        metrics.contains("moqcast_shard_connections{shard=\"0\"} 6\n"),
        "{metrics}"
    );
    assert!(metrics.contains("moqcast_shard_placement_target 0\n"));
    assert!(metrics.contains("# TYPE moqcast_shard_busy_ratio gauge"));
    for (quic, task) in sessions {
        quic.close(0u32.into(), b"bye");
        task.abort();
    }
    eventually("sessions gone from shard 0", || placement.sessions(0) == 0).await;
    relay.stop().await;
}

/// The relay binary stops cleanly on SIGTERM (graceful shutdown), closing its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_binary_shuts_down_on_sigterm() {
    init_tracing();
    let port = std::net::UdpSocket::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut relay = command("moqcast-relay")
        .args([
            "--bind",
            &format!("[::]:{port}"),
            "--http-bind",
            &http.to_string(),
        ])
        .args(["--tls-generate", "localhost,127.0.0.1"])
        .spawn()
        .unwrap();
    // Healthy first.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(http).is_ok()
            && moqcast_tests::http_get(http, "/healthz").trim() == "ok"
        {
            break;
        }
        assert!(Instant::now() < deadline, "relay never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = relay.try_wait().unwrap() {
            assert!(status.success(), "relay exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not stop within 5 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--ack-every`: the relay asks its peers (over the QUIC ACK frequency extension) to
/// acknowledge less often, and a subscriber then sends fewer acknowledgements for the same
/// media; with `--ack-every 2` nothing is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_asked_to_acknowledge_less_often() {
    init_tracing();
    const OBJECTS: u64 = 100;
    let mut acks = Vec::new();
    for flags in [&[][..], &["--ack-every", "2"][..]] {
        let relay = TestRelay::start(flags).await;
        let url: url::Url = relay.url("moqt").parse().unwrap();
        let (publishing, mut tracks) = publish_tracks(&relay, &url, "acks", &["v"]).await;
        let mut subscriber = subscribe_upstream(&relay, &url, "acks", "v").await;
        tracks[0].start_group().unwrap();
        let before = subscriber.quic.stats().frame_tx.acks;
        // Three packets per object, one object every 10 ms.
        let writing = async {
            for i in 0..OBJECTS {
                tracks[0]
                    .write(Default::default(), Bytes::from(vec![i as u8; 4000]))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let reading = async {
            for i in 0..OBJECTS {
                let object = subscriber.next_object(&format!("{i} ({flags:?})")).await;
                assert_eq!(object.payload[0], i as u8);
            }
        };
        tokio::join!(writing, reading);
        let stats = subscriber.quic.stats();
        let asked = stats.frame_rx.ack_frequency;
        if flags.is_empty() {
            assert!(asked >= 1, "the relay sent no ACK_FREQUENCY frame");
        } else {
            assert_eq!(asked, 0, "--ack-every 2 asks nothing");
        }
        acks.push(stats.frame_tx.acks - before);
        drop(subscriber);
        publishing.abort();
        relay.stop().await;
    }
    let (asked, default) = (acks[0], acks[1]);
    assert!(
        asked * 2 < default,
        "acknowledgements for {OBJECTS} objects: {asked} when asked for one per 10 packets, \
         {default} with QUIC's default"
    );
}

/// While a shard is saturated, the relay hands a subscriber's objects to QUIC in coalesced
/// batches, at most `--coalesce-ms` late; an unsaturated relay sends each object at once.
/// `--coalesce-above 0` stands in for saturation (every shard counts as saturated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_shards_coalesce_what_subscribers_are_sent() {
    init_tracing();
    const OBJECTS: usize = 60;
    const WINDOW: Duration = Duration::from_millis(150);
    for saturated in [true, false] {
        let flags: &[&str] = if saturated {
            &["--coalesce-above", "0", "--coalesce-ms", "150"]
        } else {
            &["--coalesce-ms", "150"]
        };
        let relay = TestRelay::start(flags).await;
        let placement = relay.state.placement.clone().expect("sharded by default");
        if saturated {
            eventually("a saturated shard", || placement.coalescing()).await;
        }
        let url: url::Url = relay.url("moqt").parse().unwrap();
        let (publishing, mut tracks) = publish_tracks(&relay, &url, "batches", &["v"]).await;
        let mut subscriber = subscribe_upstream(&relay, &url, "batches", "v").await;
        tracks[0].start_group().unwrap();
        // One object every 10 ms; each arrival is timed against its write.
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
        let writing = async {
            for i in 0..OBJECTS {
                sent_tx.send(Instant::now()).unwrap();
                tracks[0]
                    .write(Default::default(), Bytes::from(vec![i as u8; 1000]))
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let reading = async {
            let mut arrivals = Vec::with_capacity(OBJECTS);
            for i in 0..OBJECTS {
                let object = subscriber.next_object(&i.to_string()).await;
                let now = Instant::now();
                assert_eq!(object.payload[0], i as u8, "in order");
                let sent = sent_rx.recv().await.unwrap();
                assert!(
                    now - sent < WINDOW + Duration::from_secs(1),
                    "object {i} held {:?}",
                    now - sent
                );
                arrivals.push(now);
            }
            arrivals
        };
        let ((), arrivals) = tokio::join!(writing, reading);
        // Objects read within 2 ms of the one before came in the same batch.
        let batches = 1 + arrivals
            .windows(2)
            .filter(|w| w[1] - w[0] >= Duration::from_millis(2))
            .count();
        let gauge = relay.http_get("/metrics");
        if saturated {
            assert!(
                batches <= 20,
                "{batches} batches for {OBJECTS} objects written 10 ms apart"
            );
            assert!(gauge.contains("moqcast_coalescing 1\n"), "{gauge}");
        } else {
            assert!(
                batches > 20,
                "{batches} batches for {OBJECTS} objects written 10 ms apart on an idle relay"
            );
            assert!(!placement.coalescing());
            assert!(gauge.contains("moqcast_coalescing 0\n"), "{gauge}");
        }
        drop(subscriber);
        publishing.abort();
        relay.stop().await;
    }
}

/// The relay reads a publisher's subgroup streams itself once it knows their Track Alias (a
/// stream that overtakes SUBSCRIBE_OK waits for it): the subscriber gets every object of every
/// group, in order, and every stream was read by the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_streams_are_read_by_the_relay() {
    init_tracing();
    const GROUPS: u64 = 4;
    const OBJECTS: u64 = 5;
    {
        let relay = TestRelay::start(&[]).await;
        let url: url::Url = relay.url("moqt").parse().unwrap();
        let (publishing, mut tracks) = publish_tracks(&relay, &url, "ingest", &["v"]).await;
        let mut subscriber = subscribe_upstream(&relay, &url, "ingest", "v").await;
        for g in 0..GROUPS {
            assert_eq!(tracks[0].start_group().unwrap(), g);
            for o in 0..OBJECTS {
                let payload = Bytes::from(vec![(g * OBJECTS + o) as u8; 3000]);
                tracks[0].write(Default::default(), payload).unwrap();
            }
            tracks[0].finish_group();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = Vec::new();
        for i in 0..GROUPS * OBJECTS {
            let object = subscriber.next_object(&i.to_string()).await;
            assert_eq!(object.payload.len(), 3000);
            assert_eq!(
                u64::from(object.payload[0]),
                object.group_id * OBJECTS + object.object_id,
                "payload of {}/{}",
                object.group_id,
                object.object_id
            );
            got.push((object.group_id, object.object_id));
        }
        got.sort_unstable();
        let want: Vec<_> = (0..GROUPS)
            .flat_map(|g| (0..OBJECTS).map(move |o| (g, o)))
            .collect();
        assert_eq!(got, want);
        let read_directly = relay
            .state
            .metrics
            .direct_ingest_streams
            .load(Ordering::Relaxed);
        assert_eq!(
            read_directly, GROUPS,
            "{read_directly} streams read by the relay"
        );
        assert_eq!(relay.state.metrics.errors.load(Ordering::Relaxed), 0);
        drop(subscriber);
        publishing.abort();
        relay.stop().await;
    }
}

/// Restarts: the relay is killed mid-broadcast (SIGKILL) and started again on the same port
/// and certificate. `moqcast-publish` reconnects with backoff and announces the broadcast again,
/// and `moqcast-subscribe`, recording, reconnects and resubscribes, both within 3 s of the new
/// relay being up (measured here); the recording goes on in the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_subscriber_are_back_within_3_s_of_a_relay_restart() {
    init_tracing();
    let dir = moqcast_tests::TempDir::new("restart");
    let (cert, key) = moqcast_tests::write_test_certificate(&dir.0);
    let port = moqcast_tests::free_udp_port();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let start_relay = || {
        let mut cmd = command("moqcast-relay");
        cmd.args([
            "--bind",
            &format!("[::]:{port}"),
            "--http-bind",
            &http.to_string(),
        ])
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .args(["--drain-ms", "0"])
        .env("RUST_LOG", "warn");
        moqcast_tests::ChildGuard::spawn("relay", &mut cmd, &dir.0)
    };
    let announced = |http| {
        std::net::TcpStream::connect(http).is_ok()
            && moqcast_tests::http_get(http, "/broadcasts").contains("\"live/again\"")
    };
    // Objects the relay handed to subscribers: the recorder is the only one.
    let delivered = |http| -> u64 {
        if std::net::TcpStream::connect(http).is_err() {
            return 0;
        }
        moqcast_tests::http_get(http, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("moqcast_objects_out_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut relay = start_relay();
    let url = format!("moqt://127.0.0.1:{port}");
    let mut publisher = {
        let mut cmd = command("moqcast-publish");
        cmd.args([
            "--url",
            &url,
            "--broadcast",
            "live/again",
            "--input",
            "testsrc",
        ])
        .arg("--tls-disable-verify")
        .env("RUST_LOG", "info");
        moqcast_tests::ChildGuard::spawn("publish", &mut cmd, &dir.0)
    };
    eventually_within("the first announcement", Duration::from_secs(15), || {
        announced(http)
    })
    .await;
    let recording = dir.path("again.mp4");
    let mut subscriber = {
        let mut cmd = command("moqcast-subscribe");
        cmd.args(["--url", &url, "--broadcast", "live/again", "--json"])
            .args(["--tls-disable-verify", "--duration", "10"])
            .args(["--output", recording.to_str().unwrap()])
            .env("RUST_LOG", "info");
        moqcast_tests::ChildGuard::spawn("subscribe", &mut cmd, &dir.0)
    };
    eventually_within("the recorder's media", Duration::from_secs(10), || {
        delivered(http) >= 50
    })
    .await;

    relay.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay = start_relay();
    eventually_within("the new relay", Duration::from_secs(10), || {
        std::net::TcpStream::connect(http).is_ok()
    })
    .await;
    let up = Instant::now();
    let (mut publisher_back, mut subscriber_back) = (None, None);
    while publisher_back.is_none() || subscriber_back.is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(3),
            "not back within 3 s: publisher {publisher_back:?}, subscriber {subscriber_back:?}\n{}\n{}",
            without_colours(&publisher.stderr_tail(20)),
            without_colours(&subscriber.stderr_tail(20))
        );
        if publisher_back.is_none() && announced(http) {
            publisher_back = Some(up.elapsed());
        }
        // Media again: the recorder resubscribed (its catalog fetch alone is one object).
        if subscriber_back.is_none() && delivered(http) >= 10 {
            subscriber_back = Some(up.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        ?publisher_back,
        ?subscriber_back,
        "publisher and subscriber back on the restarted relay"
    );
    assert!(publisher.try_wait().is_none(), "the publisher kept running");
    assert!(
        without_colours(&publisher.stderr_tail(50)).contains("reconnected"),
        "{}",
        publisher.stderr_tail(50)
    );
    let status = subscriber
        .wait_timeout(Duration::from_secs(15))
        .expect("the subscriber ends after its duration");
    assert!(
        status.success(),
        "{}",
        without_colours(&subscriber.stderr_tail(20))
    );
    let stats: serde_json::Value = subscriber
        .stdout()
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary: {}", subscriber.stderr_tail(20)));
    assert_eq!(stats["reconnects"], 1, "{stats}");
    // One recording across the restart: frames from before and after it.
    let frames = moqcast_tests::h264_video_frames_with_audio(&recording, "across a restart");
    assert!(frames >= 150, "{frames} video frames recorded; {stats}");
    publisher.kill();
    relay.kill();
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn eventually_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

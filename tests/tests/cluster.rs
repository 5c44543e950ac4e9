//! Relays that act as one: three relays and a Redis server on loopback, started here.
//!
//! A publishes `demo`; B (an origin) and C (an edge) serve it to raw QUIC and WebTransport
//! subscribers through one upstream subscription per track; A goes away and the publisher comes
//! back on B: the subscribers on C carry on (the tracks are handed over to B's link) within
//! 3 s; Redis restarts empty: the registry is whole again within its TTL.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use moqcast_tests::ingest::{check_recording, finish, record};
use moqcast_tests::{
    command, free_udp_port, init_tracing, write_test_certificate, ChildGuard, TempDir, TestRelay,
};

/// The registry TTL of the test's relays: a dead relay's broadcasts expire after it.
const TTL_MS: u64 = 2000;

/// A Redis server on a free loopback port, without persistence.
struct Redis {
    port: u16,
    child: ChildGuard,
}

impl Redis {
    fn start(port: u16, dir: &Path) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        let child = ChildGuard::spawn(&format!("redis-{port}"), &mut cmd, dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `GET key` with redis-cli.
    fn get(&self, key: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "GET", key])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay of the cluster on a known QUIC port (the URL it advertises).
async fn relay(port: u16, role: &str, redis: &str, tls: &[&str], fingerprint: &str) -> TestRelay {
    let advertise = format!("moqt://127.0.0.1:{port}");
    let ttl = TTL_MS.to_string();
    let mut args = tls.to_vec();
    args.extend_from_slice(&[
        "--cluster-registry",
        redis,
        "--cluster-advertise",
        &advertise,
        "--cluster-role",
        role,
        "--cluster-ttl-ms",
        &ttl,
        "--cluster-tls-fingerprint",
        fingerprint,
    ]);
    TestRelay::start_on(port, &args).await
}

/// `moqcast-publish` of the test pattern as `demo`.
fn publish(relay: &TestRelay, seconds: u32, dir: &Path, name: &str) -> ChildGuard {
    let mut cmd = command("moqcast-publish");
    cmd.args(["--url", &relay.url("moqt"), "--broadcast", "demo"])
        .args(["--tls-fingerprint", &relay.fingerprint])
        .args(["--duration", &seconds.to_string()]);
    ChildGuard::spawn(name, &mut cmd, dir)
}

/// A WebTransport subscriber printing its statistics as JSON at the end.
fn watch_wt(relay: &TestRelay, seconds: u32, wait: u32, dir: &Path, name: &str) -> ChildGuard {
    let mut cmd = command("moqcast-subscribe");
    cmd.args(["--url", &relay.url("https"), "--broadcast", "demo"])
        .args(["--tls-fingerprint", &relay.fingerprint])
        .args(["--duration", &seconds.to_string()])
        .args(["--wait", &wait.to_string(), "--json"]);
    ChildGuard::spawn(name, &mut cmd, dir)
}

/// A sample of the relay's `/metrics`, by line prefix (the first match).
fn sample(relay: &TestRelay, prefix: &str) -> Option<f64> {
    relay
        .http_get("/metrics")
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The tracks of `demo` the relay has subscribers for now.
fn watched_tracks(relay: &TestRelay) -> usize {
    let listed: serde_json::Value = serde_json::from_str(&relay.http_get("/broadcasts")).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["broadcast"] == "demo")
        .and_then(|b| b["tracks"].as_array())
        .map_or(0, Vec::len)
}

async fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_act_as_one() {
    init_tracing();
    let dir = TempDir::new("cluster");
    let mut redis = Redis::start(free_tcp_port(), &dir.0);
    let (cert, key) = write_test_certificate(&dir.0);
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    // One certificate for the three: the links pin it.
    let probe = TestRelay::start(&tls).await;
    let fp = probe.fingerprint.clone();
    probe.stop().await;
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let a = relay(pa, "origin", &redis.url(), &tls, &fp).await;
    let b = relay(pb, "origin", &redis.url(), &tls, &fp).await;
    let c = relay(pc, "edge", &redis.url(), &tls, &fp).await;

    let mut publisher = publish(&a, 30, &dir.0, "publish-a");
    eventually("A registers demo", Duration::from_secs(10), || {
        redis.get("moqcast:broadcast:demo") == format!("moqt://127.0.0.1:{pa}")
    })
    .await;

    // Subscribers: on B one raw QUIC recorder and one WebTransport viewer; on C (the edge) a
    // raw QUIC recorder and two WebTransport viewers.
    let seconds = 14.0;
    let rec_b = dir.path("b.mp4");
    let rec_c = dir.path("c.mp4");
    let mut recorders = vec![
        record(&b, "demo", &rec_b, seconds, &dir.0),
        record(&c, "demo", &rec_c, seconds, &dir.0),
    ];
    let mut viewers = vec![
        watch_wt(&b, 14, 20, &dir.0, "wt-b"),
        watch_wt(&c, 14, 20, &dir.0, "wt-c1"),
        watch_wt(&c, 14, 20, &dir.0, "wt-c2"),
    ];
    let peer_a = format!("moqcast_cluster_link_tracks{{peer=\"moqt://127.0.0.1:{pa}\"}}");
    // Catalog, video and audio: one upstream subscription each, however many subscribers.
    // The subscribers hold video and audio (the catalog is read once): one upstream
    // subscription each on every relay, however many subscribers watch them there.
    eventually("C subscribes upstream", Duration::from_secs(15), || {
        sample(&c, &peer_a) == Some(2.0)
    })
    .await;
    eventually("B subscribes upstream", Duration::from_secs(15), || {
        sample(&b, &peer_a) == Some(2.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (relay, name) in [(&b, "B"), (&c, "C")] {
        let watched = watched_tracks(relay);
        assert_eq!(
            sample(relay, &peer_a),
            Some(watched as f64),
            "{name}: one upstream subscription per watched track"
        );
        assert!(watched >= 2, "{name}: {watched} tracks watched");
    }
    let listed = c.http_get("/broadcasts");
    assert!(
        listed.contains(&format!("\"from\":\"moqt://127.0.0.1:{pa}")),
        "{listed}"
    );
    // The edge takes no publisher.
    let mut refused = publish(&c, 2, &dir.0, "publish-c");
    let status = tokio::task::spawn_blocking(move || refused.wait_timeout(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the edge took a publisher"
    );

    // A goes away; the publisher comes back on B.
    let moved = Instant::now();
    a.stop().await;
    publisher.kill();
    let mut publisher = publish(&b, 12, &dir.0, "publish-b");
    let peer_b = format!("moqcast_cluster_link_tracks{{peer=\"moqt://127.0.0.1:{pb}\"}}");
    let took = eventually(
        "C hands the tracks over to B",
        Duration::from_secs(3),
        || sample(&c, &peer_b) == Some(2.0),
    )
    .await;
    eprintln!(
        "cluster: C serves demo from B {:.2} s after A stopped ({:.2} s of waiting)",
        moved.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );

    // Redis restarts empty: the registry is whole again within the TTL.
    let port = redis.port;
    redis.child.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis = Redis::start(port, &dir.0);
    assert_eq!(redis.get("moqcast:broadcast:demo"), "");
    let back = eventually(
        "the registry recovers",
        Duration::from_millis(TTL_MS),
        || redis.get("moqcast:broadcast:demo") == format!("moqt://127.0.0.1:{pb}"),
    )
    .await;
    eprintln!(
        "cluster: registry whole again {:.2} s after Redis restarted",
        back.as_secs_f64()
    );

    tokio::task::spawn_blocking(move || {
        for r in &mut recorders {
            finish(r, Duration::from_secs(30));
        }
        for v in &mut viewers {
            finish(v, Duration::from_secs(30));
        }
        publisher.kill();
    })
    .await
    .unwrap();
    // The recordings on B and C run across the move with at most a 3 s hole.
    check_recording(&rec_c, 10.0, 3.0, "recording on C (edge) across the move");
    check_recording(&rec_b, 10.0, 3.0, "recording on B across the move");
    let link_failures = sample(&c, "moqcast_cluster_link_failures_total").unwrap_or(-1.0);
    eprintln!("cluster: C link failures {link_failures}");
    // Per peer: one link to A, one to B (no reconnection).
    for port in [pa, pb] {
        let connects =
            format!("moqcast_cluster_peer_connects_total{{peer=\"moqt://127.0.0.1:{port}\"}}");
        assert_eq!(sample(&c, &connects), Some(1.0), "{connects}");
    }
    b.stop().await;
    c.stop().await;
}

/// Links present relay tokens: an origin that lets anonymous clients publish but not watch
/// serves a relay whose `--cluster-token-file` may watch everything, and refuses one whose
/// token it cannot verify (that relay's subscribers get nothing, the refusal is counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_present_relay_tokens() {
    use moq_token::{Algorithm, Claims, Key, KeyId};
    init_tracing();
    let dir = TempDir::new("cluster-auth");
    let redis = Redis::start(free_tcp_port(), &dir.0);
    let keys = dir.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = Key::generate(Algorithm::HS256, Some(KeyId::decode("cluster").unwrap())).unwrap();
    key.to_file(keys.join("cluster.jwk")).unwrap();
    let stranger =
        Key::generate(Algorithm::HS256, Some(KeyId::decode("cluster").unwrap())).unwrap();
    let relay_claims = || Claims::default().with_root("").with_subscribe([""]);
    let good = dir.path("good.jwt");
    std::fs::write(&good, key.sign(&relay_claims()).unwrap()).unwrap();
    let bad = dir.path("bad.jwt");
    std::fs::write(&bad, stranger.sign(&relay_claims()).unwrap()).unwrap();

    let (cert, key_pem) = write_test_certificate(&dir.0);
    let (cert, key_pem) = (cert.to_str().unwrap(), key_pem.to_str().unwrap());
    let probe = TestRelay::start(&["--tls-cert", cert, "--tls-key", key_pem]).await;
    let fp = probe.fingerprint.clone();
    probe.stop().await;
    let keys = keys.to_str().unwrap();
    let auth = ["--tls-cert", cert, "--tls-key", key_pem, "--auth-key", keys];
    let (pa, pb, pc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let mut a_args = auth.to_vec();
    a_args.extend_from_slice(&["--auth-public-publish", "demo"]);
    let a = relay(pa, "origin", &redis.url(), &a_args, &fp).await;
    let edge = |token: String| {
        let mut v: Vec<String> = auth.iter().map(|s| s.to_string()).collect();
        v.extend(["--auth-public-subscribe".into(), "demo".into()]);
        v.extend(["--cluster-token-file".into(), token]);
        v
    };
    let b_args = edge(good.to_str().unwrap().to_string());
    let c_args = edge(bad.to_str().unwrap().to_string());
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let c_args: Vec<&str> = c_args.iter().map(String::as_str).collect();
    let b = relay(pb, "edge", &redis.url(), &b_args, &fp).await;
    let c = relay(pc, "edge", &redis.url(), &c_args, &fp).await;

    let mut publisher = publish(&a, 20, &dir.0, "publish-a");
    let mut on_b = watch_wt(&b, 4, 10, &dir.0, "wt-b");
    let mut on_c = watch_wt(&c, 4, 4, &dir.0, "wt-c");
    let (b_out, c_ok) = tokio::task::spawn_blocking(move || {
        finish(&mut on_b, Duration::from_secs(30));
        let c_status = on_c.wait_timeout(Duration::from_secs(30));
        (on_b.stdout(), c_status.is_some_and(|s| s.success()))
    })
    .await
    .unwrap();
    let stats: serde_json::Value = serde_json::from_str(b_out.trim()).unwrap();
    let video = stats["tracks"]["video"]["objects"].as_u64().unwrap_or(0);
    assert!(
        video > 60,
        "B (valid relay token) got {video} video objects: {stats}"
    );
    assert!(!c_ok, "C (a token A cannot verify) got the broadcast");
    assert!(sample(&c, "moqcast_cluster_link_failures_total").unwrap_or(0.0) >= 1.0);
    assert!(sample(&a, "moqcast_auth_refused_sessions_total").unwrap_or(0.0) >= 1.0);
    publisher.kill();
    for r in [a, b, c] {
        r.stop().await;
    }
}

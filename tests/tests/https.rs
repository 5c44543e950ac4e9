//! The relay facing the internet on its own: HTTPS (`--https-bind`, HTTP/1.1 and HTTP/2) with
//! the certificate the QUIC side serves, certificates reloaded live, and HTTP/3 on the QUIC
//! port beside WebTransport and raw QUIC.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use bytes::Bytes;
use moqcast_client::{BroadcastPublisher, Client, TrackPublisher, TrackSubscription};
use moqcast_tests::{
    h3_get, https_get, init_tracing, insecure_tls, pinned_tls, write_test_certificate, TempDir,
    TestRelay,
};

/// Polls `cond` (async) every 50 ms for up to `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The HTTPS listener answers HTTP/1.1 and HTTP/2 (by ALPN) with the QUIC side's certificate:
/// the index, the viewer page, `/healthz`, `/viewer.json`. `/metrics` stays on the plain
/// listener, which keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_public_routes_over_http1_and_http2() {
    init_tracing();
    let relay = TestRelay::start(&["--https-bind", "127.0.0.1:0"]).await;
    let https = relay.https.expect("an HTTPS listener");
    let tls = pinned_tls(&relay.fingerprint);
    for alpn in ["h2", "http/1.1"] {
        let health = https_get(https, "/healthz", &tls, alpn).await.unwrap();
        assert_eq!(health.alpn, alpn);
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(health.fingerprint, relay.fingerprint);
        let index = https_get(https, "/", &tls, alpn).await.unwrap();
        assert_eq!(index.status, 200);
        assert!(index.body.contains("Live broadcasts"), "{}", index.body);
        // The viewer page (503 with a build hint when web/dist is missing: either way the
        // route is served).
        let watch = https_get(https, "/watch/demo", &tls, alpn).await.unwrap();
        assert!(
            watch.status == 200 || watch.body.contains("npm --prefix web"),
            "{watch:?}"
        );
        let config = https_get(https, "/viewer.json", &tls, alpn).await.unwrap();
        let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
        assert_eq!(config["quicPort"], relay.port());
        assert_eq!(
            config["pinCertificate"], true,
            "a generated certificate is pinned"
        );
        let metrics = https_get(https, "/metrics", &tls, alpn).await.unwrap();
        assert_eq!(metrics.status, 404, "/metrics is not public");
    }
    assert!(relay.http_get("/metrics").contains("moqcast_sessions "));
    relay.stop().await;
}

/// HTTP/3 on the QUIC port: a quinn + h3 client fetches the index, the viewer page, an asset,
/// `/healthz` and `/broadcasts` from the same UDP port where a WebTransport publisher and
/// subscriber exchange objects at the same time; the TCP listeners advertise it with
/// `Alt-Svc`. `/metrics` is not served there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_and_webtransport_share_the_quic_port() {
    init_tracing();
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist");
    let relay = TestRelay::start(&["--https-bind", "127.0.0.1:0", "--web-dir", web]).await;
    let tls = pinned_tls(&relay.fingerprint);
    let wt: url::Url = relay.url("https").parse().unwrap();
    let quic = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port()));

    // A WebTransport publisher and subscriber on the port.
    let (publishing, mut track) = publish_one(&wt, "both").await;
    let state = relay.state.clone();
    eventually("the announcement", Duration::from_secs(5), || {
        let found = state.origin.get("both").is_some();
        async move { found }
    })
    .await;
    let subscriber = Client::new(&tls).unwrap();
    let conn = subscriber.connect(&wt).await.unwrap();
    let session = tokio::spawn(conn.session.run());
    let (mut sub, driver) = TrackSubscription::new(&conn.subscriber, "both", "t");
    let driver = tokio::spawn(driver);
    let mut sent = 0u64;
    let mut received = 0u64;
    // Objects flow while HTTP/3 requests are answered on the same port.
    let objects = async {
        let deadline = Instant::now() + Duration::from_secs(8);
        while received < 20 && Instant::now() < deadline {
            track.start_group().unwrap();
            track
                .write(Default::default(), Bytes::from(sent.to_string()))
                .unwrap();
            sent += 1;
            if let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_millis(100), sub.next())
                .await
                .map(|o| o.transpose())
            {
                received += 1;
            }
        }
    };
    let paths = [
        "/healthz",
        "/",
        "/watch/both",
        "/broadcasts",
        "/metrics",
        "/viewer.json",
    ];
    let fetch = h3_get(quic, &paths, &tls);
    let ((), responses) = tokio::join!(objects, fetch);
    let responses = responses.expect("HTTP/3 requests answered");
    assert!(received >= 20, "only {received} of {sent} objects arrived");
    assert_eq!(
        (responses[0].status, responses[0].body.as_slice()),
        (200, &b"ok\n"[..])
    );
    assert!(String::from_utf8_lossy(&responses[1].body).contains("Live broadcasts"));
    let watch = &responses[2];
    let built = std::path::Path::new(web).join("watch.html").is_file();
    if built {
        assert_eq!(watch.status, 200);
        assert!(
            String::from_utf8_lossy(&watch.body).contains("<html"),
            "{watch:?}"
        );
    } else {
        assert_eq!(watch.status, 503);
    }
    assert!(
        String::from_utf8_lossy(&responses[3].body).contains("\"broadcast\":\"both\""),
        "{:?}",
        String::from_utf8_lossy(&responses[3].body)
    );
    assert_eq!(responses[4].status, 404, "/metrics is not public");
    assert_eq!(responses[5].headers["content-type"], "application/json");
    // An asset, streamed in chunks when the viewer is built.
    if built {
        let asset = h3_get(quic, &["/assets/viewer.js"], &tls).await.unwrap();
        let on_disk = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../web/dist/assets/viewer.js"
        ))
        .unwrap();
        assert_eq!(asset[0].status, 200);
        assert_eq!(asset[0].body.len(), on_disk.len());
    }
    // The WebTransport session is unharmed.
    assert!(conn.quic.close_reason().is_none());
    assert_eq!(
        relay.state.metrics.session_errors.load(Ordering::Relaxed),
        0
    );

    // Advertised from the TCP listeners.
    let alt_svc = format!("h3=\":{}\"; ma=86400", relay.port());
    let https = https_get(relay.https.unwrap(), "/healthz", &tls, "h2")
        .await
        .unwrap();
    assert_eq!(https.headers["alt-svc"], alt_svc.as_str());
    let plain = moqcast_tests::http_get_response(relay.http, "/healthz");
    assert!(
        plain
            .to_ascii_lowercase()
            .contains(&format!("alt-svc: {alt_svc}")),
        "{plain}"
    );
    let requests = paths.len() + usize::from(built);
    let metrics = relay.http_get("/metrics");
    assert!(
        metrics.contains(&format!("moqcast_http3_requests_total {requests}")),
        "{metrics}"
    );

    driver.abort();
    session.abort();
    publishing.abort();
    relay.stop().await;
}

/// A publisher of one track at `url`; returns its session task and the track.
async fn publish_one(
    url: &url::Url,
    broadcast: &str,
) -> (tokio::task::JoinHandle<()>, TrackPublisher) {
    let publisher = Client::new(&insecure_tls()).unwrap();
    let conn = publisher.connect(url).await.unwrap();
    let mut bp = BroadcastPublisher::new(broadcast);
    let track = bp.create_track("t").unwrap();
    let (mut p, session) = (conn.publisher, conn.session);
    let task = tokio::spawn(async move {
        let _client = publisher;
        tokio::select! {
            _ = session.run() => {},
            _ = bp.announce(&mut p) => {},
        }
    });
    (task, track)
}

/// Replaces the certificate files (an ACME renewal: new files renamed into place) while a
/// WebTransport subscriber stays connected: new handshakes, QUIC and HTTPS, present the new
/// certificate within a few seconds, the old session carries on receiving objects, and a bad
/// file later is logged and counted while the good certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_are_reloaded_without_dropping_sessions() {
    init_tracing();
    let dir = TempDir::new("tls-reload");
    let (cert, key) = write_test_certificate(&dir.0);
    let relay = TestRelay::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--https-bind",
        "127.0.0.1:0",
    ])
    .await;
    let https = relay.https.unwrap();
    let old = relay.fingerprint.clone();
    // Certificate files are a real certificate: the viewer is told not to pin it.
    let config = https_get(https, "/viewer.json", &pinned_tls(&old), "h2")
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["pinCertificate"], false);
    let moqt: url::Url = relay.url("moqt").parse().unwrap();
    let wt: url::Url = relay.url("https").parse().unwrap();

    let (publishing, mut track) = publish_one(&moqt, "reload").await;
    let state = relay.state.clone();
    eventually("the announcement", Duration::from_secs(5), || {
        let found = state.origin.get("reload").is_some();
        async move { found }
    })
    .await;
    // The subscriber pins the first certificate, over WebTransport.
    let subscriber = Client::new(&pinned_tls(&old)).unwrap();
    let conn = subscriber.connect(&wt).await.unwrap();
    let session = tokio::spawn(conn.session.run());
    let (mut sub, driver) = TrackSubscription::new(&conn.subscriber, "reload", "t");
    let driver = tokio::spawn(driver);
    let mut next = 0u64;
    // One object per group, its payload the count so far.
    let send = |track: &mut TrackPublisher, next: &mut u64| {
        track.start_group().unwrap();
        track
            .write(Default::default(), Bytes::from(next.to_string()))
            .unwrap();
        *next += 1;
    };
    // Objects flow before the swap (the first may race the subscription: send until one comes).
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            send(&mut track, &mut next);
            if let Ok(Some(Ok(o))) = tokio::time::timeout(Duration::from_millis(200), sub.next())
                .await
                .map(|o| o.transpose())
            {
                break o;
            }
        }
    })
    .await
    .expect("an object before the swap");
    assert!(!first.payload.is_empty());

    // Renewal: new files written beside, then renamed over the old ones.
    let renewed = TempDir::new("tls-renewed");
    let (new_cert, new_key) = write_test_certificate(&renewed.0);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let new_fp = hex::encode(moqcast_media::moq::certificate_fingerprint(
        rustls_pemfile_first(&cert).as_ref(),
    ));
    assert_ne!(new_fp, old);

    // New HTTPS handshakes present the new certificate within the reload interval.
    let tls_any = insecure_tls();
    eventually(
        "HTTPS to present the new certificate",
        Duration::from_secs(10),
        || {
            let tls_any = &tls_any;
            let new_fp = &new_fp;
            async move {
                https_get(https, "/healthz", tls_any, "h2")
                    .await
                    .is_ok_and(|r| &r.fingerprint == new_fp)
            }
        },
    )
    .await;
    assert_eq!(
        relay.state.fingerprint(),
        new_fp,
        "/certificate.sha256 follows"
    );
    // New QUIC handshakes too: a client pinning the new certificate connects, one pinning the
    // old one no longer does.
    let fresh = Client::new(&pinned_tls(&new_fp)).unwrap();
    let fresh_conn = tokio::time::timeout(Duration::from_secs(5), fresh.connect(&wt))
        .await
        .expect("connect in time")
        .expect("a client pinning the new certificate connects");
    fresh_conn.quic.close(0u32.into(), b"done");
    let stale = Client::new(&pinned_tls(&old)).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stale.connect(&moqt))
            .await
            .expect("refused in time")
            .is_err(),
        "a client pinning the old certificate still connected"
    );

    // The old session carries on: objects sent after the swap arrive on it.
    let after = next;
    send(&mut track, &mut next);
    send(&mut track, &mut next);
    let mut seen_after = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen_after {
        let left = deadline.saturating_duration_since(Instant::now());
        let o = tokio::time::timeout(left, sub.next())
            .await
            .expect("objects after the swap arrive on the old session")
            .expect("the track reads")
            .expect("the track goes on");
        let n: u64 = String::from_utf8_lossy(&o.payload).parse().unwrap();
        seen_after = n >= after;
    }
    assert!(
        conn.quic.close_reason().is_none(),
        "the old session was closed"
    );
    assert_eq!(relay.state.tls.reloads.load(Ordering::Relaxed), 1);

    // A broken certificate file: logged, counted, the good certificate stays.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let state = relay.state.clone();
    eventually(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || {
            let failed = state.tls.reload_failures.load(Ordering::Relaxed) >= 1;
            async move { failed }
        },
    )
    .await;
    assert_eq!(relay.state.fingerprint(), new_fp);
    let r = https_get(https, "/healthz", &pinned_tls(&new_fp), "http/1.1")
        .await
        .expect("HTTPS still serves the good certificate");
    assert_eq!(r.status, 200);
    let metrics = relay.http_get("/metrics");
    assert!(metrics.contains("moqcast_tls_reloads_total 1"), "{metrics}");
    assert!(
        metrics.contains("moqcast_tls_reload_failures_total 1"),
        "{metrics}"
    );

    driver.abort();
    session.abort();
    publishing.abort();
    relay.stop().await;
}

/// The leaf certificate of a PEM file, as DER.
fn rustls_pemfile_first(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    let first = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .unwrap();
    first.to_vec()
}

//! Tokens: who may connect, publish and watch (`--auth-key`, `--auth-public*`), on real
//! sockets with our client (raw QUIC: AUTHORIZATION TOKEN in SETUP; WebTransport: `?jwt=`).

use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use moq_token::{Algorithm, Claims, Key, KeyId};
use moqcast_client::{BroadcastPublisher, Client, ClientTls, TrackPublisher};
use moqcast_media::moq::{self, quinn, serve};
use moqcast_tests::{init_tracing, TempDir, TestRelay};

fn key(dir: &Path, id: &str, algorithm: Algorithm) -> Key {
    let key = Key::generate(algorithm, Some(KeyId::decode(id).unwrap())).unwrap();
    match key.to_public() {
        Ok(public) => public.to_file(dir.join(format!("{id}.jwk"))).unwrap(),
        Err(_) => key.to_file(dir.join(format!("{id}.jwk"))).unwrap(),
    }
    key
}

fn token(key: &Key, root: &str, put: &[&str], get: &[&str], life: Option<Duration>) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(life.map(|l| SystemTime::now() + l));
    key.sign(&claims).unwrap()
}

fn client(token: Option<&str>) -> Client {
    Client::new(&ClientTls {
        disable_verify: true,
        token: token.map(str::to_string),
        ..Default::default()
    })
    .unwrap()
}

async fn relay_with_keys(dir: &Path, extra: &[&str]) -> TestRelay {
    let mut args = vec!["--auth-key", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    TestRelay::start(&args).await
}

/// The application close code of a raw QUIC session the relay closed (the MoQT session
/// error code), within 5 s.
async fn closed_with(conn: &quinn::Connection) -> u64 {
    closed_with_within(conn, 5).await
}

/// Publishes `broadcast` with one track "t" as `token` allows; the task runs the session.
async fn publish(
    url: &url::Url,
    token: &str,
    broadcast: &str,
) -> (
    tokio::task::JoinHandle<Result<(), moq::SessionError>>,
    TrackPublisher,
    Client,
) {
    let c = client(Some(token));
    let conn = c.connect(url).await.expect("publisher connects");
    let mut bp = BroadcastPublisher::new(broadcast);
    let track = bp.create_track("t").unwrap();
    let (mut p, session) = (conn.publisher, conn.session);
    let task = tokio::spawn(async move {
        tokio::select! {
            res = session.run() => res,
            res = bp.announce(&mut p) => res,
        }
    });
    (task, track, c)
}

/// Subscribes to `broadcast`/t; `Err(code)` when the relay refuses the SUBSCRIBE.
async fn subscribe(
    url: &url::Url,
    token: &str,
    broadcast: &str,
) -> Result<(serve::SubgroupsReader, Client, tokio::task::JoinHandle<()>), u64> {
    let c = client(Some(token));
    let conn = c.connect(url).await.expect("subscriber connects");
    let mut subscriber = conn.subscriber.clone();
    let session = tokio::spawn(async move {
        let _ = conn.session.run().await;
    });
    let (w, r) = serve::Track::new(moq::namespace(broadcast), "t").produce();
    match tokio::time::timeout(Duration::from_secs(5), subscriber.subscribe_open(w)).await {
        Ok(Ok(subscription)) => {
            match tokio::time::timeout(Duration::from_secs(5), r.mode()).await {
                Ok(Ok(serve::TrackReaderMode::Subgroups(s))) => {
                    // The subscription lasts as long as its session task.
                    let session = tokio::spawn(async move {
                        let _subscription = subscription;
                        let _ = session.await;
                    });
                    Ok((s, c, session))
                }
                _ => panic!("no subgroups on the track"),
            }
        }
        Ok(Err(serve::ServeError::Closed(code))) => Err(code),
        Ok(Err(e)) => panic!("SUBSCRIBE failed otherwise: {e:?}"),
        Err(_) => panic!("SUBSCRIBE unanswered"),
    }
}

/// Writes one object a group until the test ends.
fn keep_publishing(mut track: TrackPublisher) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0u64.. {
            if let Err(e) = track.start_group() {
                tracing::warn!("publisher: {e}");
                return;
            }
            let _ = track.write(Default::default(), Bytes::from(i.to_string()));
            track.finish_group();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The first object of the track's next group, within 3 s.
async fn next_object(subgroups: &mut serve::SubgroupsReader) -> bool {
    let Ok(Ok(Some(mut group))) =
        tokio::time::timeout(Duration::from_secs(3), subgroups.next()).await
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), group.read_next()).await,
        Ok(Ok(Some(_)))
    )
}

/// Without a token, with an expired, forged or malformed one, or with one for another path, a
/// session is refused: raw QUIC closes it with the draft-18 code (UNAUTHORIZED 0x2,
/// EXPIRED_AUTH_TOKEN 0x18, MALFORMED_AUTH_TOKEN 0x16), WebTransport answers the CONNECT 401 or
/// 403. A good token gets in on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_a_valid_token_are_refused() {
    init_tracing();
    let dir = TempDir::new("auth-refused");
    let good = key(&dir.0, "good", Algorithm::ES256);
    let relay = relay_with_keys(&dir.0, &[]).await;
    let raw: url::Url = relay.url("moqt").parse().unwrap();
    let wt: url::Url = relay.url("https").parse().unwrap();

    let expired = token(&good, "", &[], &[""], Some(Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(1100)).await; // `exp` has whole seconds
    let forged = token(
        &Key::generate(Algorithm::ES256, Some(KeyId::decode("good").unwrap())).unwrap(),
        "",
        &[],
        &[""],
        None,
    );
    let valid = token(&good, "live", &[], &[""], None);
    for (token, code) in [
        (None, 0x2),
        (Some(expired.as_str()), 0x18),
        (Some(forged.as_str()), 0x2),
        (Some("not-a-jwt"), 0x16),
    ] {
        let c = client(token);
        let conn = c
            .connect(&raw)
            .await
            .unwrap_or_else(|e| panic!("{token:?}: SETUP itself is answered: {e}"));
        // The session is not run: what closes it is the relay.
        assert_eq!(closed_with(&conn.quic).await, code, "raw QUIC, {token:?}");

        let err = match client(token).connect(&wt).await {
            Ok(_) => panic!("WebTransport with {token:?} was accepted"),
            Err(e) => e.to_string(),
        };
        let status = if code == 0x2 && token.is_some() {
            "403"
        } else {
            "401"
        };
        assert!(err.contains(status), "WebTransport, {token:?}: {err}");
    }
    assert_eq!(relay.state.metrics.auth_refused.load(Ordering::Relaxed), 8);

    // A token whose root is not under the connection's path grants nothing there.
    let mut other_path = wt.clone();
    other_path.set_path("/elsewhere");
    let err = client(Some(&valid))
        .connect(&other_path)
        .await
        .err()
        .expect("refused at a path outside the token's root")
        .to_string();
    assert!(err.contains("403"), "{err}");

    for url in [&raw, &wt] {
        let c = client(Some(&valid));
        let conn = c.connect(url).await.expect("a valid token gets in");
        let session = tokio::spawn(conn.session.run());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(conn.quic.close_reason().is_none(), "{url}");
        session.abort();
    }
    relay.stop().await;
}

/// Tokens scope what a session may do: the streamer's token publishes `live/alice`, a viewer's
/// token for `live` watches it, a viewer's token for another prefix is refused (UNAUTHORIZED),
/// and another streamer's token cannot take `live/alice` over: the announcement is refused
/// while alice's viewer keeps receiving. Anonymous sessions may watch the public prefix only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_publishing_and_watching() {
    init_tracing();
    let dir = TempDir::new("auth-scope");
    let k = key(&dir.0, "root", Algorithm::HS256);
    let relay = relay_with_keys(&dir.0, &["--auth-public-subscribe", "open"]).await;
    for scheme in ["moqt", "https"] {
        let url: url::Url = relay.url(scheme).parse().unwrap();
        let name = format!("live/alice-{scheme}");
        let alice = token(&k, "live", &[&format!("alice-{scheme}")], &[], None);
        let (announcing, track, _alice) = publish(&url, &alice, &name).await;
        let writing = keep_publishing(track);
        let state = relay.state.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.origin.get(&name).is_none() {
            assert!(Instant::now() < deadline, "alice's announcement");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let viewer = token(&k, "live", &[], &[""], None);
        let (mut watching, _v, _s) = subscribe(&url, &viewer, &name).await.expect("viewer");
        assert!(next_object(&mut watching).await, "the viewer receives");
        if !next_object(&mut watching).await {
            if announcing.is_finished() {
                panic!("announce ended: {:?}", announcing.await);
            }
            panic!("the viewer receives again");
        }

        let stranger = token(&k, "other", &[], &[""], None);
        assert_eq!(subscribe(&url, &stranger, &name).await.err(), Some(0x1));
        let anonymous = client(None).connect(&url).await;
        assert!(anonymous.is_ok(), "anonymous sessions may watch `open`");

        // Mallory may publish `live/mallory` only: taking alice's name over is refused.
        let mallory = token(&k, "live", &["mallory"], &[], None);
        let (hijack, _t, _m) = publish(&url, &mallory, &name).await;
        let refused = tokio::time::timeout(Duration::from_secs(5), hijack)
            .await
            .expect("the hijack is answered")
            .unwrap();
        assert!(refused.is_err(), "{refused:?}");
        assert!(
            next_object(&mut watching).await,
            "alice's viewer carries on"
        );
        assert!(!announcing.is_finished(), "alice is still publishing");
        writing.abort();
        announcing.abort();
    }
    assert!(relay.state.metrics.auth_denied.load(Ordering::Relaxed) >= 4);
    relay.stop().await;
}

/// A token expiring mid-session ends that session (EXPIRED_AUTH_TOKEN); a key put into the key
/// directory is honoured without a restart, and a key taken out no longer is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_ends_sessions_and_keys_rotate_without_a_restart() {
    init_tracing();
    let dir = TempDir::new("auth-rotate");
    let old = key(&dir.0, "old", Algorithm::HS256);
    let relay = relay_with_keys(&dir.0, &[]).await;
    let raw: url::Url = relay.url("moqt").parse().unwrap();

    let short = token(&old, "", &[], &[""], Some(Duration::from_secs(3)));
    let c = client(Some(&short));
    let conn = c.connect(&raw).await.unwrap();
    let started = Instant::now();
    assert_eq!(closed_with_within(&conn.quic, 6).await, 0x18);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(relay.state.metrics.auth_expired.load(Ordering::Relaxed), 1);

    let new = Key::generate(Algorithm::HS256, Some(KeyId::decode("new").unwrap())).unwrap();
    let by_new = token(&new, "", &[], &[""], None);
    let c = client(Some(&by_new));
    let refused = c.connect(&raw).await.unwrap();
    assert_eq!(closed_with(&refused.quic).await, 0x2, "unknown key");
    new.to_file(dir.0.join("new.jwk")).unwrap();
    std::fs::remove_file(dir.0.join("old.jwk")).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = client(Some(&by_new));
    let conn = c.connect(&raw).await.unwrap();
    let session = tokio::spawn(conn.session.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        conn.quic.close_reason().is_none(),
        "the new key is honoured"
    );
    session.abort();
    let by_old = token(&old, "", &[], &[""], None);
    let c = client(Some(&by_old));
    let refused = c.connect(&raw).await.unwrap();
    assert_eq!(closed_with(&refused.quic).await, 0x2, "the removed key");
    relay.stop().await;
}

async fn closed_with_within(conn: &quinn::Connection, seconds: u64) -> u64 {
    let reason = tokio::time::timeout(Duration::from_secs(seconds), conn.closed())
        .await
        .expect("the relay closed the session");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other:?}"),
    }
}

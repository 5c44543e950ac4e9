//! Hostile peers: the attacks of the relay's hostile-peer suite (`moqcast-hostile`), each a
//! real client misbehaving on real sockets, run until a deadline and counted.
//!
//! Attackers come from loopback addresses other than 127.0.0.1 (127.0.0.2 and up), as hosts
//! other than the bystander's would, so per-address limits see them as what they are. TCP
//! attacks (slowloris, slow readers) use few addresses, as a real attacker must: TCP needs an
//! address that answers. The UDP floods use many (their sources could be spoofed).
//!
//! Every attack is bounded: a fixed number of workers, connections or a packet rate, scaled by
//! the caller's intensity, so that the attacker's own CPU on a shared machine is not what the
//! bystander measures.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use moqcast_client::{Client, ClientTls};
use moqcast_media::moq::{
    self, quinn,
    transport::{coding::KeyValuePairs, message},
    wire,
};
use moqcast_session::{draft18, io as moqt, Config, Role};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinSet,
    time::Instant,
};

/// One kind of hostile peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Sessions that send random bytes on their control stream or a request stream.
    Garbage,
    /// Sessions whose SETUP or first request ends mid-message.
    Truncated,
    /// Control and request messages longer than the 16-bit length allows, or claiming more.
    Oversize,
    /// Requests before SETUP, SETUP twice, a response as a request, data for unknown tracks.
    OutOfOrder,
    /// SETUP and SUBSCRIBE carrying many parameters nobody defined (must be ignored, not fatal).
    UnknownParams,
    /// Sessions asking SUBSCRIBEs to missing broadcasts as fast as the relay answers.
    RequestFlood,
    /// Sessions opening data streams for tracks nobody asked for, as fast as flow control allows.
    StreamFlood,
    /// Connections that finish the QUIC handshake and never send SETUP.
    NoSetup,
    /// QUIC Initial packets (real ClientHellos) from many addresses, never followed up.
    HandshakeFlood,
    /// Random UDP datagrams at the QUIC port, half shaped like long-header Initials.
    GarbageDatagrams,
    /// Thousands of SUBSCRIBEs waiting for names (RENDEZVOUS_TIMEOUT) while other names are
    /// announced and withdrawn without pause.
    AnnounceChurn,
    /// HTTP connections sending their headers a byte a second.
    Slowloris,
    /// HTTP clients reading the viewer's largest file a few KiB at a time.
    SlowReaders,
}

impl Attack {
    pub const ALL: [Attack; 13] = [
        Attack::Garbage,
        Attack::Truncated,
        Attack::Oversize,
        Attack::OutOfOrder,
        Attack::UnknownParams,
        Attack::RequestFlood,
        Attack::StreamFlood,
        Attack::NoSetup,
        Attack::HandshakeFlood,
        Attack::GarbageDatagrams,
        Attack::AnnounceChurn,
        Attack::Slowloris,
        Attack::SlowReaders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Garbage => "garbage",
            Attack::Truncated => "truncated",
            Attack::Oversize => "oversize",
            Attack::OutOfOrder => "out-of-order",
            Attack::UnknownParams => "unknown-params",
            Attack::RequestFlood => "request-flood",
            Attack::StreamFlood => "stream-flood",
            Attack::NoSetup => "no-setup",
            Attack::HandshakeFlood => "handshake-flood",
            Attack::GarbageDatagrams => "garbage-datagrams",
            Attack::AnnounceChurn => "announce-churn",
            Attack::Slowloris => "slowloris",
            Attack::SlowReaders => "slow-readers",
        }
    }

    /// How big the attack is at intensity 1, in words (for the report).
    pub fn size(self, intensity: f64) -> String {
        let n = |base: f64| scaled(base, intensity);
        match self {
            Attack::Garbage | Attack::Truncated | Attack::Oversize | Attack::OutOfOrder => {
                format!("{} sessions/s", n(8.0) * SESSIONS_PER_S as usize)
            }
            Attack::UnknownParams => format!("{} sessions/s", n(4.0) * SESSIONS_PER_S as usize),
            Attack::RequestFlood => format!("{} sessions x {} requests in flight", n(2.0), 256),
            Attack::StreamFlood => format!("{} sessions x {} streams in flight", n(2.0), 64),
            Attack::NoSetup => format!("{} idle connections held", n(300.0)),
            Attack::HandshakeFlood => format!("{} Initials/s", n(1000.0)),
            Attack::GarbageDatagrams => format!("{} datagrams/s", n(20_000.0)),
            Attack::AnnounceChurn => format!(
                "{} waiting SUBSCRIBEs, {} announcements/s",
                n(20.0) * 100,
                n(200.0)
            ),
            Attack::Slowloris => format!("{} connections", n(400.0)),
            Attack::SlowReaders => format!("{} readers at 20 KiB/s", n(200.0)),
        }
    }
}

fn scaled(base: f64, intensity: f64) -> usize {
    ((base * intensity).round() as usize).max(1)
}

/// Where the relay is.
#[derive(Debug, Clone)]
pub struct Target {
    /// The QUIC port (raw `moqt://` sessions).
    pub quic: SocketAddr,
    /// The plain HTTP port.
    pub http: SocketAddr,
    /// Where `garbage-datagrams` sends: the QUIC port, or another socket for a control run.
    pub datagrams_to: SocketAddr,
    /// A path on the HTTP side worth reading slowly (a large viewer file).
    pub slow_path: String,
}

/// What an attack did, counted as it went.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections, sessions, requests, streams or packets sent (what the attack is made of).
    pub attempts: AtomicU64,
    /// Sessions or connections the relay closed (what it should do to a hostile peer).
    pub closed_by_relay: AtomicU64,
    /// Requests the relay answered (with an error or otherwise).
    pub answered: AtomicU64,
    /// Connections the relay refused outright (a limit).
    pub refused: AtomicU64,
    /// Things that went otherwise: a session the relay left open after a protocol violation,
    /// a request never answered.
    pub unexpected: AtomicU64,
}

/// A snapshot of a [`Tally`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub attempts: u64,
    pub closed_by_relay: u64,
    pub answered: u64,
    pub refused: u64,
    pub unexpected: u64,
}

impl Tally {
    pub fn counts(&self) -> Counts {
        Counts {
            attempts: self.attempts.load(Ordering::Relaxed),
            closed_by_relay: self.closed_by_relay.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            unexpected: self.unexpected.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The attacker's `i`-th source address: 127.0.0.2 up to 127.0.0.(1 + `spread`).
fn source(i: usize, spread: usize) -> SocketAddr {
    let host = 2 + (i % spread.max(1)) as u8;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, host), 0))
}

fn tls() -> ClientTls {
    ClientTls {
        disable_verify: true,
        ..Default::default()
    }
}

/// A small, fast, non-cryptographic generator for garbage.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Runs `attack` against `target` until `until`, counting into `tally`. Returns when every
/// worker has stopped (at most a few seconds after `until`).
pub async fn run(
    attack: Attack,
    target: Target,
    intensity: f64,
    until: Instant,
    tally: Arc<Tally>,
) {
    let n = |base: f64| scaled(base, intensity);
    let mut workers = JoinSet::new();
    let t = Arc::new(target);
    match attack {
        Attack::Garbage
        | Attack::Truncated
        | Attack::Oversize
        | Attack::OutOfOrder
        | Attack::UnknownParams => {
            let count = if attack == Attack::UnknownParams {
                n(4.0)
            } else {
                n(8.0)
            };
            for w in 0..count {
                workers.spawn(session_loop(attack, t.clone(), w, until, tally.clone()));
            }
        }
        Attack::RequestFlood => {
            for w in 0..n(2.0) {
                workers.spawn(request_flood(t.clone(), w, until, tally.clone()));
            }
        }
        Attack::StreamFlood => {
            for w in 0..n(2.0) {
                workers.spawn(stream_flood(t.clone(), w, until, tally.clone()));
            }
        }
        Attack::NoSetup => {
            // Spread over 8 addresses: the per-address cap is not what is tested here.
            let client = Arc::new(Vec::from_iter(
                (0..8).filter_map(|i| Client::bind(&tls(), source(i, 8)).ok()),
            ));
            for w in 0..n(300.0) {
                workers.spawn(no_setup(t.clone(), client.clone(), w, until, tally.clone()));
            }
        }
        Attack::HandshakeFlood => {
            workers.spawn(handshake_flood(t.clone(), n(1000.0), until, tally.clone()));
        }
        Attack::GarbageDatagrams => {
            workers.spawn(garbage_datagrams(
                t.clone(),
                n(20_000.0),
                until,
                tally.clone(),
            ));
        }
        Attack::AnnounceChurn => {
            for w in 0..n(20.0) {
                workers.spawn(rendezvous_waiter(t.clone(), w, until, tally.clone()));
            }
            workers.spawn(announce_churn(t.clone(), n(200.0), until, tally.clone()));
        }
        Attack::Slowloris => {
            for w in 0..n(400.0) {
                workers.spawn(slowloris(t.clone(), w, until, tally.clone()));
            }
        }
        Attack::SlowReaders => {
            for w in 0..n(200.0) {
                workers.spawn(slow_reader(t.clone(), w, until, tally.clone()));
            }
        }
    }
    // Workers check the deadline between steps; one blocked in a step is cut off after a
    // grace period (its connections close as they are dropped).
    let grace = until + Duration::from_secs(3);
    while let Ok(Some(_)) = tokio::time::timeout_at(grace, workers.join_next()).await {}
    workers.shutdown().await;
}

fn moqt_url(t: &Target) -> url::Url {
    format!("moqt://{}", t.quic).parse().expect("a moqt URL")
}

/// Waits for the relay to close `conn` (up to `within`); counts what happened.
async fn expect_close(conn: &quinn::Connection, within: Duration, tally: &Tally) {
    match tokio::time::timeout(within, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(_))
        | Ok(quinn::ConnectionError::ConnectionClosed(_)) => Tally::add(&tally.closed_by_relay),
        Ok(_) => Tally::add(&tally.closed_by_relay),
        Err(_) => Tally::add(&tally.unexpected),
    }
}

/// One varint, draft-18's (QUIC's) encoding.
fn varint(v: u64, out: &mut BytesMut) {
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(v as u16 | 0x4000);
    } else if v < 1 << 30 {
        out.put_u32(v as u32 | 0x8000_0000);
    } else {
        out.put_u64(v | 0xC000_0000_0000_0000);
    }
}

fn setup_with(options: &KeyValuePairs) -> Bytes {
    draft18::encode_setup(options).expect("SETUP encodes")
}

fn subscribe(id: u64, broadcast: &str, track: &str, params: KeyValuePairs) -> Bytes {
    draft18::Request::Subscribe(message::Subscribe {
        id,
        track_namespace: moq::namespace(broadcast),
        track_name: track.into(),
        params,
    })
    .encode()
    .expect("SUBSCRIBE encodes")
}

/// Options no draft defines: even keys carry numbers, odd keys bytes.
fn unknown_options(noise: &mut Noise) -> KeyValuePairs {
    let mut kv = KeyValuePairs::default();
    for k in 0..16u64 {
        let key = 0x3f00 + 2 * k;
        kv.set_intvalue(key, noise.next() >> 2);
        kv.set_bytesvalue(key + 1, noise.bytes(64));
    }
    kv
}

/// How many misbehaving sessions a session-attack worker opens per second: each costs the relay
/// a QUIC handshake (a signature) before it can misbehave, which is not what these attacks
/// are about; unpaced, eight workers on loopback reach 1,500 handshakes a second and measure
/// only the CPU the two sides share. The handshake flood measures that cost on its own.
const SESSIONS_PER_S: f64 = 10.0;

/// One misbehaving session after another, from one source address.
async fn session_loop(
    attack: Attack,
    t: Arc<Target>,
    worker: usize,
    until: Instant,
    tally: Arc<Tally>,
) {
    let Ok(client) = Client::bind(&tls(), source(worker, 32)) else {
        return;
    };
    let url = moqt_url(&t);
    let mut noise = Noise::new(worker as u64 + 1);
    let mut round = 0u64;
    let mut keep = Vec::new();
    // Each worker opens at most SESSIONS_PER_S sessions a second.
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / SESSIONS_PER_S));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        pace.tick().await;
        round += 1;
        Tally::add(&tally.attempts);
        let conn =
            match tokio::time::timeout(Duration::from_secs(5), client.connect_quic(&url)).await {
                Ok(Ok(c)) => c,
                _ => {
                    Tally::add(&tally.refused);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        let outcome = match attack {
            Attack::Garbage => garbage(&conn, &mut noise, round, &mut keep).await,
            Attack::Truncated => truncated(&conn, round, &mut keep).await,
            Attack::Oversize => oversize(&conn, &mut noise, round, &mut keep).await,
            Attack::OutOfOrder => out_of_order(&conn, round, &mut keep).await,
            Attack::UnknownParams => unknown_params(&conn, &mut noise, &tally, &mut keep).await,
            _ => unreachable!("not a session attack"),
        };
        match outcome {
            // The relay must close a session that broke the protocol.
            // Within the SETUP deadline (10 s) at the latest: a stream of garbage that reads as
            // a data stream, or a request before SETUP, may wait for it.
            Ok(Expect::Close) => expect_close(&conn, Duration::from_secs(12), &tally).await,
            Ok(Expect::Served) => conn.close(0u32.into(), b"done"),
            // The relay closed it before we were done: what it should have done.
            Err(_) => Tally::add(&tally.closed_by_relay),
        }
        keep.clear();
    }
}

/// What a relay should do with what a session just sent.
enum Expect {
    Close,
    Served,
}

type Step = Result<Expect, Box<dyn std::error::Error + Send + Sync>>;

async fn garbage(
    conn: &quinn::Connection,
    noise: &mut Noise,
    round: u64,
    keep: &mut Vec<quinn::SendStream>,
) -> Step {
    let junk = noise.bytes(64 + (round as usize % 200));
    if round % 2 == 0 {
        // On the control stream: the stream type itself is junk (or a SETUP of junk).
        let mut s = conn.open_uni().await?;
        s.write_all(&junk).await?;
        let _ = s.finish();
    } else {
        // After a proper SETUP, on a request stream.
        let mut c = conn.open_uni().await?;
        c.write_all(&setup_with(&KeyValuePairs::default())).await?;
        let (mut s, _r) = conn.open_bi().await?;
        s.write_all(&junk).await?;
        let _ = s.finish();
        // Keep the control stream open: its end would close the session by itself.
        keep.push(c);
    }
    Ok(Expect::Close)
}

async fn truncated(
    conn: &quinn::Connection,
    round: u64,
    keep: &mut Vec<quinn::SendStream>,
) -> Step {
    let mut c = conn.open_uni().await?;
    if round % 2 == 0 {
        // SETUP claiming 40 bytes of options, 10 sent, then the stream ends.
        let mut b = BytesMut::new();
        varint(draft18::SETUP_TYPE, &mut b);
        b.put_u16(40);
        b.put_slice(&[0u8; 10]);
        c.write_all(&b).await?;
        let _ = c.finish();
    } else {
        c.write_all(&setup_with(&KeyValuePairs::default())).await?;
        let full = subscribe(0, "victim", "video", KeyValuePairs::default());
        let (mut s, _r) = conn.open_bi().await?;
        s.write_all(&full[..full.len() / 2]).await?;
        let _ = s.finish();
        keep.push(c);
    }
    Ok(Expect::Close)
}

async fn oversize(
    conn: &quinn::Connection,
    noise: &mut Noise,
    round: u64,
    keep: &mut Vec<quinn::SendStream>,
) -> Step {
    let mut c = conn.open_uni().await?;
    let mut b = BytesMut::new();
    if round % 2 == 0 {
        // SETUP with the largest length, then more bytes than it: 70 kB of junk.
        varint(draft18::SETUP_TYPE, &mut b);
        b.put_u16(u16::MAX);
        b.put_slice(&noise.bytes(70_000));
        let _ = c.write_all(&b).await;
        let _ = c.finish();
    } else {
        c.write_all(&setup_with(&KeyValuePairs::default())).await?;
        // A SUBSCRIBE whose namespace claims a 1 MB field.
        varint(0x3, &mut b);
        b.put_u16(u16::MAX);
        varint(0, &mut b);
        varint(1, &mut b);
        varint(1 << 20, &mut b);
        b.put_slice(&noise.bytes(60_000));
        let (mut s, _r) = conn.open_bi().await?;
        let _ = s.write_all(&b).await;
        let _ = s.finish();
        keep.push(c);
    }
    Ok(Expect::Close)
}

async fn out_of_order(
    conn: &quinn::Connection,
    round: u64,
    keep: &mut Vec<quinn::SendStream>,
) -> Step {
    let setup = setup_with(&KeyValuePairs::default());
    match round % 4 {
        0 => {
            // A request before any SETUP.
            let (mut s, _r) = conn.open_bi().await?;
            s.write_all(&subscribe(0, "victim", "video", KeyValuePairs::default()))
                .await?;
            let _ = s.finish();
            Ok(Expect::Close)
        }
        1 => {
            // SETUP twice on the control stream.
            let mut c = conn.open_uni().await?;
            c.write_all(&setup).await?;
            c.write_all(&setup).await?;
            keep.push(c);
            Ok(Expect::Close)
        }
        2 => {
            // A response (REQUEST_OK, 0x07) where a request must come.
            let mut c = conn.open_uni().await?;
            c.write_all(&setup).await?;
            let (mut s, _r) = conn.open_bi().await?;
            let mut b = BytesMut::new();
            varint(0x07, &mut b);
            b.put_u16(1);
            b.put_u8(0);
            s.write_all(&b).await?;
            keep.push(c);
            Ok(Expect::Close)
        }
        _ => {
            // Objects for a track nobody subscribed to: the relay drops the stream and serves
            // the session on.
            let mut c = conn.open_uni().await?;
            c.write_all(&setup).await?;
            for alias in 0..8u64 {
                let mut s = conn.open_uni().await?;
                let mut b = wire::subgroup_header(1000 + alias, 0, 0, 0)?.to_vec();
                b.extend_from_slice(&[0u8; 32]);
                let _ = s.write_all(&b).await;
                let _ = s.finish();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if conn.close_reason().is_some() {
                return Err("closed for objects of an unknown track".into());
            }
            keep.push(c);
            Ok(Expect::Served)
        }
    }
}

/// SETUP and SUBSCRIBE with unknown parameters: the relay must ignore them and answer the
/// SUBSCRIBE (with REQUEST_ERROR: the broadcast does not exist).
async fn unknown_params(
    conn: &quinn::Connection,
    noise: &mut Noise,
    tally: &Tally,
    keep: &mut Vec<quinn::SendStream>,
) -> Step {
    let mut c = conn.open_uni().await?;
    c.write_all(&setup_with(&unknown_options(noise))).await?;
    let (mut s, mut r) = conn.open_bi().await?;
    s.write_all(&subscribe(
        0,
        "nobody-here",
        "video",
        unknown_options(noise),
    ))
    .await?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
        Ok(Ok(Some(n))) if n > 0 => Tally::add(&tally.answered),
        _ => Tally::add(&tally.unexpected),
    }
    keep.push(c);
    Ok(Expect::Served)
}

/// A well-behaved session of our own session layer (SETUP done) from `local`.
async fn session(
    t: &Target,
    local: SocketAddr,
) -> Option<(
    Client,
    moqt::Session,
    moqt::Incoming,
    tokio::task::JoinHandle<()>,
)> {
    let client = Client::bind(&tls(), local).ok()?;
    let url = moqt_url(t);
    let conn = tokio::time::timeout(Duration::from_secs(5), client.connect_quic(&url))
        .await
        .ok()?
        .ok()?;
    let wt = web_transport_quinn::Session::raw(
        conn.clone(),
        url,
        web_transport_quinn::proto::ConnectResponse::default(),
    );
    let (session, incoming, driver) =
        moqt::establish(wt, Some(conn), Role::Client, Config::default());
    let driver = tokio::spawn(async move {
        driver.run().await;
    });
    tokio::time::timeout(Duration::from_secs(5), session.ready())
        .await
        .ok()?
        .ok()?;
    Some((client, session, incoming, driver))
}

async fn request_flood(t: Arc<Target>, worker: usize, until: Instant, tally: Arc<Tally>) {
    subscribe_loop(t, worker, until, tally, 256, None, "missing").await
}

async fn rendezvous_waiter(t: Arc<Target>, worker: usize, until: Instant, tally: Arc<Tally>) {
    subscribe_loop(t, worker, until, tally, 100, Some(3_000), "wait").await
}

/// Sessions keeping `in_flight` SUBSCRIBEs to names nobody publishes (`PREFIX-WORKER-N`)
/// asked, each answered (refused, or after `rendezvous_ms` of waiting) before the next.
async fn subscribe_loop(
    t: Arc<Target>,
    worker: usize,
    until: Instant,
    tally: Arc<Tally>,
    in_flight: usize,
    rendezvous_ms: Option<u64>,
    prefix: &'static str,
) {
    while Instant::now() < until {
        let Some((_client, session, _incoming, driver)) = session(&t, source(worker, 32)).await
        else {
            Tally::add(&tally.refused);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut asked = JoinSet::new();
        let mut i = 0u64;
        while Instant::now() < until && !driver.is_finished() {
            while asked.len() >= in_flight {
                if let Some(Ok(answered)) = asked.join_next().await {
                    Tally::add(if answered {
                        &tally.answered
                    } else {
                        &tally.unexpected
                    });
                }
            }
            i += 1;
            Tally::add(&tally.attempts);
            let s = session.clone();
            asked.spawn(async move {
                let mut params = KeyValuePairs::default();
                if let Some(ms) = rendezvous_ms {
                    params.set_rendezvous_timeout(ms);
                }
                let ask = s.subscribe(
                    moq::namespace(&format!("{prefix}-{worker}-{i}")),
                    "video",
                    params,
                );
                // Refused or (never) served: either is an answer; silence is not.
                tokio::time::timeout(Duration::from_secs(8), ask)
                    .await
                    .is_ok()
            });
        }
        asked.shutdown().await;
        driver.abort();
    }
}

async fn stream_flood(t: Arc<Target>, worker: usize, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let Some((_client, session, _incoming, driver)) = session(&t, source(worker, 32)).await
        else {
            Tally::add(&tally.refused);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let wt = session.transport().clone();
        let mut inflight = JoinSet::new();
        let mut alias = 0u64;
        while Instant::now() < until && !driver.is_finished() {
            while inflight.len() >= 64 {
                inflight.join_next().await;
            }
            alias += 1;
            Tally::add(&tally.attempts);
            let wt = wt.clone();
            inflight.spawn(async move {
                let Ok(mut s) = wt.open_uni().await else {
                    return;
                };
                let Ok(head) = wire::subgroup_header(5000 + alias, alias, 0, 0) else {
                    return;
                };
                let mut b = head.to_vec();
                b.extend_from_slice(&[0u8; 200]);
                let _ = s.write_all(&b).await;
                let _ = s.finish();
            });
        }
        if driver.is_finished() {
            Tally::add(&tally.closed_by_relay);
        }
        inflight.shutdown().await;
        driver.abort();
    }
}

async fn no_setup(
    t: Arc<Target>,
    clients: Arc<Vec<Client>>,
    worker: usize,
    until: Instant,
    tally: Arc<Tally>,
) {
    let Some(client) = clients.get(worker % clients.len().max(1)) else {
        return;
    };
    let url = moqt_url(&t);
    while Instant::now() < until {
        Tally::add(&tally.attempts);
        match tokio::time::timeout(Duration::from_secs(5), client.connect_quic(&url)).await {
            Ok(Ok(conn)) => {
                // Hold it, saying nothing, until the relay gives up on it or the attack ends.
                tokio::select! {
                    _ = conn.closed() => Tally::add(&tally.closed_by_relay),
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
            _ => {
                Tally::add(&tally.refused);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Real ClientHellos: a QUIC client connects to a socket of ours; its first datagram (the
/// Initial) is sent on to the relay from one of many addresses, and nobody answers the relay.
async fn handshake_flood(t: Arc<Target>, rate: usize, until: Instant, tally: Arc<Tally>) {
    let Ok(trap) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(trap_addr) = trap.local_addr() else {
        return;
    };
    let mut senders = Vec::new();
    for i in 0..64 {
        if let Ok(s) = tokio::net::UdpSocket::bind(source(i, 64)).await {
            senders.push(s);
        }
    }
    if senders.is_empty() {
        return;
    }
    let Ok(client) = Client::bind(&tls(), "127.0.0.1:0".parse().expect("address")) else {
        return;
    };
    let url: url::Url = format!("moqt://{trap_addr}").parse().expect("URL");
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 2048];
    let mut i = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        // Each connect attempt makes a new Initial (new connection IDs, new key share).
        let c = client.clone();
        let u = url.clone();
        let attempt = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(200), c.connect_quic(&u)).await;
        });
        let got = tokio::time::timeout(Duration::from_millis(200), trap.recv_from(&mut buf)).await;
        attempt.abort();
        if let Ok(Ok((n, _))) = got {
            i += 1;
            Tally::add(&tally.attempts);
            let _ = senders[i % senders.len()].send_to(&buf[..n], t.quic).await;
        }
    }
}

async fn garbage_datagrams(t: Arc<Target>, rate: usize, until: Instant, tally: Arc<Tally>) {
    let mut senders = Vec::new();
    for i in 0..64 {
        if let Ok(s) = tokio::net::UdpSocket::bind(source(i, 64)).await {
            senders.push(s);
        }
    }
    if senders.is_empty() {
        return;
    }
    let mut noise = Noise::new(7);
    // Bursts every 10 ms.
    let per_burst = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut datagram = vec![0u8; 1200];
    let mut i = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        for _ in 0..per_burst {
            noise.fill(&mut datagram);
            i += 1;
            if i % 2 == 0 {
                // Long header, Initial, QUIC v1, an 8-byte DCID: it gets as far as decryption.
                datagram[0] = 0xC0 | (datagram[0] & 0x0F);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
                datagram[5] = 8;
            }
            Tally::add(&tally.attempts);
            let _ = senders[i % senders.len()]
                .send_to(&datagram, t.datagrams_to)
                .await;
        }
    }
}

async fn announce_churn(t: Arc<Target>, rate: usize, until: Instant, tally: Arc<Tally>) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    while Instant::now() < until {
        let Some((_client, session, _incoming, driver)) = session(&t, source(40, 64)).await else {
            Tally::add(&tally.refused);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut held = std::collections::VecDeque::new();
        let mut i = 0u64;
        while Instant::now() < until && !driver.is_finished() {
            tick.tick().await;
            i += 1;
            Tally::add(&tally.attempts);
            let ask = session.publish_namespace(
                moq::namespace(&format!("churn-{i}")),
                KeyValuePairs::default(),
            );
            match tokio::time::timeout(Duration::from_secs(2), ask).await {
                Ok(Ok(a)) => {
                    Tally::add(&tally.answered);
                    held.push_back(a);
                    // Withdrawn a moment later (dropping the announcement ends it).
                    if held.len() > 8 {
                        held.pop_front();
                    }
                }
                _ => Tally::add(&tally.unexpected),
            }
        }
        driver.abort();
    }
}

async fn tcp_from(local: SocketAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(local)?;
    tokio::time::timeout(Duration::from_secs(3), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

async fn slowloris(t: Arc<Target>, worker: usize, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        Tally::add(&tally.attempts);
        let Ok(mut s) = tcp_from(source(worker, 4), t.http).await else {
            Tally::add(&tally.refused);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
            .await
            .is_err()
        {
            Tally::add(&tally.closed_by_relay);
            continue;
        }
        let mut closed = false;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(b"a").await.is_err() {
                closed = true;
                break;
            }
            // A close by the relay shows as EOF (or a 408) on the read side.
            let mut b = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
            {
                if n == 0 || b.starts_with(b"HTTP/1.1 4") {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            Tally::add(&tally.closed_by_relay);
        }
    }
}

async fn slow_reader(t: Arc<Target>, worker: usize, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        Tally::add(&tally.attempts);
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        // A small receive window, so the relay's side holds what we do not read.
        let _ = socket.set_recv_buffer_size(4096);
        if socket.bind(source(worker, 4)).is_err() {
            return;
        }
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(3), socket.connect(t.http)).await
        else {
            Tally::add(&tally.refused);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
            t.slow_path
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            Tally::add(&tally.closed_by_relay);
            continue;
        }
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        loop {
            if Instant::now() >= until {
                break;
            }
            match s.read(&mut buf).await {
                Ok(0) => {
                    Tally::add(&tally.answered);
                    break;
                }
                Ok(n) => total += n,
                Err(_) => {
                    Tally::add(&tally.closed_by_relay);
                    break;
                }
            }
            // 4 KiB every 200 ms: 20 KiB/s.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = total;
    }
}

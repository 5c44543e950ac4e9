//! The load run: one publisher session, N subscriber sessions, samplers, and the schedule.
//!
//! Timeline (all bounded, nothing waits for a peer without a deadline):
//!
//! ```text
//! publisher connects, announces, starts writing
//! (--idle-sessions)  idle sessions connect; relay memory before and after
//! +settle           subscribers start, spread over --join-spread
//! +warmup           measured window opens (relay/bench CPU sampled)
//! +duration         window closes, publisher stops writing (its session stays open)
//! +drain (<= max)   subscribers stop once nothing arrived for DRAIN_QUIET
//! ```

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use futures::{future::join_all, stream::FuturesUnordered, StreamExt};
use moqcast_bench::shaper::Shaper;
use moqcast_client::{BroadcastPublisher, Client, ClientTls, TrackSubscription};
use moqcast_media::{loc::LocProperties, time::unix_micros};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use url::Url;

use crate::{
    hist::Histogram,
    procfs::{self, Pid},
    scrape::{self, Samples},
    stats::{TraceRow, TrackLedger, TrackStats, Window},
};

/// Time between the publisher's announcement and the first subscriber.
const SETTLE: Duration = Duration::from_millis(500);
/// The drain ends once no object arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// How long stopped subscriber tasks get to hand back their statistics.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Memory sampling period during the window.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Time given to the relay after the idle sessions connected, before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: Url,
    /// Where the publisher connects, when not `url`.
    pub publish_url: Option<Url>,
    /// A second relay measured like `relay_pid` (an origin feeding the relay under test).
    pub origin_pid: Option<u32>,
    pub tls: ClientTls,
    pub subscribers: usize,
    pub bitrate: u64,
    pub fps: f64,
    pub group_frames: u64,
    pub tracks: usize,
    pub broadcasts: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub join_spread: Duration,
    pub drain: Duration,
    /// QUIC client endpoints (UDP sockets) the subscribers are spread over.
    pub endpoints: usize,
    /// Connection handshakes in flight at once.
    pub connect_concurrency: usize,
    pub relay_pid: Option<u32>,
    /// The relay's Prometheus metrics URL, scraped over the window.
    pub relay_metrics: Option<Url>,
    /// Namespace prefix; broadcasts are `PREFIX-0`, `PREFIX-1`, ...
    pub prefix: String,
    /// Sessions that connect (SETUP) and then do nothing, opened before the subscribers.
    pub idle_sessions: usize,
    /// The first this many subscribers reach the relay through a [`Shaper`] (a slow link).
    pub slow_subscribers: usize,
    /// Relay-to-subscriber rate of each slow link, bits per second.
    pub slow_rate: u64,
    /// Queue of each slow link, bytes.
    pub slow_queue_bytes: usize,
    /// Keep every received object's send and receive times ([`TrackStats::trace`]).
    pub trace: bool,
}

impl Options {
    /// Payload bytes of one object.
    pub fn object_size(&self) -> usize {
        ((self.bitrate as f64 / 8.0 / self.fps).round() as usize).max(1)
    }

    fn broadcast_name(&self, b: usize) -> String {
        format!("{}-{b}", self.prefix)
    }

    fn track_name(t: usize) -> String {
        format!("video{t}")
    }
}

/// Shared by the subscriber tasks.
struct Shared {
    window: Window,
    latency: Histogram,
    /// Latency seen by the slow subscribers (kept out of `latency`).
    slow_latency: Histogram,
    ledgers: Vec<Arc<TrackLedger>>,
    /// Wall-clock µs of the latest object any subscriber received.
    last_object_us: AtomicU64,
    trace: bool,
}

/// Where the run is; the publisher counts the objects it writes during [`Phase::Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Window,
    /// Stop writing (the session stays open for the drain).
    Done,
}

/// What the publisher wrote.
#[derive(Debug, Default)]
pub struct Published {
    pub objects: u64,
    /// Objects written while the window was open.
    pub window_objects: u64,
    pub error: Option<String>,
}

impl Published {
    fn failed(error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// One subscriber session's outcome.
#[derive(Debug)]
pub struct SubscriberResult {
    /// Behind a slow link (`--slow-subscribers`).
    pub slow: bool,
    pub connect_us: Option<u64>,
    pub error: Option<String>,
    pub tracks: Vec<TrackStats>,
}

/// Resource use over the window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub rss_max_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

/// UDP datagrams the kernel dropped for full socket buffers during the window (whole machine).
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpDrops {
    pub rcvbuf: u64,
    pub sndbuf: u64,
}

/// The idle sessions and what they cost the relay.
#[derive(Debug, Default)]
pub struct Idle {
    pub requested: usize,
    pub connected: usize,
    pub first_error: Option<String>,
    /// Relay VmRSS before the first idle session connected and after the last one, MiB.
    pub relay_rss_before_mb: Option<f64>,
    pub relay_rss_after_mb: Option<f64>,
}

/// The relay's own metrics over the window (`--relay-metrics`).
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pub start: Samples,
    pub end: Samples,
    /// Largest `moqcast_cache_bytes` sampled.
    pub cache_bytes_max: Option<f64>,
}

/// Everything measured.
pub struct Outcome {
    pub window: Window,
    pub subscribers: Vec<SubscriberResult>,
    /// Subscriber tasks that did not hand back their statistics in time.
    pub lost_tasks: usize,
    pub ledgers: Vec<Vec<crate::stats::GroupRecord>>,
    pub latency: Histogram,
    pub slow_latency: Histogram,
    /// Datagrams the slow links dropped at their full queues.
    pub slow_link_drops: u64,
    pub idle: Option<Idle>,
    pub relay_metrics: Option<RelayMetrics>,
    pub relay: Option<Usage>,
    /// The origin relay's usage (`--origin-pid`).
    pub origin: Option<Usage>,
    pub bench: Usage,
    pub published: Published,
    pub udp_drops: Option<UdpDrops>,
    pub loadavg_start: Option<f64>,
    pub loadavg_end: Option<f64>,
    pub host_steal: HostSteal,
}

/// CPU time the hypervisor gave to other guests while this machine had work (a virtual
/// machine's neighbours): latency on a shared host rises with it, whichever relay runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSteal {
    /// Percent of the machine's CPU time over the window.
    pub percent: Option<f64>,
    /// The same over the window's worst whole second.
    pub worst_second_percent: Option<f64>,
}

fn instant_to_unix_us(at: Instant) -> u64 {
    let now = Instant::now();
    let now_us = unix_micros();
    if at >= now {
        now_us + (at - now).as_micros() as u64
    } else {
        now_us.saturating_sub((now - at).as_micros() as u64)
    }
}

pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        opts.broadcasts > 0 && opts.tracks > 0,
        "need at least one broadcast and one track"
    );
    anyhow::ensure!(
        opts.fps > 0.0 && opts.group_frames > 0,
        "--fps and --group-frames must be positive"
    );
    let loadavg_start = procfs::loadavg();

    // The publisher runs on its own thread and runtime, so a saturated subscriber side delays
    // its frames no more than the OS scheduler does (see docs/BENCHMARKS.md).
    let ledgers: Vec<Arc<TrackLedger>> = (0..opts.broadcasts * opts.tracks)
        .map(|_| Arc::new(TrackLedger::default()))
        .collect();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let publisher = {
        let (opts, ledgers) = (opts.clone(), ledgers.clone());
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || -> Published {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return Published::failed(format!("publisher runtime: {e}")),
                };
                rt.block_on(publish(opts, ledgers, ready_tx, phase_rx, pub_stop_rx))
            })
            .context("spawning the publisher thread")?
    };
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let err = publisher.join().ok().and_then(|p| p.error);
            anyhow::bail!("publisher failed: {}", err.unwrap_or_default());
        }
    }

    // Idle sessions, and the relay's memory before and after them.
    let (idle, idle_conns) = if opts.idle_sessions > 0 {
        let (idle, conns) = open_idle(&opts).await;
        (Some(idle), conns)
    } else {
        (None, Vec::new())
    };

    let subscribers_at = Instant::now() + SETTLE;
    let window_start = subscribers_at + opts.warmup;
    let window_end = window_start + opts.duration;
    let window = Window {
        start_us: instant_to_unix_us(window_start),
        end_us: instant_to_unix_us(window_end),
    };

    let shared = Arc::new(Shared {
        window,
        latency: Histogram::default(),
        slow_latency: Histogram::default(),
        ledgers: ledgers.clone(),
        last_object_us: AtomicU64::new(0),
        trace: opts.trace,
    });

    // Resource samplers over the window.
    let relay_sampler = opts
        .relay_pid
        .map(|pid| tokio::spawn(sample(Pid::Other(pid), window_start, window_end)));
    let origin_sampler = opts
        .origin_pid
        .map(|pid| tokio::spawn(sample(Pid::Other(pid), window_start, window_end)));
    let bench_sampler = tokio::spawn(sample(Pid::Myself, window_start, window_end));
    let host_sampler = tokio::spawn(sample_host(window_start, window_end));
    let metrics_sampler = opts
        .relay_metrics
        .clone()
        .map(|url| tokio::spawn(sample_metrics(url, window_start, window_end)));

    // Subscribers: the slow ones each behind their own shaper and QUIC endpoint.
    let endpoints = opts.endpoints.clamp(1, opts.subscribers.max(1));
    let mut clients = (0..endpoints)
        .map(|_| Client::new(&opts.tls))
        .collect::<Result<Vec<_>, _>>()
        .context("subscriber QUIC endpoints")?;
    let slow = opts.slow_subscribers.min(opts.subscribers);
    let mut shapers = Vec::with_capacity(slow);
    let mut slow_links = Vec::with_capacity(slow);
    if slow > 0 {
        let relay = relay_addr(&opts.url)?;
        for _ in 0..slow {
            let shaper = Shaper::start(relay, opts.slow_rate, opts.slow_queue_bytes)
                .await
                .context("slow-link shaper")?;
            let mut url = opts.url.clone();
            url.set_ip_host(shaper.addr.ip())
                .map_err(|()| anyhow::anyhow!("cannot point {} at the shaper", opts.url))?;
            url.set_port(Some(shaper.addr.port()))
                .map_err(|()| anyhow::anyhow!("cannot point {} at the shaper", opts.url))?;
            let client = Client::new(&opts.tls).context("slow subscriber QUIC endpoint")?;
            clients.push(client.clone());
            slow_links.push((client, url));
            shapers.push(shaper);
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_permits = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..opts.subscribers {
        let offset = if opts.subscribers > 1 {
            opts.join_spread.mul_f64(i as f64 / opts.subscribers as f64)
        } else {
            Duration::ZERO
        };
        let b = i % opts.broadcasts;
        let plan = SubscriberPlan {
            broadcast: opts.broadcast_name(b),
            tracks: (0..opts.tracks)
                .map(|t| (b * opts.tracks + t, Options::track_name(t)))
                .collect(),
            start_at: subscribers_at + offset,
        };
        let (client, url) = match slow_links.get(i) {
            Some((client, url)) => (client.clone(), url.clone()),
            None => (clients[i % endpoints].clone(), opts.url.clone()),
        };
        tasks.spawn(subscriber(
            client,
            url,
            i < slow,
            plan,
            shared.clone(),
            connect_permits.clone(),
            stop_rx.clone(),
        ));
    }

    // Wait out the window, then the drain.
    tokio::time::sleep_until(window_start).await;
    let _ = phase_tx.send(Phase::Window);
    let udp0 = procfs::udp_buffer_errors();
    tokio::time::sleep_until(window_end).await;
    let _ = phase_tx.send(Phase::Done);
    let udp_drops = udp0
        .zip(procfs::udp_buffer_errors())
        .map(|((r0, s0), (r1, s1))| UdpDrops {
            rcvbuf: r1.saturating_sub(r0),
            sndbuf: s1.saturating_sub(s0),
        });
    let drain_deadline = window_end + opts.drain;
    loop {
        let now = Instant::now();
        if now >= drain_deadline {
            break;
        }
        let last = shared.last_object_us.load(Ordering::Relaxed);
        if unix_micros().saturating_sub(last) >= DRAIN_QUIET.as_micros() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50).min(drain_deadline - now)).await;
    }
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(opts.subscribers);
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok(r)) => results.push(r),
                Some(Err(e)) => tracing::warn!(error = %e, "subscriber task failed"),
                None => break,
            },
            () = &mut grace => {
                tracing::warn!(left = tasks.len(), "subscriber tasks did not stop in time");
                tasks.abort_all();
                break;
            }
        }
    }
    let lost_tasks = opts.subscribers.saturating_sub(results.len());

    let _ = pub_stop_tx.send(true);
    join_all(clients.iter().map(|c| c.close())).await;
    join_all(idle_conns.iter().map(|(c, _)| c.close())).await;
    drop(idle_conns);
    let slow_link_drops = shapers
        .iter()
        .map(|s| s.dropped.load(Ordering::Relaxed))
        .sum();
    drop(shapers);
    let published = tokio::task::spawn_blocking(move || publisher.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| Published::failed("publisher thread panicked".into()));

    let relay = match relay_sampler {
        Some(h) => h.await.ok(),
        None => None,
    };
    let origin = match origin_sampler {
        Some(h) => h.await.ok(),
        None => None,
    };
    let bench = bench_sampler.await.unwrap_or_default();
    let host_steal = host_sampler.await.unwrap_or_default();
    let relay_metrics = match metrics_sampler {
        Some(h) => h.await.ok(),
        None => None,
    };
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("subscriber tasks still hold the shared state"))?;
    Ok(Outcome {
        window,
        subscribers: results,
        lost_tasks,
        ledgers: ledgers.iter().map(|l| l.groups()).collect(),
        latency: shared.latency,
        slow_latency: shared.slow_latency,
        slow_link_drops,
        idle,
        relay_metrics,
        relay,
        origin,
        bench,
        published,
        udp_drops,
        loadavg_start,
        loadavg_end: procfs::loadavg(),
        host_steal,
    })
}

/// Connects, announces every broadcast (`ready` once connected), publishes every track at
/// `fps` while `writing` is true, then keeps the session open (so subscribers can drain)
/// until `stop`. Returns the objects written and the first error.
async fn publish(
    opts: Options,
    ledgers: Vec<Arc<TrackLedger>>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    mut phase: watch::Receiver<Phase>,
    mut stop: watch::Receiver<bool>,
) -> Published {
    let setup = async {
        let client = Client::new(&opts.tls).context("publisher QUIC endpoint")?;
        let url = opts.publish_url.as_ref().unwrap_or(&opts.url);
        let conn = client
            .connect(url)
            .await
            .with_context(|| format!("publisher could not connect to {url}"))?;
        let mut broadcasts = Vec::new();
        let mut writers = Vec::new();
        for b in 0..opts.broadcasts {
            let mut bp = BroadcastPublisher::new(&opts.broadcast_name(b));
            for t in 0..opts.tracks {
                writers.push(bp.create_track(&Options::track_name(t))?);
            }
            broadcasts.push(bp);
        }
        anyhow::Ok((client, conn, broadcasts, writers))
    };
    let (client, conn, mut broadcasts, mut writers) = match setup.await {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = ready.send(Err(e));
            return Published::failed(msg);
        }
    };
    let publisher = conn.publisher;
    // Each announcement runs for the whole session; the first to end is reported.
    let mut announces: FuturesUnordered<_> = broadcasts
        .iter_mut()
        .map(|b| {
            let mut p = publisher.clone();
            async move { b.announce(&mut p).await }
        })
        .collect();
    let session = conn.session.run();
    tokio::pin!(session);

    let payload = Bytes::from(vec![0xA5u8; opts.object_size()]);
    let frame_us = 1e6 / opts.fps;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.fps));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut frame = 0u64;
    let mut written = 0u64;
    let mut window_objects = 0u64;
    let phase_peek = phase.clone();
    let mut writing = true;
    let error = loop {
        tokio::select! {
            res = &mut session => break Some(format!("publisher session ended: {res:?}")),
            Some(res) = announces.next() => break Some(format!("announcement ended: {res:?}")),
            _ = stop.wait_for(|s| *s) => break None,
            _ = phase.wait_for(|p| *p == Phase::Done), if writing => {
                writing = false;
                for w in &mut writers {
                    w.finish_group();
                }
            }
            _ = ticker.tick(), if writing => {
                let now = unix_micros();
                let in_window = *phase_peek.borrow() == Phase::Window;
                let mut props = LocProperties::media_time((frame as f64 * frame_us) as u64, 1_000_000);
                props.send_time_us = Some(now);
                let headers = props.to_extension_headers();
                for (w, ledger) in writers.iter_mut().zip(&ledgers) {
                    if frame % opts.group_frames == 0 {
                        match w.start_group() {
                            Ok(id) => ledger.start_group(id, now),
                            Err(e) => return Published { objects: written, window_objects, error: Some(format!("start group: {e}")) },
                        }
                    }
                    if let Err(e) = w.write(headers.clone(), payload.clone()) {
                        return Published { objects: written, window_objects, error: Some(format!("write: {e}")) };
                    }
                    ledger.object(payload.len());
                    written += 1;
                    if in_window {
                        window_objects += 1;
                    }
                }
                frame += 1;
            }
        }
    };
    client.close().await;
    Published {
        objects: written,
        window_objects,
        error,
    }
}

/// The relay's UDP address, from the URL.
fn relay_addr(url: &Url) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let host = url.host_str().context("relay URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// A connected idle session: its endpoint, and the task driving it.
type IdleConn = (Client, tokio::task::JoinHandle<()>);

/// Connects `--idle-sessions` sessions (each its own QUIC endpoint, like real viewers), keeps
/// them running with nothing to do, and reads the relay's memory before and after.
async fn open_idle(opts: &Options) -> (Idle, Vec<IdleConn>) {
    let rss = || {
        opts.relay_pid
            .and_then(|pid| procfs::memory_mb(Pid::Other(pid)))
            .map(|(rss, _)| rss)
    };
    let mut idle = Idle {
        requested: opts.idle_sessions,
        relay_rss_before_mb: rss(),
        ..Idle::default()
    };
    let results: Vec<anyhow::Result<IdleConn>> = futures::stream::iter(0..opts.idle_sessions)
        .map(|_| async {
            let client = Client::new(&opts.tls)?;
            let conn = client.connect(&opts.url).await?;
            let task = tokio::spawn(async move {
                // Keep every half alive with the session.
                let (_publisher, _subscriber, _quic) = (conn.publisher, conn.subscriber, conn.quic);
                let _ = conn.session.run().await;
            });
            Ok((client, task))
        })
        .buffer_unordered(opts.connect_concurrency.max(1))
        .collect()
        .await;
    let mut conns = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                idle.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    idle.connected = conns.len();
    tokio::time::sleep(IDLE_SETTLE).await;
    idle.relay_rss_after_mb = rss();
    (idle, conns)
}

struct SubscriberPlan {
    broadcast: String,
    /// (ledger index, track name)
    tracks: Vec<(usize, String)>,
    start_at: Instant,
}

async fn subscriber(
    client: Client,
    url: Url,
    slow: bool,
    plan: SubscriberPlan,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberResult {
    let failed = |error: String, shared: &Shared| SubscriberResult {
        slow,
        connect_us: None,
        error: Some(error),
        // Count its tracks as expected-but-missed from now on.
        tracks: plan
            .tracks
            .iter()
            .map(|(i, _)| TrackStats::new(*i, unix_micros(), shared.ledgers[*i].current_group()))
            .collect(),
    };
    let connect = async {
        tokio::time::sleep_until(plan.start_at).await;
        let _permit = permits.acquire().await.expect("never closed");
        let t0 = Instant::now();
        client.connect(&url).await.map(|c| (c, t0.elapsed()))
    };
    let (conn, connect_time) = tokio::select! {
        res = connect => match res {
            Ok(c) => c,
            Err(e) => return failed(e.to_string(), &shared),
        },
        _ = stop.wait_for(|s| *s) => return failed("stopped before connecting".into(), &shared),
    };

    let mut stats = Vec::with_capacity(plan.tracks.len());
    let mut subs = Vec::with_capacity(plan.tracks.len());
    for (index, name) in &plan.tracks {
        let after = shared.ledgers[*index].current_group();
        stats.push(TrackStats::new(*index, unix_micros(), after));
        subs.push(TrackSubscription::new(
            &conn.subscriber,
            &plan.broadcast,
            name,
        ));
    }
    let readers = join_all(
        stats
            .iter_mut()
            .zip(subs)
            .map(|(st, (sub, driver))| read_track(st, sub, driver, &shared, slow, stop.clone())),
    );
    let session = conn.session.run();
    let error = tokio::select! {
        res = session => Some(format!("session ended: {res:?}")),
        () = async { readers.await; } => None,
    };
    SubscriberResult {
        slow,
        connect_us: Some(connect_time.as_micros() as u64),
        error,
        tracks: stats,
    }
}

async fn read_track(
    st: &mut TrackStats,
    mut sub: TrackSubscription,
    driver: impl std::future::Future<Output = Result<(), moqcast_media::moq::serve::ServeError>>,
    shared: &Shared,
    slow: bool,
    mut stop: watch::Receiver<bool>,
) {
    let latency = if slow {
        &shared.slow_latency
    } else {
        &shared.latency
    };
    tokio::pin!(driver);
    let mut driving = true;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            res = &mut driver, if driving => {
                driving = false;
                if let Err(e) = res {
                    st.error = Some(format!("subscription: {e}"));
                    return;
                }
            }
            next = sub.next() => match next {
                Ok(Some(obj)) => {
                    let now = unix_micros();
                    let send = LocProperties::from_extension_headers(&obj.properties)
                        .ok()
                        .and_then(|p| p.send_time_us);
                    st.on_object(obj.group_id, obj.payload.len(), send, now, &shared.window, latency);
                    if shared.trace {
                        st.trace.push(TraceRow { group: obj.group_id, send_us: send, recv_us: now });
                    }
                    // The drain waits for the others; a slow link may trickle on for long.
                    if !slow {
                        shared.last_object_us.store(now, Ordering::Relaxed);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    st.error = Some(format!("track: {e}"));
                    return;
                }
            },
        }
    }
}

/// The relay's metrics at `start` and `end`, and the largest cache size sampled in between.
async fn sample_metrics(url: Url, start: Instant, end: Instant) -> RelayMetrics {
    tokio::time::sleep_until(start).await;
    let mut out = RelayMetrics {
        start: scrape::scrape(&url).await.unwrap_or_default(),
        ..RelayMetrics::default()
    };
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut last = Samples::default();
    while Instant::now() < end {
        if let Some(s) = scrape::scrape(&url).await {
            if let Some(&c) = s.get("moqcast_cache_bytes") {
                out.cache_bytes_max = Some(out.cache_bytes_max.map_or(c, |m: f64| m.max(c)));
            }
            last = s;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(end) => {}
        }
    }
    out.end = scrape::scrape(&url).await.unwrap_or(last);
    out
}

/// The host's steal time over `[start, end]` and its worst whole second.
async fn sample_host(start: Instant, end: Instant) -> HostSteal {
    const SECOND: Duration = Duration::from_secs(1);
    tokio::time::sleep_until(start).await;
    let first = procfs::host_cpu();
    let (mut prev, mut worst) = (first, None::<f64>);
    let mut next = start + SECOND;
    while next <= end {
        tokio::time::sleep_until(next).await;
        let now = procfs::host_cpu();
        if let Some(p) = now.zip(prev).and_then(|(n, p)| n.steal_percent_since(p)) {
            worst = Some(worst.map_or(p, |w| w.max(p)));
        }
        prev = now;
        next += SECOND;
    }
    tokio::time::sleep_until(end).await;
    HostSteal {
        percent: procfs::host_cpu()
            .zip(first)
            .and_then(|(n, f)| n.steal_percent_since(f)),
        worst_second_percent: worst,
    }
}

/// CPU seconds over `[start, end]`, and memory sampled in between.
async fn sample(pid: Pid, start: Instant, end: Instant) -> Usage {
    tokio::time::sleep_until(start).await;
    let cpu0 = procfs::cpu_seconds(pid);
    let mut rss_max: Option<f64> = None;
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    while Instant::now() < end {
        if let Some((rss, _)) = procfs::memory_mb(pid) {
            rss_max = Some(rss_max.map_or(rss, |m| m.max(rss)));
        }
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(end) => {}
        }
    }
    let cpu1 = procfs::cpu_seconds(pid);
    Usage {
        cpu_seconds: cpu0.zip(cpu1).map(|(a, b)| b - a),
        rss_max_mb: rss_max,
        peak_rss_mb: procfs::memory_mb(pid).map(|(_, hwm)| hwm),
    }
}

//! moqcast relay: accepts MoQ (draft-18) sessions over raw QUIC (`moqt-18`) and WebTransport
//! (`h3`) on one UDP port, registers announced broadcasts, and fans each track out from one
//! upstream subscription through a bounded per-track group cache.
//!
//! Data flow (see docs/relay.md): session -> broadcast (namespace) -> track -> group -> object
//! -> per-subscriber pump -> subscriber's stream.

pub mod auth;
pub mod budget;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod h3;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod push;
pub mod rtmp;
pub mod session;
pub mod shard;
pub mod srt;
pub mod tls;
pub mod track;
pub mod udp;
pub mod whip;
pub mod writer;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use moqcast_media::moq;
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config};

/// Shared state of a running relay.
pub struct RelayState {
    pub config: Config,
    pub origin: origin::Origin,
    pub metrics: Arc<metrics::Metrics>,
    /// The certificate every TLS listener serves now (reloaded live).
    pub tls: Arc<tls::CertStore>,
    /// Admitted sessions, from the QUIC handshake until the session ends (`--max-sessions`).
    pub sessions: Arc<limits::Slots>,
    /// With `--runtime sharded`: the shards' load and where new connections go.
    pub placement: Option<Arc<shard::Placement>>,
    /// Keys and public prefixes: what each session may publish and watch.
    pub auth: auth::Auth,
    /// Connections per source address (`--max-sessions-per-ip`).
    pub per_address: Arc<limits::PerAddress>,
    /// QUIC handshakes in progress; past `--retry-above`, unvalidated peers get a Retry.
    pub handshakes: Arc<limits::Slots>,
    /// Open MoQ sessions by id, for the GOAWAY of a drain.
    pub live: std::sync::Mutex<std::collections::HashMap<u64, moqcast_session::io::Session>>,
    /// Set once the relay drains (SIGTERM): new sessions get GOAWAY at once.
    pub draining: std::sync::atomic::AtomicBool,
    /// Broadcasts pushed over RTMP/RTMPS and SRT, and who holds them (`--rtmp-bind`,
    /// `--rtmps-bind`, `--srt-bind`).
    pub ingests: Arc<push::Ingests>,
    /// The relay's part in a cluster (`--cluster-registry`).
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// The WHIP ingest, with `--webrtc-addr`.
    pub whip: Option<Arc<whip::Whip>>,
    next_session: AtomicU64,
}

impl RelayState {
    /// A new session id (sessions, cluster links).
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Hex SHA-256 of the certificate served now.
    pub fn fingerprint(&self) -> String {
        self.tls.fingerprint_hex()
    }
}

/// A bound relay, ready to run.
pub struct Relay {
    state: Arc<RelayState>,
    quic: Quic,
    quic_addr: SocketAddr,
    http: tokio::net::TcpListener,
    /// The public HTTPS listener, with `--https-bind`.
    https: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    /// The push ingests' listeners: `--rtmp-bind`, `--rtmps-bind`, `--srt-bind`.
    rtmp: Option<rtmp::Listener>,
    rtmps: Option<rtmp::Listener>,
    srt: Option<srt::Listener>,
    /// The WHIP ingest's media engine, with `--webrtc-addr`.
    whip: Option<whip::engine::Engine>,
}

/// The relay's QUIC side, by `--runtime`.
enum Quic {
    /// One endpoint on the caller's (multi-threaded) runtime.
    Shared(quinn::Endpoint),
    /// One socket per shard, each made an endpoint on its shard's thread ([`shard`]).
    Sharded {
        sockets: Vec<std::net::UdpSocket>,
        server: quinn::ServerConfig,
        placement: Arc<shard::Placement>,
        reset_key: Arc<dyn quinn::crypto::HmacKey>,
    },
}

/// How long a peer asked to acknowledge less often may wait before it does
/// (`--ack-every`): longer than a 60 fps frame interval, so that one acknowledgement covers two
/// frames; quinn caps it at the larger of 25 ms and the path's RTT.
const ACK_DELAY: Duration = Duration::from_millis(25);

/// QUIC transport settings of the connections the relay accepts.
fn server_transport(config: &Config) -> quinn::TransportConfig {
    let mut transport = moq::transport_config();
    transport.max_concurrent_uni_streams(config.max_streams.into());
    // Request flow control (draft-18 §3.3: a request is a bidirectional stream): the peer may
    // open the request limit's worth, plus room for requests refused with EXCESSIVE_LOAD.
    let requests = moqcast_session::Config {
        max_requests: config.max_requests_per_session,
        ..Default::default()
    };
    // It starts small (quinn keeps state for every stream it allows) and the session layer
    // raises it as the peer's requests grow.
    transport.max_concurrent_bidi_streams(
        quinn::VarInt::from_u64(requests.initial_stream_credit).unwrap_or(quinn::VarInt::MAX),
    );
    match config.congestion {
        config::Congestion::Cubic => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        config::Congestion::Bbr => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
    };
    // Every acknowledgement is a datagram the relay receives, decrypts and hands to the
    // connection's task: with QUIC's default (one per 2 packets) they were the largest part
    // of its receive work. Gaps are still acknowledged at once (reordering threshold 1, as
    // without the extension), so loss is detected as fast as before.
    if config.ack_every > 2 {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(quinn::VarInt::from_u32(config.ack_every - 1))
            .max_ack_delay(Some(ACK_DELAY))
            .reordering_threshold(quinn::VarInt::from_u32(1));
        transport.ack_frequency_config(Some(ack));
    }
    transport
}

impl Relay {
    /// Binds the UDP and TCP sockets and prepares TLS.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let store = tls::CertStore::new((&config.tls).into())?;
        // Every handshake (every shard's, HTTPS's) asks the store for the certificate, so a
        // reloaded one reaches them all at once.
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(store.quic_server_config()?)
            .context("QUIC TLS configuration")?;
        // Stateless resets signed with a key derived from the TLS key: after a restart with the
        // same key, the relay's reset of an old connection is recognised by its client at its
        // next packet, which then reconnects at once instead of after its idle timeout. (The
        // key of the certificate the relay started with, also after a reload.)
        let reset_key = store.current().identity.reset_key();
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(server_transport(&config)));
        let sharded = match config.runtime {
            config::RuntimeMode::Sharded => match bind_shards(&config) {
                Ok(shards) => Some(shards),
                // Kernels or sandboxes without SO_REUSEPORT steering: one socket still serves.
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "no shards: serving QUIC from one socket on this thread (as --runtime shared, single-threaded)");
                    None
                }
            },
            config::RuntimeMode::Shared => None,
        };
        let (quic, buffers) = match sharded {
            Some((sockets, placement, buffers)) => (
                Quic::Sharded {
                    sockets,
                    server,
                    placement,
                    reset_key,
                },
                buffers,
            ),
            None => {
                let (socket, buffers) = udp::bind(config.bind, config.udp_buffer_bytes)
                    .with_context(|| format!("could not bind UDP {}", config.bind))?;
                let endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::new(reset_key),
                    Some(server),
                    socket,
                    quinn::default_runtime().context("no async runtime for QUIC")?,
                )
                .with_context(|| format!("could not serve QUIC on UDP {}", config.bind))?;
                (Quic::Shared(endpoint), buffers)
            }
        };
        if config.udp_buffer_bytes > 0 && !udp::granted(buffers.recv, config.udp_buffer_bytes) {
            tracing::warn!(
                asked = config.udp_buffer_bytes,
                got = buffers.recv,
                "UDP receive buffer smaller than asked: raise net.core.rmem_max, or give the \
                 relay CAP_NET_ADMIN"
            );
        }
        let quic_addr = match &quic {
            Quic::Shared(endpoint) => endpoint.local_addr(),
            Quic::Sharded { sockets, .. } => sockets[0].local_addr(),
        }
        .context("QUIC socket address")?;
        tracing::debug!(
            recv = buffers.recv,
            send = buffers.send,
            %quic_addr,
            "UDP socket buffers"
        );
        // With port 0 the system picked one: record it, so the HTTP side can tell viewers.
        let mut config = config;
        config.bind.set_port(quic_addr.port());
        let http = tokio::net::TcpListener::bind(config.http_bind)
            .await
            .with_context(|| format!("could not bind TCP {}", config.http_bind))?;
        let https = match config.https_bind {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("could not bind TCP {addr} (HTTPS)"))?;
                let acceptor =
                    tokio_rustls::TlsAcceptor::from(Arc::new(store.https_server_config()?));
                Some((listener, acceptor))
            }
            None => None,
        };
        let auth = auth::Auth::new(&config.auth).map_err(anyhow::Error::msg)?;
        let rtmp = match config.rtmp.as_ref().and_then(|c| c.bind) {
            Some(addr) => Some(rtmp::Listener::bind(addr, None).await?),
            None => None,
        };
        let rtmps = match config.rtmp.as_ref().and_then(|c| c.tls_bind) {
            Some(addr) => Some(rtmp::Listener::bind(addr, Some(rtmp::tls_config(&store)?)).await?),
            None => None,
        };
        let srt = match &config.srt {
            Some(c) => Some(srt::Listener::bind(c).await?),
            None => None,
        };
        let (whip, whip_engine) = match &config.whip {
            Some(c) => {
                let (handle, engine) = whip::Whip::bind(c.clone(), config.udp_buffer_bytes).await?;
                (Some(handle), Some(engine))
            }
            None => (None, None),
        };
        let keys = push::keys::Keys::new(match &config.ingest_keys {
            Some(path) => Some(push::keys::KeyFile::open(path)?),
            None => None,
        });
        let ingests = push::Ingests::new(
            keys,
            config
                .rtmp
                .as_ref()
                .map_or(rtmp::RtmpConfig::DEFAULT_RESUME, |c| c.resume),
            config
                .srt
                .as_ref()
                .map_or(rtmp::RtmpConfig::DEFAULT_RESUME, |c| c.resume),
        );
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(
                cluster::Cluster::new(c.clone()).map_err(anyhow::Error::from)?,
            )),
            None => None,
        };
        let metrics = Arc::new(metrics::Metrics::default());
        let budget = track::CacheBudget::new(config.cache_total_bytes, metrics.clone());
        let state = Arc::new(RelayState {
            origin: origin::Origin::new(config.cache, budget, metrics.clone()),
            metrics,
            tls: store,
            sessions: limits::Slots::new(config.max_sessions),
            placement: match &quic {
                Quic::Shared(_) => None,
                Quic::Sharded { placement, .. } => Some(placement.clone()),
            },
            per_address: limits::PerAddress::new(config.max_sessions_per_ip),
            handshakes: limits::Slots::new(usize::MAX),
            live: Default::default(),
            draining: Default::default(),
            ingests,
            cluster,
            whip,
            config,
            auth,
            next_session: AtomicU64::new(1),
        });
        if let Some(c) = &state.cluster {
            c.attach(&state);
        }
        Ok(Self {
            state,
            quic,
            quic_addr,
            http,
            https,
            rtmp,
            rtmps,
            srt,
            whip: whip_engine,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    /// The HTTPS listener's address, with `--https-bind`.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The RTMP ingest's address, with `--rtmp-bind`.
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The RTMPS ingest's address, with `--rtmps-bind`.
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.rtmps.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The SRT ingest's address, with `--srt-bind`.
    pub fn srt_addr(&self) -> Option<SocketAddr> {
        self.srt.as_ref().map(srt::Listener::local_addr)
    }

    /// The WHIP ingest's WebRTC (UDP) address, with `--webrtc-addr`.
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.state.whip.as_ref().map(|w| w.local)
    }

    pub fn state(&self) -> Arc<RelayState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves (or a shard fails), then stops accepting, closes
    /// sessions (code 0 "relay shutting down") and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Relay {
            state,
            quic,
            http,
            https,
            rtmp,
            rtmps,
            srt,
            whip,
            ..
        } = self;
        let cancel = CancellationToken::default();
        // One connection cap for the TCP listeners together.
        let slots = Arc::new(tokio::sync::Semaphore::new(
            state.config.max_http_connections,
        ));
        // The TCP listeners advertise HTTP/3 on the QUIC port.
        let quic_port = state.config.bind.port();
        let http_task = {
            let app = http::with_alt_svc(http::router(state.clone()), quic_port);
            tokio::spawn(http::serve(
                http,
                app,
                state.clone(),
                None,
                slots.clone(),
                cancel.clone(),
            ))
        };
        let https_task = https.map(|(listener, acceptor)| {
            let app = http::with_alt_svc(http::public_router(state.clone()), quic_port);
            tokio::spawn(http::serve(
                listener,
                app,
                state.clone(),
                Some(acceptor),
                slots.clone(),
                cancel.clone(),
            ))
        });
        let _watch = OwnedTask(tokio::spawn(
            state
                .tls
                .clone()
                .watch(tls::RELOAD_INTERVAL, cancel.clone()),
        ));
        let _cluster = state
            .cluster
            .clone()
            .map(|c| OwnedTask(tokio::spawn(c.run())));
        let mut ingest_tasks = Vec::new();
        if let Some(config) = &state.config.rtmp {
            for listener in [rtmp, rtmps].into_iter().flatten() {
                ingest_tasks.push(tokio::spawn(listener.serve(
                    state.clone(),
                    config.clone(),
                    cancel.clone(),
                )));
            }
        }
        if let (Some(engine), Some(handle)) = (whip, state.whip.clone()) {
            ingest_tasks.push(tokio::spawn(engine.run(
                state.clone(),
                handle,
                cancel.clone(),
            )));
        }
        if let (Some(listener), Some(config)) = (srt, state.config.srt.clone()) {
            ingest_tasks.push(tokio::spawn(listener.serve(
                state.clone(),
                config,
                cancel.clone(),
            )));
        }
        // On shutdown, drain first: GOAWAY to every session, then wait (at most `--drain-ms`)
        // for them to leave; what remains is closed.
        let shutdown = {
            let state = state.clone();
            async move {
                shutdown.await;
                drain(&state).await;
            }
        };
        let res = match quic {
            Quic::Shared(endpoint) => {
                serve(state, endpoint, shutdown).await;
                Ok(())
            }
            Quic::Sharded {
                sockets,
                server,
                placement,
                reset_key,
            } => {
                let shards = sockets.len();
                let stop = CancellationToken::default();
                let (done_tx, mut done) = tokio::sync::mpsc::channel(shards);
                let hooks = placement.clone();
                let serve_shard = {
                    let stop = stop.clone();
                    move |i: usize, socket: std::net::UdpSocket| {
                        let (state, server, stop) = (state.clone(), server.clone(), stop.clone());
                        let reset_key = reset_key.clone();
                        let placement = placement.clone();
                        async move {
                            placement.register(i);
                            // Shard 0 measures every shard (one timer wake-up for all).
                            let _measure =
                                (i == 0).then(|| OwnedTask(tokio::spawn(placement.measure())));
                            let endpoint = quinn::Endpoint::new(
                                shard::endpoint_config(i, shards, reset_key),
                                Some(server),
                                socket,
                                Arc::new(quinn::TokioRuntime),
                            )
                            .context("could not serve QUIC")?;
                            let span = tracing::info_span!("shard", shard = i);
                            tracing::Instrument::instrument(
                                serve(state, endpoint, stop.cancelled()),
                                span,
                            )
                            .await;
                            Ok(())
                        }
                    }
                };
                shard::spawn(sockets, &hooks, serve_shard, done_tx)
                    .context("could not start the shard threads")?;
                let mut res = Ok(());
                tokio::select! {
                    () = shutdown => {}
                    Some((i, r)) = done.recv() => {
                        // A shard that ends on its own failed: stop the others too.
                        res = r.with_context(|| format!("shard {i} stopped"));
                    }
                }
                stop.cancel();
                while done.recv().await.is_some() {}
                res
            }
        };
        cancel.cancel();
        let _ = http_task.await;
        if let Some(task) = https_task {
            let _ = task.await;
        }
        for task in ingest_tasks {
            let _ = task.await;
        }
        res
    }
}

/// Binds one socket per shard on `config.bind` and attaches the steering program: without it
/// a client whose address changes would lose its connection, so there are no shards without it.
fn bind_shards(
    config: &Config,
) -> anyhow::Result<(
    Vec<std::net::UdpSocket>,
    Arc<shard::Placement>,
    udp::Buffers,
)> {
    let shards = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(shard::MAX_SHARDS);
    let (sockets, buffers) = udp::bind_group(config.bind, config.udp_buffer_bytes, shards)
        .with_context(|| format!("could not bind UDP {}", config.bind))?;
    let placement = shard::Placement::new(&sockets[0], shards, config.coalesce_above)
        .context("could not attach the shard steering program (SO_ATTACH_REUSEPORT_CBPF)")?;
    Ok((sockets, placement, buffers))
}

/// Sends GOAWAY to every session and waits until they have all left, at most `--drain-ms`.
async fn drain(state: &RelayState) {
    let limit = state.config.drain;
    state.draining.store(true, Ordering::Release);
    let sessions: Vec<_> = state
        .live
        .lock()
        .expect("poisoned")
        .values()
        .cloned()
        .collect();
    if limit.is_zero() || sessions.is_empty() {
        return;
    }
    tracing::info!(
        sessions = sessions.len(),
        drain_ms = limit.as_millis() as u64,
        "draining: GOAWAY to every session"
    );
    for s in &sessions {
        s.goaway("", Some(limit));
    }
    drop(sessions);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if state.live.lock().expect("poisoned").is_empty() {
            tracing::info!("drained: every session left");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = state.live.lock().expect("poisoned").len();
    tracing::info!(
        sessions = left,
        "drain time over: closing the sessions left"
    );
}

/// Accepts and serves sessions on `endpoint` until `shutdown` resolves, then closes them all.
async fn serve(
    state: Arc<RelayState>,
    endpoint: quinn::Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // Connections still in their handshake hold a slot too, so a burst of new
                // connections cannot overshoot the limit.
                // Address validation (QUIC Retry) once handshakes pile up: a spoofed source
                // cannot answer it, so it costs the relay one stateless packet, not a connection.
                if !incoming.remote_address_validated()
                    && state.handshakes.in_use() >= state.config.retry_above
                {
                    state.metrics.quic_retries.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().ignore();
                    }
                    continue;
                }
                let peer = incoming.remote_address();
                let Some(per_address) = state.per_address.try_acquire(peer.ip()) else {
                    state.metrics.sessions_rejected_per_address.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, limit = state.config.max_sessions_per_ip, "per-address session limit reached: refusing connection");
                    incoming.refuse();
                    continue;
                };
                // Handshakes are counted, not capped (the session limit caps).
                let handshake = state
                    .handshakes
                    .try_acquire()
                    .expect("handshake slots are unbounded");
                let Some(slot) = state.sessions.try_acquire() else {
                    state.metrics.sessions_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, limit = state.config.max_sessions, "session limit reached: refusing connection");
                    incoming.refuse();
                    continue;
                };
                // The first packet is decrypted here, before a task or a log line is spent on
                // it: garbage shaped as an Initial (20,000 a second in the hostile suite) ends
                // with a counter, not a session that fails (a task, a span, an info line each).
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        state.metrics.quic_initials_dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "first packet of a connection dropped");
                        continue;
                    }
                };
                let state = state.clone();
                sessions.spawn(async move {
                    accept(state, connecting, peer, handshake).await;
                    drop((slot, per_address));
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: closing sessions");
    endpoint.close(0u32.into(), b"relay shutting down");
    sessions.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn accept(
    state: Arc<RelayState>,
    connecting: quinn::Connecting,
    peer: SocketAddr,
    handshake: limits::Slot,
) {
    let id = state.next_session_id();
    let span = tracing::info_span!("session", id, %peer);
    let _enter = span.clone();
    let _placed = state
        .placement
        .as_ref()
        .zip(shard::current())
        .map(|(p, shard)| p.session(shard));
    let res = tracing::Instrument::instrument(
        handshake_and_run(state.clone(), connecting, id, handshake),
        span,
    )
    .await;
    if let Err(e) = res {
        state.metrics.session_errors.fetch_add(1, Ordering::Relaxed);
        tracing::info!(id, %peer, error = format!("{e:#}"), "session ended with an error");
    }
}

async fn handshake_and_run(
    state: Arc<RelayState>,
    connecting: quinn::Connecting,
    id: u64,
    handshake: limits::Slot,
) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .context("QUIC handshake timed out")?
        .context("QUIC handshake failed")?;
    drop(handshake);
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .context("peer negotiated no ALPN")?;
    // The HTTP/3 server of an `h3` connection, kept while its WebTransport session lives.
    let mut _h3 = None;
    let (wt, transport, grant) = if alpn == moq::WEBTRANSPORT_ALPN.as_bytes() {
        // HTTP/3: a WebTransport CONNECT, or ordinary requests (relay/src/h3.rs).
        let first = tokio::time::timeout(Duration::from_secs(10), h3::accept(conn.clone()))
            .await
            .context("HTTP/3 request timed out")?
            .context("HTTP/3 request failed")?;
        let request = match first {
            h3::First::WebTransport { request, server } => {
                _h3 = Some(server);
                *request
            }
            h3::First::Http3(server) => {
                // Ordinary HTTP/3 requests. The connection counts against --max-sessions
                // like any QUIC connection until it closes.
                h3::serve(
                    server,
                    http::public_router(state.clone()),
                    state.metrics.clone(),
                    state.config.http_header_timeout,
                )
                .await;
                return Ok(());
            }
        };
        // draft-18 §3.1.3: the client offers MoQT versions in WT-Available-Protocols; the
        // session layer picks the first it speaks. A client that offers none (older browsers'
        // libraries) gets our preferred version.
        let chosen = request
            .protocols
            .iter()
            .find_map(|p| moqcast_session::Version::from_alpn(p));
        if !request.protocols.is_empty() && chosen.is_none() {
            let offered = request.protocols.join(",");
            let _ = request
                .reject(web_transport_quinn::http::StatusCode::NOT_ACCEPTABLE)
                .await;
            let ours: Vec<_> = moqcast_session::Version::ALL
                .iter()
                .map(|v| v.alpn())
                .collect();
            anyhow::bail!("WebTransport client offered no supported MoQT version (offered {offered}, we speak {})", ours.join(","));
        }
        // The token: `?jwt=` on the URL (moq-dev's clients, browsers), or `Authorization:
        // Bearer`. It is checked before the session is accepted: a refused one gets 401/403.
        let token = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "jwt")
            .map(|(_, v)| v.into_owned())
            .or_else(|| {
                request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            });
        let path = request.url.path().to_string();
        let grant = match state.auth.session(&path, token.as_deref()) {
            Ok(grant) => grant,
            Err(e) => {
                state.metrics.auth_refused.fetch_add(1, Ordering::Relaxed);
                let status = web_transport_quinn::http::StatusCode::from_u16(e.http_status())
                    .expect("valid status");
                let _ = request.reject(status).await;
                // Let the response reach the client before the connection goes (it closes
                // when it has read it); bounded, so refused peers cannot hold the slot long.
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
                anyhow::bail!("session refused ({path}): {e}");
            }
        };
        let mut response = web_transport_quinn::proto::ConnectResponse::OK;
        if let Some(version) = chosen {
            response = response.with_protocol(version.alpn().to_string());
        }
        let session = request
            .respond(response)
            .await
            .context("WebTransport response")?;
        (session, "webtransport", Some(grant))
    } else if std::str::from_utf8(&alpn)
        .ok()
        .and_then(moqcast_session::Version::from_alpn)
        .is_some()
    {
        let url = url::Url::parse("moqt://relay/").expect("valid");
        let session = web_transport_quinn::Session::raw(
            conn.clone(),
            url,
            web_transport_quinn::proto::ConnectResponse::default(),
        );
        (session, "raw-quic", None)
    } else {
        anyhow::bail!("unsupported ALPN {:?}", String::from_utf8_lossy(&alpn));
    };
    state.metrics.sessions.fetch_add(1, Ordering::Relaxed);
    state.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(transport, "session accepted");
    let res = session::run(state.clone(), wt, conn.clone(), id, grant).await;
    state.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
    // A peer that closed its connection with code 0 (or timed out idle after leaving) ended the
    // session normally: that is not an error, whatever the session loop reports. A session the
    // relay closed for a protocol violation is one.
    let violation = res.as_ref().is_err_and(|e| {
        matches!(
            e.downcast_ref::<moqcast_session::io::Error>(),
            Some(moqcast_session::io::Error::Violation { .. })
        )
    });
    let normal = !violation
        && (matches!(
            conn.close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(ref c)) if c.error_code == quinn::VarInt::from_u32(0)
        ) || matches!(
            conn.close_reason(),
            Some(quinn::ConnectionError::LocallyClosed)
        ));
    if normal {
        tracing::debug!(result = ?res.as_ref().err().map(|e| format!("{e:#}")), "session closed by the peer");
        return Ok(());
    }
    res
}

/// A spawned task that is aborted when its owner drops this handle.
pub(crate) struct OwnedTask<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! RTMP ingest (`--rtmp-bind`), and RTMPS (`--rtmps-bind`: the same over TLS with the relay's
//! certificate): OBS, FFmpeg and hardware encoders publish straight into the relay's origin,
//! with no other hop.
//!
//! One task per TCP connection ([`connection`]) runs the TLS handshake (RTMPS), then the RTMP
//! handshake and chunk stream with `rml_rtmp` (sans-IO: bytes in, packets and events out),
//! accepts `connect` on the app `live` and `publish` with a stream key that
//! [`crate::push::keys`] turns into a broadcast name (or refuses), and hands the FLV audio/video
//! message bodies to [`moqcast_media::flv::Repackager`], whose configurations and frames the
//! shared push-ingest core ([`crate::push`]) writes into the origin's track caches.
//!
//! Bounds: at most `--rtmp-max-connections` connections per listener (more are closed at
//! once), one read buffer of [`READ_CHUNK`] bytes each, no queue between the socket and the
//! caches (a frame is cached before the next read), and a connection that sends nothing for
//! `--rtmp-timeout-ms` (TLS and RTMP handshakes included) is closed. A connection's malformed
//! input ends that connection only. The listener owns the connection tasks: they end when it
//! does.

use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use moqcast_media::flv::{Event, FlvError, Repackager};
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    push::{self, Protocol},
    RelayState,
};

/// The RTMP application publishers connect to: `rtmp://HOST:1935/live`.
pub const APP: &str = "live";

/// Most bytes read from a connection at once.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of the RTMP listener.
#[derive(Debug, Clone)]
pub struct RtmpConfig {
    /// `--rtmp-bind` (none with only `--rtmps-bind`).
    pub bind: Option<SocketAddr>,
    /// `--rtmps-bind`: RTMP over TLS with the relay's certificate.
    pub tls_bind: Option<SocketAddr>,
    /// A connection silent this long is closed.
    pub timeout: Duration,
    /// How long a broadcast waits for its publisher to reconnect.
    pub resume: Duration,
    pub max_connections: usize,
}

impl RtmpConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RESUME: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
}

/// Why a connection ended other than by its publisher finishing.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("silent for {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The RTMPS client's TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP session: {0}")]
    Session(String),
    /// Refused with a reason (logged and counted where it happens).
    #[error("refused: {0}")]
    Refused(String),
}

/// A bound RTMP (or RTMPS) listener.
pub struct Listener {
    listener: TcpListener,
    /// RTMPS: the TLS side of every connection.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// Binds the TCP socket; with `tls`, connections are RTMPS.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let what = if tls.is_some() { "RTMPS" } else { "RTMP" };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not bind {what} on TCP {addr}"))?;
        Ok(Self {
            listener,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until `cancel`; then the connections are aborted.
    pub async fn serve(
        self,
        state: Arc<RelayState>,
        config: RtmpConfig,
        cancel: CancellationToken,
    ) {
        let slots = crate::limits::Slots::new(config.max_connections);
        let mut connections = JoinSet::new();
        let tls = self.tls.clone();
        let scheme = if tls.is_some() { "rtmps" } else { "rtmp" };
        tracing::info!(
            addr = %self.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            app = APP,
            scheme,
            "RTMP ingest listening"
        );
        let counters = || Protocol::Rtmp.counters(&state.metrics);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "RTMP accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(slot) = slots.try_acquire() else {
                        counters().refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, scheme, limit = config.max_connections, reason = "connection_limit", "RTMP connection refused");
                        continue;
                    };
                    let id = state.ingests.connection_id();
                    let (state, config, tls) = (state.clone(), config.clone(), tls.clone());
                    let span = tracing::info_span!(
                        "rtmp",
                        id,
                        %peer,
                        scheme,
                        broadcast = tracing::field::Empty
                    );
                    connections.spawn(tracing::Instrument::instrument(
                        async move {
                            let counters = Protocol::Rtmp.counters(&state.metrics);
                            counters.connections.fetch_add(1, Ordering::Relaxed);
                            let _ = stream.set_nodelay(true);
                            let res = match tls {
                                None => connection(&state, &config, stream, id).await,
                                Some(tls) => match tokio::time::timeout(config.timeout, tls.accept(stream)).await {
                                    Ok(Ok(stream)) => connection(&state, &config, stream, id).await,
                                    Ok(Err(e)) => Err(ConnError::Tls(e)),
                                    Err(_) => Err(ConnError::Timeout(config.timeout)),
                                },
                            };
                            counters.connections.fetch_sub(1, Ordering::Relaxed);
                            match res {
                                Ok(()) => tracing::info!("RTMP publisher finished"),
                                Err(ConnError::Refused(_)) => {}
                                Err(ConnError::Timeout(t)) => {
                                    counters.timeouts.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(timeout_ms = t.as_millis() as u64, "RTMP publisher went silent: closed");
                                }
                                Err(e) => tracing::info!(error = %e, "RTMP connection ended"),
                            }
                            drop(slot);
                        },
                        span,
                    ));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = cancel.cancelled() => break,
            }
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// The RTMPS listener's TLS configuration: the relay's certificate, TLS 1.2 and 1.3 (encoders
/// are not all on 1.3), no ALPN.
pub fn tls_config(store: &Arc<crate::tls::CertStore>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The store answers every handshake with the current certificate, so RTMPS follows
    // certificate reloads like the QUIC and HTTPS sides.
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    Ok(Arc::new(config))
}

/// Runs a call into `rml_rtmp` on a connection's input. rml_rtmp 0.8.0 panics on some malformed
/// chunk streams (an arithmetic overflow in its chunk deserializer, found by
/// `fuzz/fuzz_targets/rtmp_session.rs`): the panic is caught here and ends that connection only,
/// with the session it left half-updated.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ConnError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| ConnError::Session("malformed RTMP input (the RTMP library panicked)".into()))
}

/// Reads what the peer sent next, at most `timeout` after asking.
async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, ConnError> {
    match tokio::time::timeout(timeout, stream.read(buf)).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(ConnError::Timeout(timeout)),
    }
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ConnError> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(ConnError::Timeout(timeout)),
    }
}

/// What a connection has become.
struct Publishing {
    claim: push::Claim,
    repackager: Repackager,
    malformed: u64,
}

/// Serves one RTMP connection until its publisher finishes, it fails, or it goes silent.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    state: &Arc<RelayState>,
    config: &RtmpConfig,
    mut stream: S,
    id: u64,
) -> Result<(), ConnError> {
    let mut buf = vec![0u8; READ_CHUNK];

    // Handshake (C0/C1/C2 in, S0/S1/S2 out).
    let mut handshake = Handshake::new(PeerType::Server);
    let rest = loop {
        let n = read(&mut stream, &mut buf, config.timeout).await?;
        if n == 0 {
            return Err(ConnError::Handshake("closed during the handshake".into()));
        }
        match guarded(|| handshake.process_bytes(&buf[..n]))?
            .map_err(|e| ConnError::Handshake(e.to_string()))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                write(&mut stream, &response_bytes, config.timeout).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                write(&mut stream, &response_bytes, config.timeout).await?;
                break remaining_bytes;
            }
        }
    };

    let (mut session, initial) = guarded(|| ServerSession::new(ServerSessionConfig::new()))?
        .map_err(|e| ConnError::Session(e.to_string()))?;
    let mut publishing: Option<Publishing> = None;
    let mut input = rest;
    let mut results = initial;
    loop {
        if !input.is_empty() {
            results.extend(
                guarded(|| session.handle_input(&input))?
                    .map_err(|e| ConnError::Session(e.to_string()))?,
            );
        }
        let mut out = Vec::new();
        let mut finished = false;
        // Events may produce more results (accepting a request): handled in order.
        let mut queue: std::collections::VecDeque<ServerSessionResult> =
            results.drain(..).collect();
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let (more, end) = handle_event(
                        state,
                        &mut session,
                        &mut publishing,
                        event,
                        id,
                        &mut finished,
                    );
                    // Responses to this event go before anything after it.
                    for r in more.into_iter().rev() {
                        queue.push_front(r);
                    }
                    if let Some(e) = end {
                        // Send the refusal before closing.
                        for r in queue.drain(..) {
                            if let ServerSessionResult::OutboundResponse(p) = r {
                                out.extend_from_slice(&p.bytes);
                            }
                        }
                        let _ = write(&mut stream, &out, config.timeout).await;
                        let _ = stream.shutdown().await;
                        return Err(e);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            write(&mut stream, &out, config.timeout).await?;
        }
        if finished {
            return Ok(());
        }
        let n = read(&mut stream, &mut buf, config.timeout).await?;
        if n == 0 {
            // The publisher closed its connection (OBS "Stop Streaming" does, after
            // deleteStream): the broadcast waits for it to come back.
            return Ok(());
        }
        input = buf[..n].to_vec();
    }
}

/// Reacts to one session event: the session's results of the reaction, and why the
/// connection ends, if it does.
fn handle_event(
    state: &Arc<RelayState>,
    session: &mut ServerSession,
    publishing: &mut Option<Publishing>,
    event: ServerSessionEvent,
    id: u64,
    finished: &mut bool,
) -> (Vec<ServerSessionResult>, Option<ConnError>) {
    let accept = |session: &mut ServerSession, request_id| match guarded(|| {
        session.accept_request(request_id)
    }) {
        Ok(Ok(results)) => (results, None),
        Ok(Err(e)) => (Vec::new(), Some(ConnError::Session(e.to_string()))),
        Err(e) => (Vec::new(), Some(e)),
    };
    match event {
        ServerSessionEvent::ConnectionRequested {
            request_id,
            app_name,
        } => {
            if app_name.trim_matches('/') == APP {
                return accept(session, request_id);
            }
            let reason =
                format!("unknown application {app_name:?} (publish to rtmp://HOST:PORT/{APP})");
            refuse(state, "unknown_app", &reason);
            let results = session
                .reject_request(request_id, "NetConnection.Connect.Rejected", &reason)
                .unwrap_or_default();
            (results, Some(ConnError::Refused(reason)))
        }
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            stream_key,
            ..
        } => {
            if publishing.is_some() {
                let reason = "a second publish on one connection".to_string();
                refuse(state, "second_publish", &reason);
                return (Vec::new(), Some(ConnError::Refused(reason)));
            }
            let claim = state
                .ingests
                .keys()
                .resolve(&stream_key, &state.auth)
                .map_err(|e| (e.reason(), e.to_string()))
                .and_then(|name| {
                    state
                        .ingests
                        .claim(state, &name, id, Protocol::Rtmp)
                        .map_err(|e| (e.reason(), e.to_string()))
                });
            match claim {
                Ok(claim) => {
                    let name = claim.live.lock().expect("poisoned").name.clone();
                    tracing::Span::current().record("broadcast", name.as_str());
                    if claim.resumed {
                        tracing::info!(broadcast = %name, "RTMP publisher reconnected: broadcast resumed");
                    } else {
                        tracing::info!(broadcast = %name, "RTMP publisher accepted");
                    }
                    *publishing = Some(Publishing {
                        claim,
                        repackager: Repackager::new(),
                        malformed: 0,
                    });
                    accept(session, request_id)
                }
                Err((label, reason)) => {
                    refuse(state, label, &reason);
                    let results = session
                        .reject_request(request_id, "NetStream.Publish.BadName", &reason)
                        .unwrap_or_default();
                    (results, Some(ConnError::Refused(reason)))
                }
            }
        }
        ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
            if let (Some(p), Some(fps)) = (publishing.as_mut(), metadata.video_frame_rate) {
                p.repackager.set_framerate_hint(f64::from(fps));
            }
            (Vec::new(), None)
        }
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => match publishing.as_mut() {
            Some(p) => {
                let res = p.repackager.video(timestamp.value, &data);
                (Vec::new(), media(state, p, res).err())
            }
            None => (Vec::new(), None),
        },
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => match publishing.as_mut() {
            Some(p) => {
                let res = p.repackager.audio(timestamp.value, &data);
                (Vec::new(), media(state, p, res).err())
            }
            None => (Vec::new(), None),
        },
        ServerSessionEvent::PublishStreamFinished { .. } => {
            *finished = true;
            (Vec::new(), None)
        }
        ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
            let reason = "this relay plays over MoQ, not RTMP (open /watch/BROADCAST)".to_string();
            refuse(state, "play", &reason);
            let results = session
                .reject_request(request_id, "NetStream.Play.Failed", &reason)
                .unwrap_or_default();
            (results, Some(ConnError::Refused(reason)))
        }
        _ => (Vec::new(), None),
    }
}

/// Counts and logs a refusal.
fn refuse(state: &RelayState, label: &'static str, reason: &str) {
    push::refused(&state.metrics, Protocol::Rtmp, label, reason);
}

/// Most malformed media messages a connection may send before it is closed.
const MAX_MALFORMED: u64 = 100;

/// Writes what the repackager made of one media message.
fn media(
    state: &Arc<RelayState>,
    p: &mut Publishing,
    res: Result<Option<Event>, FlvError>,
) -> Result<(), ConnError> {
    let event = match res {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(()),
        Err(FlvError::Unsupported(what)) => {
            let reason = format!("unsupported {what}: publish H.264 video with AAC or Opus audio");
            refuse(state, "unsupported_codec", &reason);
            return Err(ConnError::Refused(reason));
        }
        Err(e) => {
            p.malformed += 1;
            state.metrics.errors.fetch_add(1, Ordering::Relaxed);
            if p.malformed == 1 {
                tracing::warn!(error = %e, "malformed RTMP media message dropped");
            }
            if p.malformed > MAX_MALFORMED {
                return Err(ConnError::Session(format!(
                    "{MAX_MALFORMED} malformed media messages (last: {e})"
                )));
            }
            return Ok(());
        }
    };
    p.claim.apply(state, event, tokio::time::Instant::now());
    Ok(())
}

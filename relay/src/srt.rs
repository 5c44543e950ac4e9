//! SRT ingest (`--srt-bind`): OBS, FFmpeg, vMix and hardware encoders push MPEG-TS over SRT
//! (`srt://HOST:9000?streamid=KEY`) straight into the relay's origin, with no other hop.
//!
//! `srt-tokio` runs the SRT listener (handshakes, ARQ, the receive latency window). Each
//! connection request carries a `streamid`, which [`stream_key`] reads (a plain key, or the SRT
//! access control syntax `#!::r=NAME,m=publish`) and [`crate::push::keys`] turns into a broadcast
//! name, exactly as RTMP's stream key: a wrong key, a busy broadcast, a full listener or a
//! `m=request` caller is rejected in the handshake with an SRT rejection code
//! ([`Refusal::code`]), a log line and a count in `moqcast_srt_refused_total`. An accepted
//! connection's task reads its SRT messages, hands the bytes to
//! [`moqcast_media::ts::Demuxer`], and writes the configurations and frames through the shared
//! push-ingest core ([`crate::push`]): catalog, LOC tracks, groups on keyframes, resumption
//! within `--srt-resume-ms`, counters on `/metrics` and `/broadcasts`.
//!
//! Bounds: at most `--srt-max-connections` connections (more are rejected with
//! `SRT_REJX_OVERLOAD`); no queue between the socket and the caches past `srt-tokio`'s own
//! receive buffer (a message is demuxed and cached before the next is read); a connection that
//! delivers no media for `--srt-timeout-ms` is closed; [`MAX_MALFORMED`] malformed messages end
//! a connection, and a codec moqcast does not carry ends it at once. A connection's bad input
//! ends that connection only. The listener owns the connection tasks: they end when it does.

use std::{net::SocketAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use moqcast_media::ts::{Demuxer, TsError};
use srt_tokio::{
    access::{RejectReason, ServerRejectReason},
    SrtListener, SrtSocket,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    push::{self, keys::KeyError, ClaimError, Protocol},
    RelayState,
};

/// Settings of the SRT listener.
#[derive(Debug, Clone)]
pub struct SrtConfig {
    pub bind: SocketAddr,
    /// A connection that delivers no media this long is closed.
    pub timeout: Duration,
    /// How long a broadcast waits for its publisher to reconnect.
    pub resume: Duration,
    pub max_connections: usize,
    /// The receive latency the relay asks for (the connection takes the larger of both sides').
    pub latency: Duration,
}

impl SrtConfig {
    /// The defaults, listening on `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            timeout: Duration::from_secs(10),
            resume: Duration::from_secs(5),
            max_connections: 64,
            // libsrt's default, which OBS and FFmpeg use too.
            latency: Duration::from_millis(120),
        }
    }
}

/// Most malformed messages (MPEG-TS that lost sync, broken PES packets, ADTS or parameter
/// sets) a connection may send before it is closed.
pub const MAX_MALFORMED: u64 = 10;

/// Why a `streamid` names no stream key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    #[error("no streamid (publish to srt://HOST:PORT?streamid=KEY)")]
    Empty,
    #[error(
        "the streamid asks to play (m=request): this relay plays over MoQ, open /watch/BROADCAST"
    )]
    Request,
    #[error("unsupported mode m={0:?} in the streamid: publishers use m=publish")]
    Mode(String),
    #[error("the streamid {0:?} has no resource (r=) nor key (s=)")]
    NoResource(String),
}

/// The stream key in an SRT `streamid`:
///
/// * a plain streamid is the key: `demo`, a key from the key file, a token, `NAME?jwt=TOKEN`;
/// * the SRT access control syntax (`#!::` then `key=value` pairs separated by commas;
///   draft-sharabayko-srt-01 §3.2.1.3.1, the "Stream ID" appendix): `r` is the key (the
///   resource name), `s` (the session id) a key or token that wins over it. A token in `s` with
///   `r` picks the broadcast `r` among those the token grants (`#!::r=live/a,s=TOKEN` is the
///   RTMP key `live/a?jwt=TOKEN`). `m` must be `publish` or absent (this listener only takes
///   publishers); `u`, `h`, `t` and unknown keys are ignored.
pub fn stream_key(streamid: &str) -> Result<String, StreamIdError> {
    let Some(list) = streamid.strip_prefix("#!::") else {
        return if streamid.is_empty() {
            Err(StreamIdError::Empty)
        } else {
            Ok(streamid.to_string())
        };
    };
    let (mut resource, mut session) = (None, None);
    for pair in list.split(',') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.trim() {
            "r" => resource = Some(value),
            "s" => session = Some(value),
            "m" => match value {
                "publish" => {}
                "request" => return Err(StreamIdError::Request),
                other => return Err(StreamIdError::Mode(other.chars().take(32).collect())),
            },
            _ => {}
        }
    }
    let jwt = |s: &str| s.split('.').count() == 3;
    match (
        resource.filter(|r| !r.is_empty()),
        session.filter(|s| !s.is_empty()),
    ) {
        (Some(r), Some(s)) if jwt(s) => Ok(format!("{r}?jwt={s}")),
        (_, Some(s)) => Ok(s.to_string()),
        (Some(r), None) => Ok(r.to_string()),
        (None, None) => Err(StreamIdError::NoResource(
            streamid.chars().take(64).collect(),
        )),
    }
}

/// Why a connection request was rejected: the metric's label, the reason in words, and the
/// SRT rejection code the caller sees.
#[derive(Debug)]
pub struct Refusal {
    pub label: &'static str,
    pub reason: String,
    pub code: ServerRejectReason,
}

impl Refusal {
    fn new(label: &'static str, reason: impl ToString, code: ServerRejectReason) -> Self {
        Self {
            label,
            reason: reason.to_string(),
            code,
        }
    }
}

impl From<StreamIdError> for Refusal {
    fn from(e: StreamIdError) -> Self {
        let code = match e {
            StreamIdError::Request | StreamIdError::Mode(_) => ServerRejectReason::BadMode,
            _ => ServerRejectReason::BadRequest,
        };
        let label = match e {
            StreamIdError::Request => "play",
            _ => "bad_streamid",
        };
        Refusal::new(label, e, code)
    }
}

impl From<KeyError> for Refusal {
    fn from(e: KeyError) -> Self {
        let code = match e {
            KeyError::BadName(_) => ServerRejectReason::BadRequest,
            KeyError::File { .. } => ServerRejectReason::InternalServerError,
            _ => ServerRejectReason::Forbidden,
        };
        Refusal::new(e.reason(), e, code)
    }
}

impl From<ClaimError> for Refusal {
    fn from(e: ClaimError) -> Self {
        Refusal::new(e.reason(), e, ServerRejectReason::Conflict)
    }
}

/// Why an accepted connection ended other than by its publisher finishing.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("no media for {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Malformed(String),
    /// Refused with a reason (logged and counted where it happens).
    #[error("refused: {0}")]
    Refused(String),
}

/// The bound SRT listener.
pub struct Listener {
    listener: SrtListener,
    incoming: srt_tokio::SrtIncoming,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(config: &SrtConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let socket = tokio::net::UdpSocket::bind(config.bind)
            .await
            .with_context(|| format!("could not bind SRT on UDP {}", config.bind))?;
        let addr = socket.local_addr()?;
        let (listener, incoming) = SrtListener::builder()
            .latency(config.latency)
            .socket(socket)
            .bind(addr)
            .await
            .with_context(|| format!("could not start the SRT listener on UDP {addr}"))?;
        Ok(Self {
            listener,
            incoming,
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts and serves connections until `cancel`; then the connections are aborted and the
    /// listener closed.
    pub async fn serve(
        mut self,
        state: Arc<RelayState>,
        config: SrtConfig,
        cancel: CancellationToken,
    ) {
        let slots = crate::limits::Slots::new(config.max_connections);
        let mut connections = JoinSet::new();
        tracing::info!(addr = %self.addr, latency_ms = config.latency.as_millis() as u64, "SRT ingest listening");
        loop {
            tokio::select! {
                request = self.incoming.incoming().next() => {
                    let Some(request) = request else { break };
                    let id = state.ingests.connection_id();
                    let peer = request.remote();
                    let streamid = request.stream_id().map(|s| s.to_string()).unwrap_or_default();
                    let span = tracing::info_span!("srt", id, %peer, broadcast = tracing::field::Empty);
                    let admitted = span.in_scope(|| admit(&state, &slots, &streamid, id));
                    match admitted {
                        Err(refusal) => {
                            span.in_scope(|| {
                                tracing::debug!(streamid = %streamid.chars().take(64).collect::<String>(), "SRT streamid refused");
                                push::refused(&state.metrics, Protocol::Srt, refusal.label, &format!(
                                    "{} (SRT rejection {})",
                                    refusal.reason,
                                    refusal.code as i32
                                ));
                            });
                            // The listener's task takes the answer; it may be busy handing us
                            // the next request, so the answer is sent from a task.
                            connections.spawn(async move {
                                let _ = request.reject(RejectReason::Server(refusal.code)).await;
                            });
                        }
                        Ok((claim, slot)) => {
                            span.record("broadcast", claim.name());
                            let (state, config) = (state.clone(), config.clone());
                            connections.spawn(tracing::Instrument::instrument(async move {
                                let counters = Protocol::Srt.counters(&state.metrics);
                                counters.connections.fetch_add(1, Ordering::Relaxed);
                                let res = match tokio::time::timeout(config.timeout, request.accept(None)).await {
                                    Ok(Ok(socket)) => {
                                        if claim.resumed {
                                            tracing::info!("SRT publisher reconnected: broadcast resumed");
                                        } else {
                                            tracing::info!("SRT publisher accepted");
                                        }
                                        connection(&state, &config, &claim, socket).await
                                    }
                                    Ok(Err(e)) => Err(ConnError::Io(e)),
                                    Err(_) => Err(ConnError::Timeout(config.timeout)),
                                };
                                counters.connections.fetch_sub(1, Ordering::Relaxed);
                                match res {
                                    Ok(()) => tracing::info!("SRT publisher finished"),
                                    Err(ConnError::Refused(_)) => {}
                                    Err(ConnError::Timeout(t)) => {
                                        counters.timeouts.fetch_add(1, Ordering::Relaxed);
                                        tracing::warn!(timeout_ms = t.as_millis() as u64, "SRT publisher sent no media: closed");
                                    }
                                    Err(e @ ConnError::Malformed(_)) => {
                                        tracing::warn!(error = %e, "SRT publisher sent malformed MPEG-TS: closed");
                                    }
                                    Err(e) => tracing::info!(error = %e, "SRT connection ended"),
                                }
                                drop(claim);
                                drop(slot);
                            }, span));
                        }
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = cancel.cancelled() => break,
            }
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        self.listener.close().await;
    }
}

/// Decides on a connection request: its broadcast and a connection slot, or why not.
fn admit(
    state: &Arc<RelayState>,
    slots: &Arc<crate::limits::Slots>,
    streamid: &str,
    id: u64,
) -> Result<(push::Claim, crate::limits::Slot), Refusal> {
    let slot = slots.try_acquire().ok_or_else(|| {
        Refusal::new(
            "connection_limit",
            "the SRT listener is full (--srt-max-connections)",
            ServerRejectReason::Overload,
        )
    })?;
    let key = stream_key(streamid)?;
    let name = state.ingests.keys().resolve(&key, &state.auth)?;
    let claim = state.ingests.claim(state, &name, id, Protocol::Srt)?;
    Ok((claim, slot))
}

/// Runs the demuxer on one connection's input. `mpeg2ts-reader` is not fuzzed by its users
/// the way the relay's own decoders are: a panic in it is caught here and ends that
/// connection only.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ConnError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| ConnError::Malformed("malformed MPEG-TS (the demuxer panicked)".into()))
}

/// Closes an SRT connection the relay ends (the peer is told), waiting at most a second.
async fn close(mut socket: SrtSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
}

/// Serves one accepted connection until its publisher finishes, it fails, or it goes silent.
async fn connection(
    state: &Arc<RelayState>,
    config: &SrtConfig,
    claim: &push::Claim,
    mut socket: SrtSocket,
) -> Result<(), ConnError> {
    let mut demuxer = Demuxer::new();
    let mut events = Vec::new();
    let mut malformed = 0u64;
    // The time since media last arrived: SRT keepalives keep a stalled encoder's connection
    // up, so silence is judged by what reaches the demuxer.
    let mut last_media = tokio::time::Instant::now();
    loop {
        let left = config.timeout.saturating_sub(last_media.elapsed());
        let message = match tokio::time::timeout(left, socket.next()).await {
            Err(_) => {
                close(socket).await;
                return Err(ConnError::Timeout(config.timeout));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(ConnError::Io(e)),
            Ok(Some(Ok((_, bytes)))) => bytes,
        };
        let res = guarded(|| demuxer.push(&message, &mut events));
        let now = tokio::time::Instant::now();
        if !events.is_empty() {
            last_media = now;
        }
        for event in events.drain(..) {
            claim.apply(state, event, now);
        }
        match res {
            Ok(Ok(())) => {}
            Ok(Err(TsError::Unsupported(what))) => {
                let reason = format!(
                    "unsupported {what}: publish H.264 video with AAC or Opus audio in MPEG-TS"
                );
                push::refused(&state.metrics, Protocol::Srt, "unsupported_codec", &reason);
                close(socket).await;
                return Err(ConnError::Refused(reason));
            }
            Ok(Err(e)) => {
                malformed += 1;
                state.metrics.errors.fetch_add(1, Ordering::Relaxed);
                if malformed == 1 {
                    tracing::warn!(error = %e, "malformed MPEG-TS from an SRT publisher: dropped");
                }
                if malformed >= MAX_MALFORMED {
                    close(socket).await;
                    return Err(ConnError::Malformed(format!(
                        "{MAX_MALFORMED} malformed messages (last: {e})"
                    )));
                }
            }
            Err(e) => {
                state.metrics.errors.fetch_add(1, Ordering::Relaxed);
                close(socket).await;
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamids_plain_and_in_the_access_control_syntax_give_the_key() {
        assert_eq!(stream_key("demo"), Ok("demo".into()));
        assert_eq!(
            stream_key("live/a?jwt=x.y.z"),
            Ok("live/a?jwt=x.y.z".into())
        );
        assert_eq!(stream_key(""), Err(StreamIdError::Empty));
        assert_eq!(stream_key("#!::r=demo,m=publish"), Ok("demo".into()));
        assert_eq!(
            stream_key("#!::m=publish,r=live/b,u=alice"),
            Ok("live/b".into())
        );
        assert_eq!(stream_key("#!::r=demo"), Ok("demo".into()));
        // A key in s wins; a token in s with r picks the broadcast r.
        assert_eq!(
            stream_key("#!::r=demo,s=k-alpha,m=publish"),
            Ok("k-alpha".into())
        );
        assert_eq!(
            stream_key("#!::r=live/a,s=aa.bb.cc,m=publish"),
            Ok("live/a?jwt=aa.bb.cc".into())
        );
        assert_eq!(stream_key("#!::s=aa.bb.cc"), Ok("aa.bb.cc".into()));
        assert_eq!(
            stream_key("#!::r=demo,m=request"),
            Err(StreamIdError::Request)
        );
        assert!(matches!(
            stream_key("#!::r=demo,m=bidirectional"),
            Err(StreamIdError::Mode(_))
        ));
        assert!(matches!(
            stream_key("#!::u=alice,m=publish"),
            Err(StreamIdError::NoResource(_))
        ));
        assert!(matches!(
            stream_key("#!::"),
            Err(StreamIdError::NoResource(_))
        ));
    }

    #[test]
    fn refusals_carry_srt_rejection_codes() {
        assert_eq!(
            Refusal::from(StreamIdError::Request).code as i32,
            2405,
            "SRT_REJX_BAD_MODE"
        );
        assert_eq!(Refusal::from(KeyError::Unknown).code as i32, 2403);
        assert_eq!(
            Refusal::from(ClaimError::Busy("a".into())).code as i32,
            2409
        );
    }
}

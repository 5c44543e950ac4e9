//! Writing to one subscriber: its subgroup streams and datagrams, and how far behind its
//! connection is.
//!
//! A [`DirectStream`] is one subgroup stream the relay writes itself: the header, then each
//! object's header and payload (encoded once in the cache, shared by every subscriber), handed
//! to QUIC as it takes them. Every stream is declared to the session layer before it is opened
//! ([`DirectTarget::streams`]), so PUBLISH_DONE's Stream Count is exact.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use bytes::Bytes;
use moqcast_media::moq::{transport::data::ObjectStatus, wire};
use tokio::time::Instant;

use crate::{
    cache::{CachedObject, Key},
    metrics::Metrics,
    policy::TrackError,
};

/// How far behind one downstream connection is: payload bytes handed to its subscriptions
/// minus bytes its QUIC connection has sent. Shared by the pumps of one session.
pub struct Backlog {
    conn: quinn::Connection,
    baseline: AtomicU64,
    handed: AtomicU64,
    /// The connection's sent bytes at the last look (reading them locks the connection).
    sent_seen: AtomicU64,
    pub limit: u64,
}

impl Backlog {
    pub fn new(conn: quinn::Connection, limit: u64) -> Arc<Self> {
        let sent = conn.stats().udp_tx.bytes;
        Arc::new(Self {
            conn,
            baseline: AtomicU64::new(sent),
            handed: AtomicU64::new(0),
            sent_seen: AtomicU64::new(0),
            limit,
        })
    }

    fn sent(&self) -> u64 {
        self.conn
            .stats()
            .udp_tx
            .bytes
            .saturating_sub(self.baseline.load(Ordering::Relaxed))
    }

    /// Unsent payload bytes, never less than the truth. The connection is only asked (a lock
    /// on its state) once the figure from its last answer reaches half the budget: below
    /// that the pumps may go on without looking, and the relay's fan-out CPU stays in QUIC.
    /// Packet overhead counts as sent, so a fresh figure is an underestimate by that much.
    pub fn bytes(&self) -> u64 {
        let handed = self.handed.load(Ordering::Relaxed);
        let stale = handed.saturating_sub(self.sent_seen.load(Ordering::Relaxed));
        if stale < self.limit / 2 {
            return stale;
        }
        let sent = self.sent();
        self.sent_seen.fetch_max(sent, Ordering::Relaxed);
        handed.saturating_sub(sent)
    }

    /// Takes back bytes handed to a stream that was reset before they were all sent, at most
    /// the current backlog (a reset stream's bytes may already have gone out).
    fn forgive(&self, n: u64) {
        let n = n.min(self.bytes());
        self.handed.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn hand(&self, n: usize) {
        self.handed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Where a subscriber's objects go: the subscriber's session, the subscription's track alias,
/// and the session layer's count of its data streams (PUBLISH_DONE's Stream Count).
#[derive(Clone)]
pub struct DirectTarget {
    pub session: web_transport_quinn::Session,
    pub alias: u64,
    pub streams: moqcast_session::io::StreamCounter,
}

/// A subgroup stream the relay writes: the QUIC stream and the bytes it has not taken yet
/// (flow control). Dropped before it finished, it is reset.
pub(crate) struct DirectStream {
    pub(crate) send: web_transport_quinn::SendStream,
    metrics: Arc<Metrics>,
    /// The session's backlog: bytes that will never go out (reset, stopped) are given back.
    backlog: Arc<Backlog>,
    pub(crate) pending: Vec<Bytes>,
    /// Payload and header bytes handed to QUIC.
    written: u64,
    /// FIN goes out once `pending` is empty.
    pub(crate) finishing: bool,
    /// Finished, reset, or failed: nothing more goes out.
    pub(crate) closed: bool,
}

impl DirectStream {
    pub(crate) async fn open(
        target: &DirectTarget,
        key: Key,
        priority: u8,
        metrics: &Arc<Metrics>,
        backlog: &Arc<Backlog>,
    ) -> Result<Self, TrackError> {
        let header = wire::subgroup_header(target.alias, key.0, key.1, priority)
            .map_err(|e| TrackError::Internal(e.to_string()))?;
        // Counted before it exists, so PUBLISH_DONE can never undercount it.
        target
            .streams
            .opened()
            .map_err(|e| TrackError::Internal(format!("subscription gone: {e}")))?;
        let send = target
            .session
            .open_uni()
            .await
            .map_err(|e| TrackError::Internal(format!("open subgroup stream: {e}")))?;
        // Draft-18 §7: a lower publisher priority value is more urgent; in QUIC, higher is.
        let _ = send.set_priority(-i32::from(priority));
        Ok(Self {
            send,
            metrics: metrics.clone(),
            backlog: backlog.clone(),
            pending: vec![header],
            written: 0,
            finishing: false,
            closed: false,
        })
    }

    /// Queues one object: its header (encoded once in the cache), then its payload.
    pub(crate) fn push(&mut self, obj: CachedObject) {
        if self.closed {
            return;
        }
        self.pending.push(obj.header);
        if obj.status == ObjectStatus::NormalObject && !obj.payload.is_empty() {
            self.pending.push(obj.payload);
        }
    }

    /// Hands QUIC what it takes now, and the FIN once all is taken. True when nothing waits.
    pub(crate) fn flush(&mut self) -> bool {
        use futures::FutureExt;
        while !self.closed && !self.pending.is_empty() {
            match self.send.write_chunks(&mut self.pending).now_or_never() {
                Some(Ok(w)) => self.taken(w),
                // Stopped by the peer (it may cancel one stream, draft-18 §11.4.1) or the
                // connection is gone: this stream is over, the subscription goes on.
                Some(Err(_)) => self.abandon(),
                None => return false,
            }
        }
        self.finish_if_done();
        true
    }

    fn taken(&mut self, w: quinn::Written) {
        self.written += w.bytes as u64;
        self.pending.drain(..w.chunks);
    }

    fn finish_if_done(&mut self) {
        if self.finishing && !self.closed && self.pending.is_empty() {
            let _ = self.send.finish();
            self.closed = true;
        }
    }

    /// Waits until QUIC takes some of what is pending (the stream is writable again).
    async fn writable(&mut self) {
        if self.closed || self.pending.is_empty() {
            return std::future::pending().await;
        }
        match self.send.write_chunks(&mut self.pending).await {
            Ok(w) => self.taken(w),
            Err(_) => self.abandon(),
        }
        self.finish_if_done();
    }

    /// Abandons the stream (RESET_STREAM).
    pub(crate) fn reset(&mut self, why: Abandon) {
        let code = match why {
            Abandon::TooFarBehind => wire::RESET_TOO_FAR_BEHIND,
            Abandon::TrackEnded | Abandon::Cancelled => wire::RESET_CANCELLED,
        };
        if !self.closed {
            let _ = self.send.reset(code);
            self.abandon();
            self.metrics.direct_resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Nothing more goes out on this stream: what it still held, and what QUIC had not sent
    /// yet (at most what was handed to it), leaves the subscriber's backlog.
    fn abandon(&mut self) {
        let held: usize = self.pending.iter().map(Bytes::len).sum();
        self.backlog.forgive(self.written + held as u64);
        self.closed = true;
        self.pending.clear();
    }
}

/// Why a direct stream is abandoned.
pub(crate) enum Abandon {
    TooFarBehind,
    TrackEnded,
    Cancelled,
}

impl Drop for DirectStream {
    fn drop(&mut self) {
        // Unfinished (the subscription was cancelled or its task dropped): the subgroup is
        // incomplete, and a FIN would claim otherwise (draft-18 §11.4.3).
        self.reset(Abandon::Cancelled);
    }
}

/// Where one open subgroup's objects go.
pub(crate) enum Sink {
    Direct(DirectStream),
    /// Datagram tracks: each object is one datagram on the subscriber's session.
    Datagrams,
}

impl Sink {
    /// A direct stream with bytes QUIC has not taken (flow control).
    pub(crate) fn blocked(&self) -> bool {
        matches!(self, Sink::Direct(s) if !s.pending.is_empty() && !s.closed)
    }
}

/// Sends one cached object as a datagram of `alias` (draft-18 §10.3).
pub(crate) fn send_datagram(
    target: &DirectTarget,
    key: Key,
    priority: u8,
    obj: &CachedObject,
) -> Result<(), TrackError> {
    let bytes = moqcast_session::draft18::encode_datagram(
        target.alias,
        key.0,
        obj.id,
        priority,
        obj.status,
        &obj.properties,
        &obj.payload,
        obj.end_of_group,
    )
    .map_err(|e| TrackError::Internal(e.to_string()))?;
    // A datagram that does not fit or finds no room is lost, as datagrams may be.
    let _ = target.session.send_datagram(bytes);
    Ok(())
}

/// Waits until one of `streams` can take more bytes (never, if none waits).
pub(crate) async fn any_writable<'a>(streams: impl Iterator<Item = &'a mut DirectStream>) {
    let mut waits: Vec<_> = streams
        .filter(|s| !s.pending.is_empty() && !s.closed)
        .map(|s| Box::pin(s.writable()))
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits.iter_mut()).await;
}

/// How long the end of a track waits for its last streams to take their bytes.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Before PUBLISH_DONE (draft-18 §9.12: not before every stream of the subscription is
/// closed): hands over the last streams' bytes as QUIC takes them and finishes them; streams
/// still not done after [`SETTLE`] are reset.
pub(crate) async fn settle(mut streams: Vec<DirectStream>) {
    let deadline = Instant::now() + SETTLE;
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            streams.retain_mut(|s| !s.flush());
            if streams.is_empty() {
                return;
            }
            any_writable(streams.iter_mut()).await;
        }
    })
    .await;
    // Dropping what is left resets it.
}

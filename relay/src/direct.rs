//! The session adapter behind the relay's own subgroup streams.
//!
//! For most subscriptions the relay writes the subgroup streams itself (see
//! [`crate::fanout::pump`]): one hand-over of header and payload to QUIC per object, with no
//! per-object task or state in between. moq-transport still runs the subscription's control
//! messages (SUBSCRIBE_OK, PUBLISH_DONE), and PUBLISH_DONE must carry the exact number of data
//! streams opened for the subscription (draft-18 §9.12, Stream Count). moq-transport counts
//! only the streams its own forwarder opens, so for each stream the relay opens it also hands
//! the forwarder a one-object placeholder subgroup. This adapter, put between moq-transport and
//! the session, sends the forwarder's streams for those subscriptions nowhere: it reads the
//! stream header the forwarder writes first, and if the Track Alias belongs to a subscription
//! the relay serves itself ([`DirectAliases`]), the stream is never opened on the wire. Every
//! other stream (other subscriptions, FETCH) is opened and passed through unchanged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::{Buf, Bytes, BytesMut};
use moqcast_media::moq::transport::{coding::Decode, reexports::web_transport_trait as wt};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use web_transport_quinn as wtq;

use crate::ingest::{IngestRoutes, Routing};

/// Track Aliases of this session's subscriptions whose streams the relay writes itself, each
/// with whether moq-transport has accepted it yet.
#[derive(Debug, Default, Clone)]
pub struct DirectAliases(Arc<Mutex<HashMap<u64, watch::Sender<bool>>>>);

impl DirectAliases {
    /// Marks `alias` as served directly until the returned guard is dropped.
    pub fn insert(&self, alias: u64) -> AliasGuard {
        let (tx, accepted) = watch::channel(false);
        self.0.lock().expect("poisoned").insert(alias, tx);
        AliasGuard {
            aliases: self.clone(),
            alias,
            accepted,
        }
    }

    /// Whether `alias` is served directly; if so, notes that moq-transport's forwarder is
    /// serving it, which it does only once SUBSCRIBE_OK is written.
    fn placeholder(&self, alias: u64) -> bool {
        match self.0.lock().expect("poisoned").get(&alias) {
            Some(accepted) => {
                accepted.send_if_modified(|a| !std::mem::replace(a, true));
                true
            }
            None => false,
        }
    }
}

/// Keeps a Track Alias in [`DirectAliases`] while its subscription lives.
#[derive(Debug)]
pub struct AliasGuard {
    aliases: DirectAliases,
    alias: u64,
    accepted: watch::Receiver<bool>,
}

impl AliasGuard {
    /// Becomes true once SUBSCRIBE_OK for this subscription was written: the relay's first
    /// data stream waits for it, as moq-transport's own forwarder does, so that it does not
    /// overtake the acceptance.
    pub fn accepted(&self) -> watch::Receiver<bool> {
        self.accepted.clone()
    }
}

impl Drop for AliasGuard {
    fn drop(&mut self) {
        self.aliases.0.lock().expect("poisoned").remove(&self.alias);
    }
}

/// What the first bytes of a unidirectional stream say about where it goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Not enough bytes yet to read the stream type and Track Alias.
    NeedMore,
    /// A subgroup stream of a subscription the relay writes itself: drop it.
    Placeholder,
    /// Anything else (other subscriptions, FETCH, or bytes this adapter does not understand).
    Wire,
}

fn route(head: &[u8], direct: &DirectAliases) -> Route {
    use moqcast_media::moq::transport::coding::DecodeError;
    let mut buf = head;
    match subgroup_type(&mut buf) {
        Some(true) => {}
        Some(false) => return Route::Wire,
        None => return Route::NeedMore,
    }
    match u64::decode(&mut buf) {
        Ok(alias) if direct.placeholder(alias) => Route::Placeholder,
        Ok(_) => Route::Wire,
        Err(DecodeError::More(_)) => Route::NeedMore,
        Err(_) => Route::Wire,
    }
}

/// Whether a stream starting with `head` (advanced past the type) is a subgroup stream; `None`
/// until the type is complete. The type is read as a plain varint: moq-transport's
/// `StreamHeaderType` decoder logs an ERROR for every type it does not know, and only subgroup
/// types matter to the relay.
pub(crate) fn subgroup_type(head: &mut &[u8]) -> Option<bool> {
    use moqcast_media::moq::transport::coding::DecodeError;
    match u64::decode(head) {
        Ok(kind) => Some(is_subgroup_type(kind)),
        Err(DecodeError::More(_)) => None,
        Err(_) => Some(false),
    }
}

/// Whether `kind` is one of draft-18's SUBGROUP_HEADER types: 0x10-0x15 and 0x18-0x1D, with
/// the flags 0x20 (default priority) and 0x40 (first object) in any combination.
fn is_subgroup_type(kind: u64) -> bool {
    matches!(kind & !0x60, 0x10..=0x15 | 0x18..=0x1d)
}

/// The session moq-transport sees: the real one, with [`Stream`] for unidirectional send
/// streams, and incoming subgroup streams of routed tracks read by the relay itself
/// ([`crate::ingest`]).
#[derive(Clone)]
pub struct Session {
    inner: wtq::Session,
    direct: DirectAliases,
    ingest: IngestRoutes,
    incoming: Arc<Incoming>,
}

/// Incoming unidirectional streams on their way to moq-transport, and the tasks reading their
/// headers (then, for routed tracks, the whole stream). Dropped with the last handle on the
/// session, which aborts the tasks.
struct Incoming {
    tx: mpsc::Sender<Recv>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Recv>>,
    readers: Mutex<JoinSet<()>>,
}

/// Incoming streams whose header was read, waiting for moq-transport to accept them.
const INCOMING_QUEUE: usize = 16;

impl Session {
    pub fn new(inner: wtq::Session, direct: DirectAliases, ingest: IngestRoutes) -> Self {
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        Self {
            inner,
            direct,
            ingest,
            incoming: Arc::new(Incoming {
                tx,
                rx: tokio::sync::Mutex::new(rx),
                readers: Mutex::new(JoinSet::new()),
            }),
        }
    }

    /// For `moq_transport::session::Session::accept`.
    pub fn into_transport(self) -> moqcast_media::moq::transport::session::transport::Session {
        let url = self.inner.request().url.clone();
        moqcast_media::moq::transport::session::transport::Session::new(self, url)
    }
}

/// A send stream handed to moq-transport: opened on the wire once its header shows it is not
/// a placeholder.
pub enum Stream {
    /// Opened by moq-transport, header not complete yet.
    Undecided {
        session: Box<wtq::Session>,
        direct: DirectAliases,
        head: BytesMut,
        priority: Option<u8>,
    },
    Wire(wtq::SendStream),
    /// A placeholder subgroup of a subscription the relay serves itself: accepted and dropped.
    Placeholder,
}

impl Stream {
    async fn open(
        session: &wtq::Session,
        priority: Option<u8>,
        head: Bytes,
    ) -> Result<wtq::SendStream, wtq::WriteError> {
        let mut send = session
            .open_uni()
            .await
            .map_err(wtq::WriteError::SessionError)?;
        if let Some(p) = priority {
            wt::SendStream::set_priority(&mut send, p);
        }
        let mut head = head;
        while head.has_remaining() {
            let n = send.write(head.chunk()).await?;
            head.advance(n);
        }
        Ok(send)
    }
}

impl wt::SendStream for Stream {
    type Error = wtq::WriteError;

    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            Stream::Wire(send) => send.write(buf).await,
            Stream::Placeholder => Ok(buf.len()),
            Stream::Undecided {
                session,
                direct,
                head,
                priority,
            } => {
                head.extend_from_slice(buf);
                match route(head, direct) {
                    Route::NeedMore => {}
                    Route::Placeholder => *self = Stream::Placeholder,
                    Route::Wire => {
                        let send = Self::open(session, *priority, head.split().freeze()).await?;
                        *self = Stream::Wire(send);
                    }
                }
                Ok(buf.len())
            }
        }
    }

    fn set_priority(&mut self, order: u8) {
        match self {
            Stream::Wire(send) => wt::SendStream::set_priority(send, order),
            Stream::Undecided { priority, .. } => *priority = Some(order),
            Stream::Placeholder => {}
        }
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        match self {
            Stream::Wire(send) => wt::SendStream::finish(send),
            // Finished before a whole header: nothing reached the wire, nothing to end.
            Stream::Undecided { .. } | Stream::Placeholder => Ok(()),
        }
    }

    fn reset(&mut self, code: u32) {
        if let Stream::Wire(send) = self {
            wt::SendStream::reset(send, code);
        }
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        match self {
            Stream::Wire(send) => wt::SendStream::closed(send).await,
            Stream::Undecided { .. } | Stream::Placeholder => Ok(()),
        }
    }
}

/// A receive stream handed to moq-transport.
pub enum Recv {
    Wire(wtq::RecvStream),
    /// A stream whose first bytes were read here to route it: those, then the rest.
    Replay {
        head: Bytes,
        inner: wtq::RecvStream,
    },
    /// A subgroup stream the relay reads itself: moq-transport gets its header only (and a
    /// FIN), so it counts the stream for PUBLISH_DONE's Stream Count.
    Placeholder(Bytes),
}

impl Recv {
    fn inner(&mut self) -> Option<&mut wtq::RecvStream> {
        match self {
            Recv::Wire(inner) | Recv::Replay { inner, .. } => Some(inner),
            Recv::Placeholder(_) => None,
        }
    }
}

/// Takes up to `max` bytes off the front of `head`, `None` once it is empty.
fn take_head(head: &mut Bytes, max: usize) -> Option<Bytes> {
    (!head.is_empty()).then(|| head.split_to(max.min(head.len())))
}

impl wt::RecvStream for Recv {
    type Error = wtq::ReadError;

    async fn read(&mut self, dst: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let head = match self {
            Recv::Wire(inner) => return inner.read(dst).await,
            Recv::Replay { head, inner } if head.is_empty() => return inner.read(dst).await,
            Recv::Replay { head, .. } | Recv::Placeholder(head) => head,
        };
        Ok(take_head(head, dst.len()).map(|b| {
            dst[..b.len()].copy_from_slice(&b);
            b.len()
        }))
    }

    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, Self::Error> {
        let head = match self {
            Recv::Wire(inner) => return wt::RecvStream::read_chunk(inner, max).await,
            Recv::Replay { head, inner } if head.is_empty() => {
                return wt::RecvStream::read_chunk(inner, max).await
            }
            Recv::Replay { head, .. } | Recv::Placeholder(head) => head,
        };
        Ok(take_head(head, max))
    }

    fn stop(&mut self, code: u32) {
        if let Some(inner) = self.inner() {
            wt::RecvStream::stop(inner, code);
        }
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        match self.inner() {
            Some(inner) => wt::RecvStream::closed(inner).await,
            None => Ok(()),
        }
    }
}

/// Reads an incoming stream's header and sends the stream on: to the relay's own reader
/// (moq-transport then gets a placeholder) or, with the bytes read so far, to moq-transport.
async fn route_incoming(mut recv: wtq::RecvStream, routes: IngestRoutes, tx: mpsc::Sender<Recv>) {
    let mut head = BytesMut::new();
    loop {
        match crate::ingest::route(&head, &routes) {
            Routing::NeedMore => {}
            Routing::Transport => {
                let head = head.freeze();
                let _ = tx.send(Recv::Replay { head, inner: recv }).await;
                return;
            }
            Routing::Ingest(stream, cache) => {
                let rest = head.split_off(stream.len);
                if tx.send(Recv::Placeholder(head.freeze())).await.is_ok() {
                    crate::ingest::read_subgroup(cache, stream, rest, recv).await;
                }
                return;
            }
        }
        match recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk.bytes),
            // Ended or broken before a whole header: moq-transport reads and reports it.
            _ => {
                let head = head.freeze();
                let _ = tx.send(Recv::Replay { head, inner: recv }).await;
                return;
            }
        }
    }
}

impl wt::Session for Session {
    type SendStream = Stream;
    type RecvStream = Recv;
    type Error = wtq::SessionError;

    async fn accept_uni(&self) -> Result<Self::RecvStream, Self::Error> {
        let mut routed = self.incoming.rx.lock().await;
        loop {
            tokio::select! {
                Some(recv) = routed.recv() => return Ok(recv),
                res = self.inner.accept_uni() => {
                    let recv = res?;
                    if self.ingest.is_empty() {
                        return Ok(Recv::Wire(recv));
                    }
                    let mut readers = self.incoming.readers.lock().expect("poisoned");
                    while readers.try_join_next().is_some() {}
                    let (routes, tx) = (self.ingest.clone(), self.incoming.tx.clone());
                    readers.spawn(route_incoming(recv, routes, tx));
                }
            }
        }
    }

    async fn accept_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = self.inner.accept_bi().await?;
        Ok((Stream::Wire(send), Recv::Wire(recv)))
    }

    async fn open_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = self.inner.open_bi().await?;
        Ok((Stream::Wire(send), Recv::Wire(recv)))
    }

    async fn open_uni(&self) -> Result<Self::SendStream, Self::Error> {
        Ok(Stream::Undecided {
            session: Box::new(self.inner.clone()),
            direct: self.direct.clone(),
            head: BytesMut::new(),
            priority: None,
        })
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), Self::Error> {
        self.inner.send_datagram(payload)
    }

    async fn recv_datagram(&self) -> Result<Bytes, Self::Error> {
        self.inner.read_datagram().await
    }

    fn max_datagram_size(&self) -> usize {
        self.inner.max_datagram_size()
    }

    fn protocol(&self) -> Option<&str> {
        wt::Session::protocol(&self.inner)
    }

    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason.as_bytes());
    }

    async fn closed(&self) -> Self::Error {
        self.inner.closed().await
    }

    fn stats(&self) -> impl wt::Stats {
        wt::Session::stats(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use moqcast_media::moq::wire;

    use super::*;

    #[test]
    fn routes_by_the_alias_in_the_subgroup_header() {
        let direct = DirectAliases::default();
        let guard = direct.insert(7);
        let accepted = guard.accepted();
        let ours = wire::subgroup_header(7, 1, 0, 0).unwrap();
        let other = wire::subgroup_header(8, 1, 0, 0).unwrap();
        assert!(!*accepted.borrow());
        assert_eq!(route(&ours, &direct), Route::Placeholder);
        assert!(
            *accepted.borrow(),
            "the forwarder's first stream means SUBSCRIBE_OK went out"
        );
        assert_eq!(route(&other, &direct), Route::Wire);
        // The type alone, or nothing, is not enough to decide.
        assert_eq!(route(&ours[..1], &direct), Route::NeedMore);
        assert_eq!(route(&[], &direct), Route::NeedMore);
        // FETCH streams (type 0x05) and unknown types always go on the wire.
        assert_eq!(route(&[0x05, 0x01], &direct), Route::Wire);
        assert_eq!(route(&[0x3f], &direct), Route::Wire);
        // Type 0x2f00 (draft-18 varints: leading 1-bits give the length), which moq-transport
        // logged as an ERROR when asked.
        assert_eq!(route(&[0xaf, 0x00], &direct), Route::Wire);
        assert_eq!(
            route(&[0xaf], &direct),
            Route::NeedMore,
            "half a 2-byte varint"
        );
        for kind in [0x10, 0x1d, 0x30, 0x3d, 0x50, 0x5d, 0x70, 0x7d] {
            assert!(is_subgroup_type(kind), "{kind:#x}");
        }
        for kind in [0x05, 0x0f, 0x1e, 0x2f, 0x20, 0x40, 0x7e, 0x2f00] {
            assert!(!is_subgroup_type(kind), "{kind:#x}");
        }
        // The same table as moq-transport's own decoder.
        for kind in 0u64..0x100 {
            let mut bytes = bytes::BytesMut::new();
            moqcast_media::moq::transport::coding::Encode::encode(&kind, &mut bytes).unwrap();
            let theirs =
                moqcast_media::moq::transport::data::StreamHeaderType::decode(&mut bytes.freeze())
                    .is_ok_and(|t| t.is_subgroup());
            assert_eq!(is_subgroup_type(kind), theirs, "{kind:#x}");
        }
        drop(guard);
        assert_eq!(
            route(&ours, &direct),
            Route::Wire,
            "the alias left with its subscription"
        );
    }
}

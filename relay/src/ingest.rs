//! The relay's reader of publishers' data: subgroup streams and datagrams of the tracks it
//! subscribed to (or that were pushed to it with PUBLISH), into their caches.
//!
//! The session layer ([`moqcast_session::io`]) hands every data stream a publisher opens to
//! [`run`]. Its header names a Track Alias; [`IngestRoutes`] maps the aliases of this session's
//! upstream subscriptions to their caches. One task per stream decodes the objects
//! ([`moqcast_media::moq::wire::SubgroupParser`], no I/O) and pushes them straight into the
//! cache. A stream can overtake the SUBSCRIBE_OK that tells the relay its alias (they travel on
//! different QUIC streams): such a stream waits up to [`ALIAS_WAIT`] for the alias to be
//! routed, then is stopped. Datagrams ([`datagrams`]) are routed the same way.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use bytes::{Bytes, BytesMut};
use moqcast_media::moq::{
    transport::{
        coding::{Decode, DecodeError},
        data::{StreamHeaderType, SubgroupHeader, DEFAULT_PUBLISHER_PRIORITY},
    },
    wire::SubgroupParser,
};
use moqcast_session::{draft18::UniStream, io::DataStream};
use tokio::{sync::watch, task::JoinSet};
use web_transport_quinn as wtq;

use crate::{cache::CachedObject, track::TrackCache};

/// How long a data stream whose Track Alias is not known yet waits for it.
pub const ALIAS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most bytes asked of QUIC per read.
const READ_CHUNK: usize = 64 * 1024;

/// STOP_SENDING code for a stream the relay stopped reading: malformed, or its track is gone.
const STOP_CANCELLED: u32 = moqcast_media::moq::wire::RESET_CANCELLED;

/// Track Aliases of a publisher session's tracks whose subgroup streams the relay reads
/// itself, each with its cache.
#[derive(Debug, Clone)]
pub struct IngestRoutes(Arc<Mutex<HashMap<u64, Route>>>, Arc<watch::Sender<u64>>);

impl Default for IngestRoutes {
    fn default() -> Self {
        Self(Arc::default(), Arc::new(watch::channel(0).0))
    }
}

#[derive(Debug, Clone)]
struct Route {
    cache: Weak<TrackCache>,
    /// Data streams routed so far.
    streams: Arc<std::sync::atomic::AtomicU64>,
    /// The track's default publisher priority, for stream headers that leave it out.
    default_priority: Option<u8>,
    /// The cache's epoch for this upstream ([`TrackCache::repoint`]).
    epoch: u64,
}

impl IngestRoutes {
    /// Routes `alias`'s subgroup streams into `cache`, as its upstream `epoch`
    /// ([`TrackCache::repoint`]), until the returned guard is dropped.
    pub fn insert(
        &self,
        alias: u64,
        cache: &Arc<TrackCache>,
        default_priority: Option<u8>,
        epoch: u64,
    ) -> RouteGuard {
        let streams = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let route = Route {
            cache: Arc::downgrade(cache),
            streams: streams.clone(),
            default_priority,
            epoch,
        };
        self.0.lock().expect("poisoned").insert(alias, route);
        self.1.send_modify(|v| *v = v.wrapping_add(1));
        RouteGuard {
            routes: self.clone(),
            alias,
            streams,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("poisoned").is_empty()
    }

    /// Upstream subscriptions routed now.
    pub fn len(&self) -> usize {
        self.0.lock().expect("poisoned").len()
    }

    fn get(&self, alias: u64) -> Option<Route> {
        self.0.lock().expect("poisoned").get(&alias).cloned()
    }
}

/// Keeps a Track Alias in [`IngestRoutes`] while its upstream subscription lives.
#[derive(Debug)]
pub struct RouteGuard {
    routes: IngestRoutes,
    alias: u64,
    streams: Arc<std::sync::atomic::AtomicU64>,
}

impl RouteGuard {
    /// Data streams of this alias routed so far.
    pub fn streams(&self) -> u64 {
        self.streams.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes.0.lock().expect("poisoned").remove(&self.alias);
    }
}

/// What a subgroup stream's header says, for the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub group: u64,
    /// `None`: the stream's first Object ID is the subgroup ID.
    pub subgroup: Option<u64>,
    pub priority: u8,
    /// Objects carry a properties (extension headers) field.
    pub properties: bool,
    /// Bytes of the header.
    pub len: usize,
    /// The epoch of the upstream whose route the stream took ([`TrackCache::repoint`]).
    pub epoch: u64,
}

/// Where the first bytes of an incoming subgroup stream send it.
#[derive(Debug)]
pub enum Routing {
    /// Not a whole header yet.
    NeedMore,
    /// Not a valid subgroup header.
    Malformed,
    /// A Track Alias the relay has not routed (yet).
    Unknown(u64),
    /// To the relay's reader, into this cache.
    Ingest(StreamHead, Weak<TrackCache>),
}

/// Routes a subgroup stream by its first bytes (the stream type included).
pub fn route(head: &[u8], routes: &IngestRoutes) -> Routing {
    let mut buf = head;
    let header =
        StreamHeaderType::decode(&mut buf).and_then(|kind| SubgroupHeader::decode(kind, &mut buf));
    let header = match header {
        Ok(h) => h,
        Err(DecodeError::More(_)) => return Routing::NeedMore,
        Err(_) => return Routing::Malformed,
    };
    let Some(route) = routes.get(header.track_alias) else {
        return Routing::Unknown(header.track_alias);
    };
    let kind = header.header_type;
    let priority = if kind.uses_default_priority() {
        route.default_priority.unwrap_or(DEFAULT_PUBLISHER_PRIORITY)
    } else {
        header.publisher_priority
    };
    let subgroup = match header.subgroup_id {
        Some(id) => Some(id),
        None if kind.uses_first_object_id_as_subgroup_id() => None,
        None => Some(0),
    };
    route
        .streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Routing::Ingest(
        StreamHead {
            group: header.group_id,
            subgroup,
            priority,
            properties: kind.has_extension_headers(),
            len: head.len() - buf.len(),
            epoch: route.epoch,
        },
        route.cache,
    )
}

/// Takes the data streams a publisher's session opens until it ends; each subgroup stream is
/// read into its track's cache by a task of its own, owned here.
pub async fn run(data: &mut tokio::sync::mpsc::Receiver<DataStream>, routes: IngestRoutes) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            next = data.recv() => match next {
                Some(stream) => match stream.kind {
                    UniStream::Subgroup => {
                        tasks.spawn(accept_subgroup(stream, routes.clone()));
                    }
                    // FETCH responses: the relay makes no FETCH upstream.
                    _ => {
                        let mut recv = stream.recv;
                        let _ = recv.stop(STOP_CANCELLED);
                    }
                },
                None => return,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Reads a subgroup stream's header, waits (bounded) for its alias, then reads it.
async fn accept_subgroup(stream: DataStream, routes: IngestRoutes) {
    let DataStream { head, mut recv, .. } = stream;
    let mut buf = BytesMut::from(&head[..]);
    let mut changes = routes.1.subscribe();
    let deadline = tokio::time::Instant::now() + ALIAS_WAIT;
    loop {
        changes.borrow_and_update();
        match route(&buf, &routes) {
            Routing::Ingest(h, cache) => {
                let _ = buf.split_to(h.len);
                return read_subgroup(cache, h, buf, recv).await;
            }
            Routing::Malformed => {
                tracing::debug!("dropping a data stream with a malformed subgroup header");
                let _ = recv.stop(STOP_CANCELLED);
                return;
            }
            Routing::Unknown(alias) => {
                // The header is whole: wait for the alias to be routed.
                match tokio::time::timeout_at(deadline, changes.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => {
                        tracing::debug!(alias, "dropping a data stream of an unknown Track Alias");
                        let _ = recv.stop(STOP_CANCELLED);
                        return;
                    }
                }
            }
            Routing::NeedMore => match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                _ => return,
            },
        }
    }
}

/// Routes the datagrams a publisher's session sends into their tracks' caches.
pub async fn datagrams(session: wtq::Session, routes: IngestRoutes) {
    while let Ok(bytes) = session.read_datagram().await {
        let d = match moqcast_session::draft18::decode_datagram(bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "dropping a malformed datagram");
                continue;
            }
        };
        let Some(route) = routes.get(d.track_alias) else {
            continue;
        };
        let Some(cache) = route.cache.upgrade() else {
            continue;
        };
        let priority = d
            .priority
            .or(route.default_priority)
            .unwrap_or(DEFAULT_PUBLISHER_PRIORITY);
        cache.push_datagram(
            route.epoch,
            d.group,
            CachedObject {
                id: d.object,
                status: d.status,
                properties: d.properties,
                payload: d.payload,
                end_of_group: d.end_of_group,
                header: Bytes::new(),
            },
            priority,
            d.end_of_group,
        );
    }
}

/// Reads one subgroup stream into its track's cache: the objects after the header (`buf`
/// holds what already arrived), until the stream ends, breaks, or the track goes.
pub async fn read_subgroup(
    cache: Weak<TrackCache>,
    head: StreamHead,
    mut buf: BytesMut,
    mut recv: wtq::RecvStream,
) {
    let Some(c) = cache.upgrade() else {
        let _ = recv.stop(STOP_CANCELLED);
        return;
    };
    let _open = c.open_direct_stream();
    let mut parser = SubgroupParser::new(head.properties, c.max_object_bytes());
    let metrics = c.metrics().clone();
    metrics
        .direct_ingest_streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    drop(c);
    let mut key = None;
    let clean = loop {
        match parser.next(&mut buf) {
            Ok(Some(object)) => {
                let Some(c) = cache.upgrade() else {
                    let _ = recv.stop(STOP_CANCELLED);
                    return;
                };
                let k = match key {
                    Some(k) => k,
                    None => {
                        let subgroup = head.subgroup.unwrap_or(object.id);
                        let Some(group) =
                            c.open_subgroup(head.epoch, head.group, subgroup, head.priority)
                        else {
                            let _ = recv.stop(STOP_CANCELLED);
                            return;
                        };
                        *key.insert((group, subgroup))
                    }
                };
                let cached = CachedObject {
                    id: object.id,
                    status: object.status,
                    properties: object.properties,
                    payload: object.payload,
                    end_of_group: false,
                    header: Bytes::new(),
                };
                if !c.push_object(head.epoch, k, cached) {
                    let _ = recv.stop(STOP_CANCELLED);
                    break false;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                metrics
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(group = head.group, error = %e, "dropping upstream subgroup stream");
                let _ = recv.stop(STOP_CANCELLED);
                break false;
            }
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => match parser.finish(&buf) {
                Ok(()) => break true,
                Err(e) => {
                    metrics
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        group = head.group,
                        error = %e,
                        "upstream subgroup stream ended early"
                    );
                    break false;
                }
            },
            // Reset by the publisher (or the session went): the subgroup is incomplete.
            Err(_) => break false,
        }
    };
    if let (Some(k), Some(c)) = (key, cache.upgrade()) {
        c.end_subgroup(k, clean);
    }
}

#[cfg(test)]
mod tests {
    use moqcast_media::moq::wire;

    use super::*;

    #[test]
    fn routes_only_known_aliases_with_a_whole_header() {
        let routes = IngestRoutes::default();
        let header = wire::subgroup_header(7, 42, 3, 9).unwrap();
        assert!(matches!(route(&header, &routes), Routing::Unknown(7)));
        // No cache to point at in a unit test: a dropped one still routes by alias.
        let limits = crate::cache::CacheLimits::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let budget = crate::track::CacheBudget::new(u64::MAX, metrics);
        let cache = TrackCache::new("b", "t", limits, budget);
        let guard = routes.insert(7, &cache, None, 3);
        match route(&header, &routes) {
            Routing::Ingest(head, _) => assert_eq!(
                head,
                StreamHead {
                    group: 42,
                    subgroup: Some(3),
                    priority: 9,
                    properties: true,
                    len: header.len(),
                    epoch: 3,
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route(&header[..header.len() - 1], &routes),
            Routing::NeedMore
        ));
        // A subgroup type whose header cannot be valid (an alias past the varint range).
        assert!(!matches!(
            route(&[0x05, 0x01], &routes),
            Routing::Ingest(..)
        ));
        drop(guard);
        assert!(routes.is_empty());
        assert!(matches!(route(&header, &routes), Routing::Unknown(7)));
    }
}

//! The relay's own reader of publishers' subgroup streams.
//!
//! moq-transport reads a publisher's data streams inside its session task: each object is
//! decoded there, handed through its `serve` state to the relay's ingest task, and read out
//! again, and every object wakes the publisher's whole session (its control streams, its
//! request futures, the relay's own per-session futures). For the subgroup streams of a track
//! the relay has subscribed to, [`crate::direct::Session`] instead hands the stream here once
//! its header names a Track Alias in [`IngestRoutes`]: one task per stream decodes the objects
//! ([`moqcast_media::moq::wire::SubgroupParser`], no I/O) and pushes them straight into the
//! track's cache. moq-transport gets a placeholder with the stream's header and no objects, so
//! that it still counts the stream against PUBLISH_DONE's Stream Count (draft-18 §10.11).
//!
//! Streams that arrive before the relay knows the alias (the first group can overtake
//! SUBSCRIBE_OK's processing), other streams and datagrams still go through moq-transport;
//! both paths fill the same cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use bytes::{Bytes, BytesMut};
use moqcast_media::moq::{
    transport::{
        coding::{Decode, DecodeError},
        data::{StreamHeaderType, SubgroupHeader},
    },
    wire::SubgroupParser,
};
use web_transport_quinn as wtq;

use crate::{cache::CachedObject, fanout::TrackCache};

/// Most bytes asked of QUIC per read.
const READ_CHUNK: usize = 64 * 1024;

/// STOP_SENDING code for a stream the relay stopped reading: malformed, or its track is gone.
const STOP_CANCELLED: u32 = moqcast_media::moq::wire::RESET_CANCELLED;

/// Track Aliases of a publisher session's tracks whose subgroup streams the relay reads
/// itself, each with its cache.
#[derive(Debug, Default, Clone)]
pub struct IngestRoutes(Arc<Mutex<HashMap<u64, Route>>>);

#[derive(Debug, Clone)]
struct Route {
    cache: Weak<TrackCache>,
    /// The track's default publisher priority, for stream headers that leave it out; `None`
    /// when unknown (such streams then go through moq-transport).
    default_priority: Option<u8>,
}

impl IngestRoutes {
    /// Routes `alias`'s subgroup streams into `cache` until the returned guard is dropped.
    pub fn insert(
        &self,
        alias: u64,
        cache: &Arc<TrackCache>,
        default_priority: Option<u8>,
    ) -> RouteGuard {
        let route = Route {
            cache: Arc::downgrade(cache),
            default_priority,
        };
        self.0.lock().expect("poisoned").insert(alias, route);
        RouteGuard {
            routes: self.clone(),
            alias,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("poisoned").is_empty()
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
}

/// Where the first bytes of an incoming unidirectional stream send it.
#[derive(Debug)]
pub enum Routing {
    /// Not a whole header yet.
    NeedMore,
    /// To moq-transport: not a subgroup stream, not a routed alias, or not understood here.
    Transport,
    /// To the relay's reader, into this cache.
    Ingest(StreamHead, Weak<TrackCache>),
}

/// Routes a stream by its first bytes.
pub fn route(head: &[u8], routes: &IngestRoutes) -> Routing {
    match crate::direct::subgroup_type(&mut &head[..]) {
        Some(true) => {}
        Some(false) => return Routing::Transport,
        None => return Routing::NeedMore,
    }
    let mut buf = head;
    let header =
        StreamHeaderType::decode(&mut buf).and_then(|kind| SubgroupHeader::decode(kind, &mut buf));
    let header = match header {
        Ok(h) => h,
        Err(DecodeError::More(_)) => return Routing::NeedMore,
        Err(_) => return Routing::Transport,
    };
    let Some(route) = routes.get(header.track_alias) else {
        return Routing::Transport;
    };
    let kind = header.header_type;
    let priority = if kind.uses_default_priority() {
        match route.default_priority {
            Some(p) => p,
            None => return Routing::Transport,
        }
    } else {
        header.publisher_priority
    };
    let subgroup = match header.subgroup_id {
        Some(id) => Some(id),
        None if kind.uses_first_object_id_as_subgroup_id() => None,
        None => Some(0),
    };
    Routing::Ingest(
        StreamHead {
            group: header.group_id,
            subgroup,
            priority,
            properties: kind.has_extension_headers(),
            len: head.len() - buf.len(),
        },
        route.cache,
    )
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
                        if !c.open_subgroup(head.group, subgroup, head.priority) {
                            let _ = recv.stop(STOP_CANCELLED);
                            return;
                        }
                        *key.insert((head.group, subgroup))
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
                if !c.push_object(k, cached) {
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
        assert!(matches!(route(&header, &routes), Routing::Transport));
        // No cache to point at in a unit test: a dropped one still routes by alias.
        let limits = crate::cache::CacheLimits::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let budget = crate::fanout::CacheBudget::new(u64::MAX, metrics);
        let cache = TrackCache::new("b", "t", limits, budget);
        let guard = routes.insert(7, &cache, None);
        match route(&header, &routes) {
            Routing::Ingest(head, _) => assert_eq!(
                head,
                StreamHead {
                    group: 42,
                    subgroup: Some(3),
                    priority: 9,
                    properties: true,
                    len: header.len(),
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            route(&header[..header.len() - 1], &routes),
            Routing::NeedMore
        ));
        assert!(matches!(route(&[0x05, 0x01], &routes), Routing::Transport));
        drop(guard);
        assert!(routes.is_empty());
        assert!(matches!(route(&header, &routes), Routing::Transport));
    }
}

//! The relay's own reader of publishers' subgroup streams.
//!
//! moq-transport reads a publisher's data streams inside its session task: each object is
//! decoded there, handed through its `serve` state to the relay's ingest task, and read out
//! again, and every object wakes the publisher's whole session (its control streams, its
//! request futures, the relay's own per-session futures). For the subgroup streams of a track
//! the relay has subscribed to, [`crate::direct::Session`] instead hands the stream here once
//! its header names a Track Alias in [`IngestRoutes`]: one task per stream decodes the objects
//! ([`SubgroupParser`], no I/O) and pushes them straight into the track's cache. moq-transport
//! gets a placeholder with the stream's header and no objects, so that it still counts the
//! stream against PUBLISH_DONE's Stream Count (draft-18 §10.11).
//!
//! Streams that arrive before the relay knows the alias (the first group can overtake
//! SUBSCRIBE_OK's processing), other streams and datagrams still go through moq-transport;
//! both paths fill the same cache.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use bytes::{Buf, Bytes, BytesMut};
use moqcast_media::moq::transport::{
    coding::{Decode, DecodeError},
    data::{
        ExtensionHeaders, ObjectStatus, StreamHeaderType, SubgroupHeader, SubgroupObject,
        SubgroupObjectExt,
    },
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
    // The type is read as a plain varint first: moq-transport's decoder logs an ERROR for
    // every type it does not know, and only subgroup types matter here.
    let mut buf = head;
    match u64::decode(&mut buf) {
        Ok(kind) if crate::direct::is_subgroup_type(kind) => {}
        Ok(_) => return Routing::Transport,
        Err(DecodeError::More(_)) => return Routing::NeedMore,
        Err(_) => return Routing::Transport,
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

/// An object read off a subgroup stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedObject {
    pub id: u64,
    pub status: ObjectStatus,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
}

/// Why a subgroup stream was not read to its end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    #[error("malformed object header: {0}")]
    Malformed(String),
    #[error("object id overflows")]
    IdOverflow,
    #[error("object with status {0:?} carries properties")]
    StatusWithProperties(ObjectStatus),
    #[error("object of {0} bytes is larger than the track cache ({1} bytes)")]
    TooLarge(usize, usize),
    #[error("stream ended inside an object")]
    Truncated,
}

/// Decodes the objects of one subgroup stream, after its header, from bytes as they arrive.
#[derive(Debug)]
pub struct SubgroupParser {
    properties: bool,
    max_payload: usize,
    previous: Option<u64>,
    /// The object whose header was read and whose payload is still arriving.
    pending: Option<(u64, usize, ObjectStatus, ExtensionHeaders)>,
}

impl SubgroupParser {
    pub fn new(properties: bool, max_payload: usize) -> Self {
        Self {
            properties,
            max_payload,
            previous: None,
            pending: None,
        }
    }

    /// The next whole object at the front of `buf` (taken out of it), or `None` until more
    /// bytes arrive.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ParsedObject>, ParseError> {
        if self.pending.is_none() {
            let mut cursor = &buf[..];
            let decoded = if self.properties {
                SubgroupObjectExt::decode(&mut cursor).map(|o| {
                    (
                        o.object_id_delta,
                        o.payload_length,
                        o.status,
                        o.extension_headers,
                    )
                })
            } else {
                SubgroupObject::decode(&mut cursor).map(|o| {
                    (
                        o.object_id_delta,
                        o.payload_length,
                        o.status,
                        ExtensionHeaders::default(),
                    )
                })
            };
            let (delta, len, status, properties) = match decoded {
                Ok(d) => d,
                Err(DecodeError::More(_)) => return Ok(None),
                Err(e) => return Err(ParseError::Malformed(e.to_string())),
            };
            if len > self.max_payload {
                return Err(ParseError::TooLarge(len, self.max_payload));
            }
            let status = status.unwrap_or(ObjectStatus::NormalObject);
            if status != ObjectStatus::NormalObject && !properties.is_empty() {
                return Err(ParseError::StatusWithProperties(status));
            }
            let id = match self.previous {
                Some(p) => p
                    .checked_add(delta)
                    .and_then(|v| v.checked_add(1))
                    .ok_or(ParseError::IdOverflow)?,
                None => delta,
            };
            self.previous = Some(id);
            let used = buf.len() - cursor.len();
            buf.advance(used);
            self.pending = Some((id, len, status, properties));
        }
        let len = self.pending.as_ref().map_or(0, |p| p.1);
        if buf.len() < len {
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        let (id, _, status, properties) = self.pending.take().expect("checked above");
        Ok(Some(ParsedObject {
            id,
            status,
            properties,
            payload: buf.split_to(len).freeze(),
        }))
    }

    /// Checks the stream's end (FIN) against what is left: nothing, or a torn object.
    pub fn finish(&self, rest: &[u8]) -> Result<(), ParseError> {
        if self.pending.is_some() || !rest.is_empty() {
            return Err(ParseError::Truncated);
        }
        Ok(())
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
                    tracing::warn!(group = head.group, error = %e, "upstream subgroup stream ended early");
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

    fn stream(objects: &[(u64, &[u8])]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut previous = None;
        for (id, payload) in objects {
            let status = if payload.is_empty() {
                ObjectStatus::EndOfGroup
            } else {
                ObjectStatus::NormalObject
            };
            let header = wire::object_header(
                previous,
                *id,
                &ExtensionHeaders::default(),
                payload.len(),
                status,
            )
            .unwrap();
            out.extend_from_slice(&header);
            out.extend_from_slice(payload);
            previous = Some(*id);
        }
        out
    }

    #[test]
    fn parses_objects_fed_a_byte_at_a_time() {
        let bytes = stream(&[(0, b"key"), (1, b"delta"), (5, b"")]);
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(o) = parser.next(&mut buf).unwrap() {
                got.push((o.id, o.status, o.payload));
            }
        }
        parser.finish(&buf).unwrap();
        assert_eq!(
            got,
            vec![
                (0, ObjectStatus::NormalObject, Bytes::from_static(b"key")),
                (1, ObjectStatus::NormalObject, Bytes::from_static(b"delta")),
                (5, ObjectStatus::EndOfGroup, Bytes::new()),
            ]
        );
    }

    #[test]
    fn parses_a_whole_stream_at_once() {
        let mut buf = stream(&[(0, b"a"), (1, b"bb")]);
        let mut parser = SubgroupParser::new(true, 1024);
        assert_eq!(parser.next(&mut buf).unwrap().unwrap().payload, "a");
        assert_eq!(parser.next(&mut buf).unwrap().unwrap().payload, "bb");
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        parser.finish(&buf).unwrap();
    }

    #[test]
    fn a_torn_object_or_a_huge_one_is_an_error() {
        let full = stream(&[(0, b"payload")]);
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::from(&full[..full.len() - 2]);
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        assert_eq!(parser.finish(&buf), Err(ParseError::Truncated));

        let mut parser = SubgroupParser::new(true, 4);
        let mut buf = full.clone();
        assert_eq!(parser.next(&mut buf), Err(ParseError::TooLarge(7, 4)));

        // A 2-byte varint prefix followed by garbage that is not a valid properties block:
        // properties length 5 with only a 1-byte body is "need more", never a panic.
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::from(&[0x00, 0x05, 0x01][..]);
        assert_eq!(parser.next(&mut buf).unwrap(), None);
    }

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

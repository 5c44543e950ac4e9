//! The one module of moqcast's shared crate that knows which MoQ Transport draft it speaks.
//!
//! Today that is draft-ietf-moq-transport-18 through Cloudflare's `moq-transport` 0.17
//! (ALPN `moqt-18` for raw QUIC, `h3` + `WT-Protocol: moqt-18` for WebTransport). It holds what
//! needs no connection: the ALPNs, namespaces, the QUIC transport settings, certificate
//! fingerprints and the subgroup stream codec ([`wire`]). Connecting, publishing and
//! subscribing live in the client crate (`moqcast-client`). Moving to another draft means
//! changing this module, the re-exports below and the client crate's `connect` and `track`.

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};

/// Re-export of the draft-specific transport crate for code that needs its session API
/// (the relay). Prefer the helpers of this module where they fit.
pub use moq_transport as transport;
pub use moq_transport::{
    coding::{TrackName, TrackNamespace},
    data::ExtensionHeaders,
    serve,
    session::{Publisher, Session, SessionError, Subscriber, Transport},
};
/// The QUIC implementation underneath, for callers that need connection statistics.
pub use quinn;

/// The ALPN for raw QUIC MoQT of the draft we speak.
pub const MOQT_ALPN: &str = moq_transport::setup::DraftVersion::Draft18.alpn_str();
/// The ALPN for WebTransport over HTTP/3.
pub const WEBTRANSPORT_ALPN: &str = web_transport_quinn::ALPN;

/// The name of the MSF catalog track (draft-ietf-moq-msf §5).
pub const CATALOG_TRACK: &str = "catalog";

/// SHA-256 of a DER certificate.
pub fn certificate_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// QUIC transport settings shared by our clients and the relay.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .expect("10 s fits a QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(4)));
    // BBR rather than quinn's default Cubic for the clients (publisher, bench, sidecar). It was
    // chosen for the relay too, when it delivered 93% instead of 83% of the media at 1000
    // subscribers on an older relay; the relay now picks its own (`--congestion`, Cubic by
    // default: docs/relay.md, "Congestion control and acknowledgements").
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    // One stream per group: allow plenty of concurrent uni streams.
    t.max_concurrent_uni_streams(1024u32.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t
}

/// Builds a namespace from a broadcast path such as `demo` or `live/demo`.
pub fn namespace(broadcast: &str) -> TrackNamespace {
    TrackNamespace::from_utf8_path(broadcast.trim_matches('/'))
}

/// The broadcast path of a namespace: its fields joined by `/` (`live/demo`).
pub fn broadcast_path(namespace: &TrackNamespace) -> String {
    namespace.to_utf8_path().trim_start_matches('/').to_string()
}

/// A namespace as a prefix, for matching longer namespaces below it.
pub fn as_prefix(namespace: &TrackNamespace) -> transport::coding::TrackNamespacePrefix {
    transport::coding::TrackNamespacePrefix::from_utf8_path(&broadcast_path(namespace))
}

/// The data-stream encoding of a subgroup (draft-18 §11.4.2) for a relay that writes its own
/// subgroup streams: the header once per stream, then one object header before each payload.
/// The encoders are the transport crate's, so the bytes are those its own forwarder sends.
pub mod wire {
    use bytes::{Buf, Bytes, BytesMut};
    use moq_transport::{
        coding::{Decode, DecodeError, Encode},
        data::{
            ExtensionHeaders, ObjectStatus, StreamHeaderType, SubgroupHeader, SubgroupIdMode,
            SubgroupObject, SubgroupObjectExt,
        },
    };

    /// Reset code for a subgroup stream abandoned because its subscriber fell behind.
    pub const RESET_TOO_FAR_BEHIND: u32 =
        moq_transport::data::DataStreamResetCode::TooFarBehind as u32;
    /// Reset code for a subgroup stream cut short because the subscription or track ended.
    pub const RESET_CANCELLED: u32 = moq_transport::data::DataStreamResetCode::Cancelled as u32;

    /// Errors building a subgroup stream.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum WireError {
        #[error("object {object} does not follow object {previous} in its subgroup")]
        NotIncreasing { previous: u64, object: u64 },
        #[error("encoding failed: {0}")]
        Encode(String),
    }

    /// The SUBGROUP_HEADER: explicit subgroup id, objects with a properties field, the first
    /// object of the subgroup first (the relay always starts a subgroup at its beginning).
    pub fn subgroup_header(
        track_alias: u64,
        group_id: u64,
        subgroup_id: u64,
        priority: u8,
    ) -> Result<Bytes, WireError> {
        let header = SubgroupHeader {
            header_type: StreamHeaderType::subgroup(
                SubgroupIdMode::Explicit,
                true,
                false,
                false,
                true,
            ),
            track_alias,
            group_id,
            subgroup_id: Some(subgroup_id),
            publisher_priority: priority,
        };
        let mut buf = BytesMut::with_capacity(32);
        header
            .encode(&mut buf)
            .map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(buf.freeze())
    }

    /// The header that precedes an object's `payload_len` payload bytes on a subgroup stream,
    /// after the object `previous` of the same stream (`None`: the stream's first object). An
    /// object with a status other than normal has no payload and carries its status instead.
    /// A relay encodes it once per object: every subscriber's stream that starts at the same
    /// object carries the same bytes.
    pub fn object_header(
        previous: Option<u64>,
        object_id: u64,
        properties: &ExtensionHeaders,
        payload_len: usize,
        status: ObjectStatus,
    ) -> Result<Bytes, WireError> {
        let delta = match previous {
            None => object_id,
            Some(previous) => object_id
                .checked_sub(previous)
                .and_then(|d| d.checked_sub(1))
                .ok_or(WireError::NotIncreasing {
                    previous,
                    object: object_id,
                })?,
        };
        let normal = status == ObjectStatus::NormalObject;
        let object = SubgroupObjectExt {
            object_id_delta: delta,
            extension_headers: properties.clone(),
            payload_length: if normal { payload_len } else { 0 },
            status: (!normal || payload_len == 0).then_some(status),
        };
        let mut buf = BytesMut::with_capacity(if properties.is_empty() { 16 } else { 64 });
        object
            .encode(&mut buf)
            .map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(buf.freeze())
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
}

#[cfg(test)]
mod wire_tests {
    use bytes::Buf;
    use moq_transport::{
        coding::Decode,
        data::{ObjectStatus, StreamHeaderType, SubgroupHeader, SubgroupObjectExt},
    };

    use super::{wire, ExtensionHeaders};
    use bytes::{Bytes, BytesMut};
    use wire::{ParseError, SubgroupParser};

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
    fn subgroup_stream_round_trips_through_the_transport_decoder() {
        let header = wire::subgroup_header(7, 42, 0, 3).unwrap();
        let none = ExtensionHeaders::default();
        let first = wire::object_header(None, 0, &none, 4, ObjectStatus::NormalObject).unwrap();
        let gap = wire::object_header(Some(0), 5, &none, 0, ObjectStatus::EndOfGroup).unwrap();

        let mut buf = header.clone();
        let header_type = StreamHeaderType::decode(&mut buf).unwrap();
        let h = SubgroupHeader::decode(header_type, &mut buf).unwrap();
        assert!(!buf.has_remaining());
        assert_eq!(
            (
                h.track_alias,
                h.group_id,
                h.subgroup_id,
                h.publisher_priority
            ),
            (7, 42, Some(0), 3)
        );
        assert!(h.header_type.has_properties());

        let mut buf = first.clone();
        let o = SubgroupObjectExt::decode(&mut buf).unwrap();
        assert_eq!(
            (o.object_id_delta, o.payload_length, o.status),
            (0, 4, None)
        );
        let mut buf = gap.clone();
        let o = SubgroupObjectExt::decode(&mut buf).unwrap();
        assert_eq!((o.object_id_delta, o.payload_length), (4, 0));
        assert_eq!(o.status, Some(ObjectStatus::EndOfGroup));
    }

    #[test]
    fn object_ids_must_increase() {
        let none = ExtensionHeaders::default();
        assert_eq!(
            wire::object_header(Some(3), 3, &none, 1, ObjectStatus::NormalObject),
            Err(wire::WireError::NotIncreasing {
                previous: 3,
                object: 3
            })
        );
    }
}

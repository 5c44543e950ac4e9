//! draft-ietf-moq-transport-18 on the wire: the only module that knows this draft.
//!
//! What draft-18 puts where (§3.3 "Session initialization", §3.4 "Unidirectional Stream Types",
//! §9 "Control Messages"):
//!
//! - Each peer opens one **unidirectional control stream** that starts with SETUP (type 0x2F00,
//!   which is also the stream type). After SETUP it carries only GOAWAY.
//! - Every **request** is a bidirectional stream whose first message is one of SUBSCRIBE,
//!   PUBLISH, FETCH, TRACK_STATUS, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE or SUBSCRIBE_TRACKS,
//!   with a Request ID. Every later message on that stream (SUBSCRIBE_OK, REQUEST_OK,
//!   REQUEST_ERROR, PUBLISH_DONE, NAMESPACE, ...) carries **no** Request ID: the stream says
//!   which request it belongs to (§9.1).
//! - Objects travel on unidirectional data streams (SUBGROUP_HEADER, FETCH_HEADER); their codec
//!   lives in `moqcast_media::moq::wire`.
//!
//! Every message is `Type (vi64), Length (16), Payload`. The decoders here return `Ok(None)` when
//! the buffer does not yet hold a whole message ("need more bytes") and [`WireError`] when the
//! bytes can never be valid ("malformed"); a payload that is not consumed exactly is malformed.
//! The payload codecs of the individual messages are `moq-transport` 0.17's (pinned), whose
//! varint is draft-18's.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use moq_transport::{
    coding::{
        Decode, DecodeError, Encode, KeyValuePairs, Location, ReasonPhrase, TrackName,
        TrackNamespacePrefix,
    },
    data::{Datagram, DatagramType, ExtensionHeaders, ObjectStatus},
    message::{self, Message, TrackExtensions},
};

/// The TLS ALPN of raw-QUIC MoQT sessions of this draft (§3.1.2), also the `WT-Protocol` value
/// of WebTransport sessions.
pub const ALPN: &str = "moqt-18";

/// The first varint of a control stream: SETUP's message type doubles as the stream type (§3.4).
pub const SETUP_TYPE: u64 = 0x2F00;
/// Stream type of a FETCH data stream (§3.4).
pub const FETCH_HEADER_TYPE: u64 = 0x05;
/// Stream type of a padding stream (§3.4, §10.6): read and discarded.
pub const PADDING_TYPE: u64 = 0x132B_3E28;

/// CLIENT_SETUP's message type in drafts 11-16, where it opened the session on a bidirectional
/// stream. Draft-18 negotiates its version by ALPN or WebTransport subprotocol only (§3.1), so a
/// client that negotiated neither may fall back to this older handshake: it starts what would
/// be a draft-18 request stream.
pub const LEGACY_CLIENT_SETUP_TYPE: u64 = 0x20;

/// The longest message payload the 16-bit Length field allows.
pub const MAX_MESSAGE: usize = u16::MAX as usize;
/// The longest New Session URI of a GOAWAY (§9.4).
pub const MAX_GOAWAY_URI: usize = 8192;

/// What a unidirectional stream's type says it carries (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniStream {
    /// The peer's control stream (starts with SETUP).
    Control,
    /// A SUBGROUP_HEADER data stream (types 0b0XX1XXXX).
    Subgroup,
    /// A FETCH_HEADER data stream.
    Fetch,
    /// A padding stream: discard.
    Padding,
}

/// Classifies a unidirectional stream by its type. Unknown types close the session (§3.4).
pub fn uni_stream(kind: u64) -> Result<UniStream, WireError> {
    match kind {
        SETUP_TYPE => Ok(UniStream::Control),
        FETCH_HEADER_TYPE => Ok(UniStream::Fetch),
        PADDING_TYPE => Ok(UniStream::Padding),
        k if k < 0x80 && k & 0x10 != 0 => Ok(UniStream::Subgroup),
        k => Err(WireError::UnknownStreamType(k)),
    }
}

/// Reads one varint from the front of `buf`: `Ok(None)` if it is incomplete.
pub fn peek_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let mut cursor = buf;
    match u64::decode(&mut cursor) {
        Ok(v) => Ok(Some((v, buf.len() - cursor.len()))),
        Err(DecodeError::More(_)) => Ok(None),
        Err(e) => Err(WireError::malformed("varint", e)),
    }
}

/// Why bytes from the peer can never form a valid message. Each closes the session with
/// PROTOCOL_VIOLATION (§3.6), except where a caller maps it otherwise.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unknown message type {0:#x}")]
    UnknownMessage(u64),
    #[error("message type {0:#x} cannot start a request stream")]
    NotARequest(u64),
    /// A request stream that starts with [`LEGACY_CLIENT_SETUP_TYPE`]: the peer did not
    /// negotiate draft-18.
    #[error(
        "a CLIENT_SETUP of drafts 11-16 (type {0:#x}): the peer did not negotiate moqt-18 (by ALPN, \
         or by WebTransport subprotocol) and offers older drafts only"
    )]
    LegacySetup(u64),
    #[error("message type {0:#x} is not allowed here")]
    Unexpected(u64),
    #[error("unknown unidirectional stream type {0:#x}")]
    UnknownStreamType(u64),
    #[error("the control stream must start with SETUP, got type {0:#x}")]
    NoSetup(u64),
    #[error("message too large to encode ({0} bytes)")]
    TooLarge(usize),
}

impl WireError {
    fn malformed(what: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: err.to_string(),
        }
    }
}

/// One complete message frame at the front of a buffer: its type, payload and total length.
struct Frame<'a> {
    kind: u64,
    payload: &'a [u8],
    len: usize,
}

fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some((kind, n)) = peek_varint(buf)? else {
        return Ok(None);
    };
    let rest = &buf[n..];
    if rest.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    if rest.len() < 2 + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        kind,
        payload: &rest[2..2 + len],
        len: n + 2 + len,
    }))
}

fn encode_frame(kind: u64, payload: &[u8], out: &mut BytesMut) -> Result<(), WireError> {
    if payload.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(payload.len()));
    }
    kind.encode(out)
        .map_err(|e| WireError::malformed("type", e))?;
    out.put_u16(payload.len() as u16);
    out.put_slice(payload);
    Ok(())
}

/// Decodes a payload with `f` and checks that it consumed every byte.
fn exact<T>(
    what: &'static str,
    mut payload: &[u8],
    f: impl FnOnce(&mut &[u8]) -> Result<T, DecodeError>,
) -> Result<T, WireError> {
    let v = f(&mut payload).map_err(|e| match e {
        // Inside a complete frame, running short means the Length field lied.
        DecodeError::More(_) => WireError::malformed(what, "payload shorter than its fields"),
        e => WireError::malformed(what, e),
    })?;
    if !payload.is_empty() {
        return Err(WireError::malformed(
            what,
            format!("{} bytes after the last field", payload.len()),
        ));
    }
    Ok(v)
}

// -----------------------------------------------------------------------------------------
// SETUP and the control stream
// -----------------------------------------------------------------------------------------

/// Encodes SETUP (§9.3) with these Setup Options; it starts our control stream.
pub fn encode_setup(options: &KeyValuePairs) -> Result<Bytes, WireError> {
    let payload = options
        .encode_bounded()
        .map_err(|e| WireError::malformed("SETUP", e))?;
    let mut out = BytesMut::new();
    encode_frame(SETUP_TYPE, &payload, &mut out)?;
    Ok(out.freeze())
}

/// A message on the control stream after SETUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    GoAway(GoAway),
}

/// What the peer's control stream held next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlFrame {
    Setup(KeyValuePairs),
    Message(Control),
}

/// Decodes the next message of the peer's control stream; `first` says whether SETUP is due.
pub fn decode_control(buf: &[u8], first: bool) -> Result<Option<(ControlFrame, usize)>, WireError> {
    let Some(f) = frame(buf)? else {
        return Ok(None);
    };
    let msg = match (first, f.kind) {
        (true, SETUP_TYPE) => ControlFrame::Setup(exact("SETUP", f.payload, |p| {
            let n = p.len();
            KeyValuePairs::decode_bounded(p, n)
        })?),
        (true, k) => return Err(WireError::NoSetup(k)),
        (false, message::wire_id::GoAway) => {
            ControlFrame::Message(Control::GoAway(GoAway::decode(f.payload, true)?))
        }
        (false, SETUP_TYPE) => return Err(WireError::Unexpected(SETUP_TYPE)),
        (false, k) if is_known(k) => return Err(WireError::Unexpected(k)),
        (false, k) => return Err(WireError::UnknownMessage(k)),
    };
    Ok(Some((msg, f.len)))
}

/// GOAWAY (§9.4). `request_id` is present only on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoAway {
    /// Where to reconnect; empty: the current URI.
    pub uri: String,
    /// How long the sender waits before closing, in milliseconds (0: no specific time).
    pub timeout_ms: u64,
    /// On the control stream: the smallest peer Request ID that was not processed.
    pub request_id: Option<u64>,
}

impl GoAway {
    /// Decodes a GOAWAY payload. moq-transport 0.17 peers send the URI alone (the pre-18
    /// layout): Timeout and Request ID are read when present.
    fn decode(payload: &[u8], control: bool) -> Result<Self, WireError> {
        exact("GOAWAY", payload, |p| {
            let len = u64::decode(p)? as usize;
            if len > MAX_GOAWAY_URI {
                return Err(DecodeError::InvalidLength(MAX_GOAWAY_URI, len));
            }
            if p.remaining() < len {
                return Err(DecodeError::More(len - p.remaining()));
            }
            let uri = String::from_utf8(p[..len].to_vec())?;
            p.advance(len);
            let timeout_ms = if p.has_remaining() {
                u64::decode(p)?
            } else {
                0
            };
            let request_id = if control && p.has_remaining() {
                Some(u64::decode(p)?)
            } else {
                None
            };
            Ok(Self {
                uri,
                timeout_ms,
                request_id,
            })
        })
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.uri.len() > MAX_GOAWAY_URI {
            return Err(WireError::TooLarge(self.uri.len()));
        }
        let e = |e| WireError::malformed("GOAWAY", e);
        (self.uri.len() as u64).encode(out).map_err(e)?;
        out.put_slice(self.uri.as_bytes());
        self.timeout_ms.encode(out).map_err(e)?;
        if let Some(id) = self.request_id {
            id.encode(out).map_err(e)?;
        }
        Ok(())
    }

    /// Encodes this GOAWAY as a whole message.
    pub fn encode(&self) -> Result<Bytes, WireError> {
        let mut payload = Vec::new();
        self.encode_payload(&mut payload)?;
        let mut out = BytesMut::new();
        encode_frame(message::wire_id::GoAway, &payload, &mut out)?;
        Ok(out.freeze())
    }
}

fn is_known(kind: u64) -> bool {
    use message::wire_id as w;
    matches!(
        kind,
        w::RequestUpdate
            | w::RequestError
            | w::RequestOk
            | w::Subscribe
            | w::SubscribeOk
            | w::Unsubscribe
            | w::PublishNamespace
            | w::Namespace
            | w::PublishNamespaceDone
            | w::NamespaceDone
            | w::PublishNamespaceCancel
            | w::TrackStatus
            | w::Publish
            | w::PublishDone
            | w::PublishOk
            | w::PublishBlocked
            | w::Fetch
            | w::FetchCancel
            | w::FetchOk
            | w::SubscribeNamespace
            | w::SubscribeTracks
            | w::GoAway
    )
}

// -----------------------------------------------------------------------------------------
// Requests: the first message of a bidirectional stream
// -----------------------------------------------------------------------------------------

/// The first message of a request stream (§3.3), with its Request ID.
#[derive(Debug, Clone)]
pub enum Request {
    Subscribe(message::Subscribe),
    Publish(message::Publish),
    Fetch(message::Fetch),
    TrackStatus(message::TrackStatus),
    PublishNamespace(message::PublishNamespace),
    SubscribeNamespace(message::SubscribeNamespace),
    SubscribeTracks(message::SubscribeTracks),
}

impl Request {
    /// The Request ID it carries (§9.1).
    pub fn id(&self) -> u64 {
        match self {
            Self::Subscribe(m) => m.id,
            Self::Publish(m) => m.id,
            Self::Fetch(m) => m.id,
            Self::TrackStatus(m) => m.id,
            Self::PublishNamespace(m) => m.id,
            Self::SubscribeNamespace(m) => m.id,
            Self::SubscribeTracks(m) => m.id,
        }
    }

    /// Sets the Request ID (the session assigns them).
    pub fn set_id(&mut self, id: u64) {
        match self {
            Self::Subscribe(m) => m.id = id,
            Self::Publish(m) => m.id = id,
            Self::Fetch(m) => m.id = id,
            Self::TrackStatus(m) => m.id = id,
            Self::PublishNamespace(m) => m.id = id,
            Self::SubscribeNamespace(m) => m.id = id,
            Self::SubscribeTracks(m) => m.id = id,
        }
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::Publish(_) => "PUBLISH",
            Self::Fetch(_) => "FETCH",
            Self::TrackStatus(_) => "TRACK_STATUS",
            Self::PublishNamespace(_) => "PUBLISH_NAMESPACE",
            Self::SubscribeNamespace(_) => "SUBSCRIBE_NAMESPACE",
            Self::SubscribeTracks(_) => "SUBSCRIBE_TRACKS",
        }
    }

    fn into_message(self) -> Message {
        match self {
            Self::Subscribe(m) => m.into(),
            Self::Publish(m) => m.into(),
            Self::Fetch(m) => m.into(),
            Self::TrackStatus(m) => m.into(),
            Self::PublishNamespace(m) => m.into(),
            Self::SubscribeNamespace(m) => m.into(),
            Self::SubscribeTracks(m) => m.into(),
        }
    }

    /// Encodes the whole message.
    pub fn encode(self) -> Result<Bytes, WireError> {
        let mut out = BytesMut::new();
        self.into_message()
            .encode(&mut out)
            .map_err(|e| WireError::malformed("request", e))?;
        if out.len() > MAX_MESSAGE + 16 {
            return Err(WireError::TooLarge(out.len()));
        }
        Ok(out.freeze())
    }
}

/// Decodes the first message of a request stream.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, WireError> {
    // Said as soon as the type is read: the old handshake's framing need not match ours, and its
    // sender waits for an answer.
    if let Some((LEGACY_CLIENT_SETUP_TYPE, _)) = peek_varint(buf)? {
        return Err(WireError::LegacySetup(LEGACY_CLIENT_SETUP_TYPE));
    }
    let Some(f) = frame(buf)? else {
        return Ok(None);
    };
    use message::wire_id as w;
    if !matches!(
        f.kind,
        w::Subscribe
            | w::Publish
            | w::Fetch
            | w::TrackStatus
            | w::PublishNamespace
            | w::SubscribeNamespace
            | w::SubscribeTracks
    ) {
        return Err(if is_known(f.kind) {
            WireError::NotARequest(f.kind)
        } else {
            WireError::UnknownMessage(f.kind)
        });
    }
    let mut whole = &buf[..f.len];
    let msg = Message::decode(&mut whole).map_err(|e| WireError::malformed("request", e))?;
    let req = match msg {
        Message::Subscribe(m) => Request::Subscribe(m),
        Message::Publish(m) => Request::Publish(m),
        Message::Fetch(m) => Request::Fetch(m),
        Message::TrackStatus(m) => Request::TrackStatus(m),
        Message::PublishNamespace(m) => Request::PublishNamespace(m),
        Message::SubscribeNamespace(m) => Request::SubscribeNamespace(m),
        Message::SubscribeTracks(m) => Request::SubscribeTracks(m),
        other => return Err(WireError::NotARequest(other.id())),
    };
    Ok(Some((req, f.len)))
}

// -----------------------------------------------------------------------------------------
// Responses: every later message on a request stream (no Request ID)
// -----------------------------------------------------------------------------------------

/// A message after the first on a request stream, in either direction (§9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    SubscribeOk {
        track_alias: u64,
        params: KeyValuePairs,
        properties: TrackExtensions,
    },
    /// REQUEST_OK (§9.5); properties only in TRACK_STATUS_OK.
    RequestOk {
        params: KeyValuePairs,
        properties: TrackExtensions,
    },
    /// PUBLISH_OK (type 0x1E, as moq-transport 0.17 sends it in reply to PUBLISH).
    PublishOk {
        params: KeyValuePairs,
    },
    RequestError {
        code: u64,
        retry_interval: u64,
        reason: String,
    },
    PublishDone {
        status: u64,
        stream_count: u64,
        reason: String,
    },
    FetchOk {
        end_of_track: bool,
        end_location: Location,
        params: KeyValuePairs,
        properties: TrackExtensions,
    },
    Namespace(TrackNamespacePrefix),
    NamespaceDone(TrackNamespacePrefix),
    PublishBlocked {
        suffix: TrackNamespacePrefix,
        track_name: TrackName,
    },
    /// PUBLISH_NAMESPACE_DONE (an empty payload on a request stream).
    PublishNamespaceDone,
    /// UNSUBSCRIBE (an empty payload on a request stream), which moq-transport 0.17 peers send
    /// to end a subscription before resetting its stream.
    Unsubscribe,
    /// REQUEST_UPDATE: a new Request ID and parameters for this stream's request.
    RequestUpdate {
        id: u64,
        params: KeyValuePairs,
    },
    /// GOAWAY for this one request (§9.4).
    GoAway(GoAway),
}

impl Response {
    /// The message type on the wire.
    pub fn kind(&self) -> u64 {
        use message::wire_id as w;
        match self {
            Self::SubscribeOk { .. } => w::SubscribeOk,
            Self::RequestOk { .. } => w::RequestOk,
            Self::PublishOk { .. } => w::PublishOk,
            Self::RequestError { .. } => w::RequestError,
            Self::PublishDone { .. } => w::PublishDone,
            Self::FetchOk { .. } => w::FetchOk,
            Self::Namespace(_) => w::Namespace,
            Self::NamespaceDone(_) => w::NamespaceDone,
            Self::PublishBlocked { .. } => w::PublishBlocked,
            Self::PublishNamespaceDone => w::PublishNamespaceDone,
            Self::Unsubscribe => w::Unsubscribe,
            Self::RequestUpdate { .. } => w::RequestUpdate,
            Self::GoAway(_) => w::GoAway,
        }
    }

    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SubscribeOk { .. } => "SUBSCRIBE_OK",
            Self::RequestOk { .. } => "REQUEST_OK",
            Self::PublishOk { .. } => "PUBLISH_OK",
            Self::RequestError { .. } => "REQUEST_ERROR",
            Self::PublishDone { .. } => "PUBLISH_DONE",
            Self::FetchOk { .. } => "FETCH_OK",
            Self::Namespace(_) => "NAMESPACE",
            Self::NamespaceDone(_) => "NAMESPACE_DONE",
            Self::PublishBlocked { .. } => "PUBLISH_BLOCKED",
            Self::PublishNamespaceDone => "PUBLISH_NAMESPACE_DONE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::RequestUpdate { .. } => "REQUEST_UPDATE",
            Self::GoAway(_) => "GOAWAY",
        }
    }

    /// Encodes the whole message.
    pub fn encode(&self) -> Result<Bytes, WireError> {
        let mut p = Vec::new();
        let e = |e| WireError::malformed("response", e);
        match self {
            Self::SubscribeOk {
                track_alias,
                params,
                properties,
            } => {
                track_alias.encode(&mut p).map_err(e)?;
                params.encode_message_params(&mut p).map_err(e)?;
                properties.encode(&mut p).map_err(e)?;
            }
            Self::RequestOk { params, properties } => {
                params.encode_message_params(&mut p).map_err(e)?;
                properties.encode(&mut p).map_err(e)?;
            }
            Self::PublishOk { params } => params.encode_message_params(&mut p).map_err(e)?,
            Self::RequestError {
                code,
                retry_interval,
                reason,
            } => {
                code.encode(&mut p).map_err(e)?;
                retry_interval.encode(&mut p).map_err(e)?;
                reason_phrase(reason).encode(&mut p).map_err(e)?;
            }
            Self::PublishDone {
                status,
                stream_count,
                reason,
            } => {
                status.encode(&mut p).map_err(e)?;
                stream_count.encode(&mut p).map_err(e)?;
                reason_phrase(reason).encode(&mut p).map_err(e)?;
            }
            Self::FetchOk {
                end_of_track,
                end_location,
                params,
                properties,
            } => {
                end_of_track.encode(&mut p).map_err(e)?;
                end_location.encode(&mut p).map_err(e)?;
                params.encode_message_params(&mut p).map_err(e)?;
                properties.encode(&mut p).map_err(e)?;
            }
            Self::Namespace(s) | Self::NamespaceDone(s) => s.encode(&mut p).map_err(e)?,
            Self::PublishBlocked { suffix, track_name } => {
                suffix.encode(&mut p).map_err(e)?;
                track_name.encode(&mut p).map_err(e)?;
            }
            Self::PublishNamespaceDone | Self::Unsubscribe => {}
            Self::RequestUpdate { id, params } => {
                id.encode(&mut p).map_err(e)?;
                params.encode_message_params(&mut p).map_err(e)?;
            }
            Self::GoAway(g) => g.encode_payload(&mut p)?,
        }
        let mut out = BytesMut::new();
        encode_frame(self.kind(), &p, &mut out)?;
        Ok(out.freeze())
    }
}

/// Reason phrases are at most 1024 bytes (§1.4.4): longer ones are cut at a char boundary.
fn reason_phrase(reason: &str) -> ReasonPhrase {
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    ReasonPhrase(reason[..end].to_string())
}

/// Decodes the next message after the first on a request stream.
pub fn decode_response(buf: &[u8]) -> Result<Option<(Response, usize)>, WireError> {
    let Some(f) = frame(buf)? else {
        return Ok(None);
    };
    use message::wire_id as w;
    let r = match f.kind {
        w::SubscribeOk => exact("SUBSCRIBE_OK", f.payload, |p| {
            Ok(Response::SubscribeOk {
                track_alias: u64::decode(p)?,
                params: KeyValuePairs::decode_message_params(p)?,
                properties: TrackExtensions::decode(p)?,
            })
        })?,
        w::RequestOk => exact("REQUEST_OK", f.payload, |p| {
            Ok(Response::RequestOk {
                params: KeyValuePairs::decode_message_params(p)?,
                properties: TrackExtensions::decode(p)?,
            })
        })?,
        w::PublishOk => exact("PUBLISH_OK", f.payload, |p| {
            Ok(Response::PublishOk {
                params: KeyValuePairs::decode_message_params(p)?,
            })
        })?,
        w::RequestError => exact("REQUEST_ERROR", f.payload, |p| {
            Ok(Response::RequestError {
                code: u64::decode(p)?,
                retry_interval: u64::decode(p)?,
                reason: ReasonPhrase::decode(p)?.0,
            })
        })?,
        w::PublishDone => exact("PUBLISH_DONE", f.payload, |p| {
            Ok(Response::PublishDone {
                status: u64::decode(p)?,
                stream_count: u64::decode(p)?,
                reason: ReasonPhrase::decode(p)?.0,
            })
        })?,
        w::FetchOk => exact("FETCH_OK", f.payload, |p| {
            Ok(Response::FetchOk {
                end_of_track: bool::decode(p)?,
                end_location: Location::decode(p)?,
                params: KeyValuePairs::decode_message_params(p)?,
                properties: TrackExtensions::decode(p)?,
            })
        })?,
        w::Namespace => exact("NAMESPACE", f.payload, |p| {
            Ok(Response::Namespace(TrackNamespacePrefix::decode(p)?))
        })?,
        w::NamespaceDone => exact("NAMESPACE_DONE", f.payload, |p| {
            Ok(Response::NamespaceDone(TrackNamespacePrefix::decode(p)?))
        })?,
        w::PublishBlocked => exact("PUBLISH_BLOCKED", f.payload, |p| {
            Ok(Response::PublishBlocked {
                suffix: TrackNamespacePrefix::decode(p)?,
                track_name: TrackName::decode(p)?,
            })
        })?,
        w::PublishNamespaceDone => exact("PUBLISH_NAMESPACE_DONE", f.payload, |_| {
            Ok(Response::PublishNamespaceDone)
        })?,
        w::Unsubscribe => exact("UNSUBSCRIBE", f.payload, |_| Ok(Response::Unsubscribe))?,
        w::RequestUpdate => exact("REQUEST_UPDATE", f.payload, |p| {
            Ok(Response::RequestUpdate {
                id: u64::decode(p)?,
                params: KeyValuePairs::decode_message_params(p)?,
            })
        })?,
        w::GoAway => Response::GoAway(GoAway::decode(f.payload, false)?),
        k if is_known(k) => return Err(WireError::Unexpected(k)),
        k => return Err(WireError::UnknownMessage(k)),
    };
    Ok(Some((r, f.len)))
}

// -----------------------------------------------------------------------------------------
// Data: object datagrams (§10.3) and FETCH streams (§10.4.4)
// -----------------------------------------------------------------------------------------

/// An object that arrived as a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramObject {
    pub track_alias: u64,
    pub group: u64,
    pub object: u64,
    /// `None`: the track's default priority.
    pub priority: Option<u8>,
    pub status: ObjectStatus,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
    pub end_of_group: bool,
}

/// Decodes an object datagram (§10.3.1).
pub fn decode_datagram(mut bytes: Bytes) -> Result<DatagramObject, WireError> {
    let d = Datagram::decode(&mut bytes).map_err(|e| WireError::malformed("datagram", e))?;
    Ok(DatagramObject {
        track_alias: d.track_alias,
        group: d.group_id,
        object: d.object_id.unwrap_or(0),
        priority: d.publisher_priority,
        status: d.status.unwrap_or(ObjectStatus::NormalObject),
        properties: d.extension_headers.unwrap_or_default(),
        payload: d.payload.unwrap_or_default(),
        end_of_group: d.datagram_type.end_of_group(),
    })
}

/// Encodes one object as a datagram of `track_alias`, with an explicit Object ID and priority.
#[allow(clippy::too_many_arguments)]
pub fn encode_datagram(
    track_alias: u64,
    group: u64,
    object: u64,
    priority: u8,
    status: ObjectStatus,
    properties: &ExtensionHeaders,
    payload: &Bytes,
    end_of_group: bool,
) -> Result<Bytes, WireError> {
    let normal = status == ObjectStatus::NormalObject && !payload.is_empty();
    let with_props = !properties.is_empty() && (normal || status == ObjectStatus::NormalObject);
    let mut kind: u64 = if with_props { 0x01 } else { 0 };
    if normal {
        if end_of_group {
            kind |= 0x02;
        }
    } else {
        kind |= 0x20;
    }
    let mut k = Vec::new();
    kind.encode(&mut k)
        .map_err(|e| WireError::malformed("datagram", e))?;
    let datagram_type =
        DatagramType::decode(&mut &k[..]).map_err(|e| WireError::malformed("datagram", e))?;
    let d = Datagram {
        datagram_type,
        track_alias,
        group_id: group,
        object_id: Some(object),
        publisher_priority: Some(priority),
        extension_headers: with_props.then(|| properties.clone()),
        status: (!normal).then_some(
            if payload.is_empty() && status == ObjectStatus::NormalObject {
                ObjectStatus::NormalObject
            } else {
                status
            },
        ),
        payload: normal.then(|| payload.clone()),
    };
    let mut out = BytesMut::new();
    d.encode(&mut out)
        .map_err(|e| WireError::malformed("datagram", e))?;
    Ok(out.freeze())
}

/// Writes the objects of one FETCH response stream (§10.4.4): the FETCH_HEADER, then each
/// object with every field explicit except where the previous object makes it implicit.
#[derive(Debug, Default)]
pub struct FetchWriter {
    prior: Option<(u64, u64)>,
}

impl FetchWriter {
    /// The FETCH_HEADER of the response to request `request_id`.
    pub fn header(request_id: u64) -> Result<Bytes, WireError> {
        let mut out = Vec::new();
        let e = |e| WireError::malformed("FETCH_HEADER", e);
        FETCH_HEADER_TYPE.encode(&mut out).map_err(e)?;
        request_id.encode(&mut out).map_err(e)?;
        Ok(out.into())
    }

    /// One object, in ascending (group, object) order.
    #[allow(clippy::too_many_arguments)]
    pub fn object(
        &mut self,
        group: u64,
        subgroup: u64,
        object: u64,
        priority: u8,
        status: ObjectStatus,
        properties: &ExtensionHeaders,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        let e = |e| WireError::malformed("FETCH object", e);
        // Subgroup ID present (0x03), Object ID delta present (0x04), priority present (0x10).
        let mut flags: u64 = 0x03 | 0x04 | 0x10;
        let (group_delta, object_field) = match self.prior {
            Some((g, o)) if g == group => {
                if object <= o {
                    return Err(WireError::malformed("FETCH object", "objects out of order"));
                }
                (None, object - o)
            }
            Some((g, _)) if group > g => (Some(group - g - 1), object),
            Some(_) => return Err(WireError::malformed("FETCH object", "groups out of order")),
            None => (Some(group), object),
        };
        if group_delta.is_some() {
            flags |= 0x08;
        }
        let props = !properties.is_empty() && status == ObjectStatus::NormalObject;
        if props {
            flags |= 0x20;
        }
        flags.encode(out).map_err(e)?;
        if let Some(d) = group_delta {
            d.encode(out).map_err(e)?;
        }
        subgroup.encode(out).map_err(e)?;
        object_field.encode(out).map_err(e)?;
        out.push(priority);
        if props {
            properties.encode(out).map_err(e)?;
        }
        if status == ObjectStatus::NormalObject && !payload.is_empty() {
            (payload.len() as u64).encode(out).map_err(e)?;
            out.extend_from_slice(payload);
        } else {
            0u64.encode(out).map_err(e)?;
            status.encode(out).map_err(e)?;
        }
        self.prior = Some((group, object));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_transport::coding::TrackNamespace;

    fn subscribe(id: u64) -> Request {
        Request::Subscribe(message::Subscribe {
            id,
            track_namespace: TrackNamespace::from_utf8_path("live/demo"),
            track_name: "video".into(),
            params: KeyValuePairs::default(),
        })
    }

    #[test]
    fn a_request_round_trips_and_every_shorter_prefix_needs_more() {
        let bytes = subscribe(6).encode().unwrap();
        for n in 0..bytes.len() {
            assert!(decode_request(&bytes[..n]).unwrap().is_none(), "prefix {n}");
        }
        let (req, used) = decode_request(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(req.id(), 6);
        assert!(
            matches!(req, Request::Subscribe(ref m) if m.track_name.to_string_lossy() == "video")
        );
    }

    #[test]
    fn responses_carry_no_request_id_and_round_trip() {
        let cases = vec![
            Response::SubscribeOk {
                track_alias: 7,
                params: KeyValuePairs::default(),
                properties: TrackExtensions::default(),
            },
            Response::RequestOk {
                params: KeyValuePairs::default(),
                properties: TrackExtensions::default(),
            },
            Response::PublishOk {
                params: KeyValuePairs::default(),
            },
            Response::RequestError {
                code: 0x9,
                retry_interval: 0,
                reason: "too many".into(),
            },
            Response::PublishDone {
                status: 2,
                stream_count: 41,
                reason: "track ended".into(),
            },
            Response::FetchOk {
                end_of_track: false,
                end_location: Location::new(3, 1),
                params: KeyValuePairs::default(),
                properties: TrackExtensions::default(),
            },
            Response::Namespace(TrackNamespacePrefix::from_utf8_path("demo")),
            Response::NamespaceDone(TrackNamespacePrefix::from_utf8_path("demo/ai")),
            Response::PublishNamespaceDone,
            Response::Unsubscribe,
            Response::RequestUpdate {
                id: 12,
                params: KeyValuePairs::default(),
            },
            Response::GoAway(GoAway {
                uri: String::new(),
                timeout_ms: 500,
                request_id: None,
            }),
        ];
        for msg in cases {
            let bytes = msg.encode().unwrap();
            for n in 0..bytes.len() {
                assert!(
                    decode_response(&bytes[..n]).unwrap().is_none(),
                    "{} prefix {n}",
                    msg.name()
                );
            }
            let (back, used) = decode_response(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(back, msg);
        }
        // PUBLISH_DONE on the wire: type 0xB, length, then the status straight away.
        let done = Response::PublishDone {
            status: 2,
            stream_count: 3,
            reason: String::new(),
        }
        .encode()
        .unwrap();
        assert_eq!(&done[..], &[0x0b, 0x00, 0x03, 0x02, 0x03, 0x00]);
    }

    #[test]
    fn a_length_that_lies_is_malformed_not_short() {
        // REQUEST_ERROR whose Length says 5 but whose fields need fewer bytes.
        let mut bytes = Response::RequestError {
            code: 1,
            retry_interval: 0,
            reason: String::new(),
        }
        .encode()
        .unwrap()
        .to_vec();
        let len = bytes[2] as usize;
        bytes[2] = (len + 2) as u8;
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode_response(&bytes),
            Err(WireError::Malformed { .. })
        ));
        // And one that says fewer bytes than the fields need.
        let mut short = Response::PublishDone {
            status: 1,
            stream_count: 1,
            reason: "x".into(),
        }
        .encode()
        .unwrap()
        .to_vec();
        short[2] -= 1;
        short.pop();
        assert!(matches!(
            decode_response(&short),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn unknown_and_misplaced_types_are_errors() {
        let mut unknown = BytesMut::new();
        encode_frame(0x3f, &[], &mut unknown).unwrap();
        assert_eq!(
            decode_request(&unknown).unwrap_err(),
            WireError::UnknownMessage(0x3f)
        );
        assert_eq!(
            decode_response(&unknown).unwrap_err(),
            WireError::UnknownMessage(0x3f)
        );
        // A client that negotiated no version (Firefox ESR 153's WebTransport sends no
        // subprotocol) and fell back to the drafts 11-16 handshake is told so, from its first
        // byte on.
        assert_eq!(
            decode_request(&[0x20]).unwrap_err(),
            WireError::LegacySetup(LEGACY_CLIENT_SETUP_TYPE)
        );
        assert!(decode_request(&[0x20, 0x00, 0x40, 0x02])
            .unwrap_err()
            .to_string()
            .contains("did not negotiate moqt-18"));
        // A response type cannot open a request stream.
        let ok = Response::PublishNamespaceDone.encode().unwrap();
        assert_eq!(
            decode_request(&ok).unwrap_err(),
            WireError::NotARequest(message::wire_id::PublishNamespaceDone)
        );
        // A request type is not a response.
        let sub = subscribe(0).encode().unwrap();
        assert_eq!(
            decode_response(&sub).unwrap_err(),
            WireError::Unexpected(message::wire_id::Subscribe)
        );
    }

    #[test]
    fn the_control_stream_starts_with_setup_then_carries_goaway() {
        let mut options = KeyValuePairs::default();
        options.set_bytesvalue(0x1, b"/moq".to_vec());
        let setup = encode_setup(&options).unwrap();
        assert_eq!(&setup[..2], &[0xAF, 0x00]);
        let (frame, n) = decode_control(&setup, true).unwrap().unwrap();
        assert_eq!(n, setup.len());
        assert_eq!(frame, ControlFrame::Setup(options));
        assert_eq!(
            decode_control(&setup, false).unwrap_err(),
            WireError::Unexpected(SETUP_TYPE)
        );
        let goaway = GoAway {
            uri: "moqt://relay-b:4443/".into(),
            timeout_ms: 2000,
            request_id: Some(8),
        };
        let bytes = goaway.encode().unwrap();
        assert_eq!(
            decode_control(&bytes, true).unwrap_err(),
            WireError::NoSetup(0x10)
        );
        let (frame, _) = decode_control(&bytes, false).unwrap().unwrap();
        assert_eq!(frame, ControlFrame::Message(Control::GoAway(goaway)));
    }

    #[test]
    fn a_uri_only_goaway_from_older_peers_is_read() {
        let mut payload = Vec::new();
        4u64.encode(&mut payload).unwrap();
        payload.extend_from_slice(b"moqt");
        let mut bytes = BytesMut::new();
        encode_frame(message::wire_id::GoAway, &payload, &mut bytes).unwrap();
        let (frame, _) = decode_control(&bytes, false).unwrap().unwrap();
        assert_eq!(
            frame,
            ControlFrame::Message(Control::GoAway(GoAway {
                uri: "moqt".into(),
                timeout_ms: 0,
                request_id: None
            }))
        );
    }

    #[test]
    fn datagrams_round_trip_with_payload_status_and_properties() {
        let mut props = ExtensionHeaders::default();
        props
            .0
            .push(moq_transport::coding::KeyValuePair::new_int(0x06, 1234));
        for (status, payload, props, eog) in [
            (
                ObjectStatus::NormalObject,
                Bytes::from_static(b"frame"),
                ExtensionHeaders::default(),
                false,
            ),
            (
                ObjectStatus::NormalObject,
                Bytes::from_static(b"frame"),
                props.clone(),
                true,
            ),
            (
                ObjectStatus::EndOfGroup,
                Bytes::new(),
                ExtensionHeaders::default(),
                false,
            ),
        ] {
            let bytes = encode_datagram(3, 7, 2, 9, status, &props, &payload, eog).unwrap();
            let d = decode_datagram(bytes).unwrap();
            assert_eq!(
                (d.track_alias, d.group, d.object, d.priority),
                (3, 7, 2, Some(9))
            );
            assert_eq!(d.status, status);
            assert_eq!(d.payload, payload);
            assert_eq!(d.properties, props);
            assert_eq!(d.end_of_group, eog);
        }
        assert!(decode_datagram(Bytes::from_static(&[0x3f, 1, 2])).is_err());
    }

    #[test]
    fn fetch_objects_use_deltas_and_refuse_disorder() {
        let mut w = FetchWriter::default();
        let mut out = Vec::new();
        let none = ExtensionHeaders::default();
        w.object(
            5,
            0,
            0,
            1,
            ObjectStatus::NormalObject,
            &none,
            b"a",
            &mut out,
        )
        .unwrap();
        // Flags 0x1f, group 5, subgroup 0, object 0, priority 1, length 1, "a".
        assert_eq!(out, vec![0x1f, 5, 0, 0, 1, 1, b'a']);
        out.clear();
        w.object(
            5,
            0,
            1,
            1,
            ObjectStatus::NormalObject,
            &none,
            b"b",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![0x17, 0, 1, 1, 1, b'b'],
            "same group: object delta 1"
        );
        out.clear();
        w.object(
            8,
            0,
            0,
            1,
            ObjectStatus::NormalObject,
            &none,
            b"c",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![0x1f, 2, 0, 0, 1, 1, b'c'],
            "group delta is 8 - 5 - 1"
        );
        assert!(w
            .object(
                7,
                0,
                0,
                1,
                ObjectStatus::NormalObject,
                &none,
                b"d",
                &mut out
            )
            .is_err());
        assert_eq!(&FetchWriter::header(4).unwrap()[..], &[0x05, 0x04]);
    }

    #[test]
    fn stream_types_are_classified() {
        assert_eq!(uni_stream(SETUP_TYPE), Ok(UniStream::Control));
        assert_eq!(uni_stream(0x05), Ok(UniStream::Fetch));
        assert_eq!(uni_stream(0x10), Ok(UniStream::Subgroup));
        assert_eq!(uni_stream(0x3d), Ok(UniStream::Subgroup));
        assert_eq!(uni_stream(PADDING_TYPE), Ok(UniStream::Padding));
        assert_eq!(uni_stream(0x06), Err(WireError::UnknownStreamType(6)));
    }
}

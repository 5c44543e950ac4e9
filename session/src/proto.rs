//! The session state machine, free of I/O: bytes and events in, actions out, time passed in.
//!
//! [`Core`] knows the session's streams by [`StreamId`], a number it hands out itself, and never
//! touches a socket. The caller (the tokio glue in [`crate::io`], or a test) feeds it what
//! arrived — the peer's control stream bytes, a new request stream and its bytes, a stream's
//! end — and carries out the [`Action`]s it queues: write our control stream, open a request
//! stream, write or finish or reset one, close the session. What the application must decide
//! (a SUBSCRIBE to answer, a response to a request of ours) comes out as an [`Event`].
//!
//! What it enforces, by draft-ietf-moq-transport-18:
//! - SETUP first on the control stream, then only GOAWAY; at most one GOAWAY (§9.4); SETUP
//!   within [`Config::setup_timeout`] or the session closes (CONTROL_MESSAGE_TIMEOUT).
//! - Request IDs of the peer's parity, never repeated (§9.1, INVALID_REQUEST_ID).
//! - Request limits by protocol: the peer may hold at most [`Config::max_requests`] requests at
//!   once. The QUIC layer grants a little more bidirectional-stream credit than that (see
//!   [`Config::stream_credit`]), so a request past the limit still arrives and is answered at
//!   once with REQUEST_ERROR EXCESSIVE_LOAD (§9.6) and FIN: no request is read and left
//!   unanswered.
//! - Responses in order: exactly one first response per request, of the kind the request
//!   allows; later messages only those the request's responder (or requester) may send.
//! - Exact Stream Counts: PUBLISH_DONE carries the number of data streams the application
//!   declared with [`Core::data_stream_opened`] for that subscription (§9.12); the session is
//!   the only place that counts them.
//! - After a GOAWAY we sent, requests with IDs at or past its Request ID, and any that arrive
//!   later, get REQUEST_ERROR GOING_AWAY; past its timeout the session closes with
//!   GOAWAY_TIMEOUT if requests are still open. After a GOAWAY we received, [`Core::open`]
//!   refuses new requests.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use moq_transport::{coding::KeyValuePairs, message::RequestErrorCode};

use crate::draft18::{self, ControlFrame, GoAway, Request, Response, UniStream, WireError};

/// A request stream of this session, numbered by [`Core`].
pub type StreamId = u64;

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Session error codes (§3.6).
pub mod code {
    pub const NO_ERROR: u64 = 0x0;
    pub const INTERNAL_ERROR: u64 = 0x1;
    pub const UNAUTHORIZED: u64 = 0x2;
    pub const PROTOCOL_VIOLATION: u64 = 0x3;
    pub const INVALID_REQUEST_ID: u64 = 0x4;
    pub const GOAWAY_TIMEOUT: u64 = 0x10;
    pub const CONTROL_MESSAGE_TIMEOUT: u64 = 0x11;
}

/// Stream reset error codes (§3.5).
pub mod reset {
    pub const INTERNAL_ERROR: u64 = 0x0;
    pub const CANCELLED: u64 = 0x1;
    pub const DELIVERY_TIMEOUT: u64 = 0x2;
    pub const SESSION_CLOSED: u64 = 0x3;
    pub const GOING_AWAY: u64 = 0x4;
    pub const TOO_FAR_BEHIND: u64 = 0x5;
    pub const EXCESSIVE_LOAD: u64 = 0x9;
}

/// Limits and deadlines of one session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests the peer may hold open at once; more are refused with EXCESSIVE_LOAD.
    pub max_requests: usize,
    /// How long the peer has to send SETUP.
    pub setup_timeout: Duration,
    /// Messages queued on one request that the application has not taken yet; a peer that
    /// sends more (a NAMESPACE flood) has that request reset.
    pub max_queued: usize,
    /// Our Setup Options (PATH, AUTHORITY, AUTHORIZATION TOKEN, MOQT IMPLEMENTATION).
    pub setup_options: KeyValuePairs,
    /// The bidirectional-stream credit the QUIC layer grants the peer at first. It doubles
    /// (see [`Action::StreamCredit`]) whenever the peer's open request streams reach half of
    /// it, up to [`Config::stream_credit`]: QUIC endpoints reserve state for every stream they
    /// allow, so a session that makes few requests should not pay for ten thousand.
    pub initial_stream_credit: u64,
    /// New requests the peer may open per second, on average (0: no limit), after a burst of
    /// [`Config::request_burst`]. Past it the session stops accepting the peer's request
    /// streams until the rate allows: QUIC flow control holds the peer back, and a flood of
    /// requests costs the relay no more than this rate.
    pub request_rate: f64,
    /// Requests the peer may open at once before [`Config::request_rate`] applies.
    pub request_burst: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_requests: 10_000,
            setup_timeout: Duration::from_secs(10),
            max_queued: 1024,
            setup_options: KeyValuePairs::default(),
            initial_stream_credit: 128,
            request_rate: 0.0,
            request_burst: 10_000,
        }
    }
}

impl Config {
    /// The bidirectional streams to grant the peer at the QUIC layer: the request limit plus
    /// room for requests that are refused with EXCESSIVE_LOAD while the limit is reached.
    pub fn stream_credit(&self) -> u64 {
        (self.max_requests as u64).saturating_add(self.max_requests as u64 / 16 + 16)
    }
}

/// A token bucket: on average at most `rate` a second, `burst` at once. Time is passed in.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A full bucket; `None` when `rate` is not positive (no limit).
    pub fn new(rate: f64, burst: u64, now: Instant) -> Option<Self> {
        (rate > 0.0).then(|| {
            let burst = (burst as f64).max(1.0);
            Self {
                rate,
                burst,
                tokens: burst,
                at: now,
            }
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// When the next token is there: `None` if it is now.
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        (self.tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The kind of a request, from its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Subscribe,
    Publish,
    Fetch,
    TrackStatus,
    PublishNamespace,
    SubscribeNamespace,
    SubscribeTracks,
}

impl Kind {
    fn of(req: &Request) -> Self {
        match req {
            Request::Subscribe(_) => Self::Subscribe,
            Request::Publish(_) => Self::Publish,
            Request::Fetch(_) => Self::Fetch,
            Request::TrackStatus(_) => Self::TrackStatus,
            Request::PublishNamespace(_) => Self::PublishNamespace,
            Request::SubscribeNamespace(_) => Self::SubscribeNamespace,
            Request::SubscribeTracks(_) => Self::SubscribeTracks,
        }
    }

    /// Whether `r` may be the first response to a request of this kind.
    fn first_response(self, r: &Response) -> bool {
        use Response as R;
        matches!(
            (self, r),
            (_, R::RequestError { .. })
                | (Self::Subscribe, R::SubscribeOk { .. })
                | (Self::Publish, R::PublishOk { .. } | R::RequestOk { .. })
                | (Self::Fetch, R::FetchOk { .. })
                | (
                    Self::TrackStatus | Self::PublishNamespace | Self::SubscribeNamespace,
                    R::RequestOk { .. }
                )
        )
    }

    /// Whether the responder may send `r` after its first response.
    fn later_from_responder(self, r: &Response) -> bool {
        use Response as R;
        matches!(
            (self, r),
            (_, R::GoAway(_))
                | (Self::Subscribe, R::PublishDone { .. } | R::RequestOk { .. })
                | (
                    Self::SubscribeNamespace,
                    R::Namespace(_) | R::NamespaceDone(_) | R::PublishBlocked { .. }
                )
                | (Self::Publish, R::RequestOk { .. })
        )
    }

    /// Whether the requester may send `r` after its request.
    fn later_from_requester(self, r: &Response) -> bool {
        use Response as R;
        matches!(
            (self, r),
            (_, R::GoAway(_))
                | (
                    Self::Subscribe | Self::SubscribeNamespace | Self::Publish,
                    R::RequestUpdate { .. }
                )
                | (Self::Subscribe, R::Unsubscribe)
                | (Self::Publish, R::PublishDone { .. })
                | (Self::PublishNamespace, R::PublishNamespaceDone)
        )
    }
}

/// What the application learns from the session.
#[derive(Debug, Clone)]
pub enum Event {
    /// The peer's SETUP arrived: the session is up.
    Ready { options: KeyValuePairs },
    /// The peer opened a request; answer it with [`Core::respond`], [`Core::reject`] or
    /// [`Core::publish_done`].
    Request { stream: StreamId, request: Request },
    /// A message on a request stream after its first.
    Message { stream: StreamId, message: Response },
    /// The peer finished (`reset: None`) or reset its side of a request stream. The
    /// application calls [`Core::release`] once it is done with the stream.
    Ended {
        stream: StreamId,
        reset: Option<u64>,
    },
    /// The peer sent GOAWAY on the control stream.
    GoAway(GoAway),
}

/// What the caller must do on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write on our control stream.
    Control(Bytes),
    /// Open a bidirectional stream for `stream` and write `bytes` (a request of ours).
    Open { stream: StreamId, bytes: Bytes },
    /// Write on a request stream; `fin` finishes our side after the bytes.
    Send {
        stream: StreamId,
        bytes: Bytes,
        fin: bool,
    },
    /// Reset our side of a request stream and stop reading the peer's.
    Reset { stream: StreamId, code: u64 },
    /// Close the session.
    Close { code: u64, reason: String },
    /// Let the peer have this many bidirectional streams open at once (QUIC MAX_STREAMS).
    StreamCredit(u64),
}

/// Why a call of the application was refused. The session carries on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    #[error("no such request stream {0}")]
    NoStream(StreamId),
    #[error("{what} is not allowed on a {kind:?} request in its current state")]
    State { kind: Kind, what: &'static str },
    #[error("the peer sent GOAWAY: no new requests on this session")]
    GoingAway,
    #[error("the session is closed")]
    Closed,
    #[error(transparent)]
    Wire(#[from] WireError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inbound: waiting for the first message.
    Opening,
    /// A request without its first response yet.
    Pending,
    /// Answered and still open.
    Open,
    /// Refused, ended or reset: only waiting for the streams to close.
    Done,
}

#[derive(Debug)]
struct Req {
    /// The Request ID (ours or the peer's); 0 until an inbound request's message arrives.
    request_id: u64,
    kind: Option<Kind>,
    inbound: bool,
    phase: Phase,
    rx: BytesMut,
    /// Data streams declared for this request (Stream Count of PUBLISH_DONE).
    streams: u64,
    /// Counts against [`Config::max_requests`].
    counted: bool,
    queued: usize,
}

/// Request IDs of the peer seen so far: everything below `floor` was used, `above` holds the
/// ones used past it (requests arrive on independent streams, so not in order).
#[derive(Debug)]
struct IdWindow {
    floor: u64,
    above: BTreeSet<u64>,
}

impl IdWindow {
    /// The most IDs the peer may leave unused below its highest one.
    const SPREAD: usize = 65_536;

    fn new(first: u64) -> Self {
        Self {
            floor: first,
            above: BTreeSet::new(),
        }
    }

    fn insert(&mut self, id: u64) -> Result<(), &'static str> {
        if id % 2 != self.floor % 2 {
            return Err("a Request ID of the wrong parity");
        }
        if id < self.floor || !self.above.insert(id) {
            return Err("a duplicate Request ID");
        }
        while self.above.remove(&self.floor) {
            self.floor += 2;
        }
        if self.above.len() > Self::SPREAD {
            return Err("Request IDs too far apart");
        }
        Ok(())
    }
}

/// Counters the application exposes as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests of the peer refused with EXCESSIVE_LOAD (the limit was reached).
    pub refused_excessive: u64,
    /// Requests of the peer refused with GOING_AWAY.
    pub refused_going_away: u64,
}

/// One draft-18 session, without I/O.
#[derive(Debug)]
pub struct Core {
    role: Role,
    config: Config,
    setup_deadline: Option<Instant>,
    peer_options: Option<KeyValuePairs>,
    control_rx: BytesMut,
    streams: HashMap<StreamId, Req>,
    next_stream: StreamId,
    next_request_id: u64,
    peer_ids: IdWindow,
    /// Inbound requests counted against the limit.
    inbound_open: usize,
    goaway_sent: Option<(u64, Option<Instant>)>,
    goaway_received: bool,
    closed: bool,
    /// Bidirectional streams granted to the peer now.
    credit: u64,
    stats: Stats,
    events: VecDeque<Event>,
    actions: VecDeque<Action>,
}

impl Core {
    /// A new session; its SETUP is the first queued action.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        let setup = draft18::encode_setup(&config.setup_options);
        let (ours, theirs) = match role {
            Role::Client => (0, 1),
            Role::Server => (1, 0),
        };
        let credit = config.initial_stream_credit.min(config.stream_credit());
        let mut core = Self {
            role,
            setup_deadline: Some(now + config.setup_timeout),
            config,
            peer_options: None,
            control_rx: BytesMut::new(),
            streams: HashMap::new(),
            next_stream: 0,
            next_request_id: ours,
            peer_ids: IdWindow::new(theirs),
            inbound_open: 0,
            goaway_sent: None,
            goaway_received: false,
            closed: false,
            credit: 0,
            stats: Stats::default(),
            events: VecDeque::new(),
            actions: VecDeque::new(),
        };
        core.credit = credit;
        match setup {
            Ok(bytes) => core.actions.push_back(Action::Control(bytes)),
            Err(e) => core.close(code::INTERNAL_ERROR, &format!("our SETUP: {e}")),
        }
        core
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's Setup Options, once its SETUP arrived.
    pub fn peer_options(&self) -> Option<&KeyValuePairs> {
        self.peer_options.as_ref()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Requests of the peer open now (those that count against the limit).
    pub fn inbound_open(&self) -> usize {
        self.inbound_open
    }

    /// Request streams known to the session now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The application took one [`Event::Message`] of `stream`: it no longer counts against
    /// [`Config::max_queued`].
    pub fn taken(&mut self, stream: StreamId) {
        if let Some(r) = self.streams.get_mut(&stream) {
            r.queued = r.queued.saturating_sub(1);
        }
    }

    /// The next thing to do on the wire.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let goaway = self.goaway_sent.and_then(|(_, d)| d);
        match (self.setup_deadline, goaway) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: the SETUP and GOAWAY deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.setup_deadline.is_some_and(|d| now >= d) {
            let secs = self.config.setup_timeout.as_secs_f32();
            self.close(
                code::CONTROL_MESSAGE_TIMEOUT,
                &format!("no SETUP from the peer within {secs} s"),
            );
            return;
        }
        if let Some((id, Some(deadline))) = self.goaway_sent {
            if now >= deadline {
                if self.streams.values().any(|r| r.phase != Phase::Done) {
                    self.close(
                        code::GOAWAY_TIMEOUT,
                        "requests still open when the GOAWAY timeout ran out",
                    );
                } else {
                    self.goaway_sent = Some((id, None));
                }
            }
        }
    }

    /// Closes the session (queues [`Action::Close`] once).
    pub fn close(&mut self, code: u64, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.actions.push_back(Action::Close {
            code,
            reason: reason.to_string(),
        });
    }

    fn violation(&mut self, err: impl std::fmt::Display) {
        self.close(code::PROTOCOL_VIOLATION, &err.to_string());
    }

    // ---------------------------------------------------------------------------------------
    // Control stream
    // ---------------------------------------------------------------------------------------

    /// Bytes of the peer's control stream (from its first byte, the SETUP type).
    pub fn handle_control(&mut self, data: &[u8]) {
        if self.closed {
            return;
        }
        self.control_rx.extend_from_slice(data);
        loop {
            let first = self.peer_options.is_none();
            match draft18::decode_control(&self.control_rx, first) {
                Ok(None) => {
                    if self.control_rx.len() > 2 * draft18::MAX_MESSAGE {
                        self.violation("control message too long");
                    }
                    return;
                }
                Ok(Some((frame, used))) => {
                    let _ = self.control_rx.split_to(used);
                    match frame {
                        ControlFrame::Setup(options) => {
                            self.setup_deadline = None;
                            self.peer_options = Some(options.clone());
                            self.events.push_back(Event::Ready { options });
                        }
                        ControlFrame::Message(draft18::Control::GoAway(g)) => {
                            if self.goaway_received {
                                return self.violation("a second GOAWAY on the control stream");
                            }
                            if self.role == Role::Server && !g.uri.is_empty() {
                                return self.violation("a client's GOAWAY carried a URI");
                            }
                            self.goaway_received = true;
                            self.events.push_back(Event::GoAway(g));
                        }
                    }
                }
                Err(e) => return self.violation(format!("control stream: {e}")),
            }
        }
    }

    /// The peer's control stream ended: that closes the session (§3.3).
    pub fn handle_control_end(&mut self) {
        self.violation("the peer closed its control stream");
    }

    /// Classifies a unidirectional stream by its first bytes: `Ok(None)` until the type is
    /// complete, else the kind and the length of the type. Unknown types close the session.
    pub fn classify_uni(&mut self, head: &[u8]) -> Option<(UniStream, usize)> {
        match draft18::peek_varint(head).and_then(|v| {
            v.map(|(kind, n)| draft18::uni_stream(kind).map(|k| (k, n)))
                .transpose()
        }) {
            Ok(v) => v,
            Err(e) => {
                self.violation(e);
                None
            }
        }
    }

    /// Sends GOAWAY on the control stream; the session closes `timeout` after it if requests
    /// are still open (none: they may take as long as they need).
    pub fn goaway(&mut self, uri: &str, timeout: Option<Duration>, now: Instant) {
        if self.closed || self.goaway_sent.is_some() {
            return;
        }
        let request_id = self.peer_ids.floor;
        let msg = GoAway {
            uri: if self.role == Role::Server {
                uri.to_string()
            } else {
                String::new()
            },
            timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
            request_id: Some(request_id),
        };
        match msg.encode() {
            Ok(bytes) => {
                self.actions.push_back(Action::Control(bytes));
                self.goaway_sent = Some((request_id, timeout.map(|t| now + t)));
            }
            Err(e) => self.close(code::INTERNAL_ERROR, &format!("our GOAWAY: {e}")),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Request streams
    // ---------------------------------------------------------------------------------------

    /// Bidirectional streams granted to the peer now.
    pub fn stream_credit(&self) -> u64 {
        self.credit
    }

    /// Doubles the peer's stream credit once its streams use half of it.
    fn grow_credit(&mut self) {
        let max = self.config.stream_credit();
        let used = self.streams.values().filter(|r| r.inbound).count() as u64;
        if self.credit < max && used * 2 >= self.credit {
            self.credit = (self.credit * 2).clamp(1, max);
            self.actions.push_back(Action::StreamCredit(self.credit));
        }
    }

    /// The peer opened a bidirectional stream: a request, once its first message arrives.
    pub fn accept_stream(&mut self) -> StreamId {
        let id = self.alloc();
        self.streams.insert(
            id,
            Req {
                request_id: 0,
                kind: None,
                inbound: true,
                phase: Phase::Opening,
                rx: BytesMut::new(),
                streams: 0,
                counted: false,
                queued: 0,
            },
        );
        self.grow_credit();
        id
    }

    fn alloc(&mut self) -> StreamId {
        let id = self.next_stream;
        self.next_stream += 1;
        id
    }

    /// Opens a request of ours: assigns its Request ID and queues [`Action::Open`].
    pub fn open(&mut self, mut request: Request) -> Result<StreamId, UsageError> {
        if self.closed {
            return Err(UsageError::Closed);
        }
        if self.goaway_received {
            return Err(UsageError::GoingAway);
        }
        let request_id = self.next_request_id;
        request.set_id(request_id);
        let kind = Kind::of(&request);
        let bytes = request.encode()?;
        self.next_request_id += 2;
        let stream = self.alloc();
        self.streams.insert(
            stream,
            Req {
                request_id,
                kind: Some(kind),
                inbound: false,
                phase: Phase::Pending,
                rx: BytesMut::new(),
                streams: 0,
                counted: false,
                queued: 0,
            },
        );
        self.actions.push_back(Action::Open { stream, bytes });
        Ok(stream)
    }

    /// Bytes arrived on a request stream; `fin` says the peer finished its side.
    pub fn handle_stream(&mut self, stream: StreamId, data: &[u8], fin: bool) {
        if self.closed {
            return;
        }
        let Some(r) = self.streams.get_mut(&stream) else {
            return;
        };
        if r.phase == Phase::Done && (!r.inbound || r.kind.is_none()) {
            // Our request was cancelled, or the peer's stream was reset or stopped before its
            // request arrived: nothing more is read.
            return;
        }
        r.rx.extend_from_slice(data);
        while self.next_message(stream) {}
        if self.closed {
            return;
        }
        if fin {
            let Some(r) = self.streams.get_mut(&stream) else {
                return;
            };
            if !r.rx.is_empty() {
                let left = r.rx.len();
                return self.violation(format!(
                    "a request stream ended inside a message ({left} bytes left)"
                ));
            }
            if r.phase == Phase::Opening {
                // A stream that ended before its request: nothing to answer.
                r.phase = Phase::Done;
            }
            self.events.push_back(Event::Ended {
                stream,
                reset: None,
            });
        }
    }

    /// The peer reset its side of a request stream (or stopped reading ours).
    pub fn handle_stream_reset(&mut self, stream: StreamId, code: u64) {
        if self.closed {
            return;
        }
        if let Some(r) = self.streams.get_mut(&stream) {
            if r.phase == Phase::Opening {
                r.phase = Phase::Done;
            }
            self.events.push_back(Event::Ended {
                stream,
                reset: Some(code),
            });
        }
    }

    /// Decodes one message of `stream` if a whole one is buffered; false when there is none.
    fn next_message(&mut self, stream: StreamId) -> bool {
        let Some(r) = self.streams.get_mut(&stream) else {
            return false;
        };
        if r.rx.is_empty() {
            return false;
        }
        if r.phase == Phase::Opening {
            return match draft18::decode_request(&r.rx) {
                Ok(None) => {
                    if r.rx.len() > draft18::MAX_MESSAGE + 16 {
                        self.violation("request message too long");
                    }
                    false
                }
                Ok(Some((request, used))) => {
                    let _ = r.rx.split_to(used);
                    self.inbound_request(stream, request);
                    true
                }
                Err(e) => {
                    self.violation(format!("request stream: {e}"));
                    false
                }
            };
        }
        match draft18::decode_response(&r.rx) {
            Ok(None) => {
                if r.rx.len() > draft18::MAX_MESSAGE + 16 {
                    self.violation("message too long");
                }
                false
            }
            Ok(Some((message, used))) => {
                let _ = r.rx.split_to(used);
                self.inbound_message(stream, message);
                !self.closed
            }
            Err(e) => {
                self.violation(format!("request stream: {e}"));
                false
            }
        }
    }

    fn inbound_request(&mut self, stream: StreamId, request: Request) {
        let id = request.id();
        if let Err(why) = self.peer_ids.insert(id) {
            return self.close(code::INVALID_REQUEST_ID, &format!("{why}: {id}"));
        }
        let kind = Kind::of(&request);
        let r = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        r.kind = Some(kind);
        r.request_id = id;
        r.phase = Phase::Pending;
        // §9.4: after our GOAWAY, requests at or past its Request ID are refused.
        if self.goaway_sent.is_some_and(|(cutoff, _)| id >= cutoff) {
            self.stats.refused_going_away += 1;
            return self.refuse(
                stream,
                RequestErrorCode::GoingAway,
                "the server is going away",
            );
        }
        if kind == Kind::SubscribeTracks {
            return self.refuse(
                stream,
                RequestErrorCode::NotSupported,
                "SUBSCRIBE_TRACKS is not supported",
            );
        }
        if self.inbound_open >= self.config.max_requests {
            self.stats.refused_excessive += 1;
            let limit = self.config.max_requests;
            return self.refuse(
                stream,
                RequestErrorCode::ExcessiveLoad,
                &format!("at most {limit} requests per session"),
            );
        }
        self.inbound_open += 1;
        let r = self.streams.get_mut(&stream).expect("present");
        r.counted = true;
        self.events.push_back(Event::Request { stream, request });
    }

    /// REQUEST_ERROR + FIN for a request the session refuses by itself.
    fn refuse(&mut self, stream: StreamId, code: RequestErrorCode, reason: &str) {
        let msg = Response::RequestError {
            code: code as u64,
            retry_interval: 0,
            reason: reason.to_string(),
        };
        self.send(stream, &msg, true);
        if let Some(r) = self.streams.get_mut(&stream) {
            r.phase = Phase::Done;
        }
    }

    fn send(&mut self, stream: StreamId, msg: &Response, fin: bool) {
        match msg.encode() {
            Ok(bytes) => self.actions.push_back(Action::Send { stream, bytes, fin }),
            Err(e) => self.close(
                code::INTERNAL_ERROR,
                &format!("encoding {}: {e}", msg.name()),
            ),
        }
    }

    fn inbound_message(&mut self, stream: StreamId, message: Response) {
        let max_queued = self.config.max_queued;
        let r = self
            .streams
            .get_mut(&stream)
            .expect("checked by the caller");
        let Some(kind) = r.kind else {
            // Unreachable through `handle_stream`; a violation rather than a panic if not.
            return self.violation("a message on a request stream without a request");
        };
        let allowed = if r.inbound {
            kind.later_from_requester(&message)
        } else if r.phase == Phase::Pending {
            kind.first_response(&message)
        } else {
            kind.later_from_responder(&message)
        };
        if !allowed {
            let phase = r.phase;
            return self.violation(format!(
                "{} is not allowed on a {kind:?} request ({phase:?})",
                message.name()
            ));
        }
        // Our request ends with REQUEST_ERROR or PUBLISH_DONE: the responder finished its
        // side, and we finish ours at once, so neither end holds the stream open (a responder
        // waits for our FIN before it forgets the request).
        let mut finish_ours = false;
        if !r.inbound && r.phase == Phase::Pending {
            r.phase = if matches!(message, Response::RequestError { .. }) {
                finish_ours = true;
                Phase::Done
            } else {
                Phase::Open
            };
        }
        if matches!(
            message,
            Response::PublishDone { .. } | Response::Unsubscribe
        ) {
            finish_ours |= !r.inbound && r.phase != Phase::Done;
            r.phase = Phase::Done;
        }
        if finish_ours {
            self.actions.push_back(Action::Send {
                stream,
                bytes: Bytes::new(),
                fin: true,
            });
        }
        if r.queued >= max_queued {
            // The application does not keep up with this request: end it, not the session.
            r.phase = Phase::Done;
            self.actions.push_back(Action::Reset {
                stream,
                code: reset::EXCESSIVE_LOAD,
            });
            self.events.push_back(Event::Ended {
                stream,
                reset: Some(reset::EXCESSIVE_LOAD),
            });
            return;
        }
        r.queued += 1;
        self.events.push_back(Event::Message { stream, message });
    }

    // ---------------------------------------------------------------------------------------
    // The application's answers
    // ---------------------------------------------------------------------------------------

    fn req(&mut self, stream: StreamId) -> Result<&mut Req, UsageError> {
        if self.closed {
            return Err(UsageError::Closed);
        }
        self.streams
            .get_mut(&stream)
            .ok_or(UsageError::NoStream(stream))
    }

    /// Answers a request of the peer (SUBSCRIBE_OK, REQUEST_OK, PUBLISH_OK, FETCH_OK), or sends
    /// a later message the responder may send (NAMESPACE, NAMESPACE_DONE, ...). TRACK_STATUS's
    /// REQUEST_OK finishes the stream.
    pub fn respond(&mut self, stream: StreamId, message: Response) -> Result<(), UsageError> {
        let r = self.req(stream)?;
        let kind = r.kind.ok_or(UsageError::State {
            kind: Kind::Subscribe,
            what: "a response before the request",
        })?;
        let ok = if !r.inbound {
            kind.later_from_requester(&message)
        } else if r.phase == Phase::Pending {
            kind.first_response(&message) && !matches!(message, Response::RequestError { .. })
        } else if r.phase == Phase::Open {
            kind.later_from_responder(&message) && !matches!(message, Response::PublishDone { .. })
        } else {
            false
        };
        if !ok {
            return Err(UsageError::State {
                kind,
                what: message.name(),
            });
        }
        let fin = r.inbound && kind == Kind::TrackStatus;
        if r.inbound && r.phase == Phase::Pending {
            r.phase = if fin { Phase::Done } else { Phase::Open };
        }
        let bytes = message.encode()?;
        self.actions.push_back(Action::Send { stream, bytes, fin });
        Ok(())
    }

    /// Refuses a request of the peer with REQUEST_ERROR and finishes the stream.
    pub fn reject(
        &mut self,
        stream: StreamId,
        code: u64,
        retry_interval: u64,
        reason: &str,
    ) -> Result<(), UsageError> {
        let r = self.req(stream)?;
        let kind = r.kind.unwrap_or(Kind::Subscribe);
        if !r.inbound || r.phase != Phase::Pending {
            return Err(UsageError::State {
                kind,
                what: "REQUEST_ERROR",
            });
        }
        r.phase = Phase::Done;
        let bytes = Response::RequestError {
            code,
            retry_interval,
            reason: reason.to_string(),
        }
        .encode()?;
        self.actions.push_back(Action::Send {
            stream,
            bytes,
            fin: true,
        });
        Ok(())
    }

    /// Declares a data stream opened for a subscription we serve (or a PUBLISH of ours):
    /// PUBLISH_DONE will count it.
    pub fn data_stream_opened(&mut self, stream: StreamId) -> Result<(), UsageError> {
        let r = self.req(stream)?;
        let kind = r.kind.unwrap_or(Kind::Subscribe);
        let serving = match kind {
            Kind::Subscribe => r.inbound,
            Kind::Publish => !r.inbound,
            _ => false,
        };
        if !serving || r.phase != Phase::Open {
            return Err(UsageError::State {
                kind,
                what: "a data stream",
            });
        }
        r.streams += 1;
        Ok(())
    }

    /// Ends a subscription we serve (or a PUBLISH of ours) with PUBLISH_DONE, whose Stream
    /// Count is the number of data streams declared for it, and finishes the stream.
    pub fn publish_done(
        &mut self,
        stream: StreamId,
        status: u64,
        reason: &str,
    ) -> Result<u64, UsageError> {
        let r = self.req(stream)?;
        let kind = r.kind.unwrap_or(Kind::Subscribe);
        let ours = matches!(
            (kind, r.inbound),
            (Kind::Subscribe, true) | (Kind::Publish, false)
        );
        if !ours || r.phase != Phase::Open {
            return Err(UsageError::State {
                kind,
                what: "PUBLISH_DONE",
            });
        }
        r.phase = Phase::Done;
        let count = r.streams;
        let bytes = Response::PublishDone {
            status,
            stream_count: count,
            reason: reason.to_string(),
        }
        .encode()?;
        self.actions.push_back(Action::Send {
            stream,
            bytes,
            fin: true,
        });
        Ok(count)
    }

    /// Finishes our side of a request stream (a namespace withdrawn, a fetch answered).
    pub fn finish(&mut self, stream: StreamId) -> Result<(), UsageError> {
        let r = self.req(stream)?;
        r.phase = Phase::Done;
        self.actions.push_back(Action::Send {
            stream,
            bytes: Bytes::new(),
            fin: true,
        });
        Ok(())
    }

    /// Cancels a request stream (an UNSUBSCRIBE, a cancelled FETCH, a subscription dropped):
    /// resets our side and stops reading theirs.
    pub fn cancel(&mut self, stream: StreamId, code: u64) {
        if self.closed {
            return;
        }
        if let Some(r) = self.streams.get_mut(&stream) {
            if r.phase != Phase::Done {
                r.phase = Phase::Done;
                self.actions.push_back(Action::Reset { stream, code });
            }
        }
    }

    /// Forgets a request stream: its streams are closed or no longer of interest. A request of
    /// the peer stops counting against the limit.
    pub fn release(&mut self, stream: StreamId) {
        if let Some(r) = self.streams.remove(&stream) {
            if r.counted {
                self.inbound_open -= 1;
            }
        }
    }

    /// The Request ID of a request stream.
    pub fn request_id(&self, stream: StreamId) -> Option<u64> {
        self.streams.get(&stream).map(|r| r.request_id)
    }

    /// The data streams declared for a request so far.
    pub fn stream_count(&self, stream: StreamId) -> Option<u64> {
        self.streams.get(&stream).map(|r| r.streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_transport::{
        coding::{TrackNamespace, TrackNamespacePrefix},
        message::{self, TrackExtensions},
    };

    fn subscribe(name: &str) -> Request {
        Request::Subscribe(message::Subscribe {
            id: 0,
            track_namespace: TrackNamespace::from_utf8_path("demo"),
            track_name: name.into(),
            params: KeyValuePairs::default(),
        })
    }

    fn config(max_requests: usize) -> Config {
        Config {
            max_requests,
            ..Config::default()
        }
    }

    /// A client and a server core wired to each other in memory: every action one queues is
    /// carried to the other, as the tokio glue does over QUIC.
    struct Pair {
        client: Core,
        server: Core,
        /// Client stream id -> server stream id, and back.
        c2s: HashMap<StreamId, StreamId>,
        s2c: HashMap<StreamId, StreamId>,
        /// What each side closed the session with.
        closed: Vec<(Role, u64, String)>,
        /// Streams each side reset: (side, its stream id, code).
        resets: Vec<(Role, StreamId, u64)>,
        /// FINs each side sent: (side, its stream id).
        fins: Vec<(Role, StreamId)>,
        now: Instant,
    }

    impl Pair {
        fn new(server: Config) -> Self {
            let now = Instant::now();
            let mut p = Self {
                client: Core::new(Role::Client, Config::default(), now),
                server: Core::new(Role::Server, server, now),
                c2s: HashMap::new(),
                s2c: HashMap::new(),
                closed: Vec::new(),
                resets: Vec::new(),
                fins: Vec::new(),
                now,
            };
            p.run();
            assert!(matches!(p.client.poll_event(), Some(Event::Ready { .. })));
            assert!(matches!(p.server.poll_event(), Some(Event::Ready { .. })));
            p
        }

        /// Carries actions until both sides are quiet.
        fn run(&mut self) {
            loop {
                let mut moved = false;
                while let Some(a) = self.client.poll_action() {
                    moved = true;
                    self.carry(Role::Client, a);
                }
                while let Some(a) = self.server.poll_action() {
                    moved = true;
                    self.carry(Role::Server, a);
                }
                if !moved {
                    return;
                }
            }
        }

        fn carry(&mut self, from: Role, action: Action) {
            let (to, map) = match from {
                Role::Client => (&mut self.server, &mut self.c2s),
                Role::Server => (&mut self.client, &mut self.s2c),
            };
            match action {
                Action::Control(bytes) => to.handle_control(&bytes),
                Action::Open { stream, bytes } => {
                    let theirs = to.accept_stream();
                    map.insert(stream, theirs);
                    let back = match from {
                        Role::Client => &mut self.s2c,
                        Role::Server => &mut self.c2s,
                    };
                    back.insert(theirs, stream);
                    to.handle_stream(theirs, &bytes, false);
                }
                Action::Send { stream, bytes, fin } => {
                    if fin {
                        self.fins.push((from, stream));
                    }
                    if let Some(&theirs) = map.get(&stream) {
                        to.handle_stream(theirs, &bytes, fin);
                    }
                }
                Action::Reset { stream, code } => {
                    self.resets.push((from, stream, code));
                    if let Some(&theirs) = map.get(&stream) {
                        to.handle_stream_reset(theirs, code);
                    }
                }
                Action::Close { code, reason } => self.closed.push((from, code, reason)),
                Action::StreamCredit(_) => {}
            }
        }

        fn server_requests(&mut self) -> Vec<(StreamId, Request)> {
            let mut v = Vec::new();
            while let Some(ev) = self.server.poll_event() {
                if let Event::Request { stream, request } = ev {
                    v.push((stream, request));
                }
            }
            v
        }

        fn client_messages(&mut self) -> Vec<(StreamId, Response)> {
            let mut v = Vec::new();
            while let Some(ev) = self.client.poll_event() {
                if let Event::Message { stream, message } = ev {
                    self.client.taken(stream);
                    v.push((stream, message));
                }
            }
            v
        }
    }

    fn ok(alias: u64) -> Response {
        Response::SubscribeOk {
            track_alias: alias,
            params: KeyValuePairs::default(),
            properties: TrackExtensions::default(),
        }
    }

    /// Found by the hostile-peer suite: a peer opens a request stream, stops reading the
    /// relay's side at once (STOP_SENDING, which the glue reports as a reset), then sends a
    /// response message where its request should be. The core panicked ("a request past
    /// Opening has a kind") and poisoned the session; now the bytes are dropped.
    #[test]
    fn a_stream_stopped_before_its_request_ignores_what_follows() {
        for bytes in [
            &[0x07u8, 0x00, 0x01, 0x00][..],
            &[0x07, 0x00],
            &[0x99, 0x12, 0x00],
        ] {
            let mut p = Pair::new(Config::default());
            let s = p.server.accept_stream();
            p.server.handle_stream_reset(s, 0);
            p.server.handle_stream(s, bytes, false);
            p.server.handle_stream(s, &[], true);
            p.run();
            assert!(!p.server.is_closed());
            // The session goes on.
            p.client.open(subscribe("after")).unwrap();
            p.run();
            assert_eq!(p.server_requests().len(), 1);
        }
    }

    #[test]
    fn a_subscription_is_answered_and_publish_done_counts_the_streams_opened() {
        let mut p = Pair::new(Config::default());
        let c = p.client.open(subscribe("video")).unwrap();
        p.run();
        let [(s, Request::Subscribe(m))] = &p.server_requests()[..] else {
            panic!("one SUBSCRIBE expected");
        };
        assert_eq!(m.id, 0, "the client's first Request ID is 0");
        let s = *s;
        // Not before the subscription is accepted.
        assert!(p.server.data_stream_opened(s).is_err());
        p.server.respond(s, ok(1)).unwrap();
        for _ in 0..3 {
            p.server.data_stream_opened(s).unwrap();
        }
        assert_eq!(p.server.publish_done(s, 2, "track ended").unwrap(), 3);
        p.run();
        let msgs = p.client_messages();
        assert_eq!(msgs.len(), 2);
        assert!(matches!(msgs[0], (st, Response::SubscribeOk { track_alias: 1, .. }) if st == c));
        assert!(
            matches!(
                msgs[1],
                (
                    _,
                    Response::PublishDone {
                        status: 2,
                        stream_count: 3,
                        ..
                    }
                )
            ),
            "{msgs:?}"
        );
        assert!(
            p.fins.contains(&(Role::Server, s)),
            "PUBLISH_DONE finishes the stream"
        );
        // Nothing can follow PUBLISH_DONE.
        assert!(p.server.data_stream_opened(s).is_err());
        assert!(p.server.publish_done(s, 2, "again").is_err());
        assert!(p.closed.is_empty());
    }

    /// Found by the hostile-peer suite: a requester whose request was refused kept its side
    /// of the stream open, so the relay held every refused request for its 10 s linger (and,
    /// with a 16 KiB read buffer each, 22,000 refused SUBSCRIBEs took it from 30 to 418 MB).
    #[test]
    fn a_refused_or_finished_request_finishes_the_requesters_side() {
        let mut p = Pair::new(config(1));
        let first = p.client.open(subscribe("a")).unwrap();
        let refused = p.client.open(subscribe("b")).unwrap();
        p.run();
        let reqs = p.server_requests();
        assert_eq!(reqs.len(), 1);
        assert!(p.fins.contains(&(Role::Client, refused)), "{:?}", p.fins);
        // A subscription that ends with PUBLISH_DONE: both sides finish.
        let (s, _) = reqs[0];
        p.server.respond(s, ok(1)).unwrap();
        p.run();
        p.server.publish_done(s, 2, "track ended").unwrap();
        p.run();
        assert!(p.fins.contains(&(Role::Server, s)));
        assert!(p.fins.contains(&(Role::Client, first)), "{:?}", p.fins);
        assert!(p.closed.is_empty());
    }

    #[test]
    fn the_request_rate_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        assert!(RateLimit::new(0.0, 10, t0).is_none(), "0 is no limit");
        let mut l = RateLimit::new(100.0, 5, t0).unwrap();
        for _ in 0..5 {
            assert_eq!(l.ready_at(t0), None);
            assert!(l.take(t0));
        }
        assert!(!l.take(t0));
        let next = l.ready_at(t0).expect("empty");
        assert_eq!(next - t0, Duration::from_millis(10));
        assert!(l.take(next));
        // A long pause refills up to the burst, no more.
        let later = next + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.take(later));
        }
        assert!(!l.take(later));
    }

    #[test]
    fn requests_past_the_limit_are_refused_at_once_and_the_limit_lifts_when_one_ends() {
        let mut p = Pair::new(config(3));
        let streams: Vec<_> = (0..5)
            .map(|i| p.client.open(subscribe(&format!("t{i}"))).unwrap())
            .collect();
        p.run();
        let reqs = p.server_requests();
        assert_eq!(reqs.len(), 3, "three requests reach the application");
        assert_eq!(p.server.stats().refused_excessive, 2);
        let msgs = p.client_messages();
        let refused: Vec<_> = msgs
            .iter()
            .filter(|(_, m)| matches!(m, Response::RequestError { code: 0x9, .. }))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(
            refused,
            streams[3..].to_vec(),
            "the last two get EXCESSIVE_LOAD"
        );
        // The client ends one subscription: the next request is served.
        let (s0, _) = reqs[0];
        p.client.cancel(streams[0], reset::CANCELLED);
        p.run();
        assert!(matches!(
            p.server.poll_event(),
            Some(Event::Ended { stream, reset: Some(1) }) if stream == s0
        ));
        p.server.release(s0);
        p.client.open(subscribe("t5")).unwrap();
        p.run();
        assert_eq!(p.server_requests().len(), 1);
        assert_eq!(p.server.inbound_open(), 3);
        assert!(p.closed.is_empty());
    }

    #[test]
    fn stream_credit_doubles_as_requests_arrive_up_to_the_limit_and_its_headroom() {
        let mut p = Pair::new(config(1000));
        assert_eq!(p.server.stream_credit(), 128);
        let mut grants = Vec::new();
        for i in 0..1100 {
            p.client.open(subscribe(&format!("t{i}"))).unwrap();
            while let Some(a) = p.client.poll_action() {
                p.carry(Role::Client, a);
            }
            while let Some(a) = p.server.poll_action() {
                if let Action::StreamCredit(n) = a {
                    grants.push(n);
                } else {
                    p.carry(Role::Server, a);
                }
            }
        }
        // 1000 + 1000/16 + 16 = 1078 at most.
        assert_eq!(grants, vec![256, 512, 1024, 1078]);
        assert_eq!(p.server.stats().refused_excessive, 100);
    }

    #[test]
    fn ten_thousand_requests_fit_the_default_limit() {
        let mut p = Pair::new(Config::default());
        for i in 0..10_000 {
            p.client.open(subscribe(&format!("t{i}"))).unwrap();
        }
        p.run();
        let reqs = p.server_requests();
        assert_eq!(reqs.len(), 10_000);
        for (s, _) in &reqs {
            p.server.respond(*s, ok(*s)).unwrap();
        }
        p.client.open(subscribe("one too many")).unwrap();
        p.run();
        let msgs = p.client_messages();
        assert_eq!(
            msgs.iter()
                .filter(|(_, m)| matches!(m, Response::SubscribeOk { .. }))
                .count(),
            10_000
        );
        assert!(matches!(
            msgs.last(),
            Some((_, Response::RequestError { code: 0x9, .. }))
        ));
    }

    #[test]
    fn a_duplicate_or_wrong_parity_request_id_closes_the_session() {
        let mut p = Pair::new(Config::default());
        let mut bytes = subscribe("a").encode().unwrap().to_vec();
        let s = p.server.accept_stream();
        p.server.handle_stream(s, &bytes, false);
        assert!(matches!(p.server.poll_event(), Some(Event::Request { .. })));
        let s2 = p.server.accept_stream();
        p.server.handle_stream(s2, &bytes, false);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::INVALID_REQUEST_ID,
                ..
            })
        ));
        // A server-parity ID from the client.
        let mut q = Pair::new(Config::default());
        let mut req = subscribe("b");
        req.set_id(1);
        bytes = req.encode().unwrap().to_vec();
        let s = q.server.accept_stream();
        q.server.handle_stream(s, &bytes, false);
        assert!(matches!(
            q.server.poll_action(),
            Some(Action::Close {
                code: code::INVALID_REQUEST_ID,
                ..
            })
        ));
    }

    #[test]
    fn request_ids_arriving_out_of_order_are_accepted() {
        let mut w = IdWindow::new(0);
        for id in [4, 0, 2, 8, 6] {
            w.insert(id).unwrap();
        }
        assert_eq!(w.floor, 10);
        assert!(w.above.is_empty());
        assert!(w.insert(4).is_err());
        assert!(w.insert(11).is_err());
    }

    #[test]
    fn goaway_refuses_later_requests_and_closes_after_its_timeout_if_requests_remain() {
        let mut p = Pair::new(Config::default());
        let first = p.client.open(subscribe("a")).unwrap();
        p.run();
        let reqs = p.server_requests();
        p.server.respond(reqs[0].0, ok(0)).unwrap();
        p.server
            .goaway("moqt://other:4443/", Some(Duration::from_secs(2)), p.now);
        p.run();
        let mut saw = false;
        while let Some(ev) = p.client.poll_event() {
            if let Event::GoAway(g) = ev {
                assert_eq!(g.uri, "moqt://other:4443/");
                assert_eq!(g.timeout_ms, 2000);
                assert_eq!(g.request_id, Some(2), "request 0 was processed");
                saw = true;
            }
        }
        assert!(saw);
        // The client opens no new request after a GOAWAY ...
        assert_eq!(p.client.open(subscribe("b")), Err(UsageError::GoingAway));
        // ... and one that crossed the GOAWAY gets GOING_AWAY.
        let mut late = subscribe("c");
        late.set_id(2);
        let s = p.server.accept_stream();
        p.server.handle_stream(s, &late.encode().unwrap(), false);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Send { bytes, fin: true, .. })
                if matches!(draft18::decode_response(&bytes), Ok(Some((Response::RequestError { code: 0x6, .. }, _))))
        ));
        assert_eq!(p.server.stats().refused_going_away, 1);
        // Request 0 is still open at the deadline: the session closes.
        let deadline = p.server.poll_timeout().unwrap();
        assert_eq!(deadline, p.now + Duration::from_secs(2));
        p.server.handle_timeout(deadline - Duration::from_millis(1));
        assert!(!p.server.is_closed());
        p.server.handle_timeout(deadline);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::GOAWAY_TIMEOUT,
                ..
            })
        ));
        let _ = first;
    }

    #[test]
    fn a_goaway_deadline_with_no_open_request_passes_quietly() {
        let mut p = Pair::new(Config::default());
        p.server.goaway("", Some(Duration::from_millis(500)), p.now);
        p.run();
        p.server.handle_timeout(p.now + Duration::from_secs(1));
        assert!(!p.server.is_closed());
        assert_eq!(p.server.poll_timeout(), None);
    }

    #[test]
    fn a_peer_without_setup_is_closed_at_the_deadline() {
        let now = Instant::now();
        let mut server = Core::new(
            Role::Server,
            Config {
                setup_timeout: Duration::from_secs(3),
                ..Config::default()
            },
            now,
        );
        assert!(matches!(server.poll_action(), Some(Action::Control(_))));
        assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(3)));
        server.handle_timeout(now + Duration::from_secs(3));
        assert!(matches!(
            server.poll_action(),
            Some(Action::Close {
                code: code::CONTROL_MESSAGE_TIMEOUT,
                ..
            })
        ));
    }

    #[test]
    fn protocol_violations_close_the_session() {
        // A response type as the first message of a request stream.
        let mut p = Pair::new(Config::default());
        let s = p.server.accept_stream();
        p.server.handle_stream(s, &ok(1).encode().unwrap(), false);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ));
        // SUBSCRIBE_OK twice.
        let mut p = Pair::new(Config::default());
        let c = p.client.open(subscribe("a")).unwrap();
        p.run();
        let (s, _) = p.server_requests()[0];
        p.server.respond(s, ok(1)).unwrap();
        assert!(
            p.server.respond(s, ok(1)).is_err(),
            "the core refuses a second answer"
        );
        p.run();
        p.client.handle_stream(c, &ok(1).encode().unwrap(), false);
        assert!(matches!(
            p.client.poll_action(),
            Some(Action::Close {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ));
        // A stream that ends in the middle of a message.
        let mut p = Pair::new(Config::default());
        let s = p.server.accept_stream();
        let bytes = subscribe("a").encode().unwrap();
        p.server.handle_stream(s, &bytes[..bytes.len() - 1], true);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ));
        // A second SETUP.
        let mut p = Pair::new(Config::default());
        p.server
            .handle_control(&draft18::encode_setup(&KeyValuePairs::default()).unwrap());
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ));
    }

    #[test]
    fn namespace_subscriptions_carry_namespace_messages_and_a_flood_resets_only_that_request() {
        let cfg = Config {
            max_queued: 4,
            ..Config::default()
        };
        let now = Instant::now();
        let mut p = Pair::new(Config::default());
        p.client = Core::new(Role::Client, cfg, now);
        p.server = Core::new(Role::Server, Config::default(), now);
        p.run();
        while p.client.poll_event().is_some() {}
        while p.server.poll_event().is_some() {}
        let c = p
            .client
            .open(Request::SubscribeNamespace(message::SubscribeNamespace {
                id: 0,
                track_namespace_prefix: TrackNamespacePrefix::from_utf8_path("live"),
                params: KeyValuePairs::default(),
            }))
            .unwrap();
        p.run();
        let (s, _) = p.server_requests()[0];
        p.server
            .respond(
                s,
                Response::RequestOk {
                    params: KeyValuePairs::default(),
                    properties: TrackExtensions::default(),
                },
            )
            .unwrap();
        for i in 0..3 {
            p.server
                .respond(
                    s,
                    Response::Namespace(TrackNamespacePrefix::from_utf8_path(&format!("b{i}"))),
                )
                .unwrap();
        }
        p.run();
        assert_eq!(p.client_messages().len(), 4);
        // Now the client does not read: the fifth unread message resets that request only.
        for i in 0..6 {
            p.server
                .respond(
                    s,
                    Response::Namespace(TrackNamespacePrefix::from_utf8_path(&format!("x{i}"))),
                )
                .unwrap();
        }
        p.run();
        assert!(p.resets.contains(&(Role::Client, c, reset::EXCESSIVE_LOAD)));
        assert!(!p.client.is_closed());
    }

    #[test]
    fn a_publish_of_the_peer_is_accepted_then_ended_by_its_publish_done() {
        let mut p = Pair::new(Config::default());
        let c = p
            .client
            .open(Request::Publish(message::Publish {
                id: 0,
                track_namespace: TrackNamespace::from_utf8_path("demo"),
                track_name: "video".into(),
                track_alias: 5,
                params: KeyValuePairs::default(),
                track_extensions: TrackExtensions::default(),
            }))
            .unwrap();
        p.run();
        let (s, req) = p.server_requests().remove(0);
        assert!(matches!(req, Request::Publish(ref m) if m.track_alias == 5));
        p.server
            .respond(
                s,
                Response::PublishOk {
                    params: KeyValuePairs::default(),
                },
            )
            .unwrap();
        p.run();
        assert!(matches!(p.client_messages()[..], [(st, Response::PublishOk { .. })] if st == c));
        p.client.data_stream_opened(c).unwrap();
        assert_eq!(p.client.publish_done(c, 2, "").unwrap(), 1);
        p.run();
        let mut done = false;
        while let Some(ev) = p.server.poll_event() {
            if let Event::Message {
                message: Response::PublishDone { stream_count, .. },
                ..
            } = ev
            {
                assert_eq!(stream_count, 1);
                done = true;
            }
        }
        assert!(done);
    }

    #[test]
    fn track_status_is_answered_once_and_finished() {
        let mut p = Pair::new(Config::default());
        p.client
            .open(Request::TrackStatus(message::TrackStatus {
                id: 0,
                track_namespace: TrackNamespace::from_utf8_path("demo"),
                track_name: "video".into(),
                params: KeyValuePairs::default(),
            }))
            .unwrap();
        p.run();
        let (s, _) = p.server_requests()[0];
        p.server
            .respond(
                s,
                Response::RequestOk {
                    params: KeyValuePairs::default(),
                    properties: TrackExtensions::default(),
                },
            )
            .unwrap();
        assert!(p.fins.is_empty());
        p.run();
        assert!(p.fins.contains(&(Role::Server, s)));
        p.server.release(s);
        assert_eq!(p.server.inbound_open(), 0);
    }

    #[test]
    fn data_streams_of_unknown_type_close_the_session() {
        let mut p = Pair::new(Config::default());
        assert_eq!(p.server.classify_uni(&[]), None);
        assert_eq!(
            p.server.classify_uni(&[0x14]),
            Some((UniStream::Subgroup, 1))
        );
        assert_eq!(p.server.classify_uni(&[0x06]), None);
        assert!(matches!(
            p.server.poll_action(),
            Some(Action::Close {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ));
    }
}

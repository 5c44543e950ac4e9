//! Tokio glue: runs a [`Core`] over a web-transport-quinn session (raw QUIC or WebTransport).
//!
//! [`establish`] returns three things:
//! - a [`Session`] handle (cheap to clone) to make requests of the peer and to end the session;
//! - [`Incoming`]: the peer's requests as typed handles, and the data streams it opens;
//! - a [`Driver`] that the caller must run (spawn it, or `select!` on it). It owns every task of
//!   the session — one per request stream, one per unidirectional stream being classified, the
//!   control stream and the timer — and aborts them all when it ends or is dropped.
//!
//! Each request stream has one task that reads the peer's bytes into the core and writes what
//! the core queued for that stream, in order; a stream blocked by flow control blocks only
//! itself. The core is behind one mutex per session, held only for the synchronous calls.
//!
//! Dropping a handle of a request that is still open cancels it: an outbound subscription is
//! reset (UNSUBSCRIBE in draft-18), a subscription being served ends with PUBLISH_DONE, an
//! unanswered inbound request is refused. Data streams are opened directly on the QUIC
//! connection by [`Serving::open_stream`], which declares each to the core for Stream Count.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moq_transport::{
    coding::{KeyValuePairs, Location, TrackNamespace, TrackNamespacePrefix},
    message::{self, TrackExtensions},
};
use tokio::sync::{mpsc, watch, Notify};
use web_transport_quinn as wt;

use crate::{
    draft18::{GoAway, Request, Response, UniStream},
    proto::{self, Action, Core, Event, Role, Stats, StreamId, UsageError},
    Config,
};

/// How long a request stream waits for the peer to end its side after ours ended.
const LINGER: Duration = Duration::from_secs(10);
/// Most bytes read per call on a request or control stream.
const READ_CHUNK: usize = 16 * 1024;
/// Inbound data streams waiting for the application.
const DATA_QUEUE: usize = 256;

/// Why a session ended, or a request of ours failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("session closed: {0}")]
    Closed(String),
    /// We closed the session because the peer broke the protocol (§3.6 code).
    #[error("session closed with error {code:#x}: {reason}")]
    Violation { code: u64, reason: String },
    #[error("the peer refused the request: code {code:#x}, {reason:?}")]
    Refused { code: u64, reason: String },
    #[error("the peer ended the request (reset code {0:?})")]
    Ended(Option<u64>),
    #[error("unexpected {0} from the peer")]
    Unexpected(&'static str),
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// What a request stream still has to write, and what it received for the application.
#[derive(Default)]
struct StreamState {
    out: VecDeque<Out>,
    /// Writes queued so far, and written so far (for [`Handle::flushed`]).
    queued: u64,
    written: u64,
    inbox: VecDeque<Response>,
    /// The peer finished its side (moq-transport peers FIN right after their request: that
    /// alone does not end a request).
    fin: bool,
    /// The peer reset its side or stopped reading ours.
    reset: Option<u64>,
    /// The session closed.
    dead: bool,
}

enum Out {
    Bytes(Bytes, bool),
    Reset(u64),
}

/// One request stream, shared by its task and the application's handle. When both are gone
/// the core forgets the stream.
struct StreamShared {
    id: StreamId,
    session: Weak<Shared>,
    state: Mutex<StreamState>,
    /// Wakes the stream's task (something to write).
    task: Notify,
    /// Wakes the handle (a message arrived, the stream ended, bytes were written).
    handle: Notify,
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        // Not `with`: this may run while the session state is locked. The next `with` releases.
        if let Some(shared) = self.session.upgrade() {
            shared.released.lock().expect("poisoned").push(self.id);
        }
    }
}

struct State {
    core: Core,
    streams: HashMap<StreamId, Weak<StreamShared>>,
    control: VecDeque<Bytes>,
    ready: bool,
    goaway: Option<GoAway>,
    closed: Option<String>,
    /// The error code we closed the session with, if we did.
    close_code: Option<u64>,
    /// Where the core's [`Stats`] are added up across sessions, and what was added so far.
    counters: Option<Arc<Counters>>,
    counted: Stats,
}

/// Refusals added up across sessions (for example a process's metrics): give each session the
/// same one with [`Session::count_into`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests refused with EXCESSIVE_LOAD (a session's request limit was reached).
    pub refused_excessive: std::sync::atomic::AtomicU64,
    /// Requests refused with GOING_AWAY (at or past our GOAWAY's Request ID).
    pub refused_going_away: std::sync::atomic::AtomicU64,
    /// Times a session's next request stream waited for its request rate
    /// ([`Config::request_rate`]).
    pub rate_limited: std::sync::atomic::AtomicU64,
}

impl State {
    /// Adds what the core counted since the last call to the shared counters.
    fn sync_counters(&mut self) {
        let Some(counters) = &self.counters else {
            return;
        };
        let now = self.core.stats();
        if now == self.counted {
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        let add = |total: &std::sync::atomic::AtomicU64, now: u64, before: u64| {
            total.fetch_add(now.saturating_sub(before), Relaxed);
        };
        add(
            &counters.refused_excessive,
            now.refused_excessive,
            self.counted.refused_excessive,
        );
        add(
            &counters.refused_going_away,
            now.refused_going_away,
            self.counted.refused_going_away,
        );
        self.counted = now;
    }
}

struct Shared {
    wt: wt::Session,
    /// The QUIC connection underneath, to raise the peer's stream credit.
    quic: Option<quinn::Connection>,
    state: Mutex<State>,
    /// Wakes the control-stream writer and the timer.
    control: Notify,
    timer: Notify,
    /// The session is up (peer SETUP) or closed.
    status: watch::Sender<Status>,
    requests: mpsc::Sender<IncomingRequest>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Streams whose task and handle are both gone, to forget at the next `with`.
    released: Mutex<Vec<StreamId>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Starting,
    Ready,
    Closed(String),
}

impl Shared {
    /// Runs `f` on the core, then routes every event and action it queued.
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let mut wake_control = false;
        let (r, spawn, deadline_moved) = {
            let mut s = self.state.lock().unwrap_or_else(|poisoned| {
                // A task of this session panicked while it held the state (a bug): end the
                // session rather than leave it open and wedged, and let its tasks wind down.
                tracing::error!("session state poisoned by a panic: closing the session");
                self.wt
                    .close(proto::code::INTERNAL_ERROR as u32, b"internal error");
                poisoned.into_inner()
            });
            let released = std::mem::take(&mut *self.released.lock().expect("poisoned"));
            for id in released {
                s.streams.remove(&id);
                s.core.release(id);
            }
            let before = s.core.poll_timeout();
            let r = f(&mut s);
            let spawn = self.route(&mut s, &mut wake_control);
            s.sync_counters();
            (r, spawn, s.core.poll_timeout() != before)
        };
        for (stream, bytes) in spawn {
            self.spawn_open(stream, bytes);
        }
        if wake_control {
            self.control.notify_one();
        }
        if deadline_moved {
            self.timer.notify_one();
        }
        r
    }

    fn route(
        self: &Arc<Self>,
        s: &mut State,
        wake_control: &mut bool,
    ) -> Vec<(Arc<StreamShared>, Bytes)> {
        let mut opens = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(ev) = s.core.poll_event() {
                progressed = true;
                match ev {
                    Event::Ready { .. } => {
                        s.ready = true;
                        self.status.send_replace(Status::Ready);
                    }
                    Event::Request { stream, request } => {
                        let Some(ss) = s.streams.get(&stream).and_then(Weak::upgrade) else {
                            continue;
                        };
                        let req = IncomingRequest::new(Handle::new(self.clone(), ss), request);
                        if let Err(e) = self.requests.try_send(req) {
                            // The application is not taking requests fast enough.
                            let req = match e {
                                mpsc::error::TrySendError::Full(r)
                                | mpsc::error::TrySendError::Closed(r) => r,
                            };
                            let _ = s.core.reject(
                                stream,
                                message::RequestErrorCode::ExcessiveLoad as u64,
                                0,
                                "too many requests waiting",
                            );
                            req.defuse();
                        }
                    }
                    Event::Message { stream, message } => {
                        if let Some(ss) = s.streams.get(&stream).and_then(Weak::upgrade) {
                            ss.state.lock().expect("poisoned").inbox.push_back(message);
                            ss.handle.notify_waiters();
                        } else {
                            s.core.taken(stream);
                        }
                    }
                    Event::Ended { stream, reset } => {
                        if let Some(ss) = s.streams.get(&stream).and_then(Weak::upgrade) {
                            let mut st = ss.state.lock().expect("poisoned");
                            match reset {
                                None => st.fin = true,
                                Some(code) => st.reset = Some(code),
                            }
                            drop(st);
                            ss.handle.notify_waiters();
                        }
                    }
                    Event::GoAway(g) => s.goaway = Some(g),
                }
            }
            while let Some(action) = s.core.poll_action() {
                progressed = true;
                match action {
                    Action::Control(bytes) => {
                        s.control.push_back(bytes);
                        *wake_control = true;
                    }
                    Action::Open { stream, bytes } => {
                        let ss = Arc::new(StreamShared::new(stream, Arc::downgrade(self)));
                        s.streams.insert(stream, Arc::downgrade(&ss));
                        opens.push((ss, bytes));
                    }
                    Action::Send { stream, bytes, fin } => {
                        if let Some(ss) = s.streams.get(&stream).and_then(Weak::upgrade) {
                            let mut st = ss.state.lock().expect("poisoned");
                            st.out.push_back(Out::Bytes(bytes, fin));
                            st.queued += 1;
                            drop(st);
                            ss.task.notify_one();
                        }
                    }
                    Action::Reset { stream, code } => {
                        if let Some(ss) = s.streams.get(&stream).and_then(Weak::upgrade) {
                            let mut st = ss.state.lock().expect("poisoned");
                            st.out.push_back(Out::Reset(code));
                            st.queued += 1;
                            drop(st);
                            ss.task.notify_one();
                        }
                    }
                    Action::StreamCredit(n) => {
                        if let Some(conn) = &self.quic {
                            if let Ok(n) = quinn::VarInt::from_u64(n) {
                                conn.set_max_concurrent_bi_streams(n);
                            }
                        }
                    }
                    Action::Close { code, reason } => {
                        tracing::debug!(code, %reason, "closing the MoQ session");
                        self.wt.close(code as u32, reason.as_bytes());
                        s.close_code.get_or_insert(code);
                        self.mark_closed(s, reason);
                    }
                }
            }
            if !progressed {
                return opens;
            }
        }
    }

    fn mark_closed(&self, s: &mut State, reason: String) {
        if s.closed.is_some() {
            return;
        }
        s.closed = Some(reason.clone());
        self.status.send_replace(Status::Closed(reason));
        for ss in s.streams.values().filter_map(Weak::upgrade) {
            ss.state.lock().expect("poisoned").dead = true;
            ss.handle.notify_waiters();
            ss.task.notify_one();
        }
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("poisoned");
        // Reap the finished ones so the set holds only live tasks.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    fn spawn_open(self: &Arc<Self>, ss: Arc<StreamShared>, first: Bytes) {
        let shared = self.clone();
        self.spawn(async move {
            match shared.wt.open_bi().await {
                Ok((send, recv)) => {
                    {
                        let mut st = ss.state.lock().expect("poisoned");
                        st.out.push_front(Out::Bytes(first, false));
                        st.queued += 1;
                    }
                    run_stream(shared, ss, send, recv).await;
                }
                Err(e) => {
                    let mut st = ss.state.lock().expect("poisoned");
                    st.dead = true;
                    drop(st);
                    ss.handle.notify_waiters();
                    tracing::debug!(error = %e, "could not open a request stream");
                }
            }
        });
    }
}

impl StreamShared {
    fn new(id: StreamId, session: Weak<Shared>) -> Self {
        Self {
            id,
            session,
            state: Mutex::new(StreamState::default()),
            task: Notify::new(),
            handle: Notify::new(),
        }
    }
}

/// Reads the peer's side into the core and writes what the core queued for this stream.
async fn run_stream(
    shared: Arc<Shared>,
    ss: Arc<StreamShared>,
    mut send: wt::SendStream,
    mut recv: wt::RecvStream,
) {
    // Chunks as QUIC holds them, not a buffer of our own: a session may hold thousands of
    // request streams open (a subscription each), and a 16 KiB buffer apiece was 80 MB for
    // 5,000 of them.
    let mut reading = true;
    let mut writing = true;
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        // Everything queued, in order.
        loop {
            let next = {
                let mut st = ss.state.lock().expect("poisoned");
                if st.dead {
                    return;
                }
                st.out.pop_front()
            };
            let Some(out) = next else { break };
            match out {
                Out::Bytes(bytes, fin) => {
                    if writing {
                        if !bytes.is_empty() && send.write_all(&bytes).await.is_err() {
                            writing = false;
                        }
                        if fin {
                            let _ = send.finish();
                            writing = false;
                        }
                    }
                }
                Out::Reset(code) => {
                    if writing {
                        let _ = send.reset(code as u32);
                        writing = false;
                    }
                    if reading {
                        let _ = recv.stop(code as u32);
                        reading = false;
                    }
                }
            }
            ss.state.lock().expect("poisoned").written += 1;
            ss.handle.notify_waiters();
        }
        if !writing && !reading {
            return;
        }
        if !writing && linger.is_none() {
            linger = Some(tokio::time::Instant::now() + LINGER);
        }
        let deadline = linger.unwrap_or_else(|| tokio::time::Instant::now() + LINGER * 1000);
        tokio::select! {
            r = recv.read_chunk(READ_CHUNK, true), if reading => match r {
                Ok(Some(chunk)) => {
                    shared.with(|s| s.core.handle_stream(ss.id, &chunk.bytes, false));
                }
                Ok(None) => {
                    reading = false;
                    shared.with(|s| s.core.handle_stream(ss.id, &[], true));
                }
                Err(wt::ReadError::Reset(code)) => {
                    reading = false;
                    shared.with(|s| s.core.handle_stream_reset(ss.id, code.into()));
                }
                Err(_) => {
                    reading = false;
                    shared.with(|s| s.core.handle_stream_reset(ss.id, proto::reset::SESSION_CLOSED));
                }
            },
            stopped = send.stopped(), if writing => {
                writing = false;
                let code = match stopped {
                    Ok(Some(code)) => code.into(),
                    _ => proto::reset::SESSION_CLOSED,
                };
                shared.with(|s| s.core.handle_stream_reset(ss.id, code));
            }
            () = ss.task.notified() => {}
            () = tokio::time::sleep_until(deadline), if linger.is_some() => {
                // The peer never ended its side: stop reading it.
                let _ = recv.stop(proto::reset::CANCELLED as u32);
                return;
            }
        }
    }
}

/// Starts a session over `session`: queues our SETUP and returns the handles and the driver.
/// Run the driver, then wait for [`Session::ready`]. With `quic`, the session raises the
/// peer's bidirectional-stream credit as its requests grow ([`Config::initial_stream_credit`]);
/// the QUIC transport config must then grant that initial credit.
pub fn establish(
    session: wt::Session,
    quic: Option<quinn::Connection>,
    role: Role,
    config: Config,
) -> (Session, Incoming, Driver) {
    // Every request waiting here counts against the request limit, which bounds the queue.
    let (requests_tx, requests) = mpsc::channel(config.max_requests.clamp(1, 1 << 20));
    let (data_tx, data) = mpsc::channel(DATA_QUEUE);
    let (status, _) = watch::channel(Status::Starting);
    let request_rate =
        proto::RateLimit::new(config.request_rate, config.request_burst, Instant::now());
    let core = Core::new(role, config, Instant::now());
    let shared = Arc::new(Shared {
        wt: session,
        quic,
        state: Mutex::new(State {
            core,
            streams: HashMap::new(),
            control: VecDeque::new(),
            ready: false,
            goaway: None,
            closed: None,
            close_code: None,
            counters: None,
            counted: Stats::default(),
        }),
        control: Notify::new(),
        timer: Notify::new(),
        status,
        requests: requests_tx,
        tasks: Mutex::new(tokio::task::JoinSet::new()),
        released: Mutex::new(Vec::new()),
    });
    // Move the SETUP the core queued into the control queue.
    shared.with(|_| ());
    (
        Session {
            shared: shared.clone(),
        },
        Incoming { requests, data },
        Driver {
            shared,
            data: Some(data_tx),
            request_rate,
        },
    )
}

/// Owns the session's tasks: run it to completion (it returns when the session closes).
/// Dropping it aborts every task of the session.
pub struct Driver {
    shared: Arc<Shared>,
    data: Option<mpsc::Sender<DataStream>>,
    /// How fast the peer's request streams are accepted ([`Config::request_rate`]).
    request_rate: Option<proto::RateLimit>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.tasks.lock().expect("poisoned").abort_all();
    }
}

impl Driver {
    /// Runs the session until it closes; returns why.
    pub async fn run(mut self) -> Error {
        let shared = self.shared.clone();
        let data = self.data.take().expect("run once");
        shared.spawn(control_writer(shared.clone()));
        shared.spawn(timer(shared.clone()));
        let wt = shared.wt.clone();
        let mut rate = self.request_rate.take();
        loop {
            // Past the request rate, the peer's next request stream waits in QUIC (which holds
            // the peer back by flow control) until a token is there.
            let accept_at = rate
                .as_mut()
                .and_then(|r| r.ready_at(Instant::now()))
                .map(tokio::time::Instant::from_std);
            if accept_at.is_some() {
                let counters = shared.with(|s| s.counters.clone());
                if let Some(c) = counters {
                    c.rate_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(accept_at.unwrap_or_else(tokio::time::Instant::now)),
                    if accept_at.is_some() => {}
                bi = wt.accept_bi(), if accept_at.is_none() => match bi {
                    Ok((send, recv)) => {
                        if let Some(r) = rate.as_mut() {
                            r.take(Instant::now());
                        }
                        let ss = shared.with(|s| {
                            let id = s.core.accept_stream();
                            let ss = Arc::new(StreamShared::new(id, Arc::downgrade(&shared)));
                            s.streams.insert(id, Arc::downgrade(&ss));
                            ss
                        });
                        shared.spawn(run_stream(shared.clone(), ss, send, recv));
                    }
                    Err(e) => break self.finish(e.to_string()),
                },
                uni = wt.accept_uni() => match uni {
                    Ok(recv) => {
                        shared.spawn(classify(shared.clone(), recv, data.clone()));
                    }
                    Err(e) => break self.finish(e.to_string()),
                },
                status = wait_closed(&shared) => break self.finish(status),
            }
        }
    }

    fn finish(&self, reason: String) -> Error {
        let (reason, code) = self.shared.with(|s| {
            self.shared.mark_closed(s, reason);
            (s.closed.clone().unwrap_or_default(), s.close_code)
        });
        self.shared.tasks.lock().expect("poisoned").abort_all();
        match code {
            Some(code) if code != proto::code::NO_ERROR => Error::Violation { code, reason },
            _ => Error::Closed(reason),
        }
    }
}

async fn wait_closed(shared: &Arc<Shared>) -> String {
    let mut rx = shared.status.subscribe();
    loop {
        if let Status::Closed(r) = &*rx.borrow_and_update() {
            return r.clone();
        }
        if rx.changed().await.is_err() {
            return "session dropped".into();
        }
    }
}

async fn control_writer(shared: Arc<Shared>) {
    let mut send = match shared.wt.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            shared.with(|s| {
                s.core
                    .close(proto::code::INTERNAL_ERROR, &format!("control stream: {e}"))
            });
            return;
        }
    };
    loop {
        let next = shared.with(|s| s.control.pop_front());
        match next {
            Some(bytes) => {
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            None => shared.control.notified().await,
        }
    }
}

async fn timer(shared: Arc<Shared>) {
    loop {
        let deadline = shared.with(|s| s.core.poll_timeout());
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        shared.with(|s| s.core.handle_timeout(Instant::now()));
                    }
                    () = shared.timer.notified() => {}
                }
            }
            None => shared.timer.notified().await,
        }
    }
}

/// Reads a unidirectional stream's type: the control stream feeds the core, data streams go to
/// the application.
async fn classify(shared: Arc<Shared>, mut recv: wt::RecvStream, data: mpsc::Sender<DataStream>) {
    let mut head = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    let (kind, _) = loop {
        match recv.read(&mut byte).await {
            Ok(Some(1)) => head.push(byte[0]),
            Ok(Some(_)) => continue,
            _ => return,
        }
        if let Some(k) = shared.with(|s| s.core.classify_uni(&head)) {
            break k;
        }
        if head.len() >= 8 || shared.with(|s| s.closed.is_some()) {
            return;
        }
    };
    match kind {
        UniStream::Control => {
            shared.with(|s| s.core.handle_control(&head));
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(n)) => {
                        let chunk = &buf[..n];
                        shared.with(|s| s.core.handle_control(chunk));
                    }
                    _ => {
                        shared.with(|s| s.core.handle_control_end());
                        return;
                    }
                }
            }
        }
        UniStream::Padding => {
            let _ = recv.stop(0);
        }
        UniStream::Subgroup | UniStream::Fetch => {
            let _ = data
                .send(DataStream {
                    kind,
                    head: Bytes::from(head),
                    recv,
                })
                .await;
        }
    }
}

/// A data stream the peer opened: its type (already read, in `head`) and the rest.
pub struct DataStream {
    pub kind: UniStream,
    /// The bytes read to classify the stream: its type varint.
    pub head: Bytes,
    pub recv: wt::RecvStream,
}

/// What the peer asks of us, and the data streams it opens.
pub struct Incoming {
    pub requests: mpsc::Receiver<IncomingRequest>,
    pub data: mpsc::Receiver<DataStream>,
}

/// A handle to a running session.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Waits for the peer's SETUP. Errors if the session closed first.
    pub async fn ready(&self) -> Result<KeyValuePairs, Error> {
        let mut rx = self.shared.status.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Status::Ready => {
                    return Ok(self
                        .shared
                        .with(|s| s.core.peer_options().cloned().unwrap_or_default()))
                }
                Status::Closed(r) => return Err(Error::Closed(r.clone())),
                Status::Starting => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed("session dropped".into()));
            }
        }
    }

    /// The underlying WebTransport (or raw QUIC) session, for data streams and statistics.
    pub fn transport(&self) -> &wt::Session {
        &self.shared.wt
    }

    /// Counters of refused requests.
    pub fn stats(&self) -> Stats {
        self.shared.with(|s| s.core.stats())
    }

    /// Adds this session's refusals (so far and from now on) to `counters`, which other
    /// sessions may share.
    pub fn count_into(&self, counters: Arc<Counters>) {
        self.shared.with(|s| s.counters = Some(counters));
    }

    /// Requests of the peer open now.
    pub fn inbound_requests(&self) -> usize {
        self.shared.with(|s| s.core.inbound_open())
    }

    /// Whether the peer sent GOAWAY, and what it said.
    pub fn goaway_received(&self) -> Option<GoAway> {
        self.shared.with(|s| s.goaway.clone())
    }

    /// Sends GOAWAY: later requests of the peer are refused, and the session closes `timeout`
    /// after it if requests are still open.
    pub fn goaway(&self, uri: &str, timeout: Option<Duration>) {
        self.shared
            .with(|s| s.core.goaway(uri, timeout, Instant::now()));
    }

    /// Closes the session with a draft-18 session error code (§3.6).
    pub fn close(&self, code: u64, reason: &str) {
        self.shared.with(|s| s.core.close(code, reason));
    }

    /// Waits until the session is closed; returns why.
    pub async fn closed(&self) -> Error {
        Error::Closed(wait_closed(&self.shared).await)
    }

    fn open(&self, request: Request) -> Result<Handle, Error> {
        let shared = &self.shared;
        let (id, rid) = shared.with(|s| -> Result<_, Error> {
            if let Some(r) = &s.closed {
                return Err(Error::Closed(r.clone()));
            }
            let id = s.core.open(request)?;
            Ok((id, s.core.request_id(id)))
        })?;
        // Routing the Open action created the stream's shared state.
        let ss = shared
            .with(|s| s.streams.get(&id).and_then(Weak::upgrade))
            .ok_or_else(|| Error::Closed("stream not opened".into()))?;
        let mut handle = Handle::new(shared.clone(), ss);
        handle.request_id = rid.unwrap_or_default();
        Ok(handle)
    }

    /// SUBSCRIBE: waits for SUBSCRIBE_OK (or the refusal).
    pub async fn subscribe(
        &self,
        namespace: TrackNamespace,
        name: &str,
        params: KeyValuePairs,
    ) -> Result<Subscription, Error> {
        let mut handle = self.open(Request::Subscribe(message::Subscribe {
            id: 0,
            track_namespace: namespace,
            track_name: name.into(),
            params,
        }))?;
        match handle.next().await? {
            Response::SubscribeOk {
                track_alias,
                params,
                properties,
            } => Ok(Subscription {
                handle,
                track_alias,
                params,
                properties,
            }),
            other => Err(refusal(other)),
        }
    }

    /// PUBLISH: pushes a track; waits for PUBLISH_OK (or REQUEST_OK).
    pub async fn publish(
        &self,
        namespace: TrackNamespace,
        name: &str,
        track_alias: u64,
        params: KeyValuePairs,
    ) -> Result<Publication, Error> {
        let mut handle = self.open(Request::Publish(message::Publish {
            id: 0,
            track_namespace: namespace,
            track_name: name.into(),
            track_alias,
            params,
            track_extensions: TrackExtensions::default(),
        }))?;
        match handle.next().await? {
            Response::PublishOk { .. } | Response::RequestOk { .. } => Ok(Publication {
                handle,
                track_alias,
                done: false,
            }),
            other => Err(refusal(other)),
        }
    }

    /// PUBLISH_NAMESPACE: waits for REQUEST_OK. Dropping the result withdraws the namespace.
    pub async fn publish_namespace(
        &self,
        namespace: TrackNamespace,
        params: KeyValuePairs,
    ) -> Result<Announcement, Error> {
        let mut handle = self.open(Request::PublishNamespace(message::PublishNamespace {
            id: 0,
            track_namespace: namespace,
            params,
        }))?;
        match handle.next().await? {
            Response::RequestOk { .. } => Ok(Announcement { handle }),
            other => Err(refusal(other)),
        }
    }

    /// SUBSCRIBE_NAMESPACE: waits for REQUEST_OK; then yields NAMESPACE / NAMESPACE_DONE.
    pub async fn subscribe_namespace(
        &self,
        prefix: TrackNamespacePrefix,
        params: KeyValuePairs,
    ) -> Result<NamespaceWatch, Error> {
        let mut handle = self.open(Request::SubscribeNamespace(message::SubscribeNamespace {
            id: 0,
            track_namespace_prefix: prefix,
            params,
        }))?;
        match handle.next().await? {
            Response::RequestOk { .. } => Ok(NamespaceWatch { handle }),
            other => Err(refusal(other)),
        }
    }

    /// TRACK_STATUS: the REQUEST_OK's parameters (LARGEST_OBJECT among them).
    pub async fn track_status(
        &self,
        namespace: TrackNamespace,
        name: &str,
        params: KeyValuePairs,
    ) -> Result<KeyValuePairs, Error> {
        let mut handle = self.open(Request::TrackStatus(message::TrackStatus {
            id: 0,
            track_namespace: namespace,
            track_name: name.into(),
            params,
        }))?;
        match handle.next().await? {
            Response::RequestOk { params, .. } => Ok(params),
            other => Err(refusal(other)),
        }
    }

    /// A standalone FETCH of `[start, end]`; the objects arrive on a FETCH data stream
    /// ([`Incoming::data`]).
    pub async fn fetch(
        &self,
        namespace: TrackNamespace,
        name: &str,
        start: Location,
        end: Location,
    ) -> Result<FetchAnswer, Error> {
        let mut handle = self.open(Request::Fetch(message::Fetch {
            id: 0,
            fetch_type: message::FetchType::Standalone,
            standalone_fetch: Some(message::StandaloneFetch {
                track_namespace: namespace,
                track_name: name.into(),
                start_location: start,
                end_location: end,
            }),
            joining_fetch: None,
            params: KeyValuePairs::default(),
        }))?;
        let request_id = handle.request_id;
        match handle.next().await? {
            Response::FetchOk {
                end_of_track,
                end_location,
                ..
            } => Ok(FetchAnswer {
                handle,
                request_id,
                end_of_track,
                end_location,
            }),
            other => Err(refusal(other)),
        }
    }
}

fn refusal(r: Response) -> Error {
    match r {
        Response::RequestError { code, reason, .. } => Error::Refused { code, reason },
        other => Error::Unexpected(other.name()),
    }
}

/// The application's end of one request stream.
pub struct Handle {
    shared: Arc<Shared>,
    ss: Arc<StreamShared>,
    /// The Request ID (ours for outbound requests, the peer's for inbound ones).
    request_id: u64,
}

impl Handle {
    fn new(shared: Arc<Shared>, ss: Arc<StreamShared>) -> Self {
        Self {
            shared,
            ss,
            request_id: 0,
        }
    }

    /// The stream's number in this session.
    pub fn stream(&self) -> StreamId {
        self.ss.id
    }

    /// The next message the peer sent on this request stream; `Err(Ended)` once it finished
    /// or reset its side, `Err(Closed)` when the session closed.
    pub async fn next(&mut self) -> Result<Response, Error> {
        self.next_inner(false).await
    }

    /// As [`Handle::next`], but a FIN of the peer's side is not an end: only a reset, a
    /// STOP_SENDING or the session's close is. For the responder of a request, whose peer may
    /// FIN its side right after the request.
    async fn next_or_cancel(&mut self) -> Result<Response, Error> {
        self.next_inner(true).await
    }

    /// Waits for PUBLISH_DONE, passing over other messages. Cancel-safe.
    async fn publish_done(&mut self) -> Result<Done, Error> {
        loop {
            if let Response::PublishDone {
                status,
                stream_count,
                reason,
            } = self.next().await?
            {
                return Ok(Done {
                    status,
                    stream_count,
                    reason,
                });
            }
        }
    }

    async fn next_inner(&mut self, ignore_fin: bool) -> Result<Response, Error> {
        loop {
            let notified = self.ss.handle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.ss.state.lock().expect("poisoned");
                if let Some(m) = st.inbox.pop_front() {
                    drop(st);
                    self.shared.with(|s| s.core.taken(self.ss.id));
                    return Ok(m);
                }
                if let Some(code) = st.reset {
                    return Err(Error::Ended(Some(code)));
                }
                if st.fin && !ignore_fin {
                    return Err(Error::Ended(None));
                }
                if st.dead {
                    drop(st);
                    let reason = self.shared.with(|s| s.closed.clone()).unwrap_or_default();
                    return Err(Error::Closed(reason));
                }
            }
            notified.await;
        }
    }

    /// Waits until everything queued on this stream so far has been handed to QUIC.
    pub async fn flushed(&self) {
        let target = self.ss.state.lock().expect("poisoned").queued;
        loop {
            let notified = self.ss.handle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.ss.state.lock().expect("poisoned");
                if st.written >= target || st.dead {
                    return;
                }
            }
            notified.await;
        }
    }

    fn core<R>(&self, f: impl FnOnce(&mut Core, StreamId) -> R) -> R {
        let id = self.ss.id;
        self.shared.with(|s| f(&mut s.core, id))
    }

    fn cancel(&self, code: u64) {
        self.core(|c, id| c.cancel(id, code));
    }
}

/// A request the peer made of us.
pub enum IncomingRequest {
    Subscribe(SubscribeRequest),
    Publish(PublishRequest),
    PublishNamespace(NamespaceRequest),
    SubscribeNamespace(NamespaceSubscriptionRequest),
    TrackStatus(TrackStatusRequest),
    Fetch(FetchRequest),
}

impl IncomingRequest {
    fn new(mut handle: Handle, request: Request) -> Self {
        handle.request_id = request.id();
        let handle = Some(handle);
        match request {
            Request::Subscribe(msg) => Self::Subscribe(SubscribeRequest { handle, msg }),
            Request::Publish(msg) => Self::Publish(PublishRequest { handle, msg }),
            Request::PublishNamespace(msg) => {
                Self::PublishNamespace(NamespaceRequest { handle, msg })
            }
            Request::SubscribeNamespace(msg) => {
                Self::SubscribeNamespace(NamespaceSubscriptionRequest { handle, msg })
            }
            Request::TrackStatus(msg) => Self::TrackStatus(TrackStatusRequest { handle, msg }),
            Request::Fetch(msg) => Self::Fetch(FetchRequest { handle, msg }),
            Request::SubscribeTracks(_) => unreachable!("the core refuses SUBSCRIBE_TRACKS"),
        }
    }

    /// Forgets a request the core already answered (no refusal on drop).
    fn defuse(self) {
        drop(match self {
            Self::Subscribe(r) => r.into_handle(),
            Self::Publish(r) => r.into_handle(),
            Self::PublishNamespace(r) => r.into_handle(),
            Self::SubscribeNamespace(r) => r.into_handle(),
            Self::TrackStatus(r) => r.into_handle(),
            Self::Fetch(r) => r.into_handle(),
        });
    }
}

/// Inbound requests not yet answered refuse themselves when dropped.
/// Dropping the handle cancels the request (resets its stream with CANCELLED).
macro_rules! cancel_on_drop {
    ($t:ty) => {
        impl Drop for $t {
            fn drop(&mut self) {
                self.handle.cancel(proto::reset::CANCELLED);
            }
        }
    };
}

macro_rules! unanswered {
    ($t:ident) => {
        impl $t {
            /// Refuses the request with REQUEST_ERROR.
            pub fn reject(self, code: u64, reason: &str) {
                self.reject_with_retry(code, 0, reason)
            }

            /// Refuses it with a retry interval in milliseconds (EXCESSIVE_LOAD, ...).
            pub fn reject_with_retry(self, code: u64, retry_ms: u64, reason: &str) {
                let h = self.into_handle();
                let _ = h.core(|c, id| c.reject(id, code, retry_ms, reason));
            }

            /// The peer's Request ID.
            pub fn request_id(&self) -> u64 {
                self.handle.as_ref().map_or(0, |h| h.request_id)
            }

            fn into_handle(mut self) -> Handle {
                self.handle.take().expect("a request is answered once")
            }
        }

        impl Drop for $t {
            fn drop(&mut self) {
                if let Some(h) = &self.handle {
                    let _ = h.core(|c, id| {
                        c.reject(
                            id,
                            message::RequestErrorCode::InternalError as u64,
                            0,
                            "request dropped",
                        )
                    });
                }
            }
        }
    };
}

/// An inbound SUBSCRIBE.
pub struct SubscribeRequest {
    handle: Option<Handle>,
    pub msg: message::Subscribe,
}
unanswered!(SubscribeRequest);

impl SubscribeRequest {
    /// Accepts with SUBSCRIBE_OK and waits until it is handed to QUIC, so that no data stream
    /// overtakes it.
    pub async fn accept(
        self,
        track_alias: u64,
        params: KeyValuePairs,
        properties: TrackExtensions,
    ) -> Result<Serving, Error> {
        let handle = self.into_handle();
        handle.core(|c, id| {
            c.respond(
                id,
                Response::SubscribeOk {
                    track_alias,
                    params,
                    properties,
                },
            )
        })?;
        handle.flushed().await;
        Ok(Serving {
            handle,
            track_alias,
            done: false,
        })
    }
}

/// A subscription we serve. Data streams go through [`Serving::open_stream`].
pub struct Serving {
    handle: Handle,
    track_alias: u64,
    done: bool,
}

impl Serving {
    pub fn track_alias(&self) -> u64 {
        self.track_alias
    }

    pub fn request_id(&self) -> u64 {
        self.handle.request_id
    }

    /// Opens a data stream for this subscription and counts it for PUBLISH_DONE.
    pub async fn open_stream(&self) -> Result<wt::SendStream, Error> {
        self.handle.core(|c, id| c.data_stream_opened(id))?;
        self.handle
            .shared
            .wt
            .open_uni()
            .await
            .map_err(|e| Error::Closed(e.to_string()))
    }

    /// A handle that counts data streams opened elsewhere on this session's connection for
    /// this subscription (the relay opens them on its own hot path).
    pub fn counter(&self) -> StreamCounter {
        StreamCounter {
            shared: self.handle.shared.clone(),
            id: self.handle.ss.id,
        }
    }

    /// The data streams counted so far.
    pub fn stream_count(&self) -> u64 {
        self.handle
            .core(|c, id| c.stream_count(id))
            .unwrap_or_default()
    }

    /// Waits until the subscriber ends the subscription (UNSUBSCRIBE: a reset or FIN of its
    /// side) or the session closes. Cancel-safe.
    pub async fn cancelled(&mut self) -> Error {
        loop {
            match self.handle.next_or_cancel().await {
                Ok(Response::Unsubscribe) => return Error::Ended(None),
                // REQUEST_UPDATE: not supported yet; the subscription carries on unchanged.
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }

    /// Ends the subscription with PUBLISH_DONE (draft-18 §9.12) carrying the exact number of
    /// data streams opened. Returns that count.
    pub fn done(mut self, status: u64, reason: &str) -> Result<u64, Error> {
        self.done = true;
        Ok(self
            .handle
            .core(|c, id| c.publish_done(id, status, reason))?)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.handle.core(|c, id| {
                c.publish_done(
                    id,
                    message::PublishDoneCode::SubscriptionEnded as u64,
                    "subscription ended",
                )
            });
        }
    }
}

/// Counts the data streams of one subscription we serve, from any task: PUBLISH_DONE's
/// Stream Count is what it counted.
#[derive(Clone)]
pub struct StreamCounter {
    shared: Arc<Shared>,
    id: StreamId,
}

impl StreamCounter {
    /// Declares one more data stream; fails once the subscription ended.
    pub fn opened(&self) -> Result<(), Error> {
        Ok(self.shared.with(|s| s.core.data_stream_opened(self.id))?)
    }
}

/// A subscription of ours. Dropping it unsubscribes (resets the request stream).
pub struct Subscription {
    handle: Handle,
    pub track_alias: u64,
    pub params: KeyValuePairs,
    pub properties: TrackExtensions,
}

/// How a subscription of ours ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub status: u64,
    pub stream_count: u64,
    pub reason: String,
}

impl Subscription {
    pub fn request_id(&self) -> u64 {
        self.handle.request_id
    }

    /// Waits for PUBLISH_DONE. Cancel-safe.
    pub async fn done(&mut self) -> Result<Done, Error> {
        self.handle.publish_done().await
    }
}

cancel_on_drop!(Subscription);

/// An inbound PUBLISH.
pub struct PublishRequest {
    handle: Option<Handle>,
    pub msg: message::Publish,
}
unanswered!(PublishRequest);

impl PublishRequest {
    /// Accepts with PUBLISH_OK.
    pub async fn accept(self, params: KeyValuePairs) -> Result<Published, Error> {
        let alias = self.msg.track_alias;
        let handle = self.into_handle();
        handle.core(|c, id| c.respond(id, Response::PublishOk { params }))?;
        handle.flushed().await;
        Ok(Published {
            handle,
            track_alias: alias,
        })
    }
}

/// A track the peer pushes to us. Dropping it cancels the publication.
pub struct Published {
    handle: Handle,
    pub track_alias: u64,
}

impl Published {
    /// Waits for the publisher's PUBLISH_DONE or the end of the request. Cancel-safe.
    pub async fn done(&mut self) -> Result<Done, Error> {
        self.handle.publish_done().await
    }
}

cancel_on_drop!(Published);

/// A PUBLISH of ours, accepted by the peer.
pub struct Publication {
    handle: Handle,
    pub track_alias: u64,
    done: bool,
}

impl Publication {
    /// Opens a data stream for this publication and counts it for PUBLISH_DONE.
    pub async fn open_stream(&self) -> Result<wt::SendStream, Error> {
        self.handle.core(|c, id| c.data_stream_opened(id))?;
        self.handle
            .shared
            .wt
            .open_uni()
            .await
            .map_err(|e| Error::Closed(e.to_string()))
    }

    /// Ends the publication with PUBLISH_DONE.
    pub fn done(mut self, status: u64, reason: &str) -> Result<u64, Error> {
        self.done = true;
        Ok(self
            .handle
            .core(|c, id| c.publish_done(id, status, reason))?)
    }

    /// Waits until the peer cancels the publication or the session closes.
    pub async fn cancelled(&mut self) -> Error {
        loop {
            match self.handle.next_or_cancel().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .handle
                .core(|c, id| c.publish_done(id, message::PublishDoneCode::TrackEnded as u64, ""));
        }
    }
}

/// An inbound PUBLISH_NAMESPACE.
pub struct NamespaceRequest {
    handle: Option<Handle>,
    pub msg: message::PublishNamespace,
}
unanswered!(NamespaceRequest);

impl NamespaceRequest {
    /// Accepts with REQUEST_OK.
    pub fn accept(self) -> Result<AnnouncedNamespace, Error> {
        let handle = self.into_handle();
        handle.core(|c, id| {
            c.respond(
                id,
                Response::RequestOk {
                    params: KeyValuePairs::default(),
                    properties: TrackExtensions::default(),
                },
            )
        })?;
        Ok(AnnouncedNamespace { handle })
    }
}

/// A namespace the peer announced. Dropping it cancels the announcement.
pub struct AnnouncedNamespace {
    handle: Handle,
}

impl AnnouncedNamespace {
    /// Waits until the peer withdraws the namespace (PUBLISH_NAMESPACE_DONE, FIN or reset) or
    /// the session closes. Cancel-safe.
    pub async fn withdrawn(&mut self) {
        loop {
            match self.handle.next_or_cancel().await {
                Ok(Response::PublishNamespaceDone) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }
}

cancel_on_drop!(AnnouncedNamespace);

/// A namespace we announced. Dropping it withdraws the namespace.
pub struct Announcement {
    handle: Handle,
}

impl Announcement {
    /// Waits until the peer cancels the announcement or the session closes.
    pub async fn cancelled(&mut self) -> Error {
        loop {
            match self.handle.next_or_cancel().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = self.handle.core(|c, id| c.finish(id));
    }
}

/// An inbound SUBSCRIBE_NAMESPACE.
pub struct NamespaceSubscriptionRequest {
    handle: Option<Handle>,
    pub msg: message::SubscribeNamespace,
}
unanswered!(NamespaceSubscriptionRequest);

impl NamespaceSubscriptionRequest {
    /// Accepts with REQUEST_OK; then send NAMESPACE / NAMESPACE_DONE.
    pub fn accept(self) -> Result<NamespaceFeed, Error> {
        let handle = self.into_handle();
        handle.core(|c, id| {
            c.respond(
                id,
                Response::RequestOk {
                    params: KeyValuePairs::default(),
                    properties: TrackExtensions::default(),
                },
            )
        })?;
        Ok(NamespaceFeed { handle })
    }
}

/// Our side of a peer's SUBSCRIBE_NAMESPACE.
pub struct NamespaceFeed {
    handle: Handle,
}

impl NamespaceFeed {
    /// NAMESPACE: a namespace under the prefix is active (`suffix` after the prefix).
    pub fn namespace(&self, suffix: TrackNamespacePrefix) -> Result<(), Error> {
        Ok(self
            .handle
            .core(|c, id| c.respond(id, Response::Namespace(suffix)))?)
    }

    /// NAMESPACE_DONE: it is no longer.
    pub fn namespace_done(&self, suffix: TrackNamespacePrefix) -> Result<(), Error> {
        Ok(self
            .handle
            .core(|c, id| c.respond(id, Response::NamespaceDone(suffix)))?)
    }

    /// Waits until the subscriber ends the request or the session closes. Cancel-safe.
    pub async fn cancelled(&mut self) -> Error {
        loop {
            match self.handle.next_or_cancel().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }
}

impl Drop for NamespaceFeed {
    fn drop(&mut self) {
        let _ = self.handle.core(|c, id| c.finish(id));
    }
}

/// A SUBSCRIBE_NAMESPACE of ours: NAMESPACE and NAMESPACE_DONE as they come.
pub struct NamespaceWatch {
    handle: Handle,
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceChange {
    Active(TrackNamespacePrefix),
    Done(TrackNamespacePrefix),
}

impl NamespaceWatch {
    /// The next change; `Err` once the request or the session ended. Cancel-safe.
    pub async fn next(&mut self) -> Result<NamespaceChange, Error> {
        loop {
            match self.handle.next().await? {
                Response::Namespace(s) => return Ok(NamespaceChange::Active(s)),
                Response::NamespaceDone(s) => return Ok(NamespaceChange::Done(s)),
                _ => continue,
            }
        }
    }
}

cancel_on_drop!(NamespaceWatch);

/// An inbound TRACK_STATUS.
pub struct TrackStatusRequest {
    handle: Option<Handle>,
    pub msg: message::TrackStatus,
}
unanswered!(TrackStatusRequest);

impl TrackStatusRequest {
    /// Answers with REQUEST_OK (LARGEST_OBJECT and other parameters) and finishes the stream.
    pub fn respond(self, params: KeyValuePairs, properties: TrackExtensions) {
        let handle = self.into_handle();
        let _ = handle.core(|c, id| c.respond(id, Response::RequestOk { params, properties }));
    }
}

/// An inbound FETCH.
pub struct FetchRequest {
    handle: Option<Handle>,
    pub msg: message::Fetch,
}
unanswered!(FetchRequest);

impl FetchRequest {
    /// Answers with FETCH_OK and opens the FETCH data stream; the caller writes the FETCH_HEADER
    /// and the objects, and finishes it.
    pub async fn accept(
        self,
        end_of_track: bool,
        end_location: Location,
    ) -> Result<(FetchServing, wt::SendStream), Error> {
        let handle = self.into_handle();
        handle.core(|c, id| {
            c.respond(
                id,
                Response::FetchOk {
                    end_of_track,
                    end_location,
                    params: KeyValuePairs::default(),
                    properties: TrackExtensions::default(),
                },
            )
        })?;
        handle.flushed().await;
        let stream = handle
            .shared
            .wt
            .open_uni()
            .await
            .map_err(|e| Error::Closed(e.to_string()))?;
        Ok((FetchServing { handle }, stream))
    }
}

/// A FETCH we answered. Dropping it finishes the request stream.
pub struct FetchServing {
    handle: Handle,
}

impl Drop for FetchServing {
    fn drop(&mut self) {
        let _ = self.handle.core(|c, id| c.finish(id));
    }
}

/// The answer to a FETCH of ours; the objects arrive on a FETCH data stream.
pub struct FetchAnswer {
    #[allow(dead_code)]
    handle: Handle,
    pub request_id: u64,
    pub end_of_track: bool,
    pub end_location: Location,
}

//! HTTP/3 (RFC 9114) on the QUIC port, beside WebTransport and raw QUIC: one HTTP/3 server
//! per `h3` connection answers ordinary requests with the public HTTP router and hands a
//! WebTransport CONNECT to the MoQ session layer.
//!
//! Browsers and our clients use the same ALPN (`h3`) for both, and give a WebTransport session
//! a connection of its own (pinned certificates need one): so the relay tells them apart by
//! the connection's first request. Its HTTP/3 server (the `h3` crate, over [`H3Quic`]) starts
//! on every `h3` connection and sends SETTINGS at once (a WebTransport client waits for them
//! before its CONNECT); they are web-transport-quinn's own bytes, so WebTransport clients see
//! exactly what that crate's server sent before. Then [`accept`] reads the first request
//! stream's HEADERS frame itself:
//!
//! - an extended CONNECT with `:protocol = webtransport` (draft-ietf-webtrans-http3 §3.2) goes
//!   to web-transport-quinn ([`web_transport_quinn::Request::from_parts`]) with the connection;
//!   `h3` is not polled again and only keeps its control streams open;
//! - anything else is handed back to `h3` with the bytes read replayed, and `h3` serves that
//!   request and the connection's next ones ([`serve`]).
//!
//! No more work than before on the WebTransport path: one HEADERS frame read, as
//! web-transport-quinn read it, and `h3`'s three unidirectional streams opened in place of one.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use futures::{future::BoxFuture, StreamExt};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};

/// Largest request HEADERS frame read (web-transport-quinn's CONNECT limit too).
const MAX_HEADERS_BYTES: u64 = 16 * 1024;

/// Largest request body served (the HTTP side's routes take none or small ones).
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("HTTP/3: {0}")]
    Connection(#[from] h3::error::ConnectionError),
    #[error("QUIC: {0}")]
    Quic(#[from] quinn::ConnectionError),
    #[error("reading the first request: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("first request: {0}")]
    Malformed(&'static str),
    #[error("WebTransport client SETTINGS: {0}")]
    Settings(#[from] web_transport_quinn::proto::SettingsError),
    #[error("the WebTransport client's SETTINGS do not enable WebTransport")]
    NoWebTransport,
}

/// What an `h3` connection turned out to be.
pub enum First {
    /// A WebTransport session request; keep `server` for as long as the session lives (it
    /// holds the HTTP/3 control streams).
    WebTransport {
        request: Box<web_transport_quinn::Request>,
        server: Server,
    },
    /// Ordinary HTTP/3: [`serve`] it.
    Http3(Server),
}

/// The `h3` server of one connection, and the client's control stream when the relay read it.
pub struct Server {
    h3: h3::server::Connection<H3Quic, Bytes>,
    _control: Option<quinn::RecvStream>,
}

/// Starts HTTP/3 on `conn` and reads its first request (see the module doc).
pub async fn accept(conn: quinn::Connection) -> Result<First, Error> {
    let first = Arc::new(Mutex::new(None));
    let quic = H3Quic::new(conn.clone(), first.clone());
    let h3 = h3::server::builder()
        .max_field_section_size(MAX_HEADERS_BYTES)
        .enable_extended_connect(true)
        .send_grease(false)
        .build(quic)
        .await?;
    let (send, mut recv) = conn.accept_bi().await?;
    let mut raw = BytesMut::new();
    // Exactly the bytes up to the end of the HEADERS frame are read: what follows stays in the
    // stream for whoever serves the request.
    let headers = loop {
        match first_headers(&raw).map_err(Error::Malformed)? {
            FirstFrame::NeedMore(n) => {
                let at = raw.len();
                raw.resize(at + n, 0);
                recv.read_exact(&mut raw[at..]).await?;
            }
            FirstFrame::Headers(range) => break raw[range].to_vec(),
        }
    };
    match web_transport_quinn::proto::ConnectRequest::decode(&mut headers.as_slice()) {
        Ok(request) => {
            // As web-transport-quinn's own server does: the client's SETTINGS, on its first
            // unidirectional stream, must enable WebTransport; the stream stays open.
            let mut control = conn.accept_uni().await?;
            let settings = web_transport_quinn::proto::Settings::read(&mut control).await?;
            if settings.supports_webtransport() == 0 {
                return Err(Error::NoWebTransport);
            }
            Ok(First::WebTransport {
                request: Box::new(web_transport_quinn::Request::from_parts(
                    conn, request, send, recv,
                )),
                server: Server {
                    h3,
                    _control: Some(control),
                },
            })
        }
        Err(_) => {
            *first.lock().expect("poisoned") = Some(BidiStream {
                send: SendStream::new(send, None),
                recv: RecvStream::new(recv, raw.freeze()),
            });
            Ok(First::Http3(Server { h3, _control: None }))
        }
    }
}

/// Most bytes read before the first HEADERS frame ends (GREASE frames included).
pub const MAX_FIRST_BYTES: usize = 64 * 1024;

/// What the first bytes of a request stream hold so far ([`first_headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFrame {
    /// At least this many more bytes are needed, and no more than that may be read yet (a
    /// reader that reads exactly this much never reads past the HEADERS frame).
    NeedMore(usize),
    /// The first frame that is not GREASE (HEADERS, unless the stream is malformed) is this
    /// byte range, which ends the bytes given.
    Headers(std::ops::Range<usize>),
}

/// Scans the start of a request stream (RFC 9114 §7.1 frames) for its first frame that is not
/// GREASE (reserved types `0x1f * N + 0x21`, §7.2.8), which must be HEADERS (§4.1; another type
/// is handed to `h3`, which answers it as the RFC says). Pure: the caller reads exactly the
/// bytes asked for and calls again. Errors: a frame over 16 KiB, or more than
/// [`MAX_FIRST_BYTES`] before the end of that frame.
pub fn first_headers(buf: &[u8]) -> Result<FirstFrame, &'static str> {
    /// A QUIC variable-length integer (RFC 9000 §16) at `at`, or how many bytes it lacks.
    fn varint(buf: &[u8], at: usize) -> Result<(u64, usize), usize> {
        let Some(&first) = buf.get(at) else {
            return Err(1);
        };
        let len = 1usize << (first >> 6);
        let Some(bytes) = buf.get(at..at + len) else {
            return Err(at + len - buf.len());
        };
        let v = bytes[1..]
            .iter()
            .fold(u64::from(first & 0x3f), |v, b| (v << 8) | u64::from(*b));
        Ok((v, at + len))
    }
    let mut at = 0;
    loop {
        let start = at;
        let (typ, after_type) = match varint(buf, at) {
            Ok(v) => v,
            Err(n) => return Ok(FirstFrame::NeedMore(n)),
        };
        let (len, payload) = match varint(buf, after_type) {
            Ok(v) => v,
            Err(n) => return Ok(FirstFrame::NeedMore(n)),
        };
        if len > MAX_HEADERS_BYTES {
            return Err("frame larger than 16 KiB");
        }
        let end = payload + len as usize;
        if end > MAX_FIRST_BYTES {
            return Err("more than 64 KiB before the first HEADERS frame");
        }
        if end > buf.len() {
            return Ok(FirstFrame::NeedMore(end - buf.len()));
        }
        let grease = typ >= 0x21 && (typ - 0x21) % 0x1f == 0;
        if !grease {
            return Ok(FirstFrame::Headers(start..end));
        }
        at = end;
    }
}

/// Serves the requests of an ordinary HTTP/3 connection with `app` until the client leaves
/// (GOAWAY, close, idle timeout) or `cancel`. Requests run concurrently, as many as the
/// connection's stream credit lets the client open; each must send its headers within
/// `header_timeout`.
pub async fn serve(
    server: Server,
    app: axum::Router,
    metrics: Arc<crate::metrics::Metrics>,
    header_timeout: Duration,
) {
    let mut h3 = server.h3;
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let resolver = tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => resolver,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        let app = app.clone();
        let metrics = metrics.clone();
        requests.spawn(async move {
            let (request, stream) =
                match tokio::time::timeout(header_timeout, resolver.resolve_request()).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "HTTP/3 request unreadable");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("HTTP/3 request headers timed out");
                        return;
                    }
                };
            metrics
                .http3_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = respond(app, request, stream).await {
                tracing::debug!(error = %e, "HTTP/3 response not sent");
            }
        });
    }
    requests.abort_all();
}

/// Runs one request through `app` and sends the response.
async fn respond(
    app: axum::Router,
    request: http::Request<()>,
    mut stream: h3::server::RequestStream<BidiStream, Bytes>,
) -> Result<(), h3::error::StreamError> {
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        if body.len() + chunk.remaining() > MAX_BODY_BYTES {
            let response = http::Response::builder()
                .status(http::StatusCode::PAYLOAD_TOO_LARGE)
                .body(())
                .expect("valid response");
            stream.send_response(response).await?;
            return stream.finish().await;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            body.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    let request = request.map(|()| axum::body::Body::from(body.freeze()));
    let response = match tower::ServiceExt::oneshot(app, request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    stream
        .send_response(http::Response::from_parts(parts, ()))
        .await?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) => stream.send_data(bytes).await?,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed");
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    stream.finish().await
}

/// `h3`'s view of a quinn connection ([`quic::Connection`]), with the two things the relay
/// needs (the module doc): the first request stream, read by the relay, replayed; and the
/// server's SETTINGS written as web-transport-quinn writes them.
pub struct H3Quic {
    conn: quinn::Connection,
    first: Arc<Mutex<Option<BidiStream>>>,
    accepting_bi: Option<
        BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>,
    >,
    accepting_uni: Option<BoxFuture<'static, Result<quinn::RecvStream, quinn::ConnectionError>>>,
    opener: Opener,
}

impl H3Quic {
    fn new(conn: quinn::Connection, first: Arc<Mutex<Option<BidiStream>>>) -> Self {
        let mut settings = web_transport_quinn::proto::Settings::default();
        settings.enable_webtransport(1);
        let mut control = BytesMut::new();
        settings.encode(&mut control);
        Self {
            opener: Opener {
                conn: conn.clone(),
                opening_uni: None,
                opening_bi: None,
                control: Some(control.freeze()),
            },
            conn,
            first,
            accepting_bi: None,
            accepting_uni: None,
        }
    }
}

fn connection_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: close.error_code.into_inner(),
            }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        e => ConnectionErrorIncoming::Undefined(Arc::new(e)),
    }
}

fn stream_connection_error(e: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: connection_error(e),
    }
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    StreamId::try_from(quinn::VarInt::from(id).into_inner()).expect("a QUIC stream ID is a varint")
}

impl quic::Connection<Bytes> for H3Quic {
    type RecvStream = RecvStream;
    type OpenStreams = Opener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let conn = &self.conn;
        let fut = self.accepting_uni.get_or_insert_with(|| {
            let conn = conn.clone();
            Box::pin(async move { conn.accept_uni().await })
        });
        let res = ready!(fut.as_mut().poll(cx));
        self.accepting_uni = None;
        Poll::Ready(
            res.map(|recv| RecvStream::new(recv, Bytes::new()))
                .map_err(connection_error),
        )
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        if let Some(first) = self.first.lock().expect("poisoned").take() {
            return Poll::Ready(Ok(first));
        }
        let conn = &self.conn;
        let fut = self.accepting_bi.get_or_insert_with(|| {
            let conn = conn.clone();
            Box::pin(async move { conn.accept_bi().await })
        });
        let res = ready!(fut.as_mut().poll(cx));
        self.accepting_bi = None;
        Poll::Ready(
            res.map(|(send, recv)| BidiStream {
                send: SendStream::new(send, None),
                recv: RecvStream::new(recv, Bytes::new()),
            })
            .map_err(connection_error),
        )
    }

    fn opener(&self) -> Opener {
        Opener {
            conn: self.conn.clone(),
            opening_uni: None,
            opening_bi: None,
            control: None,
        }
    }
}

impl quic::OpenStreams<Bytes> for H3Quic {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        self.opener.poll_open_bidi(cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        self.opener.poll_open_send(cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.opener.close(code, reason);
    }
}

/// Opens streams for `h3`.
pub struct Opener {
    conn: quinn::Connection,
    opening_uni: Option<BoxFuture<'static, Result<quinn::SendStream, quinn::ConnectionError>>>,
    opening_bi: Option<
        BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>,
    >,
    /// What the first unidirectional stream (`h3` opens its control stream first) carries
    /// instead of `h3`'s first write (its stream type and SETTINGS).
    control: Option<Bytes>,
}

impl quic::OpenStreams<Bytes> for Opener {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let conn = &self.conn;
        let fut = self.opening_bi.get_or_insert_with(|| {
            let conn = conn.clone();
            Box::pin(async move { conn.open_bi().await })
        });
        let res = ready!(fut.as_mut().poll(cx));
        self.opening_bi = None;
        Poll::Ready(
            res.map(|(send, recv)| BidiStream {
                send: SendStream::new(send, None),
                recv: RecvStream::new(recv, Bytes::new()),
            })
            .map_err(stream_connection_error),
        )
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        let conn = &self.conn;
        let fut = self.opening_uni.get_or_insert_with(|| {
            let conn = conn.clone();
            Box::pin(async move { conn.open_uni().await })
        });
        let res = ready!(fut.as_mut().poll(cx));
        self.opening_uni = None;
        Poll::Ready(
            res.map(|send| SendStream::new(send, self.control.take()))
                .map_err(stream_connection_error),
        )
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(
            quinn::VarInt::from_u64(code.value()).unwrap_or(quinn::VarInt::MAX),
            reason,
        );
    }
}

impl Clone for Opener {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            opening_uni: None,
            opening_bi: None,
            control: None,
        }
    }
}

/// A quinn send stream for `h3`.
pub struct SendStream {
    stream: quinn::SendStream,
    /// Bytes handed over by `send_data`, not yet all written.
    pending: Option<Pending>,
    /// Written instead of the first `send_data` (the control stream's SETTINGS).
    replace_first: Option<Bytes>,
}

enum Pending {
    Frame(WriteBuf<Bytes>),
    Raw(Bytes),
}

impl SendStream {
    fn new(stream: quinn::SendStream, replace_first: Option<Bytes>) -> Self {
        Self {
            stream,
            pending: None,
            replace_first,
        }
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(e) => stream_connection_error(e),
        e => StreamErrorIncoming::Unknown(Box::new(e)),
    }
}

impl quic::SendStream<Bytes> for SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        loop {
            let chunk = match &self.pending {
                None => return Poll::Ready(Ok(())),
                Some(Pending::Frame(buf)) => buf.chunk(),
                Some(Pending::Raw(bytes)) => bytes.chunk(),
            };
            if chunk.is_empty() {
                self.pending = None;
                continue;
            }
            let n =
                ready!(Pin::new(&mut self.stream).poll_write(cx, chunk)).map_err(write_error)?;
            match self.pending.as_mut().expect("pending") {
                Pending::Frame(buf) => buf.advance(n),
                Pending::Raw(bytes) => bytes.advance(n),
            }
        }
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.pending.is_some() {
            return Err(StreamErrorIncoming::Unknown(
                "send_data before the previous data was written".into(),
            ));
        }
        self.pending = Some(match self.replace_first.take() {
            Some(bytes) => Pending::Raw(bytes),
            None => Pending::Frame(data.into()),
        });
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        ready!(quic::SendStream::poll_ready(self, cx))?;
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        let _ = self
            .stream
            .reset(quinn::VarInt::from_u64(reset_code).unwrap_or(quinn::VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// A quinn receive stream for `h3`, after `prefix` (bytes the relay read first).
pub struct RecvStream {
    stream: quinn::RecvStream,
    prefix: Bytes,
    buf: BytesMut,
}

/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;

impl RecvStream {
    fn new(stream: quinn::RecvStream, prefix: Bytes) -> Self {
        Self {
            stream,
            prefix,
            buf: BytesMut::new(),
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.prefix))));
        }
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        // In-order reads only (docs/ARCHITECTURE.md: quinn's unordered reads can hang).
        let n = ready!(self.stream.poll_read(cx, &mut self.buf[..])).map_err(|e| match e {
            quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
                error_code: code.into_inner(),
            },
            quinn::ReadError::ConnectionLost(e) => stream_connection_error(e),
            e => StreamErrorIncoming::Unknown(Box::new(e)),
        })?;
        if n == 0 {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(self.buf.split_to(n).freeze())))
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self
            .stream
            .stop(quinn::VarInt::from_u64(error_code).unwrap_or(quinn::VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// Both halves of a request stream.
pub struct BidiStream {
    send: SendStream,
    recv: RecvStream,
}

impl quic::BidiStream<Bytes> for BidiStream {
    type SendStream = SendStream;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

impl quic::SendStream<Bytes> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` as a reader does: exactly the bytes [`first_headers`] asks for.
    fn drive(stream: &[u8]) -> (Result<FirstFrame, &'static str>, usize) {
        let mut buf = Vec::new();
        loop {
            match first_headers(&buf) {
                Ok(FirstFrame::NeedMore(n)) if buf.len() + n <= stream.len() => {
                    assert!(n > 0);
                    buf.extend_from_slice(&stream[buf.len()..buf.len() + n]);
                }
                other => return (other, buf.len()),
            }
        }
    }

    #[test]
    fn the_first_headers_frame_is_found_without_reading_past_it() {
        // GREASE (0x21, 2 bytes), then HEADERS (0x01, 3 bytes), then a DATA frame.
        let stream = [0x21, 2, 0xaa, 0xbb, 0x01, 3, 1, 2, 3, 0x00, 1, 9];
        let (res, read) = drive(&stream);
        assert_eq!(res, Ok(FirstFrame::Headers(4..9)));
        assert_eq!(read, 9);
        assert_eq!(first_headers(&[]), Ok(FirstFrame::NeedMore(1)));
        // A two-byte length whose second byte is missing.
        assert_eq!(first_headers(&[0x01, 0x40]), Ok(FirstFrame::NeedMore(1)));
        // A GREASE type with a two-byte varint (0x40 0x40 = 64 = 0x1f + 0x21).
        let (res, _) = drive(&[0x40, 0x40, 0, 0x01, 0]);
        assert_eq!(res, Ok(FirstFrame::Headers(3..5)));
    }

    #[test]
    fn oversize_frames_and_endless_grease_are_malformed() {
        // A HEADERS frame announcing 16 KiB + 1.
        assert!(first_headers(&[0x01, 0x80, 0x00, 0x40, 0x01]).is_err());
        // GREASE frames of 16 KiB, one after another.
        let mut stream = Vec::new();
        for _ in 0..5 {
            stream.extend_from_slice(&[0x21, 0x80, 0x00, 0x40, 0x00]);
            stream.extend(std::iter::repeat_n(0, 16 * 1024));
        }
        let (res, read) = drive(&stream);
        assert!(res.is_err(), "{res:?}");
        assert!(read <= MAX_FIRST_BYTES);
    }
}

//! WHIP ingest (RFC 9725, WebRTC-HTTP Ingestion Protocol): OBS's WHIP output, FFmpeg's `whip`
//! muxer and browsers publish H.264 and Opus over WebRTC straight into the relay's origin, as
//! ordinary broadcasts (MSF catalog, LOC tracks, a group per keyframe) through the push-ingest
//! core ([`crate::push`]), with no other hop.
//!
//! | request | what |
//! |---|---|
//! | `POST /whip/{broadcast}` (`application/sdp`) | an SDP offer: `201 Created`, the answer, `Location: /whip-session/{id}` |
//! | `PATCH /whip-session/{id}` (`application/trickle-ice-sdpfrag`) | trickled ICE candidates (RFC 8840): `204` |
//! | `DELETE /whip-session/{id}` | ends the publication: the broadcast leaves the origin at once |
//! | `OPTIONS` on both | CORS preflight and `Accept-Post: application/sdp` (RFC 9725 §4.2) |
//!
//! Auth is the relay's: a `Bearer` token (RFC 9725 §4.5) that may publish the broadcast (the
//! relay's JWTs, or a stream key of `--rtmp-keys`), or none where the broadcast is public.
//! PATCH and DELETE need the session's unguessable id and the token the POST gave. Refusals say
//! why: 400 for a malformed offer or name, 401 for a missing or refused token, 403 for a token
//! that may not publish that broadcast, 409 for a broadcast that is live, 415 for another
//! content type, 503 at `--webrtc-max-sessions`. A refused request touches no broadcast.
//!
//! The media side is one UDP socket (`--webrtc-addr`) owned by one task ([`engine`]) that
//! drives a sans-IO `str0m` [`str0m::Rtc`] per session: ICE-lite with one host candidate,
//! DTLS with one ECDSA P-256 certificate made at start, SRTP, NACK retransmission requests and
//! PLI keyframe requests; [`media`] turns the depacketized frames into the broadcast's tracks.
//! A session ends on DELETE, when ICE fails (consent freshness, RFC 7675), when it does not
//! connect or sends no media for `--webrtc-timeout-ms`, or when the relay stops; its broadcast
//! then leaves the origin at once (WHIP publishers do not resume sessions).

pub mod engine;
pub mod media;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{header, HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    limits::{Slot, Slots},
    push::{self, keys::KeyError, Protocol},
    RelayState,
};

/// The media socket's receive buffer when `--udp-buffer-bytes` is 0 (the system's default,
/// about 208 KiB, holds well under a second of a 2.5 Mbit/s publication plus its keyframes):
/// 1 MiB, past `net.core.rmem_max` where the relay may (`SO_RCVBUFFORCE`).
pub const MEDIA_RECV_BUFFER: usize = 1 << 20;

/// Settings of the WHIP ingest (`--webrtc-*`).
#[derive(Debug, Clone)]
pub struct WhipConfig {
    /// UDP address of the WebRTC media socket (`--webrtc-addr`).
    pub bind: SocketAddr,
    /// The address ICE host candidates advertise (`--webrtc-host`); by default the bind
    /// address when it is a specific one, else the address the publisher reached the HTTP
    /// side at (its `Host`).
    pub host: Option<IpAddr>,
    /// The port ICE host candidates advertise (`--webrtc-host IP:PORT`), where NAT maps the
    /// socket's port to another; by default the socket's.
    pub port: Option<u16>,
    /// Concurrent WebRTC sessions (`--webrtc-max-sessions`).
    pub max_sessions: usize,
    /// A session that is not connected, or sends no media, this long is ended
    /// (`--webrtc-timeout-ms`).
    pub timeout: Duration,
}

impl WhipConfig {
    pub const DEFAULT_MAX_SESSIONS: usize = 32;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults, with the media socket on `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            host: None,
            port: None,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Largest SDP offer or trickle fragment accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// Commands the HTTP side sends the engine (a bounded queue: a full one answers 503).
const COMMAND_QUEUE: usize = 64;

/// How long a POST waits for the engine's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One WHIP session as the HTTP side knows it.
#[derive(Debug, Clone)]
struct Resource {
    /// The token of the POST (PATCH and DELETE must give it again).
    token: Option<String>,
    broadcast: String,
    /// The offer's ICE username fragment: a PATCH with another one is an ICE restart.
    ufrag: Option<String>,
}

/// Requests of the HTTP side to the engine.
pub(crate) enum Command {
    Offer(Box<Offer>),
    Trickle {
        id: String,
        candidates: Vec<str0m::Candidate>,
    },
    End {
        id: String,
    },
}

/// A new session: an accepted offer, its broadcast and slot.
pub(crate) struct Offer {
    pub id: String,
    pub offer: str0m::change::SdpOffer,
    /// The address for the session's host candidate.
    pub host: IpAddr,
    pub expects_video: bool,
    pub claim: push::Claim,
    pub slot: Slot,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// The WHIP ingest's handle, shared by the HTTP side and the engine.
pub struct Whip {
    pub config: WhipConfig,
    /// The media socket's bound address.
    pub local: SocketAddr,
    commands: mpsc::Sender<Command>,
    slots: Arc<Slots>,
    resources: Mutex<HashMap<String, Resource>>,
}

impl std::fmt::Debug for Whip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whip")
            .field("local", &self.local)
            .field("sessions", &self.slots.in_use())
            .finish()
    }
}

impl Whip {
    /// Binds the media socket, with a receive buffer of `buffer` bytes as the QUIC socket gets
    /// (`--udp-buffer-bytes`), or [`MEDIA_RECV_BUFFER`] where that is 0: a publisher's keyframe
    /// burst then survives the engine task being kept off the CPU for a while. Returns the
    /// handle, and the engine to run ([`engine::Engine::run`]).
    pub async fn bind(
        config: WhipConfig,
        buffer: usize,
    ) -> anyhow::Result<(Arc<Self>, engine::Engine)> {
        use anyhow::Context;
        let buffer = if buffer == 0 {
            MEDIA_RECV_BUFFER
        } else {
            buffer
        };
        let bound = crate::udp::bind(config.bind, buffer).and_then(|(socket, _)| {
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        });
        let socket = bound
            .with_context(|| format!("could not bind the WebRTC socket on UDP {}", config.bind))?;
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let whip = Arc::new(Self {
            slots: Slots::new(config.max_sessions),
            config,
            local,
            commands: tx,
            resources: Mutex::new(HashMap::new()),
        });
        let port = whip.config.port;
        Ok((whip, engine::Engine::new(socket, rx, port)?))
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.slots.in_use()
    }

    /// The session `id` ended (the engine tells).
    pub(crate) fn forget(&self, id: &str) {
        self.resources.lock().expect("poisoned").remove(id);
    }

    /// The address for a session's host candidate; see [`WhipConfig::host`].
    async fn candidate_ip(&self, headers: &HeaderMap, uri: &Uri) -> IpAddr {
        if let Some(ip) = self.config.host {
            return ip;
        }
        if !self.local.ip().is_unspecified() {
            return self.local.ip();
        }
        let v4_only = self.local.is_ipv4();
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let host = host_of(authority);
        let usable = |ip: &IpAddr| !v4_only || ip.is_ipv4();
        if let Ok(ip) = host.parse::<IpAddr>() {
            if usable(&ip) {
                return ip;
            }
        } else if !host.is_empty() {
            if let Ok(Ok(addrs)) =
                tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host((host, 0)))
                    .await
            {
                if let Some(a) = addrs.map(|a| a.ip()).find(|ip| usable(ip)) {
                    return a;
                }
            }
        }
        IpAddr::from([127, 0, 0, 1])
    }
}

/// `--webrtc-host`: `IP` or `IP:PORT` (`[IPv6]:PORT`), a specific address.
pub fn parse_advertised(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let (ip, port) = match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => return Err("the port must not be 0".into()),
        Ok(a) => (a.ip(), Some(a.port())),
        Err(_) => (
            text.parse::<IpAddr>()
                .map_err(|_| "not an IP address or IP:PORT".to_string())?,
            None,
        ),
    };
    if ip.is_unspecified() {
        return Err("an address publishers can reach is needed, not 0.0.0.0 or ::".into());
    }
    Ok((ip, port))
}

/// The host of an HTTP authority (`host:port`, `[v6]:port`, `host`).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// A refused request: its status and the reason in words (the response body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The refusal metric's label.
    pub label: &'static str,
    pub reason: String,
}

impl Refusal {
    fn new(status: StatusCode, label: &'static str, reason: impl ToString) -> Self {
        Self {
            status,
            label,
            reason: reason.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            format!("{}\n", self.reason),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<KeyError> for Refusal {
    fn from(e: KeyError) -> Self {
        let status = match e {
            KeyError::Empty | KeyError::Unknown | KeyError::Token(_) => StatusCode::UNAUTHORIZED,
            KeyError::NotCovered(_) | KeyError::Ambiguous(_) => StatusCode::FORBIDDEN,
            KeyError::BadName(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, e.reason(), e)
    }
}

/// The `Bearer` token of a request, if it gave one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether a request may publish `broadcast` with `token`: the broadcast's name, or why not.
/// The same rules as the RTMP and SRT stream keys ([`push::keys`]): a relay token that may
/// publish it, a key of the key file that names it, or nothing where it is public (or where
/// neither tokens nor keys are configured).
pub fn authorize(
    keys: &push::keys::Keys,
    auth: &crate::auth::Auth,
    broadcast: &str,
    token: Option<&str>,
) -> Result<String, Refusal> {
    let name = push::keys::check_name(broadcast)?;
    if !auth.enabled() && !keys.has_file() {
        return Ok(name);
    }
    let key = match token {
        Some(t) if t.split('.').count() == 3 => format!("{name}?jwt={t}"),
        Some(t) => t.to_string(),
        None => name.clone(),
    };
    match keys.resolve(&key, auth) {
        Ok(granted) if granted == name => Ok(name),
        Ok(granted) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "token",
            format!("this key publishes {granted:?}, not {name:?}"),
        )),
        Err(KeyError::Unknown | KeyError::Empty) if token.is_none() => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "token",
            format!("publishing {name:?} needs a token: send Authorization: Bearer TOKEN"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Checks an SDP offer before any session exists: it parses, and it sends audio or video.
/// Returns the parsed offer and whether it has video.
pub fn parse_offer(sdp: &str) -> Result<(str0m::change::SdpOffer, bool), Refusal> {
    let bad = |reason: String| Refusal::new(StatusCode::BAD_REQUEST, "malformed_sdp", reason);
    if !sdp.trim_start().starts_with("v=") {
        return Err(bad(
            "malformed SDP offer: it does not start with a v= line".into()
        ));
    }
    let offer = str0m::change::SdpOffer::from_sdp_string(sdp).map_err(|e| {
        bad(format!(
            "malformed SDP offer: {}",
            sdp_error(&e.to_string())
        ))
    })?;
    let media: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let video = media.contains(&"video");
    if !video && !media.contains(&"audio") {
        return Err(bad("the SDP offer has no audio or video to publish".into()));
    }
    Ok((offer, video))
}

/// The SDP parser's error on one line, without the memory address it names.
fn sdp_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at PointerOffset(") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once(')').map_or("", |(_, tail)| tail);
    }
    out.push_str(rest);
    out.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether an SDP answer accepted at least one audio or video section (a rejected one has port 0).
fn accepts_media(answer: &str) -> bool {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .any(|l| {
            let mut parts = l.split_whitespace();
            matches!(parts.next(), Some("audio" | "video")) && parts.next() != Some("0")
        })
}

/// CORS headers of every WHIP response (browsers publish from other origins).
const EXPOSE: &str = "Location, Link, Accept-Patch, Accept-Post, ETag";

fn refuse(state: &RelayState, refusal: Refusal) -> Response {
    push::refused(
        &state.metrics,
        Protocol::Whip,
        refusal.label,
        &refusal.reason,
    );
    refusal.into_response()
}

fn off() -> Response {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "off",
        "WHIP ingest is off on this relay: start it with --webrtc-addr",
    )
    .into_response()
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// `POST /whip/{broadcast}`: an SDP offer -> `201 Created` with the answer.
pub async fn post(
    State(state): State<Arc<RelayState>>,
    UrlPath(broadcast): UrlPath<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(whip) = state.whip.clone() else {
        return off();
    };
    if !content_type_is(&headers, "application/sdp") {
        return refuse(
            &state,
            Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                "a WHIP offer is sent as Content-Type: application/sdp",
            ),
        );
    }
    let token = bearer(&headers);
    let name = match authorize(
        state.ingests.keys(),
        &state.auth,
        &broadcast,
        token.as_deref(),
    ) {
        Ok(name) => name,
        Err(r) => return refuse(&state, r),
    };
    if body.len() > MAX_BODY {
        return refuse(
            &state,
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "malformed_sdp",
                format!("the SDP offer is larger than {MAX_BODY} bytes"),
            ),
        );
    }
    let sdp = match std::str::from_utf8(&body) {
        Ok(s) => s,
        Err(_) => {
            return refuse(
                &state,
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_sdp",
                    "malformed SDP offer: not UTF-8",
                ),
            )
        }
    };
    let (offer, expects_video) = match parse_offer(sdp) {
        Ok(o) => o,
        Err(r) => return refuse(&state, r),
    };
    let Some(slot) = whip.slots.try_acquire() else {
        return refuse(
            &state,
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_limit",
                "too many WebRTC sessions on this relay (--webrtc-max-sessions): try later",
            ),
        );
    };
    let id = state.ingests.connection_id();
    let claim = match state.ingests.claim(&state, &name, id, Protocol::Whip) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                &state,
                Refusal::new(StatusCode::CONFLICT, e.reason(), e.to_string()),
            )
        }
    };
    let resource = new_resource_id();
    let host = whip.candidate_ip(&headers, &uri).await;
    let (reply, answer) = oneshot::channel();
    whip.resources.lock().expect("poisoned").insert(
        resource.clone(),
        Resource {
            token,
            broadcast: name.clone(),
            ufrag: sdp
                .lines()
                .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
                .map(|u| u.trim().to_string()),
        },
    );
    let command = Command::Offer(Box::new(Offer {
        id: resource.clone(),
        offer,
        host,
        expects_video,
        claim,
        slot,
        reply,
    }));
    if whip.commands.try_send(command).is_err() {
        whip.forget(&resource);
        return refuse(
            &state,
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the WebRTC engine is busy: try again",
            ),
        );
    }
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(reason))) => {
            whip.forget(&resource);
            return refuse(
                &state,
                Refusal::new(StatusCode::BAD_REQUEST, "unsupported_offer", reason),
            );
        }
        _ => {
            whip.forget(&resource);
            let _ = whip.commands.try_send(Command::End { id: resource });
            return refuse(
                &state,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the WebRTC engine did not answer in time",
                ),
            );
        }
    };
    tracing::info!(broadcast = %name, session = %resource, %host, "WHIP session created");
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/whip-session/{resource}")),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag".to_string(),
            ),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_string()),
            (header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE.to_string()),
        ],
        answer,
    )
        .into_response()
}

/// A session id: 128 random bits, hex.
fn new_resource_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The session `id` if the request may act on it (the same token as its POST).
fn resource(whip: &Whip, id: &str, headers: &HeaderMap) -> Result<Resource, Refusal> {
    let found = whip.resources.lock().expect("poisoned").get(id).cloned();
    let Some(r) = found else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no such WHIP session (it ended, or never was)",
        ));
    };
    if r.token.is_some() && bearer(headers) != r.token {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "token",
            "this WHIP session needs the token that created it",
        ));
    }
    Ok(r)
}

/// `PATCH /whip-session/{id}`: trickled ICE candidates (RFC 8840 fragments).
pub async fn patch(
    State(state): State<Arc<RelayState>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(whip) = state.whip.clone() else {
        return off();
    };
    let r = match resource(&whip, &id, &headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "trickled candidates are sent as Content-Type: application/trickle-ice-sdpfrag",
        )
        .into_response();
    }
    if body.len() > MAX_BODY {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let fragment = String::from_utf8_lossy(&body);
    let candidates = match parse_trickle(&fragment, r.ufrag.as_deref()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if !candidates.is_empty()
        && whip
            .commands
            .try_send(Command::Trickle { id, candidates })
            .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (
        StatusCode::NO_CONTENT,
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
    )
        .into_response()
}

/// The UDP candidates of a trickle fragment. An ICE restart (a username fragment other than
/// the offer's `ufrag`) is refused: the publisher then starts a new session with a new POST.
pub fn parse_trickle(
    fragment: &str,
    ufrag: Option<&str>,
) -> Result<Vec<str0m::Candidate>, Refusal> {
    let mut out = Vec::new();
    for line in fragment.lines().map(str::trim) {
        if let (Some(new), Some(old)) = (line.strip_prefix("a=ice-ufrag:"), ufrag) {
            if new.trim() != old {
                return Err(Refusal::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "ice_restart",
                    "ICE restarts are not supported: publish again with a new POST",
                ));
            }
        }
        let Some(c) = line.strip_prefix("a=") else {
            continue;
        };
        if !c.starts_with("candidate:") {
            continue;
        }
        let candidate = str0m::Candidate::from_sdp_string(c).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "malformed_sdp",
                format!(
                    "malformed candidate {:?}: {e}",
                    c.chars().take(80).collect::<String>()
                ),
            )
        })?;
        if candidate.proto() == str0m::net::Protocol::Udp {
            out.push(candidate);
        }
    }
    Ok(out)
}

/// `DELETE /whip-session/{id}`: ends the publication; the broadcast leaves the origin.
pub async fn delete(
    State(state): State<Arc<RelayState>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let Some(whip) = state.whip.clone() else {
        return off();
    };
    let r = match resource(&whip, &id, &headers) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    whip.forget(&id);
    // The engine must hear it: wait for room rather than drop the command.
    let _ = tokio::time::timeout(
        ANSWER_TIMEOUT,
        whip.commands.send(Command::End { id: id.clone() }),
    )
    .await;
    tracing::info!(broadcast = %r.broadcast, session = %id, "WHIP session deleted");
    // A body: FFmpeg's WHIP muxer reads the DELETE response until its end and counts an
    // empty one as a failure.
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        "WHIP session ended\n",
    )
        .into_response()
}

/// `OPTIONS`: CORS preflight, and what the endpoint takes (RFC 9725 §4.2).
pub async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag",
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_authorities() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("relay.example"), "relay.example");
        assert_eq!(host_of("relay.example:443"), "relay.example");
    }

    #[test]
    fn advertised_addresses() {
        assert_eq!(
            parse_advertised("203.0.113.9"),
            Ok(("203.0.113.9".parse().unwrap(), None))
        );
        assert_eq!(
            parse_advertised("203.0.113.9:30445"),
            Ok(("203.0.113.9".parse().unwrap(), Some(30445)))
        );
        assert_eq!(
            parse_advertised("[2001:db8::1]:4445"),
            Ok(("2001:db8::1".parse().unwrap(), Some(4445)))
        );
        assert!(parse_advertised("0.0.0.0").is_err());
        assert!(parse_advertised("relay.example").is_err());
        assert!(parse_advertised("203.0.113.9:0").is_err());
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("a.b.c"));
        h.insert(header::AUTHORIZATION, "bearer  k ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("k"));
        h.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn offers_are_checked_before_any_session() {
        assert_eq!(
            parse_offer("hello").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let e = parse_offer("v=0\r\nm=video 9 nonsense\r\n").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.reason.starts_with("malformed SDP offer"), "{}", e.reason);
        assert!(
            !e.reason.contains('\n') && !e.reason.contains("0x"),
            "{}",
            e.reason
        );
        assert_eq!(
            sdp_error(
                "SDP parse: Parse error at PointerOffset(0x7f00)\nUnexpected `m`\nExpected `o`\n"
            ),
            "SDP parse: Parse error; Unexpected `m`; Expected `o`"
        );
        assert!(!accepts_media("v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert!(accepts_media(
            "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
    }

    #[test]
    fn trickle_fragments_give_udp_candidates() {
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                    a=candidate:1 1 udp 2113929471 192.0.2.7 50000 typ host\r\n\
                    a=candidate:2 1 tcp 2113929470 192.0.2.7 9 typ host tcptype active\r\n\
                    a=end-of-candidates\r\n";
        let c = parse_trickle(frag, Some("abcd")).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].addr(), "192.0.2.7:50000".parse().unwrap());
        assert_eq!(
            parse_trickle("a=candidate:1 1 udp x\r\n", None)
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_trickle(frag, Some("other")).unwrap_err().status,
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn without_keys_or_tokens_any_valid_name_publishes() {
        let keys = push::keys::Keys::new(None);
        let open = crate::auth::Auth::open();
        assert_eq!(authorize(&keys, &open, "live/a", None), Ok("live/a".into()));
        assert_eq!(
            authorize(&keys, &open, "a b", Some("x"))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}

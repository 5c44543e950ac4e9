//! The WHIP ingest's media side: one task owns the WebRTC UDP socket and every session's
//! sans-IO [`Rtc`], and drives them (str0m's `handle_input` / `poll_output` loop).
//!
//! Incoming datagrams are demultiplexed by [`Rtc::accepts`] (the nominated remote address,
//! else the STUN username of the session's ICE credentials). Each session is driven after
//! its input and at the time its `Rtc` asked for; its output is sent at once
//! (`try_send_to`: a full socket buffer drops the datagram, as the network would). Sessions
//! come and go by [`Command`]s from the HTTP side (a bounded queue). A session owns its
//! broadcast ([`push::Claim`]) and its slot: both are released when it is dropped, however it
//! ends. Dropping the engine (the relay stops) drops every session.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use str0m::{
    change::SdpOffer,
    format::Codec,
    media::{KeyframeRequestKind, MediaData, MediaKind, Mid},
    net::{Protocol as NetProtocol, Receive},
    Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig,
};
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    accepts_media,
    media::{Depacketizer, SenderClock},
    Command, Offer, Whip,
};
use crate::{limits::Slot, push, RelayState};

/// Largest datagram read (WebRTC keeps packets under about 1,200 bytes).
const DATAGRAM: usize = 2048;

/// Keyframe requests for one session at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// How often str0m reports per-stream statistics (NACKs, PLIs, packets).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The media side of the WHIP ingest; see the [module documentation](self).
pub struct Engine {
    socket: UdpSocket,
    local: SocketAddr,
    commands: mpsc::Receiver<Command>,
    /// The port host candidates advertise (`--webrtc-host IP:PORT`), else the socket's.
    port: u16,
    /// The DTLS certificate of every session (ECDSA P-256, made at start).
    cert: str0m::config::DtlsCert,
}

impl Engine {
    pub(crate) fn new(
        socket: UdpSocket,
        commands: mpsc::Receiver<Command>,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("could not make the WebRTC DTLS certificate"))?;
        let local = socket.local_addr()?;
        Ok(Self {
            port: port.unwrap_or(local.port()),
            local,
            socket,
            commands,
            cert,
        })
    }

    /// Serves sessions until `cancel` (or the HTTP side is gone); then every session ends.
    pub async fn run(mut self, state: Arc<RelayState>, whip: Arc<Whip>, cancel: CancellationToken) {
        tracing::info!(addr = %self.local, "WHIP ingest: WebRTC media on UDP");
        let mut sessions: HashMap<String, Session> = HashMap::new();
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            let next = sessions
                .values()
                .map(|s| s.wake)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let mut touched: Option<String> = None;
            tokio::select! {
                () = cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Offer(offer)) => {
                        let id = offer.id.clone();
                        if let Some(session) = self.open(*offer, &state) {
                            sessions.insert(id.clone(), session);
                            touched = Some(id);
                        } else {
                            whip.forget(&id);
                        }
                    }
                    Some(Command::Trickle { id, candidates }) => {
                        if let Some(s) = sessions.get_mut(&id) {
                            for c in candidates {
                                s.rtc.add_remote_candidate(c);
                            }
                            touched = Some(id);
                        }
                    }
                    Some(Command::End { id }) => {
                        if let Some(mut s) = sessions.remove(&id) {
                            s.end = Some(End::Deleted);
                            s.finish(&state, &self.socket);
                        }
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.receive(&buf[..n], source, &mut sessions, &state),
                    Err(e) => {
                        tracing::debug!(error = %e, "WebRTC socket receive failed");
                    }
                },
                () = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    for s in sessions.values_mut().filter(|s| s.wake <= now) {
                        if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!(session = %s.id, error = %e, "WebRTC timeout handling failed");
                            s.end.get_or_insert(End::Failed(e.to_string()));
                        }
                        s.check_deadlines(now, &whip);
                        s.drive(&self.socket, &state);
                    }
                }
            }
            if let Some(id) = touched {
                if let Some(s) = sessions.get_mut(&id) {
                    s.drive(&self.socket, &state);
                }
            }
            let ended: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.end.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for id in ended {
                if let Some(s) = sessions.remove(&id) {
                    whip.forget(&id);
                    s.finish(&state, &self.socket);
                }
            }
        }
        for (id, mut s) in sessions.drain() {
            whip.forget(&id);
            s.end.get_or_insert(End::Shutdown);
            s.finish(&state, &self.socket);
        }
    }

    /// A new session for an offer; the answer (or why not) goes back to the HTTP side.
    fn open(&self, offer: Offer, state: &Arc<RelayState>) -> Option<Session> {
        let Offer {
            id,
            offer,
            host,
            expects_video,
            claim,
            slot,
            reply,
        } = offer;
        match self.accept(offer, host) {
            Ok((rtc, answer, candidate)) => {
                if reply.send(Ok(answer)).is_err() {
                    // The POST gave up waiting: no one knows the session.
                    return None;
                }
                let now = Instant::now();
                let counters = push::Protocol::Whip.counters(&state.metrics);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                state
                    .metrics
                    .webrtc
                    .sessions_total
                    .fetch_add(1, Ordering::Relaxed);
                let span = tracing::info_span!("whip", session = %id, broadcast = %claim.name());
                Some(Session {
                    id,
                    rtc,
                    local: candidate,
                    claim,
                    _slot: slot,
                    span,
                    created: now,
                    wake: now,
                    connected: false,
                    last_media: now,
                    end: None,
                    media: Depacketizer::new(expects_video),
                    events: Vec::new(),
                    video: None,
                    audio: None,
                    awaiting_keyframe: true,
                    last_pli: None,
                    video_skipped: 0,
                    stats: HashMap::new(),
                    last_seq: HashMap::new(),
                })
            }
            Err(reason) => {
                let _ = reply.send(Err(reason));
                None
            }
        }
    }

    /// An `Rtc` that accepted `offer`, its answer, and its host candidate's address.
    fn accept(&self, offer: SdpOffer, host: IpAddr) -> Result<(Rtc, String, SocketAddr), String> {
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_ice_lite(true)
            .set_dtls_cert(self.cert.clone())
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(Instant::now());
        let addr = SocketAddr::new(host, self.port);
        let candidate = Candidate::host(addr, "udp")
            .map_err(|e| format!("no ICE candidate for {addr}: {e}"))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("the SDP offer was refused: {e}"))?
            .to_sdp_string();
        if !accepts_media(&answer) {
            return Err(
                "the SDP offer has no codec this relay takes: publish H.264 video and/or Opus audio"
                    .into(),
            );
        }
        Ok((rtc, answer, addr))
    }

    /// Hands a datagram to the session it belongs to, and drives that session.
    fn receive(
        &self,
        data: &[u8],
        source: SocketAddr,
        sessions: &mut HashMap<String, Session>,
        state: &RelayState,
    ) {
        let webrtc = &state.metrics.webrtc;
        webrtc
            .udp_bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        webrtc.udp_packets_in.fetch_add(1, Ordering::Relaxed);
        // A dual-stack socket sees IPv4 peers as IPv4-mapped IPv6 addresses.
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        let now = Instant::now();
        let probe = |destination: SocketAddr| -> Option<Input<'_>> {
            Some(Input::Receive(
                now,
                Receive {
                    proto: NetProtocol::Udp,
                    source,
                    destination,
                    contents: data.try_into().ok()?,
                },
            ))
        };
        let Some(input) = probe(self.local) else {
            webrtc.udp_unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some((id, session)) = sessions.iter_mut().find(|(_, s)| s.rtc.accepts(&input)) else {
            webrtc.udp_unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Destination: the session's own candidate (the socket may be bound to a wildcard).
        let Some(input) = probe(session.local) else {
            return;
        };
        if let Err(e) = session.rtc.handle_input(input) {
            tracing::debug!(session = %id, error = %e, "WebRTC input refused");
        }
        // Driven here, where the session is at hand: no id to copy for every datagram.
        session.drive(&self.socket, state);
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Deleted,
    IceFailed,
    NotConnected,
    NoMedia,
    Closed,
    Failed(String),
    Shutdown,
}

/// One WHIP session: its `Rtc`, its broadcast and where its media stands.
struct Session {
    id: String,
    rtc: Rtc,
    /// Its host candidate's address (the destination of its datagrams).
    local: SocketAddr,
    claim: push::Claim,
    _slot: Slot,
    span: tracing::Span,
    created: Instant,
    /// When its `Rtc` wants time to be handed in.
    wake: Instant,
    connected: bool,
    last_media: Instant,
    end: Option<End>,
    media: Depacketizer,
    events: Vec<moqcast_media::flv::Event>,
    video: Option<Mid>,
    audio: Option<Mid>,
    /// Video frames are dropped until a keyframe: at the start and after unrecovered loss.
    awaiting_keyframe: bool,
    last_pli: Option<Instant>,
    /// Video frames dropped while waiting for a keyframe.
    video_skipped: u64,
    /// The latest cumulative (packets, nacks, plis, firs) of each incoming stream.
    stats: HashMap<Mid, [u64; 4]>,
    /// The last RTP sequence number of each stream's delivered frames (unrecovered loss).
    last_seq: HashMap<Mid, u64>,
}

impl Session {
    /// Ends sessions that never connected or went silent.
    fn check_deadlines(&mut self, now: Instant, whip: &Whip) {
        let timeout = whip.config.timeout;
        if !self.connected && now.saturating_duration_since(self.created) > timeout {
            self.end.get_or_insert(End::NotConnected);
        } else if self.connected && now.saturating_duration_since(self.last_media) > timeout {
            self.end.get_or_insert(End::NoMedia);
        }
    }

    /// Sends what the `Rtc` has to send and handles its events, until it waits for time.
    fn drive(&mut self, socket: &UdpSocket, state: &RelayState) {
        let _span = self.span.clone().entered();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // At least once a second, for the deadlines.
                    self.wake = t.min(Instant::now() + Duration::from_secs(1));
                    break;
                }
                Ok(Output::Transmit(t)) => send(socket, &t, state),
                Ok(Output::Event(e)) => self.event(e, state),
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC session failed");
                    self.end.get_or_insert(End::Failed(e.to_string()));
                    break;
                }
            }
        }
        if !self.rtc.is_alive() {
            self.end.get_or_insert(End::Closed);
        }
    }

    fn event(&mut self, event: Event, state: &RelayState) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.last_media = Instant::now();
                tracing::info!(
                    setup_ms = self.created.elapsed().as_millis() as u64,
                    "WHIP publisher connected (ICE and DTLS)"
                );
                self.request_keyframe(state);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end.get_or_insert(End::IceFailed);
            }
            Event::MediaAdded(m) => match m.kind {
                MediaKind::Video => self.video = Some(m.mid),
                MediaKind::Audio => self.audio = Some(m.mid),
            },
            Event::MediaData(d) => self.media_data(d, state),
            Event::MediaIngressStats(s) => {
                let now = [s.packets, s.nacks, s.plis, s.firs];
                let before = self.stats.insert(s.mid, now).unwrap_or_default();
                let webrtc = &state.metrics.webrtc;
                let delta = |i: usize| now[i].saturating_sub(before[i]);
                webrtc.rtp_packets.fetch_add(delta(0), Ordering::Relaxed);
                webrtc.nacks.fetch_add(delta(1), Ordering::Relaxed);
                webrtc.plis.fetch_add(delta(2), Ordering::Relaxed);
                webrtc.firs.fetch_add(delta(3), Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn media_data(&mut self, d: MediaData, state: &RelayState) {
        let now = Instant::now();
        self.last_media = now;
        // Unrecovered loss: sequence numbers missing between delivered frames.
        let (first, last) = (**d.seq_range.start(), **d.seq_range.end());
        if let Some(prev) = self.last_seq.insert(d.mid, last) {
            let lost = first.saturating_sub(prev + 1);
            if lost > 0 {
                state
                    .metrics
                    .webrtc
                    .packets_lost
                    .fetch_add(lost, Ordering::Relaxed);
            }
        }
        let report = d.last_sender_info.map(|s| SenderClock {
            ntp: s.ntp_time,
            rtp: s.rtp_time.numer(),
        });
        let rtp = d.time.numer();
        match d.params.spec().codec {
            Codec::H264 => {
                if !d.contiguous && !self.awaiting_keyframe {
                    tracing::debug!(
                        seq = first,
                        "video data lost for good: dropping video until a keyframe"
                    );
                    self.awaiting_keyframe = true;
                }
                let mut events = std::mem::take(&mut self.events);
                match self.media.h264(&d.data, rtp, now, report, &mut events) {
                    Ok(true) => self.awaiting_keyframe = false,
                    Ok(false) => {}
                    Err(e) => {
                        state.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "dropping a malformed H.264 access unit");
                        self.awaiting_keyframe = true;
                    }
                }
                if self.awaiting_keyframe {
                    // Until a keyframe, video frames cannot be decoded: keep configurations
                    // and held audio, drop the frame.
                    let before = events.len();
                    events.retain(|e| {
                        !matches!(
                            e,
                            moqcast_media::flv::Event::Frame(moqcast_media::MediaKind::Video, _)
                        )
                    });
                    self.video_skipped += (before - events.len()) as u64;
                    self.request_keyframe(state);
                }
                self.events = events;
            }
            Codec::Opus => {
                let mut events = std::mem::take(&mut self.events);
                self.media.opus(&d.data, rtp, now, report, &mut events);
                self.events = events;
            }
            _ => {}
        }
        let at = tokio::time::Instant::from_std(now);
        for event in self.events.drain(..) {
            self.claim.apply(state, event, at);
        }
    }

    /// Asks the publisher for a keyframe (PLI, else FIR), at most every [`PLI_INTERVAL`].
    fn request_keyframe(&mut self, _state: &RelayState) {
        let Some(mid) = self.video else {
            return;
        };
        let now = Instant::now();
        if self
            .last_pli
            .is_some_and(|t| now.saturating_duration_since(t) < PLI_INTERVAL)
        {
            return;
        }
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
            KeyframeRequestKind::Fir
        } else {
            return;
        };
        if writer.request_keyframe(None, kind).is_ok() {
            self.last_pli = Some(now);
        }
    }

    /// The session is over: its broadcast leaves the origin (the claim is dropped), its slot
    /// is freed.
    fn finish(mut self, state: &RelayState, socket: &UdpSocket) {
        let _span = self.span.clone().entered();
        let counters = push::Protocol::Whip.counters(&state.metrics);
        counters.connections.fetch_sub(1, Ordering::Relaxed);
        match &self.end {
            Some(End::NotConnected | End::NoMedia) => {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(end = ?self.end, "WHIP session timed out");
            }
            Some(End::IceFailed) => {
                state
                    .metrics
                    .webrtc
                    .ice_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!("WHIP session ended: ICE connectivity lost");
            }
            end => {
                let (video, audio) = self.media.anchors();
                tracing::info!(
                    ?end,
                    dropped = self.media.dropped,
                    video_skipped = self.video_skipped,
                    video_anchored_by_sender_report = ?video,
                    audio_anchored_by_sender_report = ?audio,
                    "WHIP session ended"
                )
            }
        }
        // Tell the publisher (RTCP BYE, DTLS close_notify): what is ready now, at most a few.
        if self.rtc.close().is_ok() {
            for _ in 0..16 {
                match self.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => send(socket, &t, state),
                    Ok(Output::Event(_)) => {}
                    _ => break,
                }
            }
        }
    }
}

/// Sends one datagram of a session now, or drops it (counted) when the socket is full.
fn send(socket: &UdpSocket, t: &str0m::net::Transmit, state: &RelayState) {
    let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let destination = match (v6, t.destination) {
        // A dual-stack socket sends to IPv4 peers at their IPv4-mapped address.
        (true, SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        (_, d) => d,
    };
    if socket.try_send_to(&t.contents, destination).is_err() {
        state
            .metrics
            .webrtc
            .udp_send_dropped
            .fetch_add(1, Ordering::Relaxed);
    }
}

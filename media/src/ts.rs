//! MPEG transport stream (ISO/IEC 13818-1), as SRT publishers send it, repackaged into moqcast
//! frames and track configurations without transcoding.
//!
//! `mpeg2ts-reader` reads the packets, the PAT and the PMT; this module reassembles the PES
//! packets of the program's first H.264 stream (`stream_type` 0x1b) and first audio stream,
//! AAC in ADTS (0x0f) or Opus (private data, 0x06, registered as `Opus`), and turns their
//! payloads into the same [`Event`]s the RTMP path makes ([`crate::flv::Repackager`]):
//!
//! * **Video:** each PES packet is one Annex-B access unit. Parameter sets in band (before each
//!   keyframe, as x264 and OBS send them) become the `avcC` record of the track configuration
//!   (a new [`Event::VideoConfig`] when they change); frames leave as 4-byte AVCC through
//!   [`crate::h264`], without access unit delimiters. A frame is a keyframe when it holds an
//!   IDR slice. A video PES of unbounded length ends where the next one starts, so a frame
//!   leaves when the next one begins.
//! * **Audio:** a PES packet holds one or more ADTS frames; each becomes one raw AAC frame,
//!   timed from the PES timestamp by 1024 samples a frame. The ADTS header gives the
//!   `AudioSpecificConfig`.
//! * **Opus** (the ETSI draft "Opus Interactive Audio Codec: Transport Multiplexing Standard",
//!   "OpusTS" on the Xiph wiki, as FFmpeg writes and reads it): a PES packet holds one or more access units, each an
//!   `opus_control_header` (the 11-bit prefix `0x3ff`, trim and extension flags, the size as a
//!   run of `0xff` bytes) and one Opus packet. Each packet becomes one frame, timed from the PES
//!   timestamp by the durations its TOC bytes give ([`crate::opus::packet_samples`]). The
//!   channel count comes from the PMT's Opus audio descriptor (extension tag 0x80; stereo when
//!   it is missing), and the configuration is the `OpusHead` FFmpeg's demuxer makes of it
//!   (pre-skip 312). Trim values are read past, not applied.
//! * **Start:** frames are held (at most [`MAX_HELD`]) until every track the PMT lists has its
//!   configuration, so that the broadcast is announced with all its tracks in its first
//!   catalog (audio's configuration comes with its first frame, video's with the first
//!   keyframe).
//! * **Timestamps:** PTS (90 kHz, 33 bits) are unwrapped across the 26.5-hour wrap and made
//!   relative to the stream's first timestamp, plus [`HEADROOM_US`] so that frames presented a
//!   little before the first one seen (audio ahead of video) stay positive.
//!
//! HEVC, MPEG audio, AC-3, Opus with more than two channels and other codecs in the PMT are refused with [`TsError::Unsupported`],
//! which names the codec; data streams (SCTE-35, metadata) are ignored.
//!
//! Bytes may arrive in any chunks ([`Demuxer::push`] keeps a partial packet). Pure logic without
//! I/O: nothing here panics on any input, and a PES payload is bounded by [`MAX_UNIT`]. Errors
//! tell what broke ([`TsError::Malformed`]: lost sync, a broken PES, ADTS or parameter set) from
//! a codec moqcast does not carry; after a malformed input the demuxer goes on with what
//! follows (it finds the next sync byte), so the caller decides how much to tolerate. Units
//! lost to continuity-counter gaps (a packet the network dropped) are counted, not errors.

use bytes::Bytes;
use mpeg2ts_reader::{demultiplex, descriptor, packet, pes, psi, StreamType};

use crate::aac::{AacError, AdtsHeader};
use crate::flv::{aac_info, opus_info, video_info, FlvError};
use crate::h264::{self, AvcConfig, H264Error};
use crate::info::{opus_head, AudioInfo, VideoInfo};
use crate::{Frame, MediaKind};

pub use crate::flv::Event;

/// Size of a transport stream packet.
pub const PACKET: usize = 188;
/// The sync byte every packet starts with.
const SYNC: u8 = 0x47;
/// Most bytes of one PES payload (a video access unit): larger ones are malformed.
pub const MAX_UNIT: usize = 8 * 1024 * 1024;
/// Added to the relative timestamps: frames presented up to this much before the first
/// timestamp seen still map to positive times.
pub const HEADROOM_US: u64 = 1_000_000;

/// Why transport stream bytes could not be repackaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TsError {
    /// The bytes break the syntax (what was dropped is said); the demuxer goes on after them.
    #[error("malformed MPEG-TS: {0}")]
    Malformed(&'static str),
    /// A codec moqcast does not carry (it names it).
    #[error("unsupported {0}: moqcast carries H.264 video and AAC or Opus audio over MPEG-TS")]
    Unsupported(String),
}

impl From<H264Error> for TsError {
    fn from(e: H264Error) -> Self {
        match e {
            H264Error::Incomplete => TsError::Malformed("truncated H.264 data"),
            H264Error::Malformed(m) => TsError::Malformed(m),
        }
    }
}

impl From<AacError> for TsError {
    fn from(e: AacError) -> Self {
        match e {
            AacError::Incomplete => TsError::Malformed("truncated ADTS frame"),
            AacError::Malformed(m) => TsError::Malformed(m),
        }
    }
}

impl From<FlvError> for TsError {
    fn from(e: FlvError) -> Self {
        match e {
            FlvError::Incomplete => TsError::Malformed("truncated codec configuration"),
            FlvError::Malformed(m) => TsError::Malformed(m),
            FlvError::Unsupported(what) => TsError::Unsupported(what),
        }
    }
}

/// What an elementary stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    H264,
    Adts,
    /// Opus access units, mono or stereo.
    Opus {
        channels: u8,
    },
}

/// The pre-skip of the `OpusHead` made for Opus over MPEG-TS, which carries none (FFmpeg's
/// demuxer uses the same: 312 samples, libopus's encoder delay at 48 kHz).
const OPUS_PRE_SKIP: u16 = 312;

/// A descriptor's tag and payload (`mpeg2ts-reader`'s own types cover ISO/IEC 13818-1 only).
struct RawDescriptor<'buf> {
    tag: u8,
    payload: &'buf [u8],
}

impl<'buf> descriptor::Descriptor<'buf> for RawDescriptor<'buf> {
    fn from_bytes(buf: &'buf [u8]) -> Result<Self, descriptor::DescriptorError> {
        // The iterator hands whole descriptors: tag, length (checked), payload.
        match buf {
            [tag, _, payload @ ..] => Ok(Self { tag: *tag, payload }),
            _ => Err(descriptor::DescriptorError::BufferTooShort { buflen: buf.len() }),
        }
    }
}

/// What a private-data stream (`stream_type` 0x06) carries, from its descriptors: Opus
/// (registered as `Opus`, with its channel count), AC-3 (refused by name), or data.
fn private_stream(info: &psi::pmt::StreamInfo<'_>) -> Option<Result<Codec, TsError>> {
    let mut opus = false;
    let mut ac3 = false;
    let mut channel_code = None;
    for d in info.descriptors::<RawDescriptor<'_>>().flatten() {
        match (d.tag, d.payload) {
            (0x05, [b'O', b'p', b'u', b's', ..]) => opus = true,
            (0x05, [b'A' | b'E', b'C', b'-', b'3', ..]) | (0x6a | 0x7a, _) => ac3 = true,
            // The extension descriptor with Opus's tag extension: channel_config_code.
            (0x7f, [0x80, code, ..]) => channel_code = Some(*code),
            _ => {}
        }
    }
    if ac3 {
        return Some(Err(TsError::Unsupported("AC-3/E-AC-3 audio".into())));
    }
    if !opus {
        return None;
    }
    Some(match channel_code {
        // No descriptor: stereo, as FFmpeg assumes.
        None => Ok(Codec::Opus { channels: 2 }),
        Some(channels @ 1..=2) => Ok(Codec::Opus { channels }),
        Some(0) => Err(TsError::Unsupported("dual-mono Opus".into())),
        Some(code) => Err(TsError::Unsupported(format!(
            "Opus with channel configuration {code:#04x} (moqcast carries mono and stereo Opus)"
        ))),
    })
}

/// Splits the first Opus access unit off `data`: its `opus_control_header` is read past and
/// the Opus packet returned, with what follows.
fn opus_access_unit(data: &[u8]) -> Result<(&[u8], &[u8]), TsError> {
    const TRUNCATED: TsError = TsError::Malformed("a truncated Opus access unit header");
    let [0x7f, flags, ..] = data else {
        return Err(TsError::Malformed(
            "an Opus access unit without its control header (0x7fe)",
        ));
    };
    if flags & 0xe0 != 0xe0 {
        return Err(TsError::Malformed(
            "an Opus access unit without its control header (0x7fe)",
        ));
    }
    let mut i = 2;
    let mut size = 0usize;
    loop {
        let b = *data.get(i).ok_or(TRUNCATED)?;
        i += 1;
        size += usize::from(b);
        if b != 0xff {
            break;
        }
    }
    // start_trim and end_trim: 16 bits each.
    i += 2 * usize::from(flags & 0x10 != 0) + 2 * usize::from(flags & 0x08 != 0);
    if flags & 0x04 != 0 {
        i += 1 + usize::from(*data.get(i).ok_or(TRUNCATED)?);
    }
    if i > data.len() {
        return Err(TRUNCATED);
    }
    if size == 0 {
        return Err(TsError::Malformed("an empty Opus access unit"));
    }
    let end = i
        .checked_add(size)
        .filter(|&end| end <= data.len())
        .ok_or(TsError::Malformed(
            "an Opus access unit longer than its PES packet",
        ))?;
    Ok((&data[i..end], &data[end..]))
}

/// One reassembled PES payload.
struct Unit {
    codec: Codec,
    /// 33-bit PTS (or DTS when there is no PTS), 90 kHz.
    pts: Option<u64>,
    data: Vec<u8>,
}

/// What the packet filters tell the demuxer; the `mpeg2ts-reader` context.
#[derive(Default)]
struct Ctx {
    changeset: demultiplex::FilterChangeset<Filter>,
    /// Completed PES payloads, drained after every run of packets.
    units: Vec<Unit>,
    /// The first problem seen in this run (handed to the caller).
    error: Option<TsError>,
    has_video: bool,
    has_audio: bool,
    /// Units lost to continuity gaps or oversize.
    lost: u64,
}

impl Ctx {
    fn fail(&mut self, e: TsError) {
        self.error.get_or_insert(e);
    }
}

/// The packet filter of each PID, boxed: the demultiplexer keeps a slot for every PID up to the
/// highest one in use (8,192 at most), and a PMT may name any of them, so a slot is one pointer
/// (64 KiB at most per connection, not 720 KiB).
struct Filter(Box<Kind>);

enum Kind {
    Pat(demultiplex::PatPacketFilter<Ctx>),
    Pmt(demultiplex::PmtPacketFilter<Ctx>),
    Pes(Collector),
    Null(demultiplex::NullPacketFilter<Ctx>),
}

impl demultiplex::PacketFilter for Filter {
    type Ctx = Ctx;

    fn consume(&mut self, ctx: &mut Ctx, pk: &packet::Packet<'_>) {
        match &mut *self.0 {
            Kind::Pat(f) => f.consume(ctx, pk),
            Kind::Pmt(f) => f.consume(ctx, pk),
            Kind::Pes(f) => f.consume(ctx, pk),
            Kind::Null(f) => f.consume(ctx, pk),
        }
    }
}

impl demultiplex::DemuxContext for Ctx {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut demultiplex::FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, req: demultiplex::FilterRequest<'_, '_>) -> Filter {
        use demultiplex::FilterRequest;
        Filter(Box::new(match req {
            FilterRequest::ByPid(packet::Pid::PAT) => Kind::Pat(Default::default()),
            FilterRequest::Pmt {
                pid,
                program_number,
            } => Kind::Pmt(demultiplex::PmtPacketFilter::new(pid, program_number)),
            FilterRequest::ByStream {
                stream_type,
                stream_info,
                ..
            } => self.stream_filter(stream_type, stream_info),
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => Kind::Null(Default::default()),
        }))
    }
}

impl Ctx {
    /// The filter of a stream the PMT lists: the first H.264 and first AAC are collected.
    fn stream_filter(&mut self, stream_type: StreamType, info: &psi::pmt::StreamInfo<'_>) -> Kind {
        let collect = |codec| Kind::Pes(Collector::new(codec));
        match stream_type {
            StreamType::H264 if !self.has_video => {
                self.has_video = true;
                collect(Codec::H264)
            }
            StreamType::ADTS if !self.has_audio => {
                self.has_audio = true;
                collect(Codec::Adts)
            }
            StreamType::H264 | StreamType::ADTS => Kind::Null(Default::default()),
            StreamType(0x06) => match private_stream(info) {
                Some(Ok(codec)) if !self.has_audio => {
                    self.has_audio = true;
                    collect(codec)
                }
                Some(Err(e)) => {
                    self.fail(e);
                    Kind::Null(Default::default())
                }
                // A second audio stream, or data (subtitles, metadata).
                _ => Kind::Null(Default::default()),
            },
            other => {
                let name = match other.0 {
                    0x01 | 0x02 => Some("MPEG-1/2 video"),
                    0x10 => Some("MPEG-4 Part 2 video"),
                    0x24 => Some("HEVC video"),
                    0x33 => Some("VVC video"),
                    0x03 | 0x04 => Some("MPEG audio (MP2/MP3)"),
                    0x11 => Some("AAC in LATM"),
                    0x1c => Some("AAC without ADTS"),
                    0x81 | 0x87 => Some("AC-3/E-AC-3 audio"),
                    _ => None,
                };
                if let Some(name) = name {
                    self.fail(TsError::Unsupported(name.into()));
                }
                Kind::Null(Default::default())
            }
        }
    }
}

/// Reassembles one elementary stream's PES packets into [`Unit`]s.
///
/// (Not `mpeg2ts_reader::pes::PesPacketFilter`: that one ends a PES packet only when the next
/// one starts, even when the header gives its length, which would hold every audio packet
/// back by one PES interval. This one ends a bounded packet as soon as its last byte arrives,
/// and an unbounded one (video) when the next one starts.)
struct Collector {
    codec: Codec,
    buf: Vec<u8>,
    pts: Option<u64>,
    /// A PES packet is being collected (and nothing of it was lost).
    active: bool,
    /// Payload bytes still to come of a bounded PES packet.
    remaining: Option<usize>,
    last_cc: Option<packet::ContinuityCounter>,
}

impl Collector {
    fn new(codec: Codec) -> Self {
        Self {
            codec,
            buf: Vec::new(),
            pts: None,
            active: false,
            remaining: None,
            last_cc: None,
        }
    }

    fn append(&mut self, ctx: &mut Ctx, data: &[u8]) {
        let data = match self.remaining {
            Some(left) => &data[..data.len().min(left)],
            None => data,
        };
        if self.buf.len() + data.len() > MAX_UNIT {
            self.active = false;
            self.buf = Vec::new();
            ctx.lost += 1;
            ctx.fail(TsError::Malformed("a PES packet larger than 8 MiB"));
            return;
        }
        self.buf.extend_from_slice(data);
        if let Some(left) = &mut self.remaining {
            *left -= data.len();
            if *left == 0 {
                self.end(ctx);
            }
        }
    }

    /// The PES packet is complete.
    fn end(&mut self, ctx: &mut Ctx) {
        if self.active && !self.buf.is_empty() {
            ctx.units.push(Unit {
                codec: self.codec,
                pts: self.pts,
                data: std::mem::take(&mut self.buf),
            });
        }
        self.buf.clear();
        self.active = false;
    }

    /// A packet starts a PES packet: `payload` is the transport packet's payload.
    fn begin(&mut self, ctx: &mut Ctx, payload: &[u8]) {
        self.end(ctx);
        let Some(header) = pes::PesHeader::from_bytes(payload) else {
            ctx.lost += 1;
            ctx.fail(TsError::Malformed("a PES packet without a start code"));
            return;
        };
        let length = match header.pes_packet_length() {
            pes::PesLength::Bounded(l) => Some(usize::from(l.get())),
            pes::PesLength::Unbounded => None,
        };
        let parsed = match header.contents() {
            pes::PesContents::Parsed(Some(parsed)) => parsed,
            pes::PesContents::Parsed(None) => {
                ctx.lost += 1;
                ctx.fail(TsError::Malformed("a PES header that does not parse"));
                return;
            }
            // Padding and other streams without the optional header carry no media.
            pes::PesContents::Payload(_) => return,
        };
        self.pts = match parsed.pts_dts() {
            Ok(pes::PtsDts::PtsOnly(Ok(pts))) => Some(pts.value()),
            Ok(pes::PtsDts::Both { pts: Ok(pts), .. }) => Some(pts.value()),
            Ok(pes::PtsDts::Both { dts: Ok(dts), .. }) => Some(dts.value()),
            _ => None,
        };
        let es = parsed.payload();
        // PES_packet_length counts the bytes after its own field (6 bytes into the packet).
        let header_len = payload.len() - es.len();
        self.remaining = match length {
            Some(l) if 6 + l < header_len => {
                ctx.lost += 1;
                ctx.fail(TsError::Malformed("a PES packet shorter than its header"));
                return;
            }
            Some(l) => Some(6 + l - header_len),
            None => None,
        };
        self.active = true;
        if self.remaining == Some(0) {
            self.end(ctx);
        } else {
            self.append(ctx, es);
        }
    }
}

impl demultiplex::PacketFilter for Collector {
    type Ctx = Ctx;

    fn consume(&mut self, ctx: &mut Ctx, pk: &packet::Packet<'_>) {
        let cc = pk.continuity_counter();
        let has_payload = pk.adaptation_control().has_payload();
        let continuous = match self.last_cc {
            None => true,
            Some(last) if has_payload => cc.follows(last),
            Some(last) => cc.count() == last.count(),
        };
        self.last_cc = Some(cc);
        if !continuous && self.active {
            // A packet of this PES is missing: the unit would decode wrong.
            ctx.lost += 1;
            self.active = false;
            self.buf.clear();
        }
        let Some(payload) = pk.payload() else {
            return;
        };
        if pk.payload_unit_start_indicator() {
            self.begin(ctx, payload);
        } else if self.active && !payload.is_empty() {
            self.append(ctx, payload);
        }
    }
}

/// Extends 33-bit 90 kHz timestamps to 64 bits (each step the shortest way around the circle)
/// and makes them relative to the first one.
#[derive(Debug, Clone, Default)]
struct Clock {
    /// The last raw value and its extension.
    last: Option<(u64, i64)>,
    /// The first extended value.
    base: i64,
}

const WRAP: u64 = 1 << 33;

impl Clock {
    /// Microseconds since the first timestamp, plus [`HEADROOM_US`], at least 0.
    fn micros(&mut self, raw: u64) -> u64 {
        let raw = raw % WRAP;
        let ext = match self.last {
            None => {
                self.base = raw as i64;
                raw as i64
            }
            Some((last, ext)) => {
                let step = (raw.wrapping_sub(last)) % WRAP;
                // Steps over half the circle are backward.
                let step = if step >= WRAP / 2 {
                    step as i64 - WRAP as i64
                } else {
                    step as i64
                };
                ext + step
            }
        };
        self.last = Some((raw, ext));
        let us = (ext - self.base).saturating_mul(100) / 9 + HEADROOM_US as i64;
        u64::try_from(us).unwrap_or(0)
    }
}

/// Turns a transport stream into track configurations and frames; see the
/// [module documentation](self).
pub struct Demuxer {
    demux: demultiplex::Demultiplex<Ctx>,
    ctx: Ctx,
    /// The start of a packet whose end has not arrived.
    partial: Vec<u8>,
    avc: Option<AvcConfig>,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
    clock: Clock,
    dropped: u64,
    /// The last refusal reported (reported once).
    unsupported_reported: bool,
    /// Frames held until every track the PMT lists has its configuration (see
    /// [`MAX_HELD`]), so that the first catalog names them all.
    held: Vec<Event>,
    /// Holding is over (all configurations known, or too many frames held).
    flowing: bool,
}

/// Most frames held while a track the PMT lists waits for its configuration (about 5 s of
/// AAC at 48 kHz, or 8 s of 30 fps video): then they flow without it.
pub const MAX_HELD: usize = 240;

impl Default for Demuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl Demuxer {
    pub fn new() -> Self {
        let mut ctx = Ctx::default();
        let demux = demultiplex::Demultiplex::new(&mut ctx);
        Self {
            demux,
            ctx,
            partial: Vec::with_capacity(PACKET),
            avc: None,
            video: None,
            audio: None,
            clock: Clock::default(),
            dropped: 0,
            unsupported_reported: false,
            held: Vec::new(),
            flowing: false,
        }
    }

    /// The current video configuration.
    pub fn video_info(&self) -> Option<&VideoInfo> {
        self.video.as_ref()
    }

    /// The current audio configuration.
    pub fn audio_info(&self) -> Option<&AudioInfo> {
        self.audio.as_ref()
    }

    /// Frames dropped: before their configuration, without a timestamp, or lost to a
    /// continuity gap.
    pub fn dropped(&self) -> u64 {
        self.dropped + self.ctx.lost
    }

    /// Reads the next bytes of the stream, appending what they complete to `events`. All of
    /// `data` is read even when it returns an error: the first problem met (the rest were
    /// of the same input and are dropped with it).
    pub fn push(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), TsError> {
        let mut first: Option<TsError> = None;
        let mut data = data;
        // Complete the partial packet first.
        if !self.partial.is_empty() {
            let need = PACKET - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET {
                return Ok(());
            }
            let packet = std::mem::take(&mut self.partial);
            self.run(&packet, events, &mut first);
            self.partial = packet;
            self.partial.clear();
        }
        let mut i = 0;
        while i < data.len() {
            if data[i] != SYNC {
                first.get_or_insert(TsError::Malformed(
                    "lost sync (a packet does not start with 0x47): bytes skipped",
                ));
                i = data[i..]
                    .iter()
                    .position(|&b| b == SYNC)
                    .map_or(data.len(), |p| i + p);
                continue;
            }
            let start = i;
            while i + PACKET <= data.len() && data[i] == SYNC {
                i += PACKET;
            }
            if i == start {
                // A packet that ends in the next chunk.
                self.partial.extend_from_slice(&data[i..]);
                break;
            }
            self.run(&data[start..i], events, &mut first);
        }
        first.map_or(Ok(()), Err)
    }

    /// Demultiplexes whole packets and repackages the units they complete.
    fn run(&mut self, packets: &[u8], events: &mut Vec<Event>, first: &mut Option<TsError>) {
        // One packet at a time: a PMT changes which tracks are awaited (`release`), so the units
        // before it are handed on before it is read, however the packets were batched.
        for packet in packets.chunks_exact(PACKET) {
            self.run_packet(packet, events, first);
        }
    }

    fn run_packet(&mut self, packet: &[u8], events: &mut Vec<Event>, first: &mut Option<TsError>) {
        self.demux.push(&mut self.ctx, packet);
        if let Some(e) = self.ctx.error.take() {
            let unsupported = matches!(e, TsError::Unsupported(_));
            if !unsupported || !self.unsupported_reported {
                self.unsupported_reported |= unsupported;
                first.get_or_insert(e);
            }
        }
        for unit in std::mem::take(&mut self.ctx.units) {
            let mut out = Vec::new();
            let res = match unit.codec {
                Codec::H264 => self.video_unit(unit, &mut out),
                Codec::Adts => self.audio_unit(unit, &mut out),
                Codec::Opus { channels } => self.opus_unit(unit, channels, &mut out),
            };
            self.release(out, events);
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        }
    }

    /// Hands `out` on, holding frames back while a listed track has no configuration.
    fn release(&mut self, out: Vec<Event>, events: &mut Vec<Event>) {
        if self.flowing {
            events.extend(out);
            return;
        }
        for event in out {
            match event {
                Event::Frame(..) => self.held.push(event),
                config => events.push(config),
            }
        }
        let ready = (!self.ctx.has_video || self.video.is_some())
            && (!self.ctx.has_audio || self.audio.is_some());
        if ready || self.held.len() >= MAX_HELD {
            self.flowing = true;
            events.append(&mut self.held);
        }
    }

    fn video_unit(&mut self, unit: Unit, events: &mut Vec<Event>) -> Result<(), TsError> {
        let sets = h264::annexb_nals(&unit.data)
            .filter(|n| matches!(h264::nal_type(n), Some(h264::NAL_SPS | h264::NAL_PPS)));
        match AvcConfig::from_parameter_sets(sets) {
            Ok(config) if self.avc.as_ref() != Some(&config) => {
                let info = video_info(&config, None)?;
                self.avc = Some(config);
                self.video = Some(info.clone());
                events.push(Event::VideoConfig(info));
            }
            Ok(_) | Err(H264Error::Incomplete) => {}
            Err(e) => {
                self.dropped += 1;
                return Err(e.into());
            }
        }
        let (Some(_), Some(pts)) = (&self.avc, unit.pts) else {
            self.dropped += 1;
            return Ok(());
        };
        let mut payload = Vec::with_capacity(unit.data.len() + 16);
        let mut keyframe = false;
        for nal in h264::annexb_nals(&unit.data) {
            match h264::nal_type(nal) {
                Some(h264::NAL_AUD) => continue,
                Some(h264::NAL_IDR) => keyframe = true,
                _ => {}
            }
            h264::push_avcc_nal(&mut payload, nal);
        }
        if payload.is_empty() {
            self.dropped += 1;
            return Err(TsError::Malformed("a video PES packet without NAL units"));
        }
        events.push(Event::Frame(
            MediaKind::Video,
            Frame {
                pts_us: self.clock.micros(pts),
                keyframe,
                payload: Bytes::from(payload),
            },
        ));
        Ok(())
    }

    /// A PES packet of Opus access units: one frame each, timed by their TOCs.
    fn opus_unit(
        &mut self,
        unit: Unit,
        channels: u8,
        events: &mut Vec<Event>,
    ) -> Result<(), TsError> {
        let Some(pts) = unit.pts else {
            self.dropped += 1;
            return Ok(());
        };
        let current = self
            .audio
            .as_ref()
            .is_some_and(|a| a.codec == "opus" && a.channels == u32::from(channels));
        if !current {
            let info = opus_info(&opus_head(u32::from(channels), OPUS_PRE_SKIP, 48_000))?;
            self.audio = Some(info.clone());
            events.push(Event::AudioConfig(info));
        }
        let start_us = self.clock.micros(pts);
        let mut rest = &unit.data[..];
        let mut samples: u64 = 0;
        while !rest.is_empty() {
            let (packet, tail) = opus_access_unit(rest).inspect_err(|_| self.dropped += 1)?;
            rest = tail;
            let Some(n) = crate::opus::packet_samples(packet) else {
                self.dropped += 1;
                return Err(TsError::Malformed("an Opus packet with a broken TOC"));
            };
            events.push(Event::Frame(
                MediaKind::Audio,
                Frame {
                    pts_us: start_us + samples * 1_000_000 / 48_000,
                    keyframe: true,
                    payload: Bytes::copy_from_slice(packet),
                },
            ));
            samples += u64::from(n);
        }
        Ok(())
    }

    fn audio_unit(&mut self, unit: Unit, events: &mut Vec<Event>) -> Result<(), TsError> {
        let Some(pts) = unit.pts else {
            self.dropped += 1;
            return Ok(());
        };
        let start_us = self.clock.micros(pts);
        let mut rest = &unit.data[..];
        let mut samples: u64 = 0;
        while !rest.is_empty() {
            let header = match AdtsHeader::parse(rest) {
                Ok(h) if h.frame_len <= rest.len() => h,
                Ok(_) => {
                    self.dropped += 1;
                    return Err(TsError::Malformed(
                        "an ADTS frame longer than its PES packet",
                    ));
                }
                Err(e) => {
                    self.dropped += 1;
                    return Err(e.into());
                }
            };
            let (frame, tail) = rest.split_at(header.frame_len);
            rest = tail;
            if header.raw_blocks != 1 {
                return Err(TsError::Unsupported(
                    "ADTS with several raw data blocks per frame".into(),
                ));
            }
            let asc = header.audio_specific_config().ok_or_else(|| {
                TsError::Unsupported(
                    "AAC with a program config element (channel configuration 0)".into(),
                )
            })?;
            if self.audio.as_ref().and_then(|a| a.description.as_deref()) != Some(&asc[..]) {
                let info = aac_info(&asc)?;
                self.audio = Some(info.clone());
                events.push(Event::AudioConfig(info));
            }
            let offset_us = samples * 1_000_000 / u64::from(header.sample_rate.max(1));
            samples += 1024;
            let payload = &frame[header.header_len..];
            if payload.is_empty() {
                self.dropped += 1;
                continue;
            }
            events.push(Event::Frame(
                MediaKind::Audio,
                Frame {
                    pts_us: start_us + offset_us,
                    keyframe: true,
                    payload: Bytes::copy_from_slice(payload),
                },
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Baseline 320x240 SPS and a PPS (from x264).
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    /// Writes TS packets by hand: a PAT, a PMT and PES packets.
    struct Mux {
        out: Vec<u8>,
        cc: [u8; 3],
    }

    const PMT_PID: u16 = 0x1000;
    const VIDEO_PID: u16 = 0x100;
    const AUDIO_PID: u16 = 0x101;

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04c1_1db7
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    impl Mux {
        fn new() -> Self {
            Self {
                out: Vec::new(),
                cc: [0; 3],
            }
        }

        fn cc(&mut self, pid: u16) -> u8 {
            let i = match pid {
                VIDEO_PID => 1,
                AUDIO_PID => 2,
                _ => 0,
            };
            let c = self.cc[i];
            self.cc[i] = (c + 1) & 0x0f;
            c
        }

        /// One packet: `payload` fits (stuffed with an adaptation field).
        fn packet(&mut self, pid: u16, start: bool, payload: &[u8], cc: u8) {
            assert!(payload.len() <= 184);
            let mut p = vec![SYNC, (u8::from(start) << 6) | (pid >> 8) as u8, pid as u8];
            let stuffing = 184 - payload.len();
            if stuffing == 0 {
                p.push(0x10 | cc);
            } else {
                p.push(0x30 | cc);
                p.push((stuffing - 1) as u8);
                if stuffing > 1 {
                    p.push(0);
                    p.extend(std::iter::repeat_n(0xff, stuffing - 2));
                }
            }
            p.extend_from_slice(payload);
            assert_eq!(p.len(), PACKET);
            self.out.extend_from_slice(&p);
        }

        fn section(&mut self, pid: u16, table_id: u8, body: &[u8]) {
            let mut s = vec![table_id, 0, 0, 0, 1, 0xc1, 0, 0];
            s.extend_from_slice(body);
            let len = s.len() - 3 + 4;
            s[1] = 0xb0 | (len >> 8) as u8;
            s[2] = len as u8;
            let crc = crc32(&s);
            s.extend_from_slice(&crc.to_be_bytes());
            let mut payload = vec![0];
            payload.extend_from_slice(&s);
            let cc = self.cc(pid);
            self.packet(pid, true, &payload, cc);
        }

        fn tables(&mut self, streams: &[(u8, u16)]) {
            let streams: Vec<(u8, u16, &[u8])> = streams
                .iter()
                .map(|&(st, pid)| (st, pid, &[][..]))
                .collect();
            self.tables_with(&streams);
        }

        /// The PAT and a PMT whose streams carry the given descriptors.
        fn tables_with(&mut self, streams: &[(u8, u16, &[u8])]) {
            self.section(0, 0, &[0, 1, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
            let mut pmt = vec![0xe0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xf0, 0];
            for &(st, pid, desc) in streams {
                pmt.extend_from_slice(&[st, 0xe0 | (pid >> 8) as u8, pid as u8]);
                pmt.extend_from_slice(&[0xf0 | (desc.len() >> 8) as u8, desc.len() as u8]);
                pmt.extend_from_slice(desc);
            }
            self.section(PMT_PID, 2, &pmt);
        }

        fn pes(&mut self, pid: u16, stream_id: u8, pts: u64, es: &[u8], bounded: bool) {
            let mut h = vec![0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5];
            let ts = [
                0x21 | ((pts >> 29) & 0x0e) as u8,
                (pts >> 22) as u8,
                0x01 | ((pts >> 14) & 0xfe) as u8,
                (pts >> 7) as u8,
                0x01 | ((pts << 1) & 0xfe) as u8,
            ];
            h.extend_from_slice(&ts);
            if bounded {
                let len = h.len() - 6 + es.len();
                h[4] = (len >> 8) as u8;
                h[5] = len as u8;
            }
            h.extend_from_slice(es);
            let mut first = true;
            for chunk in h.chunks(184) {
                let cc = self.cc(pid);
                self.packet(pid, first, chunk, cc);
                first = false;
            }
        }
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x09, 0xf0];
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    fn adts(payload: &[u8]) -> Vec<u8> {
        let len = 7 + payload.len();
        let mut v = vec![
            0xff,
            0xf1,
            0x4c,
            0x80 | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len << 5) as u8) | 0x1f,
            0xfc,
        ];
        v.extend_from_slice(payload);
        v
    }

    /// Two seconds-ish of a stream: tables, then a keyframe with parameter sets, a P frame,
    /// and a PES of two AAC frames.
    fn stream(base: u64) -> Vec<u8> {
        let mut m = Mux::new();
        m.tables(&[(0x1b, VIDEO_PID), (0x0f, AUDIO_PID)]);
        let idr = [0x65, 0x88, 0x84, 0x00, 0x33];
        m.pes(VIDEO_PID, 0xe0, base, &annexb(&[SPS, PPS, &idr]), false);
        let mut two = adts(&[0xde, 0xad]);
        two.extend_from_slice(&adts(&[0xbe, 0xef]));
        m.pes(AUDIO_PID, 0xc0, base + 900, &two, true);
        m.pes(
            VIDEO_PID,
            0xe0,
            base + 3000,
            &annexb(&[&[0x41, 0x9a, 0x02]]),
            false,
        );
        // The next PES start ends the last one.
        m.pes(
            VIDEO_PID,
            0xe0,
            base + 6000,
            &annexb(&[&[0x41, 0x9a, 0x03]]),
            false,
        );
        m.out
    }

    fn demux_all(data: &[u8], chunk: usize) -> (Vec<Event>, Vec<TsError>) {
        let mut d = Demuxer::new();
        let mut events = Vec::new();
        let mut errors = Vec::new();
        for c in data.chunks(chunk) {
            if let Err(e) = d.push(c, &mut events) {
                errors.push(e);
            }
        }
        (events, errors)
    }

    #[test]
    fn h264_and_adts_become_configs_and_timed_frames_in_any_chunking() {
        let data = stream(90_000);
        let (events, errors) = demux_all(&data, 1316);
        assert!(errors.is_empty(), "{errors:?}");
        for chunk in [1, 7, 188, 1000, data.len()] {
            assert_eq!(demux_all(&data, chunk).0, events, "chunks of {chunk}");
        }
        let Some(Event::VideoConfig(v)) =
            events.iter().find(|e| matches!(e, Event::VideoConfig(_)))
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (v.codec.as_str(), v.width, v.height),
            ("avc1.42c00d", 320, 240)
        );
        assert_eq!(AvcConfig::parse(&v.avcc).unwrap().length_size, 4);
        let frames: Vec<(MediaKind, u64, bool, Vec<u8>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(k, f) => Some((*k, f.pts_us, f.keyframe, f.payload.to_vec())),
                _ => None,
            })
            .collect();
        let configs = events
            .iter()
            .filter(|e| matches!(e, Event::AudioConfig(a) if a.codec == "mp4a.40.2" && a.sample_rate == 48_000))
            .count();
        assert_eq!(configs, 1);
        // The audio PES has a length: it is complete at its last byte, before the keyframe
        // (whose end is the next video PES's start), and its time is the first one seen; but
        // frames wait for both configurations, which come first.
        assert!(matches!(events[0], Event::AudioConfig(_)));
        assert!(matches!(events[1], Event::VideoConfig(_)));
        assert!(matches!(
            frames[0],
            (MediaKind::Audio, HEADROOM_US, true, _)
        ));
        // The keyframe keeps its parameter sets, loses its delimiter, in 4-byte AVCC.
        let (kind, pts, key, payload) = &frames[2];
        assert_eq!(
            (*kind, *pts, *key),
            (MediaKind::Video, HEADROOM_US - 10_000, true)
        );
        assert_eq!(&payload[..4], &(SPS.len() as u32).to_be_bytes());
        assert_eq!(h264::avcc_nals(payload, 4).count(), 3);
        // Two AAC frames 1024 samples apart, 10 ms after the first video frame.
        let v0 = HEADROOM_US - 10_000;
        let audio: Vec<_> = frames
            .iter()
            .filter(|f| f.0 == MediaKind::Audio)
            .map(|f| (f.1, f.3.clone()))
            .collect();
        assert_eq!(
            audio,
            vec![
                (v0 + 10_000, vec![0xde, 0xad]),
                (v0 + 10_000 + 21_333, vec![0xbe, 0xef])
            ]
        );
        // The P frame leaves when the next PES starts; the last one is still open.
        let video: Vec<_> = frames
            .iter()
            .filter(|f| f.0 == MediaKind::Video)
            .map(|f| (f.1, f.2))
            .collect();
        assert_eq!(video, vec![(v0, true), (v0 + 33_333, false)]);
    }

    #[test]
    fn timestamps_unwrap_across_the_33_bit_boundary() {
        let mut c = Clock::default();
        assert_eq!(c.micros(WRAP - 9_000), HEADROOM_US);
        assert_eq!(c.micros(0), HEADROOM_US + 100_000);
        assert_eq!(c.micros(9_000), HEADROOM_US + 200_000);
        // A small step back (a B-frame) stays back; before the first timestamp clamps at 0.
        assert_eq!(c.micros(4_500), HEADROOM_US + 150_000);
        let mut c = Clock::default();
        c.micros(1_000_000);
        assert_eq!(c.micros(1_000_000 - 90_000), HEADROOM_US - 1_000_000);
        assert_eq!(c.micros(1_000_000 - 180_000), 0);
        // And a whole stream across the wrap.
        let (events, errors) = demux_all(&stream(WRAP - 3000), 1316);
        assert!(errors.is_empty(), "{errors:?}");
        let video: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(MediaKind::Video, f) => Some(f.pts_us),
                _ => None,
            })
            .collect();
        assert_eq!(video, vec![HEADROOM_US - 10_000, HEADROOM_US + 23_333]);
    }

    #[test]
    fn garbage_is_malformed_and_the_demuxer_resyncs_after_it() {
        let data = stream(90_000);
        let mut d = Demuxer::new();
        let mut events = Vec::new();
        assert!(matches!(
            d.push(&[1, 2, 3, 4, 5], &mut events),
            Err(TsError::Malformed(_))
        ));
        d.push(&data, &mut events).unwrap();
        assert_eq!(events, demux_all(&data, 188).0);
        // A PES whose ADTS frame claims more than it holds.
        let mut m = Mux::new();
        m.tables(&[(0x0f, AUDIO_PID)]);
        let mut bad = adts(&[1, 2, 3]);
        bad.truncate(8);
        m.pes(AUDIO_PID, 0xc0, 0, &bad, true);
        let (_, errors) = demux_all(&m.out, 188);
        assert!(matches!(errors[..], [TsError::Malformed(_)]), "{errors:?}");
    }

    #[test]
    fn other_codecs_are_refused_by_name_once() {
        let mut m = Mux::new();
        m.tables(&[(0x24, VIDEO_PID)]);
        m.tables(&[(0x24, VIDEO_PID)]);
        let (events, errors) = demux_all(&m.out, 188);
        assert!(events.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("HEVC"), "{}", errors[0]);
    }

    #[test]
    fn frames_wait_for_every_listed_track_but_not_forever() {
        let mut m = Mux::new();
        m.tables(&[(0x1b, VIDEO_PID), (0x0f, AUDIO_PID)]);
        for i in 0..MAX_HELD as u64 + 10 {
            m.pes(AUDIO_PID, 0xc0, i * 1920, &adts(&[1, 2]), true);
        }
        let mut d = Demuxer::new();
        let mut events = Vec::new();
        let packet = 188;
        let audio = |events: &[Event]| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Frame(MediaKind::Audio, _)))
                .count()
        };
        // The first MAX_HELD - 1 frames are held for the video's configuration...
        d.push(&m.out[..packet * (2 + MAX_HELD - 1)], &mut events)
            .unwrap();
        assert_eq!(audio(&events), 0);
        assert!(matches!(events[..], [Event::AudioConfig(_)]));
        // ... then they flow without it, in order.
        d.push(&m.out[packet * (2 + MAX_HELD - 1)..], &mut events)
            .unwrap();
        assert_eq!(audio(&events), MAX_HELD + 10);
    }

    #[test]
    fn video_before_its_parameter_sets_is_dropped_and_counted() {
        let mut m = Mux::new();
        m.tables(&[(0x1b, VIDEO_PID)]);
        m.pes(VIDEO_PID, 0xe0, 0, &annexb(&[&[0x41, 0x9a]]), false);
        m.pes(VIDEO_PID, 0xe0, 3000, &annexb(&[&[0x41, 0x9a]]), false);
        let mut d = Demuxer::new();
        let mut events = Vec::new();
        d.push(&m.out, &mut events).unwrap();
        assert!(events.is_empty());
        assert_eq!(d.dropped(), 1);
    }

    /// The descriptors FFmpeg writes for an Opus stream with `code` as channel_config_code.
    fn opus_descriptors(code: u8) -> Vec<u8> {
        vec![0x05, 4, b'O', b'p', b'u', b's', 0x7f, 2, 0x80, code]
    }

    /// An Opus access unit: the control header (with the given flag bits for start trim, end
    /// trim and a control extension) and `packet`.
    fn opus_au(flags: u8, packet: &[u8]) -> Vec<u8> {
        let mut v = vec![0x7f, 0xe0 | flags];
        let mut size = packet.len();
        while size >= 255 {
            v.push(0xff);
            size -= 255;
        }
        v.push(size as u8);
        if flags & 0x10 != 0 {
            v.extend_from_slice(&[0x01, 0x38]);
        }
        if flags & 0x08 != 0 {
            v.extend_from_slice(&[0x00, 0x10]);
        }
        if flags & 0x04 != 0 {
            v.extend_from_slice(&[2, 0xaa, 0xbb]);
        }
        v.extend_from_slice(packet);
        v
    }

    fn audio_frames(events: &[Event]) -> Vec<(u64, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(MediaKind::Audio, f) => Some((f.pts_us, f.payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn opus_access_units_become_frames_timed_by_their_tocs() {
        let mut m = Mux::new();
        let desc = opus_descriptors(2);
        m.tables_with(&[(0x06, AUDIO_PID, &desc)]);
        // 20 ms CELT (config 31), a 300-byte one (its size a run of 0xff), then a 40 ms packet
        // (two 20 ms frames) with trims and a control extension, then 10 ms (config 30).
        let mut long = vec![7u8; 300];
        long[0] = 31 << 3;
        let mut pes = opus_au(0, &[31 << 3, 1, 2]);
        pes.extend(opus_au(0, &long));
        pes.extend(opus_au(0x1c, &[(31 << 3) | 1, 9]));
        pes.extend(opus_au(0, &[30 << 3, 4]));
        m.pes(AUDIO_PID, 0xc0, 90_000, &pes, true);
        m.pes(
            AUDIO_PID,
            0xc0,
            90_000 + 90 * 90,
            &opus_au(0, &[31 << 3, 5]),
            true,
        );
        for chunk in [1, 188, 1316] {
            let (events, errors) = demux_all(&m.out, chunk);
            assert!(errors.is_empty(), "{errors:?}");
            let Some(Event::AudioConfig(a)) = events.first() else {
                panic!("{events:?}")
            };
            assert_eq!(
                (a.codec.as_str(), a.sample_rate, a.channels),
                ("opus", 48_000, 2)
            );
            assert_eq!(
                a.description.as_deref(),
                Some(&opus_head(2, OPUS_PRE_SKIP, 48_000)[..])
            );
            let frames = audio_frames(&events);
            let base = HEADROOM_US;
            let times: Vec<u64> = frames.iter().map(|f| f.0 - base).collect();
            assert_eq!(
                times,
                [0, 20_000, 40_000, 80_000, 90_000],
                "chunks of {chunk}"
            );
            assert_eq!(frames[0].1, [31 << 3, 1, 2]);
            assert_eq!(frames[1].1, long);
            assert_eq!(frames[2].1, [(31 << 3) | 1, 9]);
        }
    }

    #[test]
    fn broken_opus_access_units_are_malformed_and_what_came_before_stays() {
        let mut m = Mux::new();
        let desc = opus_descriptors(1);
        m.tables_with(&[(0x06, AUDIO_PID, &desc)]);
        let mut pes = opus_au(0, &[31 << 3, 1]);
        pes.extend_from_slice(&[0x12, 0x34, 0x56]);
        m.pes(AUDIO_PID, 0xc0, 0, &pes, true);
        // A size past the PES end, then a broken TOC (code 3 without its count).
        let mut long = opus_au(0, &[31 << 3; 10]);
        long.truncate(8);
        m.pes(AUDIO_PID, 0xc0, 1800, &long, true);
        m.pes(AUDIO_PID, 0xc0, 3600, &opus_au(0, &[(31 << 3) | 3]), true);
        m.pes(AUDIO_PID, 0xc0, 5400, &opus_au(0, &[31 << 3, 2]), true);
        let mut d = Demuxer::new();
        let mut events = Vec::new();
        let mut errors = Vec::new();
        for p in m.out.chunks(PACKET) {
            if let Err(e) = d.push(p, &mut events) {
                errors.push(e.to_string());
            }
        }
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("control header"), "{errors:?}");
        assert!(errors[1].contains("longer than its PES"), "{errors:?}");
        assert!(errors[2].contains("TOC"), "{errors:?}");
        let Some(Event::AudioConfig(a)) = events.first() else {
            panic!("{events:?}")
        };
        assert_eq!(a.channels, 1);
        let payloads: Vec<Vec<u8>> = audio_frames(&events).into_iter().map(|f| f.1).collect();
        assert_eq!(payloads, [vec![31 << 3, 1], vec![31 << 3, 2]]);
        assert_eq!(d.dropped(), 3);
    }

    #[test]
    fn private_streams_are_opus_refused_by_name_or_ignored() {
        let cases: [(Vec<u8>, Option<&str>); 4] = [
            (
                opus_descriptors(6),
                Some("Opus with channel configuration 0x06"),
            ),
            (opus_descriptors(0), Some("dual-mono Opus")),
            (vec![0x6a, 1, 0], Some("AC-3")),
            (vec![0x59, 0], None),
        ];
        for (desc, refused) in cases {
            let mut m = Mux::new();
            m.tables_with(&[(0x1b, VIDEO_PID, &[]), (0x06, AUDIO_PID, &desc)]);
            m.pes(AUDIO_PID, 0xc0, 0, &opus_au(0, &[31 << 3]), true);
            let (events, errors) = demux_all(&m.out, 188);
            assert!(events.is_empty(), "{events:?}");
            match refused {
                Some(name) => {
                    assert_eq!(errors.len(), 1, "{errors:?}");
                    assert!(errors[0].to_string().contains(name), "{}", errors[0]);
                }
                None => assert!(errors.is_empty(), "{errors:?}"),
            }
        }
    }

    #[test]
    fn an_opus_stream_without_its_channel_descriptor_is_stereo() {
        let mut m = Mux::new();
        let desc = [0x05, 4, b'O', b'p', b'u', b's'];
        m.tables_with(&[(0x06, AUDIO_PID, &desc)]);
        m.pes(AUDIO_PID, 0xc0, 0, &opus_au(0, &[31 << 3]), true);
        let (events, errors) = demux_all(&m.out, 188);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            matches!(&events[..], [Event::AudioConfig(a), Event::Frame(MediaKind::Audio, _)] if a.channels == 2),
            "{events:?}"
        );
    }
}

//! FFmpeg sources turned into paced, encoded frames plus the codec configuration a catalog needs.
//!
//! A [`Source`] reads one input with libavformat and yields [`Frame`]s of at most one video and
//! one audio stream:
//!
//! * **Video** leaves as H.264 in AVCC framing (4-byte lengths) with an `avcC` record. H.264
//!   input (8-bit 4:2:0, what browsers decode) is passed through: Annex-B becomes AVCC through
//!   [`moqcast_media::h264`], and the `avcC` comes from the stream's extradata or is built from
//!   the SPS/PPS found in band. Anything else is decoded and re-encoded with libx264 (no
//!   B-frames, one keyframe per second, zero-latency tuning).
//! * **Audio** leaves as Opus or AAC. Both pass through (ADTS headers stripped, an
//!   `AudioSpecificConfig` built when the input has none); other codecs become Opus (libopus,
//!   48 kHz; FFmpeg's AAC encoder where libopus is missing).
//!
//! **Keyframes** are frames with an IDR slice (what a decoder can start from); for audio every
//! packet is one.
//!
//! **Timestamps** are microseconds on one timeline for both kinds, starting near 0. Looping
//! restarts the input and offsets the next pass by the end of the previous one, so timestamps
//! keep increasing. Passed-through video with B-frames leaves in decode order, each frame with
//! its own presentation timestamp: `pts_us` then goes back and forth within a group, as the
//! frames of a LOC group are in decode order too.
//!
//! **Pacing** (`realtime`): each frame is released when the wall clock reaches its decode time
//! relative to the first frame. A jump in the input's timestamps of more than a few seconds,
//! or falling more than a second behind (a stalled pipe, a slow machine), re-anchors the clock
//! instead of sleeping for long or bursting. Stdin is never released ahead of its arrival, as
//! frames are only paced after they have been read.
//!
//! Everything here blocks; run a [`Source`] on a thread of its own (it is `Send`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg::codec::{self, Id};
use ffmpeg::format::{self, Pixel, Sample};
use ffmpeg::{filter, media, picture, ChannelLayout, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use moqcast_client::info::opus_head;
use moqcast_media::aac::{adts_header_len, audio_specific_config};
use moqcast_media::h264::{self, AvcConfig, H264Error};
use moqcast_media::{Frame, MediaKind};

/// Microseconds per second, the timeline's unit.
const US: i64 = 1_000_000;
/// Time base of the video encoder (the MPEG 90 kHz clock).
const VIDEO_ENCODER_TB: Rational = Rational(1, 90_000);
/// Packets read ahead at open time while looking for in-band SPS/PPS.
const PARAMETER_SET_SEARCH_PACKETS: usize = 1_000;
/// A frame due further ahead than this is a timestamp jump: the pacer re-anchors.
const MAX_PACING_AHEAD_US: i64 = 3 * US;
/// A frame more than this late re-anchors the pacer rather than bursting to catch up.
const MAX_PACING_LATE_US: i64 = US;
/// The lavfi graph behind [`Input::TestSrc`]: a 30 fps pattern and a 440 Hz tone.
const TEST_SOURCE_GRAPH: &str =
    "testsrc2=size=640x360:rate=30[out0];sine=frequency=440:sample_rate=48000[out1]";

/// Where media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A synthetic 640x360 30 fps test pattern with a 440 Hz tone, encoded to H.264 and Opus.
    TestSrc,
    /// Any file FFmpeg can read.
    File(PathBuf),
    /// fMP4 or MPEG-TS on standard input (the format is probed).
    Stdin,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::TestSrc => f.write_str("the test source"),
            Input::File(path) => write!(f, "{}", path.display()),
            Input::Stdin => f.write_str("standard input"),
        }
    }
}

/// How to read an [`Input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    pub input: Input,
    /// Restart a file at its end, timestamps continuing (ignored for stdin and the test source).
    pub looping: bool,
    /// Pace frames by their timestamps in real time: true for live publishing.
    pub realtime: bool,
}

pub use moqcast_client::info::{AudioInfo, VideoInfo};

/// What a [`Source`] yields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaInfo {
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// FFmpeg could not open or probe the input.
    #[error("could not open {input}: {source}")]
    Open {
        input: String,
        #[source]
        source: ffmpeg::Error,
    },
    /// The input opened but has no audio or video stream.
    #[error("{input} has no audio or video stream")]
    NoStreams { input: String },
    /// This FFmpeg build lacks a codec moqcast needs.
    #[error(
        "this FFmpeg build has no {0} (install an FFmpeg with it, e.g. Debian's libavcodec59)"
    )]
    CodecMissing(String),
    /// Setting up a decoder, encoder or filter failed.
    #[error("could not set up the {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: ffmpeg::Error,
    },
    /// The H.264 decoder configuration is unusable.
    #[error("bad H.264 configuration in {input}: {source}")]
    H264 {
        input: String,
        #[source]
        source: H264Error,
    },
    /// H.264 video without SPS/PPS, neither in the container nor in band.
    #[error("{input}: H.264 video without parameter sets (SPS/PPS) in its first {PARAMETER_SET_SEARCH_PACKETS} packets")]
    NoParameterSets { input: String },
    /// Reading, decoding or encoding failed mid-stream.
    #[error("error while {what} {input}: {source}")]
    Stream {
        what: &'static str,
        input: String,
        #[source]
        source: ffmpeg::Error,
    },
}

/// A source of paced, encoded frames; see the [module documentation](self).
pub struct Source {
    opts: IngestOptions,
    ictx: format::context::Input,
    info: MediaInfo,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    clock: Timeline,
    /// Packets read at open time (the in-band parameter set search), processed first.
    preread: VecDeque<Packet>,
    /// Frames ready to leave, each with the timeline time it is paced by.
    ready: VecDeque<(MediaKind, Frame, i64)>,
    pacer: Pacer,
    /// Packets read in the current pass (a pass without any ends looping).
    packets_this_pass: u64,
    finished: bool,
}

impl Source {
    /// Opens and probes the input and sets up passthrough or transcoding. Blocks while FFmpeg
    /// probes (for stdin, until enough data has arrived).
    pub fn open(opts: IngestOptions) -> Result<Source, IngestError> {
        ensure_ffmpeg_init();
        let mut ictx = open_input(&opts.input)?;
        let name = opts.input.to_string();

        let video_stream = best_stream(&ictx, media::Type::Video);
        let audio_stream = best_stream(&ictx, media::Type::Audio);
        if video_stream.is_none() && audio_stream.is_none() {
            return Err(IngestError::NoStreams { input: name });
        }

        let mut preread = VecDeque::new();
        let video = match video_stream {
            Some(index) => Some(VideoTrack::open(&mut ictx, index, &name, &mut preread)?),
            None => None,
        };
        let audio = match audio_stream {
            Some(index) => Some(AudioTrack::open(&ictx, index)?),
            None => None,
        };
        let info = MediaInfo {
            video: video.as_ref().map(|v| v.info.clone()),
            audio: audio.as_ref().map(|a| a.info.clone()),
        };
        let clock = Timeline::new(input_start_us(&ictx));
        tracing::debug!(input = %name, ?info, "ingest opened");
        Ok(Source {
            opts,
            ictx,
            info,
            video,
            audio,
            clock,
            preread,
            ready: VecDeque::new(),
            pacer: Pacer::default(),
            packets_this_pass: 0,
            finished: false,
        })
    }

    /// The configuration of the tracks this source yields.
    pub fn info(&self) -> &MediaInfo {
        &self.info
    }

    /// The next frame, `None` at the end of the input (never, when looping a file). Blocks
    /// for input and, when `realtime`, until the frame is due.
    // Not `Iterator`: reading can fail, and callers want the error, not an end of iteration.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(MediaKind, Frame)>, IngestError> {
        loop {
            if let Some((kind, frame, pace_us)) = self.ready.pop_front() {
                if self.opts.realtime {
                    let wait = self.pacer.delay(pace_us, Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                }
                return Ok(Some((kind, frame)));
            }
            if self.finished {
                return Ok(None);
            }
            self.step()?;
        }
    }

    /// Reads and processes one packet, or handles the end of the input.
    fn step(&mut self) -> Result<(), IngestError> {
        let packet = match self.preread.pop_front() {
            Some(packet) => packet,
            None => {
                let mut packet = Packet::empty();
                match packet.read(&mut self.ictx) {
                    Ok(()) => packet,
                    Err(ffmpeg::Error::Eof) => return self.end_of_pass(),
                    Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                        std::thread::sleep(Duration::from_millis(5));
                        return Ok(());
                    }
                    Err(source) => {
                        return Err(IngestError::Stream {
                            what: "reading",
                            input: self.opts.input.to_string(),
                            source,
                        })
                    }
                }
            }
        };
        self.packets_this_pass += 1;
        self.process(packet)
    }

    fn process(&mut self, mut packet: Packet) -> Result<(), IngestError> {
        let index = packet.stream();
        let Some(stream) = self.ictx.stream(index) else {
            return Ok(());
        };
        let tb = stream.time_base();
        let input = &self.opts.input;
        if let Some(video) = self.video.as_mut().filter(|v| v.stream == index) {
            let stamps = self.clock.stamp(&packet, tb, video.frame_dur_us);
            video.push(&mut packet, stamps, &mut self.ready, input)
        } else if let Some(audio) = self.audio.as_mut().filter(|a| a.stream == index) {
            let stamps = self.clock.stamp(&packet, tb, audio.frame_dur_us);
            audio.push(&mut packet, stamps, &mut self.ready, input)
        } else {
            Ok(())
        }
    }

    /// End of the input: restart a looping file, or drain the encoders and finish.
    fn end_of_pass(&mut self) -> Result<(), IngestError> {
        let can_loop = matches!(self.opts.input, Input::File(_)) && self.opts.looping;
        let input = self.opts.input.clone();
        if can_loop && self.packets_this_pass > 0 {
            // Frames still inside the decoders belong to this pass; the encoders keep going.
            if let Some(video) = self.video.as_mut() {
                video.drain_decoder(&mut self.ready, &input)?;
            }
            if let Some(audio) = self.audio.as_mut() {
                audio.drain_decoder(&mut self.ready, &input)?;
            }
            self.ictx = open_input(&self.opts.input)?;
            self.clock.next_pass(input_start_us(&self.ictx));
            self.packets_this_pass = 0;
            tracing::debug!(input = %input, offset_us = self.clock.offset_us, "looping");
            return Ok(());
        }
        if let Some(video) = self.video.as_mut() {
            video.finish(&mut self.ready, &input)?;
        }
        if let Some(audio) = self.audio.as_mut() {
            audio.finish(&mut self.ready, &input)?;
        }
        self.finished = true;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

fn ensure_ffmpeg_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registers the input devices (lavfi for the test source). FFmpeg's own log would
        // print encoder statistics and per-packet warnings to stderr: keep only errors.
        let _ = ffmpeg::init();
        ffmpeg::log::set_level(ffmpeg::log::Level::Error);
    });
}

fn open_input(input: &Input) -> Result<format::context::Input, IngestError> {
    let open_error = |source| IngestError::Open {
        input: input.to_string(),
        source,
    };
    match input {
        Input::TestSrc => {
            let lavfi = find_input_format("lavfi").ok_or_else(|| {
                IngestError::CodecMissing("lavfi input device (libavdevice)".into())
            })?;
            match format::open(TEST_SOURCE_GRAPH, &format::format::Format::Input(lavfi)) {
                Ok(format::context::Context::Input(ictx)) => Ok(ictx),
                Ok(format::context::Context::Output(_)) => Err(open_error(ffmpeg::Error::Bug)),
                Err(e) => Err(open_error(e)),
            }
        }
        Input::File(path) => {
            // ffmpeg-next panics on paths that are not UTF-8 or hold a NUL byte.
            let usable = path.to_str().is_some_and(|p| !p.contains('\0'));
            if !usable {
                return Err(open_error(ffmpeg::Error::InvalidData));
            }
            format::input(path).map_err(open_error)
        }
        Input::Stdin => format::input(Path::new("pipe:0")).map_err(open_error),
    }
}

fn find_input_format(name: &str) -> Option<format::Input> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid C string; FFmpeg returns a pointer to a static format
    // description or null.
    let ptr = unsafe { ffmpeg::ffi::av_find_input_format(name.as_ptr()) };
    // SAFETY: non-null pointers from av_find_input_format live for the whole process.
    (!ptr.is_null()).then(|| unsafe { format::Input::wrap(ptr as *mut _) })
}

/// The input's start time in microseconds (FFmpeg's AV_TIME_BASE is 1/1000000), 0 if unknown.
fn input_start_us(ictx: &format::context::Input) -> i64 {
    // SAFETY: reads a plain field of the open format context.
    let start = unsafe { (*ictx.as_ptr()).start_time };
    if start == ffmpeg::ffi::AV_NOPTS_VALUE {
        0
    } else {
        start
    }
}

/// The best stream of a kind, ignoring cover art (attached pictures look like video streams).
fn best_stream(ictx: &format::context::Input, kind: media::Type) -> Option<usize> {
    let usable = |s: &format::stream::Stream| {
        s.parameters().medium() == kind
            && !s
                .disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
    };
    match ictx.streams().best(kind) {
        Some(s) if usable(&s) => Some(s.index()),
        _ => ictx.streams().find(|s| usable(s)).map(|s| s.index()),
    }
}

/// Copies codec extradata out of FFmpeg-owned memory.
///
/// # Safety
/// `data` must be null or point to `size` readable bytes.
unsafe fn copy_extradata(data: *const u8, size: libc::c_int) -> Vec<u8> {
    match usize::try_from(size) {
        Ok(len) if len > 0 && !data.is_null() => {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
        }
        _ => Vec::new(),
    }
}

fn stream_extradata(params: &codec::Parameters) -> Vec<u8> {
    // SAFETY: codec parameters keep `extradata_size` bytes at `extradata` (or null).
    unsafe {
        let p = params.as_ptr();
        copy_extradata((*p).extradata, (*p).extradata_size)
    }
}

fn context_extradata(ctx: &codec::Context) -> Vec<u8> {
    // SAFETY: an opened codec context keeps `extradata_size` bytes at `extradata` (or null).
    unsafe {
        let p = ctx.as_ptr();
        copy_extradata((*p).extradata, (*p).extradata_size)
    }
}

/// Plain numeric fields of codec parameters that ffmpeg-next does not expose.
struct RawParams {
    width: u32,
    height: u32,
    sample_rate: u32,
    channels: u32,
    profile: i32,
    bit_rate: Option<u64>,
}

fn raw_params(params: &codec::Parameters) -> RawParams {
    // SAFETY: reads plain integer fields of valid codec parameters.
    let p = unsafe { &*params.as_ptr() };
    RawParams {
        width: u32::try_from(p.width).unwrap_or(0),
        height: u32::try_from(p.height).unwrap_or(0),
        sample_rate: u32::try_from(p.sample_rate).unwrap_or(0),
        channels: u32::try_from(p.ch_layout.nb_channels).unwrap_or(0),
        profile: p.profile,
        bit_rate: u64::try_from(p.bit_rate).ok().filter(|&b| b > 0),
    }
}

fn rational_f64(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

fn setup(what: &'static str) -> impl Fn(ffmpeg::Error) -> IngestError {
    move |source| IngestError::Setup { what, source }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// `ts` in time base `tb`, in microseconds (rounded to nearest).
fn ts_to_us(ts: i64, tb: Rational) -> i64 {
    rescale(
        ts,
        i128::from(tb.numerator()) * i128::from(US),
        i128::from(tb.denominator()),
    )
}

/// Microseconds in time base `tb` (rounded to nearest).
fn us_to_ts(us: i64, tb: Rational) -> i64 {
    rescale(
        us,
        i128::from(tb.denominator()),
        i128::from(tb.numerator()) * i128::from(US),
    )
}

fn rescale(value: i64, mul: i128, div: i128) -> i64 {
    if div == 0 {
        return 0;
    }
    let (n, div) = if div < 0 {
        (-i128::from(value) * mul, -div)
    } else {
        (i128::from(value) * mul, div)
    };
    // Round half up: floor((2n + div) / 2div).
    let q = (2 * n + div).div_euclid(2 * div);
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Timestamps of one packet on the source's timeline, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    pts: i64,
    dts: i64,
}

/// Maps each pass's stream timestamps onto one continuous microsecond timeline.
#[derive(Debug)]
struct Timeline {
    /// The input's start time: timeline 0 of the first pass.
    origin_us: i64,
    /// Added to every timestamp of the current pass.
    offset_us: i64,
    /// The latest end (pts + duration) seen: where a next pass starts.
    end_us: i64,
}

impl Timeline {
    fn new(origin_us: i64) -> Self {
        Timeline {
            origin_us,
            offset_us: 0,
            end_us: 0,
        }
    }

    fn next_pass(&mut self, origin_us: i64) {
        self.origin_us = origin_us;
        self.offset_us = self.end_us;
    }

    fn map(&self, ts: i64, tb: Rational) -> i64 {
        ts_to_us(ts, tb)
            .saturating_sub(self.origin_us)
            .saturating_add(self.offset_us)
    }

    /// Stamps a packet; `fallback_dur_us` stands in for a missing packet duration.
    fn stamp(&mut self, packet: &Packet, tb: Rational, fallback_dur_us: i64) -> Option<Stamps> {
        let pts = packet.pts().or(packet.dts())?;
        let dts = packet.dts().unwrap_or(pts);
        let stamps = Stamps {
            pts: self.map(pts, tb),
            dts: self.map(dts, tb),
        };
        let dur = match ts_to_us(packet.duration(), tb) {
            d if d > 0 => d,
            _ => fallback_dur_us,
        };
        self.end_us = self.end_us.max(stamps.pts.saturating_add(dur));
        Some(stamps)
    }
}

/// Releases frames in real time by their (decode) timestamps. Time is passed in.
#[derive(Debug, Default)]
struct Pacer {
    /// A wall-clock instant and the timeline time that corresponds to it.
    anchor: Option<(Instant, i64)>,
}

impl Pacer {
    /// How long to wait, at `now`, before releasing a frame paced by `ts_us`.
    fn delay(&mut self, ts_us: i64, now: Instant) -> Duration {
        let Some((t0, ts0)) = self.anchor else {
            self.anchor = Some((now, ts_us));
            return Duration::ZERO;
        };
        let elapsed =
            i64::try_from(now.saturating_duration_since(t0).as_micros()).unwrap_or(i64::MAX);
        let ahead = ts_us.saturating_sub(ts0).saturating_sub(elapsed);
        if !(-MAX_PACING_LATE_US..=MAX_PACING_AHEAD_US).contains(&ahead) {
            // A timestamp jump, or far behind (stalled input): restart the clock here.
            self.anchor = Some((now, ts_us));
            return Duration::ZERO;
        }
        Duration::from_micros(u64::try_from(ahead).unwrap_or(0))
    }
}

fn make_frame(pts_us: i64, keyframe: bool, payload: Vec<u8>) -> Frame {
    Frame {
        pts_us: u64::try_from(pts_us).unwrap_or(0),
        keyframe,
        payload: Bytes::from(payload),
    }
}

// ---------------------------------------------------------------------------------------------
// Video
// ---------------------------------------------------------------------------------------------

/// How passed-through H.264 packets are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    AnnexB,
    Avcc(usize),
}

/// H.264 packet data as AVCC with 4-byte lengths, without access unit delimiters.
fn h264_payload(data: &[u8], framing: Framing) -> Result<Vec<u8>, H264Error> {
    let keep = |nal: &[u8]| h264::nal_type(nal) != Some(h264::NAL_AUD);
    let mut out = Vec::with_capacity(data.len() + 8);
    let annexb = |out: &mut Vec<u8>| {
        for nal in h264::annexb_nals(data).filter(|n| keep(n)) {
            h264::push_avcc_nal(out, nal);
        }
    };
    match framing {
        Framing::AnnexB => annexb(&mut out),
        Framing::Avcc(length_size) => {
            let converted: Result<(), H264Error> =
                h264::avcc_nals(data, length_size).try_for_each(|nal| {
                    let nal = nal?;
                    if keep(nal) {
                        h264::push_avcc_nal(&mut out, nal);
                    }
                    Ok(())
                });
            if let Err(e) = converted {
                // Some muxers put Annex-B packets behind an avcC record.
                if !h264::starts_with_start_code(data) {
                    return Err(e);
                }
                out.clear();
                annexb(&mut out);
            }
        }
    }
    Ok(out)
}

/// The NAL units of packet data in either framing (for the parameter set search).
fn packet_nals(data: &[u8], framing: Framing) -> Vec<&[u8]> {
    match framing {
        Framing::Avcc(size) if !h264::starts_with_start_code(data) => {
            h264::avcc_nals(data, size).map_while(Result::ok).collect()
        }
        _ => h264::annexb_nals(data).collect(),
    }
}

struct VideoTrack {
    stream: usize,
    info: VideoInfo,
    frame_dur_us: i64,
    path: VideoPath,
}

enum VideoPath {
    Passthrough(Framing),
    Transcode(Box<VideoTranscoder>),
}

impl VideoTrack {
    fn open(
        ictx: &mut format::context::Input,
        index: usize,
        name: &str,
        preread: &mut VecDeque<Packet>,
    ) -> Result<VideoTrack, IngestError> {
        let (params, fps) = {
            let stream = ictx.stream(index).ok_or(IngestError::Setup {
                what: "video stream",
                source: ffmpeg::Error::StreamNotFound,
            })?;
            let fps = rational_f64(stream.avg_frame_rate())
                .or_else(|| rational_f64(stream.rate()))
                .filter(|f| (1.0..=240.0).contains(f))
                .unwrap_or(30.0);
            (stream.parameters(), fps)
        };
        let raw = raw_params(&params);
        let frame_dur_us = (US as f64 / fps).round() as i64;

        if params.id() == Id::H264 {
            let extradata = stream_extradata(&params);
            let framing = match extradata.first() {
                Some(1) => match AvcConfig::parse(&extradata) {
                    Ok(c) => Framing::Avcc(usize::from(c.length_size)),
                    Err(source) => {
                        return Err(IngestError::H264 {
                            input: name.to_string(),
                            source,
                        })
                    }
                },
                _ => Framing::AnnexB,
            };
            let config = match AvcConfig::from_extradata(&extradata) {
                Ok(config) => config,
                Err(_) => find_parameter_sets(ictx, index, framing, name, preread)?,
            };
            let sps = config.sps_info().map_err(|source| IngestError::H264 {
                input: name.to_string(),
                source,
            })?;
            // Browsers decode 8-bit 4:2:0 H.264; anything else is re-encoded below.
            if sps.chroma_format_idc == 1 && sps.bit_depth_luma == 8 && sps.bit_depth_chroma == 8 {
                let config = AvcConfig {
                    length_size: 4,
                    ..config
                };
                let info = VideoInfo {
                    codec: config.codec_string(),
                    width: if sps.width > 0 { sps.width } else { raw.width },
                    height: if sps.height > 0 {
                        sps.height
                    } else {
                        raw.height
                    },
                    framerate: fps,
                    avcc: config.to_bytes(),
                    bitrate: raw.bit_rate,
                };
                return Ok(VideoTrack {
                    stream: index,
                    info,
                    frame_dur_us,
                    path: VideoPath::Passthrough(framing),
                });
            }
            tracing::info!(
                input = name,
                profile = sps.profile_idc,
                chroma_format = sps.chroma_format_idc,
                bit_depth = sps.bit_depth_luma,
                "re-encoding H.264 that browsers cannot decode"
            );
        }
        let transcoder = VideoTranscoder::open(&params, fps)?;
        Ok(VideoTrack {
            stream: index,
            info: transcoder.info.clone(),
            frame_dur_us,
            path: VideoPath::Transcode(Box::new(transcoder)),
        })
    }

    fn push(
        &mut self,
        packet: &mut Packet,
        stamps: Option<Stamps>,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            VideoPath::Passthrough(framing) => {
                let Some(stamps) = stamps else {
                    return Ok(());
                };
                let Some(data) = packet.data() else {
                    return Ok(());
                };
                match h264_payload(data, *framing) {
                    Ok(payload) if !payload.is_empty() => {
                        let key = h264::is_keyframe_avcc(&payload, 4);
                        out.push_back((
                            MediaKind::Video,
                            make_frame(stamps.pts, key, payload),
                            stamps.dts,
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "skipping a damaged H.264 packet");
                    }
                }
                Ok(())
            }
            VideoPath::Transcode(t) => t.push(packet, stamps, out, input),
        }
    }

    fn drain_decoder(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            VideoPath::Passthrough(_) => Ok(()),
            VideoPath::Transcode(t) => t.drain_decoder(out, input),
        }
    }

    fn finish(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            VideoPath::Passthrough(_) => Ok(()),
            VideoPath::Transcode(t) => t.finish(out, input),
        }
    }
}

/// Reads packets (kept for processing) until the video stream's SPS and PPS have been seen.
fn find_parameter_sets(
    ictx: &mut format::context::Input,
    index: usize,
    framing: Framing,
    name: &str,
    preread: &mut VecDeque<Packet>,
) -> Result<AvcConfig, IngestError> {
    let mut nals: Vec<Vec<u8>> = Vec::new();
    while preread.len() < PARAMETER_SET_SEARCH_PACKETS {
        let mut packet = Packet::empty();
        match packet.read(ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(source) => {
                return Err(IngestError::Open {
                    input: name.to_string(),
                    source,
                })
            }
        }
        if packet.stream() == index {
            if let Some(data) = packet.data() {
                for nal in packet_nals(data, framing) {
                    if matches!(h264::nal_type(nal), Some(h264::NAL_SPS | h264::NAL_PPS)) {
                        nals.push(nal.to_vec());
                    }
                }
            }
        }
        preread.push_back(packet);
        match AvcConfig::from_parameter_sets(nals.iter().map(Vec::as_slice)) {
            Ok(config) => return Ok(config),
            Err(H264Error::Incomplete) => {}
            Err(source) => {
                return Err(IngestError::H264 {
                    input: name.to_string(),
                    source,
                })
            }
        }
    }
    Err(IngestError::NoParameterSets {
        input: name.to_string(),
    })
}

/// Decoder, scaler (a filter graph) and libx264 encoder. Timestamps inside are microseconds on
/// the timeline, except in the encoder, which counts in [`VIDEO_ENCODER_TB`].
struct VideoTranscoder {
    info: VideoInfo,
    decoder: codec::decoder::Video,
    graph: filter::Graph,
    encoder: codec::encoder::Video,
    last_encoder_pts: Option<i64>,
}

impl VideoTranscoder {
    fn open(params: &codec::Parameters, fps: f64) -> Result<VideoTranscoder, IngestError> {
        let mut decoder_ctx =
            codec::Context::from_parameters(params.clone()).map_err(setup("video decoder"))?;
        decoder_ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 2,
            ..Default::default()
        });
        let mut decoder = decoder_ctx.decoder();
        decoder.set_packet_time_base(Rational(1, US as i32));
        let decoder = decoder.video().map_err(|e| match e {
            ffmpeg::Error::DecoderNotFound => {
                IngestError::CodecMissing(format!("decoder for {:?} video", params.id()))
            }
            source => IngestError::Setup {
                what: "video decoder",
                source,
            },
        })?;
        let (src_w, src_h) = (decoder.width(), decoder.height());
        if src_w == 0 || src_h == 0 {
            return Err(IngestError::Setup {
                what: "video decoder (unknown picture size)",
                source: ffmpeg::Error::InvalidData,
            });
        }
        // 4:2:0 needs even sizes.
        let width = (src_w & !1).max(2);
        let height = (src_h & !1).max(2);

        let mut graph = filter::Graph::new();
        let src_format = match decoder.format() {
            Pixel::None => Pixel::YUV420P,
            f => f,
        };
        let sar = decoder.aspect_ratio();
        let args = format!(
            "video_size={src_w}x{src_h}:pix_fmt={}:time_base=1/{US}:pixel_aspect={}/{}",
            ffmpeg::ffi::AVPixelFormat::from(src_format) as i32,
            sar.numerator().max(1),
            sar.denominator().max(1),
        );
        let buffer = filter::find("buffer")
            .ok_or_else(|| IngestError::CodecMissing("buffer filter".into()))?;
        let sink = filter::find("buffersink")
            .ok_or_else(|| IngestError::CodecMissing("buffersink filter".into()))?;
        graph
            .add(&buffer, "in", &args)
            .map_err(setup("video filter source"))?;
        graph
            .add(&sink, "out", "")
            .map_err(setup("video filter sink"))?;
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&format!("scale={width}:{height},format=yuv420p")))
            .map_err(setup("video filter graph"))?;
        graph.validate().map_err(setup("video filter graph"))?;

        let gop = (fps.round() as u32).clamp(1, 300);
        let bitrate =
            ((f64::from(width) * f64::from(height) * fps * 0.1) as u64).clamp(300_000, 8_000_000);
        let (encoder, avcc) = open_x264(width, height, fps, gop, bitrate)?;
        let config = AvcConfig::from_extradata(&avcc).map_err(|source| IngestError::H264 {
            input: "libx264 output".into(),
            source,
        })?;
        let info = VideoInfo {
            codec: config.codec_string(),
            width,
            height,
            framerate: fps,
            avcc: AvcConfig {
                length_size: 4,
                ..config
            }
            .to_bytes(),
            bitrate: Some(bitrate),
        };
        Ok(VideoTranscoder {
            info,
            decoder,
            graph,
            encoder,
            last_encoder_pts: None,
        })
    }

    fn push(
        &mut self,
        packet: &mut Packet,
        stamps: Option<Stamps>,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        packet.set_pts(stamps.map(|s| s.pts));
        packet.set_dts(stamps.map(|s| s.dts));
        if let Err(error) = self.decoder.send_packet(packet) {
            // Damaged input: skip the packet as FFmpeg's own tools do.
            tracing::debug!(%error, "video decoder rejected a packet");
            return Ok(());
        }
        self.receive_frames(out, input)
    }

    fn receive_frames(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut decoded = ffmpeg::frame::Video::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let pts = decoded.timestamp();
            decoded.set_pts(pts);
            self.graph
                .get("in")
                .ok_or(ffmpeg::Error::Bug)
                .and_then(|mut src| src.source().add(&decoded))
                .map_err(stream_error("scaling", input))?;
            self.pull_filtered(out, input)?;
        }
        Ok(())
    }

    fn pull_filtered(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut filtered = ffmpeg::frame::Video::empty();
        loop {
            let got = match self.graph.get("out") {
                Some(mut sink) => sink.sink().frame(&mut filtered),
                None => Err(ffmpeg::Error::Bug),
            };
            if got.is_err() {
                return Ok(());
            }
            let Some(pts_us) = filtered.pts() else {
                continue;
            };
            // Encoder timestamps must increase strictly.
            let mut pts = us_to_ts(pts_us, VIDEO_ENCODER_TB);
            if let Some(last) = self.last_encoder_pts {
                pts = pts.max(last + 1);
            }
            self.last_encoder_pts = Some(pts);
            filtered.set_pts(Some(pts));
            // A decoded I-frame would make libx264 force a keyframe: let the GOP decide.
            filtered.set_kind(picture::Type::None);
            self.encoder
                .send_frame(&filtered)
                .map_err(stream_error("encoding video of", input))?;
            self.receive_packets(out, input)?;
        }
    }

    fn receive_packets(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut encoded = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut encoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => return Err(stream_error("encoding video of", input)(e)),
            }
            let Some(data) = encoded.data() else {
                continue;
            };
            let payload = h264_payload(data, Framing::AnnexB).unwrap_or_default();
            let pts = ts_to_us(encoded.pts().unwrap_or(0), VIDEO_ENCODER_TB);
            let dts = encoded.dts().map_or(pts, |d| ts_to_us(d, VIDEO_ENCODER_TB));
            let key = encoded.is_key() || h264::is_keyframe_avcc(&payload, 4);
            out.push_back((MediaKind::Video, make_frame(pts, key, payload), dts));
        }
    }

    fn drain_decoder(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(out, input)?;
        self.decoder.flush();
        Ok(())
    }

    fn finish(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(out, input)?;
        if let Some(mut src) = self.graph.get("in") {
            let _ = src.source().flush();
        }
        self.pull_filtered(out, input)?;
        let _ = self.encoder.send_eof();
        self.receive_packets(out, input)
    }
}

fn stream_error(what: &'static str, input: &Input) -> impl Fn(ffmpeg::Error) -> IngestError {
    let input = input.to_string();
    move |source| IngestError::Stream {
        what,
        input: input.clone(),
        source,
    }
}

/// Opens libx264 for live streaming: no B-frames, a keyframe every `gop` frames and only
/// then, zero-latency tuning, constrained bitrate, parameter sets as (Annex-B) extradata.
fn open_x264(
    width: u32,
    height: u32,
    fps: f64,
    gop: u32,
    bitrate: u64,
) -> Result<(codec::encoder::Video, Vec<u8>), IngestError> {
    let codec = ffmpeg::encoder::find_by_name("libx264")
        .ok_or_else(|| IngestError::CodecMissing("libx264 H.264 encoder".into()))?;
    let mut enc = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(setup("H.264 encoder"))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(VIDEO_ENCODER_TB);
    let fps_rational = Rational((fps * 1000.0).round() as i32, 1000).reduce();
    enc.set_frame_rate(Some(fps_rational));
    enc.set_gop(gop);
    enc.set_max_b_frames(0);
    enc.set_bit_rate(bitrate as usize);
    enc.set_max_bit_rate((bitrate * 3 / 2) as usize);
    enc.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut opts = Dictionary::new();
    opts.set("preset", "veryfast");
    opts.set("tune", "zerolatency");
    opts.set("profile", "high");
    opts.set("bufsize", &(bitrate * 2).to_string());
    // Keyframes only at GOP boundaries, so every group is one second (scenecut off).
    opts.set(
        "x264-params",
        &format!("keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"),
    );
    let encoder = enc
        .open_as_with(codec, opts)
        .map_err(setup("H.264 encoder"))?;
    let extradata = context_extradata(&encoder);
    Ok((encoder, extradata))
}

// ---------------------------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------------------------

/// The audio object type of an `AudioSpecificConfig` (with the escape for types above 30).
fn asc_object_type(asc: &[u8]) -> Option<u8> {
    let first = asc.first()? >> 3;
    if first == 31 {
        let second = *asc.get(1)?;
        Some(32 + (((asc[0] & 0x07) << 3) | (second >> 5)))
    } else {
        Some(first)
    }
}

struct AudioTrack {
    stream: usize,
    info: AudioInfo,
    /// Stands in for missing packet durations (20 ms; 1024 samples for AAC).
    frame_dur_us: i64,
    path: AudioPath,
}

enum AudioPath {
    /// Opus, or AAC whose ADTS headers (if any) are stripped.
    Passthrough,
    Transcode(Box<AudioTranscoder>),
}

impl AudioTrack {
    fn open(ictx: &format::context::Input, index: usize) -> Result<AudioTrack, IngestError> {
        let stream = ictx.stream(index).ok_or(IngestError::Setup {
            what: "audio stream",
            source: ffmpeg::Error::StreamNotFound,
        })?;
        let params = stream.parameters();
        let raw = raw_params(&params);
        let extradata = stream_extradata(&params);
        let passthrough = match params.id() {
            Id::OPUS => Some(AudioInfo {
                codec: "opus".into(),
                sample_rate: 48_000,
                channels: raw.channels.max(1),
                description: Some(if extradata.starts_with(b"OpusHead") {
                    extradata
                } else {
                    opus_head(raw.channels.max(1), 0, raw.sample_rate)
                }),
                bitrate: raw.bit_rate,
            }),
            Id::AAC => {
                let asc = if extradata.is_empty() {
                    // ADTS input (MPEG-TS, .aac): FFmpeg's profile is the object type - 1.
                    let object_type = u8::try_from(raw.profile + 1).unwrap_or(2).clamp(1, 30);
                    audio_specific_config(object_type, raw.sample_rate, raw.channels)
                } else {
                    Some(extradata)
                };
                // WebCodecs decodes AAC-LC, HE-AAC and HE-AAC v2.
                asc.and_then(|asc| {
                    let object_type = asc_object_type(&asc)?;
                    matches!(object_type, 2 | 5 | 29).then(|| AudioInfo {
                        codec: format!("mp4a.40.{object_type}"),
                        sample_rate: raw.sample_rate,
                        channels: raw.channels,
                        description: Some(asc),
                        bitrate: raw.bit_rate,
                    })
                })
            }
            _ => None,
        };
        let frame_dur_us = match params.id() {
            Id::AAC if raw.sample_rate > 0 => 1024 * US / i64::from(raw.sample_rate),
            _ => 20_000,
        };
        if let Some(info) = passthrough {
            return Ok(AudioTrack {
                stream: index,
                info,
                frame_dur_us,
                path: AudioPath::Passthrough,
            });
        }
        let transcoder = AudioTranscoder::open(&params)?;
        Ok(AudioTrack {
            stream: index,
            info: transcoder.info.clone(),
            frame_dur_us,
            path: AudioPath::Transcode(Box::new(transcoder)),
        })
    }

    fn push(
        &mut self,
        packet: &mut Packet,
        stamps: Option<Stamps>,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            AudioPath::Passthrough => {
                let (Some(stamps), Some(data)) = (stamps, packet.data()) else {
                    return Ok(());
                };
                let body = match adts_header_len(data) {
                    Some(header) if self.info.codec.starts_with("mp4a") => &data[header..],
                    _ => data,
                };
                if !body.is_empty() {
                    out.push_back((
                        MediaKind::Audio,
                        make_frame(stamps.pts, true, body.to_vec()),
                        stamps.dts,
                    ));
                }
                Ok(())
            }
            AudioPath::Transcode(t) => t.push(packet, stamps, out, input),
        }
    }

    fn drain_decoder(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            AudioPath::Passthrough => Ok(()),
            AudioPath::Transcode(t) => t.drain_decoder(out, input),
        }
    }

    fn finish(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        match &mut self.path {
            AudioPath::Passthrough => Ok(()),
            AudioPath::Transcode(t) => t.finish(out, input),
        }
    }
}

/// Decoder, resampler (a filter graph that also cuts encoder-sized frames) and Opus (or AAC)
/// encoder.
struct AudioTranscoder {
    info: AudioInfo,
    decoder: codec::decoder::Audio,
    graph: filter::Graph,
    encoder: codec::encoder::Audio,
    encoder_tb: Rational,
}

impl AudioTranscoder {
    fn open(params: &codec::Parameters) -> Result<AudioTranscoder, IngestError> {
        let mut decoder = codec::Context::from_parameters(params.clone())
            .map_err(setup("audio decoder"))?
            .decoder();
        decoder.set_packet_time_base(Rational(1, US as i32));
        let decoder = decoder.audio().map_err(|e| match e {
            ffmpeg::Error::DecoderNotFound => {
                IngestError::CodecMissing(format!("decoder for {:?} audio", params.id()))
            }
            source => IngestError::Setup {
                what: "audio decoder",
                source,
            },
        })?;
        let in_channels = u32::from(decoder.channels()).max(1);
        let out_channels = in_channels.min(2);
        let out_layout = if out_channels == 1 {
            ChannelLayout::MONO
        } else {
            ChannelLayout::STEREO
        };
        const OUT_RATE: u32 = 48_000;

        let (codec, sample_format, codec_name, bitrate) =
            match ffmpeg::encoder::find_by_name("libopus") {
                Some(c) => (
                    c,
                    Sample::F32(format::sample::Type::Packed),
                    "opus",
                    48_000 * out_channels,
                ),
                None => {
                    let c = ffmpeg::encoder::find(Id::AAC)
                        .ok_or_else(|| IngestError::CodecMissing("Opus or AAC encoder".into()))?;
                    (
                        c,
                        Sample::F32(format::sample::Type::Planar),
                        "aac",
                        64_000 * out_channels,
                    )
                }
            };
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(setup("audio encoder"))?;
        enc.set_rate(OUT_RATE as i32);
        enc.set_channel_layout(out_layout);
        enc.set_channels(out_channels as i32);
        enc.set_format(sample_format);
        enc.set_bit_rate(bitrate as usize);
        let encoder_tb = Rational(1, OUT_RATE as i32);
        enc.set_time_base(encoder_tb);
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let encoder = enc.open_as(codec).map_err(setup("audio encoder"))?;
        let extradata = context_extradata(&encoder);

        let in_layout = match decoder.channel_layout() {
            l if l.is_empty() => ChannelLayout::default(in_channels as i32),
            l => l,
        };
        let mut graph = filter::Graph::new();
        let args = format!(
            "time_base=1/{US}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            decoder.rate(),
            decoder.format().name(),
            in_layout.bits()
        );
        let abuffer = filter::find("abuffer")
            .ok_or_else(|| IngestError::CodecMissing("abuffer filter".into()))?;
        let sink = filter::find("abuffersink")
            .ok_or_else(|| IngestError::CodecMissing("abuffersink filter".into()))?;
        graph
            .add(&abuffer, "in", &args)
            .map_err(setup("audio filter source"))?;
        graph
            .add(&sink, "out", "")
            .map_err(setup("audio filter sink"))?;
        let layout_name = if out_channels == 1 { "mono" } else { "stereo" };
        // async=1 fills gaps and trims overlaps (e.g. at a loop point) to keep the audio
        // timeline continuous.
        let spec = format!(
            "aresample={OUT_RATE}:async=1,aformat=sample_fmts={}:sample_rates={OUT_RATE}:channel_layouts={layout_name}",
            sample_format.name()
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(setup("audio filter graph"))?;
        graph.validate().map_err(setup("audio filter graph"))?;
        if let Some(mut out) = graph.get("out") {
            out.sink().set_frame_size(encoder.frame_size());
        }

        let (codec_string, description) = if codec_name == "opus" {
            let head = if extradata.starts_with(b"OpusHead") {
                extradata
            } else {
                opus_head(out_channels, 312, OUT_RATE)
            };
            ("opus".to_string(), Some(head))
        } else {
            ("mp4a.40.2".to_string(), Some(extradata))
        };
        let info = AudioInfo {
            codec: codec_string,
            sample_rate: OUT_RATE,
            channels: out_channels,
            description,
            bitrate: Some(u64::from(bitrate)),
        };
        Ok(AudioTranscoder {
            info,
            decoder,
            graph,
            encoder,
            encoder_tb,
        })
    }

    fn push(
        &mut self,
        packet: &mut Packet,
        stamps: Option<Stamps>,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        packet.set_pts(stamps.map(|s| s.pts));
        packet.set_dts(stamps.map(|s| s.dts));
        if let Err(error) = self.decoder.send_packet(packet) {
            tracing::debug!(%error, "audio decoder rejected a packet");
            return Ok(());
        }
        self.receive_frames(out, input)
    }

    fn receive_frames(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut decoded = ffmpeg::frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let pts = decoded.timestamp();
            decoded.set_pts(pts);
            self.graph
                .get("in")
                .ok_or(ffmpeg::Error::Bug)
                .and_then(|mut src| src.source().add(&decoded))
                .map_err(stream_error("resampling", input))?;
            self.pull_filtered(out, input)?;
        }
        Ok(())
    }

    fn pull_filtered(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut filtered = ffmpeg::frame::Audio::empty();
        loop {
            let (got, sink_tb) = match self.graph.get("out") {
                Some(mut sink) => {
                    let mut sink = sink.sink();
                    (sink.frame(&mut filtered), sink.time_base())
                }
                None => (Err(ffmpeg::Error::Bug), Rational(1, 1)),
            };
            if got.is_err() {
                return Ok(());
            }
            if let Some(pts) = filtered.pts() {
                filtered.set_pts(Some(us_to_ts(ts_to_us(pts, sink_tb), self.encoder_tb)));
            }
            self.encoder
                .send_frame(&filtered)
                .map_err(stream_error("encoding audio of", input))?;
            self.receive_packets(out, input)?;
        }
    }

    fn receive_packets(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let mut encoded = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut encoded) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => return Err(stream_error("encoding audio of", input)(e)),
            }
            let Some(data) = encoded.data() else {
                continue;
            };
            // The first Opus packets start before 0 by the encoder delay (pre-skip).
            let pts = ts_to_us(encoded.pts().unwrap_or(0), self.encoder_tb).max(0);
            out.push_back((MediaKind::Audio, make_frame(pts, true, data.to_vec()), pts));
        }
    }

    fn drain_decoder(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(out, input)?;
        self.decoder.flush();
        Ok(())
    }

    fn finish(
        &mut self,
        out: &mut VecDeque<(MediaKind, Frame, i64)>,
        input: &Input,
    ) -> Result<(), IngestError> {
        let _ = self.decoder.send_eof();
        self.receive_frames(out, input)?;
        if let Some(mut src) = self.graph.get("in") {
            let _ = src.source().flush();
        }
        self.pull_filtered(out, input)?;
        let _ = self.encoder.send_eof();
        self.receive_packets(out, input)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    fn assert_send<T: Send>() {}

    #[test]
    fn source_is_send() {
        assert_send::<Source>();
    }

    /// Runs the `ffmpeg` program to make a fixture in a fresh temporary directory.
    pub(crate) fn make_fixture(name: &str, args: &[&str]) -> (TempDir, PathBuf) {
        let dir = TempDir::new(name);
        let path = dir.0.join(name);
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&path)
            .status()
            .expect("the ffmpeg program is installed");
        assert!(status.success(), "ffmpeg failed to make {name}");
        (dir, path)
    }

    /// A temporary directory removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "moqcast-test-{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                tag
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(input: Input, looping: bool) -> Source {
        Source::open(IngestOptions {
            input,
            looping,
            realtime: false,
        })
        .unwrap()
    }

    /// Reads frames until `until_us` of media (or the end): (video, audio) frames.
    fn collect(source: &mut Source, until_us: u64) -> (Vec<Frame>, Vec<Frame>) {
        let (mut video, mut audio) = (Vec::new(), Vec::new());
        while let Some((kind, frame)) = source.next().unwrap() {
            if frame.pts_us >= until_us {
                break;
            }
            match kind {
                MediaKind::Video => video.push(frame),
                MediaKind::Audio => audio.push(frame),
            }
        }
        (video, audio)
    }

    #[test]
    fn pacer_follows_timestamps_and_reanchors() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(pacer.delay(5_000_000, t0), Duration::ZERO);
        assert_eq!(pacer.delay(5_040_000, t0), Duration::from_millis(40));
        let later = t0 + Duration::from_millis(30);
        assert_eq!(pacer.delay(5_040_000, later), Duration::from_millis(10));
        // A little late: no wait, no re-anchoring.
        assert_eq!(pacer.delay(5_000_000, later), Duration::ZERO);
        assert_eq!(pacer.anchor, Some((t0, 5_000_000)));
        // A jump forward of a minute re-anchors instead of sleeping for a minute.
        assert_eq!(pacer.delay(65_000_000, later), Duration::ZERO);
        assert_eq!(pacer.delay(65_020_000, later), Duration::from_millis(20));
        // Far behind (a stall): re-anchor rather than burst.
        let stalled = later + Duration::from_secs(5);
        assert_eq!(pacer.delay(65_040_000, stalled), Duration::ZERO);
        assert_eq!(pacer.anchor, Some((stalled, 65_040_000)));
    }

    #[test]
    fn timestamp_rescaling() {
        assert_eq!(ts_to_us(90_000, Rational(1, 90_000)), 1_000_000);
        assert_eq!(ts_to_us(1, Rational(1, 3)), 333_333);
        assert_eq!(ts_to_us(-1, Rational(1, 3)), -333_333);
        assert_eq!(us_to_ts(1_000_000, Rational(1, 48_000)), 48_000);
        assert_eq!(us_to_ts(20_833, Rational(1, 48_000)), 1000);
        assert_eq!(ts_to_us(5, Rational(1, 0)), 0);
        assert_eq!(ts_to_us(i64::MAX, Rational(1, 1)), i64::MAX);
    }

    #[test]
    fn aac_config_helpers() {
        assert_eq!(audio_specific_config(2, 48_000, 2), Some(vec![0x11, 0x90]));
        assert_eq!(audio_specific_config(2, 44_100, 1), Some(vec![0x12, 0x08]));
        assert_eq!(audio_specific_config(2, 12_345, 2), None);
        assert_eq!(asc_object_type(&[0x11, 0x90]), Some(2));
        assert_eq!(asc_object_type(&[0xf8, 0x20]), Some(33));
        // ADTS: AAC-LC, 48 kHz, 2 channels, no CRC, a 10-byte frame.
        let adts = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 0xde, 0xad, 0x00];
        assert_eq!(adts_header_len(&adts), Some(7));
        assert_eq!(adts_header_len(&adts[..9]), None, "length field disagrees");
        assert_eq!(adts_header_len(&[0x21, 0x10, 0, 0, 0, 0, 0]), None);
        let head = opus_head(2, 312, 48_000);
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..8], b"OpusHead");
    }

    #[test]
    fn test_source_is_h264_and_opus_at_the_right_rates() {
        let mut source = open(Input::TestSrc, false);
        let info = source.info().clone();
        let video = info.video.expect("video");
        assert!(video.codec.starts_with("avc1.64"), "{}", video.codec);
        assert_eq!((video.width, video.height), (640, 360));
        assert_eq!(video.framerate, 30.0);
        let config = AvcConfig::parse(&video.avcc).unwrap();
        assert_eq!(config.length_size, 4);
        assert_eq!(config.codec_string(), video.codec);
        let audio = info.audio.expect("audio");
        assert_eq!(audio.codec, "opus");
        assert_eq!(audio.sample_rate, 48_000);
        assert!(audio.description.unwrap().starts_with(b"OpusHead"));

        let (v, a) = collect(&mut source, 2_000_000);
        assert!(v[0].keyframe, "video starts with a keyframe");
        assert!(h264::is_keyframe_avcc(&v[0].payload, 4));
        assert!(
            (58..=61).contains(&v.len()),
            "{} video frames in 2 s",
            v.len()
        );
        assert!(
            (98..=101).contains(&a.len()),
            "{} audio packets in 2 s",
            a.len()
        );
        let keyframes: Vec<u64> = v.iter().filter(|f| f.keyframe).map(|f| f.pts_us).collect();
        assert_eq!(keyframes.len(), 2, "one keyframe per second: {keyframes:?}");
        assert!(v.windows(2).all(|w| w[0].pts_us < w[1].pts_us));
        assert!(a.windows(2).all(|w| w[0].pts_us < w[1].pts_us));
        assert!(v[0].pts_us < 50_000 && a[0].pts_us < 50_000);
        // Every payload is AVCC that parses to the end.
        for frame in &v {
            assert!(h264::avcc_nals(&frame.payload, 4).all(|n| n.is_ok()));
        }
    }

    #[test]
    fn mpeg4_part2_file_is_transcoded_to_h264() {
        let (_dir, path) = make_fixture(
            "mpeg4.avi",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:sample_rate=44100",
                "-t",
                "2",
                "-c:v",
                "mpeg4",
                "-c:a",
                "pcm_s16le",
            ],
        );
        let mut source = open(Input::File(path), false);
        let info = source.info().clone();
        let video = info.video.unwrap();
        assert!(video.codec.starts_with("avc1."));
        assert_eq!((video.width, video.height), (320, 240));
        assert_eq!(video.framerate, 25.0);
        let audio = info.audio.unwrap();
        assert_eq!(audio.codec, "opus");
        let (v, a) = collect(&mut source, u64::MAX);
        assert!((48..=50).contains(&v.len()), "{} frames", v.len());
        assert!(v[0].keyframe);
        assert!(v.iter().filter(|f| f.keyframe).count() >= 2);
        assert!((98..=102).contains(&a.len()), "{} audio packets", a.len());
        let last = v.last().unwrap().pts_us;
        assert!(
            (1_900_000..2_000_000).contains(&last),
            "last video pts {last}"
        );
    }

    #[test]
    fn looping_a_transcoded_file_keeps_timestamps_increasing() {
        let (_dir, path) = make_fixture(
            "loop.mkv",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=20",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:sample_rate=44100",
                "-t",
                "1",
                "-c:v",
                "libvpx",
                "-c:a",
                "libopus",
            ],
        );
        let mut source = open(Input::File(path), true);
        assert!(source
            .info()
            .video
            .as_ref()
            .unwrap()
            .codec
            .starts_with("avc1."));
        // Opus from Matroska passes through.
        assert_eq!(source.info().audio.as_ref().unwrap().codec, "opus");
        let (v, a) = collect(&mut source, 2_500_000);
        assert!(
            (48..=52).contains(&v.len()),
            "{} frames in 2.5 passes",
            v.len()
        );
        assert!((120..=130).contains(&a.len()), "{} audio packets", a.len());
        assert!(v.windows(2).all(|w| w[0].pts_us < w[1].pts_us));
        assert!(a.windows(2).all(|w| w[0].pts_us < w[1].pts_us));
    }

    #[test]
    fn h264_ts_passes_through_and_loops() {
        // MPEG-TS: Annex-B H.264 with B-frames and ADTS AAC.
        let (_dir, path) = make_fixture(
            "in.ts",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=300:sample_rate=48000",
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-bf",
                "2",
                "-g",
                "30",
                "-c:a",
                "aac",
            ],
        );
        let mut source = open(Input::File(path), true);
        let info = source.info().clone();
        let video = info.video.unwrap();
        assert!(video.codec.starts_with("avc1."), "{}", video.codec);
        assert_eq!((video.width, video.height), (320, 240));
        let audio = info.audio.unwrap();
        assert_eq!(audio.codec, "mp4a.40.2");
        // AAC-LC, 48 kHz, mono: built from the ADTS stream's parameters.
        assert_eq!(audio.description.as_deref(), Some(&[0x11, 0x88][..]));
        let (v, a) = collect(&mut source, 2_500_000);
        // Two and a half passes of a one-second file.
        assert!((70..=80).contains(&v.len()), "{} frames", v.len());
        assert!(v.iter().filter(|f| f.keyframe).count() >= 3);
        assert!(a.len() > 100, "{} audio packets", a.len());
        // ADTS headers are gone.
        assert!(a.iter().all(|f| !f.payload.starts_with(&[0xff])));
        // Decode order is monotonic per pass; presentation times keep growing across passes.
        let max_first_pass = v.iter().take(30).map(|f| f.pts_us).max().unwrap();
        let min_second_pass = v.iter().skip(30).take(30).map(|f| f.pts_us).min().unwrap();
        assert!(
            min_second_pass > max_first_pass,
            "{max_first_pass} then {min_second_pass}"
        );
    }

    #[test]
    fn audio_only_file() {
        let (_dir, path) = make_fixture(
            "tone.mp3",
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=500:sample_rate=44100",
                "-t",
                "1",
            ],
        );
        let mut source = open(Input::File(path), false);
        assert!(source.info().video.is_none());
        assert_eq!(source.info().audio.as_ref().unwrap().codec, "opus");
        let (v, a) = collect(&mut source, u64::MAX);
        assert!(v.is_empty());
        assert!((49..=53).contains(&a.len()), "{} audio packets", a.len());
    }

    #[test]
    fn video_only_mp4_with_avcc_passes_through() {
        let (_dir, path) = make_fixture(
            "video.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=256x144:rate=24",
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-profile:v",
                "baseline",
            ],
        );
        let mut source = open(Input::File(path), false);
        assert!(source.info().audio.is_none());
        let video = source.info().video.clone().unwrap();
        assert!(video.codec.starts_with("avc1.42"), "{}", video.codec);
        assert_eq!((video.width, video.height), (256, 144));
        let (v, _) = collect(&mut source, u64::MAX);
        assert_eq!(v.len(), 24);
        assert!(v[0].keyframe);
        assert!(v.windows(2).all(|w| w[0].pts_us < w[1].pts_us));
    }

    /// Child half of [`stdin_mpegts_and_fmp4`]: runs only inside the process that test starts,
    /// with media on its standard input.
    #[test]
    fn stdin_child() {
        if std::env::var_os("MOQCAST_STDIN_CHILD").is_none() {
            return;
        }
        let mut source = open(Input::Stdin, true);
        let info = source.info().clone();
        assert!(info.video.unwrap().codec.starts_with("avc1."));
        assert!(info.audio.is_some());
        let (v, a) = collect(&mut source, u64::MAX);
        assert!(v[0].keyframe);
        println!("STDIN-RESULT video={} audio={}", v.len(), a.len());
    }

    #[test]
    fn stdin_mpegts_and_fmp4() {
        use std::process::Stdio;
        for muxer in [
            &["-f", "mpegts"][..],
            &["-f", "mp4", "-movflags", "frag_keyframe+empty_moov"][..],
        ] {
            let mut ffmpeg = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
                .args(["testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i"])
                .args([
                    "sine=frequency=300:sample_rate=48000",
                    "-t",
                    "2",
                    "-c:v",
                    "libx264",
                ])
                .args(["-preset", "ultrafast", "-g", "30", "-c:a", "aac"])
                .args(muxer)
                .arg("-")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "ingest::tests::stdin_child", "--nocapture"])
                .env("MOQCAST_STDIN_CHILD", "1")
                .stdin(ffmpeg.stdout.take().unwrap())
                .output()
                .unwrap();
            assert!(ffmpeg.wait().unwrap().success());
            let out = String::from_utf8_lossy(&child.stdout);
            assert!(child.status.success(), "{muxer:?}: {out}");
            let line = out
                .lines()
                .find(|l| l.starts_with("STDIN-RESULT"))
                .unwrap_or_else(|| panic!("{muxer:?}: no result in {out}"));
            // Two seconds: 60 frames of video, 94 AAC frames of 1024 samples (plus priming).
            let audio: usize = line
                .strip_prefix("STDIN-RESULT video=60 audio=")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{muxer:?}: {line}"));
            assert!((93..=96).contains(&audio), "{muxer:?}: {line}");
        }
    }

    #[test]
    fn realtime_paces_by_timestamps() {
        let mut source = Source::open(IngestOptions {
            input: Input::TestSrc,
            looping: false,
            realtime: true,
        })
        .unwrap();
        let start = Instant::now();
        let (v, _) = collect(&mut source, 500_000);
        let elapsed = start.elapsed();
        assert!(v.len() >= 14);
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    }

    #[test]
    fn unreadable_inputs_give_clear_errors() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("corrupt.mp4");
        std::fs::write(
            &path,
            b"this is not a media file at all, just some text bytes",
        )
        .unwrap();
        let err = Source::open(IngestOptions {
            input: Input::File(path.clone()),
            looping: false,
            realtime: false,
        })
        .err()
        .expect("a corrupt file does not open");
        let message = err.to_string();
        assert!(message.starts_with("could not open "), "{message}");
        assert!(message.contains("corrupt.mp4"), "{message}");

        let missing = dir.0.join("missing.mp4");
        let err = Source::open(IngestOptions {
            input: Input::File(missing),
            looping: false,
            realtime: false,
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}

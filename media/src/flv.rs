//! FLV tag bodies, as RTMP audio (type 8) and video (type 9) messages carry them, repackaged
//! into moqcast frames and track configurations without transcoding.
//!
//! * **Video** (FLV v10.1 §E.4.3.1, and Enhanced RTMP's `ExVideoTagHeader`): H.264 only, the
//!   legacy `CodecID 7` or the `avc1` FourCC. The sequence header carries an `avcC` record;
//!   coded frames carry AVCC NAL units (lengths of the record's size) and a signed 24-bit
//!   composition time offset. Frames leave as 4-byte AVCC through [`crate::h264`], the one place
//!   that converts H.264 framing. HEVC, AV1, VP9 and the old Flash codecs are refused with
//!   [`FlvError::Unsupported`], which names the codec: the viewer and the catalog carry H.264.
//! * **Audio** (§E.4.2.1, and Enhanced RTMP's `ExAudioTagHeader`): AAC (`SoundFormat 10`, or
//!   the `mp4a` FourCC) with its `AudioSpecificConfig`, and Opus (the `Opus` FourCC) with its
//!   `OpusHead`. MP3, Speex, G.711 and the rest are refused.
//!
//! [`parse_video`] and [`parse_audio`] read one tag body and borrow from it; [`Repackager`]
//! keeps the decoder configurations and the timeline of one RTMP stream and turns tag bodies
//! into [`Event`]s. Pure logic without I/O: no function here panics on any input, and errors
//! tell a body that ends early ([`FlvError::Incomplete`]) from one that breaks the syntax
//! ([`FlvError::Malformed`]) and from a codec moqcast does not carry
//! ([`FlvError::Unsupported`]).

use bytes::Bytes;

use crate::aac::{AacError, AudioSpecificConfig};
use crate::h264::{self, AvcConfig, H264Error};
use crate::info::{opus_head, AudioInfo, VideoInfo};
use crate::{Frame, MediaKind};

/// Why an FLV tag body could not be repackaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The body ends before its headers or a length-prefixed unit do.
    #[error("incomplete FLV tag: more bytes are needed")]
    Incomplete,
    /// The body breaks the syntax; more bytes will not help.
    #[error("malformed FLV tag: {0}")]
    Malformed(&'static str),
    /// A codec or Enhanced RTMP feature moqcast does not carry (it names it).
    #[error("unsupported {0}: moqcast carries H.264 video and AAC or Opus audio")]
    Unsupported(String),
}

impl From<H264Error> for FlvError {
    fn from(e: H264Error) -> Self {
        match e {
            H264Error::Incomplete => FlvError::Incomplete,
            H264Error::Malformed(m) => FlvError::Malformed(m),
        }
    }
}

impl From<AacError> for FlvError {
    fn from(e: AacError) -> Self {
        match e {
            AacError::Incomplete => FlvError::Incomplete,
            AacError::Malformed(m) => FlvError::Malformed(m),
        }
    }
}

/// One video tag body, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// An AVC sequence header: the `AVCDecoderConfigurationRecord` (`avcC`).
    AvcConfig(&'a [u8]),
    /// One coded H.264 frame in AVCC framing (lengths as the `avcC` record says).
    AvcFrame {
        /// The tag's frame type says key frame (a decoder can start here).
        keyframe: bool,
        /// Presentation minus decode time, in milliseconds.
        composition_ms: i32,
        data: &'a [u8],
    },
    /// The end of the sequence (the encoder stopped).
    EndOfSequence,
    /// Nothing to carry: command frames, metadata, empty frames. Says what it was.
    Ignored(&'static str),
}

/// One audio tag body, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// An AAC sequence header: the `AudioSpecificConfig`.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
    /// An Opus sequence start: the `OpusHead` (RFC 7845 §5.1).
    OpusConfig(&'a [u8]),
    /// One Opus packet.
    OpusFrame(&'a [u8]),
    /// Nothing to carry (sequence ends, channel layouts). Says what it was.
    Ignored(&'static str),
}

/// FLV `CodecID` 7 (AVC), in the legacy video tag header.
const CODEC_AVC: u8 = 7;
/// FLV `SoundFormat` 10 (AAC), in the legacy audio tag header.
const SOUND_AAC: u8 = 10;
/// FLV `SoundFormat` 9: an Enhanced RTMP `ExAudioTagHeader` follows.
const SOUND_EX_HEADER: u8 = 9;
/// FLV video `FrameType` 1: key frame.
const FRAME_KEY: u8 = 1;
/// FLV video `FrameType` 5: video info / command frame (no picture).
const FRAME_COMMAND: u8 = 5;

fn split(body: &[u8], n: usize) -> Result<(&[u8], &[u8]), FlvError> {
    if body.len() < n {
        return Err(FlvError::Incomplete);
    }
    Ok(body.split_at(n))
}

/// The signed 24-bit composition time offset (`SI24`) at the start of `body`.
fn composition_time(body: &[u8]) -> Result<(i32, &[u8]), FlvError> {
    let (ct, rest) = split(body, 3)?;
    let unsigned = (i32::from(ct[0]) << 16) | (i32::from(ct[1]) << 8) | i32::from(ct[2]);
    // Sign-extend from 24 bits.
    Ok(((unsigned << 8) >> 8, rest))
}

fn fourcc_name(fourcc: &[u8]) -> String {
    let text: String = fourcc
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    format!("{text:?}")
}

/// Reads one video tag body (the payload of an RTMP video message).
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let (&first, rest) = body.split_first().ok_or(FlvError::Incomplete)?;
    if first & 0x80 != 0 {
        return parse_ex_video(first, rest);
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if codec != CODEC_AVC {
        let name = match codec {
            2 => "Sorenson H.263",
            3 => "Screen Video",
            4 => "On2 VP6",
            5 => "On2 VP6 with alpha",
            6 => "Screen Video 2",
            12 => "HEVC (legacy CodecID 12)",
            _ => "video CodecID",
        };
        return Err(FlvError::Unsupported(format!("{name} ({codec})")));
    }
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored("video info/command frame"));
    }
    let (&packet_type, rest) = rest.split_first().ok_or(FlvError::Incomplete)?;
    let (composition_ms, data) = composition_time(rest)?;
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(data)),
        1 if data.is_empty() => Ok(VideoTag::Ignored("empty AVC frame")),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == FRAME_KEY,
            composition_ms,
            data,
        }),
        2 => Ok(VideoTag::EndOfSequence),
        _ => Err(FlvError::Malformed("reserved AVCPacketType")),
    }
}

/// Enhanced RTMP (v1/v2) `ExVideoTagHeader`: `IsExHeader | FrameType (3 bits) | PacketType`,
/// then a FourCC.
fn parse_ex_video(first: u8, rest: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    const METADATA: u8 = 4;
    if frame_type == FRAME_COMMAND && packet_type != METADATA {
        return Ok(VideoTag::Ignored("video command frame"));
    }
    match packet_type {
        6 => {
            return Err(FlvError::Unsupported(
                "Enhanced RTMP multitrack video".into(),
            ))
        }
        7 => return Err(FlvError::Unsupported("Enhanced RTMP ModEx video".into())),
        _ => {}
    }
    let (fourcc, rest) = split(rest, 4)?;
    if fourcc != b"avc1" {
        let name = match fourcc {
            b"hvc1" => "HEVC",
            b"av01" => "AV1",
            b"vp09" => "VP9",
            b"vp08" => "VP8",
            _ => "video codec",
        };
        return Err(FlvError::Unsupported(format!(
            "{name} (FourCC {})",
            fourcc_name(fourcc)
        )));
    }
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(rest)),
        1 | 3 => {
            let (composition_ms, data) = if packet_type == 1 {
                composition_time(rest)?
            } else {
                (0, rest)
            };
            if data.is_empty() {
                return Ok(VideoTag::Ignored("empty AVC frame"));
            }
            Ok(VideoTag::AvcFrame {
                keyframe: frame_type == FRAME_KEY,
                composition_ms,
                data,
            })
        }
        2 => Ok(VideoTag::EndOfSequence),
        METADATA => Ok(VideoTag::Ignored("video metadata (HDR)")),
        5 => Err(FlvError::Unsupported(
            "Enhanced RTMP MPEG-2 TS sequence start".into(),
        )),
        _ => Err(FlvError::Malformed(
            "reserved Enhanced RTMP video PacketType",
        )),
    }
}

/// Reads one audio tag body (the payload of an RTMP audio message).
pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let (&first, rest) = body.split_first().ok_or(FlvError::Incomplete)?;
    let format = first >> 4;
    match format {
        SOUND_AAC => {
            let (&packet_type, data) = rest.split_first().ok_or(FlvError::Incomplete)?;
            match packet_type {
                0 => Ok(AudioTag::AacConfig(data)),
                1 if data.is_empty() => Ok(AudioTag::Ignored("empty AAC frame")),
                1 => Ok(AudioTag::AacFrame(data)),
                _ => Err(FlvError::Malformed("reserved AACPacketType")),
            }
        }
        SOUND_EX_HEADER => parse_ex_audio(first & 0x0f, rest),
        _ => {
            let name = match format {
                0 | 3 => "linear PCM",
                1 => "ADPCM",
                2 | 14 => "MP3",
                4..=6 => "Nellymoser",
                7 => "G.711 A-law",
                8 => "G.711 mu-law",
                11 => "Speex",
                _ => "audio SoundFormat",
            };
            Err(FlvError::Unsupported(format!("{name} ({format})")))
        }
    }
}

/// Enhanced RTMP `ExAudioTagHeader`: `SoundFormat 9 | AudioPacketType`, then a FourCC.
fn parse_ex_audio(packet_type: u8, rest: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    match packet_type {
        5 => {
            return Err(FlvError::Unsupported(
                "Enhanced RTMP multitrack audio".into(),
            ))
        }
        7 => return Err(FlvError::Unsupported("Enhanced RTMP ModEx audio".into())),
        _ => {}
    }
    let (fourcc, data) = split(rest, 4)?;
    let opus = match fourcc {
        b"Opus" => true,
        b"mp4a" => false,
        _ => {
            let name = match fourcc {
                b"fLaC" => "FLAC",
                b".mp3" => "MP3",
                b"ac-3" => "AC-3",
                b"ec-3" => "E-AC-3",
                _ => "audio codec",
            };
            return Err(FlvError::Unsupported(format!(
                "{name} (FourCC {})",
                fourcc_name(fourcc)
            )));
        }
    };
    match (packet_type, opus) {
        (0, true) => Ok(AudioTag::OpusConfig(data)),
        (0, false) => Ok(AudioTag::AacConfig(data)),
        (1, _) if data.is_empty() => Ok(AudioTag::Ignored("empty audio frame")),
        (1, true) => Ok(AudioTag::OpusFrame(data)),
        (1, false) => Ok(AudioTag::AacFrame(data)),
        (2, _) => Ok(AudioTag::Ignored("audio sequence end")),
        (4, _) => Ok(AudioTag::Ignored("multichannel configuration")),
        _ => Err(FlvError::Malformed(
            "reserved Enhanced RTMP audio PacketType",
        )),
    }
}

/// What a [`Repackager`] makes of a tag body.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The video decoder configuration is new or changed: the catalog changes.
    VideoConfig(VideoInfo),
    /// The audio decoder configuration is new or changed: the catalog changes.
    AudioConfig(AudioInfo),
    /// One frame on the stream's timeline (microseconds from the stream's timestamp 0).
    Frame(MediaKind, Frame),
}

/// Extends RTMP's 32-bit millisecond timestamps (they wrap after 49.7 days) to 64 bits, taking
/// each step as the shortest way around the circle, so small backward steps stay backward.
#[derive(Debug, Clone, Default)]
struct Unwrap {
    last: Option<(u32, i64)>,
}

impl Unwrap {
    fn extend(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            None => i64::from(ts),
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
        };
        self.last = Some((ts, ext));
        ext
    }
}

/// Turns the FLV tag bodies of one RTMP stream into track configurations and frames.
///
/// Frames that arrive before their track's sequence header are dropped (a decoder could not
/// use them) and counted in [`Repackager::dropped`]. A sequence header equal to the current one
/// (encoders repeat them) makes no event.
#[derive(Debug, Default)]
pub struct Repackager {
    avc: Option<AvcConfig>,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
    /// Frames per second from the stream's metadata, for an SPS without timing info.
    framerate_hint: Option<f64>,
    clock: Unwrap,
    dropped: u64,
}

impl Repackager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames per second from the stream's `onMetaData` (`framerate`), used when the SPS has
    /// no timing information. Ignored unless finite and positive.
    pub fn set_framerate_hint(&mut self, fps: f64) {
        if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
            self.framerate_hint = Some(fps);
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

    /// Frames dropped for arriving before their sequence header.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Microseconds of an RTMP timestamp plus a composition offset, at least 0.
    fn micros(&mut self, timestamp_ms: u32, offset_ms: i32) -> u64 {
        let ms = self.clock.extend(timestamp_ms) + i64::from(offset_ms);
        u64::try_from(ms.saturating_mul(1000)).unwrap_or(0)
    }

    /// One video message: its RTMP timestamp (milliseconds, decode time) and body.
    pub fn video(&mut self, timestamp_ms: u32, body: &[u8]) -> Result<Option<Event>, FlvError> {
        match parse_video(body)? {
            VideoTag::AvcConfig(record) => {
                let config = AvcConfig::parse(record)?;
                if self.avc.as_ref() == Some(&config) {
                    return Ok(None);
                }
                let info = video_info(&config, self.framerate_hint)?;
                self.avc = Some(config);
                self.video = Some(info.clone());
                Ok(Some(Event::VideoConfig(info)))
            }
            VideoTag::AvcFrame {
                keyframe: _,
                composition_ms,
                data,
            } => {
                let Some(config) = &self.avc else {
                    self.dropped += 1;
                    return Ok(None);
                };
                let length_size = usize::from(config.length_size);
                let payload = h264::avcc_to_avcc4(data, length_size)?;
                // Groups start where a decoder can: an IDR slice, whatever the tag's flag says.
                let keyframe = h264::is_keyframe_avcc(&payload, 4);
                let pts_us = self.micros(timestamp_ms, composition_ms);
                Ok(Some(Event::Frame(
                    MediaKind::Video,
                    Frame {
                        pts_us,
                        keyframe,
                        payload: Bytes::from(payload),
                    },
                )))
            }
            VideoTag::EndOfSequence | VideoTag::Ignored(_) => Ok(None),
        }
    }

    /// One audio message: its RTMP timestamp (milliseconds) and body.
    pub fn audio(&mut self, timestamp_ms: u32, body: &[u8]) -> Result<Option<Event>, FlvError> {
        let (config, frame) = match parse_audio(body)? {
            AudioTag::AacConfig(asc) => (Some(aac_info(asc)?), None),
            AudioTag::OpusConfig(head) => (Some(opus_info(head)?), None),
            AudioTag::AacFrame(data) => (None, Some((false, data))),
            AudioTag::OpusFrame(data) => (None, Some((true, data))),
            AudioTag::Ignored(_) => (None, None),
        };
        if let Some(info) = config {
            if self.audio.as_ref() == Some(&info) {
                return Ok(None);
            }
            self.audio = Some(info.clone());
            return Ok(Some(Event::AudioConfig(info)));
        }
        let Some((opus, data)) = frame else {
            return Ok(None);
        };
        // An Opus stream may leave out its sequence start (the header is optional for Opus in
        // Enhanced RTMP): then it is 48 kHz stereo.
        if self.audio.is_none() && opus {
            let info = opus_info(&opus_head(2, 0, 48_000))?;
            self.audio = Some(info.clone());
            // The frame after the configuration: report the configuration now, the frame is
            // dropped (the next one follows in 20 ms).
            self.dropped += 1;
            return Ok(Some(Event::AudioConfig(info)));
        }
        let matches = self
            .audio
            .as_ref()
            .is_some_and(|a| (a.codec == "opus") == opus);
        if !matches {
            self.dropped += 1;
            return Ok(None);
        }
        let pts_us = self.micros(timestamp_ms, 0);
        Ok(Some(Event::Frame(
            MediaKind::Audio,
            Frame {
                pts_us,
                keyframe: true,
                payload: Bytes::copy_from_slice(data),
            },
        )))
    }
}

/// The video track configuration of an `avcC` record ([`crate::info::avc_video_info`]).
pub(crate) fn video_info(
    config: &AvcConfig,
    framerate_hint: Option<f64>,
) -> Result<VideoInfo, FlvError> {
    Ok(crate::info::avc_video_info(config, framerate_hint)?)
}

/// The track configuration of an AAC `AudioSpecificConfig`.
pub(crate) fn aac_info(asc: &[u8]) -> Result<AudioInfo, FlvError> {
    let config = AudioSpecificConfig::parse(asc)?;
    if !config.webcodecs_decodable() {
        return Err(FlvError::Unsupported(format!(
            "AAC object type {} (browsers decode AAC-LC, HE-AAC and HE-AAC v2)",
            config.object_type
        )));
    }
    let channels = config.channels().ok_or_else(|| {
        FlvError::Unsupported("AAC with a program config element (channel configuration 0)".into())
    })?;
    Ok(AudioInfo {
        codec: config.codec_string(),
        sample_rate: config.sample_rate,
        channels,
        description: Some(asc.to_vec()),
        bitrate: None,
    })
}

/// The track configuration of an `OpusHead` (RFC 7845 §5.1): Opus always decodes at 48 kHz.
pub(crate) fn opus_info(head: &[u8]) -> Result<AudioInfo, FlvError> {
    if head.len() < 19 {
        return Err(FlvError::Incomplete);
    }
    if &head[..8] != b"OpusHead" {
        return Err(FlvError::Malformed(
            "Opus sequence start is not an OpusHead",
        ));
    }
    if head[8] & 0xf0 != 0 {
        return Err(FlvError::Unsupported(format!(
            "OpusHead version {}",
            head[8]
        )));
    }
    let channels = head[9];
    if channels == 0 {
        return Err(FlvError::Malformed("OpusHead with 0 channels"));
    }
    Ok(AudioInfo {
        codec: "opus".into(),
        sample_rate: 48_000,
        channels: u32::from(channels),
        description: Some(head.to_vec()),
        bitrate: None,
    })
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

    fn avcc_record(length_size: u8) -> Vec<u8> {
        let mut config = AvcConfig::from_parameter_sets([SPS, PPS]).unwrap();
        config.length_size = length_size;
        config.to_bytes()
    }

    fn video_tag(first: u8, packet_type: u8, cts: i32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![first, packet_type];
        v.extend_from_slice(&cts.to_be_bytes()[1..]);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn legacy_avc_sequence_header_and_frames_repackage_to_avcc4() {
        let mut r = Repackager::new();
        let header = video_tag(0x17, 0, 0, &avcc_record(2));
        let Some(Event::VideoConfig(info)) = r.video(0, &header).unwrap() else {
            panic!("no video config");
        };
        assert_eq!(info.codec, "avc1.42c00d");
        assert_eq!((info.width, info.height), (320, 240));
        let record = AvcConfig::parse(&info.avcc).unwrap();
        assert_eq!(record.length_size, 4, "tracks carry 4-byte lengths");
        // Repeating the same header makes no event.
        assert_eq!(r.video(0, &header).unwrap(), None);

        // An IDR slice with a 2-byte length, presented 66 ms after its decode time 1000.
        let idr = [0x65, 0x88, 0x84];
        let mut nal = vec![0, 3];
        nal.extend_from_slice(&idr);
        let tag = video_tag(0x17, 1, 66, &nal);
        let Some(Event::Frame(MediaKind::Video, frame)) = r.video(1000, &tag).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(frame.pts_us, 1_066_000);
        assert!(frame.keyframe);
        assert_eq!(&frame.payload[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);

        // A B-frame: negative composition offsets sign-extend.
        let p = [0x41, 0x9a];
        let tag = video_tag(0x27, 1, -33, &[0, 2, p[0], p[1]]);
        let Some(Event::Frame(_, frame)) = r.video(1100, &tag).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(frame.pts_us, 1_067_000);
        assert!(!frame.keyframe);
    }

    #[test]
    fn frames_before_the_sequence_header_are_dropped_and_counted() {
        let mut r = Repackager::new();
        let tag = video_tag(0x17, 1, 0, &[0, 0, 0, 1, 0x65]);
        assert_eq!(r.video(0, &tag).unwrap(), None);
        assert_eq!(r.audio(0, &[0xaf, 1, 0x21]).unwrap(), None);
        assert_eq!(r.dropped(), 2);
    }

    #[test]
    fn enhanced_rtmp_avc1_is_read_and_other_fourccs_are_refused_by_name() {
        let mut r = Repackager::new();
        let mut header = vec![0x80 | 0x10, b'a', b'v', b'c', b'1'];
        header.extend_from_slice(&avcc_record(4));
        assert!(matches!(
            r.video(0, &header).unwrap(),
            Some(Event::VideoConfig(_))
        ));
        // CodedFramesX: no composition time.
        let mut frame = vec![0x80 | 0x10 | 3, b'a', b'v', b'c', b'1'];
        frame.extend_from_slice(&[0, 0, 0, 2, 0x65, 0x01]);
        let Some(Event::Frame(_, f)) = r.video(40, &frame).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(f.pts_us, 40_000);

        let hevc = [0x80 | 0x10, b'h', b'v', b'c', b'1', 1, 2, 3];
        let err = parse_video(&hevc).unwrap_err();
        assert!(
            matches!(&err, FlvError::Unsupported(m) if m.contains("HEVC")),
            "{err}"
        );
        assert!(matches!(
            parse_video(&[0x12, 0, 0]),
            Err(FlvError::Unsupported(_))
        ));
    }

    #[test]
    fn aac_sequence_header_and_frames() {
        let mut r = Repackager::new();
        let Some(Event::AudioConfig(info)) = r.audio(0, &[0xaf, 0, 0x11, 0x90]).unwrap() else {
            panic!("no audio config");
        };
        assert_eq!(info.codec, "mp4a.40.2");
        assert_eq!((info.sample_rate, info.channels), (48_000, 2));
        assert_eq!(info.description.as_deref(), Some(&[0x11, 0x90][..]));
        let Some(Event::Frame(MediaKind::Audio, f)) = r.audio(21, &[0xaf, 1, 0xde, 0xad]).unwrap()
        else {
            panic!("no frame");
        };
        assert_eq!((f.pts_us, &f.payload[..]), (21_000, &[0xde, 0xad][..]));
        // MP3 is refused by name.
        let err = r.audio(0, &[0x2f, 0xff]).unwrap_err();
        assert!(err.to_string().contains("MP3"), "{err}");
    }

    #[test]
    fn enhanced_rtmp_opus_is_carried_with_its_opushead() {
        let mut r = Repackager::new();
        let mut start = vec![0x90, b'O', b'p', b'u', b's'];
        start.extend_from_slice(&opus_head(2, 312, 48_000));
        let Some(Event::AudioConfig(info)) = r.audio(0, &start).unwrap() else {
            panic!("no config");
        };
        assert_eq!((info.codec.as_str(), info.channels), ("opus", 2));
        let frame = [0x91, b'O', b'p', b'u', b's', 0xfc, 0xff];
        assert!(matches!(
            r.audio(20, &frame).unwrap(),
            Some(Event::Frame(MediaKind::Audio, _))
        ));
    }

    #[test]
    fn short_bodies_need_more_bytes_and_bad_ones_are_malformed() {
        assert_eq!(parse_video(&[]), Err(FlvError::Incomplete));
        assert_eq!(parse_video(&[0x17, 1, 0]), Err(FlvError::Incomplete));
        assert_eq!(parse_video(&[0x80, b'a', b'v']), Err(FlvError::Incomplete));
        assert!(matches!(
            parse_video(&[0x17, 9, 0, 0, 0]),
            Err(FlvError::Malformed(_))
        ));
        assert_eq!(parse_audio(&[0xaf]), Err(FlvError::Incomplete));
        assert!(matches!(
            parse_audio(&[0xaf, 7]),
            Err(FlvError::Malformed(_))
        ));
        let mut r = Repackager::new();
        r.video(0, &video_tag(0x17, 0, 0, &avcc_record(4))).unwrap();
        // A NAL unit longer than the body.
        assert_eq!(
            r.video(0, &video_tag(0x17, 1, 0, &[0, 0, 0, 9, 0x65])),
            Err(FlvError::Incomplete)
        );
        // A truncated avcC record.
        let record = avcc_record(4);
        assert_eq!(
            Repackager::new().video(0, &video_tag(0x17, 0, 0, &record[..record.len() - 1])),
            Err(FlvError::Incomplete)
        );
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary_and_small_steps_back() {
        let mut u = Unwrap::default();
        assert_eq!(u.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(u.extend(2), i64::from(u32::MAX) + 3);
    }

    #[test]
    fn the_sps_frame_rate_wins_and_the_metadata_hint_fills_in() {
        let mut r = Repackager::new();
        r.set_framerate_hint(25.0);
        r.set_framerate_hint(f64::NAN);
        assert_eq!(r.framerate_hint, Some(25.0), "NaN is ignored");
        // This SPS says 30 fps in its VUI: that wins over the hint.
        let Some(Event::VideoConfig(info)) =
            r.video(0, &video_tag(0x17, 0, 0, &avcc_record(4))).unwrap()
        else {
            panic!("no config");
        };
        assert_eq!(info.framerate, 30.0);
    }
}

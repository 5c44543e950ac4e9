//! Received frames written into a playable MP4, without re-encoding.
//!
//! [`Mp4Recorder`] remuxes with FFmpeg's `mp4` muxer: H.264 (AVCC samples, the `avcC` record as
//! extradata), Opus (`OpusHead` extradata, written as `dOps`) or AAC (`AudioSpecificConfig`).
//!
//! * **Start:** video is skipped until its first keyframe. The file's time 0 is the earliest
//!   first timestamp among the tracks: the recorder holds frames back (a bounded number) until
//!   every track has started, so a track that starts a little later keeps its offset.
//! * **Decode timestamps:** frames of each kind arrive in decode order with presentation times
//!   only. Audio has dts = pts. For video the dts is derived as FFmpeg's muxer does, from a
//!   reorder depth read from the SPS (`max_num_reorder_frames`; 0 for Baseline; 2 when the SPS
//!   does not say): with B-frames the dts runs that many frames behind. Timestamps that would go
//!   backwards are nudged forward, so the file's dts is strictly increasing.
//! * **Durations:** each sample lasts until the next one of its track (one frame is held back),
//!   the last one as long as the one before.
//! * **Robustness:** the file is a fragmented MP4 (a fragment per video keyframe, or per second
//!   of audio-only media), so what was written before a crash stays playable; `finish` (or,
//!   failing that, `Drop`) writes the trailer with the index.

use std::path::{Path, PathBuf};

use ffmpeg::codec;
use ffmpeg::{format, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use moqcast_client::ffmpeg::{audio_parameters, video_parameters, CodecError};
use moqcast_media::h264::{AvcConfig, H264Error};
use moqcast_media::{Frame, MediaKind};

use moqcast_client::info::{AudioInfo, VideoInfo};

/// Frames held back while waiting for every track's first frame, before giving up waiting.
const MAX_PENDING_FRAMES: usize = 600;
/// Microseconds per second.
const US: i64 = 1_000_000;

/// Why a recording could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Neither a video nor an audio track was given.
    #[error("nothing to record: no video or audio track")]
    NoTracks,
    /// The output file could not be created or its header written.
    #[error("could not create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: ffmpeg::Error,
    },
    /// A codec the recorder cannot put in an MP4.
    #[error("cannot record {kind} codec {codec:?} into MP4 (H.264, Opus and AAC are supported)")]
    UnsupportedCodec { kind: &'static str, codec: String },
    /// The track's decoder configuration is missing or broken.
    #[error("bad {kind} decoder configuration: {reason}")]
    Config { kind: &'static str, reason: String },
    /// A frame for a track the recorder was not created with.
    #[error("this recording has no {0:?} track")]
    NoSuchTrack(MediaKind),
    /// Writing to the file failed.
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: ffmpeg::Error,
    },
}

impl From<CodecError> for RecordError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::UnsupportedCodec { kind, codec } => {
                RecordError::UnsupportedCodec { kind, codec }
            }
            CodecError::Config { kind, reason } => RecordError::Config { kind, reason },
            // `CodecError` is non-exhaustive: a future variant is a configuration problem.
            other => RecordError::Config {
                kind: "codec",
                reason: other.to_string(),
            },
        }
    }
}

impl From<H264Error> for RecordError {
    fn from(e: H264Error) -> Self {
        RecordError::Config {
            kind: "H.264",
            reason: e.to_string(),
        }
    }
}

/// Writes frames of one video and/or one audio track into an MP4 file; see the
/// [module documentation](self).
pub struct Mp4Recorder {
    path: PathBuf,
    /// `None` once the trailer has been written.
    octx: Option<format::context::Output>,
    video: Option<Track>,
    audio: Option<Track>,
    /// Presentation time (µs) that becomes the file's 0, once chosen.
    base_us: Option<i64>,
    /// Frames held until every track has started.
    pending: Vec<(MediaKind, Frame)>,
}

/// Per-track muxing state. Timestamps are in the stream's time base.
struct Track {
    index: usize,
    tb: Rational,
    /// Video waits for a keyframe; audio starts with any frame.
    started: bool,
    /// Frames whose pts may precede an earlier frame's (0 for audio).
    reorder_depth: usize,
    /// FFmpeg's `pts_buffer`: the largest `reorder_depth + 1` pts seen, ascending.
    pts_buffer: Vec<i64>,
    /// Duration of a frame before any has been measured.
    default_duration: i64,
    last_duration: Option<i64>,
    last_dts: Option<i64>,
    /// The previous sample, written once the next one tells its duration.
    held: Option<Sample>,
}

struct Sample {
    pts: i64,
    dts: i64,
    keyframe: bool,
    payload: bytes::Bytes,
}

impl Mp4Recorder {
    /// Creates `path` (overwriting it) with the given tracks and writes the MP4 header.
    pub fn create(
        path: &Path,
        video: Option<&VideoInfo>,
        audio: Option<&AudioInfo>,
    ) -> Result<Self, RecordError> {
        if video.is_none() && audio.is_none() {
            return Err(RecordError::NoTracks);
        }
        let create_error = |source| RecordError::Create {
            path: path.to_path_buf(),
            source,
        };
        // ffmpeg-next panics on paths that are not UTF-8 or hold a NUL byte.
        if path.to_str().is_none_or(|p| p.contains('\0')) {
            return Err(create_error(ffmpeg::Error::InvalidData));
        }
        let _ = ffmpeg::init();
        // Check the configurations before creating the file.
        let video_params = video.map(video_parameters).transpose()?;
        let audio_params = audio.map(audio_parameters).transpose()?;

        let mut octx = format::output_as(path, "mp4").map_err(create_error)?;
        let mut add = |params: codec::Parameters, tb: Rational| -> Result<usize, RecordError> {
            let mut stream = octx
                .add_stream(Option::<codec::codec::Codec>::None)
                .map_err(create_error)?;
            stream.set_parameters(params);
            stream.set_time_base(tb);
            Ok(stream.index())
        };
        let video_index = match video_params {
            Some(params) => Some(add(params, Rational(1, 90_000))?),
            None => None,
        };
        let audio_index = match audio_params {
            Some(params) => {
                let rate = audio.map_or(48_000, |a| a.sample_rate).max(1);
                Some(add(params, Rational(1, rate as i32))?)
            }
            None => None,
        };

        let mut opts = Dictionary::new();
        // Fragmented: everything written so far stays playable if the process dies.
        if video.is_some() {
            opts.set("movflags", "+frag_keyframe+empty_moov+default_base_moof");
        } else {
            opts.set("movflags", "+empty_moov+default_base_moof");
            opts.set("frag_duration", &US.to_string());
        }
        octx.write_header_with(opts).map_err(create_error)?;

        // The muxer may have changed the time bases.
        let track = |index: usize, reorder_depth: usize, default_duration_us: i64| {
            let tb = octx
                .stream(index)
                .map_or(Rational(1, 90_000), |s| s.time_base());
            Track {
                index,
                tb,
                started: false,
                reorder_depth,
                pts_buffer: Vec::new(),
                default_duration: us_to_ts(default_duration_us, tb).max(1),
                last_duration: None,
                last_dts: None,
                held: None,
            }
        };
        let video_track = video_index.zip(video).map(|(index, info)| {
            let depth = video_params_depth(info);
            let fps = if info.framerate > 0.0 {
                info.framerate
            } else {
                30.0
            };
            track(index, depth, (US as f64 / fps).round() as i64)
        });
        let audio_track = audio_index.zip(audio).map(|(index, info)| {
            let samples = if info.codec == "opus" { 960 } else { 1024 };
            let rate = i64::from(info.sample_rate.max(1));
            track(index, 0, samples * US / rate)
        });
        Ok(Mp4Recorder {
            path: path.to_path_buf(),
            octx: Some(octx),
            video: video_track,
            audio: audio_track,
            base_us: None,
            pending: Vec::new(),
        })
    }

    /// Adds one frame. Frames of each kind must come in decode order.
    pub fn write(&mut self, kind: MediaKind, frame: &Frame) -> Result<(), RecordError> {
        if self.track_mut(kind).is_none() {
            return Err(RecordError::NoSuchTrack(kind));
        }
        if self.base_us.is_some() {
            return self.write_frame(kind, frame.clone());
        }
        // Not started: hold frames until each track has its first (key)frame.
        let track = self.track_mut(kind).ok_or(RecordError::NoSuchTrack(kind))?;
        if !track.started {
            if kind == MediaKind::Video && !frame.keyframe {
                return Ok(());
            }
            track.started = true;
        }
        self.pending.push((kind, frame.clone()));
        let all_started = [&self.video, &self.audio]
            .into_iter()
            .flatten()
            .all(|t| t.started);
        if all_started || self.pending.len() >= MAX_PENDING_FRAMES {
            self.start()?;
        }
        Ok(())
    }

    /// Writes the held frames and the trailer (the MP4 index), and closes the file.
    pub fn finish(mut self) -> Result<(), RecordError> {
        self.close()
    }

    fn track_mut(&mut self, kind: MediaKind) -> Option<&mut Track> {
        match kind {
            MediaKind::Video => self.video.as_mut(),
            MediaKind::Audio => self.audio.as_mut(),
        }
    }

    /// Chooses the file's time 0 and writes the frames held so far.
    fn start(&mut self) -> Result<(), RecordError> {
        let pending = std::mem::take(&mut self.pending);
        let base = pending.iter().map(|(_, f)| f.pts_us).min().unwrap_or(0);
        self.base_us = Some(i64::try_from(base).unwrap_or(i64::MAX));
        for (kind, frame) in pending {
            self.write_frame(kind, frame)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, kind: MediaKind, frame: Frame) -> Result<(), RecordError> {
        let base = self.base_us.unwrap_or(0);
        let Some(track) = self.track_mut(kind) else {
            return Err(RecordError::NoSuchTrack(kind));
        };
        let rel_us = i64::try_from(frame.pts_us)
            .unwrap_or(i64::MAX)
            .saturating_sub(base);
        if kind == MediaKind::Video {
            // Skip video until a keyframe (the track may only start after the base was chosen).
            let starts_here = frame.keyframe && rel_us >= 0;
            if !track.started && !starts_here {
                return Ok(());
            }
            track.started = true;
        } else if rel_us < 0 {
            // Audio from before the file's start.
            return Ok(());
        }
        let mut pts = us_to_ts(rel_us.max(0), track.tb);
        let mut dts = track.derive_dts(pts);
        if let Some(last) = track.last_dts {
            dts = dts.max(last + 1);
        }
        pts = pts.max(dts);
        track.last_dts = Some(dts);
        let sample = Sample {
            pts,
            dts,
            keyframe: frame.keyframe || kind == MediaKind::Audio,
            payload: frame.payload,
        };
        let previous = track.held.replace(sample);
        let index = track.index;
        if let Some(previous) = previous {
            let duration = (dts - previous.dts).max(1);
            track.last_duration = Some(duration);
            self.write_sample(index, previous, duration)?;
        }
        Ok(())
    }

    fn write_sample(
        &mut self,
        index: usize,
        sample: Sample,
        duration: i64,
    ) -> Result<(), RecordError> {
        let Some(octx) = self.octx.as_mut() else {
            return Ok(());
        };
        let mut packet = Packet::copy(&sample.payload);
        packet.set_stream(index);
        packet.set_pts(Some(sample.pts));
        packet.set_dts(Some(sample.dts));
        packet.set_duration(duration);
        if sample.keyframe {
            packet.set_flags(codec::packet::Flags::KEY);
        }
        packet
            .write_interleaved(octx)
            .map_err(|source| RecordError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes everything and writes the trailer; idempotent.
    fn close(&mut self) -> Result<(), RecordError> {
        if self.octx.is_none() {
            return Ok(());
        }
        if self.base_us.is_none() && !self.pending.is_empty() {
            self.start()?;
        }
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let Some(track) = self.track_mut(kind) else {
                continue;
            };
            let held = track.held.take();
            let duration = track.last_duration.unwrap_or(track.default_duration);
            let index = track.index;
            if let Some(sample) = held {
                self.write_sample(index, sample, duration)?;
            }
        }
        let Some(mut octx) = self.octx.take() else {
            return Ok(());
        };
        octx.write_trailer().map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Mp4Recorder {
    /// Without [`Mp4Recorder::finish`], still tries to write the trailer (errors are logged).
    fn drop(&mut self) {
        if self.octx.is_some() {
            if let Err(error) = self.close() {
                tracing::warn!(%error, path = %self.path.display(), "could not finish the recording");
            }
        }
    }
}

impl Track {
    /// The decode timestamp for the next frame, whose presentation time is `pts`: with a reorder
    /// depth of `d`, the smallest of the `d + 1` largest pts so far (FFmpeg's
    /// `compute_muxer_pkt_fields`), with the first frame's missing history extrapolated.
    fn derive_dts(&mut self, pts: i64) -> i64 {
        let depth = self.reorder_depth;
        if depth == 0 {
            return pts;
        }
        if self.pts_buffer.is_empty() {
            // As if `depth` frames of default duration had come before.
            self.pts_buffer = (0..=depth)
                .map(|i| pts - (depth - i) as i64 * self.default_duration - self.default_duration)
                .collect();
        }
        self.pts_buffer[0] = pts;
        for i in 0..depth {
            if self.pts_buffer[i] > self.pts_buffer[i + 1] {
                self.pts_buffer.swap(i, i + 1);
            } else {
                break;
            }
        }
        self.pts_buffer[0]
    }
}

fn video_params_depth(info: &VideoInfo) -> usize {
    AvcConfig::parse(&info.avcc)
        .ok()
        .and_then(|c| c.sps_info().ok())
        .and_then(|sps| sps.reorder_depth())
        .map_or(2, |d| d.min(16) as usize)
}

/// `us` microseconds in time base `tb`, rounded to nearest.
fn us_to_ts(us: i64, tb: Rational) -> i64 {
    let num = i128::from(tb.numerator()) * i128::from(US);
    if num == 0 {
        return 0;
    }
    let n = i128::from(us) * i128::from(tb.denominator());
    let q = (n + num / 2).div_euclid(num);
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, Input, Source};
    use std::process::Command;

    // One temporary-directory helper for the crate's tests.
    use crate::ingest::tests::TempDir;

    /// `ffprobe -count_frames -show_streams` as key=value lines, one map per stream.
    fn probe(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
        let output = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-of",
                "flat=s=_",
            ])
            .arg(path)
            .output()
            .expect("the ffprobe program is installed");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let mut streams: Vec<std::collections::HashMap<String, String>> = Vec::new();
        for line in text.lines() {
            // streams_stream_0_codec_name="h264"
            let Some(rest) = line.strip_prefix("streams_stream_") else {
                continue;
            };
            let (index, kv) = rest.split_once('_').unwrap();
            let index: usize = index.parse().unwrap();
            let (key, value) = kv.split_once('=').unwrap();
            if streams.len() <= index {
                streams.resize_with(index + 1, Default::default);
            }
            streams[index].insert(key.to_string(), value.trim_matches('"').to_string());
        }
        streams
    }

    fn num(stream: &std::collections::HashMap<String, String>, key: &str) -> f64 {
        stream
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {key} in {stream:?}"))
    }

    /// Records `seconds` of the test source (started `skip` frames in) to `path`.
    fn record_test_source(path: &Path, seconds: u64, skip: usize, finish: bool) {
        let mut source = Source::open(IngestOptions {
            input: Input::TestSrc,
            looping: false,
            realtime: false,
        })
        .unwrap();
        let info = source.info().clone();
        let mut recorder =
            Mp4Recorder::create(path, info.video.as_ref(), info.audio.as_ref()).unwrap();
        let mut n = 0;
        let mut first = None;
        while let Some((kind, frame)) = source.next().unwrap() {
            n += 1;
            if n <= skip {
                continue;
            }
            let first = *first.get_or_insert(frame.pts_us);
            if frame.pts_us >= first + seconds * 1_000_000 {
                break;
            }
            recorder.write(kind, &frame).unwrap();
        }
        if finish {
            recorder.finish().unwrap();
        }
    }

    #[test]
    fn records_test_source_to_playable_mp4() {
        let dir = TempDir::new("testsrc");
        let path = dir.0.join("out.mp4");
        record_test_source(&path, 3, 0, true);
        let streams = probe(&path);
        assert_eq!(streams.len(), 2, "{streams:?}");
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
        assert_eq!(video["codec_name"], "h264");
        assert_eq!((num(video, "width"), num(video, "height")), (640.0, 360.0));
        let frames = num(video, "nb_read_frames");
        assert!((89.0..=91.0).contains(&frames), "{frames} video frames");
        let duration = num(video, "duration");
        assert!((2.9..=3.1).contains(&duration), "video duration {duration}");
        assert_eq!(audio["codec_name"], "opus");
        assert_eq!(num(audio, "sample_rate"), 48_000.0);
        let packets = num(audio, "nb_read_frames");
        assert!((148.0..=151.0).contains(&packets), "{packets} audio frames");
        let duration = num(audio, "duration");
        assert!((2.9..=3.1).contains(&duration), "audio duration {duration}");
    }

    #[test]
    fn mid_stream_start_skips_to_a_keyframe_and_drop_still_finishes() {
        let dir = TempDir::new("midstream");
        let path = dir.0.join("mid.mp4");
        // Start 20 frames in (not on a keyframe), and never call finish.
        record_test_source(&path, 2, 20, false);
        let streams = probe(&path);
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        let frames = num(video, "nb_read_frames");
        // The first keyframe comes at 1 s of the source: about 1 s of video remains.
        assert!((25.0..=50.0).contains(&frames), "{frames} video frames");
        assert!(streams.iter().any(|s| s["codec_type"] == "audio"));
    }

    #[test]
    fn h264_with_b_frames_records_and_decodes_cleanly() {
        let dir = TempDir::new("bframes");
        let input = dir.0.join("in.ts");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .args(["testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i"])
            .args([
                "sine=frequency=300:sample_rate=48000",
                "-t",
                "2",
                "-c:v",
                "libx264",
            ])
            .args(["-preset", "veryfast", "-bf", "3", "-g", "30", "-c:a", "aac"])
            .arg(&input)
            .status()
            .unwrap();
        assert!(status.success());
        let path = dir.0.join("out.mp4");
        let mut source = Source::open(IngestOptions {
            input: Input::File(input),
            looping: false,
            realtime: false,
        })
        .unwrap();
        let info = source.info().clone();
        let mut recorder =
            Mp4Recorder::create(&path, info.video.as_ref(), info.audio.as_ref()).unwrap();
        while let Some((kind, frame)) = source.next().unwrap() {
            recorder.write(kind, &frame).unwrap();
        }
        recorder.finish().unwrap();

        let streams = probe(&path);
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(num(video, "nb_read_frames"), 60.0);
        let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
        assert_eq!(audio["codec_name"], "aac");
        // Every frame decodes, without FFmpeg complaining about timestamps or references.
        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn recorder_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Mp4Recorder>();
    }

    #[test]
    fn derived_dts_for_reordered_frames() {
        let mut track = Track {
            index: 0,
            tb: Rational(1, 90_000),
            started: true,
            reorder_depth: 2,
            pts_buffer: Vec::new(),
            default_duration: 3000,
            last_duration: None,
            last_dts: None,
            held: None,
        };
        // I P B B P B B (decode order) with pts in frames of 3000.
        let pts = [0, 9000, 3000, 6000, 18000, 12000, 15000];
        let dts: Vec<i64> = pts.iter().map(|&p| track.derive_dts(p)).collect();
        assert!(dts.windows(2).all(|w| w[0] < w[1]), "{dts:?}");
        assert!(dts.iter().zip(pts).all(|(&d, p)| d <= p), "{dts:?}");
        assert_eq!(dts, vec![-6000, -3000, 0, 3000, 6000, 9000, 12000]);
    }

    #[test]
    fn rejects_unsupported_input() {
        let dir = TempDir::new("reject");
        let path = dir.0.join("x.mp4");
        assert!(matches!(
            Mp4Recorder::create(&path, None, None),
            Err(RecordError::NoTracks)
        ));
        let audio = AudioInfo {
            codec: "vorbis".into(),
            sample_rate: 48_000,
            channels: 2,
            description: None,
            bitrate: None,
        };
        assert!(matches!(
            Mp4Recorder::create(&path, None, Some(&audio)),
            Err(RecordError::UnsupportedCodec { .. })
        ));
        let video = VideoInfo {
            codec: "avc1.64001f".into(),
            width: 1,
            height: 1,
            framerate: 30.0,
            avcc: vec![1, 2, 3],
            bitrate: None,
        };
        assert!(matches!(
            Mp4Recorder::create(&path, Some(&video), None),
            Err(RecordError::Config { .. })
        ));
        assert!(!path.exists());
    }
}

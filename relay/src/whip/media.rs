//! What a WHIP session's depacketized media becomes: track configurations and LOC frames for
//! the push-ingest core ([`crate::push`]). Plain logic, no I/O, time passed in.
//!
//! * **H.264**: str0m hands over whole access units in Annex-B (start codes), with SPS and PPS
//!   before each keyframe. The parameter sets give the track configuration (a new
//!   [`Event::VideoConfig`] when they change); the access unit leaves as 4-byte AVCC, access
//!   unit delimiters dropped, as the MPEG-TS ingest does ([`moqcast_media::ts`]).
//! * **Opus**: one RTP payload is one Opus packet; WebRTC always signals `opus/48000/2`, so the
//!   track is stereo at 48 kHz with an `OpusHead` of pre-skip 0 (RTP timestamps are playout
//!   times already).
//! * **Timestamps** ([`TrackClock`]): each track's RTP clock (90 kHz video, 48 kHz audio,
//!   extended to 64 bits by str0m) is anchored once, at its first frame, on one session
//!   timeline: by the sender's RTCP sender report (NTP time of an RTP time, RFC 3550 §6.4.1)
//!   when one arrived before that frame, so audio and video line up as the sender captured
//!   them; else by the frame's arrival time. After the anchor a track advances by its RTP clock
//!   alone, so its timestamps are exactly as spaced as the sender's (no jitter from later
//!   reports or arrival times). Frames that would fall before the timeline's start are dropped.
//! * Audio that arrives before the first video configuration (when the offer has video) is held
//!   back, at most [`MAX_HELD`] frames, so that the broadcast's first catalog names both tracks.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use moqcast_media::{
    flv::Event,
    h264::{self, AvcConfig, H264Error},
    info::{self, AudioInfo},
    Frame, MediaKind,
};

/// Most frames held back while the video configuration is awaited (about 2 s of Opus).
pub const MAX_HELD: usize = 100;

/// What the sender's most recent RTCP sender report says: this RTP time was this wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    pub ntp: SystemTime,
    pub rtp: u64,
}

/// The session's timeline: where its time 0 is.
#[derive(Debug, Default)]
pub struct Timeline {
    origin: Option<Origin>,
}

#[derive(Debug, Clone, Copy)]
struct Origin {
    arrival: Instant,
    /// The sender's wall time at 0, when the first anchored frame had a sender report.
    ntp_us: Option<i128>,
}

fn ntp_us(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    }
}

/// One track's RTP clock on the session's [`Timeline`]; see the [module documentation](self).
#[derive(Debug)]
pub struct TrackClock {
    rate: u32,
    /// The RTP time of the first frame, and its place on the timeline (microseconds).
    base: Option<(u64, i128)>,
    /// Whether the anchor came from a sender report (else from the arrival time).
    by_report: bool,
}

impl TrackClock {
    /// A clock of `rate` Hz (90 000 for video, 48 000 for Opus).
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            base: None,
            by_report: false,
        }
    }

    /// How the track was anchored: `Some(true)` by a sender report, `Some(false)` by arrival,
    /// `None` not yet.
    pub fn anchored_by_report(&self) -> Option<bool> {
        self.base.map(|_| self.by_report)
    }

    fn micros(&self, ticks: i128) -> i128 {
        ticks * 1_000_000 / i128::from(self.rate)
    }

    /// The timeline time (microseconds) of the frame at RTP time `rtp` that arrived at
    /// `arrival`, with the sender's latest report `report`; `None` before the timeline's start.
    pub fn map(
        &mut self,
        timeline: &mut Timeline,
        rtp: u64,
        arrival: Instant,
        report: Option<SenderClock>,
    ) -> Option<u64> {
        let (base_rtp, base_us) = match self.base {
            Some(b) => b,
            None => {
                let wall = report
                    .map(|r| ntp_us(r.ntp) + self.micros(i128::from(rtp) - i128::from(r.rtp)));
                let origin = *timeline.origin.get_or_insert(Origin {
                    arrival,
                    ntp_us: wall,
                });
                let us = match (wall, origin.ntp_us) {
                    (Some(w), Some(o)) => {
                        self.by_report = true;
                        w - o
                    }
                    _ => arrival
                        .saturating_duration_since(origin.arrival)
                        .as_micros() as i128,
                };
                *self.base.insert((rtp, us))
            }
        };
        let us = base_us + self.micros(i128::from(rtp) - i128::from(base_rtp));
        u64::try_from(us).ok()
    }
}

/// The audio track configuration of WebRTC Opus (`opus/48000/2`).
pub fn opus_info() -> AudioInfo {
    AudioInfo {
        codec: "opus".into(),
        sample_rate: 48_000,
        channels: 2,
        description: Some(info::opus_head(2, 0, 48_000)),
        bitrate: None,
    }
}

/// Why a frame of a session was not turned into an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    #[error("H.264: {0}")]
    H264(#[from] H264Error),
    #[error("an H.264 access unit without NAL units")]
    Empty,
}

/// Turns one WHIP session's depacketized frames into push-ingest events; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct Depacketizer {
    timeline: Timeline,
    video_clock: TrackClock,
    audio_clock: TrackClock,
    avc: Option<AvcConfig>,
    audio_announced: bool,
    /// The offer has video: audio waits (bounded) for its configuration.
    expects_video: bool,
    held: Vec<Event>,
    /// Frames dropped: before the timeline's start, video before its configuration, audio held
    /// past [`MAX_HELD`].
    pub dropped: u64,
}

impl Depacketizer {
    pub fn new(expects_video: bool) -> Self {
        Self {
            timeline: Timeline::default(),
            video_clock: TrackClock::new(90_000),
            audio_clock: TrackClock::new(48_000),
            avc: None,
            audio_announced: false,
            expects_video,
            held: Vec::new(),
            dropped: 0,
        }
    }

    /// How the video and audio tracks were anchored ([`TrackClock::anchored_by_report`]).
    pub fn anchors(&self) -> (Option<bool>, Option<bool>) {
        (
            self.video_clock.anchored_by_report(),
            self.audio_clock.anchored_by_report(),
        )
    }

    /// Whether the video configuration (SPS and PPS) has arrived.
    pub fn has_video_config(&self) -> bool {
        self.avc.is_some()
    }

    /// One H.264 access unit (Annex-B) at RTP time `rtp` (90 kHz). Returns whether it was a
    /// keyframe.
    pub fn h264(
        &mut self,
        data: &[u8],
        rtp: u64,
        arrival: Instant,
        report: Option<SenderClock>,
        events: &mut Vec<Event>,
    ) -> Result<bool, MediaError> {
        let sets = h264::annexb_nals(data)
            .filter(|n| matches!(h264::nal_type(n), Some(h264::NAL_SPS | h264::NAL_PPS)));
        match AvcConfig::from_parameter_sets(sets) {
            Ok(config) if self.avc.as_ref() != Some(&config) => {
                let info = info::avc_video_info(&config, None)?;
                self.avc = Some(config);
                events.push(Event::VideoConfig(info));
            }
            Ok(_) | Err(H264Error::Incomplete) => {}
            Err(e) => return Err(e.into()),
        }
        let mut payload = Vec::with_capacity(data.len() + 16);
        let mut keyframe = false;
        for nal in h264::annexb_nals(data) {
            match h264::nal_type(nal) {
                Some(h264::NAL_AUD) => continue,
                Some(h264::NAL_IDR) => keyframe = true,
                _ => {}
            }
            h264::push_avcc_nal(&mut payload, nal);
        }
        if payload.is_empty() {
            return Err(MediaError::Empty);
        }
        if self.avc.is_none() {
            self.dropped += 1;
            return Ok(keyframe);
        }
        let Some(pts_us) = self
            .video_clock
            .map(&mut self.timeline, rtp, arrival, report)
        else {
            self.dropped += 1;
            return Ok(keyframe);
        };
        // The held audio goes first, in arrival order, once video can be written.
        events.append(&mut self.held);
        events.push(Event::Frame(
            MediaKind::Video,
            Frame {
                pts_us,
                keyframe,
                payload: Bytes::from(payload),
            },
        ));
        Ok(keyframe)
    }

    /// One Opus packet at RTP time `rtp` (48 kHz).
    pub fn opus(
        &mut self,
        packet: &[u8],
        rtp: u64,
        arrival: Instant,
        report: Option<SenderClock>,
        events: &mut Vec<Event>,
    ) {
        if !self.audio_announced {
            self.audio_announced = true;
            events.push(Event::AudioConfig(opus_info()));
        }
        let Some(pts_us) = self
            .audio_clock
            .map(&mut self.timeline, rtp, arrival, report)
        else {
            self.dropped += 1;
            return;
        };
        let frame = Event::Frame(
            MediaKind::Audio,
            Frame {
                pts_us,
                keyframe: true,
                payload: Bytes::copy_from_slice(packet),
            },
        );
        if self.expects_video && self.avc.is_none() {
            if self.held.len() >= MAX_HELD {
                // No video after all this time: audio flows on its own.
                self.expects_video = false;
                events.append(&mut self.held);
                events.push(frame);
            } else {
                self.held.push(frame);
            }
            return;
        }
        events.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tracks_anchored_by_sender_reports_line_up_as_the_sender_captured_them() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut line = Timeline::default();
        let mut video = TrackClock::new(90_000);
        let mut audio = TrackClock::new(48_000);
        // Video's report: RTP 900_000 at `wall`. Its first frame is 100 ms later.
        let vr = SenderClock {
            ntp: wall,
            rtp: 900_000,
        };
        assert_eq!(video.anchored_by_report(), None);
        assert_eq!(video.map(&mut line, 909_000, t0, Some(vr)), Some(0));
        assert_eq!(video.anchored_by_report(), Some(true));
        // Audio's report: RTP 48_000 at `wall`; its first frame was captured 120 ms after it,
        // i.e. 20 ms after the first video frame, but arrives 300 ms later.
        let ar = SenderClock {
            ntp: wall,
            rtp: 48_000,
        };
        let late = t0 + Duration::from_millis(300);
        assert_eq!(
            audio.map(&mut line, 48_000 + 5_760, late, Some(ar)),
            Some(20_000)
        );
        // Then each advances by its own clock, whatever later reports or arrivals say.
        assert_eq!(
            audio.map(&mut line, 48_000 + 5_760 + 960, late, None),
            Some(40_000)
        );
        assert_eq!(
            video.map(&mut line, 909_000 + 3_000, t0, None),
            Some(33_333)
        );
        // Audio captured before the timeline's start is dropped.
        let mut early = TrackClock::new(48_000);
        assert_eq!(early.map(&mut line, 48_000, t0, Some(ar)), None);
    }

    #[test]
    fn without_reports_tracks_are_anchored_by_arrival() {
        let t0 = Instant::now();
        let mut line = Timeline::default();
        let mut video = TrackClock::new(90_000);
        let mut audio = TrackClock::new(48_000);
        assert_eq!(video.map(&mut line, 123_456_789, t0, None), Some(0));
        assert_eq!(video.anchored_by_report(), Some(false));
        let at = t0 + Duration::from_millis(50);
        assert_eq!(audio.map(&mut line, 7, at, None), Some(50_000));
        assert_eq!(audio.map(&mut line, 7 + 48_000, at, None), Some(1_050_000));
        // 64-bit RTP times past the 32-bit wrap keep counting up.
        assert_eq!(
            video.map(&mut line, 123_456_789 + (1 << 32), t0, None),
            Some((1u64 << 32) * 1_000_000 / 90_000)
        );
    }

    /// An SPS of 320x240 baseline and a PPS, as x264 writes them.
    fn parameter_sets() -> Vec<u8> {
        let sps = [
            0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
            0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
        ];
        let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
        let mut out = vec![0, 0, 0, 1];
        out.extend_from_slice(&sps);
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&pps);
        out
    }

    #[test]
    fn h264_units_give_the_configuration_and_avcc_frames_and_audio_waits_for_it() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(true);
        let mut events = Vec::new();
        // Audio first: its configuration goes, its frames wait.
        d.opus(&[0xfc, 1, 2], 0, t0, None, &mut events);
        assert!(matches!(events.as_slice(), [Event::AudioConfig(a)] if a.codec == "opus"));
        events.clear();
        // A P-frame before any SPS: dropped.
        let p = [0, 0, 0, 1, 0x41, 0x9a, 0x01];
        assert_eq!(d.h264(&p, 3_000, t0, None, &mut events), Ok(false));
        assert!(events.is_empty());
        assert_eq!(d.dropped, 1);
        // A keyframe with parameter sets and an AUD.
        let mut idr = vec![0, 0, 0, 1, 0x09, 0xf0];
        idr.extend(parameter_sets());
        idr.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0x21]);
        assert_eq!(d.h264(&idr, 6_000, t0, None, &mut events), Ok(true));
        match events.as_slice() {
            [Event::VideoConfig(v), Event::Frame(MediaKind::Audio, a), Event::Frame(MediaKind::Video, f)] =>
            {
                assert_eq!((v.width, v.height), (320, 240));
                assert!(v.codec.starts_with("avc1.42"), "{}", v.codec);
                assert_eq!(a.payload.as_ref(), &[0xfc, 1, 2]);
                assert!(f.keyframe);
                // SPS, PPS and the slice, each with a 4-byte length; no AUD.
                assert_eq!(&f.payload[..5], &[0, 0, 0, 24, 0x67]);
                assert_eq!(
                    &f.payload[f.payload.len() - 8..],
                    &[0, 0, 0, 4, 0x65, 0x88, 0x84, 0x21]
                );
            }
            other => panic!("{other:?}"),
        }
        events.clear();
        // The same parameter sets again: no new configuration.
        assert_eq!(d.h264(&idr, 9_000, t0, None, &mut events), Ok(true));
        assert!(
            matches!(events.as_slice(), [Event::Frame(MediaKind::Video, f)] if f.pts_us == 33_333)
        );
        // A unit with nothing in it is malformed.
        assert_eq!(
            d.h264(&[0, 0, 0, 1], 12_000, t0, None, &mut events),
            Err(MediaError::Empty)
        );
    }

    #[test]
    fn audio_held_for_video_is_bounded() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(true);
        let mut events = Vec::new();
        for i in 0..MAX_HELD as u64 + 1 {
            d.opus(&[0xfc], i * 960, t0, None, &mut events);
        }
        // The configuration, then every frame once the bound was reached.
        assert_eq!(events.len(), 1 + MAX_HELD + 1);
        assert!(d.held.is_empty());
    }
}

//! One continuous timeline for a recording whose publisher changes underneath it.
//!
//! A subscription can outlive its publisher: the relay hands a broadcast's viewers to a new
//! publisher when one takes the name over (and back when it leaves), and `moqcast-subscribe`
//! resubscribes after a relay restart, perhaps to a publisher that restarted too. Each
//! publisher's LOC timestamps run on its own clock, usually from 0, so the frames written into
//! one recording would jump back in time (the recorder would squeeze them into one tick each).
//!
//! [`Timeline`] maps every track's timestamps onto one timeline, without I/O:
//!
//! * A track's timestamp that falls more than [`MAX_BACK`] behind the largest one of its
//!   segment, or jumps more than [`MAX_GAP`] ahead of it, starts a new *segment* for that track.
//!   (Smaller steps back are B-frame reordering; smaller gaps are a real pause, such as the time
//!   a reconnection took, and are kept.)
//! * Video places segment `k`: its first frame there follows the last frame written of any
//!   track by one of its own frame intervals. Audio uses the same offset, so audio and video keep
//!   the sync the publisher gave them. Audio that reaches a new segment before the video (the
//!   relay hands the new publisher's newest audio group over, which may begin later or earlier
//!   than its newest video group) is dropped until the video places it, for at most
//!   [`AUDIO_WAIT`] of its own clock (then it places the segment itself, as it does in a
//!   recording without video); and audio that would go back before audio already written is
//!   dropped, so neither track is ever squeezed into a tick per frame.

use moqcast_media::MediaKind;

/// A step back larger than this (µs) is a new publisher's clock, not B-frame reordering.
pub const MAX_BACK: u64 = 1_000_000;
/// A jump ahead larger than this (µs) is a new publisher's clock, not a pause.
pub const MAX_GAP: u64 = 5_000_000;
/// The frame interval assumed until a track has shown its own (µs).
const DEFAULT_STEP: u64 = 20_000;
/// How long (µs of its own clock) audio in a new segment waits for the video to place it.
pub const AUDIO_WAIT: u64 = 3_000_000;

/// Where one track stands.
#[derive(Debug, Default, Clone, Copy)]
struct TrackClock {
    segment: usize,
    /// The largest input timestamp of the current segment.
    max_in: Option<u64>,
    /// The last output timestamp.
    last_out: Option<u64>,
    /// The last interval between two of its frames, for placing a new segment.
    step: Option<u64>,
    /// Its first input timestamp in the current segment.
    entered: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Per segment, what is added to its input timestamps (segment 0: nothing).
    offsets: Vec<i64>,
    video: TrackClock,
    audio: TrackClock,
    /// Segments begun so far (beyond the first), for logs.
    pub discontinuities: u64,
}

impl Timeline {
    /// The recording's timestamp (µs) for a frame of `kind` whose LOC timestamp is `pts`;
    /// `None`: drop the frame (audio waiting for the video to place a new segment, or audio
    /// that would go back before audio already written).
    pub fn map(&mut self, kind: MediaKind, pts: u64) -> Option<u64> {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let last_any = self.video.last_out.max(self.audio.last_out);
        let has_video = self.video.last_out.is_some();
        let clock = match kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        };
        let jumped = clock
            .max_in
            .is_some_and(|max| pts + MAX_BACK < max || pts > max.saturating_add(MAX_GAP));
        if jumped {
            clock.segment += 1;
            clock.max_in = None;
        } else if let Some(max) = clock.max_in {
            if pts > max {
                clock.step = Some(pts - max);
            }
        }
        if clock.max_in.is_none() {
            clock.entered = Some(pts);
        }
        clock.max_in = Some(clock.max_in.map_or(pts, |m| m.max(pts)));
        if self.offsets.len() <= clock.segment {
            let waited = pts.saturating_sub(clock.entered.unwrap_or(pts));
            if kind == MediaKind::Audio && has_video && waited < AUDIO_WAIT {
                return None;
            }
            // This track places the segment after everything written.
            let step = clock.step.unwrap_or(DEFAULT_STEP);
            let start = last_any.unwrap_or(0).saturating_add(step);
            while self.offsets.len() <= clock.segment {
                self.offsets.push(start as i64 - pts as i64);
            }
            self.discontinuities += 1;
        }
        let offset = self.offsets[clock.segment];
        let out = (pts as i64).saturating_add(offset).max(0) as u64;
        if kind == MediaKind::Audio && clock.last_out.is_some_and(|l| out < l) {
            return None;
        }
        clock.last_out = Some(clock.last_out.map_or(out, |l| l.max(out)));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// A take-over: publisher A's clock is at 60 s, B's starts at 0. B's frames follow A's
    /// last frame on both tracks with the same offset (in sync); when A serves again, its
    /// clock is far ahead of B's: another segment, again right after the last frame.
    #[test]
    fn a_new_publishers_clock_continues_after_the_last_frame_and_keeps_sync() {
        let mut t = Timeline::default();
        let mut out = Vec::new();
        for i in 0..30 {
            out.push(t.map(MediaKind::Video, 60_000 * MS + i * 33 * MS).unwrap());
            out.push(t.map(MediaKind::Audio, 60_000 * MS + i * 20 * MS).unwrap());
        }
        assert_eq!(out[0], 60_000 * MS, "the first segment is kept as it is");
        let last = *out.iter().max().unwrap();
        // B: video first, then audio (in flight a little longer).
        let bv = t.map(MediaKind::Video, 0).unwrap();
        assert_eq!(bv, last + 33 * MS);
        let late_a_audio = t.map(MediaKind::Audio, 60_000 * MS + 600 * MS).unwrap();
        assert_eq!(
            late_a_audio,
            60_600 * MS,
            "A's audio in flight is still A's"
        );
        let ba = t.map(MediaKind::Audio, 10 * MS).unwrap();
        assert_eq!(ba, bv + 10 * MS, "B's audio keeps B's sync with its video");
        assert_eq!(t.discontinuities, 1);
        // A serves again, its clock 3 s on from where it left.
        let mut b_last = bv;
        for i in 1..90 {
            b_last = t.map(MediaKind::Video, i * 33 * MS).unwrap();
        }
        assert_eq!(b_last, bv + 89 * 33 * MS);
        let back = t.map(MediaKind::Video, 63_000 * MS).unwrap();
        assert_eq!(back, b_last + 33 * MS);
        assert_eq!(t.discontinuities, 2);
    }

    /// B-frames step back a little within a group; a reconnection's pause jumps ahead a few
    /// seconds: neither starts a segment.
    #[test]
    fn reordering_and_pauses_are_not_discontinuities() {
        let mut t = Timeline::default();
        for pts in [0, 100, 33, 66, 200, 133, 166] {
            assert_eq!(t.map(MediaKind::Video, pts * MS), Some(pts * MS));
        }
        assert_eq!(t.map(MediaKind::Video, 3_200 * MS), Some(3_200 * MS));
        assert_eq!(t.discontinuities, 0);
    }

    /// The new publisher's audio arrives before its video (and begins later in its clock than
    /// the video's first group): the audio waits, dropped, for the video to place the segment;
    /// then audio that would land before audio already written is dropped, and the rest keeps
    /// the new publisher's sync. No frame of either track goes back in time (the recorder would
    /// squeeze it into a tick).
    #[test]
    fn audio_ahead_of_the_video_into_a_new_segment_waits_for_it() {
        let mut t = Timeline::default();
        for i in 0..30 {
            t.map(MediaKind::Video, 60_000 * MS + i * 33 * MS).unwrap();
            t.map(MediaKind::Audio, 60_000 * MS + i * 20 * MS).unwrap();
        }
        let last_video = 60_000 * MS + 29 * 33 * MS;
        // B's audio from 1.5 s of its clock, its video (newest group) from 1.0 s.
        assert_eq!(t.map(MediaKind::Audio, 1_500 * MS), None);
        assert_eq!(t.map(MediaKind::Audio, 1_520 * MS), None);
        let bv = t.map(MediaKind::Video, 1_000 * MS).unwrap();
        assert_eq!(bv, last_video + 33 * MS, "the video places the segment");
        // B's audio at 1.54 s maps 540 ms after its first video frame: in sync.
        assert_eq!(t.map(MediaKind::Audio, 1_540 * MS), Some(bv + 540 * MS));
        let mut last_audio = bv + 540 * MS;
        for i in 1..20 {
            let out = t.map(MediaKind::Audio, 1_540 * MS + i * 20 * MS).unwrap();
            assert!(out > last_audio);
            last_audio = out;
        }
        assert_eq!(t.discontinuities, 1);

        // Audio of a recording without video places segments itself.
        let mut a = Timeline::default();
        a.map(MediaKind::Audio, 60_000 * MS).unwrap();
        assert_eq!(a.map(MediaKind::Audio, 0), Some(60_000 * MS + DEFAULT_STEP));

        // Audio that waits longer than AUDIO_WAIT for video places the segment itself.
        let mut w = Timeline::default();
        w.map(MediaKind::Video, 60_000 * MS).unwrap();
        w.map(MediaKind::Audio, 60_000 * MS).unwrap();
        assert_eq!(w.map(MediaKind::Audio, 0), None);
        assert!(w.map(MediaKind::Audio, AUDIO_WAIT).is_some());
    }
}

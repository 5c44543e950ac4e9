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
//! * The first track to enter segment `k` fixes segment `k`'s offset: its first frame follows
//!   the last frame written of any track by one of its own frame intervals. The other tracks
//!   use the same offset when they enter segment `k`, so audio and video keep the sync the
//!   publisher gave them.

use moqcast_media::MediaKind;

/// A step back larger than this (µs) is a new publisher's clock, not B-frame reordering.
pub const MAX_BACK: u64 = 1_000_000;
/// A jump ahead larger than this (µs) is a new publisher's clock, not a pause.
pub const MAX_GAP: u64 = 5_000_000;
/// The frame interval assumed until a track has shown its own (µs).
const DEFAULT_STEP: u64 = 20_000;

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
    /// The recording's timestamp (µs) for a frame of `kind` whose LOC timestamp is `pts`.
    pub fn map(&mut self, kind: MediaKind, pts: u64) -> u64 {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let last_any = self.video.last_out.max(self.audio.last_out);
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
            if self.offsets.len() <= clock.segment {
                // The first track into this segment places it after everything written.
                let step = clock.step.unwrap_or(DEFAULT_STEP);
                let start = last_any.unwrap_or(0).saturating_add(step);
                self.offsets.push(start as i64 - pts as i64);
                self.discontinuities += 1;
            }
        } else if let Some(max) = clock.max_in {
            if pts > max {
                clock.step = Some(pts - max);
            }
        }
        clock.max_in = Some(clock.max_in.map_or(pts, |m| m.max(pts)));
        let offset = self.offsets[clock.segment.min(self.offsets.len() - 1)];
        let out = (pts as i64).saturating_add(offset).max(0) as u64;
        clock.last_out = Some(clock.last_out.map_or(out, |l| l.max(out)));
        out
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
            out.push(t.map(MediaKind::Video, 60_000 * MS + i * 33 * MS));
            out.push(t.map(MediaKind::Audio, 60_000 * MS + i * 20 * MS));
        }
        assert_eq!(out[0], 60_000 * MS, "the first segment is kept as it is");
        let last = *out.iter().max().unwrap();
        // B: video first, then audio (in flight a little longer).
        let bv = t.map(MediaKind::Video, 0);
        assert_eq!(bv, last + 33 * MS);
        let late_a_audio = t.map(MediaKind::Audio, 60_000 * MS + 600 * MS);
        assert_eq!(
            late_a_audio,
            60_600 * MS,
            "A's audio in flight is still A's"
        );
        let ba = t.map(MediaKind::Audio, 10 * MS);
        assert_eq!(ba, bv + 10 * MS, "B's audio keeps B's sync with its video");
        assert_eq!(t.discontinuities, 1);
        // A serves again, its clock 3 s on from where it left.
        let mut b_last = bv;
        for i in 1..90 {
            b_last = t.map(MediaKind::Video, i * 33 * MS);
        }
        assert_eq!(b_last, bv + 89 * 33 * MS);
        let back = t.map(MediaKind::Video, 63_000 * MS);
        assert_eq!(back, b_last + 33 * MS);
        assert_eq!(t.discontinuities, 2);
    }

    /// B-frames step back a little within a group; a reconnection's pause jumps ahead a few
    /// seconds: neither starts a segment.
    #[test]
    fn reordering_and_pauses_are_not_discontinuities() {
        let mut t = Timeline::default();
        for pts in [0, 100, 33, 66, 200, 133, 166] {
            assert_eq!(t.map(MediaKind::Video, pts * MS), pts * MS);
        }
        assert_eq!(t.map(MediaKind::Video, 3_200 * MS), 3_200 * MS);
        assert_eq!(t.discontinuities, 0);
    }
}

//! The dub's timeline: synthesized speech placed on the broadcast's media timeline, as
//! continuous 48 kHz mono audio in 20 ms frames. Plain code without I/O: the caller says how
//! far the timeline may run (its horizon, the source audio's media time less the dub's delay)
//! and gets the frames up to there.
//!
//! * Each cue's speech starts at the cue's start. Speech longer than the cue is sped up
//!   (pitch kept, [`crate::stretch`], at most [`stretch::MAX_FACTOR`]); what is still too long
//!   is cut at the cue's end with a short fade (counted). A cue that starts where the previous
//!   one still speaks cuts the previous one there.
//! * A cue whose start the timeline has already passed (its speech came too late) starts at
//!   once instead (counted, with how late); one whose end it has passed is skipped (counted).
//! * Between cues, silence, or the original audio at `--dub-original-db`.
//! * Frame `n` covers samples `[960 n, 960 (n + 1))` of the media timeline at 48 kHz, and its
//!   timestamp is exactly `20 000 n` µs: timestamps never drift from the source's.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::stretch;

/// The dub's sample rate (Opus).
pub const RATE: u32 = 48_000;
/// Samples per frame (20 ms).
pub const FRAME: usize = 960;
/// A frame's duration, µs.
pub const FRAME_US: u64 = 20_000;
/// Most frames one [`Timeline::pull`] emits; a longer gap (the source stalled) is skipped.
pub const MAX_FRAMES_PER_PULL: u64 = 250;
/// The fade at a cut, samples (5 ms).
const FADE: usize = 240;

/// The sample index of a media time.
fn sample_at(us: u64) -> u64 {
    us * u64::from(RATE) / 1_000_000
}

/// `samples` resampled from `from` Hz to `to` Hz (rubato's FFT resampler).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let mut r = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| format!("resampler {from} -> {to} Hz: {e}"))?;
    let input = InterleavedSlice::new(samples, 1, samples.len())
        .map_err(|e| format!("resampler input: {e}"))?;
    let out = r
        .process_all(&input, samples.len(), None)
        .map_err(|e| format!("resampling {from} -> {to} Hz: {e}"))?;
    Ok(out.take_data())
}

/// Level below which a synthesizer's leading and trailing audio counts as silence (dBFS).
const SILENCE_DBFS: f32 = -45.0;

/// `samples` at `rate` without the silence a synthesizer leaves before and after the speech
/// (a leading "." makes some pause first), keeping 10 ms on each side: the speech then starts
/// where it is placed. All silence: empty.
pub fn trim_silence(samples: &[f32], rate: u32) -> &[f32] {
    let win = (rate / 100).max(1) as usize;
    let floor = 10f32.powf(SILENCE_DBFS / 20.0);
    let loud = |w: &[f32]| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt() > floor;
    let windows: Vec<bool> = samples.chunks(win).map(loud).collect();
    let Some(first) = windows.iter().position(|&l| l) else {
        return &[];
    };
    let last = windows.iter().rposition(|&l| l).unwrap_or(first);
    let start = first.saturating_sub(1) * win;
    let end = ((last + 2) * win).min(samples.len());
    &samples[start..end]
}

/// A streaming resampler for the original audio mixed under the dub: pieces of any length
/// at `from` Hz in, 48 kHz pieces out with their media times.
pub struct Upsampler {
    resampler: Fft<f32>,
    chunk: usize,
    /// Input not yet resampled.
    buffer: Vec<f32>,
    /// Media time of the next output sample (before the resampler's delay), as a 48 kHz
    /// sample index.
    next_out: Option<u64>,
}

impl Upsampler {
    pub fn new(from: u32) -> Result<Self, String> {
        let chunk = (from / 50) as usize; // 20 ms
        let resampler = Fft::<f32>::new(from as usize, RATE as usize, chunk, 1, FixedSync::Input)
            .map_err(|e| format!("resampler {from} -> {RATE} Hz: {e}"))?;
        Ok(Self {
            resampler,
            chunk,
            buffer: Vec::new(),
            next_out: None,
        })
    }

    /// Takes a piece starting at `start_us` (pieces are contiguous; a gap restarts the
    /// timing); returns `(start_us, samples)` pieces at 48 kHz.
    pub fn push(&mut self, start_us: u64, samples: &[f32]) -> Vec<(u64, Vec<f32>)> {
        let delay = self.resampler.output_delay() as u64;
        if self.next_out.is_none() {
            self.next_out = Some(sample_at(start_us));
        }
        self.buffer.extend_from_slice(samples);
        let mut out = Vec::new();
        while self.buffer.len() >= self.chunk {
            let Ok(input) = InterleavedSlice::new(&self.buffer[..self.chunk], 1, self.chunk) else {
                break;
            };
            let Ok(piece) = self.resampler.process(&input, None) else {
                break;
            };
            let piece = piece.take_data();
            let at = self.next_out.unwrap_or(0);
            self.next_out = Some(at + piece.len() as u64);
            // The resampler's output lags its input by `delay` samples.
            if let Some(t) = at.checked_sub(delay) {
                out.push((t * 1_000_000 / u64::from(RATE), piece));
            }
            self.buffer.drain(..self.chunk);
        }
        out
    }
}

/// One 20 ms frame of the dub.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Media time of the first sample, µs.
    pub timestamp_us: u64,
    pub samples: Vec<f32>,
}

/// Where a cue's speech went.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Media time where the speech starts, µs (the cue's start unless it came late).
    pub start_us: u64,
    /// How much the speech was sped up (1.0: not at all).
    pub factor: f32,
    /// Speech cut at the cue's end, ms.
    pub cut_ms: u64,
    /// How late the speech starts after the cue's start, ms.
    pub late_ms: u64,
}

/// What the timeline has done, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub cues: u64,
    /// Cues sped up.
    pub stretched: u64,
    /// Cues cut at their end (too long even sped up), and how much, ms.
    pub cut: u64,
    pub cut_ms: u64,
    /// Cues that started late, and by how much in all, ms.
    pub late: u64,
    pub late_ms: u64,
    pub frames: u64,
    /// Cues skipped because the timeline had passed their end when their speech came.
    pub expired: u64,
    /// Gaps skipped because the horizon jumped by more than [`MAX_FRAMES_PER_PULL`] frames.
    pub skipped_gaps: u64,
}

#[derive(Debug)]
struct Clip {
    /// Sample index of the first sample.
    start: u64,
    samples: Vec<f32>,
    gain: f32,
}

impl Clip {
    fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }

    /// Adds the clip's part in `[at, at + out.len())` to `out`.
    fn mix_into(&self, at: u64, out: &mut [f32]) {
        let from = self.start.max(at);
        let to = self.end().min(at + out.len() as u64);
        for s in from..to {
            out[(s - at) as usize] += self.samples[(s - self.start) as usize] * self.gain;
        }
    }
}

fn fade_out(samples: &mut [f32]) {
    let n = samples.len().min(FADE);
    let len = samples.len();
    for i in 0..n {
        samples[len - n + i] *= 1.0 - (i + 1) as f32 / n as f32;
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Timeline {
    /// The next frame to emit; `None` until the first [`Timeline::pull`].
    next: Option<u64>,
    speech: VecDeque<Clip>,
    original: VecDeque<Clip>,
    original_gain: Option<f32>,
    pub counters: Counters,
}

impl Timeline {
    /// `original_db`: the level of the original audio under the dub (`None`: not mixed).
    pub fn new(original_db: Option<f32>) -> Self {
        Self {
            next: None,
            speech: VecDeque::new(),
            original: VecDeque::new(),
            original_gain: original_db.map(|db| 10f32.powf(db / 20.0)),
            counters: Counters::default(),
        }
    }

    /// Media time up to which frames have been emitted, µs.
    pub fn emitted_to_us(&self) -> Option<u64> {
        self.next.map(|n| n * FRAME_US)
    }

    /// Places a cue's speech (48 kHz mono) for the cue `[start_us, end_us)`; `None` when the
    /// timeline has passed the cue's end (skipped, counted).
    pub fn place(&mut self, start_us: u64, end_us: u64, mut speech: Vec<f32>) -> Option<Placement> {
        let emitted = self.next.map_or(0, |n| n * FRAME as u64);
        if sample_at(end_us) <= emitted {
            self.counters.expired += 1;
            return None;
        }
        self.counters.cues += 1;
        let mut start = sample_at(start_us);
        let mut late_ms = 0;
        if start < emitted {
            late_ms = (emitted - start) * 1000 / u64::from(RATE);
            start = emitted;
            self.counters.late += 1;
            self.counters.late_ms += late_ms;
        }
        let slot = (sample_at(end_us).saturating_sub(sample_at(start_us)) as usize).max(FRAME);
        let mut factor = 1.0;
        if speech.len() > slot {
            factor = (speech.len() as f32 / slot as f32).min(stretch::MAX_FACTOR);
            speech = stretch::speed_up(&speech, RATE, factor);
            self.counters.stretched += 1;
        }
        let mut cut_ms = 0;
        if speech.len() > slot {
            cut_ms = (speech.len() - slot) as u64 * 1000 / u64::from(RATE);
            speech.truncate(slot);
            fade_out(&mut speech);
            self.counters.cut += 1;
            self.counters.cut_ms += cut_ms;
        }
        // The new cue cuts the one still speaking where it starts.
        for prev in self.speech.iter_mut() {
            if prev.start < start && prev.end() > start {
                prev.samples.truncate((start - prev.start) as usize);
                fade_out(&mut prev.samples);
            }
        }
        let at = self.speech.partition_point(|c| c.start <= start);
        self.speech.insert(
            at,
            Clip {
                start,
                samples: speech,
                gain: 1.0,
            },
        );
        Some(Placement {
            start_us: start * 1_000_000 / u64::from(RATE),
            factor,
            cut_ms,
            late_ms,
        })
    }

    /// The original audio (48 kHz mono) from `start_us`, mixed under the dub when a level was
    /// set (otherwise dropped).
    pub fn push_original(&mut self, start_us: u64, samples: Vec<f32>) {
        let Some(gain) = self.original_gain else {
            return;
        };
        let clip = Clip {
            start: sample_at(start_us),
            samples,
            gain,
        };
        if self.next.is_some_and(|n| clip.end() <= n * FRAME as u64) {
            return;
        }
        self.original.push_back(clip);
    }

    /// The frames that end at or before `horizon_us`, from where the last call stopped. The
    /// first call only sets where the dub starts.
    pub fn pull(&mut self, horizon_us: u64) -> Vec<Frame> {
        let until = sample_at(horizon_us) / FRAME as u64;
        let Some(mut next) = self.next else {
            self.next = Some(until);
            return Vec::new();
        };
        if until > next + MAX_FRAMES_PER_PULL {
            self.counters.skipped_gaps += 1;
            next = until - MAX_FRAMES_PER_PULL;
        }
        let mut frames = Vec::new();
        while next < until {
            let at = next * FRAME as u64;
            let end = at + FRAME as u64;
            let mut samples = vec![0.0f32; FRAME];
            for c in self.original.iter().chain(self.speech.iter()) {
                if c.start < end && c.end() > at {
                    c.mix_into(at, &mut samples);
                }
            }
            for s in &mut samples {
                *s = s.clamp(-1.0, 1.0);
            }
            frames.push(Frame {
                timestamp_us: next * FRAME_US,
                samples,
            });
            next += 1;
            self.speech.retain(|c| c.end() > end);
            self.original.retain(|c| c.end() > end);
        }
        self.counters.frames += frames.len() as u64;
        self.next = Some(next);
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(secs: f32) -> Vec<f32> {
        (0..(secs * RATE as f32) as usize)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * 200.0 * n as f32 / RATE as f32).sin())
            .collect()
    }

    /// First and last non-silent sample times in the frames, µs.
    fn voiced(frames: &[Frame]) -> Vec<(u64, u64)> {
        let mut spans: Vec<(u64, u64)> = Vec::new();
        let mut open: Option<u64> = None;
        let mut last = 0;
        for f in frames {
            for (i, s) in f.samples.iter().enumerate() {
                let t = f.timestamp_us + i as u64 * 1_000_000 / u64::from(RATE);
                if s.abs() > 1e-4 {
                    if open.is_none() {
                        open = Some(t);
                    }
                    last = t;
                } else if let Some(o) = open {
                    if t > last + 20_000 {
                        spans.push((o, last));
                        open = None;
                    }
                }
            }
        }
        if let Some(o) = open {
            spans.push((o, last));
        }
        spans
    }

    #[test]
    fn frames_are_continuous_and_speech_starts_at_its_cue() {
        let mut t = Timeline::new(None);
        assert!(
            t.pull(1_000_000).is_empty(),
            "the first pull sets the start"
        );
        // A 1 s cue at 2.0 s with 0.8 s of speech, a 1 s cue at 3.5 s with 1.2 s of speech.
        let p = t.place(2_000_000, 3_000_000, tone(0.8)).unwrap();
        assert_eq!(
            (p.start_us, p.factor, p.cut_ms, p.late_ms),
            (2_000_000, 1.0, 0, 0)
        );
        let p = t.place(3_500_000, 4_500_000, tone(1.2)).unwrap();
        assert!((p.factor - 1.2).abs() < 0.01 && p.cut_ms == 0, "{p:?}");
        // The horizon moves in uneven steps, as audio objects arrive.
        let mut frames = Vec::new();
        for h in [
            1_010_000, 1_333_333, 2_999_999, 3_000_000, 4_210_000, 6_000_000,
        ] {
            frames.extend(t.pull(h));
        }
        assert_eq!(frames.len(), 250);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.timestamp_us, 1_000_000 + i as u64 * FRAME_US);
            assert_eq!(f.samples.len(), FRAME);
        }
        let spans = voiced(&frames);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!(spans[0].0.abs_diff(2_000_000) < 1_000, "{spans:?}");
        assert!(spans[0].1.abs_diff(2_800_000) < 2_000, "{spans:?}");
        assert!(spans[1].0.abs_diff(3_500_000) < 1_000, "{spans:?}");
        assert!(
            spans[1].1.abs_diff(4_500_000) < 2_000,
            "sped up to fit: {spans:?}"
        );
        assert_eq!(t.counters.stretched, 1);
        assert_eq!(t.counters.frames, 250);
    }

    #[test]
    fn too_long_speech_is_cut_late_speech_starts_at_once() {
        let mut t = Timeline::new(None);
        t.pull(0);
        // 2 s of speech for a 1 s cue: sped up 1.3x (1.54 s), then cut at 1 s.
        let p = t.place(500_000, 1_500_000, tone(2.0)).unwrap();
        assert!((p.factor - 1.3).abs() < 1e-6);
        assert!((530..=545).contains(&p.cut_ms), "{p:?}");
        let frames = t.pull(3_000_000);
        let spans = voiced(&frames);
        assert_eq!(spans.len(), 1);
        assert!(spans[0].1 < 1_500_000, "{spans:?}");
        // A cue that starts in the past (the timeline is at 3.0 s) starts now, counted.
        let p = t.place(2_600_000, 3_600_000, tone(0.5)).unwrap();
        assert_eq!((p.start_us, p.late_ms), (3_000_000, 400));
        // One whose end has passed is skipped.
        assert!(t.place(1_000_000, 2_900_000, tone(0.5)).is_none());
        assert_eq!(t.counters.expired, 1);
        let spans = voiced(&t.pull(4_000_000));
        assert!(spans[0].0.abs_diff(3_000_000) < 1_000, "{spans:?}");
        assert_eq!((t.counters.late, t.counters.cut), (1, 1));
        // A stalled source: at most MAX_FRAMES_PER_PULL frames, then a counted jump.
        let frames = t.pull(100_000_000);
        assert_eq!(frames.len() as u64, MAX_FRAMES_PER_PULL);
        assert_eq!(frames.last().unwrap().timestamp_us, 100_000_000 - FRAME_US);
        assert_eq!(t.counters.skipped_gaps, 1);
    }

    #[test]
    fn a_new_cue_cuts_the_previous_one_and_the_original_mixes_under() {
        let mut t = Timeline::new(Some(-20.0));
        t.pull(0);
        t.push_original(0, vec![0.5; RATE as usize * 2]);
        // The first cue's slot is long, but the second starts at 0.5 s.
        t.place(0, 2_000_000, tone(1.0)).unwrap();
        t.place(500_000, 2_000_000, vec![0.0; RATE as usize / 2])
            .unwrap();
        let frames = t.pull(1_000_000);
        let at = |us: u64| {
            let f = &frames[(us / FRAME_US) as usize];
            f.samples[((us % FRAME_US) * 48 / 1000) as usize]
        };
        // Under silence (the second cue), only the original at -20 dB (0.05).
        assert!((at(600_000) - 0.05).abs() < 1e-4, "{}", at(600_000));
        assert!((at(900_000) - 0.05).abs() < 1e-4);
        // Before it, the first cue's tone over the original.
        assert!(frames[..20]
            .iter()
            .flat_map(|f| &f.samples)
            .any(|s| *s > 0.5));
    }

    #[test]
    fn resampling_keeps_duration_and_pitch() {
        let x: Vec<f32> = (0..22_050)
            .map(|n| (2.0 * std::f32::consts::PI * 300.0 * n as f32 / 22_050.0).sin())
            .collect();
        let y = resample(&x, 22_050, RATE).unwrap();
        assert!(y.len().abs_diff(48_000) <= 48, "{}", y.len());
        let ups = (1..y.len())
            .filter(|&i| y[i - 1] < 0.0 && y[i] >= 0.0)
            .count();
        assert!(ups.abs_diff(300) <= 2, "{ups}");
        assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x);
    }

    #[test]
    fn the_upsampler_keeps_time() {
        let mut u = Upsampler::new(16_000).unwrap();
        let x: Vec<f32> = (0..16_000)
            .map(|n| (2.0 * std::f32::consts::PI * 250.0 * n as f32 / 16_000.0).sin())
            .collect();
        let mut pieces = Vec::new();
        for (i, c) in x.chunks(500).enumerate() {
            pieces.extend(u.push(10_000_000 + i as u64 * 500 * 1_000_000 / 16_000, c));
        }
        // Contiguous pieces, from about the first input's time (less the resampler's startup,
        // silence).
        let first = pieces[0].0;
        assert!((9_970_000..10_050_000).contains(&first), "{first}");
        let mut at = first;
        for (t, p) in &pieces {
            assert!(t.abs_diff(at) <= 1, "{t} vs {at}");
            at = t + p.len() as u64 * 1_000_000 / 48_000;
        }
        // The tone's phase lines up with the input's time (resampler delay removed): compare
        // with the ideal 48 kHz tone in the middle.
        let mut mono = Vec::new();
        for (_, p) in &pieces {
            mono.extend_from_slice(p);
        }
        let off = sample_at(first) as i64 - sample_at(10_000_000) as i64;
        let err: f32 = (20_000..21_000)
            .map(|i| {
                let n = i as f32 + off as f32;
                (mono[i] - (2.0 * std::f32::consts::PI * 250.0 * n / 48_000.0).sin()).abs()
            })
            .sum::<f32>()
            / 1000.0;
        assert!(err < 0.05, "mean error {err}");
    }

    #[test]
    fn silence_around_speech_is_trimmed() {
        let mut x = vec![0.0005f32; 24_000]; // 0.5 s near-silence
        x.extend(tone(0.3));
        x.extend(vec![0.0; 4_800]);
        let y = trim_silence(&x, RATE);
        assert!(y.len().abs_diff(14_400 + 2 * 480) <= 480, "{}", y.len());
        assert!(
            y[..480].iter().all(|s| s.abs() < 0.001),
            "10 ms kept before"
        );
        assert!(trim_silence(&[0.0; 1000], RATE).is_empty());
        assert!(trim_silence(&[], RATE).is_empty());
    }
}

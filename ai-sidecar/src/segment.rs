//! Cuts a broadcast's 16 kHz mono audio into utterances on its media timeline, without I/O.
//!
//! Audio arrives as decoded chunks stamped with their media time (the LOC timestamp of the
//! object they came from). The [`Segmenter`] runs the [`Vad`] over it and returns work for the
//! recogniser:
//!
//! * a **partial** [`Utterance`] (the speech so far) every [`SegmenterConfig::partial_every_ms`]
//!   while someone speaks, so captions appear before the sentence ends;
//! * a **final** one when the pause after the speech is long enough, when an utterance reaches
//!   [`SegmenterConfig::max_utterance_ms`] (it is cut and speech continues in a new one), when
//!   the media timeline jumps, and at [`Segmenter::flush`].
//!
//! Times are media microseconds: sample `n` after a chunk stamped `t` is at
//! `t + n * 1e6 / 16000`. A chunk whose stamp disagrees with that by more than
//! [`SegmenterConfig::max_drift_ms`] (lost audio, a publisher restart) resynchronises the clock
//! and finalises the utterance in progress.

use std::collections::VecDeque;

use crate::vad::{Vad, VadConfig, VadEvent, FRAME_SAMPLES};

/// The recogniser's sample rate.
pub const SAMPLE_RATE: u64 = 16_000;

/// Default of [`SegmenterConfig::pre_roll_ms`] (`--pre-roll-ms`). 400 ms rather than 200 ms
/// cut the live captions' WER on the long recordings (docs/BENCHMARKS.md, "Captions: long
/// recordings"): the detector often hears a soft first syllable late.
pub const DEFAULT_PRE_ROLL_MS: u64 = 400;

/// Tuning of [`Segmenter`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterConfig {
    pub vad: VadConfig,
    /// Audio kept before the detected start of speech (soft onsets).
    pub pre_roll_ms: u64,
    /// Audio kept after the last voiced frame.
    pub tail_ms: u64,
    /// How often a partial utterance is produced while speech goes on.
    pub partial_every_ms: u64,
    /// Shortest utterance worth recognising; shorter bursts (clicks, coughs) are dropped.
    pub min_utterance_ms: u64,
    /// Longest utterance; longer speech is cut into several (Whisper's window is 30 s).
    pub max_utterance_ms: u64,
    /// Largest disagreement between a chunk's stamp and the running clock.
    pub max_drift_ms: u64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            pre_roll_ms: DEFAULT_PRE_ROLL_MS,
            tail_ms: 150,
            partial_every_ms: 1000,
            min_utterance_ms: 300,
            max_utterance_ms: 15_000,
            max_drift_ms: 250,
        }
    }
}

/// Speech to recognise.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Counts utterances of this segmenter; a partial and its final share it.
    pub id: u64,
    /// Media time of the first sample, µs.
    pub start_us: u64,
    /// Media time just after the last sample, µs.
    pub end_us: u64,
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// `false` for a partial (speech still going on).
    pub is_final: bool,
}

impl Utterance {
    pub fn duration_ms(&self) -> u64 {
        (self.end_us - self.start_us) / 1000
    }
}

#[derive(Debug)]
struct Current {
    id: u64,
    /// Stream sample index of `samples[0]`.
    start: u64,
    /// Stream sample index where voiced speech began (after the pre-roll).
    speech_start: u64,
    samples: Vec<f32>,
    /// `samples.len()` when the last partial was produced.
    partial_at: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    vad: Vad,
    /// (media time µs, stream sample index) of the clock's anchor.
    anchor: Option<(u64, u64)>,
    /// Stream samples framed so far.
    framed: u64,
    /// Samples that do not fill a frame yet.
    pending: Vec<f32>,
    /// The latest frames (pre-roll and onset), oldest first.
    history: VecDeque<f32>,
    current: Option<Current>,
    next_id: u64,
}

fn samples_of(ms: u64) -> usize {
    (ms * SAMPLE_RATE / 1000) as usize
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            vad: Vad::new(config.vad.clone()),
            config,
            anchor: None,
            framed: 0,
            pending: Vec::new(),
            history: VecDeque::new(),
            current: None,
            next_id: 0,
        }
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        self.current.is_some()
    }

    fn time_us(&self, sample: u64) -> u64 {
        let (t, base) = self.anchor.unwrap_or((0, 0));
        t + (sample.saturating_sub(base)) * 1_000_000 / SAMPLE_RATE
    }

    /// Feeds decoded audio whose first sample is at media time `timestamp_us`. Returns the
    /// utterances it completed or advanced, in order.
    pub fn push(&mut self, timestamp_us: u64, samples: &[f32]) -> Vec<Utterance> {
        let mut out = Vec::new();
        let expected = self.time_us(self.framed + self.pending.len() as u64);
        let drift = expected.abs_diff(timestamp_us);
        if self.anchor.is_none() || drift > self.config.max_drift_ms * 1000 {
            if self.anchor.is_some() {
                tracing::debug!(
                    expected,
                    timestamp_us,
                    "audio timeline jumped; resynchronising"
                );
                out.extend(self.finish());
                self.vad.reset();
                self.history.clear();
            }
            self.pending.clear();
            self.anchor = Some((timestamp_us, self.framed));
        }
        self.pending.extend_from_slice(samples);
        let mut offset = 0;
        while self.pending.len() - offset >= FRAME_SAMPLES {
            let frame: Vec<f32> = self.pending[offset..offset + FRAME_SAMPLES].to_vec();
            offset += FRAME_SAMPLES;
            out.extend(self.frame(&frame));
        }
        self.pending.drain(..offset);
        out
    }

    fn frame(&mut self, frame: &[f32]) -> Vec<Utterance> {
        let mut out = Vec::new();
        self.framed += FRAME_SAMPLES as u64;
        self.history.extend(frame.iter().copied());
        let keep = samples_of(self.config.pre_roll_ms)
            + (self.config.vad.onset_frames as usize + 1) * FRAME_SAMPLES;
        while self.history.len() > keep {
            self.history.pop_front();
        }
        if let Some(cur) = &mut self.current {
            cur.samples.extend_from_slice(frame);
        }
        match self.vad.push_frame(frame) {
            Some(VadEvent::SpeechStart { frames_ago }) => {
                let wanted =
                    samples_of(self.config.pre_roll_ms) + (frames_ago as usize + 1) * FRAME_SAMPLES;
                let take = wanted.min(self.history.len());
                let samples: Vec<f32> = self
                    .history
                    .iter()
                    .skip(self.history.len() - take)
                    .copied()
                    .collect();
                self.current = Some(Current {
                    id: self.next_id,
                    start: self.framed - take as u64,
                    speech_start: self.framed - (frames_ago as u64 + 1) * FRAME_SAMPLES as u64,
                    samples,
                    partial_at: 0,
                });
                self.next_id += 1;
            }
            Some(VadEvent::SpeechEnd { frames_ago }) => {
                if let Some(mut cur) = self.current.take() {
                    // Keep `tail_ms` after the last voiced frame.
                    let voiced_end = self.framed - frames_ago as u64 * FRAME_SAMPLES as u64;
                    let end =
                        (voiced_end + samples_of(self.config.tail_ms) as u64).min(self.framed);
                    cur.samples.truncate((end - cur.start) as usize);
                    let voiced_ms =
                        voiced_end.saturating_sub(cur.speech_start) * 1000 / SAMPLE_RATE;
                    out.extend(self.emit(cur, voiced_ms));
                }
            }
            None => {}
        }
        if let Some(cur) = &mut self.current {
            let len = cur.samples.len();
            if len >= samples_of(self.config.max_utterance_ms) {
                let cur = self.current.take().expect("checked");
                let next_start = cur.start + cur.samples.len() as u64;
                out.extend(self.emit(cur, self.config.max_utterance_ms));
                // Speech goes on: continue in a new utterance.
                self.current = Some(Current {
                    id: self.next_id,
                    start: next_start,
                    speech_start: next_start,
                    samples: Vec::new(),
                    partial_at: 0,
                });
                self.next_id += 1;
            } else if len >= samples_of(self.config.min_utterance_ms)
                && len - cur.partial_at >= samples_of(self.config.partial_every_ms)
                // Not in the pause that may end the utterance: the final is coming.
                && self.vad.pause_frames() < 5
            {
                cur.partial_at = len;
                let partial = Utterance {
                    id: cur.id,
                    start_us: 0,
                    end_us: 0,
                    samples: cur.samples.clone(),
                    is_final: false,
                };
                let start = cur.start;
                out.push(self.stamp(partial, start));
            }
        }
        out
    }

    fn stamp(&self, mut u: Utterance, start: u64) -> Utterance {
        u.start_us = self.time_us(start);
        u.end_us = self.time_us(start + u.samples.len() as u64);
        u
    }

    /// The final utterance of `cur`, unless its `voiced_ms` of speech is too short to be words.
    fn emit(&self, cur: Current, voiced_ms: u64) -> Option<Utterance> {
        if voiced_ms < self.config.min_utterance_ms {
            tracing::trace!(samples = cur.samples.len(), "utterance too short; dropped");
            // A partial may have been shown already: finalise it as empty so it is withdrawn.
            if cur.partial_at == 0 {
                return None;
            }
        }
        let u = Utterance {
            id: cur.id,
            start_us: 0,
            end_us: 0,
            samples: cur.samples,
            is_final: true,
        };
        Some(self.stamp(u, cur.start))
    }

    fn finish(&mut self) -> Option<Utterance> {
        let cur = self.current.take()?;
        let voiced = (cur.start + cur.samples.len() as u64).saturating_sub(cur.speech_start);
        self.emit(cur, voiced * 1000 / SAMPLE_RATE)
    }

    /// Ends the stream: the utterance in progress, if any, becomes final.
    pub fn flush(&mut self) -> Option<Utterance> {
        self.vad.reset();
        self.pending.clear();
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amplitude: f32) -> Vec<f32> {
        (0..samples_of(ms))
            .map(|i| amplitude * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / 16_000.0).sin())
            .collect()
    }

    /// Feeds `audio` in 20 ms objects starting at media time `t0_us`, like a decoded Opus stream.
    fn feed(seg: &mut Segmenter, t0_us: u64, audio: &[f32]) -> Vec<Utterance> {
        audio
            .chunks(320)
            .enumerate()
            .flat_map(|(i, c)| seg.push(t0_us + i as u64 * 20_000, c))
            .collect()
    }

    #[test]
    fn partials_while_speaking_then_a_final_on_the_media_timeline() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let mut audio = tone(1000, 0.0);
        audio.extend(tone(2500, 0.3));
        audio.extend(tone(1000, 0.0));
        let t0 = 5_000_000; // the broadcast is 5 s in
        let out = feed(&mut seg, t0, &audio);
        let partials: Vec<_> = out.iter().filter(|u| !u.is_final).collect();
        let finals: Vec<_> = out.iter().filter(|u| u.is_final).collect();
        assert_eq!(finals.len(), 1, "{out:?}");
        assert_eq!(partials.len(), 2, "a partial per second of speech");
        let f = finals[0];
        assert!(partials
            .iter()
            .all(|p| p.id == f.id && p.start_us == f.start_us));
        // Speech is 6.0 .. 8.5 s; the cue starts up to the pre-roll (400 ms) before it and ends
        // up to the tail after it.
        assert!(
            (5_590_000..=6_000_000).contains(&f.start_us),
            "{}",
            f.start_us
        );
        assert!((8_500_000..=8_700_000).contains(&f.end_us), "{}", f.end_us);
        assert_eq!(f.samples.len() as u64, (f.end_us - f.start_us) * 16 / 1000);
        assert!(!seg.in_speech());
    }

    #[test]
    fn long_speech_is_cut_and_continues() {
        let mut seg = Segmenter::new(SegmenterConfig {
            max_utterance_ms: 4000,
            ..Default::default()
        });
        let mut audio = tone(500, 0.0);
        audio.extend(tone(10_000, 0.3));
        audio.extend(tone(1000, 0.0));
        let finals: Vec<_> = feed(&mut seg, 0, &audio)
            .into_iter()
            .filter(|u| u.is_final)
            .collect();
        assert_eq!(finals.len(), 3, "4 s + 4 s + the rest");
        assert!(finals.iter().all(|u| u.samples.len() <= 64_000));
        assert_eq!(
            finals[0].end_us, finals[1].start_us,
            "no audio lost at a cut"
        );
        let ids: Vec<u64> = finals.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[test]
    fn a_timeline_jump_finalises_and_resynchronises() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let mut a = tone(500, 0.0);
        a.extend(tone(1500, 0.3));
        let out = feed(&mut seg, 0, &a);
        assert!(out.iter().all(|u| !u.is_final));
        assert!(seg.in_speech());
        // The publisher restarted: media time jumps to 100 s.
        let mut b = tone(1000, 0.3);
        b.extend(tone(1000, 0.0));
        let out = feed(&mut seg, 100_000_000, &b);
        let finals: Vec<_> = out.iter().filter(|u| u.is_final).collect();
        assert_eq!(finals.len(), 2, "{out:?}");
        assert!(finals[0].end_us <= 2_000_000);
        assert!(finals[1].start_us >= 99_800_000);
    }

    #[test]
    fn clicks_and_flush() {
        let mut seg = Segmenter::new(SegmenterConfig::default());
        let mut audio = tone(500, 0.0);
        audio.extend(tone(100, 0.5)); // 100 ms burst: shorter than min_utterance
        audio.extend(tone(1000, 0.0));
        assert!(feed(&mut seg, 0, &audio).is_empty());
        let mut speech = tone(800, 0.3);
        speech.truncate(speech.len() - 7); // not a whole number of frames
        feed(&mut seg, 1_600_000, &speech);
        let last = seg.flush().expect("speech in progress becomes final");
        assert!(last.is_final);
        assert!(seg.flush().is_none());
    }
}

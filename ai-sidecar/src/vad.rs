//! Energy-based voice activity detection on 16 kHz mono audio, without I/O.
//!
//! The signal is cut into [`FRAME_SAMPLES`] frames (20 ms). A frame is voiced when its energy is
//! well above an adaptive noise floor and above an absolute floor. Speech starts after
//! [`VadConfig::onset_frames`] voiced frames in a row and ends after
//! [`VadConfig::hangover_frames`] unvoiced ones, so short pauses between words stay inside one
//! utterance. The noise floor follows quiet frames quickly and loud ones slowly, so steady
//! background noise (hum, room tone) is not taken for speech.

/// Samples per analysis frame: 20 ms at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;

/// Tuning of [`Vad`].
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// A frame is voiced when its energy is this many dB above the noise floor.
    pub threshold_db: f32,
    /// ... and above this absolute level (dBFS), so near-silence is never speech.
    pub min_level_dbfs: f32,
    /// Voiced frames in a row that start speech.
    pub onset_frames: u32,
    /// Unvoiced frames in a row that end speech (the pause that ends an utterance).
    pub hangover_frames: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold_db: 12.0,
            min_level_dbfs: -50.0,
            onset_frames: 3,
            hangover_frames: 25,
        }
    }
}

/// What a frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began this many frames ago (the onset frames belong to it).
    SpeechStart { frames_ago: u32 },
    /// Speech ended; its last voiced frame was this many frames ago.
    SpeechEnd { frames_ago: u32 },
}

/// Frame-by-frame voice activity state.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    /// Noise floor in dBFS.
    floor_db: f32,
    speaking: bool,
    voiced_run: u32,
    unvoiced_run: u32,
    frames: u64,
}

/// Energy of a frame in dBFS (full-scale sine is about -3 dBFS).
pub fn frame_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let mean_sq = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    10.0 * mean_sq.max(1e-12).log10()
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        Self {
            config,
            floor_db: -60.0,
            speaking: false,
            voiced_run: 0,
            unvoiced_run: 0,
            frames: 0,
        }
    }

    /// Whether the detector is inside speech.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Unvoiced frames since the last voiced one, while inside speech (a pause going on).
    pub fn pause_frames(&self) -> u32 {
        if self.speaking {
            self.unvoiced_run
        } else {
            0
        }
    }

    /// The current noise floor estimate in dBFS.
    pub fn noise_floor_db(&self) -> f32 {
        self.floor_db
    }

    /// Forgets the current utterance (keeps the noise floor).
    pub fn reset(&mut self) {
        self.speaking = false;
        self.voiced_run = 0;
        self.unvoiced_run = 0;
    }

    /// Feeds one [`FRAME_SAMPLES`]-sample frame.
    pub fn push_frame(&mut self, frame: &[f32]) -> Option<VadEvent> {
        let level = frame_dbfs(frame);
        if self.frames == 0 {
            // Calibrate on the first frame.
            self.floor_db = level.clamp(-100.0, -20.0);
        }
        self.frames += 1;
        // Follow quiet frames quickly, loud frames slowly (speech must not lift the floor much),
        // and start fast: the first half second mostly calibrates.
        let rate = if level < self.floor_db {
            0.3
        } else if self.frames < 25 {
            0.1
        } else if self.speaking {
            0.0005
        } else {
            0.01
        };
        self.floor_db += (level - self.floor_db) * rate;
        self.floor_db = self.floor_db.clamp(-100.0, -20.0);
        let voiced =
            level > self.floor_db + self.config.threshold_db && level > self.config.min_level_dbfs;
        if voiced {
            self.voiced_run += 1;
            self.unvoiced_run = 0;
        } else {
            self.unvoiced_run += 1;
            self.voiced_run = 0;
        }
        if !self.speaking && self.voiced_run >= self.config.onset_frames {
            self.speaking = true;
            return Some(VadEvent::SpeechStart {
                frames_ago: self.voiced_run - 1,
            });
        }
        if self.speaking && self.unvoiced_run >= self.config.hangover_frames {
            self.speaking = false;
            return Some(VadEvent::SpeechEnd {
                frames_ago: self.unvoiced_run,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 Hz tone at `amplitude` for `frames` frames, with a little noise floor.
    pub(crate) fn tone(frames: usize, amplitude: f32) -> Vec<f32> {
        (0..frames * FRAME_SAMPLES)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                amplitude * (2.0 * std::f32::consts::PI * 200.0 * t).sin()
                    + 0.001 * ((i * 7919 % 1000) as f32 / 500.0 - 1.0)
            })
            .collect()
    }

    fn run(vad: &mut Vad, samples: &[f32]) -> Vec<(usize, VadEvent)> {
        samples
            .chunks(FRAME_SAMPLES)
            .enumerate()
            .filter_map(|(i, f)| vad.push_frame(f).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn speech_between_silences_is_one_utterance() {
        let mut vad = Vad::new(VadConfig::default());
        let mut audio = tone(50, 0.0);
        audio.extend(tone(100, 0.3)); // 2 s of "speech" from frame 50
        audio.extend(tone(10, 0.0)); // a 200 ms pause between words: not an end
        audio.extend(tone(50, 0.3));
        audio.extend(tone(60, 0.0));
        let events = run(&mut vad, &audio);
        assert_eq!(events.len(), 2, "{events:?}");
        let (at, start) = events[0];
        assert_eq!(start, VadEvent::SpeechStart { frames_ago: 2 });
        assert_eq!(at - 2, 50);
        let (at, end) = events[1];
        assert_eq!(end, VadEvent::SpeechEnd { frames_ago: 25 });
        assert_eq!(at + 1 - 25, 210, "last voiced frame is 209");
    }

    #[test]
    fn steady_noise_is_not_speech_but_speech_over_it_is() {
        let mut vad = Vad::new(VadConfig::default());
        let noise: Vec<f32> = (0..200 * FRAME_SAMPLES)
            .map(|i| 0.02 * (((i * 2_654_435_761usize) % 10_007) as f32 / 5003.5 - 1.0))
            .collect();
        assert!(run(&mut vad, &noise).is_empty(), "hum is not speech");
        let speech: Vec<f32> = tone(50, 0.4)
            .iter()
            .zip(noise.iter())
            .map(|(a, b)| a + b)
            .collect();
        let events = run(&mut vad, &speech);
        assert!(matches!(events[0].1, VadEvent::SpeechStart { .. }));
    }

    #[test]
    fn clicks_shorter_than_the_onset_are_ignored() {
        let mut vad = Vad::new(VadConfig::default());
        let mut audio = tone(50, 0.0);
        audio.extend(tone(2, 0.5));
        audio.extend(tone(50, 0.0));
        assert!(run(&mut vad, &audio).is_empty());
        assert!(frame_dbfs(&[]) < -100.0);
    }
}

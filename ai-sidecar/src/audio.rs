//! Whisper's log-mel front end, computed like OpenAI's `log_mel_spectrogram`: 16 kHz mono input, a
//! 400-point periodic Hann window, hop 160, frames centred on `i * hop` (the signal is reflect-padded by
//! `n_fft / 2` on both sides), Slaney-style mel filters computed here (same as `librosa.filters.mel`),
//! `log10`, clamped to 8 (decades) below the maximum, then `(x + 4) / 4`.
//!
//! Only the real audio is transformed; [`LogMel::padded`] appends the constant frames that 30 s of zero
//! padding would have produced, when a caller wants the fixed 3000-frame input.

use std::f64::consts::PI;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
pub const N_FREQ: usize = N_FFT / 2 + 1;
/// Frames in a 30 s Whisper window.
pub const N_FRAMES_30S: usize = 3000;

/// Triangular mel filters, `n_mels x N_FREQ`, row-major.
#[derive(Debug, Clone)]
pub struct MelFilters {
    pub n_mels: usize,
    pub weights: Vec<f32>,
    /// Edge frequencies in Hz (`n_mels + 2` of them): filter `i` rises from `edges[i]`, peaks at
    /// `edges[i + 1]` and falls to `edges[i + 2]`.
    pub edges: Vec<f64>,
}

fn hz_to_mel(f: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = (6.4f64).ln() / 27.0;
    if f >= MIN_LOG_HZ {
        min_log_mel + (f / MIN_LOG_HZ).ln() / logstep
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = (6.4f64).ln() / 27.0;
    if m >= min_log_mel {
        MIN_LOG_HZ * (logstep * (m - min_log_mel)).exp()
    } else {
        m * F_SP
    }
}

impl MelFilters {
    /// `librosa.filters.mel(sr=16000, n_fft=400, n_mels, fmin=0, fmax=8000, htk=False, norm="slaney")`.
    pub fn new(n_mels: usize) -> Self {
        let f_max = SAMPLE_RATE as f64 / 2.0;
        let (m_min, m_max) = (hz_to_mel(0.0), hz_to_mel(f_max));
        let edges: Vec<f64> = (0..n_mels + 2)
            .map(|i| mel_to_hz(m_min + (m_max - m_min) * i as f64 / (n_mels + 1) as f64))
            .collect();
        let mut weights = vec![0f32; n_mels * N_FREQ];
        for i in 0..n_mels {
            let (lo, mid, hi) = (edges[i], edges[i + 1], edges[i + 2]);
            let enorm = 2.0 / (hi - lo);
            for k in 0..N_FREQ {
                let f = k as f64 * SAMPLE_RATE as f64 / N_FFT as f64;
                let lower = (f - lo) / (mid - lo);
                let upper = (hi - f) / (hi - mid);
                let w = lower.min(upper).max(0.0);
                weights[i * N_FREQ + k] = (w * enorm) as f32;
            }
        }
        Self {
            n_mels,
            weights,
            edges,
        }
    }
}

/// A normalised log-mel spectrogram, `n_mels x n_frames`, row-major (mel bin major, like Whisper's input).
#[derive(Debug, Clone)]
pub struct LogMel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
    /// The value a frame of pure zero padding has after normalisation.
    pub floor: f32,
}

impl LogMel {
    pub fn get(&self, mel: usize, frame: usize) -> f32 {
        self.data[mel * self.n_frames + frame]
    }

    /// Extend (never shorten) to `n_frames` with the frames that zero padding produces.
    pub fn padded(&self, n_frames: usize) -> LogMel {
        if n_frames <= self.n_frames {
            return self.clone();
        }
        let mut data = Vec::with_capacity(self.n_mels * n_frames);
        for m in 0..self.n_mels {
            data.extend_from_slice(&self.data[m * self.n_frames..(m + 1) * self.n_frames]);
            data.resize((m + 1) * n_frames, self.floor);
        }
        LogMel {
            n_mels: self.n_mels,
            n_frames,
            data,
            floor: self.floor,
        }
    }

    /// A `(1, n_mels, n_frames)` tensor.
    pub fn to_tensor(
        &self,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_slice(&self.data, (1, self.n_mels, self.n_frames), device)
    }
}

/// Precomputed window, DFT tables and mel filters.
pub struct MelFrontEnd {
    filters: MelFilters,
    window: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl MelFrontEnd {
    pub fn new(n_mels: usize) -> Self {
        let window: Vec<f32> = (0..N_FFT)
            .map(|n| (0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let mut cos = vec![0f32; N_FREQ * N_FFT];
        let mut sin = vec![0f32; N_FREQ * N_FFT];
        for k in 0..N_FREQ {
            for n in 0..N_FFT {
                // Reduce k*n mod N_FFT first so the angle stays exact.
                let a = 2.0 * PI * ((k * n) % N_FFT) as f64 / N_FFT as f64;
                cos[k * N_FFT + n] = a.cos() as f32;
                sin[k * N_FFT + n] = a.sin() as f32;
            }
        }
        Self {
            filters: MelFilters::new(n_mels),
            window,
            cos,
            sin,
        }
    }

    pub fn filters(&self) -> &MelFilters {
        &self.filters
    }

    /// Log-mel spectrogram of 16 kHz mono samples: `samples.len() / HOP_LENGTH` frames, frame `i`
    /// centred on sample `i * HOP_LENGTH`.
    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        let n_mels = self.filters.n_mels;
        let n_frames = samples.len() / HOP_LENGTH;
        let mut mel = vec![0f32; n_mels * n_frames];
        let mut frame = vec![0f32; N_FFT];
        let mut power = vec![0f32; N_FREQ];
        for t in 0..n_frames {
            let start = (t * HOP_LENGTH) as isize - (N_FFT / 2) as isize;
            for (n, x) in frame.iter_mut().enumerate() {
                *x = reflect(samples, start + n as isize) * self.window[n];
            }
            for (k, p) in power.iter_mut().enumerate() {
                let c = &self.cos[k * N_FFT..(k + 1) * N_FFT];
                let s = &self.sin[k * N_FFT..(k + 1) * N_FFT];
                let (mut re, mut im) = (0f32, 0f32);
                for n in 0..N_FFT {
                    re += frame[n] * c[n];
                    im += frame[n] * s[n];
                }
                *p = re * re + im * im;
            }
            for m in 0..n_mels {
                let w = &self.filters.weights[m * N_FREQ..(m + 1) * N_FREQ];
                let e: f32 = w.iter().zip(&power).map(|(a, b)| a * b).sum();
                mel[m * n_frames + t] = e;
            }
        }
        LogMel::from_power(n_mels, n_frames, mel)
    }
}

/// Sample `i` of `samples` under reflect padding (numpy "reflect": the edge sample is not
/// repeated), folded again if the signal is shorter than the pad. `samples` must not be empty.
pub(crate) fn reflect(samples: &[f32], mut i: isize) -> f32 {
    let len = samples.len() as isize;
    if len == 1 {
        return samples[0];
    }
    loop {
        if i < 0 {
            i = -i;
        } else if i >= len {
            i = 2 * (len - 1) - i;
        } else {
            return samples[i as usize];
        }
    }
}

impl LogMel {
    /// Whisper's normalisation of mel power (`n_mels` rows of `n_frames`): log10, clamped to 8
    /// below the maximum, scaled to about [-1, 1].
    pub(crate) fn from_power(n_mels: usize, n_frames: usize, mut mel: Vec<f32>) -> Self {
        let mut max = f32::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        // Zero padding is log10(1e-10) = -10 before clamping.
        let max = max.max(-10.0);
        let clamp = max - 8.0;
        for v in mel.iter_mut() {
            *v = (v.max(clamp) + 4.0) / 4.0;
        }
        LogMel {
            n_mels,
            n_frames,
            data: mel,
            floor: ((-10f32).max(clamp) + 4.0) / 4.0,
        }
    }
}

/// Convenience: 80-bin log-mel of 16 kHz mono samples.
pub fn log_mel(samples: &[f32]) -> LogMel {
    MelFrontEnd::new(80).log_mel(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, secs: f64) -> Vec<f32> {
        let n = (secs * SAMPLE_RATE as f64) as usize;
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / SAMPLE_RATE as f64).sin()) as f32)
            .collect()
    }

    #[test]
    fn mel_filters_are_slaney_triangles() {
        let f = MelFilters::new(80);
        assert_eq!(f.weights.len(), 80 * N_FREQ);
        assert!(f.weights.iter().all(|&w| w >= 0.0 && w.is_finite()));
        assert!((f.edges[0] - 0.0).abs() < 1e-9 && (f.edges[81] - 8000.0).abs() < 1e-6);
        // Linear below 1 kHz (edges equally spaced there), logarithmic above.
        let d0 = f.edges[1] - f.edges[0];
        assert!((f.edges[2] - f.edges[1] - d0).abs() < 1e-6);
        assert!(f.edges[81] - f.edges[80] > 5.0 * d0);
        for m in 0..80 {
            let row = &f.weights[m * N_FREQ..(m + 1) * N_FREQ];
            assert!(row.iter().any(|&w| w > 0.0), "filter {m} is empty");
        }
        // Reference values from OpenAI Whisper's `assets/mel_filters.npz` (`mel_80`, librosa-generated).
        let reference: [(usize, usize, f32); 16] = [
            (0, 1, 0.024_862_595),
            (1, 1, 0.001_990_822),
            (1, 2, 0.022_871_772),
            (10, 10, 0.019_908_218),
            (20, 19, 0.010_972_2),
            (20, 20, 0.013_890_394),
            (30, 29, 0.015_856_037),
            (40, 42, 0.005_411_105),
            (40, 43, 0.014_735_566),
            (50, 61, 0.000_811_000_24),
            (50, 63, 0.009_462_302),
            (60, 90, 0.001_434_534_3),
            (60, 93, 0.006_591_093),
            (70, 132, 0.000_848_341_5),
            (70, 136, 0.004_571_974),
            (79, 192, 0.003_164_711_9),
        ];
        for (m, k, want) in reference {
            let got = f.weights[m * N_FREQ + k];
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "filter {m} bin {k}: {got} vs {want}"
            );
        }
        assert_eq!(f.weights[79 * N_FREQ + 200], 0.0);
        // The reference has 391 non-zero weights in all.
        assert_eq!(f.weights.iter().filter(|&&w| w > 0.0).count(), 391);
    }

    #[test]
    fn frame_count_follows_real_length() {
        let fe = MelFrontEnd::new(80);
        assert_eq!(fe.log_mel(&vec![0.0; 16_000]).n_frames, 100);
        assert_eq!(fe.log_mel(&vec![0.0; 16_159]).n_frames, 100);
        assert_eq!(fe.log_mel(&[]).n_frames, 0);
        // Short and single-sample inputs do not panic.
        assert_eq!(fe.log_mel(&vec![0.1; 170]).n_frames, 1);
        assert_eq!(fe.log_mel(&[0.3]).n_frames, 0);
    }

    #[test]
    fn silence_is_the_floor_and_padding_matches() {
        let fe = MelFrontEnd::new(80);
        let m = fe.log_mel(&vec![0.0; 8000]);
        assert!(m.data.iter().all(|&v| v == m.floor));
        assert_eq!(m.floor, (-10.0 + 4.0) / 4.0);
        let p = m.padded(N_FRAMES_30S);
        assert_eq!((p.n_mels, p.n_frames, p.data.len()), (80, 3000, 80 * 3000));
    }

    #[test]
    fn tone_peaks_in_the_right_bin_and_dynamic_range_is_clamped() {
        let fe = MelFrontEnd::new(80);
        let m = fe.log_mel(&sine(1000.0, 1.0));
        let t = 50;
        let peak = (0..80)
            .max_by(|&a, &b| m.get(a, t).total_cmp(&m.get(b, t)))
            .unwrap();
        let centre = fe.filters().edges[peak + 1];
        assert!(
            (centre - 1000.0).abs() < 60.0,
            "peak bin {peak} centred at {centre} Hz"
        );
        let max = m.data.iter().cloned().fold(f32::MIN, f32::max);
        let min = m.data.iter().cloned().fold(f32::MAX, f32::min);
        assert!(max - min <= 2.0 + 1e-6, "8 decades / 4 = 2");
        // Padding frames sit at the clamp floor.
        let p = m.padded(N_FRAMES_30S);
        assert_eq!(p.get(3, 2999), p.floor);
        assert!((p.floor - (max - 2.0)).abs() < 1e-5);
    }

    #[test]
    fn frames_are_centred() {
        // A click at sample 8000 is loudest in the frame centred on it: 8000 / 160 = 50.
        let fe = MelFrontEnd::new(80);
        let mut x = vec![0f32; 16_000];
        x[8000] = 1.0;
        let m = fe.log_mel(&x);
        let energy = |t: usize| (0..80).map(|b| m.get(b, t)).sum::<f32>();
        let loudest = (0..m.n_frames)
            .max_by(|&a, &b| energy(a).total_cmp(&energy(b)))
            .unwrap();
        assert_eq!(loudest, 50);
        // Reflect padding: a constant signal gives the same first frame as a middle one (zero
        // padding or uncentred framing would not).
        let m = fe.log_mel(&vec![0.25; 4000]);
        for b in 0..80 {
            assert!((m.get(b, 0) - m.get(b, 10)).abs() < 1e-4, "bin {b}");
        }
    }
}

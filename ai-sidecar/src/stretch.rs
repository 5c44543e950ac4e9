//! Pitch-preserving time compression for dubbed speech: WSOLA (waveform-similarity overlap-add,
//! Verhelst and Roelands 1993). Plain code without I/O.
//!
//! The output is built from Hann-windowed frames that overlap by half; each frame is taken from
//! the input near its nominal position (output position times the factor), at the offset
//! within a small tolerance whose waveform best continues the previous frame (the highest
//! cross-correlation with the input that follows the previous frame). Periods are neither
//! resampled nor cut in the middle, so the pitch stays where it was while the speech gets
//! shorter. No Rust crate on crates.io offered a maintained MIT/Apache time-stretch (the
//! Signalsmith and Rubber Band ports wrap C++); this one is small and tested below.

/// The most the dub speeds speech up: beyond it, speech becomes hard to follow and is cut.
pub const MAX_FACTOR: f32 = 1.3;

/// Frame length, ms (a few pitch periods of speech).
const FRAME_MS: u32 = 30;
/// How far from its nominal position a frame may be taken, ms.
const TOLERANCE_MS: u32 = 8;

/// `input` at `rate` Hz, sped up by `factor` (clamped to 1..=[`MAX_FACTOR`]): the output has
/// `len / factor` samples and the same pitch.
pub fn speed_up(input: &[f32], rate: u32, factor: f32) -> Vec<f32> {
    let factor = if factor.is_finite() {
        factor.clamp(1.0, MAX_FACTOR)
    } else {
        1.0
    };
    let out_len = (input.len() as f64 / f64::from(factor)).round() as usize;
    let win = ((rate * FRAME_MS / 1000) as usize / 2 * 2).max(4);
    let hop = win / 2;
    let tol = (rate * TOLERANCE_MS / 1000) as usize;
    if factor <= 1.0001 || input.len() < 2 * win + tol {
        let mut out = input[..out_len.min(input.len())].to_vec();
        out.truncate(out_len);
        return out;
    }
    // Periodic Hann: frames overlapping by half sum to exactly one.
    let window: Vec<f32> = (0..win)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * n as f32 / win as f32).cos())
        .collect();
    let last_start = input.len() - win;
    let mut out = vec![0.0f32; out_len + win];
    let mut prev = 0usize;
    for (n, w) in window.iter().enumerate() {
        out[n] += input[n] * w;
    }
    let mut k = 1;
    while k * hop < out_len {
        let nominal = (k as f64 * hop as f64 * f64::from(factor)).round() as usize;
        // The input that would follow the previous frame naturally.
        let natural = (prev + hop).min(last_start);
        let lo = nominal.saturating_sub(tol).min(last_start);
        let hi = (nominal + tol).min(last_start);
        let target = &input[natural..natural + win];
        let mut best = nominal.min(last_start);
        let mut best_score = f32::NEG_INFINITY;
        for c in lo..=hi {
            let cand = &input[c..c + win];
            // Every other sample: plenty for speech, half the cost.
            let (mut xy, mut yy) = (0.0f32, 1e-9f32);
            for i in (0..win).step_by(2) {
                xy += target[i] * cand[i];
                yy += cand[i] * cand[i];
            }
            let score = xy / yy.sqrt();
            if score > best_score {
                best_score = score;
                best = c;
            }
        }
        let at = k * hop;
        for (n, w) in window.iter().enumerate() {
            out[at + n] += input[best + n] * w;
        }
        prev = best;
        k += 1;
    }
    out.truncate(out_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * freq * n as f32 / rate as f32).sin())
            .collect()
    }

    /// Frequency from upward zero crossings, away from the edges.
    fn frequency(x: &[f32], rate: u32) -> f32 {
        let x = &x[x.len() / 10..x.len() * 9 / 10];
        let ups: Vec<usize> = (1..x.len())
            .filter(|&i| x[i - 1] < 0.0 && x[i] >= 0.0)
            .collect();
        let periods = (ups.len() - 1) as f32;
        periods * rate as f32 / (ups[ups.len() - 1] - ups[0]) as f32
    }

    #[test]
    fn duration_scales_and_the_pitch_stays() {
        for (freq, rate) in [(220.0, 16_000), (150.0, 22_050), (440.0, 48_000)] {
            let x = sine(freq, rate, 2.0);
            for factor in [1.1f32, 1.3] {
                let y = speed_up(&x, rate, factor);
                let want = (x.len() as f32 / factor).round() as usize;
                assert_eq!(y.len(), want);
                let f = frequency(&y, rate);
                assert!(
                    (f - freq).abs() / freq < 0.02,
                    "{freq} Hz at {rate} Hz sped up {factor}x came out at {f} Hz"
                );
                // No holes or doubled frames: the level stays even.
                let mid = &y[y.len() / 10..y.len() * 9 / 10];
                let rms = (mid.iter().map(|v| v * v).sum::<f32>() / mid.len() as f32).sqrt();
                assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.05, "rms {rms}");
            }
        }
    }

    #[test]
    fn the_factor_is_capped_and_short_input_is_cut() {
        let x = sine(200.0, 16_000, 1.0);
        assert_eq!(
            speed_up(&x, 16_000, 2.0).len(),
            (16_000.0f32 / 1.3).round() as usize
        );
        assert_eq!(speed_up(&x, 16_000, 0.5), x);
        assert_eq!(speed_up(&x, 16_000, f32::NAN), x);
        let short = sine(200.0, 16_000, 0.02);
        assert_eq!(speed_up(&short, 16_000, 1.25).len(), 256);
        assert!(speed_up(&[], 16_000, 1.3).is_empty());
    }
}

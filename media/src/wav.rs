//! WAV (RIFF/WAVE) files as speech synthesizers write them, read tolerantly into mono `f32`.
//!
//! Synthesizers that write to a pipe cannot seek back to fill in the lengths: `espeak-ng
//! --stdout` writes a RIFF size and a `data` size of 0 (others write `0xFFFFFFFF`). A `data`
//! chunk whose size is 0, `0xFFFFFFFF` or past the end of the bytes is taken to run to the end.
//! Formats: 8/16/24/32-bit integer PCM and 32/64-bit float, plain or `WAVE_FORMAT_EXTENSIBLE`;
//! channels are averaged into one.
//!
//! The bytes come from other programs and remote endpoints: [`parse`] tells a file cut short
//! ([`WavError::Truncated`]: more bytes could make it whole) from one that is malformed, and
//! never panics (`fuzz/fuzz_targets/wav.rs`).

/// Why bytes are not a usable WAV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The bytes end before the header (or the `fmt ` chunk) does: more bytes are needed.
    #[error("the WAV file is cut short: {0}")]
    Truncated(&'static str),
    /// The bytes are not a WAV file this reader understands.
    #[error("not a usable WAV file: {0}")]
    Malformed(String),
}

/// Mono samples and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub samples: Vec<f32>,
    /// Samples per second.
    pub rate: u32,
}

/// The most channels read (a speech file has one or two).
const MAX_CHANNELS: u16 = 64;

#[derive(Debug, Clone, Copy)]
struct Format {
    float: bool,
    channels: u16,
    rate: u32,
    bits: u16,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn format(chunk: &[u8]) -> Result<Format, WavError> {
    if chunk.len() < 16 {
        return Err(WavError::Malformed(format!(
            "a {}-byte fmt chunk (16 at least)",
            chunk.len()
        )));
    }
    let mut tag = u16_at(chunk, 0);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the sub-format GUID.
        if chunk.len() < 26 {
            return Err(WavError::Malformed("a short WAVE_FORMAT_EXTENSIBLE".into()));
        }
        tag = u16_at(chunk, 24);
    }
    let f = Format {
        float: tag == 3,
        channels: u16_at(chunk, 2),
        rate: u32_at(chunk, 4),
        bits: u16_at(chunk, 14),
    };
    let ok_bits = match tag {
        1 => matches!(f.bits, 8 | 16 | 24 | 32),
        3 => matches!(f.bits, 32 | 64),
        other => return Err(WavError::Malformed(format!("format tag {other:#x}"))),
    };
    if !ok_bits {
        return Err(WavError::Malformed(format!(
            "{} bits per sample with format tag {tag}",
            f.bits
        )));
    }
    if f.channels == 0 || f.channels > MAX_CHANNELS {
        return Err(WavError::Malformed(format!("{} channels", f.channels)));
    }
    if f.rate == 0 || f.rate > 768_000 {
        return Err(WavError::Malformed(format!("a rate of {} Hz", f.rate)));
    }
    Ok(f)
}

fn sample(f: &Format, b: &[u8]) -> f32 {
    match (f.float, f.bits) {
        (false, 8) => (f32::from(b[0]) - 128.0) / 128.0,
        (false, 16) => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
        (false, 24) => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
        (false, _) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
        (true, 32) => {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_finite() {
                v
            } else {
                0.0
            }
        }
        (true, _) => {
            let v = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32;
            if v.is_finite() {
                v
            } else {
                0.0
            }
        }
    }
}

/// Reads a WAV file (see the module documentation). Trailing bytes that do not make a whole
/// frame are ignored.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 {
        if !b"RIFF".starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(WavError::Malformed("no RIFF header".into()));
        }
        return Err(WavError::Truncated("in the RIFF header"));
    }
    if &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::Malformed("no RIFF/WAVE header".into()));
    }
    let mut at = 12;
    let mut fmt: Option<Format> = None;
    loop {
        if at > bytes.len() || bytes.len() - at < 8 {
            return Err(WavError::Truncated(if fmt.is_none() {
                "before the fmt chunk"
            } else {
                "before the data chunk"
            }));
        }
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4) as usize;
        let body = at + 8;
        if id == b"data" {
            let f = fmt.ok_or_else(|| WavError::Malformed("data before the fmt chunk".into()))?;
            let end = match body.checked_add(size) {
                Some(end) if size != 0 && size != u32::MAX as usize && end <= bytes.len() => end,
                _ => bytes.len(),
            };
            let data = &bytes[body..end];
            let width = usize::from(f.bits / 8);
            let frame = width * usize::from(f.channels);
            let mut samples = Vec::with_capacity(data.len() / frame);
            for fr in data.chunks_exact(frame) {
                let sum: f32 = fr.chunks_exact(width).map(|s| sample(&f, s)).sum();
                samples.push(sum / f32::from(f.channels));
            }
            return Ok(Wav {
                samples,
                rate: f.rate,
            });
        }
        // Chunks are padded to an even size.
        let next = body.saturating_add(size).saturating_add(size & 1);
        if id == b"fmt " {
            if bytes.len() < body + size.min(26) {
                return Err(WavError::Truncated("in the fmt chunk"));
            }
            fmt = Some(format(&bytes[body..bytes.len().min(next)])?);
        }
        at = next;
    }
}

/// Mono samples as a 16-bit PCM WAV file.
pub fn write_pcm16(samples: &[f32], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        w.extend_from_slice(&v.to_le_bytes());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_zero_lengths_as_pipes_write_them() {
        let samples = vec![0.0, 0.5, -0.5, 0.25];
        let w = write_pcm16(&samples, 22_050);
        let back = parse(&w).unwrap();
        assert_eq!(back.rate, 22_050);
        assert_eq!(back.samples.len(), 4);
        assert!((back.samples[1] - 0.5).abs() < 1e-3);
        // espeak-ng --stdout: RIFF and data sizes of 0.
        let mut piped = w.clone();
        piped[4..8].copy_from_slice(&0u32.to_le_bytes());
        piped[40..44].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse(&piped).unwrap().samples.len(), 4);
        piped[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&piped).unwrap().samples.len(), 4);
        // A trailing half sample is ignored.
        piped.push(7);
        assert_eq!(parse(&piped).unwrap().samples.len(), 4);
    }

    #[test]
    fn stereo_float_and_extra_chunks() {
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        w.extend_from_slice(b"LIST\x03\0\0\0abc\0"); // odd size, padded
        w.extend_from_slice(b"fmt \x10\0\0\0");
        w.extend_from_slice(&3u16.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&24_000u32.to_le_bytes());
        w.extend_from_slice(&(24_000u32 * 8).to_le_bytes());
        w.extend_from_slice(&8u16.to_le_bytes());
        w.extend_from_slice(&32u16.to_le_bytes());
        w.extend_from_slice(b"data\x10\0\0\0");
        for v in [1.0f32, 0.0, 0.5, 0.5] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        let back = parse(&w).unwrap();
        assert_eq!(back.rate, 24_000);
        assert_eq!(back.samples, vec![0.5, 0.5]);
    }

    #[test]
    fn short_and_malformed_are_told_apart() {
        let w = write_pcm16(&[0.1; 10], 16_000);
        for cut in [0, 3, 11, 20, 30] {
            assert!(
                matches!(parse(&w[..cut]), Err(WavError::Truncated(_))),
                "cut at {cut}: {:?}",
                parse(&w[..cut])
            );
        }
        assert!(matches!(parse(b"ID3\x04"), Err(WavError::Malformed(_))));
        assert!(matches!(
            parse(b"RIFF\0\0\0\0AVI LIST"),
            Err(WavError::Malformed(_))
        ));
        let mut bad = w.clone();
        bad[22..24].copy_from_slice(&0u16.to_le_bytes()); // no channels
        assert!(matches!(parse(&bad), Err(WavError::Malformed(_))));
        let mut bad = w;
        bad[20..22].copy_from_slice(&0x55u16.to_le_bytes()); // MP3 in WAV
        assert!(matches!(parse(&bad), Err(WavError::Malformed(_))));
    }
}

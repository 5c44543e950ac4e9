//! Decodes a broadcast's audio track (Opus or AAC, as the catalog describes it) to the
//! recogniser's 16 kHz mono f32 with FFmpeg.

use ffmpeg::{codec, format::Sample, software::resampling, ChannelLayout};
use ffmpeg_next as ffmpeg;
use moqcast_client::AudioInfo;

/// The recogniser's sample rate.
pub const OUT_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The catalog's audio codec is not one the sidecar decodes.
    #[error("audio codec {0:?} is not supported (the sidecar decodes Opus and AAC)")]
    Unsupported(String),
    /// The codec configuration (OpusHead, AudioSpecificConfig) is unusable.
    #[error("bad audio decoder configuration: {0}")]
    Config(String),
    /// One object could not be decoded (skipped; decoding goes on).
    #[error("audio object could not be decoded: {0}")]
    Packet(ffmpeg::Error),
}

/// One track's decoder plus a resampler to 16 kHz mono.
pub struct AudioDecoder {
    decoder: codec::decoder::Audio,
    resampler: Option<(resampling::Context, (Sample, ChannelLayout, u32))>,
    codec: String,
}

impl std::fmt::Debug for AudioDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioDecoder")
            .field("codec", &self.codec)
            .finish()
    }
}

impl AudioDecoder {
    pub fn new(info: &AudioInfo) -> Result<Self, DecodeError> {
        ffmpeg::init().map_err(|e| DecodeError::Config(format!("FFmpeg init: {e}")))?;
        if info.codec != "opus" && !info.codec.starts_with("mp4a.40") {
            return Err(DecodeError::Unsupported(info.codec.clone()));
        }
        let params = moqcast_client::ffmpeg::audio_parameters(info).map_err(|e| match e {
            moqcast_client::ffmpeg::CodecError::UnsupportedCodec { codec, .. } => {
                DecodeError::Unsupported(codec)
            }
            other => DecodeError::Config(other.to_string()),
        })?;
        let ctx = codec::Context::from_parameters(params)
            .map_err(|e| DecodeError::Config(e.to_string()))?;
        let decoder = ctx.decoder().audio().map_err(|e| {
            DecodeError::Config(format!(
                "cannot open a {} decoder ({e}); is this FFmpeg built with it?",
                info.codec
            ))
        })?;
        Ok(Self {
            decoder,
            resampler: None,
            codec: info.codec.clone(),
        })
    }

    /// Decodes one object's payload (one Opus packet or one raw AAC frame) to 16 kHz mono.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<f32>, DecodeError> {
        let packet = ffmpeg::Packet::copy(payload);
        self.decoder
            .send_packet(&packet)
            .map_err(DecodeError::Packet)?;
        let mut out = Vec::new();
        let mut frame = ffmpeg::frame::Audio::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            self.resample(&frame, &mut out)?;
        }
        Ok(out)
    }

    fn resample(
        &mut self,
        frame: &ffmpeg::frame::Audio,
        out: &mut Vec<f32>,
    ) -> Result<(), DecodeError> {
        let layout = match frame.channel_layout() {
            l if l.is_empty() => ChannelLayout::default(i32::from(frame.channels().max(1))),
            l => l,
        };
        let input = (frame.format(), layout, frame.rate());
        if self.resampler.as_ref().map(|(_, i)| *i) != Some(input) {
            let ctx = resampling::Context::get(
                input.0,
                input.1,
                input.2,
                Sample::F32(ffmpeg::format::sample::Type::Packed),
                ChannelLayout::MONO,
                OUT_RATE,
            )
            .map_err(|e| DecodeError::Config(format!("resampler: {e}")))?;
            self.resampler = Some((ctx, input));
        }
        let (ctx, _) = self.resampler.as_mut().expect("set above");
        let mut frame = frame.clone();
        frame.set_channel_layout(layout);
        let mut resampled = ffmpeg::frame::Audio::empty();
        ctx.run(&frame, &mut resampled)
            .map_err(|e| DecodeError::Config(format!("resampling: {e}")))?;
        let n = resampled.samples();
        let bytes = resampled.data(0);
        out.extend(
            bytes[..n * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes 2 s of a 440 Hz tone with the `ffmpeg` program and reads its packets back.
    fn encoded(encoder: &str, ext: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
        let path = std::env::temp_dir().join(format!(
            "moqcast-audio-in-{}-{encoder}.{ext}",
            std::process::id()
        ));
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args([
                "-i",
                "sine=frequency=440:duration=2:sample_rate=48000",
                "-ac",
                "2",
            ])
            .args(["-c:a", encoder, "-b:a", "64k"])
            .arg(&path)
            .status()
            .expect("ffmpeg (scripts/setup.sh installs it)");
        assert!(status.success());
        ffmpeg::init().unwrap();
        let mut input = ffmpeg::format::input(&path).unwrap();
        let stream = input.streams().best(ffmpeg::media::Type::Audio).unwrap();
        let index = stream.index();
        // SAFETY: codec parameters keep `extradata_size` bytes at `extradata` (or null).
        let extradata = unsafe {
            let p = stream.parameters().as_ptr();
            if (*p).extradata.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
            }
        };
        let packets = input
            .packets()
            .filter(|(s, _)| s.index() == index)
            .filter_map(|(_, p)| p.data().map(<[u8]>::to_vec))
            .collect();
        std::fs::remove_file(&path).ok();
        (extradata, packets)
    }

    fn info(codec: &str, description: Vec<u8>) -> AudioInfo {
        AudioInfo {
            codec: codec.into(),
            sample_rate: 48_000,
            channels: 2,
            description: Some(description),
            bitrate: None,
        }
    }

    #[test]
    fn opus_and_aac_decode_to_16k_mono() {
        for (codec, encoder, ext) in [("opus", "libopus", "ogg"), ("mp4a.40.2", "aac", "m4a")] {
            let (extradata, packets) = encoded(encoder, ext);
            let mut dec = AudioDecoder::new(&info(codec, extradata)).unwrap();
            let mut samples = Vec::new();
            for p in &packets {
                samples.extend(dec.decode(p).unwrap());
            }
            // 2 s at 16 kHz, give or take the codec's priming and the last partial frame.
            assert!(
                (29_000..=33_000).contains(&samples.len()),
                "{codec}: {} samples",
                samples.len()
            );
            let mid = &samples[8000..24_000];
            let rms = (mid.iter().map(|s| s * s).sum::<f32>() / mid.len() as f32).sqrt();
            assert!(rms > 0.05, "{codec}: the tone is there (rms {rms})");
            // 440 Hz: about 55 zero crossings per 1000 samples at 16 kHz.
            let crossings = mid
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            assert!(
                (850..=910).contains(&crossings),
                "{codec}: {crossings} crossings"
            );
            // Garbage is an error (or silence) for that object only; decoding goes on.
            let _ = dec.decode(&[0xff; 7]);
            let more: usize = packets[10..20]
                .iter()
                .map(|p| dec.decode(p).map(|s| s.len()).unwrap_or(0))
                .sum();
            assert!(more > 0, "{codec}: decoding goes on after a bad object");
        }
    }

    #[test]
    fn unsupported_codecs_and_bad_configs_are_clear_errors() {
        let err = AudioDecoder::new(&info("flac", vec![])).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("Opus and AAC"));
        let mut aac = info("mp4a.40.2", vec![]);
        aac.description = None;
        let err = AudioDecoder::new(&aac).unwrap_err();
        assert!(matches!(err, DecodeError::Config(_)), "{err}");
    }
}

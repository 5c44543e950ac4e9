//! Decodes a broadcast's audio track (Opus or AAC, as the catalog describes it) to the
//! recogniser's 16 kHz mono f32 with FFmpeg.

use ffmpeg::{codec, format::Sample, software::resampling, ChannelLayout};
use ffmpeg_next as ffmpeg;
use moqcast_publisher::ingest::AudioInfo;

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
        let params = moqcast_publisher::record::audio_parameters(info).map_err(|e| match e {
            moqcast_publisher::record::RecordError::UnsupportedCodec { codec, .. } => {
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

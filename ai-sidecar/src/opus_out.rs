//! Opus encoding of the dub (FFmpeg's libopus encoder through `ffmpeg-next`, as the publisher
//! uses): 48 kHz mono, one 20 ms packet per [`crate::dub::Frame`], each packet stamped with its
//! frame's media time.

use std::collections::VecDeque;

use ffmpeg::{codec, format::Sample, ChannelLayout, Rational};
use ffmpeg_next as ffmpeg;
use moqcast_media::info::{opus_head, AudioInfo};

use crate::dub::{self, Frame};

/// The dub's bitrate (speech, mono).
pub const BITRATE: u64 = 32_000;

/// Why the encoder could not start or encode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpusError {
    #[error("no Opus encoder: this FFmpeg lacks libopus")]
    Missing,
    #[error("Opus encoder: {0}")]
    Ffmpeg(#[from] ffmpeg::Error),
    #[error("a frame of {0} samples (the encoder takes {n})", n = dub::FRAME)]
    FrameSize(usize),
}

/// See the module documentation.
pub struct OpusEncoder {
    encoder: codec::encoder::Audio,
    /// Timestamps of the frames sent and not yet out as packets, µs.
    pending: VecDeque<u64>,
    head: Vec<u8>,
}

impl OpusEncoder {
    pub fn new() -> Result<Self, OpusError> {
        ffmpeg::init()?;
        let codec = ffmpeg::encoder::find_by_name("libopus").ok_or(OpusError::Missing)?;
        let mut enc = codec::Context::new_with_codec(codec).encoder().audio()?;
        enc.set_rate(dub::RATE as i32);
        enc.set_channel_layout(ChannelLayout::MONO);
        enc.set_channels(1);
        enc.set_format(Sample::F32(ffmpeg::format::sample::Type::Packed));
        enc.set_bit_rate(BITRATE as usize);
        enc.set_time_base(Rational(1, dub::RATE as i32));
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("application", "voip");
        opts.set("frame_duration", "20");
        let encoder = enc.open_as_with(codec, opts)?;
        if encoder.frame_size() as usize != dub::FRAME {
            return Err(OpusError::FrameSize(encoder.frame_size() as usize));
        }
        // libopus's look-ahead at 48 kHz; decoders skip it at the start.
        let head = opus_head(1, 312, dub::RATE);
        Ok(Self {
            encoder,
            pending: VecDeque::new(),
            head,
        })
    }

    /// The track's decoder configuration, for the catalog.
    pub fn info(&self) -> AudioInfo {
        AudioInfo {
            codec: "opus".into(),
            sample_rate: dub::RATE,
            channels: 1,
            description: Some(self.head.clone()),
            bitrate: Some(BITRATE),
        }
    }

    /// Encodes one frame; returns the packets that came out, with their media times (µs).
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<(u64, Vec<u8>)>, OpusError> {
        if frame.samples.len() != dub::FRAME {
            return Err(OpusError::FrameSize(frame.samples.len()));
        }
        let mut f = ffmpeg::frame::Audio::new(
            Sample::F32(ffmpeg::format::sample::Type::Packed),
            dub::FRAME,
            ChannelLayout::MONO,
        );
        f.set_rate(dub::RATE);
        f.plane_mut::<f32>(0).copy_from_slice(&frame.samples);
        f.set_pts(Some(
            (frame.timestamp_us * u64::from(dub::RATE) / 1_000_000) as i64,
        ));
        self.encoder.send_frame(&f)?;
        self.pending.push_back(frame.timestamp_us);
        let mut out = Vec::new();
        let mut packet = ffmpeg::Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => break,
                Err(e) => return Err(e.into()),
            }
            let Some(data) = packet.data() else { continue };
            // One packet per frame, in order: the packet carries its frame's media time.
            let ts = self.pending.pop_front().unwrap_or(frame.timestamp_us);
            out.push((ts, data.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio_in::AudioDecoder;

    #[test]
    fn encodes_frames_that_decode_back() {
        let mut enc = OpusEncoder::new().expect("libopus");
        let info = enc.info();
        let mut dec = AudioDecoder::new(&info).unwrap();
        let mut packets = Vec::new();
        for n in 0..50u64 {
            let samples = (0..dub::FRAME)
                .map(|i| {
                    let t = (n as usize * dub::FRAME + i) as f32 / dub::RATE as f32;
                    0.5 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()
                })
                .collect();
            packets.extend(
                enc.encode(&Frame {
                    timestamp_us: 1_000_000 + n * dub::FRAME_US,
                    samples,
                })
                .unwrap(),
            );
        }
        assert!(packets.len() >= 45, "{}", packets.len());
        for (i, (ts, _)) in packets.iter().enumerate() {
            assert_eq!(*ts, 1_000_000 + i as u64 * dub::FRAME_US);
        }
        let mut decoded = Vec::new();
        for (_, p) in &packets {
            decoded.extend(dec.decode(p).unwrap());
        }
        // The decoder gives 16 kHz: 320 samples a packet, less the pre-skip at the start; a
        // 300 Hz tone comes back.
        assert!(
            decoded.len().abs_diff(packets.len() * 320) < 320,
            "{}",
            decoded.len()
        );
        let tail = &decoded[decoded.len() / 2..];
        let rms = (tail.iter().map(|v| v * v).sum::<f32>() / tail.len() as f32).sqrt();
        assert!(rms > 0.2, "rms {rms}");
    }
}

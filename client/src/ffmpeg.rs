//! FFmpeg codec parameters for a track's typed info, for decoders and muxers (the sidecar's
//! audio decoder, `moqcast-subscribe`'s MP4 recorder). Behind the `ffmpeg` feature.

use ffmpeg::codec::{self, Id};
use ffmpeg::media;
use ffmpeg_next as ffmpeg;
use moqcast_media::h264::{AvcConfig, H264Error};

use crate::info::{AudioInfo, VideoInfo};

/// Why a track's configuration cannot become FFmpeg codec parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A codec other than H.264, Opus or AAC.
    #[error("unsupported {kind} codec {codec:?} (H.264, Opus and AAC are supported)")]
    UnsupportedCodec { kind: &'static str, codec: String },
    /// The track's decoder configuration is missing or broken.
    #[error("bad {kind} decoder configuration: {reason}")]
    Config { kind: &'static str, reason: String },
}

impl From<H264Error> for CodecError {
    fn from(e: H264Error) -> Self {
        CodecError::Config {
            kind: "H.264",
            reason: e.to_string(),
        }
    }
}

/// Stores `data` as codec extradata (FFmpeg wants it allocated by av_malloc, zero-padded).
fn set_extradata(params: &mut codec::Parameters, data: &[u8]) -> Result<(), CodecError> {
    let padding = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let size = std::ffi::c_int::try_from(data.len()).map_err(|_| CodecError::Config {
        kind: "codec",
        reason: "extradata too large".into(),
    })?;
    // SAFETY: av_mallocz returns null or a zeroed buffer of the requested size, which we fill
    // within bounds and hand to the parameters, which free it with av_free.
    unsafe {
        let buf = ffmpeg::ffi::av_mallocz(data.len() + padding) as *mut u8;
        if buf.is_null() {
            return Err(CodecError::Config {
                kind: "codec",
                reason: "out of memory".into(),
            });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        let p = params.as_mut_ptr();
        ffmpeg::ffi::av_freep(std::ptr::addr_of_mut!((*p).extradata) as *mut std::ffi::c_void);
        (*p).extradata = buf;
        (*p).extradata_size = size;
    }
    Ok(())
}

/// FFmpeg codec parameters for an H.264 track (AVCC samples, the `avcC` record as extradata).
pub fn video_parameters(info: &VideoInfo) -> Result<codec::Parameters, CodecError> {
    if !(info.codec.starts_with("avc1") || info.codec.starts_with("avc3")) {
        return Err(CodecError::UnsupportedCodec {
            kind: "video",
            codec: info.codec.clone(),
        });
    }
    let config = AvcConfig::parse(&info.avcc)?;
    if config.length_size != 4 {
        return Err(CodecError::Config {
            kind: "H.264",
            reason: "frames carry 4-byte NAL lengths but the avcC says otherwise".into(),
        });
    }
    let (width, height) = match config.sps_info() {
        Ok(sps) => (sps.width, sps.height),
        Err(_) => (info.width, info.height),
    };
    let mut params = codec::Parameters::new();
    params.set_medium(media::Type::Video);
    params.set_id(Id::H264);
    // SAFETY: plain integer fields of parameters we own.
    unsafe {
        let p = params.as_mut_ptr();
        (*p).width = i32::try_from(width).unwrap_or(0);
        (*p).height = i32::try_from(height).unwrap_or(0);
        (*p).format = ffmpeg::ffi::AVPixelFormat::AV_PIX_FMT_YUV420P as i32;
    }
    set_extradata(&mut params, &info.avcc)?;
    Ok(params)
}

/// FFmpeg codec parameters for an Opus or AAC track (an `OpusHead` or `AudioSpecificConfig` as
/// extradata; an Opus track without one gets a default `OpusHead`).
pub fn audio_parameters(info: &AudioInfo) -> Result<codec::Parameters, CodecError> {
    let (id, extradata) = if info.codec == "opus" {
        let head = match &info.description {
            Some(head) if head.starts_with(b"OpusHead") && head.len() >= 19 => head.clone(),
            _ => crate::info::opus_head(info.channels, 0, info.sample_rate),
        };
        (Id::OPUS, head)
    } else if info.codec.starts_with("mp4a.40") {
        let asc = info.description.clone().ok_or_else(|| CodecError::Config {
            kind: "AAC",
            reason: "no AudioSpecificConfig (description)".into(),
        })?;
        (Id::AAC, asc)
    } else {
        return Err(CodecError::UnsupportedCodec {
            kind: "audio",
            codec: info.codec.clone(),
        });
    };
    let channels = i32::try_from(info.channels.clamp(1, 8)).unwrap_or(2);
    let rate = if id == Id::OPUS {
        48_000
    } else {
        info.sample_rate
    };
    let mut params = codec::Parameters::new();
    params.set_medium(media::Type::Audio);
    params.set_id(id);
    // SAFETY: integer fields and the channel layout of parameters we own.
    unsafe {
        let p = params.as_mut_ptr();
        (*p).sample_rate = i32::try_from(rate).unwrap_or(48_000);
        ffmpeg::ffi::av_channel_layout_default(std::ptr::addr_of_mut!((*p).ch_layout), channels);
        (*p).frame_size = if id == Id::OPUS { 960 } else { 1024 };
    }
    set_extradata(&mut params, &extradata)?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opus() -> AudioInfo {
        AudioInfo {
            codec: "opus".into(),
            sample_rate: 48_000,
            channels: 2,
            description: None,
            bitrate: None,
        }
    }

    #[test]
    fn opus_without_a_head_gets_a_default_one() {
        let params = audio_parameters(&opus()).unwrap();
        assert_eq!(params.id(), Id::OPUS);
    }

    #[test]
    fn unknown_audio_and_aac_without_config_are_errors() {
        let mut mp3 = opus();
        mp3.codec = "mp3".into();
        assert!(matches!(
            audio_parameters(&mp3),
            Err(CodecError::UnsupportedCodec { kind: "audio", .. })
        ));
        let mut aac = opus();
        aac.codec = "mp4a.40.2".into();
        assert!(matches!(
            audio_parameters(&aac),
            Err(CodecError::Config { kind: "AAC", .. })
        ));
    }
}

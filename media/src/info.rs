//! Typed decoder configuration of a broadcast's audio and video tracks, and the MSF catalog
//! that describes them: what every ingest (the publisher's FFmpeg sources, the relay's RTMP
//! listener) produces, and what recorders and decoders read back (`moqcast_client::info`).

use crate::catalog::{self, Catalog, Track};
use crate::h264::{AvcConfig, H264Error};
use crate::loc::TIMESCALE_US;

/// Frame rate assumed when neither the SPS nor the stream's metadata gives one.
pub const DEFAULT_FRAMERATE: f64 = 30.0;

/// The SPS's frame rate when it has a usable one, else the stream metadata's, else 30.
fn pick_framerate(sps: Option<f64>, hint: Option<f64>) -> f64 {
    sps.filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0)
        .or(hint)
        .unwrap_or(DEFAULT_FRAMERATE)
}

/// The video track configuration of an H.264 `avcC` record, as every ingest (RTMP, SRT, WHIP)
/// makes it: any NAL length size in, 4-byte lengths on the track (so the record says 4).
/// `framerate_hint` (the container's metadata) fills in for an SPS without timing info.
pub fn avc_video_info(
    config: &AvcConfig,
    framerate_hint: Option<f64>,
) -> Result<VideoInfo, H264Error> {
    let sps = config.sps_info()?;
    let mut record = config.clone();
    record.length_size = 4;
    Ok(VideoInfo {
        codec: config.codec_string(),
        width: sps.width,
        height: sps.height,
        framerate: pick_framerate(sps.framerate, framerate_hint),
        avcc: record.to_bytes(),
        bitrate: None,
    })
}

/// Name of the video track of a broadcast made by one of moqcast's ingests.
pub const VIDEO_TRACK: &str = "video";
/// Name of the audio track of a broadcast made by one of moqcast's ingests.
pub const AUDIO_TRACK: &str = "audio";

/// The video track's configuration, as a catalog and a WebCodecs `VideoDecoder` want it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// WebCodecs codec string, `avc1.PPCCLL`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub framerate: f64,
    /// The `avcC` record (4-byte NAL lengths): the decoder `description`.
    pub avcc: Vec<u8>,
    /// Bits per second, when known.
    pub bitrate: Option<u64>,
}

/// The audio track's configuration, as a catalog and a WebCodecs `AudioDecoder` want it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// `"opus"` or `"mp4a.40.N"` (2 for AAC-LC).
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
    /// The decoder `description`: an `OpusHead` for Opus, an `AudioSpecificConfig` for AAC.
    pub description: Option<Vec<u8>>,
    /// Bits per second, when known.
    pub bitrate: Option<u64>,
}

/// The `altGroup` of a broadcast's audio track, which dubbed audio tracks (`audio-<lang>`,
/// published by the AI sidecar in `<broadcast>/ai`) share, so that a viewer offers them in its
/// place.
pub const AUDIO_ALT_GROUP: u64 = 1;

/// The MSF catalog of a broadcast with (at most) one video track [`VIDEO_TRACK`] and one audio
/// track [`AUDIO_TRACK`], both LOC with microsecond timestamps, their decoder configurations
/// inline (`initData`). `generated_at_ms` is the wall clock in milliseconds since the epoch.
pub fn catalog(
    video: Option<&VideoInfo>,
    audio: Option<&AudioInfo>,
    generated_at_ms: u64,
) -> Catalog {
    let mut cat = Catalog::new();
    cat.generated_at = Some(generated_at_ms);
    if let Some(v) = video {
        let mut t = Track::new(VIDEO_TRACK, catalog::packaging::LOC);
        t.role = Some(catalog::role::VIDEO.into());
        t.is_live = Some(true);
        t.codec = Some(v.codec.clone());
        t.width = Some(v.width);
        t.height = Some(v.height);
        t.framerate = Some(v.framerate);
        t.bitrate = v.bitrate;
        t.timescale = Some(TIMESCALE_US);
        t.render_group = Some(1);
        t.init_ref = Some(VIDEO_TRACK.into());
        cat.set_init_data(VIDEO_TRACK, &v.avcc);
        cat.tracks.push(t);
    }
    if let Some(a) = audio {
        let mut t = Track::new(AUDIO_TRACK, catalog::packaging::LOC);
        t.role = Some(catalog::role::AUDIO.into());
        t.is_live = Some(true);
        t.codec = Some(a.codec.clone());
        t.samplerate = Some(a.sample_rate);
        t.channel_config = Some(a.channels.to_string());
        t.bitrate = a.bitrate;
        t.timescale = Some(TIMESCALE_US);
        t.render_group = Some(1);
        t.lang = Some("und".into());
        t.label = Some("Original".into());
        t.alt_group = Some(AUDIO_ALT_GROUP);
        if let Some(desc) = &a.description {
            t.init_ref = Some(AUDIO_TRACK.into());
            cat.set_init_data(AUDIO_TRACK, desc);
        }
        cat.tracks.push(t);
    }
    cat
}

/// An `OpusHead` identification header (RFC 7845 §5.1) for mono or stereo.
pub fn opus_head(channels: u32, pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels.clamp(1, 2) as u8);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family 0
    head
}

#[cfg(test)]
mod tests {
    #[test]
    fn framerate_from_the_sps_else_the_hint_else_30() {
        use super::{pick_framerate, DEFAULT_FRAMERATE};
        assert_eq!(pick_framerate(Some(25.0), Some(50.0)), 25.0);
        assert_eq!(pick_framerate(None, Some(25.0)), 25.0);
        assert_eq!(pick_framerate(Some(f64::INFINITY), None), DEFAULT_FRAMERATE);
    }

    use super::*;

    #[test]
    fn the_catalog_names_both_tracks_with_their_configurations() {
        let video = VideoInfo {
            codec: "avc1.64001f".into(),
            width: 1280,
            height: 720,
            framerate: 30.0,
            avcc: vec![1, 0x64, 0, 0x1f, 0xff, 0xe0, 0],
            bitrate: None,
        };
        let audio = AudioInfo {
            codec: "mp4a.40.2".into(),
            sample_rate: 48_000,
            channels: 2,
            description: Some(vec![0x11, 0x90]),
            bitrate: Some(128_000),
        };
        let cat = catalog(Some(&video), Some(&audio), 7);
        cat.validate().unwrap();
        let parsed = Catalog::parse(&cat.to_json()).unwrap();
        let v = parsed.track(VIDEO_TRACK).unwrap();
        assert_eq!(v.codec.as_deref(), Some("avc1.64001f"));
        assert_eq!(parsed.init_data_bytes(v).unwrap(), Some(video.avcc.clone()));
        let a = parsed.track(AUDIO_TRACK).unwrap();
        assert_eq!(a.samplerate, Some(48_000));
        assert_eq!(a.alt_group, Some(AUDIO_ALT_GROUP));
        assert_eq!(parsed.init_data_bytes(a).unwrap(), Some(vec![0x11, 0x90]));
        assert_eq!(catalog(None, Some(&audio), 7).tracks.len(), 1);
    }
}

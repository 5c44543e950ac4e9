//! Typed decoder configuration of a broadcast's tracks, as a catalog carries it and as
//! publishers, recorders and decoders (WebCodecs, FFmpeg) want it.

use moqcast_media::catalog::{Catalog, CatalogError, Track};

pub use moqcast_media::info::{opus_head, AudioInfo, VideoInfo};

/// Why a track's decoder configuration could not be read from a catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InfoError {
    /// The catalog's `initData`/`initRef` of the track is unusable.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A video track without its decoder configuration.
    #[error("the video track {0:?} has no decoder configuration (initRef) in the catalog")]
    NoVideoConfig(String),
}

/// The decoder configuration of an audio track of `cat`.
pub fn audio_info(cat: &Catalog, t: &Track) -> Result<AudioInfo, InfoError> {
    Ok(AudioInfo {
        codec: t.codec.clone().unwrap_or_default(),
        sample_rate: t.samplerate.unwrap_or(48_000),
        channels: t
            .channel_config
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2),
        description: cat.init_data_bytes(t)?,
        bitrate: t.bitrate,
    })
}

/// The decoder configuration of a video track of `cat`.
pub fn video_info(cat: &Catalog, t: &Track) -> Result<VideoInfo, InfoError> {
    let avcc = cat
        .init_data_bytes(t)?
        .ok_or_else(|| InfoError::NoVideoConfig(t.name.clone()))?;
    Ok(VideoInfo {
        codec: t.codec.clone().unwrap_or_default(),
        width: t.width.unwrap_or(0),
        height: t.height.unwrap_or(0),
        framerate: t.framerate.unwrap_or(30.0),
        avcc,
        bitrate: t.bitrate,
    })
}

/// The first video and the first audio track of `cat`, with their decoder configurations.
pub fn media_info(cat: &Catalog) -> Result<(Option<VideoInfo>, Option<AudioInfo>), InfoError> {
    let video = cat
        .video_tracks()
        .next()
        .map(|t| video_info(cat, t))
        .transpose()?;
    let audio = cat
        .audio_tracks()
        .next()
        .map(|t| audio_info(cat, t))
        .transpose()?;
    Ok((video, audio))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let mut cat = Catalog::new();
        let mut audio = Track::new("audio", "loc");
        audio.role = Some("audio".into());
        audio.codec = Some("opus".into());
        audio.samplerate = Some(48_000);
        audio.channel_config = Some("1".into());
        cat.tracks.push(audio);
        cat
    }

    #[test]
    fn audio_info_reads_codec_rate_and_channels_from_the_catalog() {
        let cat = catalog();
        let info = audio_info(&cat, cat.track("audio").unwrap()).unwrap();
        assert_eq!(info.codec, "opus");
        assert_eq!((info.sample_rate, info.channels), (48_000, 1));
        assert_eq!(info.description, None);
    }

    #[test]
    fn a_video_track_without_its_avcc_is_an_error_that_names_it() {
        let mut cat = catalog();
        let mut video = Track::new("video", "loc");
        video.role = Some("video".into());
        video.codec = Some("avc1.42001f".into());
        cat.tracks.push(video);
        let err = media_info(&cat).unwrap_err();
        assert!(err.to_string().contains("\"video\""), "{err}");
    }

    #[test]
    fn opus_head_is_19_bytes_with_the_channel_count_and_rate() {
        let head = opus_head(2, 312, 48_000);
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[9], 2);
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312);
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), 48_000);
    }
}

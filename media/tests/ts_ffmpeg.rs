//! The MPEG-TS demuxer on FFmpeg's own output: `tests/data/ffmpeg_h264_aac.ts` is one second of
//! a 96x64 30 fps test pattern (libx264, a keyframe every 15 frames) and a 440 Hz tone (AAC,
//! 48 kHz mono), muxed by FFmpeg's `mpegts` muxer as OBS and `ffmpeg -f mpegts srt://...` send it:
//!
//! ```text
//! ffmpeg -f lavfi -i testsrc2=size=96x64:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
//!     -t 1 -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 15 -c:a aac -b:a 32k \
//!     -f mpegts ffmpeg_h264_aac.ts
//! ```
//!
//! ffprobe counts 30 video and 48 audio frames in it.

use moqcast_media::h264::{avcc_nals, AvcConfig};
use moqcast_media::ts::{Demuxer, Event};
use moqcast_media::MediaKind;

const STREAM: &[u8] = include_bytes!("data/ffmpeg_h264_aac.ts");

#[test]
fn ffmpegs_transport_stream_becomes_every_frame_with_its_timestamp() {
    let mut d = Demuxer::new();
    let mut events = Vec::new();
    // SRT messages of 7 packets, as libsrt's live mode sends them.
    for chunk in STREAM.chunks(1316) {
        d.push(chunk, &mut events).unwrap();
    }
    let video_config = events
        .iter()
        .filter_map(|e| match e {
            Event::VideoConfig(v) => Some(v),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(
        video_config.len(),
        1,
        "x264 repeats the same parameter sets"
    );
    assert_eq!((video_config[0].width, video_config[0].height), (96, 64));
    assert!(video_config[0].codec.starts_with("avc1.64"));
    assert_eq!(video_config[0].framerate, 30.0);
    AvcConfig::parse(&video_config[0].avcc).unwrap();
    let audio_config = events
        .iter()
        .filter_map(|e| match e {
            Event::AudioConfig(a) => Some(a),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(audio_config.len(), 1);
    assert_eq!(
        (
            audio_config[0].codec.as_str(),
            audio_config[0].sample_rate,
            audio_config[0].channels
        ),
        ("mp4a.40.2", 48_000, 1)
    );

    let frames = |kind| {
        events
            .iter()
            .filter_map(move |e| match e {
                Event::Frame(k, f) if *k == kind => Some(f),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let video = frames(MediaKind::Video);
    // The last frame's PES has no length: it ends at the next PES start, which never comes.
    assert_eq!(video.len(), 29);
    assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2);
    assert!(video[0].keyframe && video[15].keyframe);
    for f in &video {
        assert!(avcc_nals(&f.payload, 4).all(|n| n.is_ok()));
    }
    let mut pts: Vec<u64> = video.iter().map(|f| f.pts_us).collect();
    pts.sort_unstable();
    for w in pts.windows(2) {
        assert!((33_333..=33_334).contains(&(w[1] - w[0])), "{pts:?}");
    }
    let audio = frames(MediaKind::Audio);
    assert_eq!(audio.len(), 48);
    for w in audio.windows(2) {
        let step = w[1].pts_us - w[0].pts_us;
        assert!((21_333..=21_334).contains(&step), "audio step {step}");
    }
    // The two clocks stay together: ffprobe has audio starting 21 ms before video.
    let lead = video.iter().map(|f| f.pts_us).min().unwrap() as i64 - audio[0].pts_us as i64;
    assert!(
        (20_000..=22_000).contains(&lead),
        "audio leads video by {lead} us"
    );
    assert_eq!(d.dropped(), 0);
}

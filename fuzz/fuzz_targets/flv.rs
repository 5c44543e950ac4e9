//! FLV tag bodies as an RTMP publisher sends them (`moqcast_media::flv`): nothing panics on any
//! sequence of audio and video messages, and what leaves is what the tracks promise:
//!
//! * every video frame is 4-byte AVCC whose NAL units all frame, and it is a keyframe exactly
//!   when it holds an IDR slice;
//! * every configuration event parses again (`avcC` with 4-byte lengths, an AAC
//!   `AudioSpecificConfig` or an `OpusHead`) and equals what the repackager reports as current;
//! * `parse_video`/`parse_audio` read a body the same way as a copy of it (tags borrow, they
//!   keep no state).
//!
//! Input layout: a sequence of messages, each `kind (1 byte: low bit 0 video, 1 audio) |
//! timestamp (4 bytes) | length (1 byte) | body`; the last message takes whatever is left.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::aac::AudioSpecificConfig;
use moqcast_media::flv::{parse_audio, parse_video, Event, FlvError, Repackager};
use moqcast_media::h264::{avcc_nals, is_keyframe_avcc, nal_type, AvcConfig, NAL_IDR};
use moqcast_media::MediaKind;

fuzz_target!(|data: &[u8]| {
    let mut r = Repackager::new();
    let mut rest = data;
    while rest.len() >= 6 {
        let video = rest[0] & 1 == 0;
        let ts = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(rest[5]);
        rest = &rest[6..];
        let body = if len == 0 || len > rest.len() {
            std::mem::take(&mut rest)
        } else {
            let (b, tail) = rest.split_at(len);
            rest = tail;
            b
        };
        check_parse(video, body);
        let out = if video { r.video(ts, body) } else { r.audio(ts, body) };
        match out {
            Ok(Some(Event::VideoConfig(info))) => {
                let record = AvcConfig::parse(&info.avcc).expect("the video config parses");
                assert_eq!(record.length_size, 4);
                assert_eq!(record.codec_string(), info.codec);
                assert!(info.width > 0 && info.height > 0);
                assert!(info.framerate.is_finite() && info.framerate > 0.0);
                assert_eq!(r.video_info(), Some(&info));
            }
            Ok(Some(Event::AudioConfig(info))) => {
                let desc = info.description.as_deref().expect("audio configs carry one");
                if info.codec == "opus" {
                    assert!(desc.starts_with(b"OpusHead"));
                    assert_eq!(info.sample_rate, 48_000);
                } else {
                    let asc = AudioSpecificConfig::parse(desc).expect("the ASC parses");
                    assert_eq!(asc.codec_string(), info.codec);
                    assert!(asc.webcodecs_decodable());
                }
                assert!(info.channels > 0);
                assert_eq!(r.audio_info(), Some(&info));
            }
            Ok(Some(Event::Frame(MediaKind::Video, frame))) => {
                assert!(r.video_info().is_some(), "a frame before its configuration");
                let nals: Vec<&[u8]> = avcc_nals(&frame.payload, 4)
                    .collect::<Result<_, _>>()
                    .expect("video frames are 4-byte AVCC");
                let idr = nals.iter().any(|n| nal_type(n) == Some(NAL_IDR));
                assert_eq!(frame.keyframe, idr);
                assert_eq!(is_keyframe_avcc(&frame.payload, 4), idr);
            }
            Ok(Some(Event::Frame(MediaKind::Audio, frame))) => {
                assert!(r.audio_info().is_some(), "a frame before its configuration");
                assert!(frame.keyframe && !frame.payload.is_empty());
            }
            Ok(None) | Err(_) => {}
        }
    }
});

/// The tag readers are pure: a copy reads the same, and the empty body needs more bytes.
fn check_parse(video: bool, body: &[u8]) {
    let copy = body.to_vec();
    if video {
        assert_eq!(parse_video(body), parse_video(&copy));
        assert_eq!(parse_video(&[]), Err(FlvError::Incomplete));
    } else {
        assert_eq!(parse_audio(body), parse_audio(&copy));
        assert_eq!(parse_audio(&[]), Err(FlvError::Incomplete));
    }
}

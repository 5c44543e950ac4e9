//! MPEG transport streams as an SRT publisher sends them (`moqcast_media::ts`): nothing panics on
//! any bytes in any chunking, and what leaves is what the tracks promise:
//!
//! * the same bytes give the same events whether they arrive in 1316-byte SRT messages or in
//!   the chunks the input chooses (a partial packet waits for its end);
//! * every video frame is 4-byte AVCC whose NAL units all frame, it is a keyframe exactly when
//!   it holds an IDR slice, and it holds no access unit delimiter;
//! * every configuration parses again (`avcC` with 4-byte lengths, an AAC `AudioSpecificConfig`
//!   browsers decode, or a mono or stereo `OpusHead`) and a track's frames come after its
//!   configuration; every Opus frame has a valid TOC.
//!
//! Input layout: `chunk size (1 byte, 0 = whole input) | transport stream bytes`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::aac::AudioSpecificConfig;
use moqcast_media::h264::{avcc_nals, nal_type, AvcConfig, NAL_AUD, NAL_IDR};
use moqcast_media::opus::packet_samples;
use moqcast_media::ts::{Demuxer, Event};
use moqcast_media::MediaKind;

fn demux(data: &[u8], chunk: usize) -> Vec<Event> {
    let mut d = Demuxer::new();
    let mut events = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        let _ = d.push(c, &mut events);
    }
    events
}

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = if chunk == 0 { data.len() } else { usize::from(chunk) };
    let events = demux(data, chunk);
    assert_eq!(events, demux(data, 1316), "the chunking changed the events");
    let (mut video, mut audio, mut opus) = (false, false, false);
    for event in &events {
        match event {
            Event::VideoConfig(info) => {
                let record = AvcConfig::parse(&info.avcc).expect("the video config parses");
                assert_eq!(record.length_size, 4);
                assert_eq!(record.codec_string(), info.codec);
                assert!(info.width > 0 && info.height > 0);
                video = true;
            }
            Event::AudioConfig(info) if info.codec == "opus" => {
                let head = info.description.as_deref().expect("Opus configs carry one");
                assert_eq!(&head[..8], b"OpusHead");
                assert!(matches!(head[9], 1 | 2) && u32::from(head[9]) == info.channels);
                (audio, opus) = (true, true);
            }
            Event::AudioConfig(info) => {
                let desc = info.description.as_deref().expect("AAC configs carry one");
                let asc = AudioSpecificConfig::parse(desc).expect("the ASC parses");
                assert_eq!(asc.codec_string(), info.codec);
                assert!(asc.webcodecs_decodable() && info.channels > 0);
                (audio, opus) = (true, false);
            }
            Event::Frame(MediaKind::Video, frame) => {
                assert!(video, "a video frame before its configuration");
                let nals: Vec<&[u8]> = avcc_nals(&frame.payload, 4)
                    .collect::<Result<_, _>>()
                    .expect("video frames are 4-byte AVCC");
                assert!(!nals.is_empty());
                assert!(nals.iter().all(|n| nal_type(n) != Some(NAL_AUD)));
                let idr = nals.iter().any(|n| nal_type(n) == Some(NAL_IDR));
                assert_eq!(frame.keyframe, idr);
            }
            Event::Frame(MediaKind::Audio, frame) => {
                assert!(audio, "an audio frame before its configuration");
                assert!(frame.keyframe && !frame.payload.is_empty());
                assert!(!opus || packet_samples(&frame.payload).is_some());
            }
        }
    }
});

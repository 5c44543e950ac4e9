//! What a WHIP publisher sends the relay (`moqcast_relay::whip`): SDP offers, trickle ICE
//! fragments and depacketized H.264 access units. Nothing panics on any input, and what leaves
//! the depacketizer is what the tracks promise:
//!
//! * every video frame is 4-byte AVCC whose NAL units all frame, without access unit
//!   delimiters, and it comes after a video configuration whose `avcC` parses again;
//! * timestamps never go backwards within a track when RTP times do not.
//!
//! Input layout: `kind (1 byte) | bytes`; kind 0: an SDP offer, 1: a trickle fragment,
//! otherwise a sequence of `len (2 bytes, big-endian) | audio? (1 byte, odd) | payload` frames
//! 3000 RTP ticks apart.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::flv::Event;
use moqcast_media::h264::{avcc_nals, nal_type, AvcConfig, NAL_AUD};
use moqcast_media::MediaKind;
use moqcast_relay::whip::{media::Depacketizer, parse_offer, parse_trickle};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind {
        0 => {
            let _ = parse_offer(&String::from_utf8_lossy(rest));
        }
        1 => {
            let _ = parse_trickle(&String::from_utf8_lossy(rest), Some("abcd"));
        }
        _ => frames(rest),
    }
});

fn frames(mut rest: &[u8]) {
    let start = std::time::Instant::now();
    let mut d = Depacketizer::new(true);
    let mut events = Vec::new();
    let mut video_config = false;
    let mut last = [None::<u64>; 2];
    let mut tick = 0u64;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let audio = rest[2] & 1 == 1;
        let body = &rest[3..];
        let payload = &body[..len.min(body.len())];
        rest = &body[payload.len()..];
        tick += 3000;
        if audio {
            d.opus(payload, tick, start, None, &mut events);
        } else {
            let _ = d.h264(payload, tick, start, None, &mut events);
        }
        for event in events.drain(..) {
            match event {
                Event::VideoConfig(info) => {
                    AvcConfig::parse(&info.avcc).expect("the avcC parses again");
                    video_config = true;
                }
                Event::AudioConfig(_) => {}
                Event::Frame(MediaKind::Video, frame) => {
                    assert!(video_config, "a video frame before its configuration");
                    let mut n = 0;
                    for nal in avcc_nals(&frame.payload, 4) {
                        let nal = nal.expect("4-byte AVCC frames");
                        assert_ne!(nal_type(nal), Some(NAL_AUD));
                        n += 1;
                    }
                    assert!(n > 0);
                    check_order(&mut last[0], frame.pts_us);
                }
                Event::Frame(MediaKind::Audio, frame) => {
                    check_order(&mut last[1], frame.pts_us);
                }
            }
        }
    }
}

fn check_order(last: &mut Option<u64>, pts: u64) {
    if let Some(l) = *last {
        assert!(pts >= l, "timestamps went back: {l} then {pts}");
    }
    *last = Some(pts);
}

//! Caption cue and caption timeline parsing on arbitrary bytes: no panics, accepted input is
//! written back as JSON that parses to an equal value, and the WebVTT writer never produces a
//! `-->` outside a cue timing line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::caption::{to_webvtt, CaptionTimeline, Cue};

fn check_webvtt(cues: &[Cue]) {
    let vtt = to_webvtt(cues);
    assert!(vtt.starts_with("WEBVTT\n"));
    for line in vtt.lines() {
        if line.contains("-->") {
            assert!(
                line.starts_with(|c: char| c.is_ascii_digit()) && line.matches("-->").count() == 1,
                "stray arrow in WebVTT line {line:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cue) = Cue::parse(data) {
        let again = Cue::parse(&cue.to_json()).expect("a written cue parses");
        assert_eq!(again, cue);
        check_webvtt(std::slice::from_ref(&cue));
    }
    if let Ok(timeline) = CaptionTimeline::parse(data) {
        let again = CaptionTimeline::parse(&timeline.to_json()).expect("a written timeline parses");
        assert_eq!(again, timeline);
        check_webvtt(&timeline.cues);
    }
});

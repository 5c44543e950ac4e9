//! WAV parsing (synthesizer output, remote speech endpoints) on arbitrary bytes: no panics, and
//! a file cut short is never reported as malformed when its whole form parses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::wav::{parse, WavError};

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = parse(data) {
        assert!(w.rate > 0);
        assert!(w.samples.iter().all(|s| s.is_finite()));
        // Every prefix is either usable, or cut short: a whole file's prefix is never malformed.
        for cut in [0, 4, 11, 12, 20, 35, 43] {
            if cut < data.len() {
                assert!(!matches!(parse(&data[..cut]), Err(WavError::Malformed(_))));
            }
        }
    }
});

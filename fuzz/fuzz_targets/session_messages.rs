//! The session layer's draft-18 decoders (`moqcast_session::draft18`: control stream frames,
//! the first message of a request stream, later messages on it, object datagrams) on arbitrary
//! bytes: they never panic, never claim more bytes than they were given, and tell "need more
//! bytes" from "malformed" consistently: every proper prefix of a message they decode needs
//! more bytes, it is never malformed.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use moqcast_session::draft18::{
    decode_control, decode_datagram, decode_request, decode_response, WireError,
};

/// Checks one decoder: `Some(n)` when it decoded a message of `n` bytes.
fn check<T>(data: &[u8], decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>) {
    if let Ok(Some((_, n))) = decode(data) {
        assert!(n > 0 && n <= data.len(), "claimed {n} of {} bytes", data.len());
        for cut in [n - 1, n / 2, 1] {
            if cut < n {
                assert!(
                    matches!(decode(&data[..cut]), Ok(None)),
                    "a {cut}-byte prefix of a {n}-byte message is not 'need more bytes'"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, |b| decode_control(b, true));
    check(data, |b| decode_control(b, false));
    check(data, decode_request);
    check(data, decode_response);
    let _ = decode_datagram(Bytes::copy_from_slice(data));
});

//! The first request of an HTTP/3 connection on the relay's QUIC port
//! (`moqcast_relay::h3::first_headers`, then web-transport-quinn's CONNECT decoder), as any
//! client can send it before it is known to be WebTransport or plain HTTP/3:
//!
//! * read the way the relay reads it (exactly the bytes asked for), the scan never asks for 0
//!   bytes, never lets the reader past the frame it finds, and stays within 64 KiB;
//! * the same bytes scanned at once give the same answer;
//! * decoding the frame as a WebTransport CONNECT (QPACK) never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_relay::h3::{first_headers, FirstFrame, MAX_FIRST_BYTES};

fuzz_target!(|stream: &[u8]| {
    let mut buf: Vec<u8> = Vec::new();
    let res = loop {
        match first_headers(&buf) {
            Ok(FirstFrame::NeedMore(n)) => {
                assert!(n > 0, "asked for 0 bytes");
                if buf.len() + n > stream.len() {
                    return;
                }
                buf.extend_from_slice(&stream[buf.len()..buf.len() + n]);
                assert!(buf.len() <= MAX_FIRST_BYTES + 16, "read {} bytes", buf.len());
            }
            other => break other,
        }
    };
    if let Ok(FirstFrame::Headers(range)) = &res {
        assert_eq!(range.end, buf.len(), "the reader went past the frame");
        let _ = web_transport_quinn::proto::ConnectRequest::decode(&mut &buf[range.clone()]);
    }
    assert_eq!(first_headers(&buf), res);
});

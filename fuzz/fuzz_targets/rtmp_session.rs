//! The relay's RTMP ingest path on arbitrary bytes: `rml_rtmp`'s server handshake and chunk
//! stream (as `moqcast_relay::rtmp` drives them: every request accepted, media messages handed
//! to `moqcast_media::flv::Repackager`). Nothing may panic, whatever a client sends, except
//! inside `rml_rtmp`: it panics on some malformed chunk streams (an arithmetic overflow in its
//! chunk deserializer, found here), so the relay runs its calls under `catch_unwind` and ends
//! the connection; this target does the same ([`guarded`]). A panic anywhere else (the
//! repackager) is a crash.
//!
//! Input layout: the first byte picks where the bytes go.
//!
//! * even: straight into the server's handshake, then whatever follows it into the session
//!   (a client that sends garbage from the first byte on);
//! * odd: a real client handshake first (`rml_rtmp`'s client side), then the rest, cut into
//!   reads at the bytes' own lengths, into the session's chunk stream (a client that completes
//!   the handshake, then sends garbage or crafted chunks).

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::flv::Repackager;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// Runs a call into `rml_rtmp` as the relay does: a panic there ends the connection (None).
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // Caught panics are expected here: no message, and no abort from libFuzzer's hook (a panic
    // that reaches the fuzz target's own boundary still aborts there).
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut server = Handshake::new(PeerType::Server);
    let after = if mode % 2 == 0 {
        match guarded(|| server.process_bytes(rest)).and_then(Result::ok) {
            Some(HandshakeProcessResult::Completed {
                remaining_bytes, ..
            }) => remaining_bytes,
            _ => return,
        }
    } else {
        let Some(left) = real_handshake(&mut server) else {
            return;
        };
        let mut v = left;
        v.extend_from_slice(rest);
        v
    };
    run_session(&after);
});

/// A client's handshake against `server`; the bytes the server had left over (none).
fn real_handshake(server: &mut Handshake) -> Option<Vec<u8>> {
    let mut client = Handshake::new(PeerType::Client);
    let c0c1 = client.generate_outbound_p0_and_p1().ok()?;
    let s = match server.process_bytes(&c0c1).ok()? {
        HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
        HandshakeProcessResult::Completed { .. } => return None,
    };
    let c2 = match client.process_bytes(&s).ok()? {
        HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
        HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
    };
    match server.process_bytes(&c2).ok()? {
        HandshakeProcessResult::Completed {
            remaining_bytes, ..
        } => Some(remaining_bytes),
        HandshakeProcessResult::InProgress { .. } => None,
    }
}

/// Feeds `input` to a server session in reads of varying size, accepting every request and
/// repackaging media, until it errs.
fn run_session(input: &[u8]) {
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
        return;
    };
    let mut repackager = Repackager::new();
    let mut rest = input;
    while !rest.is_empty() {
        // The first byte of each read says how long it is (1..=256 bytes).
        let len = (usize::from(rest[0]) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        let Some(Ok(results)) = guarded(|| session.handle_input(chunk)) else {
            return;
        };
        for result in results {
            let ServerSessionResult::RaisedEvent(event) = result else {
                continue;
            };
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    if !matches!(guarded(|| session.accept_request(request_id)), Some(Ok(_))) {
                        return;
                    }
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = repackager.video(timestamp.value, &data);
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = repackager.audio(timestamp.value, &data);
                }
                ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                    if let Some(fps) = metadata.video_frame_rate {
                        repackager.set_framerate_hint(f64::from(fps));
                    }
                }
                _ => {}
            }
        }
    }
}

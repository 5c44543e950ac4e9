//! One encoded media frame, the unit that flows from an ingest to a track and back out of a
//! subscription.

use bytes::Bytes;

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Video,
    Audio,
}

/// One encoded frame (an access unit for video, a packet for audio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Presentation time on the broadcast's media timeline, in microseconds.
    pub pts_us: u64,
    /// True for frames a decoder can start from (IDR for H.264; every audio packet).
    pub keyframe: bool,
    /// Codec payload as WebCodecs expects it: AVCC (length-prefixed NAL units) for H.264,
    /// raw packets for Opus/AAC.
    pub payload: Bytes,
}

//! moqcast's MoQ Transport session layer.
//!
//! Three layers, each usable without the next:
//!
//! | layer | module | what |
//! |---|---|---|
//! | wire | [`draft18`] | message framing on control and request streams for draft-ietf-moq-transport-18, over moq-transport 0.17's message codecs; "need more bytes" apart from "malformed" |
//! | session | [`proto`] | [`proto::Core`]: SETUP, request streams, request limits, Stream Counts, GOAWAY, deadlines; bytes and events in, actions out, time passed in; no I/O |
//! | glue | [`io`] | tokio tasks over web-transport-quinn (raw QUIC or WebTransport) that feed the core and carry out its actions; typed handles for the application |
//!
//! Adding a draft means one module beside [`draft18`] and a [`Version`] variant.

pub mod draft18;
pub mod io;
pub mod proto;

/// The MoQ Transport drafts this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// draft-ietf-moq-transport-18 (ALPN `moqt-18`).
    Draft18,
}

impl Version {
    /// Every supported version, most preferred first.
    pub const ALL: &'static [Version] = &[Version::Draft18];

    /// The ALPN (raw QUIC) and `WT-Protocol` (WebTransport) token of this version.
    pub fn alpn(self) -> &'static str {
        match self {
            Version::Draft18 => draft18::ALPN,
        }
    }

    /// The version an ALPN or `WT-Protocol` token names.
    pub fn from_alpn(alpn: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.alpn() == alpn)
    }
}

pub use proto::{Config, Role, StreamId};

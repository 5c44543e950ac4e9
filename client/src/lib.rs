//! The client side of moqcast: what the publisher, the subscriber, the sidecar and the load
//! generator need to talk to a relay.
//!
//! * [`connect`]: a QUIC client endpoint ([`Client`]), how to trust the relay's certificate
//!   ([`ClientTls`]), raw QUIC (`moqt://`) or WebTransport (`https://`), the MoQ SETUP.
//! * [`track`]: publishing a broadcast's tracks and subscribing to one ([`BroadcastPublisher`],
//!   [`TrackPublisher`], [`TrackSubscription`]).
//! * [`catalog`]: fetching a broadcast's MSF catalog ([`fetch_catalog`]).
//! * [`info`]: typed decoder configuration of a track ([`AudioInfo`], [`VideoInfo`]) read from a
//!   catalog.
//! * [`cli`]: the flags and logging set-up the binaries share ([`cli::TlsArgs`],
//!   [`cli::init_tracing`]).
//! * `ffmpeg` (feature `ffmpeg`): FFmpeg codec parameters for a track's info.
//!
//! The session underneath is moq-transport 0.17's; only [`connect`] and [`track`] touch it.
//! What needs no connection (catalog, LOC, captions, H.264, the subgroup wire codec, ALPNs) is
//! in `moqcast-media`.

pub mod catalog;
pub mod cli;
pub mod connect;
#[cfg(feature = "ffmpeg")]
pub mod ffmpeg;
pub mod info;
pub mod track;

pub use catalog::{fetch_catalog, FetchCatalogError};
pub use connect::{Client, ClientTls, ConnectError, Connected};
pub use info::{audio_info, media_info, video_info, AudioInfo, InfoError, VideoInfo};
pub use track::{
    BroadcastPublisher, ReceivedObject, TrackError, TrackPublisher, TrackSubscription,
};

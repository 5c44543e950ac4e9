//! Ingest and publishing for moqcast, and the subscriber/recorder beside it.
//!
//! * [`ingest`]: FFmpeg sources (test pattern, files, stdin fMP4/MPEG-TS) turned into paced
//!   encoded frames plus the codec configuration a catalog needs.
//! * [`record`]: writes received frames into a playable MP4.
//! * [`publish`]: puts a source on a relay as an MSF catalog plus LOC tracks.
//! * [`captions`]: WebVTT caption tracks and a test dub track beside them.
//! * [`subscribe`]: reads a broadcast back (catalog, tracks, stats, recording, captions).
//! * [`timeline`]: keeps a recording's timestamps continuous when its publisher changes.
//! * [`caption_rx`]: the final cues and caption latency `moqcast-subscribe` collects.
//! * [`config`]: the configuration of each binary (flags, environment, serde).
//!
//! Connecting, catalog fetch and the command-line pieces the binaries share are in
//! `moqcast-client`.

pub mod caption_rx;
pub mod captions;
pub mod config;
pub mod ingest;
pub mod publish;
pub mod record;
pub mod subscribe;
pub mod timeline;

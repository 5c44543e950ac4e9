//! Shared media crate of moqcast.
//!
//! Everything two or more of the binaries need lives here, free of I/O where it can be:
//!
//! * [`catalog`]: the MSF catalog (draft-ietf-moq-msf) carried on the track named `catalog`.
//! * [`loc`]: LOC packaging (draft-ietf-moq-loc-04): object properties (timestamp, timescale, configs).
//! * [`h264`]: H.264 framing (Annex-B <-> AVCC, `avcC` records, codec strings): converted in one place.
//! * [`aac`]: AAC framing (`AudioSpecificConfig`, ADTS headers).
//! * [`flv`]: FLV tag bodies (RTMP audio/video messages, Enhanced RTMP) into frames and configs.
//! * [`ts`]: MPEG transport streams (SRT ingest: H.264 + AAC in ADTS) into frames and configs.
//! * [`info`]: typed track configurations (video, audio) and the MSF catalog of a broadcast.
//! * [`caption`]: WebVTT cues as JSON on event-timeline tracks (draft-wilaw-moq-webvtt-msf-00).
//! * [`frame`]: the in-memory unit publishers and subscribers exchange (one encoded frame).
//! * [`moq`]: the only module that names `moq-transport` (draft-18): ALPNs, namespaces, QUIC
//!   settings and the subgroup stream codec. Connecting, publishing and subscribing are in the
//!   client crate, `moqcast-client`.

pub mod aac;
pub mod caption;
pub mod catalog;
pub mod flv;
pub mod frame;
pub mod h264;
pub mod info;
pub mod loc;
pub mod moq;
pub mod opus;
pub mod time;
pub mod ts;
pub mod wav;

pub use frame::{Frame, MediaKind};

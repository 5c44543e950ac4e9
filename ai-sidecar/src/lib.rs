//! moqcast AI sidecar: live captions from a broadcast's audio, published back to the relay as
//! WebVTT caption tracks (see `ai-sidecar/README.md`).
//!
//! Speech recognition: the log-mel front end ([`audio`]), a CTranslate2 `model.bin` reader that
//! converts faster-whisper models on load ([`ct2`]), Whisper on candle ([`model`]: transcription,
//! language detection and translation into English) and where a model is found ([`locate`]).
//!
//! Translation: Marian/opus-mt models from a local directory ([`marian`]).
//!
//! Live captioning, plain code without I/O: voice activity ([`vad`]), utterance segmentation on
//! the media timeline ([`segment`]), the bounded recognition queue ([`recognize::Backlog`]) and
//! caption objects ([`cues`]). On top: audio decoding ([`audio_in`]), the recognition thread
//! ([`recognize::Recognizer`], [`transcriber`]), the per-broadcast MoQ service ([`service`]) and
//! [`metrics`].

pub mod audio;
pub mod audio_in;
pub mod config;
pub mod ct2;
pub mod cues;
pub mod dub;
pub mod dubbing;
pub mod lang;
pub mod locate;
pub mod marian;
pub mod metrics;
pub mod model;
pub mod opus_out;
pub mod providers;
pub mod recognize;
pub mod segment;
pub mod service;
pub mod stage;
pub mod stretch;
pub mod transcriber;
pub mod translate;
pub mod vad;

//! moqcast AI sidecar: Whisper speech recognition on candle (CPU by default).
//!
//! Groundwork so far: the log-mel front end ([`audio`]), a CTranslate2 `model.bin` reader that converts
//! faster-whisper models on load ([`ct2`]), and model loading plus greedy decoding ([`model`]).

pub mod audio;
pub mod ct2;
pub mod model;

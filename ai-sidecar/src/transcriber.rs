//! Whisper as the recognition worker's [`Transcriber`].

use crate::model::{DecodeOptions, WhisperModel};
use crate::recognize::{Text, Transcriber};

/// A loaded Whisper model with the decode settings for partial and final cues.
pub struct Whisper {
    model: WhisperModel,
    finals: DecodeOptions,
    partials: DecodeOptions,
}

impl Whisper {
    /// `finals` is used for final cues; partial cues always decode greedily (they are replaced
    /// within a second or two anyway).
    pub fn new(model: WhisperModel, finals: DecodeOptions, _language: &str) -> Self {
        let partials = DecodeOptions {
            beam_size: 1,
            ..finals.clone()
        };
        Self {
            model,
            finals,
            partials,
        }
    }
}

impl Transcriber for Whisper {
    fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String> {
        let opts = if is_final {
            &self.finals
        } else {
            &self.partials
        };
        let t = self
            .model
            .transcribe_with(samples, opts)
            .map_err(|e| e.to_string())?;
        Ok(Text {
            text: t.text,
            avg_logprob: t.avg_logprob,
            no_speech_prob: t.no_speech_prob,
        })
    }
}

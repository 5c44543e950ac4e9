//! Whisper as the recognition worker's [`Transcriber`], and the same pipeline run offline over a
//! whole recording ([`transcribe_recording`]).
//!
//! [`Whisper`] holds a loaded model and the decode settings of partial and final cues. Besides the
//! [`Transcriber`] trait (text only), [`Whisper::recognize`] returns the whole
//! [`Transcript`]: with `--language auto` on a multilingual model, the language each utterance
//! was heard in.
//!
//! [`transcribe_recording`] feeds a recording through the live sidecar's segmenter (voice
//! activity, pauses, pre-roll, longest utterance) and recognises each final utterance as the
//! recognition thread does, dropping what it would drop as no speech. The caption benchmark
//! measures the live pipeline's accuracy on long recordings with it, and it is the library call
//! for transcribing (or translating) a recording of any length.

use crate::model::{DecodeOptions, Language, ModelError, Transcript, WhisperModel};
use crate::recognize::{is_hallucination, Text, Transcriber};
use crate::segment::{Segmenter, SegmenterConfig, SAMPLE_RATE};

/// A loaded Whisper model with the decode settings for partial and final cues.
pub struct Whisper {
    model: WhisperModel,
    finals: DecodeOptions,
    partials: DecodeOptions,
}

impl Whisper {
    /// `finals` is used for final cues; partial cues always decode greedily (they are replaced
    /// within a second or two anyway). `language` is `auto` or a BCP-47 tag (see
    /// [`Language::parse`]) and replaces `finals.language`.
    pub fn new(model: WhisperModel, finals: DecodeOptions, language: &str) -> Self {
        let finals = DecodeOptions {
            language: Language::parse(language),
            ..finals
        };
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

    /// Transcribes (or, with [`crate::model::Task::Translate`], translates) up to 30 s of 16 kHz mono audio
    /// with the settings of final or partial cues.
    pub fn recognize(&mut self, samples: &[f32], is_final: bool) -> Result<Transcript, ModelError> {
        let opts = if is_final {
            &self.finals
        } else {
            &self.partials
        };
        self.model.transcribe_with(samples, opts)
    }

    /// As [`Self::recognize`], with the text that came before as a prompt (Whisper's
    /// `<|startofprev|>`; only its last 223 tokens count).
    pub fn recognize_after(
        &mut self,
        samples: &[f32],
        is_final: bool,
        previous: &str,
    ) -> Result<Transcript, ModelError> {
        let mut opts = if is_final {
            self.finals.clone()
        } else {
            self.partials.clone()
        };
        opts.prompt = (!previous.trim().is_empty()).then(|| previous.to_string());
        self.model.transcribe_with(samples, &opts)
    }

    /// The decode settings of final cues.
    pub fn finals(&self) -> &DecodeOptions {
        &self.finals
    }

    /// Changes the decode settings (partials follow, greedy).
    pub fn set_finals(&mut self, finals: DecodeOptions) {
        self.partials = DecodeOptions {
            beam_size: 1,
            ..finals.clone()
        };
        self.finals = finals;
    }

    pub fn model(&self) -> &WhisperModel {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut WhisperModel {
        &mut self.model
    }
}

impl Transcriber for Whisper {
    fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String> {
        let t = self
            .recognize(samples, is_final)
            .map_err(|e| e.to_string())?;
        Ok(Text {
            text: t.text,
            avg_logprob: t.avg_logprob,
            no_speech_prob: t.no_speech_prob,
            language: Some(t.language),
        })
    }
}

/// How [`transcribe_recording`] cuts and decodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordingOptions {
    /// The live sidecar's segmentation (its defaults are the sidecar's).
    pub segmenter: SegmenterConfig,
    /// Give each utterance the text of the ones before it as a prompt (at most
    /// `context_chars` characters of it, cut at a word).
    pub context_chars: usize,
}

/// One utterance of a recording and what was heard in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// From the start of the recording, ms.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Empty when the utterance was judged to hold no speech.
    pub text: String,
    /// BCP-47 tag of the spoken language.
    pub language: String,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// Recognition time.
    pub inference: std::time::Duration,
}

/// The text of a recording (see the module documentation): segments in order, the final
/// utterances of the live pipeline; partial cues are not computed.
pub fn transcribe_recording(
    whisper: &mut Whisper,
    samples: &[f32],
    opts: &RecordingOptions,
) -> Result<Vec<Segment>, ModelError> {
    let mut segmenter = Segmenter::new(opts.segmenter.clone());
    let mut utterances = vec![];
    // 20 ms chunks with their media times, as decoded audio arrives in the sidecar.
    let chunk = (SAMPLE_RATE / 50) as usize;
    for (i, c) in samples.chunks(chunk).enumerate() {
        let t_us = i as u64 * chunk as u64 * 1_000_000 / SAMPLE_RATE;
        utterances.extend(segmenter.push(t_us, c).into_iter().filter(|u| u.is_final));
    }
    utterances.extend(segmenter.flush());
    let mut out: Vec<Segment> = vec![];
    let mut context = String::new();
    for u in utterances {
        let started = std::time::Instant::now();
        let t = if opts.context_chars > 0 {
            whisper.recognize_after(&u.samples, true, &context)?
        } else {
            whisper.recognize(&u.samples, true)?
        };
        let keep = !is_hallucination(&Text {
            text: t.text.clone(),
            avg_logprob: t.avg_logprob,
            no_speech_prob: t.no_speech_prob,
            language: None,
        });
        let text = if keep { t.text } else { String::new() };
        if opts.context_chars > 0 && !text.is_empty() {
            context.push(' ');
            context.push_str(&text);
            context = tail_words(&context, opts.context_chars);
        }
        out.push(Segment {
            start_ms: u.start_us / 1000,
            end_ms: u.end_us / 1000,
            text,
            language: t.language,
            avg_logprob: t.avg_logprob,
            no_speech_prob: t.no_speech_prob,
            inference: started.elapsed(),
        });
    }
    Ok(out)
}

/// The last `max` characters of `s` or fewer, starting at a word.
fn tail_words(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    let tail = &s[cut..];
    if s[..cut].ends_with(' ') {
        return tail.to_string();
    }
    match tail.find(' ') {
        Some(i) => tail[i + 1..].to_string(),
        None => tail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_whole_words_from_the_end() {
        assert_eq!(tail_words("one two three", 100), "one two three");
        assert_eq!(tail_words("one two three", 9), "two three");
        assert_eq!(tail_words("one two three", 8), "three");
        assert_eq!(tail_words("one two three", 10), "two three");
        assert_eq!(tail_words("  é è ê ", 3), "ê");
    }
}

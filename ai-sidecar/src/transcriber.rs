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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{DecodeOptions, Language, ModelError, Transcript, WhisperModel};
use crate::recognize::{is_hallucination, Text, Transcriber};
use crate::segment::{Segmenter, SegmenterConfig, SAMPLE_RATE};

/// A loaded Whisper model with the decode settings for partial and final cues.
pub struct Whisper {
    model: WhisperModel,
    finals: DecodeOptions,
    partials: DecodeOptions,
    /// Audio context of final cues per stream ([`Self::recognize_stream`]).
    audio_context_ms: u64,
    streams: HashMap<u64, (AudioContext, u64)>,
    /// Counts calls, to forget the least recently used stream.
    calls: u64,
}

/// Most streams [`Whisper::recognize_stream`] keeps a context for; past it the least recently
/// used is forgotten.
pub const MAX_STREAMS: usize = 256;

/// Audio context the sidecar gives final cues by default ([`Whisper::set_audio_context_ms`],
/// `--audio-context-ms`): see docs/BENCHMARKS.md ("Captions: long recordings").
pub const DEFAULT_AUDIO_CONTEXT_MS: u64 = 20_000;

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
            audio_context_ms: 0,
            streams: HashMap::new(),
            calls: 0,
        }
    }

    /// How much audio of a stream's previous final utterances [`Self::recognize_stream`] puts
    /// in front of a final one ([`AudioContext`]; 0: none, the default of [`Self::new`]).
    pub fn set_audio_context_ms(&mut self, ms: u64) {
        self.audio_context_ms = ms;
        self.streams.clear();
    }

    /// As [`Self::recognize`] for utterances of one stream (a broadcast): a final one is
    /// decoded after the audio and text of the stream's previous final utterances
    /// ([`Self::set_audio_context_ms`]), and its text joins them unless it is empty or judged
    /// not to be speech ([`is_hallucination`]). Partial ones decode alone. Contexts are kept for
    /// the [`MAX_STREAMS`] most recently used streams; [`Self::forget_stream`] drops one.
    pub fn recognize_stream(
        &mut self,
        stream: u64,
        samples: &[f32],
        is_final: bool,
    ) -> Result<Transcript, ModelError> {
        if !is_final || self.audio_context_ms == 0 {
            return self.recognize(samples, is_final);
        }
        self.calls += 1;
        if !self.streams.contains_key(&stream) && self.streams.len() >= MAX_STREAMS {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let (context, used) = self
            .streams
            .entry(stream)
            .or_insert_with(|| (AudioContext::new(self.audio_context_ms), 0));
        *used = self.calls;
        let with = context.prepare(samples);
        let t = self.recognize_in_context(&with, true);
        let (context, _) = self.streams.get_mut(&stream).expect("inserted above");
        match &t {
            Ok(t) if !is_hallucination(&text_of(t)) => context.push(samples.into(), &t.text),
            _ => context.clear(),
        }
        t
    }

    /// Forgets a stream's context (it ended, or its timeline jumped).
    pub fn forget_stream(&mut self, stream: u64) {
        self.streams.remove(&stream);
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

    /// As [`Self::recognize`], for an utterance with the audio and text of the ones before it
    /// in front ([`AudioContext::prepare`]): the text is only the new speech's.
    pub fn recognize_in_context(
        &mut self,
        utterance: &WithContext,
        is_final: bool,
    ) -> Result<Transcript, ModelError> {
        let base = if is_final {
            &self.finals
        } else {
            &self.partials
        };
        let opts = DecodeOptions {
            prefix: utterance.prefix.clone(),
            ..base.clone()
        };
        self.model.transcribe_with(&utterance.samples, &opts)
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

fn text_of(t: &Transcript) -> Text {
    Text {
        text: t.text.clone(),
        avg_logprob: t.avg_logprob,
        no_speech_prob: t.no_speech_prob,
        language: Some(t.language.clone()),
    }
}

impl Transcriber for Whisper {
    fn transcribe(&mut self, samples: &[f32], is_final: bool) -> Result<Text, String> {
        let t = self
            .recognize(samples, is_final)
            .map_err(|e| e.to_string())?;
        Ok(text_of(&t))
    }
}

/// The audio and text of the last final utterances of one stream, put in front of the next
/// utterance so that Whisper hears and reads what came before it (see [`Self::prepare`]).
///
/// Whisper decodes an utterance better with the speech before it in its window: faster-whisper
/// transcribes a recording in 30 s windows, the live sidecar an utterance at a time. Here the
/// previous utterances' samples go first, and their text becomes the decode's
/// [`DecodeOptions::prefix`]: the model writes only what is new. The stream's owner (one per
/// broadcast) calls [`Self::prepare`] before recognising a final utterance and [`Self::push`]
/// after it; partial cues can go without.
#[derive(Debug, Clone)]
pub struct AudioContext {
    max_samples: usize,
    /// (samples, text) of recent finals with text, oldest first.
    recent: VecDeque<(Arc<[f32]>, String)>,
}

/// What [`AudioContext::prepare`] returns: the audio to recognise and the prefix to give.
#[derive(Debug, Clone, PartialEq)]
pub struct WithContext {
    /// The context's samples, then the utterance's.
    pub samples: Vec<f32>,
    /// The context's text, or `None` when there is no context.
    pub prefix: Option<String>,
    /// Samples of context in front of the utterance.
    pub context_samples: usize,
}

impl AudioContext {
    /// Up to `max_ms` of whole previous utterances (0: no context).
    pub fn new(max_ms: u64) -> Self {
        Self {
            max_samples: (max_ms * SAMPLE_RATE / 1000) as usize,
            recent: VecDeque::new(),
        }
    }

    /// The audio and prefix for recognising `utterance`: as many of the latest utterances as
    /// fit in the context's length, and with the utterance in Whisper's window
    /// ([`crate::recognize::MAX_JOB_MS`]).
    pub fn prepare(&self, utterance: &[f32]) -> WithContext {
        let room = (crate::recognize::MAX_JOB_MS * SAMPLE_RATE / 1000) as usize;
        let mut len = 0;
        let mut first = self.recent.len();
        for (s, _) in self.recent.iter().rev() {
            if len + s.len() > self.max_samples || len + s.len() + utterance.len() > room {
                break;
            }
            len += s.len();
            first -= 1;
        }
        let used = self.recent.range(first..);
        let mut samples = Vec::with_capacity(len + utterance.len());
        for (s, _) in used.clone() {
            samples.extend_from_slice(s);
        }
        samples.extend_from_slice(utterance);
        let prefix = (len > 0).then(|| used.map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" "));
        WithContext {
            samples,
            prefix,
            context_samples: len,
        }
    }

    /// Records a recognised final utterance. Empty text (no speech, a dropped hallucination)
    /// clears the context: what follows a silence starts afresh.
    pub fn push(&mut self, samples: Arc<[f32]>, text: &str) {
        if self.max_samples == 0 {
            return;
        }
        if text.trim().is_empty() {
            self.recent.clear();
            return;
        }
        self.recent.push_back((samples, text.trim().to_string()));
        let mut total: usize = self.recent.iter().map(|(s, _)| s.len()).sum();
        while total > self.max_samples {
            let (s, _) = self.recent.pop_front().expect("not empty while over");
            total -= s.len();
        }
    }

    /// Forgets everything (a jump in the stream, a new speaker known to the caller).
    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

/// How [`transcribe_recording`] cuts and decodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordingOptions {
    /// The live sidecar's segmentation (its defaults are the sidecar's).
    pub segmenter: SegmenterConfig,
    /// Put up to this much audio of the previous utterances in front of each utterance
    /// ([`AudioContext`]). 0: off.
    pub audio_context_ms: u64,
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
    let mut context = AudioContext::new(opts.audio_context_ms);
    for u in utterances {
        let started = std::time::Instant::now();
        let t = whisper.recognize_in_context(&context.prepare(&u.samples), true)?;
        let text = if is_hallucination(&text_of(&t)) {
            String::new()
        } else {
            t.text
        };
        context.push(u.samples.into(), &text);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_context_takes_whole_recent_utterances_that_fit() {
        let ms = |n: usize| n * SAMPLE_RATE as usize / 1000;
        let utt = |n: usize, v: f32| -> Arc<[f32]> { vec![v; ms(n)].into() };
        let mut c = AudioContext::new(5000);
        let now = vec![9.0; ms(1000)];
        assert_eq!(
            c.prepare(&now),
            WithContext {
                samples: now.clone(),
                prefix: None,
                context_samples: 0
            }
        );
        c.push(utt(2000, 1.0), "one");
        c.push(utt(2000, 2.0), " two ");
        let w = c.prepare(&now);
        assert_eq!(w.prefix.as_deref(), Some("one two"));
        assert_eq!(w.context_samples, ms(4000));
        assert_eq!(&w.samples[..3], &[1.0, 1.0, 1.0]);
        assert_eq!(w.samples[ms(2000)], 2.0);
        assert_eq!(w.samples[ms(4000)], 9.0);
        assert_eq!(w.samples.len(), ms(5000));
        // Past the length, the oldest go; an utterance longer than the context is not kept.
        c.push(utt(2000, 3.0), "three");
        assert_eq!(c.prepare(&now).prefix.as_deref(), Some("two three"));
        c.push(utt(6000, 4.0), "four");
        assert_eq!(c.prepare(&now).prefix, None);
        // Whisper's window bounds the context too.
        c.push(utt(3000, 5.0), "five");
        assert_eq!(c.prepare(&now).prefix.as_deref(), Some("five"));
        assert_eq!(c.prepare(&vec![0.0; ms(27_000)]).prefix, None);
        // No speech clears it; a context of 0 ms keeps nothing.
        c.push(utt(1000, 6.0), "");
        assert_eq!(c.prepare(&now).prefix, None);
        let mut off = AudioContext::new(0);
        off.push(utt(1000, 1.0), "one");
        assert_eq!(off.prepare(&now).prefix, None);
    }
}

//! Turns recognition results into caption track objects, without I/O.
//!
//! Every cue carries the id `u<utterance>`; partial cues have `final: false` and the final cue
//! of the same utterance replaces them (webvtt-msf cue ids, see `moqcast_media::caption`).
//! Partials are appended to the open group; each final cue starts a new group whose first
//! object repeats the latest final cues, so a viewer that joins (and starts at the newest
//! group) sees the recent captions at once.

use std::collections::{BTreeSet, VecDeque};

use moqcast_media::caption::{CaptionTimeline, Cue, MAX_CUE_TEXT_BYTES};

use crate::recognize::Recognized;
use crate::translate::TranslatedCue;

/// Final cues repeated at the start of a group.
pub const REPEATED_CUES: usize = 8;

/// One object to write to the caption track.
#[derive(Debug, Clone, PartialEq)]
pub struct CueObject {
    /// Start a new group with this object.
    pub new_group: bool,
    /// The event timeline JSON.
    pub payload: Vec<u8>,
    /// The cues it announces (the repeated ones excluded).
    pub cues: Vec<Cue>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CueWriter {
    recent: VecDeque<Cue>,
    /// Utterances whose partial cue viewers may be showing.
    shown_partials: BTreeSet<u64>,
}

fn cue_id(utterance: u64) -> String {
    format!("u{utterance}")
}

/// Removes what Whisper writes for sounds rather than speech, which on short or quiet audio is
/// mostly invented: `[Music]`, `(applause)`, `== Captions ==`, `♪`, `*laughs*`.
pub fn strip_non_speech(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut closing: Option<&str> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(end) = closing {
            if rest.starts_with(end) {
                rest = &rest[end.len()..];
                closing = None;
            } else {
                rest = &rest[c.len_utf8()..];
            }
            continue;
        }
        let opener = [("[", "]"), ("(", ")"), ("==", "=="), ("*", "*")]
            .into_iter()
            .find(|(open, _)| rest.starts_with(open));
        if let Some((open, end)) = opener {
            rest = &rest[open.len()..];
            closing = Some(end);
            continue;
        }
        if c != '♪' && c != '♫' {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().any(char::is_alphanumeric) {
        words
    } else {
        String::new()
    }
}

/// Cue text: speech only, trimmed, cut to the cue size limit at a character boundary.
fn clean(text: &str) -> String {
    truncate(strip_non_speech(text))
}

/// Cuts to the cue size limit at a character boundary.
fn truncate(mut t: String) -> String {
    if t.len() > MAX_CUE_TEXT_BYTES {
        let mut end = MAX_CUE_TEXT_BYTES;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    t
}

impl CueWriter {
    /// What to publish for a result (nothing for a partial without words).
    pub fn on_result(&mut self, r: &Recognized) -> Option<CueObject> {
        let start_ms = r.start_us / 1000;
        let end_ms = (r.end_us / 1000).max(start_ms);
        let text = clean(&r.text);
        if !r.is_final {
            if text.is_empty() {
                return None;
            }
            self.shown_partials.insert(r.utterance);
            let cue = Cue::partial(cue_id(r.utterance), start_ms, end_ms, text);
            return Some(CueObject {
                new_group: false,
                payload: CaptionTimeline::from_cues(vec![cue.clone()]).to_json(),
                cues: vec![cue],
            });
        }
        self.final_cue(r.utterance, start_ms, end_ms, text, &r.merged)
    }

    /// The object for a translated final cue: the source cue's id and times, the translated
    /// text. Translated tracks carry no partial cues.
    pub fn on_translated(&mut self, t: &TranslatedCue) -> Option<CueObject> {
        let start_ms = t.start_us / 1000;
        let end_ms = (t.end_us / 1000).max(start_ms);
        let text = truncate(t.text.split_whitespace().collect::<Vec<_>>().join(" "));
        self.final_cue(t.utterance, start_ms, end_ms, text, &[])
    }

    fn final_cue(
        &mut self,
        utterance: u64,
        start_ms: u64,
        end_ms: u64,
        text: String,
        merged: &[u64],
    ) -> Option<CueObject> {
        let mut cues = Vec::new();
        // Utterances merged into this one: withdraw partials shown for them.
        for id in merged {
            if self.shown_partials.remove(id) {
                let mut c = Cue::new(start_ms, start_ms, "");
                c.id = Some(cue_id(*id));
                cues.push(c);
            }
        }
        let had_partial = self.shown_partials.remove(&utterance);
        if text.is_empty() && !had_partial && cues.is_empty() {
            return None;
        }
        let mut cue = Cue::new(start_ms, end_ms, text);
        cue.id = Some(cue_id(utterance));
        cues.push(cue.clone());
        let mut all: Vec<Cue> = self.recent.iter().cloned().collect();
        all.extend(cues.iter().cloned());
        if !cue.text.is_empty() {
            self.recent.push_back(cue);
            while self.recent.len() > REPEATED_CUES {
                self.recent.pop_front();
            }
        }
        Some(CueObject {
            new_group: true,
            payload: CaptionTimeline::from_cues(all).to_json(),
            cues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(utterance: u64, is_final: bool, text: &str) -> Recognized {
        Recognized {
            utterance,
            start_us: utterance * 3_000_000,
            end_us: utterance * 3_000_000 + 2_500_000,
            is_final,
            text: text.into(),
            inference: Duration::ZERO,
            audio_ms: 2500,
            merged: vec![],
            language: None,
            audio: None,
        }
    }

    #[test]
    fn sound_annotations_are_not_speech() {
        assert_eq!(strip_non_speech("== Captions =="), "");
        assert_eq!(strip_non_speech(" [Music] "), "");
        assert_eq!(strip_non_speech("♪ ♪"), "");
        assert_eq!(
            strip_non_speech("(applause) Thank you. [laughs]"),
            "Thank you."
        );
        assert_eq!(
            strip_non_speech("It costs 5 dollars."),
            "It costs 5 dollars."
        );
        assert_eq!(strip_non_speech("unclosed [bracket words"), "unclosed");
        let mut w = CueWriter::default();
        assert!(w.on_result(&result(0, false, "== Captions ==")).is_none());
    }

    #[test]
    fn partials_then_a_final_that_replaces_them() {
        let mut w = CueWriter::default();
        let p = w.on_result(&result(0, false, " Hello")).unwrap();
        assert!(!p.new_group);
        let parsed = CaptionTimeline::parse(&p.payload).unwrap();
        assert_eq!(parsed.cues[0].id.as_deref(), Some("u0"));
        assert!(!parsed.cues[0].is_final);
        assert_eq!(parsed.cues[0].text, "Hello");
        let f = w.on_result(&result(0, true, "Hello world.")).unwrap();
        assert!(f.new_group);
        let parsed = CaptionTimeline::parse(&f.payload).unwrap();
        assert_eq!(parsed.cues.len(), 1);
        assert!(parsed.cues[0].is_final);
        assert_eq!((parsed.cues[0].start_ms, parsed.cues[0].end_ms), (0, 2500));
        // The next group repeats the earlier final.
        let f = w.on_result(&result(1, true, "Second.")).unwrap();
        let parsed = CaptionTimeline::parse(&f.payload).unwrap();
        let texts: Vec<&str> = parsed.cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, vec!["Hello world.", "Second."]);
        assert_eq!(f.cues.len(), 1, "only the new cue is new");
    }

    #[test]
    fn silence_publishes_nothing_but_withdraws_shown_partials() {
        let mut w = CueWriter::default();
        assert!(w.on_result(&result(0, false, "  ")).is_none());
        assert!(w.on_result(&result(0, true, "")).is_none());
        w.on_result(&result(1, false, "Uh")).unwrap();
        let f = w.on_result(&result(1, true, "")).unwrap();
        let parsed = CaptionTimeline::parse(&f.payload).unwrap();
        assert_eq!(parsed.cues.len(), 1);
        assert_eq!(parsed.cues[0].text, "");
        assert!(parsed.cues[0].is_final);
        // Empty finals are not repeated later.
        let f = w.on_result(&result(2, true, "Words.")).unwrap();
        assert_eq!(CaptionTimeline::parse(&f.payload).unwrap().cues.len(), 1);
    }

    #[test]
    fn translated_cues_keep_the_source_id_and_times() {
        let mut w = CueWriter::default();
        let t = TranslatedCue {
            utterance: 7,
            start_us: 21_000_000,
            end_us: 23_500_000,
            lang: "es".into(),
            text: " Hola  mundo. ".into(),
            took: Duration::ZERO,
        };
        let f = w.on_translated(&t).unwrap();
        assert!(f.new_group);
        let c = &CaptionTimeline::parse(&f.payload).unwrap().cues[0];
        assert_eq!(
            (
                c.id.as_deref(),
                c.start_ms,
                c.end_ms,
                c.text.as_str(),
                c.is_final
            ),
            (Some("u7"), 21_000, 23_500, "Hola mundo.", true)
        );
    }

    #[test]
    fn merged_utterances_withdraw_their_partials_and_repeats_are_bounded() {
        let mut w = CueWriter::default();
        w.on_result(&result(3, false, "part")).unwrap();
        let mut r = result(4, true, "Merged text.");
        r.merged = vec![3];
        let f = w.on_result(&r).unwrap();
        let ids: Vec<_> = f.cues.iter().map(|c| c.id.clone().unwrap()).collect();
        assert_eq!(ids, vec!["u3", "u4"]);
        for i in 10..30 {
            w.on_result(&result(i, true, "x")).unwrap();
        }
        let f = w.on_result(&result(31, true, "last")).unwrap();
        assert_eq!(
            CaptionTimeline::parse(&f.payload).unwrap().cues.len(),
            REPEATED_CUES + 1
        );
        let long = "é".repeat(MAX_CUE_TEXT_BYTES);
        let f = w.on_result(&result(40, true, &long)).unwrap();
        assert!(CaptionTimeline::parse(&f.payload).is_ok());
    }
}

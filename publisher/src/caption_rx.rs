//! What `moqcast-subscribe --captions FILE --caption-latency` keeps of a caption track, without
//! I/O: the final cues (deduplicated by id, a later version replacing an earlier one) and, for
//! each final cue, the delay from the end of its utterance in the audio to its arrival.
//!
//! The end of an utterance is the cue's `end` on the media timeline. The subscriber maps media
//! time to wall-clock time through the audio track: each audio object carries its media
//! timestamp and the publisher's SEND_TIME, and a live publisher sends audio as it happens. A
//! cue ending at media time `e` therefore ended, in wall-clock time, at
//! `send_time(a) + (e - timestamp(a))` for the audio object `a` nearest `e`. Cues whose end lies
//! outside the audio received (repeated on joining, or after the audio ended) are not measured.

use std::collections::BTreeMap;

use moqcast_media::caption::{self, CaptionError, CaptionTimeline, Cue};

/// Most audio objects remembered for the media-to-wall-clock map (over an hour at 50/s).
const MAX_AUDIO_POINTS: usize = 200_000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CaptionCollector {
    /// Final cues by id (or by start time and text when they have none).
    finals: BTreeMap<String, Cue>,
    /// (media µs, send wall-clock µs) of audio objects, in arrival order.
    audio: Vec<(u64, u64)>,
    /// Delay of each final cue, ms.
    latencies_ms: Vec<f64>,
    /// Partial cues seen.
    pub partials: u64,
}

impl CaptionCollector {
    /// Records an audio object's media timestamp and SEND_TIME.
    pub fn on_audio(&mut self, media_us: u64, send_us: u64) {
        if self.audio.len() < MAX_AUDIO_POINTS {
            self.audio.push((media_us, send_us));
        }
    }

    /// The wall-clock time of media time `t`, when audio around it was received.
    fn wall_clock(&self, t: u64) -> Option<u64> {
        let first = self.audio.iter().map(|a| a.0).min()?;
        let last = self.audio.iter().map(|a| a.0).max()?;
        // Objects are ~20 ms; allow a little beyond the received range.
        if t + 100_000 < first || t > last + 100_000 {
            return None;
        }
        let (media, send) = self
            .audio
            .iter()
            .min_by_key(|(m, _)| m.abs_diff(t))
            .copied()?;
        Some(if t >= media {
            send + (t - media)
        } else {
            send.saturating_sub(media - t)
        })
    }

    /// Parses one caption object that arrived at wall-clock `arrival_us`; returns how many new
    /// final cues it held.
    pub fn on_object(&mut self, payload: &[u8], arrival_us: u64) -> Result<usize, CaptionError> {
        let timeline = CaptionTimeline::parse(payload)?;
        let mut new = 0;
        for cue in timeline.cues {
            if !cue.is_final {
                self.partials += 1;
                continue;
            }
            let key = cue
                .id
                .clone()
                .unwrap_or_else(|| format!("{:012}:{}", cue.start_ms, cue.text));
            if self.finals.get(&key) == Some(&cue) {
                continue; // repeated at the start of a group
            }
            let first_time = !self.finals.contains_key(&key);
            if first_time && !cue.text.is_empty() {
                new += 1;
                if let Some(end) = self.wall_clock(cue.end_ms * 1000) {
                    self.latencies_ms
                        .push(arrival_us.saturating_sub(end) as f64 / 1000.0);
                }
            }
            self.finals.insert(key, cue);
        }
        Ok(new)
    }

    /// The final cues with text, by start time.
    pub fn cues(&self) -> Vec<Cue> {
        let mut cues: Vec<Cue> = self
            .finals
            .values()
            .filter(|c| !c.text.trim().is_empty())
            .cloned()
            .collect();
        cues.sort_by_key(|c| (c.start_ms, c.end_ms));
        cues
    }

    /// The final cues as a WebVTT file.
    pub fn webvtt(&self) -> String {
        caption::to_webvtt(&self.cues())
    }

    /// The `p` quantile (0..=1) of the caption delays, ms.
    pub fn latency(&self, p: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        Some(v[((v.len() - 1) as f64 * p).round() as usize])
    }

    /// How many final cues were measured.
    pub fn measured(&self) -> usize {
        self.latencies_ms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(cues: Vec<Cue>) -> Vec<u8> {
        CaptionTimeline::from_cues(cues).to_json()
    }

    fn cue(id: &str, start: u64, end: u64, text: &str, is_final: bool) -> Cue {
        let mut c = Cue::new(start, end, text);
        c.id = Some(id.into());
        c.is_final = is_final;
        c
    }

    #[test]
    fn finals_replace_partials_and_repeats_are_not_counted_twice() {
        let mut c = CaptionCollector::default();
        // Audio from media 0 s, sent at wall clock 1000 s, 20 ms objects for 10 s.
        for i in 0..500u64 {
            c.on_audio(i * 20_000, 1_000_000_000 + i * 20_000);
        }
        assert_eq!(
            c.on_object(
                &object(vec![cue("u0", 1000, 2000, "Hel", false)]),
                1_001_900_000
            )
            .unwrap(),
            0
        );
        let first = cue("u0", 1000, 2500, "Hello there.", true);
        // The final arrives 1.2 s after the utterance ended (media 2.5 s = wall 1002.5 s).
        assert_eq!(
            c.on_object(&object(vec![first.clone()]), 1_003_700_000)
                .unwrap(),
            1
        );
        let second = cue("u1", 4000, 5000, "Second one.", true);
        // The next group repeats the first cue.
        assert_eq!(
            c.on_object(&object(vec![first, second]), 1_005_800_000)
                .unwrap(),
            1
        );
        assert_eq!(c.measured(), 2);
        assert_eq!(c.latency(0.0), Some(800.0));
        assert_eq!(c.latency(1.0), Some(1200.0));
        assert_eq!(c.partials, 1);
        let vtt = c.webvtt();
        assert!(vtt.starts_with("WEBVTT\n"));
        assert!(
            vtt.contains("u0\n00:00:01.000 --> 00:00:02.500\nHello there.\n"),
            "{vtt}"
        );
        assert!(vtt.contains("Second one."));
    }

    #[test]
    fn cues_outside_the_audio_received_are_not_measured() {
        let mut c = CaptionCollector::default();
        for i in 0..100u64 {
            c.on_audio(60_000_000 + i * 20_000, 2_000_000_000 + i * 20_000);
        }
        // A cue from before this subscriber joined, repeated at the group start.
        c.on_object(
            &object(vec![cue("u7", 10_000, 12_000, "Old.", true)]),
            2_000_100_000,
        )
        .unwrap();
        assert_eq!(c.measured(), 0);
        assert_eq!(c.cues().len(), 1);
        // An empty final withdraws a partial and is not written.
        c.on_object(
            &object(vec![cue("u8", 60_000, 60_500, "", true)]),
            2_000_900_000,
        )
        .unwrap();
        assert_eq!(c.cues().len(), 1);
        assert!(c.on_object(b"not json", 0).is_err());
    }
}

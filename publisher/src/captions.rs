//! Extra tracks `moqcast-publish` can add beside audio and video:
//!
//! * `--captions FILE.vtt`: a WebVTT file published as a caption track `captions-<lang>`
//!   (draft-wilaw-moq-webvtt-msf-00, see [`moqcast_media::caption`]). Cue times in the file are
//!   relative to the start of the publication (media time 0); each cue is published when the
//!   media reaches its start.
//! * `--test-dub LANG`: the original audio packets again, as a second audio track
//!   `audio-<LANG>` in the same `altGroup`, so that a viewer's audio menu has something to
//!   switch to before a real dubbing service runs.
//!
//! [`parse_webvtt`] and [`CueSchedule`] are plain code without I/O; [`ExtraTracks`] writes
//! through the broadcast's track publishers.

use bytes::Bytes;
use moqcast_client::{BroadcastPublisher, TrackError, TrackPublisher};
use moqcast_media::{
    caption::{self, CaptionTimeline, Cue, CueSettings},
    catalog::Catalog,
    loc::{LocProperties, TIMESCALE_US},
    moq::ExtensionHeaders,
    time::unix_micros,
    MediaKind,
};

/// Largest WebVTT file read, in bytes.
pub const MAX_WEBVTT_BYTES: usize = 8 * 1024 * 1024;

/// Most earlier cues repeated at the start of a caption group (see [`CueSchedule::due`]).
pub const MAX_REPEATED_CUES: usize = 16;

/// The `altGroup` that the original audio and its test dub share (the catalog sets it on the
/// audio already; another source's catalog may not).
pub use moqcast_media::info::AUDIO_ALT_GROUP;

/// Why a WebVTT file was rejected. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebVttError {
    /// The file is larger than [`MAX_WEBVTT_BYTES`].
    #[error("the WebVTT file is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Size of the file.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The first line is not `WEBVTT`.
    #[error("not a WebVTT file: the first line must be \"WEBVTT\" (optionally followed by a space and a title)")]
    MissingHeader,
    /// A cue timing line is malformed.
    #[error("line {line}: {reason}")]
    Timing {
        /// Line of the timing line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A cue is not valid as a moqcast caption cue.
    #[error("line {line}: {source}")]
    Cue {
        /// Line of the cue's timing line.
        line: usize,
        /// What is wrong.
        source: caption::CaptionError,
    },
    /// The file holds no cue.
    #[error("the WebVTT file has no cues (a cue is a line \"HH:MM:SS.mmm --> HH:MM:SS.mmm\" followed by its text)")]
    NoCues,
}

/// Parses a WebVTT timestamp: `HH:MM:SS.mmm` (hours may have more digits) or `MM:SS.mmm`.
fn parse_timestamp(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a WebVTT timestamp (HH:MM:SS.mmm or MM:SS.mmm)");
    let (clock, millis) = text.split_once('.').ok_or_else(bad)?;
    if millis.len() != 3 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (hours, minutes, seconds) = match parts.as_slice() {
        [h, m, s] if digits(h) && h.len() >= 2 && m.len() == 2 && s.len() == 2 => (*h, *m, *s),
        [m, s] if m.len() == 2 && s.len() == 2 => ("0", *m, *s),
        _ => return Err(bad()),
    };
    if !digits(minutes) || !digits(seconds) {
        return Err(bad());
    }
    let hours: u64 = hours.parse().map_err(|_| bad())?;
    let minutes: u64 = minutes.parse().map_err(|_| bad())?;
    let seconds: u64 = seconds.parse().map_err(|_| bad())?;
    if minutes > 59 || seconds > 59 {
        return Err(format!("{text:?}: minutes and seconds must be below 60"));
    }
    let millis: u64 = millis.parse().map_err(|_| bad())?;
    hours
        .checked_mul(3_600_000)
        .and_then(|h| h.checked_add(minutes * 60_000 + seconds * 1000 + millis))
        .ok_or_else(bad)
}

/// Parses `start --> end [settings]` into (start ms, end ms, settings, region).
fn parse_timing(line: &str) -> Result<(u64, u64, Option<CueSettings>, Option<String>), String> {
    let (start, rest) = line
        .split_once("-->")
        .ok_or_else(|| "a cue timing line needs \"-->\"".to_string())?;
    let start = parse_timestamp(start.trim())?;
    let mut words = rest.split_whitespace();
    let end = parse_timestamp(
        words
            .next()
            .ok_or("the cue has no end time after \"-->\"")?,
    )?;
    if end < start {
        return Err(format!(
            "the cue ends ({end} ms) before it starts ({start} ms)"
        ));
    }
    let mut settings = CueSettings::default();
    let mut any = false;
    let mut region = None;
    for word in words {
        let (name, value) = word
            .split_once(':')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| format!("cue setting {word:?} is not NAME:VALUE"))?;
        let slot = match name {
            "vertical" => &mut settings.vertical,
            "line" => &mut settings.line,
            "position" => &mut settings.position,
            "size" => &mut settings.size,
            "align" => &mut settings.align,
            "region" => &mut region,
            // WebVTT parsers ignore settings they do not know.
            _ => continue,
        };
        *slot = Some(value.to_string());
        any |= name != "region";
    }
    Ok((start, end, any.then_some(settings), region))
}

/// WebVTT cue text as plain text (moqcast cues carry plain text): markup tags such as `<b>`,
/// `<v Speaker>` or `<00:00:01.000>` are removed and character references decoded.
fn plain_text(cue_text: &str) -> String {
    let mut out = String::with_capacity(cue_text.len());
    let mut rest = cue_text;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => rest = "",
            }
            continue;
        }
        let entity = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&nbsp;", '\u{a0}'),
            ("&lrm;", '\u{200e}'),
            ("&rlm;", '\u{200f}'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .into_iter()
        .find(|(name, _)| rest.starts_with(name));
        match entity {
            Some((name, c)) => {
                out.push(c);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses a WebVTT file into caption cues, in file order. Cues without an identifier get
/// `cue-N` (N counting from 1), so that receivers can recognise a cue sent twice. `NOTE`,
/// `STYLE` and `REGION` blocks are skipped.
pub fn parse_webvtt(text: &str) -> Result<Vec<Cue>, WebVttError> {
    if text.len() > MAX_WEBVTT_BYTES {
        return Err(WebVttError::TooLarge {
            size: text.len(),
            max: MAX_WEBVTT_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // WebVTT line terminators: CRLF, LF or CR.
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = normalized.split('\n').collect();
    let header = lines.first().copied().unwrap_or("");
    if !(header == "WEBVTT" || header.starts_with("WEBVTT ") || header.starts_with("WEBVTT\t")) {
        return Err(WebVttError::MissingHeader);
    }
    // Blocks are runs of non-empty lines; the first block is the header.
    let mut blocks: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            blocks.extend(current.take());
        } else {
            current
                .get_or_insert_with(|| (i + 1, Vec::new()))
                .1
                .push(line);
        }
    }
    blocks.extend(current.take());

    let mut cues = Vec::new();
    for (first_line, block) in blocks.into_iter().skip(1) {
        let head = block[0];
        if head == "NOTE" || head.starts_with("NOTE ") || head.starts_with("NOTE\t") {
            continue;
        }
        if (head == "STYLE" || head == "REGION") && !block.iter().any(|l| l.contains("-->")) {
            continue;
        }
        let (id, timing_index) = if head.contains("-->") {
            (None, 0)
        } else if block.len() > 1 && block[1].contains("-->") {
            (Some(head.trim().to_string()), 1)
        } else {
            return Err(WebVttError::Timing {
                line: first_line,
                reason: format!(
                    "expected a cue timing line \"HH:MM:SS.mmm --> HH:MM:SS.mmm\", found {head:?}"
                ),
            });
        };
        let line = first_line + timing_index;
        let (start, end, settings, region) = parse_timing(block[timing_index])
            .map_err(|reason| WebVttError::Timing { line, reason })?;
        let text = plain_text(&block[timing_index + 1..].join("\n"));
        let mut cue = Cue::new(start, end, text);
        cue.id = Some(id.unwrap_or_else(|| format!("cue-{}", cues.len() + 1)));
        cue.settings = settings;
        cue.region = region;
        cue.validate()
            .map_err(|source| WebVttError::Cue { line, source })?;
        cues.push(cue);
    }
    if cues.is_empty() {
        return Err(WebVttError::NoCues);
    }
    Ok(cues)
}

/// Hands out cues as the media time reaches their start.
#[derive(Debug, Clone)]
pub struct CueSchedule {
    /// Sorted by start time.
    cues: Vec<Cue>,
    next: usize,
}

impl CueSchedule {
    pub fn new(mut cues: Vec<Cue>) -> Self {
        cues.sort_by_key(|c| (c.start_ms, c.end_ms));
        Self { cues, next: 0 }
    }

    /// The caption objects due at media time `now_ms`, in order: one per cue whose start has
    /// been reached. Each is the first object of a new group, and holds (webvtt-msf: "the
    /// first object of each group holds all cues so far") the earlier cues still showing at
    /// the new cue's start, at most [`MAX_REPEATED_CUES`] of them, then the new cue; a
    /// viewer that joins late thus sees what is on screen. Finished cues are not repeated,
    /// which keeps objects small on long files.
    pub fn due(&mut self, now_ms: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(cue) = self.cues.get(self.next).filter(|c| c.start_ms <= now_ms) {
            let mut showing: Vec<Cue> = self.cues[..self.next]
                .iter()
                .filter(|c| c.end_ms > cue.start_ms)
                .cloned()
                .collect();
            showing.drain(..showing.len().saturating_sub(MAX_REPEATED_CUES));
            showing.push(cue.clone());
            let timeline = CaptionTimeline::from_cues(showing);
            out.push((cue.start_ms, timeline.to_json()));
            self.next += 1;
        }
        out
    }

    /// Cues not yet handed out.
    pub fn remaining(&self) -> usize {
        self.cues.len() - self.next
    }
}

/// What `--captions` and `--test-dub` ask for.
#[derive(Debug, Clone, Default)]
pub struct ExtraTrackOptions {
    /// Caption cues and their BCP 47 language.
    pub captions: Option<(Vec<Cue>, String)>,
    /// Language of the test dub track.
    pub test_dub: Option<String>,
}

/// A loose BCP 47 check: subtags of 1 to 8 letters or digits joined by `-`, the first letters.
pub fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first_ok = parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    first_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Adds the caption and test-dub tracks to a catalog built by
/// [`crate::publish::catalog_for`]. The test dub needs an audio track to copy.
pub fn extend_catalog(cat: &mut Catalog, opts: &ExtraTrackOptions) -> anyhow::Result<()> {
    if let Some((_, lang)) = &opts.captions {
        anyhow::ensure!(
            is_language_tag(lang),
            "--captions-lang {lang:?} is not a BCP 47 language tag such as \"en\" or \"pt-BR\""
        );
        let mut track = caption::caption_track(
            &format!("captions-{lang}"),
            lang,
            &format!("Captions ({lang})"),
        );
        if cat.track("video").is_some() {
            track.depends = Some(vec!["video".into()]);
        }
        track.timescale = Some(TIMESCALE_US);
        cat.tracks.push(track);
    }
    if let Some(lang) = &opts.test_dub {
        anyhow::ensure!(
            is_language_tag(lang),
            "--test-dub {lang:?} is not a BCP 47 language tag such as \"es\" or \"pt-BR\""
        );
        let original = cat
            .track_mut("audio")
            .ok_or_else(|| anyhow::anyhow!("--test-dub needs an input with audio"))?;
        let alt_group = *original.alt_group.get_or_insert(AUDIO_ALT_GROUP);
        let mut dub = original.clone();
        dub.name = format!("audio-{lang}");
        dub.lang = Some(lang.clone());
        dub.label = Some(format!("Dub ({lang}, test)"));
        dub.alt_group = Some(alt_group);
        cat.tracks.push(dub);
    }
    cat.validate()
        .map_err(|e| anyhow::anyhow!("catalog with the extra tracks: {e}"))?;
    Ok(())
}

/// The caption and test-dub tracks of a running publication.
pub struct ExtraTracks {
    captions: Option<(CueSchedule, TrackPublisher)>,
    dub: Option<TrackPublisher>,
    /// Highest media time seen, in µs (frames may come in decode order).
    media_time_us: u64,
}

impl ExtraTracks {
    /// Creates the tracks in the broadcast (call before announcing it).
    pub fn create(
        opts: ExtraTrackOptions,
        broadcast: &mut BroadcastPublisher,
    ) -> Result<Self, TrackError> {
        let captions = match opts.captions {
            Some((cues, lang)) => Some((
                CueSchedule::new(cues),
                broadcast.create_track(&format!("captions-{lang}"))?,
            )),
            None => None,
        };
        let dub = match &opts.test_dub {
            Some(lang) => Some(broadcast.create_track(&format!("audio-{lang}"))?),
            None => None,
        };
        Ok(Self {
            captions,
            dub,
            media_time_us: 0,
        })
    }

    /// Called before a frame is written to its own track: publishes the cues that are due by
    /// the frame's time.
    pub fn before_frame(&mut self, pts_us: u64) -> Result<(), TrackError> {
        self.media_time_us = self.media_time_us.max(pts_us);
        if let Some((schedule, track)) = self.captions.as_mut() {
            for (start_ms, payload) in schedule.due(self.media_time_us / 1000) {
                let mut props = LocProperties::media_time(start_ms * 1000, TIMESCALE_US);
                props.send_time_us = Some(unix_micros());
                track.start_group()?;
                track.write(props.to_extension_headers(), Bytes::from(payload))?;
            }
        }
        Ok(())
    }

    /// Called after an audio frame was written: copies it onto the test dub track, starting a
    /// group when the original did.
    pub fn after_frame(
        &mut self,
        kind: MediaKind,
        started_group: bool,
        props: &ExtensionHeaders,
        payload: &Bytes,
    ) -> Result<(), TrackError> {
        if let (MediaKind::Audio, Some(dub)) = (kind, self.dub.as_mut()) {
            if started_group {
                dub.start_group()?;
            }
            dub.write(props.clone(), payload.clone())?;
        }
        Ok(())
    }

    /// Finishes the open groups (end of the publication).
    pub fn finish(&mut self) {
        if let Some((_, track)) = self.captions.as_mut() {
            track.finish_group();
        }
        if let Some(dub) = self.dub.as_mut() {
            dub.finish_group();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moqcast_media::catalog;

    const SAMPLE: &str = "WEBVTT - a test\n\nNOTE a comment\nover two lines\n\n1\n00:00:01.000 --> 00:00:02.500 align:start line:85%\nHello\nworld\n\n00:03.000 --> 00:04.000\n<b>Second</b> &amp; <v Ann>last</v> & &lt;3\n";

    #[test]
    fn parses_cues_ids_settings_and_short_timestamps() {
        let cues = parse_webvtt(SAMPLE).unwrap();
        assert_eq!(cues.len(), 2);
        assert_eq!(cues[0].id.as_deref(), Some("1"));
        assert_eq!((cues[0].start_ms, cues[0].end_ms), (1000, 2500));
        assert_eq!(cues[0].text, "Hello\nworld");
        let s = cues[0].settings.as_ref().unwrap();
        assert_eq!(
            (s.align.as_deref(), s.line.as_deref()),
            (Some("start"), Some("85%"))
        );
        assert_eq!(cues[1].id.as_deref(), Some("cue-2"));
        assert_eq!((cues[1].start_ms, cues[1].end_ms), (3000, 4000));
        assert_eq!(cues[1].text, "Second & last & <3");
    }

    #[test]
    fn accepts_bom_crlf_and_long_hours() {
        let cues =
            parse_webvtt("\u{feff}WEBVTT\r\n\r\n100:00:00.001 --> 100:00:00.002\r\nx\r\n").unwrap();
        assert_eq!(cues[0].start_ms, 360_000_001);
    }

    #[test]
    fn malformed_files_say_what_and_where() {
        assert_eq!(
            parse_webvtt("1\n00:00:01.000 --> 00:00:02.000\nx\n"),
            Err(WebVttError::MissingHeader)
        );
        let err = parse_webvtt("WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nx\n").unwrap_err();
        assert!(matches!(err, WebVttError::Timing { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("00:00:0x.000"), "{err}");
        let err = parse_webvtt("WEBVTT\n\nhello\nworld\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 3: expected a cue timing line"),
            "{err}"
        );
        let err = parse_webvtt("WEBVTT\n\n00:00:05.000 --> 00:00:01.000\nx\n").unwrap_err();
        assert!(err.to_string().contains("before it starts"), "{err}");
        let err =
            parse_webvtt("WEBVTT\n\n00:00:01.000 --> 00:00:02.000 align:middle\nx\n").unwrap_err();
        assert!(matches!(err, WebVttError::Cue { line: 3, .. }), "{err}");
        let err = parse_webvtt("WEBVTT\n\n00:00:01.000 00:00:02.000\nx\n").unwrap_err();
        assert!(err.to_string().contains("-->"), "{err}");
        let err = parse_webvtt("WEBVTT\n\n00:00:61.000 --> 00:01:02.000\nx\n").unwrap_err();
        assert!(err.to_string().contains("below 60"), "{err}");
        assert_eq!(
            parse_webvtt("WEBVTT\n\nNOTE nothing\n"),
            Err(WebVttError::NoCues)
        );
    }

    #[test]
    fn schedule_releases_cues_at_their_start_and_repeats_showing_ones() {
        let mut s = CueSchedule::new(parse_webvtt(SAMPLE).unwrap());
        assert!(s.due(999).is_empty());
        let first = s.due(1000);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, 1000);
        let t = CaptionTimeline::parse(&first[0].1).unwrap();
        assert_eq!(t.cues.len(), 1);
        // At 3 s the first cue (ended at 2.5 s) is not repeated.
        let second = s.due(10_000);
        assert_eq!(second.len(), 1);
        assert_eq!(CaptionTimeline::parse(&second[0].1).unwrap().cues.len(), 1);
        assert_eq!(s.remaining(), 0);

        let overlapping = "WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nlong\n\n00:00:01.000 --> 00:00:02.000\nshort\n";
        let mut s = CueSchedule::new(parse_webvtt(overlapping).unwrap());
        let objs = s.due(1500);
        assert_eq!(objs.len(), 2);
        let t = CaptionTimeline::parse(&objs[1].1).unwrap();
        let texts: Vec<&str> = t.cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["long", "short"]);
    }

    #[test]
    fn catalog_gets_caption_and_dub_tracks() {
        let mut cat = Catalog::new();
        let mut audio = catalog::Track::new("audio", catalog::packaging::LOC);
        audio.role = Some(catalog::role::AUDIO.into());
        audio.codec = Some("opus".into());
        audio.samplerate = Some(48_000);
        audio.channel_config = Some("2".into());
        cat.tracks.push(audio);
        let opts = ExtraTrackOptions {
            captions: Some((parse_webvtt(SAMPLE).unwrap(), "en".into())),
            test_dub: Some("es".into()),
        };
        extend_catalog(&mut cat, &opts).unwrap();
        let cap = cat.track("captions-en").unwrap();
        assert_eq!(cap.role.as_deref(), Some(catalog::role::CAPTION));
        assert_eq!(cap.lang.as_deref(), Some("en"));
        let dub = cat.track("audio-es").unwrap();
        assert_eq!(dub.label.as_deref(), Some("Dub (es, test)"));
        assert_eq!(dub.alt_group, Some(AUDIO_ALT_GROUP));
        assert_eq!(cat.track("audio").unwrap().alt_group, Some(AUDIO_ALT_GROUP));
        let parsed = Catalog::parse(&cat.to_json()).unwrap();
        assert_eq!(parsed.caption_tracks().count(), 1);

        let bad = ExtraTrackOptions {
            test_dub: Some("not a tag".into()),
            ..Default::default()
        };
        assert!(extend_catalog(&mut Catalog::new(), &bad)
            .unwrap_err()
            .to_string()
            .contains("BCP 47"));
        let no_audio = ExtraTrackOptions {
            test_dub: Some("es".into()),
            ..Default::default()
        };
        assert!(extend_catalog(&mut Catalog::new(), &no_audio)
            .unwrap_err()
            .to_string()
            .contains("needs an input with audio"));
    }
}

//! WebVTT captions as JSON cues on MSF event timeline tracks: draft-wilaw-moq-webvtt-msf-00
//! ("WebVTT Packaging for MOQT Streaming Format", W. Law, S. Nandakumar, 6 July 2026).
//!
//! A caption track is an MSF event timeline track (draft-ietf-moq-msf-01 §8) with `eventType`
//! [`WEBVTT_EVENT_TYPE`] (webvtt-msf §"Catalog Declaration"); build its catalog entry with
//! [`caption_track`]. Each MOQT object on it is a JSON array of event timeline records (msf-01
//! §8.1); a cue is the record `{"m": start, "data": {...}}` with the `data` fields of
//! webvtt-msf §"Cue Structure":
//!
//! | key | type | |
//! |---|---|---|
//! | `start`, `end` | Number | media time in milliseconds; `m` equals `start` |
//! | `id` | String | optional cue identifier |
//! | `text` | String | cue payload |
//! | `settings` | Object | optional `vertical`, `line`, `position`, `size`, `align` (Strings) |
//! | `region` | String | optional region identifier |
//! | `final` | Boolean | moqcast extension: `false` marks a partial cue (absent means `true`) |
//! | `lang` | String | moqcast extension: BCP 47 tag of this cue, when it differs from the track's |
//!
//! Partial cues let a live captioner show words early: a partial cue carries an `id`, and a
//! later cue with the same `id` (partial again, or final) replaces it. Receivers that do not
//! know `final` show partial cues as ordinary ones. Unknown `data` fields are preserved.
//!
//! The first object of each group holds all cues so far and later objects only new ones
//! (webvtt-msf §"Event Timeline Track Structure"); a timeline may begin with the regions and
//! styles record of webvtt-msf §"Regions and Styles" ([`CaptionHeader`]).
//!
//! moqcast treats `text` as plain text: [`to_webvtt`] escapes `&`, `<` and `-->`, so WebVTT
//! cue-text tags (which the draft allows in `text`) come out literally.

use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{self, Track};

/// The event timeline type of WebVTT cues (webvtt-msf §"IANA Considerations").
pub const WEBVTT_EVENT_TYPE: &str = "urn:msf:captions:webvtt";

/// MIME type of an event timeline track (msf-01 §8.2).
pub const JSON_MIME_TYPE: &str = "application/json";

/// Largest single cue record [`Cue::parse`] accepts, in bytes.
pub const MAX_CUE_JSON_BYTES: usize = 16 * 1024;

/// Longest cue text accepted, in bytes (webvtt-msf §"Content Sanitization" asks receivers to
/// limit it).
pub const MAX_CUE_TEXT_BYTES: usize = 4096;

/// Largest timeline object [`CaptionTimeline::parse`] accepts, in bytes.
pub const MAX_TIMELINE_BYTES: usize = 1024 * 1024;

/// Why a cue or a caption timeline was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptionError {
    /// The input is larger than the limit.
    #[error("caption data is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not valid JSON.
    #[error("caption data is not valid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("cue: required field \"{0}\" is missing")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("cue: field \"{field}\" must be {expected}, found {found}")]
    WrongType {
        /// The JSON key (`settings.align` for nested ones).
        field: String,
        /// What webvtt-msf asks for.
        expected: String,
        /// What was found.
        found: &'static str,
    },
    /// The cue ends before it starts.
    #[error("cue ends at {end_ms} ms, before it starts at {start_ms} ms")]
    EndBeforeStart {
        /// `start`.
        start_ms: u64,
        /// `end`.
        end_ms: u64,
    },
    /// The cue text is too long.
    #[error("cue text is {len} bytes, more than the {max}-byte limit")]
    TextTooLong {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record time `m` is not the cue's `start` (webvtt-msf: they "MUST be consistent").
    #[error(
        "cue record time \"m\" is {m} ms but the cue starts at {start_ms} ms; they must be equal"
    )]
    TimeMismatch {
        /// The record's `m`.
        m: u64,
        /// The cue's `start`.
        start_ms: u64,
    },
    /// A field has a value webvtt-msf or WebVTT does not allow.
    #[error("cue: field \"{field}\" {reason}")]
    Invalid {
        /// The JSON key.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An entry of a timeline array is bad.
    #[error("caption timeline entry {index}: {source}")]
    Entry {
        /// Index in the array.
        index: usize,
        /// What is wrong with it.
        source: Box<CaptionError>,
    },
}

/// WebVTT cue settings (webvtt-msf §"Settings Object"), values as in a WebVTT file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CueSettings {
    /// `vertical`: `"rl"` or `"lr"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vertical: Option<String>,
    /// `line`, e.g. `"-2"` or `"85%"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// `position`, e.g. `"50%"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// `size`, e.g. `"80%"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// `align`: `start`, `center`, `end`, `left` or `right`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align: Option<String>,
    /// Unknown keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One caption cue: the `data` object of its record. `None` fields are left out when written,
/// and `null` reads as absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cue {
    /// `start`: media time in ms (also the record's `m`).
    #[serde(rename = "start", deserialize_with = "millis")]
    pub start_ms: u64,
    /// `end`: media time in ms, not before `start`.
    #[serde(rename = "end", deserialize_with = "millis")]
    pub end_ms: u64,
    /// `id`: required on partial cues, so that the next version can replace them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `text`: plain text, lines separated by `\n`.
    pub text: String,
    /// `settings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<CueSettings>,
    /// `region`: a region id from the timeline's [`CaptionHeader`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `final` (moqcast): `false` for a partial cue that a later cue with the same id replaces;
    /// written only when `false`.
    #[serde(
        rename = "final",
        default = "yes",
        skip_serializing_if = "is_true",
        deserialize_with = "final_flag"
    )]
    pub is_final: bool,
    /// `lang` (moqcast): BCP 47 tag, when the cue's language differs from the track's `lang`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Unknown `data` keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The regions and styles record that may open a timeline (webvtt-msf §"Regions and Styles").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptionHeader {
    /// `regions`: WebVTT region definitions (objects with `id`, `width`, `lines`, ...).
    #[serde(default, deserialize_with = "regions")]
    pub regions: Vec<Value>,
    /// `styles`: a CSS style block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub styles: Option<String>,
    /// Unknown keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One caption timeline object: an optional header record, then cue records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptionTimeline {
    /// The regions and styles record, first in the array when present.
    pub header: Option<CaptionHeader>,
    /// The cues, in array order.
    pub cues: Vec<Cue>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, v: &Value) -> CaptionError {
    CaptionError::WrongType {
        field: field.to_string(),
        expected: expected.to_string(),
        found: json_type(v),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> CaptionError {
    CaptionError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Removes `key`; `null` counts as absent.
fn take(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    match map.remove(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

/// A media time in whole milliseconds.
struct Millis;

impl de::Visitor<'_> for Millis {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of milliseconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(Millis::not_whole(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(Millis::not_whole(v)))
    }
}

impl Millis {
    fn not_whole(v: impl std::fmt::Display) -> String {
        format!("must be a whole number of milliseconds, got {v}")
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Millis)
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `final`: absent or `null` is `true`.
fn final_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// `regions`: an array of objects; `null` is none.
fn regions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    let regions = Option::<Vec<Map<String, Value>>>::deserialize(d)?;
    Ok(regions
        .unwrap_or_default()
        .into_iter()
        .map(Value::Object)
        .collect())
}

/// Required fields of a cue, for [`CaptionError::MissingField`].
const REQUIRED_FIELDS: &[&str] = &["start", "end", "text"];

/// Reads a record's `data` object with serde; errors name the field as `settings.align`.
///
/// serde reports only a message; its forms for a missing field (`missing field `x``) and a
/// wrong type (`invalid type: X, expected Y`) are serde's own defaults, and every other message
/// here is this module's (a time that is not a whole number of milliseconds).
fn read_data<'v, T: Deserialize<'v>>(data: &'v Value) -> Result<T, CaptionError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'));
        if let Some(name) = missing {
            if let Some(field) = REQUIRED_FIELDS.iter().find(|f| **f == name) {
                return CaptionError::MissingField(field);
            }
            return invalid(name, "is missing");
        }
        if let Some((unexpected, expected)) = message
            .strip_prefix("invalid type: ")
            .and_then(|m| m.split_once(", expected "))
        {
            let expected = match expected {
                "a boolean" => "true or false",
                "a sequence" => "an array of objects",
                "a map" => "an object",
                e if e.starts_with("struct ") => "an object",
                e => e,
            };
            return CaptionError::WrongType {
                field: path,
                expected: expected.to_string(),
                found: catalog::found_type(unexpected),
            };
        }
        invalid(&path, message)
    })
}

/// A WebVTT setting or identifier value that fits on a cue timing line.
fn is_token(value: &str) -> bool {
    !value.is_empty() && !value.contains("-->") && !value.chars().any(char::is_whitespace)
}

fn check_settings(s: &CueSettings) -> Result<(), CaptionError> {
    if let Some(v) = &s.vertical {
        if v != "rl" && v != "lr" {
            return Err(invalid(
                "settings.vertical",
                format!("must be \"rl\" or \"lr\", got {v:?}"),
            ));
        }
    }
    if let Some(a) = &s.align {
        if !["start", "center", "end", "left", "right"].contains(&a.as_str()) {
            return Err(invalid(
                "settings.align",
                format!("must be start, center, end, left or right, got {a:?}"),
            ));
        }
    }
    for (field, value) in [
        ("settings.line", &s.line),
        ("settings.position", &s.position),
        ("settings.size", &s.size),
    ] {
        if let Some(v) = value {
            if !is_token(v) {
                return Err(invalid(
                    field,
                    "must be a WebVTT setting value without spaces",
                ));
            }
        }
    }
    Ok(())
}

impl Cue {
    /// A final cue.
    pub fn new(start_ms: u64, end_ms: u64, text: impl Into<String>) -> Self {
        Self {
            id: None,
            start_ms,
            end_ms,
            text: text.into(),
            settings: None,
            region: None,
            is_final: true,
            lang: None,
            extra: Map::new(),
        }
    }

    /// A partial cue, to be replaced by a later cue with the same `id`.
    pub fn partial(
        id: impl Into<String>,
        start_ms: u64,
        end_ms: u64,
        text: impl Into<String>,
    ) -> Self {
        Self {
            id: Some(id.into()),
            is_final: false,
            ..Self::new(start_ms, end_ms, text)
        }
    }

    /// Checks the cue: `end` not before `start`, text at most [`MAX_CUE_TEXT_BYTES`], an `id`
    /// on partial cues, ids, regions and settings that fit in a WebVTT file, a BCP 47 `lang`.
    pub fn validate(&self) -> Result<(), CaptionError> {
        if self.end_ms < self.start_ms {
            return Err(CaptionError::EndBeforeStart {
                start_ms: self.start_ms,
                end_ms: self.end_ms,
            });
        }
        if self.text.len() > MAX_CUE_TEXT_BYTES {
            return Err(CaptionError::TextTooLong {
                len: self.text.len(),
                max: MAX_CUE_TEXT_BYTES,
            });
        }
        match &self.id {
            Some(id) if id.is_empty() || id.contains("-->") || id.contains(['\n', '\r']) => {
                return Err(invalid(
                    "id",
                    "must be non-empty, on one line, and must not contain \"-->\" (WebVTT cue identifier)",
                ));
            }
            None if !self.is_final => {
                return Err(invalid(
                    "id",
                    "is required on a partial cue (\"final\": false)",
                ));
            }
            _ => {}
        }
        if let Some(region) = &self.region {
            if !is_token(region) {
                return Err(invalid("region", "must be a region id without spaces"));
            }
        }
        if let Some(settings) = &self.settings {
            check_settings(settings)?;
        }
        if let Some(lang) = &self.lang {
            if !catalog::is_language_tag(lang) {
                return Err(invalid(
                    "lang",
                    format!("{lang:?} is not a BCP 47 language tag such as \"en\" or \"pt-BR\""),
                ));
            }
        }
        Ok(())
    }

    /// The cue's record. Written through a JSON value, so that keys come out sorted, known
    /// and unknown alike.
    fn record(&self) -> Value {
        serde_json::json!({ "m": self.start_ms, "data": self })
    }

    /// The cue as one event timeline record: `{"m": start, "data": {...}}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.record()).expect("cue serializes to JSON")
    }

    /// Parses one event timeline record as written by [`Cue::to_json`], and validates it
    /// ([`Cue::validate`]). At most [`MAX_CUE_JSON_BYTES`].
    pub fn parse(bytes: &[u8]) -> Result<Cue, CaptionError> {
        if bytes.len() > MAX_CUE_JSON_BYTES {
            return Err(CaptionError::TooLarge {
                size: bytes.len(),
                max: MAX_CUE_JSON_BYTES,
            });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| CaptionError::Json(e.to_string()))?;
        match Self::from_record(value)? {
            Record::Cue(cue) => Ok(*cue),
            Record::Header(_) => Err(invalid(
                "text",
                "is missing: this is the regions and styles record, not a cue",
            )),
        }
    }

    fn from_data(m: u64, data: Map<String, Value>) -> Result<Cue, CaptionError> {
        let cue: Cue = read_data(&Value::Object(data))?;
        if m != cue.start_ms {
            return Err(CaptionError::TimeMismatch {
                m,
                start_ms: cue.start_ms,
            });
        }
        cue.validate()?;
        Ok(cue)
    }

    fn from_record(value: Value) -> Result<Record, CaptionError> {
        let mut record = match value {
            Value::Object(map) => map,
            other => {
                return Err(wrong_type(
                    "(record)",
                    "an object {\"m\": ..., \"data\": {...}}",
                    &other,
                ))
            }
        };
        let m = match take(&mut record, "m") {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                invalid(
                    "m",
                    format!("must be a whole number of milliseconds, got {n}"),
                )
            })?,
            Some(v) => return Err(wrong_type("m", "a number of milliseconds", &v)),
            None if record.contains_key("t") || record.contains_key("l") => {
                return Err(invalid(
                    "m",
                    "is missing: WebVTT cues use the media time index \"m\", not \"t\" or \"l\"",
                ))
            }
            None => return Err(CaptionError::MissingField("m")),
        };
        let data = match take(&mut record, "data") {
            Some(Value::Object(data)) => data,
            Some(v) => return Err(wrong_type("data", "an object", &v)),
            None => return Err(CaptionError::MissingField("data")),
        };
        let is_header = !data.contains_key("text")
            && !data.contains_key("start")
            && (data.contains_key("regions") || data.contains_key("styles"));
        if is_header {
            return CaptionHeader::from_data(m, data).map(Record::Header);
        }
        Self::from_data(m, data).map(|cue| Record::Cue(Box::new(cue)))
    }
}

enum Record {
    Cue(Box<Cue>),
    Header(CaptionHeader),
}

impl CaptionHeader {
    fn from_data(m: u64, data: Map<String, Value>) -> Result<CaptionHeader, CaptionError> {
        if m != 0 {
            return Err(invalid("m", "of the regions and styles record must be 0"));
        }
        read_data(&Value::Object(data))
    }

    /// The header's record. Written through a JSON value, so that keys come out sorted.
    fn record(&self) -> Value {
        serde_json::json!({ "m": 0, "data": self })
    }
}

impl CaptionTimeline {
    /// A timeline of these cues, without a header.
    pub fn from_cues(cues: Vec<Cue>) -> Self {
        Self { header: None, cues }
    }

    /// The timeline as one event timeline object: a JSON array of records (msf-01 §8.1).
    pub fn to_json(&self) -> Vec<u8> {
        let records: Vec<Value> = self
            .header
            .iter()
            .map(CaptionHeader::record)
            .chain(self.cues.iter().map(Cue::record))
            .collect();
        serde_json::to_vec(&records).expect("timeline serializes to JSON")
    }

    /// Parses an event timeline object of WebVTT cues (at most [`MAX_TIMELINE_BYTES`]). A
    /// regions and styles record is accepted only first.
    pub fn parse(bytes: &[u8]) -> Result<CaptionTimeline, CaptionError> {
        if bytes.len() > MAX_TIMELINE_BYTES {
            return Err(CaptionError::TooLarge {
                size: bytes.len(),
                max: MAX_TIMELINE_BYTES,
            });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| CaptionError::Json(e.to_string()))?;
        let items = match value {
            Value::Array(items) => items,
            other => {
                return Err(wrong_type(
                    "(timeline)",
                    "an array of event timeline records",
                    &other,
                ))
            }
        };
        let mut timeline = CaptionTimeline::default();
        for (index, item) in items.into_iter().enumerate() {
            let entry = |source| CaptionError::Entry {
                index,
                source: Box::new(source),
            };
            match Cue::from_record(item).map_err(entry)? {
                Record::Cue(cue) => timeline.cues.push(*cue),
                Record::Header(header) if index == 0 => timeline.header = Some(header),
                Record::Header(_) => {
                    return Err(entry(invalid(
                        "data",
                        "holds regions and styles, which only the first record may",
                    )))
                }
            }
        }
        Ok(timeline)
    }
}

/// The catalog entry of a WebVTT caption track (webvtt-msf §"Catalog Declaration"): packaging
/// `eventtimeline`, eventType [`WEBVTT_EVENT_TYPE`], mimeType `application/json`, role
/// `caption`, live, with `lang` and (when not empty) `label`. msf-01 §8.2 also asks for
/// `depends`: set it to the video track(s) the captions accompany.
pub fn caption_track(name: &str, lang: &str, label: &str) -> Track {
    Track {
        event_type: Some(WEBVTT_EVENT_TYPE.to_string()),
        mime_type: Some(JSON_MIME_TYPE.to_string()),
        role: Some(catalog::role::CAPTION.to_string()),
        is_live: Some(true),
        lang: Some(lang.to_string()),
        label: (!label.is_empty()).then(|| label.to_string()),
        ..Track::new(name, catalog::packaging::EVENT_TIMELINE)
    }
}

/// `HH:MM:SS.mmm` (hours may exceed 99), as in WebVTT cue timings.
fn webvtt_time(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    format!(
        "{h:02}:{:02}:{:02}.{:03}",
        rest / 60_000,
        (rest % 60_000) / 1000,
        rest % 1000
    )
}

/// Escapes plain text for a WebVTT cue payload: `&`, `<`, and `-->`; empty lines (which would
/// end the cue) are dropped.
fn webvtt_text(text: &str) -> String {
    // WebVTT ends a line at CR, LF or CRLF; an empty line would end the cue.
    text.split(['\r', '\n'])
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace("-->", "--&gt;")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A WebVTT file of the final cues (partial cues are skipped), ordered by start time: the
/// `WEBVTT` header, then per cue its id, `HH:MM:SS.mmm --> HH:MM:SS.mmm` with its settings and
/// region, and its text escaped ([`Cue`] text is plain text). Ids and settings that cannot be
/// written in WebVTT are left out.
pub fn to_webvtt(cues: &[Cue]) -> String {
    let mut finals: Vec<&Cue> = cues.iter().filter(|c| c.is_final).collect();
    finals.sort_by_key(|c| (c.start_ms, c.end_ms));
    let mut out = String::from("WEBVTT\n");
    for cue in finals {
        out.push('\n');
        if let Some(id) = &cue.id {
            if !id.is_empty() && !id.contains("-->") && !id.contains(['\n', '\r']) {
                out.push_str(id);
                out.push('\n');
            }
        }
        out.push_str(&webvtt_time(cue.start_ms));
        out.push_str(" --> ");
        out.push_str(&webvtt_time(cue.end_ms.max(cue.start_ms)));
        if let Some(s) = &cue.settings {
            for (name, value) in [
                ("vertical", &s.vertical),
                ("line", &s.line),
                ("position", &s.position),
                ("size", &s.size),
                ("align", &s.align),
            ] {
                if let Some(v) = value.as_deref().filter(|v| is_token(v)) {
                    out.push_str(&format!(" {name}:{v}"));
                }
            }
        }
        if let Some(region) = cue.region.as_deref().filter(|r| is_token(r)) {
            out.push_str(&format!(" region:{region}"));
        }
        out.push('\n');
        let text = webvtt_text(&cue.text);
        if !text.is_empty() {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of webvtt-msf §"Example", verbatim.
    const DRAFT_EXAMPLE: &str = r#"[
        {
            "m": 0,
            "data": {
                "start": 0,
                "end": 2500,
                "text": "Welcome to the show."
            }
        },
        {
            "m": 2500,
            "data": {
                "start": 2500,
                "end": 5000,
                "text": "<v Alice>Hello everyone!</v>",
                "settings": {"align": "center"}
            }
        }
    ]"#;

    /// The regions and styles record of webvtt-msf §"Regions and Styles", verbatim.
    const DRAFT_HEADER: &str = r#"{
        "m": 0,
        "data": {
            "regions": [
                {"id": "bottom", "width": "100%", "lines": 2,
                 "regionAnchor": "50%,100%", "viewportAnchor": "50%,90%"}
            ],
            "styles": "::cue { background: rgba(0,0,0,0.8); }"
        }
    }"#;

    fn rich_cue() -> Cue {
        let mut extra = Map::new();
        extra.insert("speaker".into(), "alice".into());
        Cue {
            id: Some("c42".into()),
            start_ms: 3_723_004,
            end_ms: 3_725_000,
            text: "Bonjour à tous\nsecond line".into(),
            settings: Some(CueSettings {
                vertical: None,
                line: Some("-2".into()),
                position: Some("50%".into()),
                size: Some("80%".into()),
                align: Some("center".into()),
                extra: Map::new(),
            }),
            region: Some("bottom".into()),
            is_final: true,
            lang: Some("fr".into()),
            extra,
        }
    }

    #[test]
    fn cue_round_trip() {
        for cue in [
            rich_cue(),
            Cue::new(0, 0, ""),
            Cue::partial("seg-1", 1000, 1800, "hello wor"),
        ] {
            let json = cue.to_json();
            assert_eq!(Cue::parse(&json).unwrap(), cue);
        }
        let json: Value = serde_json::from_slice(&Cue::partial("p", 5, 6, "x").to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"m":5,"data":{"start":5,"end":6,"id":"p","text":"x","final":false}})
        );
        // The bytes on the wire: keys sorted, as they always were.
        assert_eq!(
            String::from_utf8(Cue::partial("p", 5, 6, "x").to_json()).unwrap(),
            r#"{"data":{"end":6,"final":false,"id":"p","start":5,"text":"x"},"m":5}"#
        );
        // Final cues do not carry the extension key.
        assert!(!String::from_utf8(Cue::new(1, 2, "y").to_json())
            .unwrap()
            .contains("final"));
    }

    #[test]
    fn draft_example_parses() {
        let timeline = CaptionTimeline::parse(DRAFT_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(timeline.cues.len(), 2);
        assert_eq!(timeline.cues[1].start_ms, 2500);
        assert_eq!(
            timeline.cues[1].settings.as_ref().unwrap().align.as_deref(),
            Some("center")
        );
        assert!(timeline.cues.iter().all(|c| c.is_final));
        assert_eq!(
            CaptionTimeline::parse(&timeline.to_json()).unwrap(),
            timeline
        );

        let cues = DRAFT_EXAMPLE
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let with_header = format!("[{DRAFT_HEADER}, {cues}]");
        let timeline = CaptionTimeline::parse(with_header.as_bytes()).unwrap();
        let header = timeline.header.as_ref().unwrap();
        assert_eq!(header.regions[0]["id"], "bottom");
        assert!(header.styles.as_deref().unwrap().starts_with("::cue"));
        assert_eq!(
            CaptionTimeline::parse(&timeline.to_json()).unwrap(),
            timeline
        );
        // A header anywhere else is rejected.
        let late = format!("[{}, {DRAFT_HEADER}]", Cue::new(0, 1, "a").record());
        assert!(matches!(
            CaptionTimeline::parse(late.as_bytes()),
            Err(CaptionError::Entry { index: 1, .. })
        ));
        // A header record is not a cue.
        assert!(Cue::parse(DRAFT_HEADER.as_bytes()).is_err());
    }

    #[test]
    fn bad_cues_are_rejected() {
        type Check = fn(&CaptionError) -> bool;
        let cases: &[(&str, Check)] = &[
            (r#"{"m":5,"data":{"start":5,"end":4,"text":"x"}}"#, |e| {
                matches!(
                    e,
                    CaptionError::EndBeforeStart {
                        start_ms: 5,
                        end_ms: 4
                    }
                )
            }),
            (r#"{"m":6,"data":{"start":5,"end":7,"text":"x"}}"#, |e| {
                matches!(e, CaptionError::TimeMismatch { m: 6, start_ms: 5 })
            }),
            (r#"{"m":5,"data":{"start":5,"end":7}}"#, |e| {
                matches!(e, CaptionError::MissingField("text"))
            }),
            (r#"{"data":{"start":5,"end":7,"text":"x"}}"#, |e| {
                matches!(e, CaptionError::MissingField("m"))
            }),
            (r#"{"t":5,"data":{"start":5,"end":7,"text":"x"}}"#, |e| {
                matches!(e, CaptionError::Invalid { .. })
            }),
            (r#"{"m":5,"data":{"start":"5","end":7,"text":"x"}}"#, |e| {
                matches!(e, CaptionError::WrongType { .. })
            }),
            (r#"{"m":5,"data":{"start":5,"end":7.5,"text":"x"}}"#, |e| {
                matches!(e, CaptionError::Invalid { .. })
            }),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","final":false}}"#,
                |e| matches!(e, CaptionError::Invalid { field, .. } if field == "id"),
            ),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","id":"a-->b"}}"#,
                |e| matches!(e, CaptionError::Invalid { field, .. } if field == "id"),
            ),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","settings":{"align":"middle"}}}"#,
                |e| matches!(e, CaptionError::Invalid { field, .. } if field == "settings.align"),
            ),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","settings":{"line":"1 2"}}}"#,
                |e| matches!(e, CaptionError::Invalid { .. }),
            ),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","lang":"english!"}}"#,
                |e| matches!(e, CaptionError::Invalid { field, .. } if field == "lang"),
            ),
            (
                r#"{"m":5,"data":{"start":5,"end":7,"text":"x","final":"no"}}"#,
                |e| matches!(e, CaptionError::WrongType { .. }),
            ),
            (r#"[1]"#, |e| matches!(e, CaptionError::WrongType { .. })),
            (r#"{"m":5,"data":"#, |e| matches!(e, CaptionError::Json(_))),
        ];
        for (text, check) in cases {
            let err = Cue::parse(text.as_bytes()).unwrap_err();
            assert!(check(&err), "{text}: {err}");
        }
        let err = Cue::parse(br#"{"m":5,"data":{"start":5,"end":4,"text":"x"}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cue ends at 4 ms, before it starts at 5 ms"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long = Cue::new(0, 1, "a".repeat(MAX_CUE_TEXT_BYTES + 1));
        assert!(matches!(
            Cue::parse(&long.to_json()),
            Err(CaptionError::TextTooLong { .. })
        ));
        let ok = Cue::new(0, 1, "a".repeat(MAX_CUE_TEXT_BYTES));
        Cue::parse(&ok.to_json()).unwrap();
        let huge = vec![b' '; MAX_CUE_JSON_BYTES + 1];
        assert!(matches!(
            Cue::parse(&huge),
            Err(CaptionError::TooLarge { .. })
        ));
        let huge = vec![b' '; MAX_TIMELINE_BYTES + 1];
        assert!(matches!(
            CaptionTimeline::parse(&huge),
            Err(CaptionError::TooLarge { .. })
        ));
    }

    #[test]
    fn caption_track_is_valid_in_a_catalog() {
        let mut track = caption_track("captions-en", "en", "English (auto)");
        assert_eq!(track.role.as_deref(), Some("caption"));
        assert_eq!(track.packaging, "eventtimeline");
        assert_eq!(track.event_type.as_deref(), Some(WEBVTT_EVENT_TYPE));
        track.depends = Some(vec!["video".into()]);
        let mut c = catalog::Catalog::new();
        c.tracks.push(track.clone());
        c.tracks.push(caption_track("captions-es", "es", ""));
        let c = catalog::Catalog::parse(&c.to_json()).unwrap();
        assert_eq!(c.caption_tracks().count(), 2);
        assert_eq!(c.track("captions-en"), Some(&track));
        assert_eq!(c.track("captions-es").unwrap().label, None);
    }

    #[test]
    fn webvtt_file() {
        let mut cues = vec![
            Cue::new(61_000, 62_500, "b & c <i>\n\nnot -->an arrow"),
            Cue::partial("p1", 0, 10, "partial"),
            rich_cue(),
            Cue::new(0, 1_000, "first"),
        ];
        cues[0].id = Some("bad\nid".into());
        let vtt = to_webvtt(&cues);
        assert_eq!(
            vtt,
            "WEBVTT\n\
             \n\
             00:00:00.000 --> 00:00:01.000\n\
             first\n\
             \n\
             00:01:01.000 --> 00:01:02.500\n\
             b &amp; c &lt;i>\n\
             not --&gt;an arrow\n\
             \n\
             c42\n\
             01:02:03.004 --> 01:02:05.000 line:-2 position:50% size:80% align:center region:bottom\n\
             Bonjour à tous\n\
             second line\n"
        );
        assert_eq!(to_webvtt(&[]), "WEBVTT\n");
        assert_eq!(
            to_webvtt(&[Cue::new(0, 1, "a\r\rb\r\nc")]),
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.001\na\nb\nc\n"
        );
        assert_eq!(webvtt_time(100 * 3_600_000 + 1), "100:00:00.001");
    }
}

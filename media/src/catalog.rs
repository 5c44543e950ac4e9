//! The MSF catalog: draft-ietf-moq-msf-01 §5 ("Catalog").
//!
//! A catalog is a JSON document published on the track named [`CATALOG_TRACK_NAME`]. It lists
//! the tracks of a broadcast (§5.1.4) and describes each one (§5.2): packaging, role, codec,
//! sizes, language, render and alternate groups, and so on.
//!
//! This module follows the text of draft-ietf-moq-msf-01 as published on 2 June 2026 (moq-wg/msf
//! commit `4c24531`, the merge of PR #176 that was submitted as -01). Points where the -01 text
//! and its own examples disagree, and how this module resolves them:
//!
//! * §5.1.1 makes `version` a JSON *String* and says drafts use `"draft-XX"`; the -01 examples
//!   still write `"1"` (fixed to `"draft-01"` after publication, PR #177), and draft-00 used the
//!   Number `1`. We write [`MSF_VERSION`] (`"draft-01"`) and accept `"draft-01"`, `"1"` and `1`
//!   (read as `"1"`), see [`ACCEPTED_VERSIONS`].
//! * §5.2.13/§5.1.7: initialization data is no longer inline in the track (draft-00 `initData`)
//!   but referenced through `initRef` into the root `initDataList`. [`Catalog::init_data_bytes`]
//!   resolves that, and still reads a draft-00 `initData` string kept in [`Track::extra`].
//! * §5.2.7 marks `isLive` and §5.2.22 `bitrate` (for audio and video) as required, but several
//!   -01 examples leave them out; we accept catalogs without them. We do enforce `codec` for
//!   LOC audio and video tracks (§5.2.18) and `samplerate`/`channelConfig` for LOC audio tracks
//!   (§5.2.28, §5.2.29), because a subscriber cannot configure a decoder without them. The -01
//!   example "Variable Substitution for personalized delivery" (§5.6.14) has a LOC video track
//!   with no codec and is therefore rejected.
//! * Delta updates (§5.1.6, §5.3) are supported: [`CatalogUpdate::parse`] reads either kind of
//!   catalog object and [`Catalog::apply_delta`] applies the `add`, `remove` and `clone`
//!   operations in order, atomically. The draft-00 form (`"deltaUpdate": true` with
//!   `addTracks`/`removeTracks`/`cloneTracks`) is rejected with [`CatalogError::UnsupportedDelta`].
//!   The -01 "adding two tracks" example (§5.6.4) omits the required `packaging` of the added
//!   track (fixed after publication) and is rejected for that reason.
//!
//! Unknown fields are preserved (the draft says a parser MUST ignore fields it does not
//! understand, §5), in [`Catalog::extra`] and [`Track::extra`], and written back by
//! [`Catalog::to_json`].

use std::collections::HashSet;

use base64::Engine as _;
use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The track name a catalog is published under (§5: "MUST have a case-sensitive Track Name of
/// \"catalog\"").
pub const CATALOG_TRACK_NAME: &str = "catalog";

/// Largest catalog object [`Catalog::parse`] and [`CatalogUpdate::parse`] accept, in bytes.
pub const MAX_CATALOG_BYTES: usize = 1024 * 1024;

/// The MSF version this module writes (§5.1.1: drafts are named `"draft-XX"`).
pub const MSF_VERSION: &str = "draft-01";

/// Versions this module reads: the §5.1.1 form, and `"1"` as written by the -01 examples
/// (a draft-00 Number `1` is read as `"1"` too).
pub const ACCEPTED_VERSIONS: &[&str] = &[MSF_VERSION, "1"];

/// Longest track name or namespace accepted, in bytes (draft-ietf-moq-transport-18 §2.4.1 limits
/// a full track name to 4096 bytes).
pub const MAX_NAME_BYTES: usize = 4096;

/// Packaging values of §5.2.4, Table 3. Other values are accepted and preserved.
pub mod packaging {
    /// LOC (draft-ietf-moq-loc).
    pub const LOC: &str = "loc";
    /// MSF media timeline (§7).
    pub const MEDIA_TIMELINE: &str = "mediatimeline";
    /// MSF event timeline (§8).
    pub const EVENT_TIMELINE: &str = "eventtimeline";
    /// MoQ log track (§9).
    pub const MOQ_LOG: &str = "moqlog";
    /// MoQ metrics track (§10).
    pub const MOQ_METRICS: &str = "moqmetrics";
    /// All values defined by draft-ietf-moq-msf-01.
    pub const KNOWN: &[&str] = &[LOC, MEDIA_TIMELINE, EVENT_TIMELINE, MOQ_LOG, MOQ_METRICS];
}

/// Reserved track roles of §5.2.6, Table 4 (case-sensitive). Custom roles are accepted.
pub mod role {
    /// Audio description for visually impaired users.
    pub const AUDIO_DESCRIPTION: &str = "audiodescription";
    /// Visual content.
    pub const VIDEO: &str = "video";
    /// Audio content.
    pub const AUDIO: &str = "audio";
    /// An MSF media timeline.
    pub const MEDIA_TIMELINE: &str = "mediatimeline";
    /// An MSF event timeline.
    pub const EVENT_TIMELINE: &str = "eventtimeline";
    /// A textual representation of the audio track.
    pub const CAPTION: &str = "caption";
    /// A transcription of the spoken dialogue.
    pub const SUBTITLE: &str = "subtitle";
    /// A visual track for hearing impaired users.
    pub const SIGN_LANGUAGE: &str = "signlanguage";
    /// A log publishing track.
    pub const LOG: &str = "log";
    /// A metrics publishing track.
    pub const METRICS: &str = "metrics";
}

/// Why a catalog object was rejected. Every message says what was wrong and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The object is larger than [`MAX_CATALOG_BYTES`].
    #[error("catalog is {size} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Size of the rejected object.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not valid JSON (the message is serde_json's, with line and column).
    #[error("catalog is not valid JSON: {0}")]
    Json(String),
    /// The JSON document is not an object.
    #[error("a catalog must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// The catalog names an MSF version this module does not read (§5.1.1).
    #[error("catalog version {0:?} is not supported (this build reads MSF \"draft-01\" catalogs)")]
    UnsupportedVersion(String),
    /// A required field is absent.
    #[error("{context}: required field \"{field}\" is missing")]
    MissingField {
        /// Where: `catalog`, `track "video"`, `tracks[2]`, ...
        context: String,
        /// The JSON key.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("{context}: field \"{field}\" must be {expected}, found {found}")]
    WrongType {
        /// Where: `catalog`, `tracks[2] (track "video")`, `tracks[2].buffers`, ...
        context: String,
        /// The JSON key.
        field: String,
        /// What the draft asks for.
        expected: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// A field has the right type but a value the draft does not allow.
    #[error("{context}: field \"{field}\" {reason}")]
    InvalidValue {
        /// Where.
        context: String,
        /// The JSON key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two tracks share a namespace and name (§5.2.3: names are unique per namespace).
    #[error("{}", duplicate_message(.namespace, .name))]
    DuplicateTrack {
        /// The namespace, `None` when inherited from the catalog track.
        namespace: Option<String>,
        /// The repeated name.
        name: String,
    },
    /// A track's `initRef` names no `initDataList` entry, or the data cannot be decoded.
    #[error("initialization data {id:?}: {reason}")]
    InitData {
        /// The `initRef`/`id` concerned.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// [`Catalog::parse`] was given a delta update; use [`CatalogUpdate::parse`] and
    /// [`Catalog::apply_delta`].
    #[error(
        "catalog object is a delta update (it has \"deltaUpdate\"), not an independent catalog: \
         apply it to the catalog it updates"
    )]
    UnexpectedDelta,
    /// A delta update in a form this module does not apply (the draft-00 boolean form).
    #[error("unsupported catalog delta update: {0}")]
    UnsupportedDelta(String),
    /// A delta operation does not fit the catalog it is applied to.
    #[error("catalog delta update cannot be applied: {0}")]
    DeltaConflict(String),
}

fn duplicate_message(namespace: &Option<String>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("two tracks are named {name:?} in namespace {ns:?}; names must be unique per namespace"),
        None => format!("two tracks are named {name:?} in the catalog's namespace; names must be unique per namespace"),
    }
}

/// The `buffers` object of a track (§5.2.9), all in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buffers {
    /// Buffer players try to stabilise at.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub target: Option<u64>,
    /// Players should not operate below this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub min: Option<u64>,
    /// Players should not operate above this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub max: Option<u64>,
    /// Unknown keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of the root `initDataList` (§5.1.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitData {
    /// Unique within the catalog; tracks point at it with `initRef`.
    pub id: String,
    /// `"inline"` is the only type -01 defines: `data` is Base64.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload, as defined by `type`.
    pub data: String,
    /// Unknown keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `type` of an [`InitData`] entry holding Base64 data inline (§5.1.7).
pub const INIT_DATA_INLINE: &str = "inline";

/// A track object (§5.2). JSON keys are the §5.2 Table 2 names; `None` fields are left out.
/// Whole-number fields also read an integral float (`1920.0`); `null` reads as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// `name` (§5.2.3), required, unique per namespace.
    pub name: String,
    /// `namespace` (§5.2.2); `None` inherits the catalog track's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `packaging` (§5.2.4), required: see [`packaging`].
    pub packaging: String,
    /// `eventType` (§5.2.5): required for, and only allowed on, `eventtimeline` tracks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// `role` (§5.2.6): see [`role`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `isLive` (§5.2.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_live: Option<bool>,
    /// `targetLatency` in ms (§5.2.8); not together with `buffers`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub target_latency: Option<u64>,
    /// `buffers` (§5.2.9); not together with `targetLatency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffers: Option<Buffers>,
    /// `label` (§5.2.10): human-readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `renderGroup` (§5.2.11).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub render_group: Option<u64>,
    /// `altGroup` (§5.2.12).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub alt_group: Option<u64>,
    /// `initRef` (§5.2.13): an `id` in [`Catalog::init_data_list`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_ref: Option<String>,
    /// `depends` (§5.2.14): names of tracks (same namespace) this one depends on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends: Option<Vec<String>>,
    /// `temporalId` (§5.2.16).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub temporal_id: Option<u64>,
    /// `spatialId` (§5.2.17).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub spatial_id: Option<u64>,
    /// `codec` (§5.2.18): a WebCodecs codec string for LOC tracks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// `mimeType` (§5.2.19).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// `framerate` (§5.2.20), frames per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
    /// `timescale` (§5.2.21), units per second.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub timescale: Option<u64>,
    /// `bitrate` (§5.2.22): maximum, bits per second.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub bitrate: Option<u64>,
    /// `avgBitrate` (§5.2.23), bits per second.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub avg_bitrate: Option<u64>,
    /// `maxGopDuration` (§5.2.24), ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub max_gop_duration: Option<u64>,
    /// `maxGroupDuration` (§5.2.25), ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub max_group_duration: Option<u64>,
    /// `width` (§5.2.26): maximum encoded width in pixels.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u32"
    )]
    pub width: Option<u32>,
    /// `height` (§5.2.27): maximum encoded height in pixels.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u32"
    )]
    pub height: Option<u32>,
    /// `samplerate` (§5.2.28), Hz.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u32"
    )]
    pub samplerate: Option<u32>,
    /// `channelConfig` (§5.2.29), e.g. `"2"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_config: Option<String>,
    /// `displayWidth` (§5.2.30).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u32"
    )]
    pub display_width: Option<u32>,
    /// `displayHeight` (§5.2.31).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u32"
    )]
    pub display_height: Option<u32>,
    /// `lang` (§5.2.32): a BCP 47 language tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// `trackDuration` (§5.2.35), ms; not on live tracks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub track_duration: Option<u64>,
    /// Every other key (`template`, `accessibility`, `authInfo`, encryption fields, custom
    /// fields, ...), preserved as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Track {
    /// A track with just a name and a packaging.
    pub fn new(name: impl Into<String>, packaging: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            packaging: packaging.into(),
            ..Self::default()
        }
    }

    /// The track's role: `role` when present, otherwise, for LOC tracks, `"video"` when it has
    /// video-only fields (width, height, framerate) and `"audio"` when it has audio-only fields
    /// (samplerate, channelConfig). Several -01 examples declare media tracks without a role.
    pub fn effective_role(&self) -> Option<&str> {
        if let Some(role) = self.role.as_deref() {
            return Some(role);
        }
        if self.packaging != packaging::LOC {
            return None;
        }
        if self.width.is_some() || self.height.is_some() || self.framerate.is_some() {
            Some(role::VIDEO)
        } else if self.samplerate.is_some() || self.channel_config.is_some() {
            Some(role::AUDIO)
        } else {
            None
        }
    }

    /// The key that must be unique within a catalog: (namespace, name).
    fn key(&self) -> (Option<&str>, &str) {
        (self.namespace.as_deref(), &self.name)
    }
}

/// An independent catalog (§5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// `version` (§5.1.1), a JSON String: [`MSF_VERSION`] for catalogs we write (a draft-00
    /// Number is read as its decimal string).
    #[serde(deserialize_with = "version")]
    pub version: String,
    /// `generatedAt` (§5.1.2): wall-clock ms since the Unix epoch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::u64"
    )]
    pub generated_at: Option<u64>,
    /// `isComplete` (§5.1.3): the broadcast has ended and will not change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_complete: Option<bool>,
    /// `tracks` (§5.1.4).
    pub tracks: Vec<Track>,
    /// `publishTracks` (§5.1.5): tracks the subscriber may publish to (logs, metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_tracks: Option<Vec<Track>>,
    /// `initDataList` (§5.1.7), written after `tracks` as the draft asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_data_list: Option<Vec<InitData>>,
    /// Unknown root fields, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

/// One catalog object: independent, or a delta update of the previous one (§5).
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogUpdate {
    /// An independent catalog (the first object of each group).
    Full(Catalog),
    /// A delta update (objects 1.. of a group).
    Delta(CatalogDelta),
}

/// A delta update (§5.1.6, §5.3): operations applied in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogDelta {
    /// `generatedAt`, when present.
    pub generated_at: Option<u64>,
    /// `isComplete`, when present.
    pub is_complete: Option<bool>,
    /// The `deltaUpdate` array, at least one operation.
    pub ops: Vec<DeltaOp>,
    /// Unknown root fields, preserved (not applied).
    pub extra: Map<String, Value>,
}

/// One operation of a delta update (§5.1.6).
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaOp {
    /// `"add"`: tracks not declared before.
    Add(Vec<Track>),
    /// `"remove"`: tracks declared before, by namespace and name.
    Remove(Vec<TrackRef>),
    /// `"clone"`: new tracks copied from declared ones, with some fields overridden.
    Clone(Vec<CloneTrack>),
}

/// A track named by a `remove` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRef {
    /// `namespace`, if given.
    pub namespace: Option<String>,
    /// `name`.
    pub name: String,
}

/// A track created by a `clone` operation: everything of the parent, with `overrides`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloneTrack {
    /// `parentName` (§5.2.33).
    pub parent_name: String,
    /// `parentNamespace` (§5.2.34); `None` means the catalog's namespace.
    pub parent_namespace: Option<String>,
    /// `name` of the new track.
    pub name: String,
    /// Other fields of the track object, which override the parent's.
    pub overrides: Map<String, Value>,
}

/// A delta update object as read, before its operations are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDelta {
    #[serde(default, deserialize_with = "whole::u64")]
    generated_at: Option<u64>,
    is_complete: Option<bool>,
    delta_update: Vec<RawOp>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// One operation as read; `tracks` is read by its kind.
#[derive(Deserialize)]
struct RawOp {
    op: String,
    tracks: Value,
}

/// A track of a `remove` operation; `rest` must stay empty.
#[derive(Deserialize)]
struct RawRemove {
    name: String,
    namespace: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A track of a `clone` operation: the other fields override the parent's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClone {
    parent_name: String,
    parent_namespace: Option<String>,
    name: String,
    #[serde(flatten)]
    overrides: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Reading: serde derive on the types above, errors mapped to `CatalogError`s that name the field.

/// Whole-number fields: a non-negative integer up to the field's maximum. An integral float
/// (`1920.0`) is accepted as that integer; `null` reads as absent.
mod whole {
    use serde::{de, Deserializer};
    use std::fmt;

    struct Whole(u64);

    impl<'de> de::Visitor<'de> for Whole {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            if v <= self.0 {
                Ok(Some(v))
            } else {
                Err(self.out_of_range(v))
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(self.out_of_range(v)),
            }
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // Integral floats below 2^53 convert exactly.
            if v.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&v) {
                self.visit_u64(v as u64)
            } else {
                Err(self.out_of_range(v))
            }
        }
    }

    impl Whole {
        fn out_of_range<E: de::Error>(&self, v: impl fmt::Display) -> E {
            E::custom(format_args!(
                "must be a whole number from 0 to {}, got {v}",
                self.0
            ))
        }
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(Whole(u64::MAX))
    }

    pub(super) fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let v = d.deserialize_option(Whole(u32::MAX.into()))?;
        Ok(v.map(|v| u32::try_from(v).expect("checked against u32::MAX")))
    }
}

/// `version` (§5.1.1): a String, or a draft-00 Number read as its decimal string.
fn version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Version;

    impl de::Visitor<'_> for Version {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string such as \"draft-01\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    d.deserialize_any(Version)
}

/// The JSON type of a serde "invalid type" message's unexpected value, as the errors name it.
pub(crate) fn found_type(unexpected: &str) -> &'static str {
    [
        ("string", "a string"),
        ("integer", "a number"),
        ("floating point", "a number"),
        ("boolean", "a boolean"),
        ("map", "an object"),
        ("sequence", "an array"),
        ("null", "null"),
        ("unit", "null"),
    ]
    .into_iter()
    .find(|(prefix, _)| unexpected.starts_with(prefix))
    .map_or("another type", |(_, name)| name)
}

/// serde's name of an expected type, as the errors name it.
fn expected_type(expected: &str) -> String {
    match expected {
        "a sequence" => "an array".to_string(),
        "a map" => "an object".to_string(),
        "a boolean" => "true or false".to_string(),
        e if e.starts_with("struct ") => "an object".to_string(),
        e => e.to_string(),
    }
}

/// Names of required fields, for [`CatalogError::MissingField`].
const REQUIRED_FIELDS: &[&str] = &[
    "version",
    "tracks",
    "name",
    "packaging",
    "id",
    "type",
    "data",
    "op",
    "parentName",
    "deltaUpdate",
];

/// Reads a `T` from `value` with serde. `at` is where `value` sits in the catalog object
/// (`""` for the whole object, `deltaUpdate[0].tracks`), `root` names the whole object in
/// errors about its own fields (`catalog`).
fn read<'v, T: Deserialize<'v>>(value: &'v Value, at: &str, root: &str) -> Result<T, CatalogError> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(value, at, root, &e))
}

/// A serde error at `e.path()` below `value` as a [`CatalogError`]: the field is the last key of
/// the path, the context the path before it (`tracks[3]`), with the name of the track there.
///
/// serde reports only a message; its forms for a missing field (`missing field `x``) and a
/// wrong type (`invalid type: X, expected Y`) are serde's own defaults, and every other message
/// here is one of this module's (an out-of-range number).
fn field_error(
    value: &Value,
    at: &str,
    root: &str,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> CatalogError {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = e.path().iter().collect();
    let message = e.inner().to_string();
    // A missing field is reported at the object that lacks it; any other error at the value.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
        .map(|name| REQUIRED_FIELDS.iter().find(|f| **f == name).copied());
    let field_at = match (missing, segments.last()) {
        (None, Some(Segment::Map { .. })) => segments.len() - 1,
        // An element of an array field (`depends[0]`) is reported as the array field.
        (None, Some(Segment::Seq { .. }))
            if matches!(segments.iter().rev().nth(1), Some(Segment::Map { .. })) =>
        {
            segments.len() - 2
        }
        _ => segments.len(),
    };
    let mut context = at.to_string();
    let mut node = Some(value);
    for segment in &segments[..field_at] {
        match segment {
            Segment::Map { key } => {
                if !context.is_empty() {
                    context.push('.');
                }
                context.push_str(key);
                node = node.and_then(|n| n.get(key));
            }
            Segment::Seq { index } => {
                context.push_str(&format!("[{index}]"));
                node = node.and_then(|n| n.get(index));
                if let Some(name) = node.and_then(|n| n.get("name")).and_then(Value::as_str) {
                    context.push_str(&format!(" (track {name:?})"));
                }
            }
            Segment::Enum { variant } => context.push_str(variant),
            Segment::Unknown => context.push('?'),
        }
    }
    if context.is_empty() {
        context = root.to_string();
    }
    let field = match segments.get(field_at) {
        Some(Segment::Map { key }) => key.clone(),
        _ => "(entry)".to_string(),
    };
    if let Some(missing) = missing {
        return match missing {
            Some(field) => CatalogError::MissingField { context, field },
            None => CatalogError::InvalidValue {
                context,
                field,
                reason: message,
            },
        };
    }
    if let Some((unexpected, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        return CatalogError::WrongType {
            context,
            field,
            expected: expected_type(expected),
            found: found_type(unexpected),
        };
    }
    CatalogError::InvalidValue {
        context,
        field,
        reason: message,
    }
}

/// The JSON type of a value, as the errors name it.
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

/// A loose check of BCP 47 syntax (RFC 5646): subtags of 1 to 8 letters or digits separated by
/// `-`, the first made of letters.
pub(crate) fn is_language_tag(tag: &str) -> bool {
    if tag.is_empty() || tag.len() > 64 {
        return false;
    }
    tag.split('-').enumerate().all(|(i, sub)| {
        (1..=8).contains(&sub.len())
            && if i == 0 {
                sub.bytes().all(|b| b.is_ascii_alphabetic())
            } else {
                sub.bytes().all(|b| b.is_ascii_alphanumeric())
            }
    })
}

fn validate_name(context: &str, field: &str, value: &str) -> Result<(), CatalogError> {
    let invalid = |reason: &str| CatalogError::InvalidValue {
        context: context.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid("is longer than 4096 bytes"));
    }
    Ok(())
}

fn track_context(list: &str, t: &Track) -> String {
    match &t.namespace {
        Some(ns) => format!("{list}: track {:?} in namespace {ns:?}", t.name),
        None => format!("{list}: track {:?}", t.name),
    }
}

/// Checks one track against §5.2.
fn validate_track(list: &str, t: &Track) -> Result<(), CatalogError> {
    let context = track_context(list, t);
    let ctx = context.as_str();
    let invalid = |field: &str, reason: &str| CatalogError::InvalidValue {
        context: ctx.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    };
    let missing = |field: &'static str| CatalogError::MissingField {
        context: ctx.to_string(),
        field,
    };

    validate_name(ctx, "name", &t.name)?;
    for key in ["parentName", "parentNamespace"] {
        if t.extra.contains_key(key) {
            return Err(invalid(
                key,
                "is only allowed in a \"clone\" operation of a delta update (§5.2.33)",
            ));
        }
    }
    if let Some(ns) = &t.namespace {
        if ns.is_empty() {
            return Err(invalid(
                "namespace",
                "must not be empty (leave it out to inherit the catalog's namespace)",
            ));
        }
        validate_name(ctx, "namespace", ns)?;
    }
    if t.packaging.is_empty() {
        return Err(invalid(
            "packaging",
            "must not be empty (use \"loc\" for audio and video)",
        ));
    }
    // §5.2.5: eventType is required for, and only allowed on, event timeline tracks.
    if t.packaging == packaging::EVENT_TIMELINE {
        match &t.event_type {
            None => return Err(missing("eventType")),
            Some(e) if e.is_empty() => return Err(invalid("eventType", "must not be empty")),
            Some(_) => {}
        }
    } else if t.event_type.is_some() {
        return Err(invalid(
            "eventType",
            "is only allowed on tracks with packaging \"eventtimeline\" (§5.2.5)",
        ));
    }
    if let Some(r) = &t.role {
        if r.is_empty() {
            return Err(invalid("role", "must not be empty"));
        }
    }
    // §5.2.18, §5.2.28, §5.2.29: decoders need these.
    if t.packaging == packaging::LOC {
        let role = t.role.as_deref();
        if matches!(role, Some(role::VIDEO) | Some(role::AUDIO)) && t.codec.is_none() {
            return Err(missing("codec"));
        }
        if role == Some(role::AUDIO) {
            if t.samplerate.is_none() {
                return Err(missing("samplerate"));
            }
            if t.channel_config.is_none() {
                return Err(missing("channelConfig"));
            }
        }
    }
    if let Some(c) = &t.codec {
        if c.is_empty() {
            return Err(invalid("codec", "must not be empty"));
        }
    }
    if t.target_latency.is_some() && t.buffers.is_some() {
        return Err(invalid(
            "targetLatency",
            "must not be present together with \"buffers\" (§5.2.8)",
        ));
    }
    if t.track_duration.is_some() && t.is_live == Some(true) {
        return Err(invalid(
            "trackDuration",
            "must not be present on a live track (isLive is true) (§5.2.35)",
        ));
    }
    for (field, value) in [
        ("width", t.width),
        ("height", t.height),
        ("displayWidth", t.display_width),
        ("displayHeight", t.display_height),
        ("samplerate", t.samplerate),
    ] {
        if value == Some(0) {
            return Err(invalid(field, "must be at least 1"));
        }
    }
    if t.timescale == Some(0) {
        return Err(invalid("timescale", "must be at least 1"));
    }
    if let Some(fr) = t.framerate {
        if !(fr.is_finite() && fr > 0.0) {
            return Err(invalid("framerate", "must be a number greater than 0"));
        }
    }
    if let Some(deps) = &t.depends {
        if deps.iter().any(String::is_empty) {
            return Err(invalid("depends", "must not contain an empty track name"));
        }
    }
    if let Some(lang) = &t.lang {
        if !is_language_tag(lang) {
            return Err(CatalogError::InvalidValue {
                context: ctx.to_string(),
                field: "lang".to_string(),
                reason: format!(
                    "{lang:?} is not a BCP 47 language tag such as \"en\" or \"pt-BR\""
                ),
            });
        }
    }
    if let Some(id) = &t.init_ref {
        if id.is_empty() {
            return Err(invalid("initRef", "must not be empty"));
        }
    }
    Ok(())
}

fn check_unique<'a>(tracks: impl Iterator<Item = &'a Track>) -> Result<(), CatalogError> {
    let mut seen = HashSet::new();
    for t in tracks {
        if !seen.insert(t.key()) {
            return Err(CatalogError::DuplicateTrack {
                namespace: t.namespace.clone(),
                name: t.name.clone(),
            });
        }
    }
    Ok(())
}

impl Catalog {
    /// An empty catalog of [`MSF_VERSION`].
    pub fn new() -> Self {
        Self {
            version: MSF_VERSION.to_string(),
            generated_at: None,
            is_complete: None,
            tracks: Vec::new(),
            publish_tracks: None,
            init_data_list: None,
            extra: Map::new(),
        }
    }

    /// Parses and validates an independent catalog object.
    ///
    /// Rejects objects over [`MAX_CATALOG_BYTES`], invalid JSON, delta updates
    /// ([`CatalogError::UnexpectedDelta`]: use [`CatalogUpdate::parse`]) and anything
    /// [`Catalog::validate`] rejects.
    pub fn parse(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        match CatalogUpdate::parse(bytes)? {
            CatalogUpdate::Full(catalog) => Ok(catalog),
            CatalogUpdate::Delta(_) => Err(CatalogError::UnexpectedDelta),
        }
    }

    /// Checks the catalog against draft-ietf-moq-msf-01 §5: a supported version; per track a
    /// non-empty name unique per namespace, a packaging, `eventType` exactly on event timeline
    /// tracks, `codec` on LOC audio and video tracks, `samplerate` and `channelConfig` on LOC
    /// audio tracks, sizes and rates of at least 1, a valid language tag, no `targetLatency`
    /// together with `buffers`, no `trackDuration` on live tracks; unique `initDataList` ids
    /// whose inline data is valid Base64, and `initRef`s that name one of them.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !ACCEPTED_VERSIONS.contains(&self.version.as_str()) {
            return Err(CatalogError::UnsupportedVersion(self.version.clone()));
        }
        for t in &self.tracks {
            validate_track("tracks", t)?;
        }
        check_unique(self.tracks.iter())?;
        if let Some(publish) = &self.publish_tracks {
            for t in publish {
                validate_track("publishTracks", t)?;
            }
            check_unique(publish.iter())?;
        }
        let mut ids = HashSet::new();
        for entry in self.init_data_list.iter().flatten() {
            if entry.id.is_empty() {
                return Err(CatalogError::InitData {
                    id: String::new(),
                    reason: "an initDataList entry has an empty id".to_string(),
                });
            }
            if !ids.insert(entry.id.as_str()) {
                return Err(CatalogError::InitData {
                    id: entry.id.clone(),
                    reason: "two initDataList entries have this id; ids must be unique".to_string(),
                });
            }
            if entry.kind == INIT_DATA_INLINE {
                decode_base64(&entry.id, &entry.data)?;
            }
        }
        for t in self
            .tracks
            .iter()
            .chain(self.publish_tracks.iter().flatten())
        {
            if let Some(id) = &t.init_ref {
                if !ids.contains(id.as_str()) {
                    return Err(CatalogError::InitData {
                        id: id.clone(),
                        reason: format!(
                            "track {:?} refers to it with initRef, but initDataList has no entry with this id",
                            t.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The catalog as compact JSON, `None` fields left out, unknown fields written back.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing maps with string keys and plain values cannot fail.
        serde_json::to_vec(self).expect("catalog serializes to JSON")
    }

    /// The first track with this name, in any namespace.
    pub fn track(&self, name: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.name == name)
    }

    /// The first track with this name, in any namespace, mutably.
    pub fn track_mut(&mut self, name: &str) -> Option<&mut Track> {
        self.tracks.iter_mut().find(|t| t.name == name)
    }

    /// The track with this namespace (`None`: the catalog's own) and name.
    pub fn track_in(&self, namespace: Option<&str>, name: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.key() == (namespace, name))
    }

    /// Tracks whose [`Track::effective_role`] is `role`.
    pub fn by_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Track> + 'a {
        self.tracks
            .iter()
            .filter(move |t| t.effective_role() == Some(role))
    }

    /// Video tracks (role `video`, or LOC tracks with video fields and no role).
    pub fn video_tracks(&self) -> impl Iterator<Item = &Track> + '_ {
        self.by_role(role::VIDEO)
    }

    /// Audio tracks (role `audio`, or LOC tracks with audio fields and no role).
    pub fn audio_tracks(&self) -> impl Iterator<Item = &Track> + '_ {
        self.by_role(role::AUDIO)
    }

    /// Caption and subtitle tracks (roles `caption` and `subtitle`: draft-wilaw-moq-webvtt-msf-00
    /// allows either for WebVTT tracks).
    pub fn caption_tracks(&self) -> impl Iterator<Item = &Track> + '_ {
        self.tracks.iter().filter(|t| {
            matches!(
                t.role.as_deref(),
                Some(role::CAPTION) | Some(role::SUBTITLE)
            )
        })
    }

    /// The decoder initialization data of `track`, decoded from Base64: the `initDataList`
    /// entry its `initRef` names (§5.2.13, §5.1.7), or else a draft-00 `initData` string.
    /// `Ok(None)` when the track has neither.
    pub fn init_data_bytes(&self, track: &Track) -> Result<Option<Vec<u8>>, CatalogError> {
        if let Some(id) = &track.init_ref {
            let entry = self
                .init_data_list
                .iter()
                .flatten()
                .find(|e| &e.id == id)
                .ok_or_else(|| CatalogError::InitData {
                    id: id.clone(),
                    reason: "initDataList has no entry with this id".to_string(),
                })?;
            if entry.kind != INIT_DATA_INLINE {
                return Err(CatalogError::InitData {
                    id: id.clone(),
                    reason: format!("type {:?} is not supported (only \"inline\")", entry.kind),
                });
            }
            return decode_base64(id, &entry.data).map(Some);
        }
        match track.extra.get("initData") {
            Some(Value::String(data)) => decode_base64("initData", data).map(Some),
            _ => Ok(None),
        }
    }

    /// Stores `data` inline (Base64) in `initDataList` under `id`, replacing an entry with the
    /// same id. Point tracks at it with [`Track::init_ref`].
    pub fn set_init_data(&mut self, id: &str, data: &[u8]) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        let list = self.init_data_list.get_or_insert_with(Vec::new);
        match list.iter_mut().find(|e| e.id == id) {
            Some(entry) => {
                entry.kind = INIT_DATA_INLINE.to_string();
                entry.data = encoded;
            }
            None => list.push(InitData {
                id: id.to_string(),
                kind: INIT_DATA_INLINE.to_string(),
                data: encoded,
                extra: Map::new(),
            }),
        }
    }

    /// Index of the track a delta names. Without a namespace, a track with no namespace is
    /// preferred, then the only track of that name in any namespace.
    fn find_for_delta(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        if let Some(i) = self
            .tracks
            .iter()
            .position(|t| t.key() == (namespace, name))
        {
            return Some(i);
        }
        if namespace.is_none() {
            let mut matches = self
                .tracks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.name == name);
            if let (Some((i, _)), None) = (matches.next(), matches.next()) {
                return Some(i);
            }
        }
        None
    }

    /// Applies a delta update (§5.3): its operations in order, then `generatedAt` and
    /// `isComplete`. All or nothing: on error the catalog is unchanged.
    ///
    /// `add` rejects tracks already declared, `remove` and `clone` reject parents that are not
    /// declared, and the result must pass [`Catalog::validate`].
    pub fn apply_delta(&mut self, delta: &CatalogDelta) -> Result<(), CatalogError> {
        let mut next = self.clone();
        for op in &delta.ops {
            match op {
                DeltaOp::Add(tracks) => {
                    for t in tracks {
                        if next.track_in(t.namespace.as_deref(), &t.name).is_some() {
                            return Err(CatalogError::DeltaConflict(format!(
                                "\"add\" declares track {:?}, which already exists (use \"clone\" and \"remove\" to change a track)",
                                t.name
                            )));
                        }
                        next.tracks.push(t.clone());
                    }
                }
                DeltaOp::Remove(refs) => {
                    for r in refs {
                        let i = next
                            .find_for_delta(r.namespace.as_deref(), &r.name)
                            .ok_or_else(|| {
                                CatalogError::DeltaConflict(format!(
                                    "\"remove\" names track {:?}, which the catalog does not declare",
                                    r.name
                                ))
                            })?;
                        next.tracks.remove(i);
                    }
                }
                DeltaOp::Clone(clones) => {
                    for c in clones {
                        let parent = next
                            .find_for_delta(c.parent_namespace.as_deref(), &c.parent_name)
                            .map(|i| &next.tracks[i])
                            .ok_or_else(|| {
                                CatalogError::DeltaConflict(format!(
                                    "\"clone\" copies track {:?}, which the catalog does not declare",
                                    c.parent_name
                                ))
                            })?;
                        let mut map = match serde_json::to_value(parent) {
                            Ok(Value::Object(map)) => map,
                            _ => unreachable!("a track serializes to a JSON object"),
                        };
                        for (k, v) in &c.overrides {
                            map.insert(k.clone(), v.clone());
                        }
                        map.insert("name".to_string(), Value::String(c.name.clone()));
                        let context = format!("clone of {:?} as {:?}", c.parent_name, c.name);
                        let track: Track = read(&Value::Object(map), &context, &context)?;
                        if next
                            .track_in(track.namespace.as_deref(), &track.name)
                            .is_some()
                        {
                            return Err(CatalogError::DeltaConflict(format!(
                                "\"clone\" creates track {:?}, which already exists",
                                c.name
                            )));
                        }
                        next.tracks.push(track);
                    }
                }
            }
        }
        if delta.generated_at.is_some() {
            next.generated_at = delta.generated_at;
        }
        // §5.1.3: once added, isComplete is never removed.
        if delta.is_complete == Some(true) {
            next.is_complete = Some(true);
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

fn decode_base64(id: &str, data: &str) -> Result<Vec<u8>, CatalogError> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| CatalogError::InitData {
            id: id.to_string(),
            reason: format!("data is not valid Base64: {e}"),
        })
}

impl CatalogUpdate {
    /// Parses a catalog object of either kind: a delta update when it has a `deltaUpdate`
    /// field (§5.1.6), otherwise an independent catalog, validated with [`Catalog::validate`].
    pub fn parse(bytes: &[u8]) -> Result<CatalogUpdate, CatalogError> {
        if bytes.len() > MAX_CATALOG_BYTES {
            return Err(CatalogError::TooLarge {
                size: bytes.len(),
                max: MAX_CATALOG_BYTES,
            });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| CatalogError::Json(e.to_string()))?;
        let map = match value {
            Value::Object(map) => map,
            other => {
                return Err(CatalogError::NotAnObject {
                    found: json_type(&other),
                })
            }
        };
        if map.contains_key("deltaUpdate") {
            return CatalogDelta::from_map(map).map(CatalogUpdate::Delta);
        }
        let catalog: Catalog = read(&Value::Object(map), "", "catalog")?;
        catalog.validate()?;
        Ok(CatalogUpdate::Full(catalog))
    }

    /// The object as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            CatalogUpdate::Full(c) => c.to_json(),
            CatalogUpdate::Delta(d) => d.to_json(),
        }
    }
}

impl CatalogDelta {
    fn from_map(map: Map<String, Value>) -> Result<CatalogDelta, CatalogError> {
        const ROOT: &str = "catalog delta update";
        let invalid = |field: &str, reason: &str| CatalogError::InvalidValue {
            context: ROOT.to_string(),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        if matches!(map.get("deltaUpdate"), Some(Value::Bool(_))) {
            return Err(CatalogError::UnsupportedDelta(
                "\"deltaUpdate\": true with addTracks/removeTracks/cloneTracks is the draft-00 form; \
                 draft-01 uses an array of operations"
                    .to_string(),
            ));
        }
        for key in ["tracks", "version"] {
            if map.contains_key(key) {
                return Err(invalid(
                    key,
                    "must not appear in a delta update (§5.3); an independent catalog has no \"deltaUpdate\"",
                ));
            }
        }
        let value = Value::Object(map);
        let raw: RawDelta = read(&value, "", ROOT)?;
        if raw.delta_update.is_empty() {
            return Err(invalid(
                "deltaUpdate",
                "must hold at least one operation (§5.3)",
            ));
        }
        let mut ops = Vec::with_capacity(raw.delta_update.len());
        for (i, op) in raw.delta_update.iter().enumerate() {
            let at = format!("deltaUpdate[{i}].tracks");
            let list = format!("deltaUpdate[{i}] ({}) tracks", op.op);
            ops.push(match op.op.as_str() {
                "add" => {
                    let tracks: Vec<Track> = read(&op.tracks, &at, &at)?;
                    for t in &tracks {
                        validate_track(&list, t)?;
                    }
                    check_unique(tracks.iter())?;
                    DeltaOp::Add(tracks)
                }
                "remove" => {
                    let removed: Vec<RawRemove> = read(&op.tracks, &at, &at)?;
                    let mut refs = Vec::with_capacity(removed.len());
                    for (j, r) in removed.into_iter().enumerate() {
                        if let Some(key) = r.rest.keys().next() {
                            return Err(CatalogError::InvalidValue {
                                context: format!("{list}[{j}]"),
                                field: key.clone(),
                                reason: "is not allowed: a removed track holds only \"name\" and \"namespace\" (§5.1.6)".to_string(),
                            });
                        }
                        refs.push(TrackRef {
                            namespace: r.namespace,
                            name: r.name,
                        });
                    }
                    DeltaOp::Remove(refs)
                }
                "clone" => {
                    let cloned: Vec<RawClone> = read(&op.tracks, &at, &at)?;
                    let mut clones = Vec::with_capacity(cloned.len());
                    for (j, c) in cloned.into_iter().enumerate() {
                        let ctx = format!("{list}[{j}]");
                        validate_name(&ctx, "name", &c.name)?;
                        // Type-check the overrides now; the full track is checked on apply.
                        let mut probe = c.overrides.clone();
                        probe.insert("name".into(), Value::String(c.name.clone()));
                        probe
                            .entry("packaging")
                            .or_insert_with(|| Value::String(packaging::LOC.into()));
                        read::<Track>(&Value::Object(probe), &ctx, &ctx)?;
                        clones.push(CloneTrack {
                            parent_name: c.parent_name,
                            parent_namespace: c.parent_namespace,
                            name: c.name,
                            overrides: c.overrides,
                        });
                    }
                    DeltaOp::Clone(clones)
                }
                other => {
                    return Err(CatalogError::UnsupportedDelta(format!(
                        "unknown operation {other:?} in deltaUpdate[{i}] (draft-01 defines \"add\", \"remove\" and \"clone\")"
                    )))
                }
            });
        }
        Ok(CatalogDelta {
            generated_at: raw.generated_at,
            is_complete: raw.is_complete,
            ops,
            extra: raw.extra,
        })
    }

    /// The delta update as JSON (§5.1.6 form).
    pub fn to_json(&self) -> Vec<u8> {
        let mut root = Map::new();
        if let Some(g) = self.generated_at {
            root.insert("generatedAt".into(), g.into());
        }
        if let Some(c) = self.is_complete {
            root.insert("isComplete".into(), c.into());
        }
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|op| {
                let (kind, tracks): (&str, Vec<Value>) = match op {
                    DeltaOp::Add(tracks) => (
                        "add",
                        tracks
                            .iter()
                            .map(|t| serde_json::to_value(t).expect("track serializes"))
                            .collect(),
                    ),
                    DeltaOp::Remove(refs) => (
                        "remove",
                        refs.iter()
                            .map(|r| {
                                let mut m = Map::new();
                                m.insert("name".into(), r.name.clone().into());
                                if let Some(ns) = &r.namespace {
                                    m.insert("namespace".into(), ns.clone().into());
                                }
                                Value::Object(m)
                            })
                            .collect(),
                    ),
                    DeltaOp::Clone(clones) => (
                        "clone",
                        clones
                            .iter()
                            .map(|c| {
                                let mut m = Map::new();
                                m.insert("parentName".into(), c.parent_name.clone().into());
                                if let Some(ns) = &c.parent_namespace {
                                    m.insert("parentNamespace".into(), ns.clone().into());
                                }
                                m.insert("name".into(), c.name.clone().into());
                                for (k, v) in &c.overrides {
                                    m.insert(k.clone(), v.clone());
                                }
                                Value::Object(m)
                            })
                            .collect(),
                    ),
                };
                let mut m = Map::new();
                m.insert("op".into(), kind.into());
                m.insert("tracks".into(), Value::Array(tracks));
                Value::Object(m)
            })
            .collect();
        root.insert("deltaUpdate".into(), Value::Array(ops));
        for (k, v) in &self.extra {
            root.entry(k.clone()).or_insert_with(|| v.clone());
        }
        serde_json::to_vec(&Value::Object(root)).expect("delta serializes to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §5.6.1 of draft-ietf-moq-msf-01, verbatim.
    const EXAMPLE_AV: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks": [
        {
          "name": "1080p-video",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "targetLatency": 2000,
          "role": "video",
          "renderGroup": 1,
          "codec":"av01.0.08M.10.0.110.09",
          "width":1920,
          "height":1080,
          "framerate":30,
          "bitrate":1500000
        },
        {
          "name": "audio",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "targetLatency": 2000,
          "role": "audio",
          "renderGroup": 1,
          "codec":"opus",
          "samplerate":48000,
          "channelConfig":"2",
          "bitrate":32000
        }
       ]
    }"#;

    /// §5.6.3 (SVC, buffers and depends), verbatim.
    const EXAMPLE_SVC: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks":[
        {"name": "480p15", "namespace": "conference.example.com/conference123/alice",
         "renderGroup": 1, "packaging": "loc", "isLive": true, "buffers": {"target":2000},
         "role": "video", "codec":"av01.0.01M.10.0.110.09", "width":640, "height":480,
         "bitrate":3000000, "framerate":15},
        {"name": "480p30", "namespace": "conference.example.com/conference123/alice",
         "renderGroup": 1, "packaging": "loc", "isLive": true, "buffers": {"target":2000},
         "role": "video", "codec":"av01.0.04M.10.0.110.09", "width":640, "height":480,
         "bitrate":3000000, "framerate":30, "depends": ["480p15"]},
        {"name": "1080p15", "namespace": "conference.example.com/conference123/alice",
         "renderGroup": 1, "packaging": "loc", "isLive": true, "buffers": {"target":2000},
         "role": "video", "codec":"av01.0.05M.10.0.110.09", "width":1920, "height":1080,
         "bitrate":3000000, "framerate":15, "depends":["480p15"]},
        {"name": "1080p30", "namespace": "conference.example.com/conference123/alice",
         "renderGroup": 1, "packaging": "loc", "isLive": true, "buffers": {"target":2000},
         "role": "video", "codec":"av01.0.08M.10.0.110.09", "width":1920, "height":1080,
         "bitrate":5000000, "framerate":30, "depends": ["480p30", "1080p15"]},
        {"name": "audio", "namespace": "conference.example.com/conference123/alice",
         "renderGroup": 1, "packaging": "loc", "isLive": true, "buffers": {"target":2000},
         "role": "audio", "codec":"opus", "samplerate":48000, "channelConfig":"2", "bitrate":32000}
       ]
    }"#;

    /// §5.6.6 (custom fields), verbatim.
    const EXAMPLE_CUSTOM: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks": [
        {
          "name": "1080p-video",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "buffers": {"target":2000, "min": 1500, "max": 5000},
          "role": "video",
          "renderGroup": 1,
          "codec":"av01.0.08M.10.0.110.09",
          "width":1920,
          "height":1080,
          "framerate":30,
          "bitrate":1500000,
          "com.example-billing-code": 3201,
          "com.example-tier": "premium",
          "com.example-debug": "h349835bfkjfg82394d945034jsdfn349fns"
        },
        {
          "name": "audio",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "buffers": {"target":2000, "min": 1500, "max": 5000},
          "role": "audio",
          "renderGroup": 1,
          "codec":"opus",
          "samplerate":48000,
          "channelConfig":"2",
          "bitrate":32000
        }
       ]
    }"#;

    /// §5.6.7 (VOD, no roles), verbatim.
    const EXAMPLE_VOD: &str = r#"{
      "version": "1",
      "tracks": [
        {
          "name": "video",
          "namespace": "movies.example.com/assets/boy-meets-girl-season3/episode5",
          "packaging": "loc",
          "isLive": false,
          "trackDuration": 8072340,
          "renderGroup": 1,
          "codec":"av01.0.08M.10.0.110.09",
          "width":1920,
          "height":1080,
          "framerate":30,
          "bitrate":1500000
        },
        {
          "name": "audio",
          "namespace": "movies.example.com/assets/boy-meets-girl-season3/episode5",
          "packaging": "loc",
          "isLive": false,
          "trackDuration": 8072340,
          "renderGroup": 1,
          "codec":"opus",
          "samplerate":48000,
          "channelConfig":"2",
          "bitrate":32000
        }
       ]
    }"#;

    /// §5.6.9 (media and event timelines), verbatim.
    const EXAMPLE_TIMELINES: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks": [
        {
          "name": "history",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "mediatimeline",
          "mimetype": "application/json",
          "depends": ["1080p-video","audio"]
        },
        {
          "name": "identified-objects",
          "namespace": "another-provider/time-synchronized-data",
          "packaging": "eventtimeline",
          "eventType": "com.ai-extraction/appID/v3",
          "mimetype": "application/json",
          "depends": ["1080p-video"]
        },
        {
          "name": "1080p-video",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "targetLatency": 2000,
          "role": "video",
          "renderGroup": 1,
          "codec":"av01.0.08M.10.0.110.09",
          "width":1920,
          "height":1080,
          "framerate":30,
          "bitrate":1500000
        },
        {
          "name": "audio",
          "namespace": "conference.example.com/conference123/alice",
          "packaging": "loc",
          "isLive": true,
          "targetLatency": 2000,
          "role": "audio",
          "renderGroup": 1,
          "codec":"opus",
          "samplerate":48000,
          "channelConfig":"2",
          "bitrate":32000
        }
       ]
    }"#;

    /// §5.6.11 (accessibility, SCTE-35 event timeline), verbatim.
    const EXAMPLE_SCTE35: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks": [
        {
          "name": "video", "packaging": "loc", "isLive": true, "targetLatency": 4000,
          "role": "video", "renderGroup": 1, "codec": "avc1.4d401f", "width": 1920,
          "height": 1080, "framerate": 30, "bitrate": 5000000,
          "accessibility": [
            {"scheme": "urn:scte:dash:cc:cea-608:2015", "value": "CC1=eng;CC3=spa"}
          ]
        },
        {
          "name": "audio", "packaging": "loc", "isLive": true, "targetLatency": 4000,
          "role": "audio", "renderGroup": 1, "codec": "opus", "samplerate": 48000,
          "channelConfig": "2", "bitrate": 128000
        },
        {
          "name": "scte35", "packaging": "eventtimeline", "eventType": "urn:scte:scte35:2013:bin",
          "mimeType": "application/json", "isLive": true, "role": "eventtimeline",
          "depends": ["video"]
        }
      ]
    }"#;

    /// §5.6.13 (terminating a broadcast), verbatim.
    const EXAMPLE_TERMINATE: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "isComplete": true,
      "tracks": []
    }"#;

    /// §5.6.16 (publish tracks), verbatim.
    const EXAMPLE_PUBLISH: &str = r#"{
      "version": "1",
      "generatedAt": 1746104606044,
      "tracks": [
        {"name": "video", "namespace": "broadcast.example.com/live/stream1", "packaging": "loc",
         "isLive": true, "targetLatency": 2000, "role": "video", "renderGroup": 1,
         "codec": "av01.0.08M.10.0.110.09", "width": 1920, "height": 1080, "framerate": 30,
         "bitrate": 1500000},
        {"name": "audio", "namespace": "broadcast.example.com/live/stream1", "packaging": "loc",
         "isLive": true, "targetLatency": 2000, "role": "audio", "renderGroup": 1,
         "codec": "opus", "samplerate": 48000, "channelConfig": "2", "bitrate": 32000}
      ],
      "publishTracks": [
        {"namespace": "moq://metrics.moq.arpa/v1/%resourceId%", "name": "4",
         "packaging": "moqmetrics", "role": "metrics",
         "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."},
        {"namespace": "moq://moq-syslog.arpa/logs-v1/%resourceId%", "name": "6",
         "packaging": "moqlog", "role": "log", "connectionUri": "moqt://logs.example.com:4443",
         "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."}
      ]
    }"#;

    /// §5.6.14 (variable substitution): its LOC video track has no codec.
    const EXAMPLE_VARIABLES: &str = r#"{
      "version": "1",
      "tracks": [
        {"name": "video", "packaging": "loc", "isLive": true, "role": "video", "renderGroup": 1},
        {"name": "cmcdv2-%id%", "namespace": "advertising-decisions/live-sports/%event%",
         "packaging": "eventtimeline", "eventType": "com.example.iab.vast", "c4m": "%token%"}
      ]
    }"#;

    /// §5.6.4 as corrected after publication (the -01 text lacks `"packaging"` in the added track).
    const EXAMPLE_DELTA_ADD: &str = r#"{
      "generatedAt": 1746104606044,
      "deltaUpdate": [
        {"op": "add", "tracks": [
          {"name": "slides", "packaging": "loc", "isLive": true, "role": "video",
           "codec": "av01.0.08M.10.0.110.09", "width": 1920, "height": 1080, "framerate": 15,
           "bitrate": 750000, "renderGroup": 1}
        ]},
        {"op": "clone", "tracks": [
          {"parentName": "video-1080", "parentNamespace": "example.com/custom",
           "name": "video-720", "width": 1280, "height": 720, "bitrate": 600000}
        ]}
      ]
    }"#;

    /// §5.6.5, verbatim.
    const EXAMPLE_DELTA_REMOVE: &str = r#"{
      "generatedAt": 1746104606044,
      "deltaUpdate": [
        {"op": "remove", "tracks": [{"name": "video"}, {"name": "slides"}]}
      ]
    }"#;

    fn full_track() -> Track {
        let mut extra = Map::new();
        extra.insert("com.example-tier".into(), "premium".into());
        Track {
            name: "video".into(),
            namespace: Some("moqcast/live/demo".into()),
            packaging: packaging::LOC.into(),
            event_type: None,
            role: Some(role::VIDEO.into()),
            is_live: Some(true),
            target_latency: None,
            buffers: Some(Buffers {
                target: Some(2000),
                min: Some(1000),
                max: Some(4000),
                extra: Map::new(),
            }),
            label: Some("Main camera".into()),
            render_group: Some(1),
            alt_group: Some(2),
            init_ref: Some("video-init".into()),
            depends: Some(vec!["base".into()]),
            temporal_id: Some(0),
            spatial_id: Some(1),
            codec: Some("avc1.42E01F".into()),
            mime_type: Some("video/h264".into()),
            framerate: Some(29.97),
            timescale: Some(90_000),
            bitrate: Some(2_000_000),
            avg_bitrate: Some(1_500_000),
            max_gop_duration: Some(2000),
            max_group_duration: Some(2000),
            width: Some(1280),
            height: Some(720),
            samplerate: None,
            channel_config: None,
            display_width: Some(1280),
            display_height: Some(720),
            lang: Some("en-US".into()),
            track_duration: None,
            extra,
        }
    }

    fn sample_catalog() -> Catalog {
        let mut c = Catalog::new();
        c.generated_at = Some(1_746_104_606_044);
        c.tracks.push(full_track());
        c.tracks.push(Track {
            role: Some(role::AUDIO.into()),
            codec: Some("opus".into()),
            samplerate: Some(48_000),
            channel_config: Some("2".into()),
            bitrate: Some(64_000),
            ..Track::new("audio", packaging::LOC)
        });
        c.set_init_data("video-init", &[0x01, 0x42, 0xE0, 0x1F]);
        c.extra.insert(
            "com.example-root".into(),
            serde_json::json!({"a": [1, 2.5]}),
        );
        c
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let c = sample_catalog();
        c.validate().unwrap();
        let json = c.to_json();
        let back = Catalog::parse(&json).unwrap();
        assert_eq!(back, c);
        // Every typed field was recognised: only the custom key is left over.
        assert_eq!(back.tracks[0].extra.len(), 1);
        let text = String::from_utf8(json).unwrap();
        for key in [
            "\"version\":\"draft-01\"",
            "\"generatedAt\"",
            "\"isLive\"",
            "\"renderGroup\"",
            "\"altGroup\"",
            "\"initRef\"",
            "\"temporalId\"",
            "\"spatialId\"",
            "\"mimeType\"",
            "\"avgBitrate\"",
            "\"maxGopDuration\"",
            "\"maxGroupDuration\"",
            "\"displayWidth\"",
            "\"channelConfig\"",
            "\"samplerate\"",
            "\"initDataList\"",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert!(
            !text.contains("null"),
            "None fields must be left out: {text}"
        );
        // initDataList comes after tracks (§5.1.7).
        assert!(text.find("\"tracks\"").unwrap() < text.find("\"initDataList\"").unwrap());
    }

    #[test]
    fn spec_examples_parse() {
        for (name, text) in [
            ("5.6.1", EXAMPLE_AV),
            ("5.6.3", EXAMPLE_SVC),
            ("5.6.6", EXAMPLE_CUSTOM),
            ("5.6.7", EXAMPLE_VOD),
            ("5.6.9", EXAMPLE_TIMELINES),
            ("5.6.11", EXAMPLE_SCTE35),
            ("5.6.13", EXAMPLE_TERMINATE),
            ("5.6.16", EXAMPLE_PUBLISH),
        ] {
            let c = Catalog::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = Catalog::parse(&c.to_json()).unwrap();
            assert_eq!(again, c, "{name} round trip");
        }
    }

    #[test]
    fn helpers_find_tracks() {
        let c = Catalog::parse(EXAMPLE_AV.as_bytes()).unwrap();
        assert_eq!(c.version, "1");
        assert_eq!(c.video_tracks().count(), 1);
        assert_eq!(c.audio_tracks().next().unwrap().name, "audio");
        assert_eq!(c.track("audio").unwrap().samplerate, Some(48_000));
        assert_eq!(c.track("1080p-video").unwrap().framerate, Some(30.0));
        assert!(c.track_in(None, "audio").is_none());
        assert!(c
            .track_in(Some("conference.example.com/conference123/alice"), "audio")
            .is_some());

        // §5.6.7 declares its tracks without roles: they are found by their fields.
        let vod = Catalog::parse(EXAMPLE_VOD.as_bytes()).unwrap();
        assert_eq!(vod.video_tracks().next().unwrap().name, "video");
        assert_eq!(vod.audio_tracks().next().unwrap().name, "audio");
        assert_eq!(vod.tracks[0].track_duration, Some(8_072_340));

        let custom = Catalog::parse(EXAMPLE_CUSTOM.as_bytes()).unwrap();
        let video = custom.track("1080p-video").unwrap();
        assert_eq!(video.buffers.as_ref().unwrap().max, Some(5000));
        assert_eq!(video.extra["com.example-billing-code"], 3201);

        let scte = Catalog::parse(EXAMPLE_SCTE35.as_bytes()).unwrap();
        assert_eq!(scte.by_role(role::EVENT_TIMELINE).count(), 1);
        assert!(scte
            .track("video")
            .unwrap()
            .extra
            .contains_key("accessibility"));
    }

    #[test]
    fn caption_tracks_and_init_data() {
        let mut c = sample_catalog();
        c.tracks.push(Track {
            role: Some(role::CAPTION.into()),
            event_type: Some("urn:msf:captions:webvtt".into()),
            lang: Some("fr".into()),
            ..Track::new("captions-fr", packaging::EVENT_TIMELINE)
        });
        c.tracks.push(Track {
            role: Some(role::SUBTITLE.into()),
            event_type: Some("urn:msf:captions:webvtt".into()),
            ..Track::new("subs", packaging::EVENT_TIMELINE)
        });
        let c = Catalog::parse(&c.to_json()).unwrap();
        assert_eq!(c.caption_tracks().count(), 2);
        let video = c.track("video").unwrap();
        assert_eq!(
            c.init_data_bytes(video).unwrap(),
            Some(vec![0x01, 0x42, 0xE0, 0x1F])
        );
        assert_eq!(c.init_data_bytes(c.track("audio").unwrap()).unwrap(), None);

        // A draft-00 style inline initData string is still readable.
        let mut old = Track::new("old", packaging::LOC);
        old.extra.insert("initData".into(), "AQID".into());
        assert_eq!(c.init_data_bytes(&old).unwrap(), Some(vec![1, 2, 3]));
        old.extra.insert("initData".into(), "!!".into());
        assert!(matches!(
            c.init_data_bytes(&old),
            Err(CatalogError::InitData { .. })
        ));
    }

    #[test]
    fn bad_init_data_is_rejected() {
        let mut c = sample_catalog();
        c.init_data_list.as_mut().unwrap()[0].data = "not base64!".into();
        let err = Catalog::parse(&c.to_json()).unwrap_err();
        assert!(matches!(err, CatalogError::InitData { .. }), "{err}");
        assert!(err.to_string().contains("Base64"), "{err}");

        let mut c = sample_catalog();
        c.tracks[0].init_ref = Some("nope".into());
        let err = Catalog::parse(&c.to_json()).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut c = sample_catalog();
        let mut dup = c.tracks[1].clone();
        dup.codec = Some("mp4a.40.2".into());
        c.tracks.push(dup);
        let err = Catalog::parse(&c.to_json()).unwrap_err();
        assert_eq!(
            err,
            CatalogError::DuplicateTrack {
                namespace: None,
                name: "audio".into()
            }
        );
        assert!(err.to_string().contains("unique per namespace"));

        // The same name in another namespace is fine.
        let mut c = sample_catalog();
        let mut other = c.tracks[1].clone();
        other.namespace = Some("elsewhere".into());
        c.tracks.push(other);
        Catalog::parse(&c.to_json()).unwrap();
    }

    #[test]
    fn missing_codec_is_rejected() {
        let err = Catalog::parse(EXAMPLE_VARIABLES.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, CatalogError::MissingField { field: "codec", context } if context.contains("\"video\"")),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "tracks: track \"video\": required field \"codec\" is missing"
        );

        let mut c = sample_catalog();
        c.tracks[1].samplerate = None;
        let err = Catalog::parse(&c.to_json()).unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::MissingField {
                    field: "samplerate",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_are_rejected() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","width":"1920"}]}"#,
                "width",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","isLive":"yes"}]}"#,
                "isLive",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":7,"packaging":"loc"}]}"#,
                "name",
            ),
            (r#"{"version":"draft-01","tracks":{}}"#, "tracks"),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","depends":[1]}]}"#,
                "depends",
            ),
            (r#"{"version":true,"tracks":[]}"#, "version"),
        ];
        for (text, field) in cases {
            let err = Catalog::parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(&err, CatalogError::WrongType { field: f, .. } if f == field),
                "{text}: {err}"
            );
        }
        let err = Catalog::parse(
            br#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","width":"1920"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tracks[0] (track \"v\"): field \"width\" must be a whole number, found a string"
        );
        // Nested fields and list entries are named by their path.
        let err = Catalog::parse(
            br#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc"},{"name":"a","packaging":"loc","buffers":{"min":"x"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tracks[1] (track \"a\").buffers: field \"min\" must be a whole number, found a string"
        );
        let err = Catalog::parse(
            br#"{"version":"draft-01","tracks":[],"initDataList":[{"id":"v","type":"inline"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "initDataList[0]: required field \"data\" is missing"
        );
        // Out of range numbers.
        for text in [
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","width":-1}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","width":4294967296}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","renderGroup":1.5}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","height":0}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","framerate":0}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","lang":"en_US"}]}"#,
            r#"{"version":"draft-01","tracks":[{"name":"","packaging":"loc"}]}"#,
        ] {
            let err = Catalog::parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, CatalogError::InvalidValue { .. }),
                "{text}: {err}"
            );
        }
        // 1920.0 is a whole number.
        let c = Catalog::parse(
            br#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","width":1920.0}]}"#,
        )
        .unwrap();
        assert_eq!(c.tracks[0].width, Some(1920));
    }

    #[test]
    fn rule_violations_are_rejected() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"version":"draft-01","tracks":[{"name":"e","packaging":"eventtimeline"}]}"#,
                "eventType",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"e","packaging":"loc","eventType":"x"}]}"#,
                "eventType",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","targetLatency":1,"buffers":{}}]}"#,
                "targetLatency",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","isLive":true,"trackDuration":5}]}"#,
                "trackDuration",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v","packaging":"loc","parentName":"x"}]}"#,
                "parentName",
            ),
            (
                r#"{"version":"draft-01","tracks":[{"name":"v"}]}"#,
                "packaging",
            ),
            (r#"{"tracks":[]}"#, "version"),
            (r#"{"version":"draft-01"}"#, "tracks"),
        ];
        for (text, field) in cases {
            let err = Catalog::parse(text.as_bytes()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("\"{field}\"")), "{text}: {msg}");
        }
        let err = Catalog::parse(br#"{"version":"draft-99","tracks":[]}"#).unwrap_err();
        assert_eq!(err, CatalogError::UnsupportedVersion("draft-99".into()));
        // draft-00 wrote the version as a Number.
        assert_eq!(
            Catalog::parse(br#"{"version":1,"tracks":[]}"#)
                .unwrap()
                .version,
            "1"
        );
    }

    #[test]
    fn oversize_truncated_and_non_object_input() {
        let big = vec![b' '; MAX_CATALOG_BYTES + 1];
        assert_eq!(
            Catalog::parse(&big).unwrap_err(),
            CatalogError::TooLarge {
                size: MAX_CATALOG_BYTES + 1,
                max: MAX_CATALOG_BYTES
            }
        );
        let text = EXAMPLE_AV.as_bytes();
        for cut in [0, 1, 10, text.len() / 2, text.len() - 1] {
            let err = Catalog::parse(&text[..cut]).unwrap_err();
            assert!(matches!(err, CatalogError::Json(_)), "cut {cut}: {err}");
            assert!(err.to_string().contains("line"), "{err}");
        }
        assert_eq!(
            Catalog::parse(b"[]").unwrap_err(),
            CatalogError::NotAnObject { found: "an array" }
        );
        assert!(matches!(
            Catalog::parse(EXAMPLE_DELTA_REMOVE.as_bytes()).unwrap_err(),
            CatalogError::UnexpectedDelta
        ));
    }

    #[test]
    fn delta_updates_apply() {
        let mut base = Catalog::new();
        base.tracks.push(Track {
            namespace: Some("example.com/custom".into()),
            role: Some(role::VIDEO.into()),
            codec: Some("av01.0.08M.10.0.110.09".into()),
            width: Some(1920),
            height: Some(1080),
            bitrate: Some(1_000_000),
            ..Track::new("video-1080", packaging::LOC)
        });
        base.tracks.push(Track {
            role: Some(role::VIDEO.into()),
            codec: Some("avc1.42E01F".into()),
            ..Track::new("video", packaging::LOC)
        });

        let CatalogUpdate::Delta(add) = CatalogUpdate::parse(EXAMPLE_DELTA_ADD.as_bytes()).unwrap()
        else {
            panic!("not a delta")
        };
        // Delta round trip.
        let CatalogUpdate::Delta(again) = CatalogUpdate::parse(&add.to_json()).unwrap() else {
            panic!("not a delta")
        };
        assert_eq!(again, add);

        let mut c = base.clone();
        c.apply_delta(&add).unwrap();
        assert_eq!(c.tracks.len(), 4);
        let clone = c.track("video-720").unwrap();
        assert_eq!(clone.namespace.as_deref(), Some("example.com/custom"));
        assert_eq!(
            (clone.width, clone.height, clone.bitrate),
            (Some(1280), Some(720), Some(600_000))
        );
        assert_eq!(clone.codec.as_deref(), Some("av01.0.08M.10.0.110.09"));
        assert_eq!(c.generated_at, Some(1_746_104_606_044));

        // Applying it twice conflicts, and leaves the catalog unchanged.
        let before = c.clone();
        let err = c.apply_delta(&add).unwrap_err();
        assert!(matches!(err, CatalogError::DeltaConflict(_)), "{err}");
        assert_eq!(c, before);

        let CatalogUpdate::Delta(remove) =
            CatalogUpdate::parse(EXAMPLE_DELTA_REMOVE.as_bytes()).unwrap()
        else {
            panic!("not a delta")
        };
        c.apply_delta(&remove).unwrap();
        let names: Vec<_> = c.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["video-1080", "video-720"]);
        assert!(matches!(
            c.apply_delta(&remove),
            Err(CatalogError::DeltaConflict(_))
        ));
    }

    #[test]
    fn bad_deltas_are_rejected() {
        // The -01 text of §5.6.4: the added track has no packaging.
        let published = EXAMPLE_DELTA_ADD.replace("\"packaging\": \"loc\", ", "");
        let err = CatalogUpdate::parse(published.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::MissingField {
                    field: "packaging",
                    ..
                }
            ),
            "{err}"
        );

        // The draft-00 form.
        let old = br#"{"version":1,"deltaUpdate":true,"addTracks":[]}"#;
        let err = CatalogUpdate::parse(old).unwrap_err();
        assert!(matches!(err, CatalogError::UnsupportedDelta(_)), "{err}");
        for text in [
            r#"{"deltaUpdate":[]}"#,
            r#"{"deltaUpdate":[{"op":"rename","tracks":[]}]}"#,
            r#"{"deltaUpdate":[{"op":"remove","tracks":[{"name":"a","codec":"x"}]}]}"#,
            r#"{"deltaUpdate":[{"op":"clone","tracks":[{"name":"a"}]}]}"#,
            r#"{"deltaUpdate":[{"op":"clone","tracks":[{"name":"a","parentName":"b","width":"x"}]}]}"#,
            r#"{"deltaUpdate":[{"op":"add"}]}"#,
            r#"{"tracks":[],"deltaUpdate":[{"op":"add","tracks":[]}]}"#,
        ] {
            assert!(CatalogUpdate::parse(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn language_tags() {
        for ok in ["en", "en-US", "pt-BR", "zh-Hant-TW", "es-419", "x-klingon"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "en_US", "-en", "en-", "toolongsubtag", "1en", "en US"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}

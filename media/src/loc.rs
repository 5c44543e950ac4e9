//! LOC packaging: the object properties of draft-ietf-moq-loc-04 §2.3 ("LOC Properties").
//!
//! A LOC object carries one encoded frame as its payload (§2.2) and its metadata as MoQT Object
//! Properties (draft-ietf-moq-transport-18 §2.5, §11.2.1.2; moq-transport calls them extension
//! headers). Each property is a Key-Value-Pair (draft-18 §1.4.3): an even key carries one
//! varint, an odd key carries up to 65535 bytes.
//!
//! | key | name | value | draft-ietf-moq-loc-04 |
//! |---|---|---|---|
//! | 0x08 | TIMESCALE | varint, units per second | §2.3.1.2 |
//! | 0x09 | VIDEO_FRAME_MARKING | 1 to 4 bytes (RFC 9626) | §2.3.2.2 |
//! | 0x0C | AUDIO_LEVEL | varint 0..=255 (RFC 6464: V bit + level) | §2.3.3.2 |
//! | 0x0D | VIDEO_CONFIG | bytes (decoder "extradata", e.g. `avcC`) | §2.3.2.1 |
//! | 0x0F | AUDIO_CONFIG | bytes (decoder description) | §2.3.3.1 |
//! | 0x10 | TIMESTAMP | varint; µs since the Unix epoch without TIMESCALE | §2.3.1.1 |
//! | 0x3A4C | SEND_TIME (moqcast) | varint, µs since the Unix epoch | see [`SEND_TIME`] |
//!
//! The IDs are those of loc-04 §5 (IANA). draft-ietf-moq-transport-18 §15.8 still lists older
//! provisional LOC IDs (TIMESTAMP 0x06, VIDEO_FRAME_MARKING 0x0A); moqcast follows loc-04, as the
//! architecture notes decide.
//!
//! Two codecs are provided: [`LocProperties::to_extension_headers`] /
//! [`LocProperties::from_extension_headers`] for moq-transport's in-memory type, and
//! [`LocProperties::encode_wire`] / [`LocProperties::decode_wire`] for the raw draft-18 block
//! (a byte-length prefix, then delta-encoded Key-Value-Pairs), byte-for-byte what moq-transport
//! 0.17 writes and reads for an object's extension headers.

use bytes::Bytes;
use moq_transport::coding::{Decode, DecodeError, Encode, KeyValuePair, Value};
use moq_transport::data::ExtensionHeaders;

/// TIMESCALE (loc-04 §2.3.1.2): Timestamp units per second; absent means wall-clock µs.
pub const TIMESCALE: u64 = 0x08;
/// VIDEO_FRAME_MARKING (loc-04 §2.3.2.2): RFC 9626 frame marking, 1 to 4 bytes.
pub const VIDEO_FRAME_MARKING: u64 = 0x09;
/// AUDIO_LEVEL (loc-04 §2.3.3.2): RFC 6464 audio level in the low 8 bits of a varint.
pub const AUDIO_LEVEL: u64 = 0x0C;
/// VIDEO_CONFIG (loc-04 §2.3.2.1): codec "extradata" (WebCodecs `description`).
pub const VIDEO_CONFIG: u64 = 0x0D;
/// AUDIO_CONFIG (loc-04 §2.3.3.1): codec configuration (WebCodecs `description`).
pub const AUDIO_CONFIG: u64 = 0x0F;
/// TIMESTAMP (loc-04 §2.3.1.1): presentation time of the frame.
pub const TIMESTAMP: u64 = 0x10;

/// SEND_TIME, moqcast's own property: wall-clock microseconds since the Unix epoch at which the
/// publisher sent the object, so that subscribers can measure end-to-end latency even when
/// TIMESTAMP is media time.
///
/// draft-ietf-moq-transport-18 §2.5 reserves Property types 0x38-0x3F and 0x3800-0x3FFF "for
/// application-specific use": never allocated by IANA, usable without registration, forwarded
/// unchanged by relays. (§15.8 lists 0x78-0x7F instead of 0x38-0x3F, and 0x3C/0x3E in that small
/// range are registered, so only the 2-byte range is unambiguous.) The key is even because the
/// value is a varint (§1.4.3), and it is not a grease value (0x7F * N + 0x9D, §14).
pub const SEND_TIME: u64 = 0x3A4C;

/// A timescale of microseconds: the TIMESCALE moqcast's publishers write with media-time
/// TIMESTAMPs (and the catalog `timescale` of their tracks).
pub const TIMESCALE_US: u64 = 1_000_000;

/// Largest byte value a Key-Value-Pair can hold (draft-18 §1.4.3: 2^16-1).
pub const MAX_VALUE_BYTES: usize = u16::MAX as usize;

/// Why LOC properties could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocError {
    /// The buffer ends before the property block does: read more bytes and try again.
    #[error("LOC property block is incomplete: more bytes are needed")]
    Incomplete,
    /// The bytes or values break draft-18 §1.4.3 or draft-ietf-moq-loc-04 §2.3.
    #[error("malformed LOC properties: {0}")]
    Malformed(String),
    /// A value cannot be encoded (it would be malformed on the wire).
    #[error("LOC properties cannot be encoded: {0}")]
    Invalid(String),
}

/// The LOC properties of one object. `None` fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocProperties {
    /// TIMESTAMP: in `timescale` units, or µs since the Unix epoch when `timescale` is `None`.
    pub timestamp: Option<u64>,
    /// TIMESCALE: units per second (at least 1).
    pub timescale: Option<u64>,
    /// VIDEO_FRAME_MARKING: RFC 9626 bytes (1 to 4).
    pub video_frame_marking: Option<Vec<u8>>,
    /// AUDIO_LEVEL: RFC 6464 byte, 0..=255 (bit 7: voice activity, bits 0-6: -dBov).
    pub audio_level: Option<u64>,
    /// VIDEO_CONFIG: decoder configuration (up to 65535 bytes).
    pub video_config: Option<Bytes>,
    /// AUDIO_CONFIG: decoder configuration (up to 65535 bytes).
    pub audio_config: Option<Bytes>,
    /// SEND_TIME (moqcast): wall-clock µs since the Unix epoch when the object was sent.
    pub send_time_us: Option<u64>,
}

/// RFC 9626 §3.1 "independent frame" flag in the first frame marking byte.
const FRAME_MARKING_INDEPENDENT: u8 = 0x20;

/// A property value as it appears on the wire, borrowed.
enum RawValue<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn property_name(key: u64) -> &'static str {
    match key {
        TIMESCALE => "TIMESCALE (0x08)",
        VIDEO_FRAME_MARKING => "VIDEO_FRAME_MARKING (0x09)",
        AUDIO_LEVEL => "AUDIO_LEVEL (0x0C)",
        VIDEO_CONFIG => "VIDEO_CONFIG (0x0D)",
        AUDIO_CONFIG => "AUDIO_CONFIG (0x0F)",
        TIMESTAMP => "TIMESTAMP (0x10)",
        SEND_TIME => "SEND_TIME (0x3A4C)",
        _ => "unknown property",
    }
}

fn malformed(msg: impl Into<String>) -> LocError {
    LocError::Malformed(msg.into())
}

impl LocProperties {
    /// Properties with a wall-clock TIMESTAMP in µs since the Unix epoch (no TIMESCALE).
    pub fn wall_clock(timestamp_us: u64) -> Self {
        Self {
            timestamp: Some(timestamp_us),
            ..Self::default()
        }
    }

    /// Properties with a media-time TIMESTAMP in `timescale` units per second.
    pub fn media_time(timestamp: u64, timescale: u64) -> Self {
        Self {
            timestamp: Some(timestamp),
            timescale: Some(timescale),
            ..Self::default()
        }
    }

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The TIMESTAMP in microseconds: converted with TIMESCALE when present; without TIMESCALE
    /// the TIMESTAMP already is wall-clock µs since the Unix epoch (loc-04 §2.3.1.1) and is
    /// returned as is (see [`LocProperties::is_wall_clock`]). `None` without a TIMESTAMP, with a
    /// TIMESCALE of 0, or when the result does not fit in a u64.
    pub fn timestamp_us(&self) -> Option<u64> {
        let ts = self.timestamp?;
        match self.timescale {
            None => Some(ts),
            Some(0) => None,
            Some(1_000_000) => Some(ts),
            Some(scale) => u64::try_from(u128::from(ts) * 1_000_000 / u128::from(scale)).ok(),
        }
    }

    /// True when the TIMESTAMP is wall-clock time (present, with no TIMESCALE).
    pub fn is_wall_clock(&self) -> bool {
        self.timestamp.is_some() && self.timescale.is_none()
    }

    /// The audio level in -dBov (0 loudest, 127 silence), from AUDIO_LEVEL's low 7 bits.
    pub fn audio_level_dbov(&self) -> Option<u8> {
        self.audio_level.map(|l| (l & 0x7F) as u8)
    }

    /// RFC 6464 voice activity flag, from AUDIO_LEVEL's bit 7.
    pub fn voice_activity(&self) -> Option<bool> {
        self.audio_level.map(|l| l & 0x80 != 0)
    }

    /// The RFC 9626 "independent frame" flag of VIDEO_FRAME_MARKING.
    pub fn is_independent(&self) -> Option<bool> {
        self.video_frame_marking
            .as_ref()
            .and_then(|m| m.first())
            .map(|b| b & FRAME_MARKING_INDEPENDENT != 0)
    }

    /// Checks the values are encodable and meaningful: TIMESCALE at least 1, AUDIO_LEVEL at most
    /// 255, VIDEO_FRAME_MARKING 1 to 4 bytes, configs at most [`MAX_VALUE_BYTES`].
    pub fn validate(&self) -> Result<(), LocError> {
        let invalid = |m: String| Err(LocError::Invalid(m));
        if self.timescale == Some(0) {
            return invalid("TIMESCALE (0x08) is 0; it must be at least 1".into());
        }
        if let Some(level) = self.audio_level {
            if level > 0xFF {
                return invalid(format!(
                    "AUDIO_LEVEL (0x0C) is {level}; it must be 0 to 255"
                ));
            }
        }
        if let Some(m) = &self.video_frame_marking {
            if !(1..=4).contains(&m.len()) {
                return invalid(format!(
                    "VIDEO_FRAME_MARKING (0x09) is {} bytes; it must be 1 to 4",
                    m.len()
                ));
            }
        }
        for (key, value) in [
            (VIDEO_CONFIG, &self.video_config),
            (AUDIO_CONFIG, &self.audio_config),
        ] {
            if let Some(v) = value {
                if v.len() > MAX_VALUE_BYTES {
                    return invalid(format!(
                        "{} is {} bytes; a property holds at most {MAX_VALUE_BYTES}",
                        property_name(key),
                        v.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The properties as moq-transport extension headers, in ascending key order. Values are not
    /// checked: call [`LocProperties::validate`] first if they may be out of range.
    pub fn to_extension_headers(&self) -> ExtensionHeaders {
        let mut headers = ExtensionHeaders::new();
        self.write_into(&mut headers);
        headers
    }

    /// Sets (or replaces) these properties in `headers`, keeping any other property there.
    pub fn write_into(&self, headers: &mut ExtensionHeaders) {
        let ints = [
            (TIMESCALE, self.timescale),
            (AUDIO_LEVEL, self.audio_level),
            (TIMESTAMP, self.timestamp),
            (SEND_TIME, self.send_time_us),
        ];
        for (key, value) in ints {
            if let Some(v) = value {
                headers.set_intvalue(key, v);
            }
        }
        let blobs = [
            (VIDEO_FRAME_MARKING, self.video_frame_marking.as_deref()),
            (VIDEO_CONFIG, self.video_config.as_deref()),
            (AUDIO_CONFIG, self.audio_config.as_deref()),
        ];
        for (key, value) in blobs {
            if let Some(v) = value {
                headers.set_bytesvalue(key, v.to_vec());
            }
        }
        headers.0.sort_by_key(|kvp| kvp.key);
    }

    /// Reads LOC properties from moq-transport extension headers. Unknown keys are ignored; a
    /// known key with the wrong kind of value, a repeated known key, or a value out of range is
    /// [`LocError::Malformed`].
    pub fn from_extension_headers(headers: &ExtensionHeaders) -> Result<LocProperties, LocError> {
        let mut props = LocProperties::default();
        for KeyValuePair { key, value } in &headers.0 {
            let raw = match value {
                Value::IntValue(v) => RawValue::Int(*v),
                Value::BytesValue(b) => RawValue::Bytes(b),
            };
            props.set(*key, raw)?;
        }
        Ok(props)
    }

    /// Stores one property, checking its kind and range.
    fn set(&mut self, key: u64, value: RawValue<'_>) -> Result<(), LocError> {
        fn int(key: u64, value: RawValue<'_>) -> Result<u64, LocError> {
            match value {
                RawValue::Int(v) => Ok(v),
                RawValue::Bytes(_) => Err(malformed(format!(
                    "{} must carry an integer, found bytes",
                    property_name(key)
                ))),
            }
        }
        fn bytes(key: u64, value: RawValue<'_>) -> Result<&[u8], LocError> {
            match value {
                RawValue::Bytes(b) => Ok(b),
                RawValue::Int(_) => Err(malformed(format!(
                    "{} must carry bytes, found an integer",
                    property_name(key)
                ))),
            }
        }
        fn once<T>(slot: &mut Option<T>, key: u64, value: T) -> Result<(), LocError> {
            if slot.is_some() {
                return Err(malformed(format!(
                    "{} appears more than once",
                    property_name(key)
                )));
            }
            *slot = Some(value);
            Ok(())
        }
        match key {
            TIMESTAMP => once(&mut self.timestamp, key, int(key, value)?),
            TIMESCALE => {
                let v = int(key, value)?;
                if v == 0 {
                    return Err(malformed("TIMESCALE (0x08) is 0; it must be at least 1"));
                }
                once(&mut self.timescale, key, v)
            }
            AUDIO_LEVEL => {
                let v = int(key, value)?;
                if v > 0xFF {
                    return Err(malformed(format!(
                        "AUDIO_LEVEL (0x0C) is {v}; it must be 0 to 255"
                    )));
                }
                once(&mut self.audio_level, key, v)
            }
            SEND_TIME => once(&mut self.send_time_us, key, int(key, value)?),
            VIDEO_FRAME_MARKING => {
                let b = bytes(key, value)?;
                if !(1..=4).contains(&b.len()) {
                    return Err(malformed(format!(
                        "VIDEO_FRAME_MARKING (0x09) is {} bytes; it must be 1 to 4",
                        b.len()
                    )));
                }
                once(&mut self.video_frame_marking, key, b.to_vec())
            }
            VIDEO_CONFIG => {
                let b = bytes(key, value)?;
                once(&mut self.video_config, key, Bytes::copy_from_slice(b))
            }
            AUDIO_CONFIG => {
                let b = bytes(key, value)?;
                once(&mut self.audio_config, key, Bytes::copy_from_slice(b))
            }
            // Unknown properties are not ours to judge (draft-18 §2.5).
            _ => Ok(()),
        }
    }

    /// The draft-18 Object Properties block (§11.2.1.2): a varint byte length, then the
    /// properties as delta-encoded Key-Value-Pairs in ascending key order (§1.4.3).
    pub fn encode_wire(&self) -> Result<Vec<u8>, LocError> {
        self.validate()?;
        let mut out = Vec::new();
        self.to_extension_headers()
            .encode(&mut out)
            .map_err(|e| LocError::Invalid(e.to_string()))?;
        Ok(out)
    }

    /// Decodes a whole Object Properties block (see [`LocProperties::encode_wire`]).
    ///
    /// [`LocError::Incomplete`] when `buf` ends before the block does; [`LocError::Malformed`]
    /// for bytes after the block, a Key-Value-Pair that runs past the block's length, a key
    /// that overflows 2^64-1, a byte value over 65535 bytes, or a LOC property with a bad value.
    /// Unknown properties are skipped.
    pub fn decode_wire(buf: &[u8]) -> Result<LocProperties, LocError> {
        let (props, used) = Self::decode_wire_prefix(buf)?;
        if used < buf.len() {
            return Err(malformed(format!(
                "{} trailing byte(s) after the {used}-byte property block",
                buf.len() - used
            )));
        }
        Ok(props)
    }

    /// Decodes the Object Properties block at the start of `buf`; returns the properties and
    /// how many bytes the block took. Bytes after the block are left alone.
    pub fn decode_wire_prefix(buf: &[u8]) -> Result<(LocProperties, usize), LocError> {
        let mut r = buf;
        let length = match u64::decode(&mut r) {
            Ok(n) => n,
            Err(DecodeError::More(_)) => return Err(LocError::Incomplete),
            Err(e) => return Err(malformed(format!("bad property block length: {e}"))),
        };
        let header = buf.len() - r.len();
        let length = match usize::try_from(length) {
            Ok(n) if n <= r.len() => n,
            _ => return Err(LocError::Incomplete),
        };
        let mut block = &r[..length];
        let mut props = LocProperties::default();
        let mut prev = 0u64;
        while !block.is_empty() {
            let delta = read_in_block(&mut block, "a property type")?;
            let key = prev
                .checked_add(delta)
                .ok_or_else(|| malformed("property type is larger than 2^64-1"))?;
            prev = key;
            let value = if key % 2 == 0 {
                RawValue::Int(read_in_block(&mut block, "an integer value")?)
            } else {
                let len = read_in_block(&mut block, "a value length")?;
                let len = match usize::try_from(len) {
                    Ok(n) if n <= MAX_VALUE_BYTES => n,
                    _ => {
                        return Err(malformed(format!(
                            "property 0x{key:X} has a {len}-byte value; the maximum is {MAX_VALUE_BYTES}"
                        )))
                    }
                };
                if len > block.len() {
                    return Err(malformed(format!(
                        "property 0x{key:X} has a {len}-byte value but the block has {} byte(s) left",
                        block.len()
                    )));
                }
                let (value, rest) = block.split_at(len);
                block = rest;
                RawValue::Bytes(value)
            };
            props.set(key, value)?;
        }
        Ok((props, header + length))
    }
}

/// Reads a varint that must lie inside the (complete) property block.
fn read_in_block(block: &mut &[u8], what: &str) -> Result<u64, LocError> {
    u64::decode(block)
        .map_err(|_| malformed(format!("the property block ends in the middle of {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_properties() -> LocProperties {
        LocProperties {
            timestamp: Some(123_456_789),
            timescale: Some(90_000),
            video_frame_marking: Some(vec![0xA0, 0x01]),
            audio_level: Some(0x80 | 42),
            video_config: Some(Bytes::from_static(&[1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1])),
            audio_config: Some(Bytes::from_static(b"OpusHead")),
            send_time_us: Some(1_760_000_000_000_000),
        }
    }

    fn singles() -> Vec<LocProperties> {
        let d = LocProperties::default;
        vec![
            LocProperties::wall_clock(1_760_000_000_123_456),
            LocProperties {
                timescale: Some(48_000),
                ..d()
            },
            LocProperties {
                video_frame_marking: Some(vec![0x20]),
                ..d()
            },
            LocProperties {
                video_frame_marking: Some(vec![1, 2, 3, 4]),
                ..d()
            },
            LocProperties {
                audio_level: Some(0),
                ..d()
            },
            LocProperties {
                audio_level: Some(255),
                ..d()
            },
            LocProperties {
                video_config: Some(Bytes::new()),
                ..d()
            },
            LocProperties {
                video_config: Some(Bytes::from(vec![7u8; MAX_VALUE_BYTES])),
                ..d()
            },
            LocProperties {
                audio_config: Some(Bytes::from_static(&[0x11, 0x90])),
                ..d()
            },
            LocProperties {
                send_time_us: Some(u64::MAX),
                ..d()
            },
            LocProperties {
                timestamp: Some(0),
                ..d()
            },
            d(),
        ]
    }

    #[test]
    fn wire_round_trip_each_property() {
        for p in singles().into_iter().chain([all_properties()]) {
            let wire = p.encode_wire().unwrap();
            assert_eq!(LocProperties::decode_wire(&wire).unwrap(), p);
            assert_eq!(
                LocProperties::from_extension_headers(&p.to_extension_headers()).unwrap(),
                p
            );
        }
    }

    #[test]
    fn wire_matches_known_bytes() {
        // TIMESTAMP 1000: length 3, key delta 0x10, varint(1000) = 0x83 0xE8 (draft-18 §1.4.1).
        assert_eq!(
            LocProperties::wall_clock(1000).encode_wire().unwrap(),
            [0x03, 0x10, 0x83, 0xE8]
        );
        // TIMESCALE 1, VIDEO_FRAME_MARKING [0x20], TIMESTAMP 5: deltas 8, 1, 7.
        let p = LocProperties {
            timescale: Some(1),
            video_frame_marking: Some(vec![0x20]),
            timestamp: Some(5),
            ..LocProperties::default()
        };
        assert_eq!(
            p.encode_wire().unwrap(),
            [0x07, 0x08, 0x01, 0x01, 0x01, 0x20, 0x07, 0x05]
        );
        assert_eq!(LocProperties::default().encode_wire().unwrap(), [0x00]);
    }

    #[test]
    fn wire_matches_moq_transport() {
        // What moq-transport writes, decode_wire reads; what encode_wire writes, it reads.
        let mut headers = all_properties().to_extension_headers();
        headers.set_intvalue(0x3C, 2); // PRIOR_GROUP_ID_GAP: not ours, ignored.
        headers.set_bytesvalue(0x3801, vec![9, 9]); // Another application's property.
        let mut theirs = Vec::new();
        headers.encode(&mut theirs).unwrap();
        assert_eq!(
            LocProperties::decode_wire(&theirs).unwrap(),
            all_properties()
        );

        let ours = all_properties().encode_wire().unwrap();
        let decoded = ExtensionHeaders::decode(&mut ours.as_slice()).unwrap();
        assert_eq!(decoded, all_properties().to_extension_headers());
    }

    #[test]
    fn write_into_keeps_other_properties() {
        let mut headers = ExtensionHeaders::new();
        headers.set_intvalue(0x3E, 1);
        headers.set_intvalue(TIMESTAMP, 1);
        LocProperties::wall_clock(99).write_into(&mut headers);
        assert_eq!(headers.0.len(), 2);
        assert_eq!(headers.get(TIMESTAMP).unwrap().value, Value::IntValue(99));
    }

    #[test]
    fn truncation_is_incomplete_at_every_cut() {
        for p in singles().into_iter().chain([all_properties()]) {
            let wire = p.encode_wire().unwrap();
            for cut in 0..wire.len() {
                assert_eq!(
                    LocProperties::decode_wire(&wire[..cut]),
                    Err(LocError::Incomplete),
                    "{p:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut wire = LocProperties::wall_clock(1).encode_wire().unwrap();
        wire.push(0);
        assert!(matches!(
            LocProperties::decode_wire(&wire),
            Err(LocError::Malformed(_))
        ));
        let (p, used) = LocProperties::decode_wire_prefix(&wire).unwrap();
        assert_eq!((p, used), (LocProperties::wall_clock(1), wire.len() - 1));
    }

    #[test]
    fn malformed_values_are_rejected() {
        let cases: &[(&[u8], &str)] = &[
            // TIMESCALE 0.
            (&[0x02, 0x08, 0x00], "TIMESCALE"),
            // AUDIO_LEVEL 256 (varint 0x81 0x00).
            (&[0x03, 0x0C, 0x81, 0x00], "AUDIO_LEVEL"),
            // VIDEO_FRAME_MARKING of 0 and of 5 bytes.
            (&[0x02, 0x09, 0x00], "VIDEO_FRAME_MARKING"),
            (&[0x07, 0x09, 0x05, 1, 2, 3, 4, 5], "VIDEO_FRAME_MARKING"),
            // TIMESTAMP twice (second delta 0).
            (&[0x04, 0x10, 0x01, 0x00, 0x02], "more than once"),
            // Block length 2, but the value varint needs 2 more bytes.
            (&[0x02, 0x10, 0x81], "ends in the middle"),
            // Byte value longer than the block.
            (&[0x03, 0x0D, 0x05, 0x01], "byte(s) left"),
            // Byte value longer than 65535 bytes (length varint 0xC1 0x00 0x00 = 65536).
            (&[0x04, 0x0D, 0xC1, 0x00, 0x00], "maximum"),
            // Key overflow: delta 2^64-1 (odd: empty bytes value), then delta 1.
            (
                &[
                    0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01,
                ],
                "2^64-1",
            ),
        ];
        for (bytes, needle) in cases {
            match LocProperties::decode_wire(bytes) {
                Err(LocError::Malformed(msg)) => {
                    assert!(msg.contains(needle), "{bytes:02X?}: {msg}")
                }
                other => panic!("{bytes:02X?}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_properties_are_ignored() {
        // Even 0x02 = 7, odd 0x03 = [1], then TIMESTAMP (delta 0x0D) = 9.
        let wire = [0x07, 0x02, 0x07, 0x01, 0x01, 0x01, 0x0D, 0x09];
        assert_eq!(
            LocProperties::decode_wire(&wire).unwrap(),
            LocProperties::wall_clock(9)
        );
    }

    #[test]
    fn wrong_value_kind_is_malformed() {
        let mut headers = ExtensionHeaders::new();
        headers.0.push(KeyValuePair::new_bytes(TIMESTAMP, vec![1]));
        assert!(matches!(
            LocProperties::from_extension_headers(&headers),
            Err(LocError::Malformed(m)) if m.contains("TIMESTAMP")
        ));
        let mut headers = ExtensionHeaders::new();
        headers.0.push(KeyValuePair::new_int(VIDEO_CONFIG, 1));
        assert!(matches!(
            LocProperties::from_extension_headers(&headers),
            Err(LocError::Malformed(_))
        ));
        let mut headers = ExtensionHeaders::new();
        headers.set_intvalue(AUDIO_LEVEL, 300);
        assert!(LocProperties::from_extension_headers(&headers).is_err());
    }

    #[test]
    fn invalid_values_are_not_encoded() {
        let d = LocProperties::default;
        for p in [
            LocProperties {
                timescale: Some(0),
                ..d()
            },
            LocProperties {
                audio_level: Some(256),
                ..d()
            },
            LocProperties {
                video_frame_marking: Some(vec![]),
                ..d()
            },
            LocProperties {
                audio_config: Some(Bytes::from(vec![0; MAX_VALUE_BYTES + 1])),
                ..d()
            },
        ] {
            assert!(
                matches!(p.encode_wire(), Err(LocError::Invalid(_))),
                "{p:?}"
            );
        }
    }

    #[test]
    fn timestamps_convert_to_microseconds() {
        assert_eq!(LocProperties::wall_clock(42).timestamp_us(), Some(42));
        assert!(LocProperties::wall_clock(42).is_wall_clock());
        assert_eq!(
            LocProperties::media_time(90_000, 90_000).timestamp_us(),
            Some(1_000_000)
        );
        assert_eq!(
            LocProperties::media_time(3, 48_000).timestamp_us(),
            Some(62)
        );
        assert_eq!(
            LocProperties::media_time(7, 1_000_000).timestamp_us(),
            Some(7)
        );
        assert!(!LocProperties::media_time(7, 1).is_wall_clock());
        assert_eq!(LocProperties::media_time(u64::MAX, 1).timestamp_us(), None);
        assert_eq!(LocProperties::media_time(1, 0).timestamp_us(), None);
        assert_eq!(LocProperties::default().timestamp_us(), None);
    }

    #[test]
    fn audio_level_and_frame_marking_helpers() {
        let p = all_properties();
        assert_eq!(p.audio_level_dbov(), Some(42));
        assert_eq!(p.voice_activity(), Some(true));
        assert_eq!(p.is_independent(), Some(true));
        assert_eq!(LocProperties::default().is_independent(), None);
    }

    #[test]
    fn send_time_key_is_application_specific() {
        assert_eq!(SEND_TIME % 2, 0, "varint values need an even key");
        assert!((0x3800..=0x3FFF).contains(&SEND_TIME));
        assert_ne!((SEND_TIME - 0x9D) % 0x7F, 0, "must not be a grease value");
    }
}

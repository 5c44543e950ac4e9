//! AAC framing: the `AudioSpecificConfig` (ISO/IEC 14496-3 §1.6.2.1) that a decoder needs and
//! that tracks carry as the WebCodecs `description`, and ADTS headers (ISO/IEC 13818-7 §6.2),
//! which MPEG-TS carries in band and tracks do not.
//!
//! AAC reaches moqcast as raw frames plus an `AudioSpecificConfig` (MP4, FLV/RTMP) or as ADTS
//! frames (MPEG-TS, `.aac`). Pure logic without I/O; it decodes untrusted bytes and tells "need
//! more bytes" ([`AacError::Incomplete`]) apart from "these bytes are wrong"
//! ([`AacError::Malformed`]).

/// AAC sampling frequencies by index (ISO/IEC 14496-3 Table 1.18).
pub const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Audio object types WebCodecs decodes: AAC-LC (2), HE-AAC (SBR, 5), HE-AAC v2 (PS, 29).
pub const WEBCODECS_OBJECT_TYPES: [u8; 3] = [2, 5, 29];

/// Why AAC bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AacError {
    /// The input ends early: a longer buffer may decode.
    #[error("incomplete AAC data: more bytes are needed")]
    Incomplete,
    /// The input breaks the syntax; more bytes will not help.
    #[error("malformed AAC data: {0}")]
    Malformed(&'static str),
}

/// What moqcast reads from an `AudioSpecificConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// `audioObjectType` (2 = AAC-LC, 5 = SBR, 29 = PS), escapes resolved. With explicit SBR/PS
    /// signalling this is the signalled type (5 or 29), not the core's.
    pub object_type: u8,
    /// The output sampling rate in Hz: the extension (SBR) rate when one is signalled.
    pub sample_rate: u32,
    /// `channelConfiguration` (1..=7 are the standard layouts; 0 means a program config
    /// element in the payload says it).
    pub channel_config: u8,
}

/// Reads bits most-significant first; a short read is [`AacError::Incomplete`].
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, AacError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8).ok_or(AacError::Incomplete)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, AacError> {
        let t = self.read(5)? as u8;
        Ok(if t == 31 { 32 + self.read(6)? as u8 } else { t })
    }

    fn sample_rate(&mut self) -> Result<u32, AacError> {
        match self.read(4)? as usize {
            15 => match self.read(24)? {
                0 => Err(AacError::Malformed("explicit sampling frequency of 0 Hz")),
                hz => Ok(hz),
            },
            i if i < SAMPLE_RATES.len() => Ok(SAMPLE_RATES[i]),
            _ => Err(AacError::Malformed("reserved samplingFrequencyIndex")),
        }
    }
}

impl AudioSpecificConfig {
    /// Parses the head of an `AudioSpecificConfig`: object type, rate and channels, and the
    /// explicit SBR/PS extension. The rest (the GASpecificConfig and backward-compatible
    /// extensions) is left to the decoder, which gets the whole record.
    pub fn parse(data: &[u8]) -> Result<AudioSpecificConfig, AacError> {
        let mut bits = Bits { data, pos: 0 };
        let mut object_type = bits.object_type()?;
        if object_type == 0 {
            return Err(AacError::Malformed("audioObjectType 0 (null)"));
        }
        let mut sample_rate = bits.sample_rate()?;
        let channel_config = bits.read(4)? as u8;
        if channel_config > 7 {
            return Err(AacError::Malformed("reserved channelConfiguration"));
        }
        // §1.6.2.1: explicit hierarchical SBR (5) / PS (29) signalling carries the output rate.
        if object_type == 5 || object_type == 29 {
            sample_rate = bits.sample_rate()?;
            let core = bits.object_type()?;
            if core == 0 {
                return Err(AacError::Malformed("SBR core audioObjectType 0 (null)"));
            }
        } else {
            object_type = object_type.max(1);
        }
        Ok(AudioSpecificConfig {
            object_type,
            sample_rate,
            channel_config,
        })
    }

    /// The codec string WebCodecs and MSF catalogs use: `mp4a.40.N`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Channels for the standard layouts (1..=6 are 1..=6 channels, 7 is 7.1), `None` when a
    /// program config element (channel configuration 0) says.
    pub fn channels(&self) -> Option<u32> {
        match self.channel_config {
            0 => None,
            7 => Some(8),
            c => Some(u32::from(c)),
        }
    }

    /// Whether WebCodecs (and so the browser viewer) decodes this object type.
    pub fn webcodecs_decodable(&self) -> bool {
        WEBCODECS_OBJECT_TYPES.contains(&self.object_type)
    }
}

/// The 2-byte `AudioSpecificConfig` for an object type (1..=30), one of [`SAMPLE_RATES`] and
/// a channel count (1..=7); `None` for values it cannot express.
pub fn audio_specific_config(object_type: u8, sample_rate: u32, channels: u32) -> Option<Vec<u8>> {
    let index = SAMPLE_RATES.iter().position(|&r| r == sample_rate)? as u8;
    let channels = u8::try_from(channels)
        .ok()
        .filter(|&c| (1..=7).contains(&c))?;
    let object_type = Some(object_type).filter(|t| (1..=30).contains(t))?;
    let bits: u16 =
        (u16::from(object_type) << 11) | (u16::from(index) << 7) | (u16::from(channels) << 3);
    Some(bits.to_be_bytes().to_vec())
}

/// The length of the ADTS header (ISO/IEC 13818-7 §6.2) that `data` starts with, if it is one
/// ADTS frame: the sync word matches and the frame length field is the packet's length.
pub fn adts_header_len(data: &[u8]) -> Option<usize> {
    if data.len() < 7 || data[0] != 0xff || data[1] & 0xf6 != 0xf0 {
        return None;
    }
    let protection_absent = data[1] & 1 == 1;
    let frame_length = (usize::from(data[3] & 0x03) << 11)
        | (usize::from(data[4]) << 3)
        | usize::from(data[5] >> 5);
    let header = if protection_absent { 7 } else { 9 };
    (frame_length == data.len() && data.len() >= header).then_some(header)
}

/// The fields of an ADTS frame header (ISO/IEC 13818-7 §6.2.1) that configure a decoder and
/// frame the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// MPEG-4 audio object type (`profile + 1`: 2 is AAC-LC).
    pub object_type: u8,
    pub sample_rate: u32,
    /// `channel_configuration` (0: a program config element in the stream).
    pub channel_config: u8,
    /// The header's length: 7 bytes, 9 with a CRC.
    pub header_len: usize,
    /// The whole frame's length, header included.
    pub frame_len: usize,
    /// Raw data blocks in the frame (`number_of_raw_data_blocks_in_frame + 1`).
    pub raw_blocks: u8,
}

impl AdtsHeader {
    /// Reads the ADTS header at the start of `data` (which may hold more frames after it).
    /// [`AacError::Incomplete`] when `data` is shorter than the header; the frame itself may be
    /// longer than `data` (check [`AdtsHeader::frame_len`]).
    pub fn parse(data: &[u8]) -> Result<AdtsHeader, AacError> {
        if data.len() < 2 {
            return Err(AacError::Incomplete);
        }
        if data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
            return Err(AacError::Malformed("no ADTS sync word"));
        }
        if data[1] & 0x06 != 0 {
            return Err(AacError::Malformed("ADTS layer is not 0"));
        }
        let header_len = if data[1] & 1 == 1 { 7 } else { 9 };
        if data.len() < 7 {
            return Err(AacError::Incomplete);
        }
        let index = usize::from((data[2] >> 2) & 0x0f);
        let sample_rate = *SAMPLE_RATES.get(index).ok_or(AacError::Malformed(
            "reserved ADTS sampling frequency index",
        ))?;
        let frame_len = (usize::from(data[3] & 0x03) << 11)
            | (usize::from(data[4]) << 3)
            | usize::from(data[5] >> 5);
        if frame_len < header_len {
            return Err(AacError::Malformed("ADTS frame shorter than its header"));
        }
        Ok(AdtsHeader {
            object_type: (data[2] >> 6) + 1,
            sample_rate,
            channel_config: ((data[2] & 1) << 2) | (data[3] >> 6),
            header_len,
            frame_len,
            raw_blocks: (data[6] & 0x03) + 1,
        })
    }

    /// The `AudioSpecificConfig` this header describes (`None` for channel configuration 0).
    pub fn audio_specific_config(&self) -> Option<Vec<u8>> {
        audio_specific_config(
            self.object_type,
            self.sample_rate,
            u32::from(self.channel_config),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_lc_48k_stereo_parses_and_round_trips() {
        let asc = audio_specific_config(2, 48_000, 2).unwrap();
        assert_eq!(asc, vec![0x11, 0x90]);
        let parsed = AudioSpecificConfig::parse(&asc).unwrap();
        assert_eq!(
            parsed,
            AudioSpecificConfig {
                object_type: 2,
                sample_rate: 48_000,
                channel_config: 2
            }
        );
        assert_eq!(parsed.codec_string(), "mp4a.40.2");
        assert_eq!(parsed.channels(), Some(2));
        assert!(parsed.webcodecs_decodable());
    }

    #[test]
    fn explicit_sbr_signalling_gives_the_output_rate() {
        // HE-AAC: object type 5, core 24 kHz (index 6), stereo, extension 48 kHz (3), core AAC-LC.
        let bits: u32 = (5 << 27) | (6 << 23) | (2 << 19) | (3 << 15) | (2 << 10);
        let parsed = AudioSpecificConfig::parse(&bits.to_be_bytes()).unwrap();
        assert_eq!((parsed.object_type, parsed.sample_rate), (5, 48_000));
    }

    #[test]
    fn escaped_object_types_and_explicit_rates_parse() {
        // Object type 31 + 6 bits (= 32 + 10 = 42), rate index 15 + 24 bits (44100), mono.
        let mut v: u64 = 31;
        v = (v << 6) | 10;
        v = (v << 4) | 15;
        v = (v << 24) | 44_100;
        v = (v << 4) | 1;
        let bits = 5 + 6 + 4 + 24 + 4;
        let bytes = (v << (64 - bits)).to_be_bytes();
        let parsed = AudioSpecificConfig::parse(&bytes[..6]).unwrap();
        assert_eq!(parsed.object_type, 42);
        assert_eq!(parsed.sample_rate, 44_100);
        assert!(!parsed.webcodecs_decodable());
    }

    #[test]
    fn short_configs_need_more_bytes_and_reserved_values_are_malformed() {
        assert_eq!(AudioSpecificConfig::parse(&[]), Err(AacError::Incomplete));
        assert_eq!(
            AudioSpecificConfig::parse(&[0x11]),
            Err(AacError::Incomplete)
        );
        // Object type 0.
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x01, 0x90]),
            Err(AacError::Malformed(_))
        ));
        // Rate index 13 (reserved).
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AacError::Malformed(_))
        ));
    }

    #[test]
    fn adts_headers_are_found_only_when_the_length_matches() {
        // AAC-LC, 48 kHz, 2 channels, no CRC, a 10-byte frame.
        let adts = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 0xde, 0xad, 0x00];
        assert_eq!(adts_header_len(&adts), Some(7));
        assert_eq!(adts_header_len(&adts[..9]), None, "length field disagrees");
        assert_eq!(adts_header_len(&[0x21, 0x10, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn adts_headers_give_the_config_and_the_frame_length() {
        let adts = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 0xde, 0xad, 0x00];
        let h = AdtsHeader::parse(&adts).unwrap();
        assert_eq!(
            (h.object_type, h.sample_rate, h.channel_config),
            (2, 48_000, 2)
        );
        assert_eq!((h.header_len, h.frame_len, h.raw_blocks), (7, 10, 1));
        assert_eq!(h.audio_specific_config(), Some(vec![0x11, 0x90]));
        assert_eq!(AdtsHeader::parse(&adts[..5]), Err(AacError::Incomplete));
        assert!(matches!(
            AdtsHeader::parse(&[0x12, 0x34, 0, 0, 0, 0, 0]),
            Err(AacError::Malformed(_))
        ));
        // A frame length of 3: shorter than the header.
        assert!(matches!(
            AdtsHeader::parse(&[0xff, 0xf1, 0x4c, 0x80, 0x00, 0x7f, 0xfc]),
            Err(AacError::Malformed(_))
        ));
    }

    #[test]
    fn unexpressible_configs_are_none() {
        assert_eq!(audio_specific_config(2, 12_345, 2), None);
        assert_eq!(audio_specific_config(2, 48_000, 0), None);
        assert_eq!(audio_specific_config(31, 48_000, 2), None);
    }
}

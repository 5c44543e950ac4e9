//! H.264 framing: Annex-B and AVCC conversion, `avcC` records, SPS parsing, codec strings.
//!
//! H.264 reaches moqcast in two framings:
//!
//! * **AVCC** (MP4, FLV, RTMP): every NAL unit is prefixed by its length (1, 2 or 4 bytes,
//!   big-endian), and the parameter sets travel out of band in an `AVCDecoderConfigurationRecord`
//!   (`avcC`, ISO/IEC 14496-15 §5.3.3.1).
//! * **Annex-B** (MPEG-TS, SRT, WebRTC, raw `.h264`; ITU-T H.264 Annex B): NAL units separated by
//!   start codes (`00 00 01` or `00 00 00 01`), parameter sets in band.
//!
//! Tracks carry AVCC with 4-byte lengths and an `avcC` record as the WebCodecs `description`
//! (the "avc" format of the WebCodecs AVC codec registration). This module is the one place that
//! converts between the two. It is pure logic without I/O, and it decodes untrusted bytes: no
//! function here panics on any input, and errors tell "need more bytes"
//! ([`H264Error::Incomplete`]) apart from "these bytes are wrong" ([`H264Error::Malformed`]).

use std::fmt;

/// NAL unit type of a coded slice of an IDR picture (H.264 Table 7-1).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// NAL unit type of a sequence parameter set extension.
pub const NAL_SPS_EXT: u8 = 13;

/// Why H.264 bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H264Error {
    /// The input ends early: a longer buffer (or, for [`AvcConfig::from_parameter_sets`], more
    /// NAL units) may decode.
    #[error("incomplete H.264 data: more bytes are needed")]
    Incomplete,
    /// The input breaks the syntax; more bytes will not help.
    #[error("malformed H.264 data: {0}")]
    Malformed(&'static str),
}

/// The `nal_unit_type` of a NAL unit (its first byte's low 5 bits), `None` for an empty one.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

// ---------------------------------------------------------------------------------------------
// Annex-B
// ---------------------------------------------------------------------------------------------

/// Iterator over the NAL units of an Annex-B byte stream; see [`annexb_nals`].
#[derive(Debug, Clone)]
pub struct AnnexBNals<'a> {
    rest: &'a [u8],
}

/// Iterates the NAL units of an Annex-B byte stream, without their start codes.
///
/// Bytes before the first start code are skipped (leading zero bytes, or garbage), as are empty
/// NAL units and the zero bytes that precede the next start code (`trailing_zero_8bits`).
/// Input without any start code yields nothing.
pub fn annexb_nals(data: &[u8]) -> AnnexBNals<'_> {
    let rest = match find_start_code(data) {
        Some((_, after)) => &data[after..],
        None => &[],
    };
    AnnexBNals { rest }
}

/// Finds the first `00 00 01` in `data`: returns (index of its first byte, index after it).
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let mut zeros = 0usize;
    for (i, &b) in data.iter().enumerate() {
        match b {
            0 => zeros += 1,
            1 if zeros >= 2 => return Some((i - 2, i + 1)),
            _ => zeros = 0,
        }
    }
    None
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (nal, rest) = match find_start_code(self.rest) {
                Some((start, after)) => (&self.rest[..start], &self.rest[after..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            // A 4-byte start code (or trailing_zero_8bits) leaves zero bytes at the end.
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
        None
    }
}

/// True when `data` begins with an Annex-B start code (`00 00 01` or `00 00 00 01`).
pub fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// Appends one NAL unit to an AVCC buffer with a 4-byte length prefix.
///
/// A NAL unit longer than `u32::MAX` bytes cannot be framed and is skipped.
pub fn push_avcc_nal(out: &mut Vec<u8>, nal: &[u8]) {
    if let Ok(len) = u32::try_from(nal.len()) {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
}

/// Converts an Annex-B access unit (or stream) to AVCC with 4-byte lengths, keeping every NAL unit.
pub fn annexb_to_avcc(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in annexb_nals(data) {
        push_avcc_nal(&mut out, nal);
    }
    out
}

/// True when the Annex-B data holds a slice of an IDR picture.
pub fn is_keyframe_annexb(data: &[u8]) -> bool {
    annexb_nals(data).any(|nal| nal_type(nal) == Some(NAL_IDR))
}

// ---------------------------------------------------------------------------------------------
// AVCC
// ---------------------------------------------------------------------------------------------

fn check_length_size(length_size: usize) -> Result<(), H264Error> {
    match length_size {
        1 | 2 | 4 => Ok(()),
        _ => Err(H264Error::Malformed("NAL length size must be 1, 2 or 4")),
    }
}

/// Iterator over the NAL units of AVCC data; see [`avcc_nals`].
#[derive(Debug, Clone)]
pub struct AvccNals<'a> {
    rest: &'a [u8],
    length_size: usize,
    failed: bool,
}

/// Iterates the NAL units of AVCC data whose lengths are `length_size` bytes (1, 2 or 4).
///
/// Yields an error and then stops when the data is truncated ([`H264Error::Incomplete`]), holds
/// a zero-length NAL unit, or the length size is not 1, 2 or 4 ([`H264Error::Malformed`]).
pub fn avcc_nals(data: &[u8], length_size: usize) -> AvccNals<'_> {
    AvccNals {
        rest: data,
        length_size,
        failed: false,
    }
}

impl<'a> Iterator for AvccNals<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = self.next_nal();
        self.failed = result.is_err();
        Some(result)
    }
}

impl<'a> AvccNals<'a> {
    fn next_nal(&mut self) -> Result<&'a [u8], H264Error> {
        check_length_size(self.length_size)?;
        if self.rest.len() < self.length_size {
            return Err(H264Error::Incomplete);
        }
        let (prefix, body) = self.rest.split_at(self.length_size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len == 0 {
            return Err(H264Error::Malformed("zero-length NAL unit"));
        }
        if body.len() < len {
            return Err(H264Error::Incomplete);
        }
        let (nal, rest) = body.split_at(len);
        self.rest = rest;
        Ok(nal)
    }
}

/// Converts AVCC data with `length_size`-byte lengths to Annex-B with 4-byte start codes.
pub fn avcc_to_annexb(data: &[u8], length_size: usize) -> Result<Vec<u8>, H264Error> {
    check_length_size(length_size)?;
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in avcc_nals(data, length_size) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal?);
    }
    Ok(out)
}

/// Rewrites AVCC data with `length_size`-byte lengths to 4-byte lengths (what tracks carry).
pub fn avcc_to_avcc4(data: &[u8], length_size: usize) -> Result<Vec<u8>, H264Error> {
    check_length_size(length_size)?;
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in avcc_nals(data, length_size) {
        push_avcc_nal(&mut out, nal?);
    }
    Ok(out)
}

/// True when AVCC data holds a slice of an IDR picture. Stops looking at the first framing
/// error (a truncated or malformed tail), so damaged data counts as a keyframe only when an IDR
/// slice precedes the damage.
pub fn is_keyframe_avcc(data: &[u8], length_size: usize) -> bool {
    avcc_nals(data, length_size)
        .map_while(Result::ok)
        .any(|nal| nal_type(nal) == Some(NAL_IDR))
}

// ---------------------------------------------------------------------------------------------
// avcC: AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1)
// ---------------------------------------------------------------------------------------------

/// The optional tail of an `avcC` record for the High profiles (profile_idc 100, 110, 122, 144).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfigExt {
    /// `chroma_format_idc` (1 = 4:2:0).
    pub chroma_format: u8,
    /// `bit_depth_luma_minus8 + 8`.
    pub bit_depth_luma: u8,
    /// `bit_depth_chroma_minus8 + 8`.
    pub bit_depth_chroma: u8,
    /// Sequence parameter set extension NAL units.
    pub sps_ext: Vec<Vec<u8>>,
}

/// An `AVCDecoderConfigurationRecord` (`avcC`): what a decoder needs before the first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (profile_idc of the SPS).
    pub profile: u8,
    /// `profile_compatibility` (the SPS constraint_set flags byte).
    pub compat: u8,
    /// `AVCLevelIndication` (level_idc).
    pub level: u8,
    /// Bytes in each NAL unit length prefix of the samples (1, 2 or 4).
    pub length_size: u8,
    /// Sequence parameter set NAL units (with their NAL header byte).
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter set NAL units (with their NAL header byte).
    pub pps: Vec<Vec<u8>>,
    /// The High-profile extension, when the record carries one.
    pub ext: Option<AvcConfigExt>,
}

/// Reads a big-endian byte record; every short read is [`H264Error::Incomplete`].
struct ByteReader<'a> {
    rest: &'a [u8],
}

impl<'a> ByteReader<'a> {
    fn u8(&mut self) -> Result<u8, H264Error> {
        let (&b, rest) = self.rest.split_first().ok_or(H264Error::Incomplete)?;
        self.rest = rest;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], H264Error> {
        if self.rest.len() < n {
            return Err(H264Error::Incomplete);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u16_prefixed(&mut self) -> Result<&'a [u8], H264Error> {
        let len = u16::from_be_bytes([self.u8()?, self.u8()?]);
        self.bytes(usize::from(len))
    }
}

impl AvcConfig {
    /// Parses an `avcC` record. Trailing bytes after the record are rejected.
    pub fn parse(data: &[u8]) -> Result<AvcConfig, H264Error> {
        let mut r = ByteReader { rest: data };
        if r.u8()? != 1 {
            return Err(H264Error::Malformed("avcC configurationVersion is not 1"));
        }
        let profile = r.u8()?;
        let compat = r.u8()?;
        let level = r.u8()?;
        let length_size = (r.u8()? & 0x03) + 1;
        if length_size == 3 {
            return Err(H264Error::Malformed("avcC lengthSizeMinusOne is 2"));
        }
        let num_sps = r.u8()? & 0x1f;
        let mut sps = Vec::with_capacity(usize::from(num_sps));
        for _ in 0..num_sps {
            let nal = r.u16_prefixed()?;
            if nal_type(nal) != Some(NAL_SPS) {
                return Err(H264Error::Malformed(
                    "avcC SPS entry is not an SPS NAL unit",
                ));
            }
            sps.push(nal.to_vec());
        }
        let num_pps = r.u8()?;
        let mut pps = Vec::with_capacity(usize::from(num_pps));
        for _ in 0..num_pps {
            let nal = r.u16_prefixed()?;
            if nal_type(nal) != Some(NAL_PPS) {
                return Err(H264Error::Malformed("avcC PPS entry is not a PPS NAL unit"));
            }
            pps.push(nal.to_vec());
        }
        if sps.is_empty() {
            return Err(H264Error::Malformed("avcC has no SPS"));
        }
        // The High-profile extension is optional in practice: many writers leave it out.
        let ext = if r.rest.is_empty() {
            None
        } else {
            let chroma_format = r.u8()? & 0x03;
            let bit_depth_luma = (r.u8()? & 0x07) + 8;
            let bit_depth_chroma = (r.u8()? & 0x07) + 8;
            let num_ext = r.u8()?;
            let mut sps_ext = Vec::with_capacity(usize::from(num_ext));
            for _ in 0..num_ext {
                sps_ext.push(r.u16_prefixed()?.to_vec());
            }
            if !r.rest.is_empty() {
                return Err(H264Error::Malformed("trailing bytes after avcC record"));
            }
            Some(AvcConfigExt {
                chroma_format,
                bit_depth_luma,
                bit_depth_chroma,
                sps_ext,
            })
        };
        Ok(AvcConfig {
            profile,
            compat,
            level,
            length_size,
            sps,
            pps,
            ext,
        })
    }

    /// Builds a record (4-byte NAL lengths) from the SPS and PPS among `nals`; other NAL unit
    /// types are ignored and repeated parameter sets kept once. Profile, compatibility and level
    /// come from the first SPS, which must parse; High-profile SPSs get the `avcC` extension.
    ///
    /// [`H264Error::Incomplete`] means no SPS or no PPS was among `nals` yet.
    pub fn from_parameter_sets<'a>(
        nals: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<AvcConfig, H264Error> {
        let mut sps: Vec<Vec<u8>> = Vec::new();
        let mut pps: Vec<Vec<u8>> = Vec::new();
        for nal in nals {
            let list = match nal_type(nal) {
                Some(NAL_SPS) => &mut sps,
                Some(NAL_PPS) => &mut pps,
                _ => continue,
            };
            if nal.len() > usize::from(u16::MAX) {
                return Err(H264Error::Malformed(
                    "parameter set longer than 65535 bytes",
                ));
            }
            if !list.iter().any(|known| known == nal) {
                list.push(nal.to_vec());
            }
        }
        if sps.len() > 31 || pps.len() > 255 {
            return Err(H264Error::Malformed(
                "too many parameter sets for an avcC record",
            ));
        }
        let first = sps.first().ok_or(H264Error::Incomplete)?;
        if pps.is_empty() {
            return Err(H264Error::Incomplete);
        }
        let info = Sps::parse(first)?;
        let ext = matches!(info.profile_idc, 100 | 110 | 122 | 144).then(|| AvcConfigExt {
            chroma_format: info.chroma_format_idc,
            bit_depth_luma: info.bit_depth_luma,
            bit_depth_chroma: info.bit_depth_chroma,
            sps_ext: Vec::new(),
        });
        Ok(AvcConfig {
            profile: info.profile_idc,
            compat: info.constraint_flags,
            level: info.level_idc,
            length_size: 4,
            sps,
            pps,
            ext,
        })
    }

    /// Reads decoder configuration from codec extradata in either framing: an `avcC` record
    /// (first byte 1) or Annex-B parameter sets (as libx264 and MPEG-TS demuxers give).
    pub fn from_extradata(data: &[u8]) -> Result<AvcConfig, H264Error> {
        match data.first() {
            None => Err(H264Error::Incomplete),
            Some(1) => AvcConfig::parse(data),
            Some(_) if starts_with_start_code(data) => {
                AvcConfig::from_parameter_sets(annexb_nals(data))
            }
            Some(_) => Err(H264Error::Malformed(
                "extradata is neither avcC nor Annex-B",
            )),
        }
    }

    /// Serialises the record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            16 + self
                .sps
                .iter()
                .chain(&self.pps)
                .map(|n| n.len() + 2)
                .sum::<usize>(),
        );
        out.extend_from_slice(&[1, self.profile, self.compat, self.level]);
        out.push(0xfc | (self.length_size.clamp(1, 4) - 1));
        let sps: Vec<&Vec<u8>> = self.sps.iter().take(31).collect();
        out.push(0xe0 | sps.len() as u8);
        for nal in sps {
            push_u16_prefixed(&mut out, nal);
        }
        let pps: Vec<&Vec<u8>> = self.pps.iter().take(255).collect();
        out.push(pps.len() as u8);
        for nal in pps {
            push_u16_prefixed(&mut out, nal);
        }
        if let Some(ext) = &self.ext {
            out.push(0xfc | (ext.chroma_format & 0x03));
            out.push(0xf8 | (ext.bit_depth_luma.saturating_sub(8) & 0x07));
            out.push(0xf8 | (ext.bit_depth_chroma.saturating_sub(8) & 0x07));
            let sps_ext: Vec<&Vec<u8>> = ext.sps_ext.iter().take(255).collect();
            out.push(sps_ext.len() as u8);
            for nal in sps_ext {
                push_u16_prefixed(&mut out, nal);
            }
        }
        out
    }

    /// The codec string WebCodecs and MSF catalogs use: `avc1.PPCCLL` in hex, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compat, self.level
        )
    }

    /// Parses the first SPS (picture size, frame rate, reordering).
    pub fn sps_info(&self) -> Result<Sps, H264Error> {
        Sps::parse(self.sps.first().ok_or(H264Error::Incomplete)?)
    }

    /// The parameter sets as Annex-B (4-byte start codes), SPS first.
    pub fn parameter_sets_annexb(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in self.sps.iter().chain(&self.pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// Writes a NAL unit with a 2-byte length; callers have checked that it fits (longer ones are
/// cut, which only [`AvcConfig`] values built by hand can reach).
fn push_u16_prefixed(out: &mut Vec<u8>, nal: &[u8]) {
    let len = nal.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&nal[..len]);
}

// ---------------------------------------------------------------------------------------------
// Sequence parameter set (H.264 §7.3.2.1.1, VUI §E.1.1)
// ---------------------------------------------------------------------------------------------

/// What moqcast reads from a sequence parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct Sps {
    /// profile_idc (66 Baseline, 77 Main, 100 High, ...).
    pub profile_idc: u8,
    /// constraint_set0..5 flags and reserved bits, as one byte.
    pub constraint_flags: u8,
    /// level_idc (31 = level 3.1).
    pub level_idc: u8,
    /// chroma_format_idc (0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4).
    pub chroma_format_idc: u8,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// frame_mbs_only_flag (false for interlaced-capable streams).
    pub frame_mbs_only: bool,
    /// Display width in pixels, after frame cropping.
    pub width: u32,
    /// Display height in pixels, after frame cropping.
    pub height: u32,
    /// Sample aspect ratio from the VUI, when given.
    pub sample_aspect_ratio: Option<(u16, u16)>,
    /// Frames per second from the VUI timing info (`time_scale / (2 * num_units_in_tick)`).
    pub framerate: Option<f64>,
    /// VUI `max_num_reorder_frames`: how many frames can precede another in decode order while
    /// following it in output order.
    pub max_num_reorder_frames: Option<u32>,
}

impl Sps {
    /// Parses an SPS NAL unit (starting with its NAL header byte). A VUI that does not parse is
    /// ignored (its fields stay `None`), as decoders do; everything before it must be valid.
    pub fn parse(nal: &[u8]) -> Result<Sps, H264Error> {
        match nal_type(nal) {
            None => return Err(H264Error::Incomplete),
            Some(NAL_SPS) => {}
            Some(_) => return Err(H264Error::Malformed("not an SPS NAL unit")),
        }
        let rbsp = unescape_rbsp(&nal[1..]);
        let mut r = BitReader::new(&rbsp);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        if r.ue()? > 31 {
            return Err(H264Error::Malformed("seq_parameter_set_id above 31"));
        }
        let mut chroma_format_idc = 1u32;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8u32;
        let mut bit_depth_chroma = 8u32;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc > 3 {
                return Err(H264Error::Malformed("chroma_format_idc above 3"));
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            bit_depth_luma = r.ue()?.saturating_add(8);
            bit_depth_chroma = r.ue()?.saturating_add(8);
            if bit_depth_luma > 14 || bit_depth_chroma > 14 {
                return Err(H264Error::Malformed("bit depth above 14"));
            }
            let _qpprime_y_zero_transform_bypass = r.flag()?;
            if r.flag()? {
                // seq_scaling_matrix_present_flag: 6 4x4 lists, then 2 (or 6 for 4:4:4) 8x8.
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        if r.ue()? > 12 {
            return Err(H264Error::Malformed("log2_max_frame_num_minus4 above 12"));
        }
        match r.ue()? {
            0 => {
                if r.ue()? > 12 {
                    return Err(H264Error::Malformed(
                        "log2_max_pic_order_cnt_lsb_minus4 above 12",
                    ));
                }
            }
            1 => {
                let _delta_pic_order_always_zero = r.flag()?;
                let _offset_for_non_ref_pic = r.se()?;
                let _offset_for_top_to_bottom_field = r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return Err(H264Error::Malformed(
                        "num_ref_frames_in_pic_order_cnt_cycle",
                    ));
                }
                for _ in 0..cycle {
                    let _offset_for_ref_frame = r.se()?;
                }
            }
            2 => {}
            _ => return Err(H264Error::Malformed("pic_order_cnt_type above 2")),
        }
        let _max_num_ref_frames = r.ue()?;
        let _gaps_in_frame_num_allowed = r.flag()?;
        let width_mbs = u64::from(r.ue()?) + 1;
        let height_map_units = u64::from(r.ue()?) + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.flag()?;
        }
        let _direct_8x8_inference = r.flag()?;
        let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0u64, 0, 0, 0);
        if r.flag()? {
            crop_left = u64::from(r.ue()?);
            crop_right = u64::from(r.ue()?);
            crop_top = u64::from(r.ue()?);
            crop_bottom = u64::from(r.ue()?);
        }

        // §7.4.2.1.1: crop units depend on ChromaArrayType and on field coding.
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (crop_unit_x, crop_unit_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let coded_width = width_mbs * 16;
        let coded_height = height_map_units * 16 * field_factor;
        let crop_x = (crop_left + crop_right) * crop_unit_x;
        let crop_y = (crop_top + crop_bottom) * crop_unit_y;
        if crop_x >= coded_width || crop_y >= coded_height {
            return Err(H264Error::Malformed(
                "frame cropping removes the whole picture",
            ));
        }
        let width = u32::try_from(coded_width - crop_x)
            .map_err(|_| H264Error::Malformed("picture width out of range"))?;
        let height = u32::try_from(coded_height - crop_y)
            .map_err(|_| H264Error::Malformed("picture height out of range"))?;

        let mut sps = Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc: chroma_format_idc as u8,
            bit_depth_luma: bit_depth_luma as u8,
            bit_depth_chroma: bit_depth_chroma as u8,
            frame_mbs_only,
            width,
            height,
            sample_aspect_ratio: None,
            framerate: None,
            max_num_reorder_frames: None,
        };
        if r.flag()? {
            // vui_parameters_present_flag. Best effort: a broken VUI leaves its fields unset.
            let mut vui_reader = r;
            if let Ok(vui) = parse_vui(&mut vui_reader) {
                sps.sample_aspect_ratio = vui.sample_aspect_ratio;
                sps.framerate = vui.framerate;
                sps.max_num_reorder_frames = vui.max_num_reorder_frames;
            }
        }
        Ok(sps)
    }

    /// How many frames may be reordered: the VUI's `max_num_reorder_frames`, else 0 where the
    /// profile has no B-frames (Baseline, or an intra-only High profile), else `None` (unknown).
    pub fn reorder_depth(&self) -> Option<u32> {
        if let Some(n) = self.max_num_reorder_frames {
            return Some(n);
        }
        let constraint_set3 = self.constraint_flags & 0x10 != 0;
        match self.profile_idc {
            66 => Some(0),
            44 | 86 | 100 | 110 | 122 | 244 if constraint_set3 => Some(0),
            _ => None,
        }
    }
}

/// Skips a scaling_list() of `size` coefficients (§7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = i64::from(r.se()?);
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::Malformed("delta_scale out of range"));
            }
            next_scale = (last_scale + delta + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

struct Vui {
    sample_aspect_ratio: Option<(u16, u16)>,
    framerate: Option<f64>,
    max_num_reorder_frames: Option<u32>,
}

/// vui_parameters() (§E.1.1), up to the bitstream restriction.
fn parse_vui(r: &mut BitReader<'_>) -> Result<Vui, H264Error> {
    let mut vui = Vui {
        sample_aspect_ratio: None,
        framerate: None,
        max_num_reorder_frames: None,
    };
    if r.flag()? {
        // aspect_ratio_info_present_flag; Table E-1.
        const SAR: [(u16, u16); 17] = [
            (0, 0),
            (1, 1),
            (12, 11),
            (10, 11),
            (16, 11),
            (40, 33),
            (24, 11),
            (20, 11),
            (32, 11),
            (80, 33),
            (18, 11),
            (15, 11),
            (64, 33),
            (160, 99),
            (4, 3),
            (3, 2),
            (2, 1),
        ];
        let idc = r.bits(8)? as usize;
        let sar = if idc == 255 {
            (r.bits(16)? as u16, r.bits(16)? as u16)
        } else {
            SAR.get(idc).copied().unwrap_or((0, 0))
        };
        vui.sample_aspect_ratio = (sar.0 != 0 && sar.1 != 0).then_some(sar);
    }
    if r.flag()? {
        let _overscan_appropriate = r.flag()?;
    }
    if r.flag()? {
        // video_signal_type_present_flag
        let _video_format = r.bits(3)?;
        let _video_full_range = r.flag()?;
        if r.flag()? {
            let _colour_primaries_transfer_matrix = r.bits(24)?;
        }
    }
    if r.flag()? {
        let _chroma_sample_loc_type_top = r.ue()?;
        let _chroma_sample_loc_type_bottom = r.ue()?;
    }
    if r.flag()? {
        // timing_info_present_flag
        let num_units_in_tick = r.bits(32)?;
        let time_scale = r.bits(32)?;
        let _fixed_frame_rate = r.flag()?;
        if num_units_in_tick > 0 && time_scale > 0 {
            vui.framerate = Some(f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick)));
        }
    }
    let nal_hrd = r.flag()?;
    if nal_hrd {
        skip_hrd_parameters(r)?;
    }
    let vcl_hrd = r.flag()?;
    if vcl_hrd {
        skip_hrd_parameters(r)?;
    }
    if nal_hrd || vcl_hrd {
        let _low_delay_hrd = r.flag()?;
    }
    let _pic_struct_present = r.flag()?;
    if r.flag()? {
        // bitstream_restriction_flag
        let _motion_vectors_over_pic_boundaries = r.flag()?;
        let _max_bytes_per_pic_denom = r.ue()?;
        let _max_bits_per_mb_denom = r.ue()?;
        let _log2_max_mv_length_horizontal = r.ue()?;
        let _log2_max_mv_length_vertical = r.ue()?;
        let reorder = r.ue()?;
        let _max_dec_frame_buffering = r.ue()?;
        if reorder > 16 {
            return Err(H264Error::Malformed("max_num_reorder_frames above 16"));
        }
        vui.max_num_reorder_frames = Some(reorder);
    }
    Ok(vui)
}

/// Skips hrd_parameters() (§E.1.2).
fn skip_hrd_parameters(r: &mut BitReader<'_>) -> Result<(), H264Error> {
    let cpb_cnt = r.ue()?.saturating_add(1);
    if cpb_cnt > 32 {
        return Err(H264Error::Malformed("cpb_cnt_minus1 above 31"));
    }
    let _bit_rate_scale_cpb_size_scale = r.bits(8)?;
    for _ in 0..cpb_cnt {
        let _bit_rate_value_minus1 = r.ue()?;
        let _cpb_size_value_minus1 = r.ue()?;
        let _cbr = r.flag()?;
    }
    // initial_cpb_removal_delay_length_minus1, cpb_removal_delay_length_minus1,
    // dpb_output_delay_length_minus1, time_offset_length: 5 bits each.
    let _lengths = r.bits(20)?;
    Ok(())
}

/// Removes emulation prevention bytes (`00 00 03` -> `00 00`), giving the RBSP (§7.4.1).
fn unescape_rbsp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// An MSB-first bit reader with exp-Golomb codes (§9.1). Running out of bits is
/// [`H264Error::Incomplete`].
#[derive(Clone, Copy)]
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, H264Error> {
        let byte = self.data.get(self.pos / 8).ok_or(H264Error::Incomplete)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self) -> Result<bool, H264Error> {
        Ok(self.bit()? == 1)
    }

    /// Reads `n` bits (at most 32) as an unsigned number.
    fn bits(&mut self, n: u32) -> Result<u32, H264Error> {
        debug_assert!(n <= 32);
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        Ok(value as u32)
    }

    /// ue(v): unsigned exp-Golomb. Codes longer than 32 bits are malformed.
    fn ue(&mut self) -> Result<u32, H264Error> {
        let mut leading_zeros = 0u32;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(H264Error::Malformed("exp-Golomb code longer than 32 bits"));
            }
        }
        let suffix = u64::from(self.bits(leading_zeros)?);
        let value = (1u64 << leading_zeros) - 1 + suffix;
        u32::try_from(value).map_err(|_| H264Error::Malformed("exp-Golomb value out of range"))
    }

    /// se(v): signed exp-Golomb.
    fn se(&mut self) -> Result<i32, H264Error> {
        let k = i64::from(self.ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(value as i32)
    }
}

impl fmt::Display for AvcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} SPS, {} PPS, {}-byte lengths)",
            self.codec_string(),
            self.sps.len(),
            self.pps.len(),
            self.length_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS of `ffmpeg -f lavfi -i testsrc2=size=640x360:rate=30 -c:v libx264 -preset veryfast`:
    /// High profile, level 3.0, 640x368 coded, cropped to 640x360, 30 fps, with a VUI.
    const HIGH_SPS: &str = "6764001eacd940a02ff970110000030001000003003c0f162d96";
    const HIGH_PPS: &str = "68ef8fcb";
    /// SPS of the same source at 320x240 with `-profile:v baseline` (level 1.3).
    const BASELINE_SPS: &str = "6742c00dd90141fb0110000003001000000303c0f142a480";
    const BASELINE_PPS: &str = "68cb83cb20";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn annexb_fixture() -> Vec<u8> {
        let mut data = vec![0, 0, 0, 1];
        data.extend(unhex(HIGH_SPS));
        data.extend([0, 0, 1]);
        data.extend(unhex(HIGH_PPS));
        data.extend([0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]);
        data.extend([0, 0, 1, 0x41, 0x9a, 0x00, 0x00]); // trailing zero bytes belong to no NAL
        data
    }

    #[test]
    fn annexb_iteration_skips_start_codes_and_trailing_zeros() {
        let data = annexb_fixture();
        let nals: Vec<&[u8]> = annexb_nals(&data).collect();
        assert_eq!(nals.len(), 4);
        assert_eq!(nals[0], unhex(HIGH_SPS).as_slice());
        assert_eq!(nals[1], unhex(HIGH_PPS).as_slice());
        assert_eq!(nals[2], &[0x65, 0x88, 0x84, 0x00, 0x33]);
        assert_eq!(nals[3], &[0x41, 0x9a]);
        assert!(is_keyframe_annexb(&data));
        assert_eq!(annexb_nals(&[1, 2, 3]).count(), 0);
        assert_eq!(annexb_nals(&[0, 0, 1, 0, 0, 1]).count(), 0);
    }

    #[test]
    fn annexb_avcc_round_trip() {
        let data = annexb_fixture();
        let avcc = annexb_to_avcc(&data);
        assert_eq!(&avcc[..4], &(unhex(HIGH_SPS).len() as u32).to_be_bytes());
        assert!(is_keyframe_avcc(&avcc, 4));
        let back = avcc_to_annexb(&avcc, 4).unwrap();
        assert_eq!(annexb_to_avcc(&back), avcc);
        let nals: Vec<&[u8]> = avcc_nals(&avcc, 4).map(Result::unwrap).collect();
        assert_eq!(nals, annexb_nals(&data).collect::<Vec<_>>());
    }

    #[test]
    fn avcc_length_sizes_and_errors() {
        let two = [0, 2, 0x65, 0x11, 0, 1, 0x41];
        assert!(is_keyframe_avcc(&two, 2));
        assert_eq!(
            avcc_to_avcc4(&two, 2).unwrap(),
            vec![0, 0, 0, 2, 0x65, 0x11, 0, 0, 0, 1, 0x41]
        );
        assert!(!is_keyframe_avcc(&[0, 0, 0, 1, 0x41], 4));
        assert_eq!(
            avcc_to_annexb(&[0, 0, 0, 5, 0x65], 4),
            Err(H264Error::Incomplete)
        );
        assert_eq!(avcc_to_annexb(&[0, 0], 4), Err(H264Error::Incomplete));
        assert!(matches!(
            avcc_to_annexb(&[0, 0, 0, 0], 4),
            Err(H264Error::Malformed(_))
        ));
        assert!(matches!(
            avcc_to_annexb(&[1, 0x65], 3),
            Err(H264Error::Malformed(_))
        ));
        assert!(!is_keyframe_avcc(&[0x65], 0));
        // An IDR before damage still counts; one after it does not.
        assert!(is_keyframe_avcc(&[0, 0, 0, 1, 0x65, 0, 0, 0, 9], 4));
        assert!(!is_keyframe_avcc(&[0, 0, 0, 9, 0x65], 4));
    }

    #[test]
    fn high_profile_sps_with_cropping() {
        let sps = Sps::parse(&unhex(HIGH_SPS)).unwrap();
        assert_eq!(sps.profile_idc, 100);
        assert_eq!(sps.level_idc, 30);
        assert_eq!(sps.chroma_format_idc, 1);
        assert_eq!(sps.bit_depth_luma, 8);
        assert!(sps.frame_mbs_only);
        assert_eq!((sps.width, sps.height), (640, 360));
        assert_eq!(sps.framerate, Some(30.0));
        assert_eq!(sps.sample_aspect_ratio, Some((1, 1)));
        assert_eq!(sps.max_num_reorder_frames, Some(2));
    }

    #[test]
    fn baseline_sps() {
        let sps = Sps::parse(&unhex(BASELINE_SPS)).unwrap();
        assert_eq!(sps.profile_idc, 66);
        assert_eq!(sps.constraint_flags, 0xc0);
        assert_eq!(sps.level_idc, 13);
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!(sps.reorder_depth(), Some(0));
    }

    #[test]
    fn interlaced_422_and_444_sps() {
        // libx264 `-x264-params interlaced=1` at 1920x1080: frame_mbs_only = 0, 34 map units of
        // 32 lines = 1088, cropped by 2 units of 4 lines.
        let sps = Sps::parse(&unhex("674d4028f403c0227ef011000003000100000300321f162ea0")).unwrap();
        assert!(!sps.frame_mbs_only);
        assert_eq!((sps.profile_idc, sps.width, sps.height), (77, 1920, 1080));
        // libx264 yuv422p10le at 350x200: High 4:2:2, 10-bit, crop units of 2 columns and 1 line.
        let sps = Sps::parse(&unhex(
            "677a000db6cd94161bea27011000000300100000030320f1429960",
        ))
        .unwrap();
        assert_eq!((sps.profile_idc, sps.chroma_format_idc), (122, 2));
        assert_eq!((sps.bit_depth_luma, sps.bit_depth_chroma), (10, 10));
        assert_eq!((sps.width, sps.height), (350, 200));
        assert_eq!(sps.framerate, Some(25.0));
        // libx264 yuv444p: High 4:4:4 Predictive.
        let sps = Sps::parse(&unhex("67f4000d91968141fb011000000300100000030320f142aa")).unwrap();
        assert_eq!((sps.profile_idc, sps.chroma_format_idc), (244, 3));
        assert_eq!((sps.width, sps.height), (320, 240));
    }

    /// Writes SPS fields for tests (libx264 signals its scaling matrices in the PPS, so a
    /// High-profile SPS with scaling lists has to be built by hand).
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, n: u32) {
            for i in (0..n).rev() {
                self.bits.push((value >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, value: u64) {
            let code = value + 1;
            let len = 64 - code.leading_zeros();
            self.put(0, len - 1);
            self.put(code, len);
        }
        fn se(&mut self, value: i64) {
            self.ue(if value > 0 {
                value as u64 * 2 - 1
            } else {
                (-value) as u64 * 2
            });
        }
        fn finish(mut self) -> Vec<u8> {
            self.bits.push(true); // rbsp_stop_one_bit
            while self.bits.len() % 8 != 0 {
                self.bits.push(false);
            }
            self.bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |acc, &b| (acc << 1) | u8::from(b)))
                .collect()
        }
    }

    #[test]
    fn sps_with_scaling_lists() {
        let mut w = BitWriter::default();
        w.put(100, 8); // profile_idc: High
        w.put(0, 8);
        w.put(31, 8);
        w.ue(0); // seq_parameter_set_id
        w.ue(1); // chroma_format_idc 4:2:0
        w.ue(0);
        w.ue(0); // bit depths 8
        w.put(0, 1); // qpprime_y_zero_transform_bypass_flag
        w.put(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            match i {
                // A full 4x4 list of small deltas.
                0 => {
                    w.put(1, 1);
                    for j in 0..16 {
                        w.se(if j % 2 == 0 { 3 } else { -2 });
                    }
                }
                // An 8x8 list that ends early: nextScale becomes 0 after two coefficients.
                6 => {
                    w.put(1, 1);
                    w.se(5);
                    w.se(-13);
                }
                _ => w.put(0, 1),
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(0); // pic_order_cnt_type
        w.ue(2); // log2_max_pic_order_cnt_lsb_minus4
        w.ue(1); // max_num_ref_frames
        w.put(0, 1);
        w.ue(79); // 80 macroblocks = 1280
        w.ue(44); // 45 macroblocks = 720
        w.put(1, 1); // frame_mbs_only_flag
        w.put(1, 1); // direct_8x8_inference_flag
        w.put(1, 1); // frame_cropping_flag
        w.ue(1); // left: 2 pixels
        w.ue(0);
        w.ue(0);
        w.ue(3); // bottom: 6 lines
        w.put(0, 1); // no VUI
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!((sps.profile_idc, sps.level_idc), (100, 31));
        assert_eq!((sps.width, sps.height), (1278, 714));
        assert_eq!(sps.reorder_depth(), None);
        let config = AvcConfig::from_parameter_sets([&nal[..], &[0x68, 0xee][..]]).unwrap();
        assert_eq!(config.codec_string(), "avc1.64001f");
    }

    #[test]
    fn config_from_parameter_sets_round_trips() {
        let data = annexb_fixture();
        let config = AvcConfig::from_parameter_sets(annexb_nals(&data)).unwrap();
        assert_eq!(config.codec_string(), "avc1.64001e");
        assert_eq!(config.length_size, 4);
        assert_eq!(config.sps, vec![unhex(HIGH_SPS)]);
        assert_eq!(config.pps, vec![unhex(HIGH_PPS)]);
        assert_eq!(config.ext.as_ref().map(|e| e.chroma_format), Some(1));
        let bytes = config.to_bytes();
        assert_eq!(&bytes[..6], &[1, 0x64, 0x00, 0x1e, 0xff, 0xe1]);
        assert_eq!(AvcConfig::parse(&bytes).unwrap(), config);
        assert_eq!(AvcConfig::from_extradata(&bytes).unwrap(), config);
        assert_eq!(AvcConfig::from_extradata(&data).unwrap(), config);
        let info = config.sps_info().unwrap();
        assert_eq!((info.width, info.height), (640, 360));

        // Baseline: no extension; repeated parameter sets are kept once.
        let sps = unhex(BASELINE_SPS);
        let pps = unhex(BASELINE_PPS);
        let base =
            AvcConfig::from_parameter_sets([&sps[..], &pps[..], &sps[..], &[0x65, 1][..]]).unwrap();
        assert_eq!(base.codec_string(), "avc1.42c00d");
        assert_eq!(base.ext, None);
        assert_eq!(base.sps.len(), 1);
        assert_eq!(AvcConfig::parse(&base.to_bytes()).unwrap(), base);
        assert_eq!(
            AvcConfig::from_extradata(&base.parameter_sets_annexb()).unwrap(),
            base
        );
    }

    #[test]
    fn config_errors_distinguish_incomplete_from_malformed() {
        let bytes = AvcConfig::from_parameter_sets(annexb_nals(&annexb_fixture()))
            .unwrap()
            .to_bytes();
        // The High-profile extension (last 4 bytes) is optional: cutting exactly before it
        // leaves a complete record.
        let without_ext = bytes.len() - 4;
        assert!(AvcConfig::parse(&bytes[..without_ext])
            .unwrap()
            .ext
            .is_none());
        for cut in (0..bytes.len()).filter(|&cut| cut != without_ext) {
            assert_eq!(
                AvcConfig::parse(&bytes[..cut]),
                Err(H264Error::Incomplete),
                "cut {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            AvcConfig::parse(&trailing),
            Err(H264Error::Malformed(_))
        ));
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(matches!(
            AvcConfig::parse(&version),
            Err(H264Error::Malformed(_))
        ));
        let sps = unhex(HIGH_SPS);
        assert_eq!(
            AvcConfig::from_parameter_sets([&sps[..]]),
            Err(H264Error::Incomplete)
        );
        assert_eq!(
            AvcConfig::from_parameter_sets([]),
            Err(H264Error::Incomplete)
        );
        assert!(matches!(
            AvcConfig::from_extradata(&[7, 7]),
            Err(H264Error::Malformed(_))
        ));
        // A truncated SPS (before the VUI) needs more bytes; a wrong NAL type is malformed.
        assert_eq!(Sps::parse(&sps[..6]), Err(H264Error::Incomplete));
        assert!(matches!(
            Sps::parse(&[0x68, 1, 2]),
            Err(H264Error::Malformed(_))
        ));
    }

    /// Deterministic pseudo-random inputs: no function may panic on any bytes.
    #[test]
    fn never_panics_on_garbage() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let sps = unhex(HIGH_SPS);
        let config = AvcConfig::from_parameter_sets(annexb_nals(&annexb_fixture()))
            .unwrap()
            .to_bytes();
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mutate real structures too, so parsing gets deep.
            if round % 3 == 0 {
                data = sps.clone();
                let i = (next() as usize) % data.len();
                data[i] ^= 1 << (next() % 8);
                data.truncate(1 + (next() as usize) % data.len());
            } else if round % 3 == 1 {
                data = config.clone();
                let i = (next() as usize) % data.len();
                data[i] = next() as u8;
            }
            let _ = Sps::parse(&data);
            let _ = AvcConfig::parse(&data);
            let _ = AvcConfig::from_extradata(&data);
            let _ = AvcConfig::from_parameter_sets(annexb_nals(&data));
            let _ = annexb_to_avcc(&data);
            for size in 0..6 {
                let _ = avcc_to_annexb(&data, size);
                let _ = avcc_to_avcc4(&data, size);
                let _ = is_keyframe_avcc(&data, size);
            }
        }
    }

    /// Found by the `h264` fuzz target: a huge exp-Golomb bit depth overflowed `+ 8`.
    #[test]
    fn huge_bit_depth_is_malformed_not_a_panic() {
        let mut nal = vec![0x67, 100, 0, 30];
        // seq_parameter_set_id 0, chroma_format_idc 1, bit_depth_luma_minus8 = 2^32 - 2.
        nal.extend_from_slice(&[0b1010_0000, 0, 0, 0, 0b0111_1111, 0xff, 0xff, 0xff, 0xf0]);
        assert!(Sps::parse(&nal).is_err());
    }
}

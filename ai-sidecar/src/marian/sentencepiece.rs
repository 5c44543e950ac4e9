//! A reader for SentencePiece model files (`source.spm`, `target.spm` in opus-mt directories)
//! and a [`tokenizers::Tokenizer`] that segments text as the SentencePiece library does, in pure
//! Rust (no C++ `sentencepiece` build).
//!
//! The file is a protobuf `ModelProto` (sentencepiece_model.proto):
//!
//! ```text
//! ModelProto      { 1: repeated SentencePiece pieces, 2: TrainerSpec, 3: NormalizerSpec, ... }
//! SentencePiece   { 1: string piece, 2: float score, 3: enum type (1 normal, 2 unknown, 3 control,
//!                   4 user defined, 5 unused, 6 byte) }
//! TrainerSpec     { 3: enum model_type (1 unigram, 2 bpe, 3 word, 4 char), 35: bool byte_fallback,
//!                   40: int32 unk_id, ... }
//! NormalizerSpec  { 1: string name, 2: bytes precompiled_charsmap, 3: bool add_dummy_prefix,
//!                   4: bool remove_extra_whitespaces, ... }
//! ```
//!
//! Only what segmentation needs is kept; other fields are skipped by their wire type. Like the
//! other decoders here, [`SpmModel::parse`] tells a file cut short ([`SpmError::Truncated`]) from
//! one that is not a SentencePiece model ([`SpmError::Malformed`]). Unigram models (what Marian
//! uses) are supported; BPE, word and char models are refused.

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{NormalizerWrapper, Tokenizer};

/// Why a SentencePiece model could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpmError {
    #[error("the file ends inside a field at byte {at} (truncated?)")]
    Truncated { at: usize },
    #[error("not a SentencePiece model: {what} at byte {at}")]
    Malformed { at: usize, what: &'static str },
    #[error("SentencePiece {0} models are not supported (only unigram, which Marian uses)")]
    UnsupportedModelType(&'static str),
    #[error("the model has no pieces")]
    Empty,
    #[error("building the tokenizer: {0}")]
    Tokenizer(String),
}

/// Kind of a piece (`SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// What segmentation needs from a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmModel {
    pub pieces: Vec<Piece>,
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    pub unk_id: u32,
    pub byte_fallback: bool,
    /// The normaliser as a compiled character map (NFKC and friends); empty for none.
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
}

/// Protobuf wire reader over a byte slice; offsets are reported relative to the whole file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, SpmError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(SpmError::Truncated { at: self.at() });
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(SpmError::Malformed {
                    at: self.at() - 1,
                    what: "a varint longer than 64 bits",
                });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        unreachable!("the tenth byte ends the varint or is rejected")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SpmError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(SpmError::Truncated { at: self.at() }),
        }
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, SpmError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key_at = self.at();
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(SpmError::Malformed {
                at: key_at,
                what: "field number 0",
            });
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len =
                    usize::try_from(len).map_err(|_| SpmError::Truncated { at: self.at() })?;
                let at = self.at();
                Value::Bytes(self.take(len)?, at)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => {
                return Err(SpmError::Malformed {
                    at: key_at,
                    what: "an unknown or group wire type",
                })
            }
        };
        Ok(Some((field, value)))
    }
}

fn malformed(at: usize, what: &'static str) -> SpmError {
    SpmError::Malformed { at, what }
}

impl SpmModel {
    /// Parses a `ModelProto`. Trailing garbage is not possible to tell apart from unknown fields
    /// in protobuf; a field cut short is [`SpmError::Truncated`].
    pub fn parse(bytes: &[u8]) -> Result<Self, SpmError> {
        let mut model = SpmModel {
            pieces: vec![],
            model_type: 1,
            unk_id: 0,
            byte_fallback: false,
            precompiled_charsmap: vec![],
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
        };
        let mut r = Reader::new(bytes, 0);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(b, at)) => model.pieces.push(parse_piece(b, at)?),
                (2, Value::Bytes(b, at)) => {
                    let mut t = Reader::new(b, at);
                    while let Some((field, value)) = t.field()? {
                        match (field, value) {
                            (3, Value::Varint(v)) => model.model_type = v,
                            (35, Value::Varint(v)) => model.byte_fallback = v != 0,
                            (40, Value::Varint(v)) => {
                                model.unk_id = u32::try_from(v)
                                    .map_err(|_| malformed(t.at(), "an unk_id out of range"))?
                            }
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b, at)) => {
                    let mut n = Reader::new(b, at);
                    while let Some((field, value)) = n.field()? {
                        match (field, value) {
                            (2, Value::Bytes(b, _)) => model.precompiled_charsmap = b.to_vec(),
                            (3, Value::Varint(v)) => model.add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => model.remove_extra_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                (1..=3, _) => {
                    return Err(malformed(r.at(), "a message field with a scalar wire type"))
                }
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(SpmError::Empty);
        }
        if model.unk_id as usize >= model.pieces.len() {
            return Err(malformed(0, "unk_id past the last piece"));
        }
        Ok(model)
    }

    /// A tokenizer that segments text into this model's pieces as SentencePiece does
    /// (normaliser, whitespace as `▁` with a dummy prefix, unigram segmentation). Its ids are the
    /// SentencePiece ids; Marian maps the pieces through its own `vocab.json`.
    pub fn tokenizer(&self) -> Result<Tokenizer, SpmError> {
        let kind = match self.model_type {
            1 => None,
            2 => Some("BPE"),
            3 => Some("word"),
            4 => Some("char"),
            _ => Some("unknown-type"),
        };
        if let Some(kind) = kind {
            return Err(SpmError::UnsupportedModelType(kind));
        }
        let err = |e: Box<dyn std::error::Error + Send + Sync>| SpmError::Tokenizer(e.to_string());
        let vocab = self
            .pieces
            .iter()
            .map(|p| (p.piece.clone(), f64::from(p.score)))
            .collect();
        let unigram =
            Unigram::from(vocab, Some(self.unk_id as usize), self.byte_fallback).map_err(err)?;
        let mut normalizers: Vec<NormalizerWrapper> = vec![];
        if !self.precompiled_charsmap.is_empty() {
            let p = Precompiled::from(&self.precompiled_charsmap)
                .map_err(|e| SpmError::Tokenizer(format!("precompiled_charsmap: {e}")))?;
            normalizers.push(p.into());
        }
        if self.remove_extra_whitespaces {
            normalizers.push(Strip::new(true, true).into());
            normalizers.push(
                Replace::new(
                    tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
                    " ",
                )
                .map_err(err)?
                .into(),
            );
        }
        let prepend = if self.add_dummy_prefix {
            PrependScheme::Always
        } else {
            PrependScheme::Never
        };
        let mut tokenizer = Tokenizer::new(unigram);
        tokenizer
            .with_normalizer(Some(Sequence::new(normalizers)))
            .map_err(err)?;
        tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', prepend, true)));
        tokenizer.with_decoder(Some(tokenizers::decoders::metaspace::Metaspace::new(
            '▁', prepend, true,
        )));
        Ok(tokenizer)
    }
}

fn parse_piece(b: &[u8], base: usize) -> Result<Piece, SpmError> {
    let mut r = Reader::new(b, base);
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s, at)) => {
                piece.piece = std::str::from_utf8(s)
                    .map_err(|_| malformed(at, "a piece that is not UTF-8"))?
                    .to_string()
            }
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(t)) => {
                piece.kind = match t {
                    1 => PieceKind::Normal,
                    2 => PieceKind::Unknown,
                    3 => PieceKind::Control,
                    4 => PieceKind::UserDefined,
                    5 => PieceKind::Unused,
                    6 => PieceKind::Byte,
                    _ => return Err(malformed(r.at(), "an unknown piece type")),
                }
            }
            (1..=3, _) => return Err(malformed(r.at(), "a piece field with the wrong wire type")),
            _ => {}
        }
    }
    Ok(piece)
}

/// Writes a `ModelProto` (the parts [`SpmModel`] reads), for tests and tools that make small
/// models: the inverse of [`SpmModel::parse`].
pub fn write_model(model: &SpmModel) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }
    let mut out = vec![];
    for p in &model.pieces {
        let mut m = vec![];
        bytes(&mut m, 1, p.piece.as_bytes());
        varint(&mut m, 2 << 3 | 5);
        m.extend_from_slice(&p.score.to_le_bytes());
        let kind = match p.kind {
            PieceKind::Normal => 1,
            PieceKind::Unknown => 2,
            PieceKind::Control => 3,
            PieceKind::UserDefined => 4,
            PieceKind::Unused => 5,
            PieceKind::Byte => 6,
        };
        uint(&mut m, 3, kind);
        bytes(&mut out, 1, &m);
    }
    let mut trainer = vec![];
    uint(&mut trainer, 3, model.model_type);
    uint(&mut trainer, 35, u64::from(model.byte_fallback));
    uint(&mut trainer, 40, u64::from(model.unk_id));
    bytes(&mut out, 2, &trainer);
    let mut normalizer = vec![];
    bytes(&mut normalizer, 1, b"nmt_nfkc");
    if !model.precompiled_charsmap.is_empty() {
        bytes(&mut normalizer, 2, &model.precompiled_charsmap);
    }
    uint(&mut normalizer, 3, u64::from(model.add_dummy_prefix));
    uint(
        &mut normalizer,
        4,
        u64::from(model.remove_extra_whitespaces),
    );
    bytes(&mut out, 3, &normalizer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SpmModel {
        let piece = |s: &str, score: f32, kind| Piece {
            piece: s.into(),
            score,
            kind,
        };
        SpmModel {
            pieces: vec![
                piece("<unk>", 0.0, PieceKind::Unknown),
                piece("<s>", 0.0, PieceKind::Control),
                piece("</s>", 0.0, PieceKind::Control),
                piece("▁hello", -2.0, PieceKind::Normal),
                piece("▁world", -2.5, PieceKind::Normal),
                piece("▁", -3.0, PieceKind::Normal),
                piece("h", -5.0, PieceKind::Normal),
                piece("e", -5.0, PieceKind::Normal),
                piece("l", -5.0, PieceKind::Normal),
                piece("o", -5.0, PieceKind::Normal),
                piece("▁hell", -4.0, PieceKind::Normal),
            ],
            model_type: 1,
            unk_id: 0,
            byte_fallback: false,
            precompiled_charsmap: vec![],
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
        }
    }

    #[test]
    fn written_models_read_back_and_segment_like_sentencepiece() {
        let m = sample();
        let bytes = write_model(&m);
        assert_eq!(SpmModel::parse(&bytes).unwrap(), m);
        let tok = m.tokenizer().unwrap();
        let enc = tok.encode("  hello   world hole ", false).unwrap();
        assert_eq!(
            enc.get_tokens(),
            ["▁hello", "▁world", "▁", "h", "o", "l", "e"],
            "whitespace collapsed, a dummy prefix, the best segmentation"
        );
        // As in SentencePiece, an unknown piece keeps its text and takes the unknown id.
        let enc = tok.encode("hellx", false).unwrap();
        assert_eq!(enc.get_tokens(), ["▁hell", "x"]);
        assert_eq!(enc.get_ids(), [10, 0]);
    }

    #[test]
    fn every_truncation_is_reported_as_truncated_or_rejected() {
        let bytes = write_model(&sample());
        for len in 0..bytes.len() {
            match SpmModel::parse(&bytes[..len]) {
                Err(SpmError::Truncated { .. } | SpmError::Empty | SpmError::Malformed { .. }) => {}
                // A cut between two fields is a valid, shorter model.
                Ok(m) => assert!(m.pieces.len() <= sample().pieces.len()),
                Err(e) => panic!("{len}: {e}"),
            }
        }
        assert!(matches!(
            SpmModel::parse(&bytes[..bytes.len() - 1]),
            Err(SpmError::Truncated { .. })
        ));
        assert!(matches!(
            SpmModel::parse(b"\x0f\x00"),
            Err(SpmError::Malformed { .. })
        ));
        assert!(matches!(SpmModel::parse(b""), Err(SpmError::Empty)));
        let mut bpe = sample();
        bpe.model_type = 2;
        assert!(matches!(
            bpe.tokenizer(),
            Err(SpmError::UnsupportedModelType("BPE"))
        ));
    }
}

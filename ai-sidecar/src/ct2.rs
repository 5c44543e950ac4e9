//! Reader for CTranslate2 `model.bin` files (format version 6) and the mapping of a CTranslate2 Whisper
//! model onto the Hugging Face tensor names that `candle_transformers::models::whisper` loads.
//!
//! Layout (little-endian): `u32 version, str spec_name, u32 spec_revision, u32 n_vars,
//! n_vars x (str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, bytes[nbytes]), u32 n_aliases,
//! n_aliases x (str alias, str target)`, where `str` is `u16 length including the NUL, bytes`.
//! dtype: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16.
//!
//! The parser never panics on bad input: a file that ends early is [`Ct2Error::Truncated`], a file whose
//! contents are inconsistent is [`Ct2Error::Malformed`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::whisper;

/// The only format version this reader understands.
pub const SUPPORTED_VERSION: u32 = 6;
/// More dimensions than any CTranslate2 model uses; a larger rank means a corrupt file.
const MAX_RANK: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("CTranslate2 model is truncated: {what} needs {needed} bytes at offset {offset}, but the input has {len}")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("CTranslate2 model is malformed at offset {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("unsupported CTranslate2 model version {0} (this reader supports version {SUPPORTED_VERSION})")]
    UnsupportedVersion(u32),
    #[error("CTranslate2 model has no variable {0:?}")]
    MissingVariable(String),
    #[error("CTranslate2 variable {name:?}: {reason}")]
    BadVariable { name: String, reason: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Ct2Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named variable: its shape, element type and where its bytes are in the file.
#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2DType,
    range: Range<usize>,
}

/// A parsed `model.bin`. Holds the file's bytes; variables refer into them.
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub spec_name: String,
    pub spec_revision: u32,
    bytes: Vec<u8>,
    vars: BTreeMap<String, Variable>,
    aliases: BTreeMap<String, String>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Ct2Error::Truncated {
                what,
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            }),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let start = self.pos;
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        let malformed = |reason: &str| Ct2Error::Malformed {
            offset: start,
            reason: format!("{what}: {reason}"),
        };
        let Some((&0, text)) = b.split_last() else {
            return Err(malformed("string is not NUL-terminated"));
        };
        if text.contains(&0) {
            return Err(malformed("string contains an embedded NUL"));
        }
        String::from_utf8(text.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }
}

impl Ct2Model {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Ct2Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(bytes)
    }

    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let mut r = Reader {
            buf: &bytes,
            pos: 0,
        };
        let version = r.u32("format version")?;
        if version != SUPPORTED_VERSION {
            return Err(Ct2Error::UnsupportedVersion(version));
        }
        let spec_name = r.string("spec name")?;
        let spec_revision = r.u32("spec revision")?;
        let n_vars = r.u32("variable count")?;
        let mut vars = BTreeMap::new();
        for _ in 0..n_vars {
            let start = r.pos;
            let name = r.string("variable name")?;
            let malformed = |reason: String| Ct2Error::Malformed {
                offset: start,
                reason: format!("variable {name:?}: {reason}"),
            };
            let rank = r.u8("variable rank")? as usize;
            if rank > MAX_RANK {
                return Err(malformed(format!("rank {rank} is larger than {MAX_RANK}")));
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(r.u32("variable dimension")? as usize);
            }
            let dtype_id = r.u8("variable dtype")?;
            let dtype = Ct2DType::from_id(dtype_id)
                .ok_or_else(|| malformed(format!("unknown dtype {dtype_id}")))?;
            let nbytes = r.u32("variable byte count")? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| malformed(format!("shape {shape:?} overflows")))?;
            if expected != nbytes {
                return Err(malformed(format!(
                    "shape {shape:?} of {dtype:?} needs {expected} bytes but the file says {nbytes}"
                )));
            }
            let data_start = r.pos;
            r.take(nbytes, "variable data")?;
            let var = Variable {
                shape,
                dtype,
                range: data_start..r.pos,
            };
            if vars.insert(name.clone(), var).is_some() {
                return Err(malformed("defined twice".into()));
            }
        }
        let n_aliases = r.u32("alias count")?;
        let mut aliases = BTreeMap::new();
        for _ in 0..n_aliases {
            let start = r.pos;
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            let malformed = |reason: String| Ct2Error::Malformed {
                offset: start,
                reason: format!("alias {alias:?}: {reason}"),
            };
            if !vars.contains_key(&target) {
                return Err(malformed(format!("target {target:?} is not a variable")));
            }
            if vars.contains_key(&alias) || aliases.insert(alias.clone(), target).is_some() {
                return Err(malformed("name defined twice".into()));
            }
        }
        if r.pos != bytes.len() {
            return Err(Ct2Error::Malformed {
                offset: r.pos,
                reason: format!("{} trailing bytes after the aliases", bytes.len() - r.pos),
            });
        }
        Ok(Self {
            spec_name,
            spec_revision,
            bytes,
            vars,
            aliases,
        })
    }

    /// Variable names (not aliases), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// A variable by name or alias.
    pub fn get(&self, name: &str) -> Option<&Variable> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.vars.get(name)
    }

    fn var(&self, name: &str) -> Result<&Variable> {
        self.get(name)
            .ok_or_else(|| Ct2Error::MissingVariable(name.to_string()))
    }

    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.var(name)?.shape)
    }

    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        Ok(&self.bytes[self.var(name)?.range.clone()])
    }

    /// The variable's values converted to f32 (f16/bf16 widened, integers cast; an int8 weight with a
    /// `<name>_scale` companion is dequantised row by row).
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>> {
        let var = self.var(name)?;
        let b = &self.bytes[var.range.clone()];
        let mut v: Vec<f32> = match var.dtype {
            Ct2DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Ct2DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Ct2DType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
            Ct2DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            Ct2DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
        };
        let scale_name = format!("{name}_scale");
        if var.dtype == Ct2DType::I8 && self.get(&scale_name).is_some() {
            let scale = self.to_f32_vec(&scale_name)?;
            let rows = var.shape.first().copied().unwrap_or(1);
            if rows == 0 || scale.len() != rows || v.len() % rows != 0 {
                return Err(Ct2Error::BadVariable {
                    name: name.to_string(),
                    reason: format!("{} scales for shape {:?}", scale.len(), var.shape),
                });
            }
            let cols = v.len() / rows;
            for (row, s) in v.chunks_mut(cols).zip(scale) {
                if s == 0.0 || !s.is_finite() {
                    return Err(Ct2Error::BadVariable {
                        name: scale_name,
                        reason: format!("scale {s} cannot dequantise"),
                    });
                }
                row.iter_mut().for_each(|x| *x /= s);
            }
        }
        Ok(v)
    }

    /// An f32 tensor of the variable's shape.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let shape = self.var(name)?.shape.clone();
        let data = self.to_f32_vec(name)?;
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// A rank-0 integer variable (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self, name: &str) -> Result<i64> {
        let var = self.var(name)?;
        let b = self.raw(name)?;
        let bad = |reason: &str| Ct2Error::BadVariable {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if !var.shape.is_empty() {
            return Err(bad("is not a scalar"));
        }
        Ok(match var.dtype {
            Ct2DType::I8 => b[0] as i8 as i64,
            Ct2DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            Ct2DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => return Err(bad("is not an integer")),
        })
    }
}

/// The parts of a CTranslate2 Whisper `config.json` the sidecar uses.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Ct2WhisperConfig {
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
    #[serde(default)]
    pub lang_ids: Vec<u32>,
}

fn layer_count(model: &Ct2Model, prefix: &str) -> usize {
    let mut n = 0;
    while model
        .get(&format!("{prefix}/layer_{n}/ffn/linear_0/weight"))
        .is_some()
    {
        n += 1;
    }
    n
}

fn dim(model: &Ct2Model, name: &str, axis: usize) -> Result<usize> {
    model
        .shape(name)?
        .get(axis)
        .copied()
        .ok_or_else(|| Ct2Error::BadVariable {
            name: name.to_string(),
            reason: format!("has no axis {axis}"),
        })
}

fn heads(model: &Ct2Model, name: &str, d_model: usize) -> Result<usize> {
    let h = match model.get(name) {
        Some(_) => model.scalar_int(name)?,
        None => (d_model / 64) as i64,
    };
    if h <= 0 || d_model % h as usize != 0 {
        return Err(Ct2Error::BadVariable {
            name: name.to_string(),
            reason: format!("{h} heads do not divide d_model {d_model}"),
        });
    }
    Ok(h as usize)
}

/// candle's Whisper configuration for a CTranslate2 Whisper model (dimensions come from the tensors,
/// suppressed tokens from CTranslate2's `config.json`).
pub fn whisper_config(model: &Ct2Model, cfg: &Ct2WhisperConfig) -> Result<whisper::Config> {
    if !model.spec_name.starts_with("Whisper") {
        return Err(Ct2Error::BadVariable {
            name: "spec".into(),
            reason: format!("model spec is {:?}, not a Whisper model", model.spec_name),
        });
    }
    let d_model = dim(model, "decoder/embeddings/weight", 1)?;
    let encoder_layers = layer_count(model, "encoder");
    let decoder_layers = layer_count(model, "decoder");
    if encoder_layers == 0 || decoder_layers == 0 {
        return Err(Ct2Error::MissingVariable(
            "encoder/layer_0 or decoder/layer_0".into(),
        ));
    }
    Ok(whisper::Config {
        num_mel_bins: dim(model, "encoder/conv1/weight", 1)?,
        max_source_positions: dim(model, "encoder/position_encodings/encodings", 0)?,
        d_model,
        encoder_attention_heads: heads(model, "encoder/num_heads", d_model)?,
        encoder_layers,
        vocab_size: dim(model, "decoder/embeddings/weight", 0)?,
        max_target_positions: dim(model, "decoder/position_encodings/encodings", 0)?,
        decoder_attention_heads: heads(model, "decoder/num_heads", d_model)?,
        decoder_layers,
        suppress_tokens: cfg.suppress_ids.clone(),
    })
}

/// Split `t` along axis 0 into `n` equal parts.
fn split_rows(name: &str, t: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let rows = t.dim(0)?;
    if rows % n != 0 {
        return Err(Ct2Error::BadVariable {
            name: name.to_string(),
            reason: format!("{rows} rows do not split into {n} equal parts"),
        });
    }
    let k = rows / n;
    (0..n).map(|i| Ok(t.narrow(0, i * k, k)?)).collect()
}

/// Map the variables of a CTranslate2 Whisper model to HF Whisper tensor names (f32):
/// fused q/k/v and cross-attention k/v are split, the (zero) k biases dropped, the output projection
/// tied to the token embeddings.
pub fn whisper_tensors(model: &Ct2Model, device: &Device) -> Result<HashMap<String, Tensor>> {
    let cfg = whisper_config(model, &Ct2WhisperConfig::default())?;
    let mut out = HashMap::new();
    let put = |out: &mut HashMap<String, Tensor>, hf: String, ct2: &str| -> Result<()> {
        out.insert(hf, model.tensor(ct2, device)?);
        Ok(())
    };
    for side in ["encoder", "decoder"] {
        let hf = format!("model.{side}");
        let n_layers = if side == "encoder" {
            cfg.encoder_layers
        } else {
            cfg.decoder_layers
        };
        put(
            &mut out,
            format!("{hf}.embed_positions.weight"),
            &format!("{side}/position_encodings/encodings"),
        )?;
        put(
            &mut out,
            format!("{hf}.layer_norm.weight"),
            &format!("{side}/layer_norm/gamma"),
        )?;
        put(
            &mut out,
            format!("{hf}.layer_norm.bias"),
            &format!("{side}/layer_norm/beta"),
        )?;
        for i in 0..n_layers {
            let c = format!("{side}/layer_{i}");
            let h = format!("{hf}.layers.{i}");
            // Self-attention: q, k, v fused by rows.
            let w = model.tensor(&format!("{c}/self_attention/linear_0/weight"), device)?;
            let b = model.tensor(&format!("{c}/self_attention/linear_0/bias"), device)?;
            let ws = split_rows(&format!("{c}/self_attention/linear_0/weight"), &w, 3)?;
            let bs = split_rows(&format!("{c}/self_attention/linear_0/bias"), &b, 3)?;
            for (j, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                out.insert(format!("{h}.self_attn.{p}.weight"), ws[j].clone());
                if *p != "k_proj" {
                    out.insert(format!("{h}.self_attn.{p}.bias"), bs[j].clone());
                }
            }
            for (hfn, ct2n) in [
                ("self_attn.out_proj", "self_attention/linear_1"),
                ("fc1", "ffn/linear_0"),
                ("fc2", "ffn/linear_1"),
            ] {
                put(
                    &mut out,
                    format!("{h}.{hfn}.weight"),
                    &format!("{c}/{ct2n}/weight"),
                )?;
                put(
                    &mut out,
                    format!("{h}.{hfn}.bias"),
                    &format!("{c}/{ct2n}/bias"),
                )?;
            }
            for (hfn, ct2n) in [
                ("self_attn_layer_norm", "self_attention/layer_norm"),
                ("final_layer_norm", "ffn/layer_norm"),
            ] {
                put(
                    &mut out,
                    format!("{h}.{hfn}.weight"),
                    &format!("{c}/{ct2n}/gamma"),
                )?;
                put(
                    &mut out,
                    format!("{h}.{hfn}.bias"),
                    &format!("{c}/{ct2n}/beta"),
                )?;
            }
            if side == "decoder" {
                // Cross-attention: linear_0 is q, linear_1 is k and v fused, linear_2 the output.
                put(
                    &mut out,
                    format!("{h}.encoder_attn.q_proj.weight"),
                    &format!("{c}/attention/linear_0/weight"),
                )?;
                put(
                    &mut out,
                    format!("{h}.encoder_attn.q_proj.bias"),
                    &format!("{c}/attention/linear_0/bias"),
                )?;
                put(
                    &mut out,
                    format!("{h}.encoder_attn.out_proj.weight"),
                    &format!("{c}/attention/linear_2/weight"),
                )?;
                put(
                    &mut out,
                    format!("{h}.encoder_attn.out_proj.bias"),
                    &format!("{c}/attention/linear_2/bias"),
                )?;
                put(
                    &mut out,
                    format!("{h}.encoder_attn_layer_norm.weight"),
                    &format!("{c}/attention/layer_norm/gamma"),
                )?;
                put(
                    &mut out,
                    format!("{h}.encoder_attn_layer_norm.bias"),
                    &format!("{c}/attention/layer_norm/beta"),
                )?;
                let wn = format!("{c}/attention/linear_1/weight");
                let bn = format!("{c}/attention/linear_1/bias");
                let ws = split_rows(&wn, &model.tensor(&wn, device)?, 2)?;
                let bs = split_rows(&bn, &model.tensor(&bn, device)?, 2)?;
                out.insert(format!("{h}.encoder_attn.k_proj.weight"), ws[0].clone());
                out.insert(format!("{h}.encoder_attn.v_proj.weight"), ws[1].clone());
                out.insert(format!("{h}.encoder_attn.v_proj.bias"), bs[1].clone());
            }
        }
    }
    put(
        &mut out,
        "model.encoder.conv1.weight".into(),
        "encoder/conv1/weight",
    )?;
    put(
        &mut out,
        "model.encoder.conv1.bias".into(),
        "encoder/conv1/bias",
    )?;
    put(
        &mut out,
        "model.encoder.conv2.weight".into(),
        "encoder/conv2/weight",
    )?;
    put(
        &mut out,
        "model.encoder.conv2.bias".into(),
        "encoder/conv2/bias",
    )?;
    let emb = model.tensor("decoder/embeddings/weight", device)?;
    // Tied output projection (CTranslate2 stores `decoder/projection/weight` as an alias).
    out.insert("proj_out.weight".into(), emb.clone());
    out.insert("model.decoder.embed_tokens.weight".into(), emb);
    Ok(out)
}

/// A `VarBuilder` over the converted tensors, in f32.
pub fn whisper_var_builder(
    model: &Ct2Model,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let tensors = whisper_tensors(model, device)?;
    Ok(candle_nn::VarBuilder::from_tensors(
        tensors,
        DType::F32,
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a model.bin in memory.
    struct Writer(Vec<u8>);
    impl Writer {
        fn new(version: u32) -> Self {
            let mut w = Writer(Vec::new());
            w.u32(version);
            w.str("WhisperSpec");
            w.u32(3);
            w
        }
        fn u32(&mut self, v: u32) {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        fn str(&mut self, s: &str) {
            self.0
                .extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
        }
        fn var(&mut self, name: &str, dims: &[u32], dtype: u8, data: &[u8]) {
            self.str(name);
            self.0.push(dims.len() as u8);
            for d in dims {
                self.u32(*d);
            }
            self.0.push(dtype);
            self.u32(data.len() as u32);
            self.0.extend_from_slice(data);
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(6);
        w.u32(3);
        let f16s: Vec<u8> = [1.5f32, -2.0, 0.25, 4.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        w.var("a/weight", &[2, 2], 4, &f16s);
        let f32s: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        w.var("a/bias", &[2], 0, &f32s);
        w.var("n/num_heads", &[], 2, &6i16.to_le_bytes());
        w.u32(1);
        w.str("b/weight");
        w.str("a/weight");
        w.0
    }

    #[test]
    fn parses_variables_aliases_and_converts_f16() {
        let m = Ct2Model::parse(sample()).unwrap();
        assert_eq!(m.spec_name, "WhisperSpec");
        assert_eq!(m.spec_revision, 3);
        assert_eq!(
            m.names().collect::<Vec<_>>(),
            ["a/bias", "a/weight", "n/num_heads"]
        );
        assert_eq!(m.shape("b/weight").unwrap(), &[2, 2]);
        assert_eq!(m.to_f32_vec("b/weight").unwrap(), [1.5, -2.0, 0.25, 4.0]);
        assert_eq!(m.to_f32_vec("a/bias").unwrap(), [1.0, 2.0]);
        assert_eq!(m.scalar_int("n/num_heads").unwrap(), 6);
        let t = m.tensor("a/weight", &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 2]);
        assert_eq!(t.dtype(), DType::F32);
        assert!(matches!(
            m.to_f32_vec("missing"),
            Err(Ct2Error::MissingVariable(_))
        ));
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let full = sample();
        for n in 0..full.len() {
            match Ct2Model::parse(full[..n].to_vec()) {
                Err(Ct2Error::Truncated { .. }) => {}
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_inputs_are_malformed_not_panics() {
        // Wrong version.
        assert!(matches!(
            Ct2Model::parse(Writer::new(5).0),
            Err(Ct2Error::UnsupportedVersion(5))
        ));
        // Byte count disagreeing with the shape.
        let mut w = Writer::new(6);
        w.u32(1);
        w.var("x", &[3], 0, &[0; 8]);
        w.u32(0);
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
        // Unknown dtype.
        let mut w = Writer::new(6);
        w.u32(1);
        w.var("x", &[1], 9, &[0; 4]);
        w.u32(0);
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
        // Huge dimensions must not overflow or allocate.
        let mut w = Writer::new(6);
        w.u32(1);
        w.var("x", &[u32::MAX, u32::MAX, u32::MAX], 0, &[]);
        w.u32(0);
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
        // Alias to nothing; trailing garbage; string without NUL; rank too large.
        let mut w = Writer::new(6);
        w.u32(0);
        w.u32(1);
        w.str("a");
        w.str("b");
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
        let mut s = sample();
        s.push(0);
        assert!(matches!(
            Ct2Model::parse(s),
            Err(Ct2Error::Malformed { .. })
        ));
        let mut w = Writer::new(6);
        w.u32(1);
        w.0.extend_from_slice(&2u16.to_le_bytes());
        w.0.extend_from_slice(b"xy");
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
        let mut w = Writer::new(6);
        w.u32(1);
        w.str("x");
        w.0.push(200);
        assert!(matches!(
            Ct2Model::parse(w.0),
            Err(Ct2Error::Malformed { .. })
        ));
    }

    /// A 1-layer CTranslate2 Whisper with d_model 4 whose every value identifies its row.
    fn tiny_whisper() -> Vec<u8> {
        let f32s = |shape: &[u32], base: f32| -> Vec<u8> {
            let n: u32 = shape.iter().product();
            let cols = if shape.len() > 1 {
                shape[1..].iter().product()
            } else {
                1
            };
            (0..n)
                .flat_map(|i| (base + (i / cols) as f32).to_le_bytes())
                .collect()
        };
        let d = 4u32;
        let mut vars: Vec<(String, Vec<u32>)> = vec![
            ("decoder/embeddings/weight".into(), vec![10, d]),
            ("decoder/position_encodings/encodings".into(), vec![8, d]),
            ("encoder/position_encodings/encodings".into(), vec![6, d]),
            ("encoder/conv1/weight".into(), vec![d, 2, 3]),
            ("encoder/conv1/bias".into(), vec![d]),
            ("encoder/conv2/weight".into(), vec![d, d, 3]),
            ("encoder/conv2/bias".into(), vec![d]),
        ];
        for side in ["encoder", "decoder"] {
            vars.push((format!("{side}/layer_norm/gamma"), vec![d]));
            vars.push((format!("{side}/layer_norm/beta"), vec![d]));
            let l = format!("{side}/layer_0");
            let mut blocks = vec![("self_attention", vec![3 * d, d, d])];
            if side == "decoder" {
                blocks.push(("attention", vec![d, 2 * d, d]));
            }
            blocks.push(("ffn", vec![4 * d, d]));
            for (block, outs) in blocks {
                vars.push((format!("{l}/{block}/layer_norm/gamma"), vec![d]));
                vars.push((format!("{l}/{block}/layer_norm/beta"), vec![d]));
                let mut ins = vec![d; outs.len()];
                if block == "ffn" {
                    ins[1] = 4 * d;
                }
                for (j, (o, i)) in outs.iter().zip(ins).enumerate() {
                    vars.push((format!("{l}/{block}/linear_{j}/weight"), vec![*o, i]));
                    vars.push((format!("{l}/{block}/linear_{j}/bias"), vec![*o]));
                }
            }
        }
        let mut w = Writer::new(6);
        w.u32(vars.len() as u32 + 2);
        for (name, shape) in &vars {
            w.var(name, shape, 0, &f32s(shape, 0.0));
        }
        w.var("encoder/num_heads", &[], 2, &2i16.to_le_bytes());
        w.var("decoder/num_heads", &[], 2, &2i16.to_le_bytes());
        w.u32(1);
        w.str("decoder/projection/weight");
        w.str("decoder/embeddings/weight");
        w.0
    }

    #[test]
    fn whisper_mapping_splits_fused_projections() {
        let m = Ct2Model::parse(tiny_whisper()).unwrap();
        let cfg = whisper_config(&m, &Ct2WhisperConfig::default()).unwrap();
        assert_eq!(
            (
                cfg.d_model,
                cfg.num_mel_bins,
                cfg.vocab_size,
                cfg.encoder_layers,
                cfg.decoder_layers
            ),
            (4, 2, 10, 1, 1)
        );
        assert_eq!(
            (
                cfg.encoder_attention_heads,
                cfg.max_source_positions,
                cfg.max_target_positions
            ),
            (2, 6, 8)
        );
        let t = whisper_tensors(&m, &Device::Cpu).unwrap();
        let rows = |name: &str| -> Vec<f32> {
            let x = &t[name];
            x.narrow(1, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let e = "model.encoder.layers.0.self_attn";
        assert_eq!(rows(&format!("{e}.q_proj.weight")), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(rows(&format!("{e}.k_proj.weight")), [4.0, 5.0, 6.0, 7.0]);
        assert_eq!(rows(&format!("{e}.v_proj.weight")), [8.0, 9.0, 10.0, 11.0]);
        assert!(!t.contains_key(&format!("{e}.k_proj.bias")));
        let v_bias: Vec<f32> = t[&format!("{e}.v_proj.bias")].to_vec1().unwrap();
        assert_eq!(v_bias, [8.0, 9.0, 10.0, 11.0]);
        let c = "model.decoder.layers.0.encoder_attn";
        assert_eq!(rows(&format!("{c}.k_proj.weight")), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(rows(&format!("{c}.v_proj.weight")), [4.0, 5.0, 6.0, 7.0]);
        assert!(!t.contains_key(&format!("{c}.k_proj.bias")));
        assert_eq!(
            rows("model.decoder.layers.0.fc2.weight"),
            [0.0, 1.0, 2.0, 3.0]
        );
        assert_eq!(t["proj_out.weight"].dims(), &[10, 4]);
        // candle builds the model from the converted tensors.
        let vb = whisper_var_builder(&m, &Device::Cpu).unwrap();
        whisper::model::Whisper::load(&vb, cfg).unwrap();
    }

    #[test]
    fn random_corruption_never_panics() {
        let full = sample();
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut b = full.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % b.len();
                b[i] = (seed >> 24) as u8;
            }
            let _ = Ct2Model::parse(b);
        }
    }
}

//! Whisper's text decoder with a self-attention key/value cache.
//!
//! Loads the Hugging Face names under `model.decoder.*` (so both safetensors models and the
//! CTranslate2 conversion in [`crate::ct2`] work). Each step feeds only the new tokens: the keys and
//! values of earlier positions come from [`Cache`], and the cross-attention keys and values are
//! computed once per audio window ([`Decoder::audio`]). A batch of hypotheses (beam search) shares one
//! audio window: their queries are stacked as rows against the same cross-attention keys.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::softmax_last_dim;
use super::layers::{fused_qkv, LayerNorm, Linear, Precision};

struct DecoderLayer {
    attn_ln: LayerNorm,
    qkv: Linear,
    attn_out: Linear,
    cross_ln: LayerNorm,
    /// Cross-attention query, pre-scaled by `1 / sqrt(head_dim)`.
    cross_q: Linear,
    /// Cross-attention keys and values fused: `(2 d, d)`.
    cross_kv: Linear,
    cross_out: Linear,
    mlp_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub(crate) struct Decoder {
    /// `(vocab, d)`, for the input lookup.
    embed: Tensor,
    /// `(max_positions, d)`.
    positions: Tensor,
    layers: Vec<DecoderLayer>,
    ln: LayerNorm,
    /// Output projection tied to the token embeddings.
    proj: Linear,
    n_head: usize,
    d: usize,
}

/// Cross-attention keys and values of one encoded audio window, per layer: keys as
/// `(heads, head_dim, frames)`, values as `(heads, frames, head_dim)`.
pub(crate) struct Audio {
    kv: Vec<(Tensor, Tensor)>,
}

/// Self-attention keys and values of the positions decoded so far, per layer, each
/// `(batch, heads, len, head_dim)`.
#[derive(Clone, Default)]
pub(crate) struct Cache {
    kv: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl Cache {
    /// Keep, in order, the hypotheses at `rows` of the current batch (rows may repeat: this is how
    /// one prompt becomes several beams).
    pub(crate) fn select(&mut self, rows: &[u32]) -> Result<()> {
        if self.kv.is_empty() {
            return Ok(());
        }
        let device = self.kv[0].0.device().clone();
        let idx = Tensor::new(rows, &device)?;
        for (k, v) in &mut self.kv {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

impl Decoder {
    pub(crate) fn load(
        vb: VarBuilder,
        cfg: &candle_transformers::models::whisper::Config,
        precision: Precision,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let n_head = cfg.decoder_attention_heads;
        let embed = vb.get((cfg.vocab_size, d), "embed_tokens.weight")?;
        let positions = vb.get((cfg.max_target_positions, d), "embed_positions.weight")?;
        let scale = 1.0 / ((d / n_head) as f64).sqrt();
        let layers = (0..cfg.decoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                let ca = vb.pp("encoder_attn");
                let cross_q = Linear::new(
                    (ca.get((d, d), "q_proj.weight")? * scale)?,
                    Some((ca.get(d, "q_proj.bias")? * scale)?),
                    precision,
                )?;
                let v_b = ca.get(d, "v_proj.bias")?;
                let cross_kv = Linear::new(
                    Tensor::cat(
                        &[
                            ca.get((d, d), "k_proj.weight")?,
                            ca.get((d, d), "v_proj.weight")?,
                        ],
                        0,
                    )?,
                    Some(Tensor::cat(&[&v_b.zeros_like()?, &v_b], 0)?),
                    // Run once per window over every frame: f32 gemm beats quantised products
                    // at that many rows.
                    Precision::F32,
                )?;
                Ok(DecoderLayer {
                    attn_ln: LayerNorm::load(&vb.pp("self_attn_layer_norm"), d)?,
                    qkv: fused_qkv(&vb.pp("self_attn"), d, n_head, precision)?,
                    attn_out: Linear::load(&vb.pp("self_attn.out_proj"), d, d, true, precision)?,
                    cross_ln: LayerNorm::load(&vb.pp("encoder_attn_layer_norm"), d)?,
                    cross_q,
                    cross_kv,
                    cross_out: Linear::load(&ca.pp("out_proj"), d, d, true, precision)?,
                    mlp_ln: LayerNorm::load(&vb.pp("final_layer_norm"), d)?,
                    fc1: Linear::load(&vb.pp("fc1"), d, 4 * d, true, precision)?,
                    fc2: Linear::load(&vb.pp("fc2"), 4 * d, d, true, precision)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            proj: Linear::new(embed.clone(), None, precision)?,
            embed,
            positions,
            layers,
            ln: LayerNorm::load(&vb.pp("layer_norm"), d)?,
            n_head,
            d,
        })
    }

    /// Most positions (prompt and output tokens) the decoder takes: 448 for Whisper.
    pub(crate) fn max_positions(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.proj.out_features()
    }

    fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Cross-attention keys and values for encoder output `enc` (`(frames, d)`).
    pub(crate) fn audio(&self, enc: &Tensor) -> Result<Audio> {
        let s = enc.dim(0)?;
        let (h, dh) = (self.n_head, self.d / self.n_head);
        let kv = self
            .layers
            .iter()
            .map(|l| {
                let kv = l.cross_kv.forward(enc)?;
                let k = kv
                    .narrow(1, 0, self.d)?
                    .reshape((s, h, dh))?
                    .permute((1, 2, 0))?
                    .contiguous()?;
                let v = kv
                    .narrow(1, self.d, self.d)?
                    .reshape((s, h, dh))?
                    .transpose(0, 1)?
                    .contiguous()?;
                Ok((k, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Audio { kv })
    }

    /// Run `tokens` (`batch` rows of equal length, row-major) after the positions already in
    /// `cache`, append their keys and values to it, and return the final-layer-normed hidden states
    /// `(batch * len, d)`.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        audio: &Audio,
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let t = tokens.len() / batch.max(1);
        if t == 0 || t * batch != tokens.len() {
            candle_core::bail!("{} tokens do not form {batch} equal rows", tokens.len());
        }
        let past = cache.len;
        if past + t > self.max_positions() {
            candle_core::bail!(
                "{} positions exceed the decoder's {}",
                past + t,
                self.max_positions()
            );
        }
        let (h, dh, d) = (self.n_head, self.d / self.n_head, self.d);
        let ids = Tensor::new(tokens, self.device())?;
        let x = self.embed.index_select(&ids, 0)?.reshape((batch, t, d))?;
        let mut x = x
            .broadcast_add(&self.positions.narrow(0, past, t)?)?
            .reshape((batch * t, d))?;
        // Causal mask over the new positions (the cached ones are all visible).
        let mask = if t > 1 {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..past + t).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (t, past + t), self.device())?)
        } else {
            None
        };
        let first = cache.kv.is_empty();
        for (i, l) in self.layers.iter().enumerate() {
            // Self-attention over cached and new positions.
            let qkv = l.qkv.forward(&l.attn_ln.forward(&x)?)?;
            let heads = |j: usize| -> Result<Tensor> {
                qkv.narrow(1, j * d, d)?
                    .reshape((batch, t, h, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            let (k, v) = if first {
                (k, v)
            } else {
                let (ck, cv) = &cache.kv[i];
                (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?)
            };
            let mut att = q.matmul(&k.t()?)?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let a = softmax_last_dim(att)?
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * t, d))?;
            if first {
                cache.kv.push((k, v));
            } else {
                cache.kv[i] = (k, v);
            }
            x = l.attn_out.forward_residual(&a, x)?;

            // Cross-attention: every row of every hypothesis against the same audio.
            let q = l
                .cross_q
                .forward(&l.cross_ln.forward(&x)?)?
                .reshape((batch * t, h, dh))?
                .transpose(0, 1)?
                .contiguous()?;
            let (ak, av) = &audio.kv[i];
            let a = softmax_last_dim(q.matmul(ak)?)?
                .matmul(av)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((batch * t, d))?;
            x = l.cross_out.forward_residual(&a, x)?;

            let m = l.fc1.forward_gelu(&l.mlp_ln.forward(&x)?)?;
            x = l.fc2.forward_residual(&m, x)?;
        }
        cache.len = past + t;
        self.ln.forward(&x)
    }

    /// Logits `(rows, vocab)` of hidden states `(rows, d)` from [`Self::forward`].
    pub(crate) fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.proj.forward(hidden)
    }

    /// Logits of one row of `hidden`, as a vector.
    pub(crate) fn row_logits(&self, hidden: &Tensor, row: usize) -> Result<Vec<f32>> {
        self.logits(&hidden.narrow(0, row, 1)?)?
            .squeeze(0)?
            .to_vec1::<f32>()
    }

    /// Logits of every row of `hidden`, one vector per row.
    pub(crate) fn all_logits(&self, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
        self.logits(hidden)?.to_vec2::<f32>()
    }
}

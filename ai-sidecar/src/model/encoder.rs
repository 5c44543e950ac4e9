//! Whisper's audio encoder: two convolutions (the second halves the frame rate), sinusoidal
//! positions, pre-norm transformer layers with fused q/k/v projections, and a final layer norm.
//! Loads the Hugging Face names under `model.encoder.*`.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels::{channel_bias_gelu, self_attention};
use super::layers::{fused_qkv, LayerNorm, Linear, Precision};

struct EncoderLayer {
    attn_ln: LayerNorm,
    qkv: Linear,
    out: Linear,
    mlp_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub(crate) struct Encoder {
    conv1_w: Tensor,
    conv1_b: Tensor,
    conv2_w: Tensor,
    conv2_b: Tensor,
    /// `(max_positions, d)`.
    positions: Tensor,
    layers: Vec<EncoderLayer>,
    ln_post: LayerNorm,
    n_head: usize,
}

/// Whisper's fixed sinusoidal position table: `sin` in the first half of the channels, `cos` in the
/// second, timescales geometric from 1 to 10000.
pub(crate) fn sinusoids(length: usize, channels: usize, device: &Device) -> Result<Tensor> {
    let half = channels / 2;
    let step = (10_000f64).ln() / (half.max(2) - 1) as f64;
    let mut table = vec![0f32; length * channels];
    for (pos, row) in table.chunks_exact_mut(channels).enumerate() {
        for i in 0..half {
            let angle = pos as f64 * (-(i as f64) * step).exp();
            row[i] = angle.sin() as f32;
            row[half + i] = angle.cos() as f32;
        }
    }
    Tensor::from_vec(table, (length, channels), device)
}

impl Encoder {
    pub(crate) fn load(
        vb: VarBuilder,
        cfg: &candle_transformers::models::whisper::Config,
        precision: Precision,
    ) -> Result<Self> {
        let d = cfg.d_model;
        let n_mel = cfg.num_mel_bins;
        let n_head = cfg.encoder_attention_heads;
        let positions = if vb.contains_tensor("embed_positions.weight") {
            vb.get((cfg.max_source_positions, d), "embed_positions.weight")?
        } else {
            sinusoids(cfg.max_source_positions, d, vb.device())?
        };
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(EncoderLayer {
                    attn_ln: LayerNorm::load(&vb.pp("self_attn_layer_norm"), d)?,
                    qkv: fused_qkv(&vb.pp("self_attn"), d, n_head, precision)?,
                    out: Linear::load(&vb.pp("self_attn.out_proj"), d, d, true, precision)?,
                    mlp_ln: LayerNorm::load(&vb.pp("final_layer_norm"), d)?,
                    fc1: Linear::load(&vb.pp("fc1"), d, 4 * d, true, precision)?,
                    fc2: Linear::load(&vb.pp("fc2"), 4 * d, d, true, precision)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1_w: vb.get((d, n_mel, 3), "conv1.weight")?,
            conv1_b: vb.get(d, "conv1.bias")?,
            conv2_w: vb.get((d, d, 3), "conv2.weight")?,
            conv2_b: vb.get(d, "conv2.bias")?,
            positions,
            layers,
            ln_post: LayerNorm::load(&vb.pp("layer_norm"), d)?,
            n_head,
        })
    }

    /// Most frames the encoder takes (twice its positions: 3000 for 30 s).
    pub(crate) fn max_frames(&self) -> usize {
        2 * self.positions.dim(0).unwrap_or(0)
    }

    /// `mel` is `(1, n_mel, frames)` with an even number of frames up to [`Self::max_frames`];
    /// returns `(frames / 2, d)`.
    pub(crate) fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = channel_bias_gelu(mel.conv1d(&self.conv1_w, 1, 1, 1, 1)?, &self.conv1_b)?;
        let x = channel_bias_gelu(x.conv1d(&self.conv2_w, 1, 2, 1, 1)?, &self.conv2_b)?;
        // (1, d, s) -> (s, d)
        let x = x.squeeze(0)?.t()?;
        let s = x.dim(0)?;
        let mut x = (x + self.positions.narrow(0, 0, s)?)?;
        for l in &self.layers {
            let qkv = l.qkv.forward(&l.attn_ln.forward(&x)?)?;
            let a = self_attention(&qkv, self.n_head)?;
            x = l.out.forward_residual(&a, x)?;
            let m = l.fc1.forward_gelu(&l.mlp_ln.forward(&x)?)?;
            x = l.fc2.forward_residual(&m, x)?;
        }
        self.ln_post.forward(&x)?.to_dtype(DType::F32)
    }
}

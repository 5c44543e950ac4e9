//! Building blocks shared by the encoder and decoder: linear layers that keep their weight either in
//! f32 or quantised (GGML block formats through `candle_core::quantized`), and layer norms.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::int8::{Int8MatMul, Int8Matrix};
use super::kernels;

/// How the weights of the linear layers are stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights, f32 matrix products (gemm).
    #[default]
    F32,
    /// 8-bit blocks of 32 weights with an f16 scale; activations are quantised to 8 bits per product.
    Q8_0,
    /// 4-bit blocks of 32 weights (coarser; smaller and faster where memory bound).
    Q4_0,
    /// For products of a few rows (decoding steps): 8-bit blocks of 32 weights with f32 activations
    /// (the `int8` module); products of many rows (the encoder, prompts) stay f32. Memory: the f32
    /// weights plus a quarter.
    Int8,
}

impl Precision {
    fn ggml(self) -> Option<GgmlDType> {
        match self {
            Precision::F32 | Precision::Int8 => None,
            Precision::Q8_0 => Some(GgmlDType::Q8_0),
            Precision::Q4_0 => Some(GgmlDType::Q4_0),
        }
    }
}

enum Weight {
    /// `(out, in)`, multiplied as `x @ w^T`.
    Dense(Tensor),
    Quantized(QTensor),
    /// f32 for many rows, int8 for a few.
    Int8 {
        dense: Tensor,
        q: Int8Matrix,
    },
}

/// Most rows that take the int8 path (one or two passes over the weights).
const INT8_MAX_ROWS: usize = 10;

/// `y = x W^T + b` over the rows of a 2-D `x`.
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    out_features: usize,
}

impl Linear {
    /// `weight` is `(out, in)`. Quantised only on the CPU and where the input width is a whole
    /// number of quantisation blocks; f32 otherwise.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, precision: Precision) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        let cpu = weight.device().is_cpu();
        let weight = match precision.ggml() {
            Some(q) if cpu && in_features % q.block_size() == 0 => {
                Weight::Quantized(QTensor::quantize(&weight, q)?)
            }
            None if precision == Precision::Int8 && cpu && in_features % 32 == 0 => {
                let dense = weight.contiguous()?;
                let w = dense.flatten_all()?.to_vec1::<f32>()?;
                let q = Int8Matrix::quantize(&w, out_features, in_features);
                Weight::Int8 { dense, q }
            }
            _ => Weight::Dense(weight.contiguous()?),
        };
        Ok(Self {
            weight,
            bias,
            out_features,
        })
    }

    pub(crate) fn load(
        vb: &VarBuilder,
        in_features: usize,
        out_features: usize,
        bias: bool,
        precision: Precision,
    ) -> Result<Self> {
        let w = vb.get((out_features, in_features), "weight")?;
        let b = if bias {
            Some(vb.get(out_features, "bias")?)
        } else {
            None
        };
        Self::new(w, b, precision)
    }

    pub(crate) fn out_features(&self) -> usize {
        self.out_features
    }

    /// `x W^T` without the bias: `x` is `(rows, in)`; returns `(rows, out)`.
    pub(crate) fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Dense(w) => x.matmul(&w.t()?),
            Weight::Quantized(q) => x.contiguous()?.apply_op1_no_bwd(q),
            Weight::Int8 { q, .. } if x.dim(0)? <= INT8_MAX_ROWS && x.dtype() == DType::F32 => {
                x.contiguous()?.apply_op1_no_bwd(&Int8MatMul(q))
            }
            Weight::Int8 { dense, .. } => x.matmul(&dense.t()?),
        }
    }

    /// `x W^T + b`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.matmul(x)?;
        match &self.bias {
            Some(b) => kernels::add_bias(y, b),
            None => Ok(y),
        }
    }

    /// `gelu(x W^T + b)`.
    pub(crate) fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::bias_gelu(self.matmul(x)?, self.bias.as_ref())
    }

    /// `residual + x W^T + b`, reusing `residual`'s memory where possible.
    pub(crate) fn forward_residual(&self, x: &Tensor, residual: Tensor) -> Result<Tensor> {
        kernels::residual(residual, &self.matmul(x)?, self.bias.as_ref())
    }
}

/// Layer norm over the last dimension (epsilon 1e-5, as in Whisper).
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub(crate) fn load(vb: &VarBuilder, size: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::layer_norm(x, &self.weight, &self.bias)
    }
}

/// `q`, `k` and `v` projections of one attention block fused into one `(3 d, d)` product. The query
/// rows and bias are pre-scaled by `1 / sqrt(head_dim)`, and the key projection has no bias.
pub(crate) fn fused_qkv(
    vb: &VarBuilder,
    d: usize,
    n_head: usize,
    precision: Precision,
) -> Result<Linear> {
    let scale = 1.0 / ((d / n_head) as f64).sqrt();
    let q_w = (vb.get((d, d), "q_proj.weight")? * scale)?;
    let q_b = (vb.get(d, "q_proj.bias")? * scale)?;
    let k_w = vb.get((d, d), "k_proj.weight")?;
    let v_w = vb.get((d, d), "v_proj.weight")?;
    let v_b = vb.get(d, "v_proj.bias")?;
    let k_b = Tensor::zeros(d, q_b.dtype(), q_b.device())?;
    let w = Tensor::cat(&[&q_w, &k_w, &v_w], 0)?;
    let b = Tensor::cat(&[&q_b, &k_b, &v_b], 0)?;
    Linear::new(w, Some(b), precision)
}

//! CPU kernels for the element-wise parts of the transformer that candle runs on one thread with
//! libm calls (softmax, exact GELU, layer norm, bias and residual adds): here they run in place where
//! possible, split over candle's worker threads, with a polynomial `exp` and `erf` that the compiler
//! vectorises (AVX2 when the CPU has it). Other devices and non-contiguous layouts go
//! through candle's own ops.

use candle_core::{
    CpuStorage, CustomOp3, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor,
};

/// `e^x` for `x <= 0` (softmax and GELU only need that range; 0 under -87, where `e^x` would be
/// subnormal), relative error about 2e-7. Cody-Waite reduction to `r` in `[-ln2/2, ln2/2]`,
/// a degree-6 polynomial for `e^r`, and `2^k` built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let tiny = x < -87.0;
    let x = x.max(-87.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let y = y * f32::from_bits(((k as i32 + 127) as u32) << 23);
    if tiny {
        0.0
    } else {
        y
    }
}

/// Exact GELU, `x Φ(x) = x (1 + erf(x / √2)) / 2`, with Abramowitz and Stegun's 7.1.26 `erf`
/// (absolute error under 1.5e-7).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let erf = 1.0 - poly * exp(-z * z);
    0.5 * x * (1.0 + erf.copysign(x))
}

const LANES: usize = 16;

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            m[i] = m[i].max(c[i]);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for v in m {
        max = max.max(v);
    }
    if max == f32::NEG_INFINITY {
        // A fully masked row: leave zeros rather than NaN.
        row.fill(0.0);
        return;
    }
    let mut s = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp(c[i] - max);
            s[i] += c[i];
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    sum += s.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let n = x.len() as f32;
    let mut s = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            s[i] += c[i];
        }
    }
    let mean = (s.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()) / n;
    let mut s = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let d = c[i] - mean;
            s[i] += d * d;
        }
    }
    let rem: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let inv = 1.0 / ((s.iter().sum::<f32>() + rem) / n + 1e-5).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * w[i] + b[i];
    }
}

#[inline(always)]
fn log_sum_exp_inner(v: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            m[i] = m[i].max(c[i]);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for x in m {
        max = max.max(x);
    }
    if max == f32::NEG_INFINITY {
        return max;
    }
    let mut s = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            s[i] += exp(c[i] - max);
        }
    }
    let rem: f32 = chunks.remainder().iter().map(|&x| exp(x - max)).sum();
    max + (s.iter().sum::<f32>() + rem).ln()
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn log_sum_exp_avx2(v: &[f32]) -> f32 {
    log_sum_exp_inner(v)
}

/// `ln(sum(e^v))`: log probabilities are `v - log_sum_exp(v)` (negative infinity for an empty or
/// fully masked `v`).
pub(crate) fn log_sum_exp(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { log_sum_exp_avx2(v) };
        }
    }
    log_sum_exp_inner(v)
}

/// The kernels, each compiled for the baseline and for wider vector units.
#[derive(Clone, Copy)]
enum Kernel<'a> {
    Softmax,
    BiasGelu(&'a [f32]),
    /// `gelu(x + bias[row])`: a convolution's channels are rows.
    RowBiasGelu(&'a [f32]),
    AddBias(&'a [f32]),
    /// `dst += y + bias`, with `y` the same shape as `dst`.
    Residual(&'a [f32], &'a [f32]),
    LayerNorm(&'a [f32], &'a [f32], &'a [f32]),
}

impl Kernel<'_> {
    /// Apply to `rows` consecutive rows of `dst` starting at row `first`.
    #[inline(always)]
    fn rows(self, dst: &mut [f32], first: usize, cols: usize) {
        for (j, row) in dst.chunks_exact_mut(cols).enumerate() {
            let r = first + j;
            match self {
                Kernel::Softmax => softmax_row(row),
                Kernel::BiasGelu(b) => {
                    for (v, b) in row.iter_mut().zip(b) {
                        *v = gelu(*v + b);
                    }
                }
                Kernel::RowBiasGelu(b) => {
                    let b = b[r];
                    for v in row.iter_mut() {
                        *v = gelu(*v + b);
                    }
                }
                Kernel::AddBias(b) => {
                    for (v, b) in row.iter_mut().zip(b) {
                        *v += b;
                    }
                }
                Kernel::Residual(y, b) => {
                    let y = &y[r * cols..(r + 1) * cols];
                    for ((v, y), b) in row.iter_mut().zip(y).zip(b) {
                        *v += y + b;
                    }
                }
                Kernel::LayerNorm(x, w, b) => {
                    layer_norm_row(&x[r * cols..(r + 1) * cols], w, b, row)
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(self, dst: &mut [f32], first: usize, cols: usize) {
        self.rows(dst, first, cols)
    }

    fn rows_best(self, dst: &mut [f32], first: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.rows_avx2(dst, first, cols) };
            }
        }
        self.rows(dst, first, cols)
    }

    /// Apply to every row of `dst` (`cols` wide), split over candle's CPU threads when large.
    fn run(self, dst: &mut [f32], cols: usize) {
        let n_rows = dst.len() / cols.max(1);
        if dst.len() < 1 << 15 || n_rows < 2 {
            return self.rows_best(dst, 0, cols);
        }
        let base = dst.as_mut_ptr() as usize;
        candle_core::utils::barrier_pool().execute_chunked(n_rows, |range| {
            // SAFETY: the pool hands out disjoint row ranges of `dst`, which outlives the call.
            let rows = unsafe {
                std::slice::from_raw_parts_mut(
                    (base as *mut f32).add(range.start * cols),
                    range.len() * cols,
                )
            };
            self.rows_best(rows, range.start, cols);
        });
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("expected a contiguous f32 tensor"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("expected a contiguous f32 tensor"),
    }
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

struct SoftmaxOp;

impl InplaceOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "moqcast-softmax"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let cols = last_dim(l);
        Kernel::Softmax.run(f32_slice_mut(s, l)?, cols);
        Ok(())
    }
}

struct BiasGeluOp;

impl InplaceOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "moqcast-bias-gelu"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
        let cols = last_dim(l);
        Kernel::BiasGelu(f32_slice(b, bl)?).run(f32_slice_mut(s, l)?, cols);
        Ok(())
    }
}

struct RowBiasGeluOp;

impl InplaceOp2 for RowBiasGeluOp {
    fn name(&self) -> &'static str {
        "moqcast-row-bias-gelu"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
        let cols = last_dim(l);
        let b = f32_slice(b, bl)?;
        let s = f32_slice_mut(s, l)?;
        if b.len() * cols != s.len() {
            candle_core::bail!("{} row biases for {} rows", b.len(), s.len() / cols.max(1));
        }
        Kernel::RowBiasGelu(b).run(s, cols);
        Ok(())
    }
}

struct AddBiasOp;

impl InplaceOp2 for AddBiasOp {
    fn name(&self) -> &'static str {
        "moqcast-add-bias"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
        let cols = last_dim(l);
        Kernel::AddBias(f32_slice(b, bl)?).run(f32_slice_mut(s, l)?, cols);
        Ok(())
    }
}

struct ResidualOp;

impl InplaceOp3 for ResidualOp {
    fn name(&self) -> &'static str {
        "moqcast-residual"
    }
    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        y: &CpuStorage,
        yl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<()> {
        let cols = last_dim(l);
        Kernel::Residual(f32_slice(y, yl)?, f32_slice(b, bl)?).run(f32_slice_mut(s, l)?, cols);
        Ok(())
    }
}

struct LayerNormOp;

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "moqcast-layer-norm"
    }
    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let cols = last_dim(xl);
        let xs = f32_slice(x, xl)?;
        let mut out = vec![0f32; xs.len()];
        Kernel::LayerNorm(xs, f32_slice(w, wl)?, f32_slice(b, bl)?).run(&mut out, cols);
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Rows of queries per attention task: the task's scores (`rows x frames`) stay in the core's cache.
const ATTENTION_ROWS: usize = 128;

/// Multi-head self-attention without a mask over fused projections: input `(n, 3 d)` holding the
/// (pre-scaled) queries, keys and values, output `(n, d)` with the heads side by side. Each task
/// takes one head and a block of query rows through scores, softmax and the weighted sum, so the
/// `n x n` score matrices are never materialised.
struct SelfAttentionOp {
    n_head: usize,
}

impl candle_core::CustomOp1 for SelfAttentionOp {
    fn name(&self) -> &'static str {
        "moqcast-self-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s, l)?;
        let (n, d3) = l.shape().dims2()?;
        let d = d3 / 3;
        let h = self.n_head;
        if d * 3 != d3 || h == 0 || d % h != 0 {
            candle_core::bail!("self-attention over {d3} columns with {h} heads");
        }
        let dh = d / h;
        let mut out = vec![0f32; n * d];
        let blocks = n.div_ceil(ATTENTION_ROWS);
        let (src, dst) = (qkv.as_ptr() as usize, out.as_mut_ptr() as usize);
        let task = |t: usize, scores: &mut Vec<f32>| {
            let (head, block) = (t / blocks, t % blocks);
            let r0 = block * ATTENTION_ROWS;
            let m = ATTENTION_ROWS.min(n - r0);
            scores.resize(m * n, 0.0);
            let src = src as *const f32;
            // SAFETY: every pointer below stays inside `qkv` (n x 3d), `scores` (m x n) or `out`
            // (n x d), as the strides and sizes show; tasks write disjoint blocks of `out`.
            unsafe {
                let q = src.add(r0 * d3 + head * dh);
                let k = src.add(d + head * dh);
                let v = src.add(2 * d + head * dh);
                // scores = q k^T: (m x dh) (dh x n); k^T's rows are k's columns.
                gemm::gemm(
                    m,
                    n,
                    dh,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q,
                    1,
                    d3 as isize,
                    k,
                    d3 as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                Kernel::Softmax.rows_best(scores, 0, n);
                // out = softmax(scores) v: (m x n) (n x dh).
                gemm::gemm(
                    m,
                    dh,
                    n,
                    (dst as *mut f32).add(r0 * d + head * dh),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v,
                    1,
                    d3 as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        };
        let tasks = h * blocks;
        if candle_core::utils::get_num_threads() <= 1 || tasks < 2 {
            let mut scores = vec![];
            (0..tasks).for_each(|t| task(t, &mut scores));
        } else {
            candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
                let mut scores = vec![];
                range.for_each(|t| task(t, &mut scores));
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, d))))
    }
}

/// Self-attention (no mask) of the fused, pre-scaled projections `qkv` (`(n, 3 d)`), as `(n, d)`.
pub(crate) fn self_attention(qkv: &Tensor, n_head: usize) -> Result<Tensor> {
    if fast(&[qkv]) {
        return qkv.apply_op1_no_bwd(&SelfAttentionOp { n_head });
    }
    let (n, d3) = qkv.dims2()?;
    let d = d3 / 3;
    let dh = d / n_head;
    let heads = |i: usize| -> Result<Tensor> {
        qkv.narrow(1, i * d, d)?
            .reshape((n, n_head, dh))?
            .transpose(0, 1)?
            .contiguous()
    };
    let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
    softmax_last_dim(q.matmul(&k.t()?)?)?
        .matmul(&v)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, d))
}

/// Whether the fast path applies: CPU, f32, contiguous.
fn fast(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
}

/// Softmax over the last dimension, in place on the CPU (`x` must not be shared).
pub(crate) fn softmax_last_dim(x: Tensor) -> Result<Tensor> {
    if fast(&[&x]) {
        x.inplace_op1(&SoftmaxOp)?;
        Ok(x)
    } else {
        candle_nn::ops::softmax_last_dim(&x)
    }
}

/// `gelu(x + bias)` (bias over the last dimension), in place on the CPU.
pub(crate) fn bias_gelu(x: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) if fast(&[&x, b]) => {
            x.inplace_op2(b, &BiasGeluOp)?;
            Ok(x)
        }
        Some(b) => x.broadcast_add(b)?.gelu_erf(),
        None => x.gelu_erf(),
    }
}

/// `gelu(x + bias)` for `x` of shape `(1, channels, frames)` and `bias` of `(channels)`, in place
/// on the CPU.
pub(crate) fn channel_bias_gelu(x: Tensor, bias: &Tensor) -> Result<Tensor> {
    if fast(&[&x, bias]) {
        x.inplace_op2(bias, &RowBiasGeluOp)?;
        Ok(x)
    } else {
        let c = bias.dim(0)?;
        x.broadcast_add(&bias.reshape((1, c, 1))?)?.gelu_erf()
    }
}

/// `x + bias`, in place on the CPU.
pub(crate) fn add_bias(x: Tensor, bias: &Tensor) -> Result<Tensor> {
    if fast(&[&x, bias]) {
        x.inplace_op2(bias, &AddBiasOp)?;
        Ok(x)
    } else {
        x.broadcast_add(bias)
    }
}

/// `x + y + bias`, in place in `x` on the CPU (`x` must not be shared).
pub(crate) fn residual(x: Tensor, y: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) if fast(&[&x, y, b]) && x.shape() == y.shape() => {
            x.inplace_op3(y, b, &ResidualOp)?;
            Ok(x)
        }
        Some(b) => x + y.broadcast_add(b)?,
        None => x + y,
    }
}

/// Layer norm over the last dimension (epsilon 1e-5).
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast(&[x, w, b]) {
        x.apply_op3_no_bwd(w, b, &LayerNormOp)
    } else {
        candle_nn::ops::layer_norm(x, w, b, 1e-5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn exp_and_gelu_are_accurate() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let (a, e) = (exp(x), x.exp());
            assert!(
                (a - e).abs() <= 3e-7 * e + 1e-38,
                "exp({x}) = {a}, want {e}"
            );
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        for i in -1000..=1000 {
            let x = i as f32 / 100.0;
            let want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((gelu(x) as f64 - want).abs() < 2e-6, "gelu({x})");
        }
    }

    /// `erf` by Simpson's rule on `2/sqrt(pi) e^(-t^2)` (error far below f32 precision).
    fn libm_erf(x: f64) -> f64 {
        let n = 4000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn kernels_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        // Large enough to go through the thread pool, with an odd row length.
        let x = Tensor::randn(0f32, 3.0, (300, 389), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 389, &dev)?;
        let w = Tensor::randn(1f32, 0.5, 389, &dev)?;
        let want = candle_nn::ops::softmax_last_dim(&x)?;
        let got = softmax_last_dim(x.copy()?)?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-5,
        );
        let want = x.broadcast_add(&b)?.gelu_erf()?;
        let got = bias_gelu(x.copy()?, Some(&b))?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-5,
        );
        let want = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5)?;
        let got = layer_norm(&x, &w, &b)?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-5,
        );
        let y = Tensor::randn(0f32, 1.0, (300, 389), &dev)?;
        let want = (&x + y.broadcast_add(&b)?)?;
        let got = residual(x.copy()?, &y, Some(&b))?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-6,
        );
        let want = x.broadcast_add(&b)?;
        let got = add_bias(x.copy()?, &b)?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-6,
        );
        let c = Tensor::randn(0f32, 1.0, 300, &dev)?;
        let want = x.broadcast_add(&c.reshape((300, 1))?)?.gelu_erf()?;
        let got = channel_bias_gelu(x.unsqueeze(0)?.copy()?, &c)?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-6,
        );
        // Attention against the composed candle ops, over several row blocks and heads.
        let qkv = Tensor::randn(0f32, 1.0, (150, 3 * 48), &dev)?;
        let got = self_attention(&qkv, 6)?;
        let heads = |i: usize| -> Result<Tensor> {
            qkv.narrow(1, i * 48, 48)?
                .reshape((150, 6, 8))?
                .transpose(0, 1)?
                .contiguous()
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let want = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?
            .matmul(&v)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((150, 48))?;
        close(
            &got.flatten_all()?.to_vec1()?,
            &want.flatten_all()?.to_vec1()?,
            1e-4,
        );
        let v: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin() * 8.0).collect();
        let want = v.iter().map(|x| (*x as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&v) as f64 - want).abs() < 1e-5);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        // Masked rows.
        let m = Tensor::new(&[[0f32, f32::NEG_INFINITY], [f32::NEG_INFINITY; 2]], &dev)?;
        assert_eq!(
            softmax_last_dim(m)?.to_vec2::<f32>()?,
            [[1.0, 0.0], [0.0, 0.0]]
        );
        Ok(())
    }
}

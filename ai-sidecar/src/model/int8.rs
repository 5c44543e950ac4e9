//! 8-bit weights for the decoder's few-row products.
//!
//! A decoding step multiplies one row per hypothesis (1 to 5) by every weight matrix, the largest
//! being the 51864 x 384 output projection. That is memory bound in f32 (80 MB a step), and
//! candle's q8_0 path quantises the activations too and computes each dot product on its own.
//! Here weights are int8 in blocks of 32 with an f32 scale each (as accurate as q8_0), activations
//! stay f32, and every weight block is widened once and used for all rows.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

const BLOCK: usize = 32;
/// Rows handled per pass over the weights (accumulators must fit the vector registers).
const MAX_ROWS: usize = 5;

/// A `(n, k)` matrix as int8 blocks of 32 along `k`, each with a scale.
pub(crate) struct Int8Matrix {
    n: usize,
    k: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Matrix {
    /// `w` is `(n, k)` row-major with `k` a multiple of 32. Each block is scaled so that its
    /// largest magnitude maps to 127.
    pub(crate) fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert!(
            k % BLOCK == 0 && w.len() == n * k,
            "{n} x {k} matrix of {}",
            w.len()
        );
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n * k / BLOCK];
        for ((wb, qb), s) in w
            .chunks_exact(BLOCK)
            .zip(q.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
        {
            let max = wb.iter().fold(0f32, |m, v| m.max(v.abs()));
            *s = max / 127.0;
            let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
            for (q, &v) in qb.iter_mut().zip(wb) {
                *q = (v * inv).round() as i8;
            }
        }
        Self { n, k, q, scales }
    }

    /// `y = x W^T` for `x` of `m` rows of `k`: `y` is `(m, n)`.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k);
        let mut y = vec![0f32; m * n];
        let out = y.as_mut_ptr() as usize;
        let run = |cols: std::ops::Range<usize>| {
            for r0 in (0..m).step_by(MAX_ROWS) {
                let rows = MAX_ROWS.min(m - r0);
                // SAFETY: `out` is `y`, alive for the call; each call writes only columns
                // `cols` of rows `r0..r0 + rows`, and concurrent calls get disjoint columns.
                unsafe { self.block_rows(x, r0, rows, cols.clone(), out as *mut f32) };
            }
        };
        // Parallel only where the matrix is large enough to pay for waking the workers.
        if n * k >= 1 << 20 && candle_core::utils::get_num_threads() > 1 {
            candle_core::utils::barrier_pool().execute_chunked(n, run);
        } else {
            run(0..n);
        }
        y
    }

    /// # Safety
    /// `out` must point to an `(m, n)` buffer with `r0 + rows <= m`.
    unsafe fn block_rows(
        &self,
        x: &[f32],
        r0: usize,
        rows: usize,
        cols: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has the features; the caller's contract covers `out`.
                return unsafe { self.block_rows_avx2(x, r0, rows, cols, out) };
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.block_rows_generic(x, r0, rows, cols, out) }
    }

    /// # Safety
    /// As [`Self::block_rows`], and the CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_rows_avx2(
        &self,
        x: &[f32],
        r0: usize,
        rows: usize,
        cols: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let k = self.k;
        let blocks = k / BLOCK;
        let xs: [*const f32; MAX_ROWS] =
            std::array::from_fn(|i| x[(r0 + i.min(rows - 1)) * k..].as_ptr());
        for j in cols {
            let q = self.q[j * k..].as_ptr();
            let s = self.scales[j * blocks..].as_ptr();
            // SAFETY: `q`, `s` and every `xs[i]` have `k` (`blocks`) elements left, the CPU has
            // AVX2 and FMA.
            let dots = unsafe {
                match rows {
                    1 => dot_avx2::<1>(&xs, q, s, blocks),
                    2 => dot_avx2::<2>(&xs, q, s, blocks),
                    3 => dot_avx2::<3>(&xs, q, s, blocks),
                    4 => dot_avx2::<4>(&xs, q, s, blocks),
                    _ => dot_avx2::<5>(&xs, q, s, blocks),
                }
            };
            for (i, d) in dots.iter().enumerate().take(rows) {
                // SAFETY: row `r0 + i < m`, column `j < n` (the caller's contract).
                unsafe { *out.add((r0 + i) * self.n + j) = *d };
            }
        }
    }

    /// # Safety
    /// As [`Self::block_rows`].
    unsafe fn block_rows_generic(
        &self,
        x: &[f32],
        r0: usize,
        rows: usize,
        cols: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let k = self.k;
        for j in cols {
            let q = &self.q[j * k..(j + 1) * k];
            let s = &self.scales[j * k / BLOCK..(j + 1) * k / BLOCK];
            for i in 0..rows {
                let xr = &x[(r0 + i) * k..(r0 + i + 1) * k];
                let mut d = 0f32;
                for ((qb, &sb), xb) in q.chunks_exact(BLOCK).zip(s).zip(xr.chunks_exact(BLOCK)) {
                    let p: f32 = qb.iter().zip(xb).map(|(&w, &v)| w as f32 * v).sum();
                    d += p * sb;
                }
                // SAFETY: row `r0 + i < m`, column `j < n` (the caller's contract).
                unsafe { *out.add((r0 + i) * self.n + j) = d };
            }
        }
    }
}

/// Dot products of `M` activation rows with one quantised weight row of `blocks` blocks: each
/// block is widened to f32 and scaled once, then multiplied into every row (two accumulators
/// per row keep `M = 5` within the 16 vector registers).
///
/// # Safety
/// Every `xs[i]` (`i < M`) must have `32 * blocks` floats, `q` as many bytes, `s` `blocks`
/// scales; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2<const M: usize>(
    xs: &[*const f32; MAX_ROWS],
    q: *const i8,
    s: *const f32,
    blocks: usize,
) -> [f32; MAX_ROWS] {
    use std::arch::x86_64::*;
    // SAFETY: the function's contract bounds every pointer offset below.
    unsafe {
        let mut a = [_mm256_setzero_ps(); M];
        let mut b = [_mm256_setzero_ps(); M];
        for blk in 0..blocks {
            let scale = _mm256_set1_ps(*s.add(blk));
            let qp = q.add(blk * BLOCK);
            let w0 =
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(qp as *const __m128i)));
            let w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                qp.add(8) as *const __m128i
            )));
            let w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                qp.add(16) as *const __m128i
            )));
            let w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                qp.add(24) as *const __m128i
            )));
            let (w0, w1) = (_mm256_mul_ps(w0, scale), _mm256_mul_ps(w1, scale));
            let (w2, w3) = (_mm256_mul_ps(w2, scale), _mm256_mul_ps(w3, scale));
            for i in 0..M {
                let xp = xs[i].add(blk * BLOCK);
                a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp), w0, a[i]);
                b[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), w1, b[i]);
                a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(16)), w2, a[i]);
                b[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(24)), w3, b[i]);
            }
        }
        let mut r = [0f32; MAX_ROWS];
        for i in 0..M {
            let v = _mm256_add_ps(a[i], b[i]);
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            r[i] = _mm_cvtss_f32(h);
        }
        r
    }
}

/// `x W^T` as a candle op over a contiguous f32 `(rows, k)` tensor.
pub(crate) struct Int8MatMul<'a>(pub &'a Int8Matrix);

impl CustomOp1 for Int8MatMul<'_> {
    fn name(&self) -> &'static str {
        "moqcast-int8-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("int8 matmul needs a contiguous f32 input");
        };
        let (m, k) = l.shape().dims2()?;
        if k != self.0.k {
            candle_core::bail!("int8 matmul: input width {k}, weights {}", self.0.k);
        }
        let y = self.0.matmul(&v[a..b], m);
        Ok((CpuStorage::F32(y), Shape::from((m, self.0.n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f32_within_quantisation_error() {
        let (n, k) = (37, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let q = Int8Matrix::quantize(&w, n, k);
        for m in [1, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let y = q.matmul(&x, m);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
                    // Each weight is off by at most half a step of 1/127 of its block's maximum.
                    let bound: f32 = (0..k).map(|c| x[i * k + c].abs()).sum::<f32>() / 254.0;
                    assert!((y[i * n + j] - want).abs() <= bound, "m {m} ({i}, {j})");
                }
            }
        }
        // Zero blocks stay zero.
        let z = Int8Matrix::quantize(&[0.0; 64], 2, 32);
        assert_eq!(z.matmul(&[1.0; 32], 1), vec![0.0, 0.0]);
    }
}

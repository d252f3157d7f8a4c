//! The building blocks of every forward, on `[T, d]` activations (batch 1), written as a few large
//! tensor operations each so that candle's matmuls do the work.

use candle_core::{DType, Device, Result, Tensor, D};

use super::kernels::{CausalSoftmax, ParallelMatmul, RmsNorm, RotateHalf, SiluMul};

use crate::model::{Linear, Norm, NormKind, Rope, RopeScaling};

/// `x W^T + b`.
pub fn linear(x: &Tensor, l: &Linear) -> Result<Tensor> {
    let y = matmul_weight(x, &l.weight_t()?, l.weight.is_variable())?;
    match &l.bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x W_i^T + b_i` for linears that read the same `x`: one GEMM over their stacked weights when
/// those are fixed, else one each.
pub fn linears(x: &Tensor, group: &[&Linear]) -> Result<Vec<Tensor>> {
    let Some((first, rest)) = group.split_first() else {
        return Ok(Vec::new());
    };
    let Some(stacked) = first.stacked_weight_t(rest)? else {
        return group.iter().map(|l| linear(x, l)).collect();
    };
    let y = matmul_weight(x, &stacked, false)?;
    let mut start = 0;
    group
        .iter()
        .map(|l| {
            let out = l.weight.dim(0)?;
            let part = y.narrow(D::Minus1, start, out)?;
            start += out;
            match &l.bias {
                Some(b) => part.broadcast_add(b),
                // Contiguous: element-wise ops on the strided piece (SiLU of the gate) were
                // several times slower than the copy.
                None => part.contiguous(),
            }
        })
        .collect()
}

/// `x · w` for `[rows, in]` activations and a `[in, out]` weight: split by columns over the
/// threads ([`ParallelMatmul`]) unless `w` is a training variable: training keeps candle's
/// matmul, which is all its speed was measured with.
pub fn matmul_weight(x: &Tensor, w: &Tensor, variable: bool) -> Result<Tensor> {
    if variable || x.rank() != 2 {
        return x.matmul(w);
    }
    x.apply_op2(w, ParallelMatmul)
}

/// Mean of squares over the last dimension, kept: `[.., 1]`.
pub fn mean_square(x: &Tensor) -> Result<Tensor> {
    x.sqr()?.mean_keepdim(D::Minus1)
}

/// RMS (`||x|| / sqrt(d)`) of each row of `[.., d]`, squeezed.
pub fn rms(x: &Tensor) -> Result<Tensor> {
    x.sqr()?.mean(D::Minus1)?.sqrt()
}

/// PreNorm / final norm.
pub fn norm(x: &Tensor, n: &Norm, kind: NormKind) -> Result<Tensor> {
    match kind {
        NormKind::Rms { eps } => x
            .contiguous()?
            .apply_op2(&n.weight.contiguous()?, RmsNorm { eps }),
        NormKind::Layer { eps } => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centred = x.broadcast_sub(&mean)?;
            let inv = (mean_square(&centred)? + eps)?.sqrt()?.recip()?;
            let y = centred.broadcast_mul(&inv)?.broadcast_mul(&n.weight)?;
            match &n.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        }
    }
}

/// Numerically stable softmax along `dim`. The max is detached: subtracting a constant changes
/// neither the value nor the gradient.
pub fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(dim)?)
}

/// Log-sum-exp along the last dimension, squeezed.
pub fn log_sum_exp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let s = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?;
    (s + max)?.squeeze(D::Minus1)
}

/// RoPE inverse frequencies (`head_dim / 2` of them), with the configured scaling.
pub fn rope_inv_freq(rope: &Rope, head_dim: usize) -> Vec<f64> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let freq = 1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64);
            match rope.scaling {
                RopeScaling::None => freq,
                RopeScaling::Linear { factor } => freq / factor,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                } => {
                    let old = original_max_position_embeddings as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let low_freq_wavelen = old / low_freq_factor;
                    let high_freq_wavelen = old / high_freq_factor;
                    if wavelen < high_freq_wavelen {
                        freq
                    } else if wavelen > low_freq_wavelen {
                        freq / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                }
            }
        })
        .collect()
}

/// `cos` and `sin` of every position's RoPE angles, `[T, head_dim / 2]` row-major, in f64: the one
/// place angles are computed (the reference repeats each half; the GPU engine uploads them).
pub fn rope_half_tables(rope: &Rope, head_dim: usize, positions: usize) -> (Vec<f64>, Vec<f64>) {
    let inv = rope_inv_freq(rope, head_dim);
    let angles = (0..positions).flat_map(|t| inv.iter().map(move |f| t as f64 * f));
    angles.map(|a| (a.cos(), a.sin())).unzip()
}

/// `cos` and `sin` tables `[T, head_dim]` (each half repeated, for rotate-half RoPE).
pub fn rope_tables(
    rope: &Rope,
    head_dim: usize,
    positions: usize,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let (cos, sin) = rope_half_tables(rope, head_dim, positions);
    let full = |half: Vec<f64>| -> Result<Tensor> {
        let rows: Vec<f64> = half
            .chunks(head_dim / 2)
            .flat_map(|r| r.iter().chain(r).copied())
            .collect();
        Tensor::from_vec(rows, (positions, head_dim), &Device::Cpu)?.to_dtype(dtype)
    };
    Ok((full(cos)?, full(sin)?))
}

/// Rotate-half RoPE on `[H, T, hd]`: `x cos + rotate_half(x) sin`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, RotateHalf)
}

/// SwiGLU's activation `silu(gate) * up`, in one pass.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

/// `[B * T, heads * hd]` -> `[B, heads, T, hd]`.
pub fn split_heads(x: &Tensor, batch: usize, heads: usize, hd: usize) -> Result<Tensor> {
    let t = x.dim(0)? / batch;
    x.reshape((batch, t, heads, hd))?
        .transpose(1, 2)?
        .contiguous()
}

/// Causal multi-head attention with GQA: q `[B, H, T, hd]`, k and v `[B, Hkv, T, hd]` ->
/// `[B * T, H * hd]`. Query `i` sees key `j` when `j <= i` (and `i - j < window` with a sliding
/// window).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
) -> Result<Tensor> {
    let (batch, heads, t, hd) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        if kv_heads == heads {
            return Ok(x.clone());
        }
        // Query head h reads kv head h / (H / Hkv), as transformers' repeat_kv does.
        x.unsqueeze(2)?
            .broadcast_as((batch, kv_heads, heads / kv_heads, t, hd))?
            .reshape((batch, heads, t, hd))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scores = matmul_per_head(q, &k.t()?)?;
    let p = causal_softmax(&scores, 1.0 / (hd as f64).sqrt(), window)?;
    matmul_per_head(&p, &v)?
        .transpose(1, 2)?
        .reshape((batch * t, heads * hd))
}

/// `a[b, h] · b[b, h]` for `[B, H, M, K]` and `[B, H, K, N]`, the heads on separate threads
/// ([`ParallelMatmul`]). Candle's batched matmul runs the heads one after another, each split
/// over every thread: at 16 threads attention took 172-176 ms of a 520-544 ms trace at T = 512,
/// and 77 ms with this (measured 2026-11-23; history of BENCHMARKS.md).
pub fn matmul_per_head(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.apply_op2(b, ParallelMatmul)
}

/// `softmax(scale * scores)` along the last dimension of `[.., T, T]` attention scores, with the
/// causal mask (and sliding window) applied by position: one pass over each row, rows in
/// parallel, in place of the seven element-wise ops (scale, mask, max, subtract, exp, sum,
/// divide) whose overhead dominates at short prompts. Differentiable.
pub fn causal_softmax(scores: &Tensor, scale: f64, window: Option<usize>) -> Result<Tensor> {
    let dims = scores.dims();
    if dims.len() < 2 || dims[dims.len() - 1] != dims[dims.len() - 2] {
        candle_core::bail!("causal_softmax takes [.., T, T] scores, not {dims:?}");
    }
    scores
        .contiguous()?
        .apply_op1(CausalSoftmax { scale, window })
}

/// A `[rows, cols]` tensor as one f32 table, whatever its dtype (the reference also runs in f64
/// for finite-difference checks).
pub fn table_f32(t: &Tensor) -> Result<crate::trace::Rows> {
    let (rows, cols) = t.dims2()?;
    let data = t
        .to_dtype(DType::F32)?
        .contiguous()?
        .flatten_all()?
        .to_vec1()?;
    crate::trace::Rows::from_flat(rows, cols, data)
        .ok_or_else(|| candle_core::Error::Msg(format!("a [{rows}, {cols}] tensor's values")))
}

/// `read` of a tensor's values as f32, where they lie when the tensor is f32 and contiguous
/// already (the `[T, vocab]` logits: a copy of them took longer than reading them).
pub fn read_f32<R>(t: &Tensor, read: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((from, to))) =
        (&*storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("the CPU reference read a tensor that is not on the CPU");
    };
    Ok(read(&cpu.as_slice::<f32>()?[from..to]))
}

/// A `[n]` tensor as f32.
pub fn vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.to_vec1()
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var, D};

    use super::{causal_softmax, matmul_per_head, softmax};
    use crate::reference::kernels::tests::max_abs_diff;

    /// The unfused form `causal_softmax` replaces: scale, add an additive mask, softmax.
    fn masked_softmax(scores: &Tensor, scale: f64, window: Option<usize>) -> Tensor {
        let t = scores.dim(D::Minus1).unwrap();
        let mask: Vec<f64> = (0..t * t)
            .map(|e| {
                let (i, j) = (e / t, e % t);
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        softmax(&(scores * scale).unwrap().broadcast_add(&mask).unwrap(), 3).unwrap()
    }

    #[test]
    fn causal_softmax_and_its_gradient_equal_the_masked_softmax_of_separate_ops() {
        let dev = Device::Cpu;
        for window in [None, Some(1), Some(3)] {
            let scores = Var::randn(0f64, 2.0, (2, 3, 7, 7), &dev).unwrap();
            let upstream = Tensor::randn(0f64, 1.0, (2, 3, 7, 7), &dev).unwrap();
            let fused = causal_softmax(&scores, 0.37, window).unwrap();
            let unfused = masked_softmax(&scores, 0.37, window);
            assert!(max_abs_diff(&fused, &unfused) < 1e-14, "window {window:?}");

            let grad_of = |y: &Tensor| {
                let loss = (y * &upstream).unwrap().sum_all().unwrap();
                loss.backward().unwrap().get(&scores).unwrap().clone()
            };
            let (g_fused, g_unfused) = (grad_of(&fused), grad_of(&unfused));
            assert!(
                max_abs_diff(&g_fused, &g_unfused) < 1e-14,
                "window {window:?}"
            );
            // Masked scores get no gradient.
            assert_eq!(
                g_fused
                    .get(1)
                    .unwrap()
                    .get(2)
                    .unwrap()
                    .get(0)
                    .unwrap()
                    .get(5)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
                0.0
            );
        }
    }

    #[test]
    fn causal_softmax_rejects_scores_that_are_not_square_and_keeps_f32() {
        let dev = Device::Cpu;
        let wide = Tensor::zeros((1, 1, 3, 4), DType::F32, &dev).unwrap();
        assert!(causal_softmax(&wide, 1.0, None).is_err());
        let square = Tensor::zeros((1, 1, 3, 3), DType::F32, &dev).unwrap();
        let y = causal_softmax(&square, 1.0, None).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        // Uniform over the visible keys: row 2 sees three.
        let row: Vec<f32> = y
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(2)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(row, vec![1.0 / 3.0; 3]);
    }

    #[test]
    fn matmul_per_head_equals_the_batched_matmul() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f64, 1.0, (2, 3, 5, 4), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, (2, 3, 6, 4), &dev)
            .unwrap()
            .t()
            .unwrap();
        let per_head = matmul_per_head(&a, &b).unwrap();
        assert_eq!(per_head.dims(), &[2, 3, 5, 6]);
        assert!(max_abs_diff(&per_head, &a.matmul(&b).unwrap()) < 1e-14);
    }
}

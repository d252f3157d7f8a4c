//! The building blocks of every forward, on `[T, d]` activations (batch 1), written as a few large
//! tensor operations each so that candle's matmuls do the work.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::model::{Linear, Norm, NormKind, Rope, RopeScaling};

/// `x W^T + b`.
pub fn linear(x: &Tensor, l: &Linear) -> Result<Tensor> {
    let y = x.matmul(&l.weight_t()?)?;
    match &l.bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
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
        NormKind::Rms { eps } => {
            let inv = (mean_square(x)? + eps)?.sqrt()?.recip()?;
            x.broadcast_mul(&inv)?.broadcast_mul(&n.weight)
        }
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
    let hd = x.dim(D::Minus1)?;
    let half = hd / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Additive causal mask `[T, T]`: 0 where query `i` may see key `j` (`j <= i`, and `i - j < window`
/// when a sliding window is set), `-inf` elsewhere.
pub fn causal_mask(t: usize, window: Option<usize>, dtype: DType) -> Result<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            let visible = j <= i && window.is_none_or(|w| i - j < w);
            if !visible {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (t, t), &Device::Cpu)?.to_dtype(dtype)
}

/// `[B * T, heads * hd]` -> `[B, heads, T, hd]`.
pub fn split_heads(x: &Tensor, batch: usize, heads: usize, hd: usize) -> Result<Tensor> {
    let t = x.dim(0)? / batch;
    x.reshape((batch, t, heads, hd))?
        .transpose(1, 2)?
        .contiguous()
}

/// Causal multi-head attention with GQA: q `[B, H, T, hd]`, k and v `[B, Hkv, T, hd]` ->
/// `[B * T, H * hd]`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
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
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask)?;
    let p = softmax(&scores, 3)?;
    p.matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch * t, heads * hd))
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

/// A `[n]` tensor as f32.
pub fn vec_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.to_vec1()
}

//! The CPU reference's own kernels, as candle custom ops with their backward, where a chain of
//! candle ops or candle's threading cost more than the arithmetic (BENCHMARKS.md, session 7):
//! attention's masked softmax and the weight GEMMs split by columns over the threads.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};

/// `work` over `0..n` in ranges on candle's element-wise worker threads, results in order.
/// Not rayon's pool: its threads are the GEMMs', and two pools busy at once on the same cores
/// made every phase of a 16-thread trace slower (BENCHMARKS.md).
pub fn on_candle_threads<T: Send>(
    n: usize,
    work: impl Fn(std::ops::Range<usize>) -> Result<Vec<T>> + Sync,
) -> Result<Vec<T>> {
    let done = std::sync::Mutex::new(Vec::new());
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        let start = range.start;
        let result = work(range);
        if let Ok(mut done) = done.lock() {
            done.push((start, result));
        }
    });
    let mut done = done
        .into_inner()
        .map_err(|_| candle_core::Error::Msg("a worker thread panicked".into()))?;
    done.sort_by_key(|(start, _)| *start);
    let mut out = Vec::with_capacity(n);
    for (_, part) in done {
        out.extend(part?);
    }
    if out.len() != n {
        candle_core::bail!(
            "{} of {n} results came back from the worker threads",
            out.len()
        );
    }
    Ok(out)
}

/// See [`super::ops::causal_softmax`].
pub struct CausalSoftmax {
    pub scale: f64,
    pub window: Option<usize>,
}

/// The float types the reference runs in (f32; f64 for finite-difference checks).
trait Float: Copy + Send + Sync + PartialOrd + std::ops::Sub<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn mul(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;
    fn add(self, other: Self) -> Self;
    fn exp(self) -> Self;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn mul(self, other: Self) -> Self {
                self * other
            }
            fn div(self, other: Self) -> Self {
                self / other
            }
            fn add(self, other: Self) -> Self {
                self + other
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
        }
    };
}
float!(f32);
float!(f64);

impl CausalSoftmax {
    /// Rows of `x` (`t` wide; row `r` is query position `r % t`), softmaxed.
    fn rows<F: Float>(&self, x: &[F], t: usize) -> Result<Vec<F>> {
        let scale = F::from_f64(self.scale);
        let softmax_row = |r: usize| {
            let row = &x[r * t..(r + 1) * t];
            let mut out = vec![F::ZERO; t];
            let i = r % t;
            let first = self.window.map_or(0, |w| (i + 1).saturating_sub(w));
            let visible = first..=i;
            let mut max = row[i].mul(scale);
            for &v in &row[visible.clone()] {
                let v = v.mul(scale);
                if v > max {
                    max = v;
                }
            }
            let mut sum = F::ZERO;
            for j in visible.clone() {
                let e = (row[j].mul(scale) - max).exp();
                out[j] = e;
                sum = sum.add(e);
            }
            for o in &mut out[visible] {
                *o = o.div(sum);
            }
            out
        };
        let rows = on_candle_threads(x.len() / t, |range| Ok(range.map(softmax_row).collect()));
        Ok(rows?.concat())
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal_softmax: scores must be contiguous");
        };
        let t = layout.dims()[layout.dims().len() - 1];
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(self.rows(&x[start..end], t)?),
            CpuStorage::F64(x) => CpuStorage::F64(self.rows(&x[start..end], t)?),
            other => candle_core::bail!("causal_softmax: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    /// `d scores = scale * y (g - sum(g y))` row by row; masked entries have `y = 0`.
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let gy = (grad_res * res)?;
        let dot = gy.sum_keepdim(D::Minus1)?;
        Ok(Some(((gy - res.broadcast_mul(&dot)?)? * self.scale)?))
    }
}

/// `x · w` (`[m, k]` by `[k, n]`, any strides) for a fixed weight `w`: the columns of the output
/// split into one block per thread, each block one single-threaded `gemm` call. At T = 128 on
/// 16 threads the `gemm` crate's own threading ran the model's projections at 300-550 GFLOP/s,
/// far below what 16 cores give when each works on its own columns.
pub struct ColumnParallelMatmul;

/// A pointer the worker threads write disjoint column blocks through.
struct SharedOut<F>(*mut F);
// SAFETY: every thread writes only its own block of columns (see `ColumnParallelMatmul::run`).
unsafe impl<F> Send for SharedOut<F> {}
unsafe impl<F> Sync for SharedOut<F> {}

/// `(rows, cols, row stride, column stride, start)` of a 2-D layout.
fn matrix(layout: &Layout, what: &str) -> Result<(usize, usize, isize, isize, usize)> {
    let (&[rows, cols], &[rs, cs]) = (layout.dims(), layout.stride()) else {
        candle_core::bail!(
            "column-parallel matmul: {what} must be 2-D, not {:?}",
            layout.dims()
        );
    };
    Ok((rows, cols, rs as isize, cs as isize, layout.start_offset()))
}

impl ColumnParallelMatmul {
    fn run<F: Float + 'static>(
        x: &[F],
        lx: &Layout,
        w: &[F],
        lw: &Layout,
    ) -> Result<(Vec<F>, Shape)> {
        let (m, k, x_rs, x_cs, x_start) = matrix(lx, "x")?;
        let (k2, n, w_rs, w_cs, w_start) = matrix(lw, "w")?;
        if k != k2 {
            candle_core::bail!("column-parallel matmul: [{m}, {k}] by [{k2}, {n}]");
        }
        let mut out = vec![F::ZERO; m * n];
        let blocks = candle_core::utils::get_num_threads().clamp(1, n.div_ceil(16).max(1));
        // Multiples of 16 columns, the width of the AVX-512 microkernel's rows.
        let width = n.div_ceil(blocks).div_ceil(16) * 16;
        let dst = SharedOut(out.as_mut_ptr());
        let dst = &dst;
        on_candle_threads(n.div_ceil(width), |range| {
            let blocks_done = range.len();
            for b in range {
                let col = b * width;
                let cols = width.min(n - col);
                // SAFETY: x and w are read within their layouts (candle checked those against
                // their storage: x[i, j] at x_start + i x_rs + j x_cs, likewise w, for i, j
                // inside the dims); block b writes out[.., col..col + cols] only, so no two
                // threads write the same element, and `out` outlives the call.
                unsafe {
                    gemm::gemm(
                        m,
                        cols,
                        k,
                        dst.0.add(col),
                        1,
                        n as isize,
                        false,
                        x.as_ptr().add(x_start),
                        x_cs,
                        x_rs,
                        w.as_ptr().add(w_start).offset(col as isize * w_cs),
                        w_cs,
                        w_rs,
                        F::ZERO,
                        F::ONE,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            Ok(vec![(); blocks_done])
        })?;
        Ok((out, Shape::from((m, n))))
    }
}

impl CustomOp2 for ColumnParallelMatmul {
    fn name(&self) -> &'static str {
        "column-parallel-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                let (out, shape) = Self::run(x, lx, w, lw)?;
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                let (out, shape) = Self::run(x, lx, w, lw)?;
                Ok((CpuStorage::F64(out), shape))
            }
            (x, w) => candle_core::bail!(
                "column-parallel matmul: {:?} by {:?} (f32 or f64, both the same)",
                x.dtype(),
                w.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&w.t()?)?), Some(x.t()?.matmul(grad)?)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::ColumnParallelMatmul;

    /// Largest `|a - b|` of two f64 tensors.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn column_parallel_matmul_and_its_gradients_equal_candles_matmul_at_odd_sizes_and_strides() {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (13, 37), &dev).unwrap();
        let upstream = Tensor::randn(0f64, 1.0, (13, 101), &dev).unwrap();
        let row_major = Var::randn(0f64, 1.0, (37, 101), &dev).unwrap();
        // A weight stored [out, in] and read through its transpose (the LM head).
        let stored = Var::randn(0f64, 1.0, (101, 37), &dev).unwrap();
        for (w, leaf) in [
            (row_major.as_tensor().clone(), row_major.as_tensor()),
            (stored.t().unwrap(), stored.as_tensor()),
        ] {
            let ours = x.apply_op2(&w, ColumnParallelMatmul).unwrap();
            let candle = x.matmul(&w).unwrap();
            assert!(max_abs_diff(&ours, &candle) < 1e-12);
            let grads = |y: &Tensor| {
                let g = (y * &upstream)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (g.get(&x).unwrap().clone(), g.get(leaf).unwrap().clone())
            };
            let ((gx, gw), (cx, cw)) = (grads(&ours), grads(&candle));
            assert!(max_abs_diff(&gx, &cx) < 1e-12);
            assert!(max_abs_diff(&gw, &cw) < 1e-12);
        }
    }

    #[test]
    fn column_parallel_matmul_keeps_f32_and_rejects_mismatched_shapes_and_dtypes() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones((3, 5), candle_core::DType::F32, &dev).unwrap();
        let y = x.apply_op2(&w, ColumnParallelMatmul).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![3.0; 5]; 2]);
        let wrong = Tensor::ones((4, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(x.apply_op2(&wrong, ColumnParallelMatmul).is_err());
        let w64 = Tensor::ones((3, 5), candle_core::DType::F64, &dev).unwrap();
        assert!(x.apply_op2(&w64, ColumnParallelMatmul).is_err());
    }
}

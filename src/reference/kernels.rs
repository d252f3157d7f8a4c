//! The CPU reference's own kernels, as candle custom ops with their backward, where a chain of
//! candle ops or candle's threading cost more than the arithmetic (measured on 2026-11-23/24;
//! the history of BENCHMARKS.md): attention's masked softmax, GEMMs whose products or column blocks each run on one
//! thread, RoPE, RMSNorm and SwiGLU's activation. Two more have no backward: the Trace's source
//! dots, and the depth mix read in place (its callers keep a differentiable path).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};

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
trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
        }
    };
}
float!(f32);
float!(f64);

impl CausalSoftmax {
    /// Rows of `x` (`t` wide; row `r` is query position `r % t`), softmaxed.
    fn rows<F: Float>(&self, x: &[F], t: usize) -> Result<Vec<F>> {
        if t == 0 {
            return Ok(Vec::new());
        }
        let scale = F::from_f64(self.scale);
        // Each output row starts zeroed: masked entries stay 0.
        let softmax_row = |r: usize, out: &mut [F]| {
            let row = &x[r * t..(r + 1) * t];
            let i = r % t;
            let first = self.window.map_or(0, |w| (i + 1).saturating_sub(w));
            let visible = first..=i;
            let mut max = row[i] * scale;
            for &v in &row[visible.clone()] {
                if v * scale > max {
                    max = v * scale;
                }
            }
            let mut sum = F::ZERO;
            for j in visible.clone() {
                let e = (row[j] * scale - max).exp();
                out[j] = e;
                sum = sum + e;
            }
            for o in &mut out[visible] {
                *o = *o / sum;
            }
        };
        Ok(fill_rows(x.len() / t, t, softmax_row)?.0)
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

/// `a · b` for `[.., m, k]` by `[.., k, n]` (the same leading dims, any strides), each product
/// single-threaded `gemm` calls spread over the threads: a batch's products (attention heads)
/// one per thread, and each product's output columns split in blocks when there are fewer
/// products than threads (a weight GEMM: `[m, k]` by `[k, n]`). The `gemm` crate's own threading
/// splits every product over all threads: at 16 threads it ran the model's projections at
/// about 300-650 GFLOP/s and one attention head's product at a time (measured 2026-11-23; history of BENCHMARKS.md).
pub struct ParallelMatmul;

/// A pointer the worker threads write disjoint blocks of the output through.
struct SharedOut<F>(*mut F);
// SAFETY: every work item writes only its own block (see `ParallelMatmul::run`).
unsafe impl<F> Send for SharedOut<F> {}
unsafe impl<F> Sync for SharedOut<F> {}

/// A strided batch of matrices: `(batch dims, rows, cols, row stride, col stride)`.
struct Matrices<'a> {
    batch_dims: &'a [usize],
    batch_strides: &'a [usize],
    start: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> Matrices<'a> {
    fn of(layout: &'a Layout, what: &str) -> Result<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        if dims.len() < 2 {
            candle_core::bail!("parallel matmul: {what} must have 2 or more dims, not {dims:?}");
        }
        let r = dims.len() - 2;
        Ok(Self {
            batch_dims: &dims[..r],
            batch_strides: &strides[..r],
            start: layout.start_offset(),
            rows: dims[r],
            cols: dims[r + 1],
            rs: strides[r] as isize,
            cs: strides[r + 1] as isize,
        })
    }

    /// Offset of matrix `i` (row-major over the batch dims).
    fn offset(&self, mut i: usize) -> usize {
        let mut off = self.start;
        for (&d, &s) in self.batch_dims.iter().zip(self.batch_strides).rev() {
            off += (i % d) * s;
            i /= d;
        }
        off
    }
}

impl ParallelMatmul {
    fn run<F: Float + 'static>(
        a: &[F],
        la: &Layout,
        b: &[F],
        lb: &Layout,
    ) -> Result<(Vec<F>, Shape)> {
        let (ma, mb) = (Matrices::of(la, "a")?, Matrices::of(lb, "b")?);
        let (m, k, n) = (ma.rows, ma.cols, mb.cols);
        if ma.batch_dims != mb.batch_dims || mb.rows != k {
            candle_core::bail!("parallel matmul: {:?} by {:?}", la.dims(), lb.dims());
        }
        let batches: usize = ma.batch_dims.iter().product();
        let len = batches * m * n;
        let mut dims = ma.batch_dims.to_vec();
        dims.extend([m, n]);
        if len == 0 || k == 0 {
            return Ok((vec![F::ZERO; len], Shape::from(dims)));
        }
        // Not zeroed: every element is written below, and zeroing the LM head's output (103 MB
        // at T=512) first was a serial memset.
        let mut out: Vec<F> = Vec::with_capacity(len);
        let threads = candle_core::utils::get_num_threads().max(1);
        let blocks = threads.div_ceil(batches).clamp(1, n.div_ceil(16).max(1));
        // Multiples of 16 columns, the width of the AVX-512 microkernel's rows.
        let width = n.div_ceil(blocks).div_ceil(16) * 16;
        let blocks = n.div_ceil(width).max(1);
        let dst = SharedOut(out.as_mut_ptr());
        let dst = &dst;
        on_candle_threads(batches * blocks, |range| {
            let items = range.len();
            for item in range {
                let (batch, col) = (item / blocks, (item % blocks) * width);
                let cols = width.min(n - col);
                // SAFETY: a and b are read within their layouts (candle checked those against
                // their storage: element (i, j) of matrix t at offset(t) + i rs + j cs, for i, j
                // inside the dims); item (batch, col) writes out[batch][.., col..col + cols]
                // only, so no two items write the same element, and `out` outlives the call.
                unsafe {
                    gemm::gemm(
                        m,
                        cols,
                        k,
                        dst.0.add(batch * m * n + col),
                        1,
                        n as isize,
                        false,
                        a.as_ptr().add(ma.offset(batch)),
                        ma.cs,
                        ma.rs,
                        b.as_ptr()
                            .add(mb.offset(batch))
                            .offset(col as isize * mb.cs),
                        mb.cs,
                        mb.rs,
                        F::ZERO,
                        F::ONE,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            Ok(vec![(); items])
        })?;
        // SAFETY: with k > 0 the items' column blocks cover all n columns of every batch, gemm
        // without read_dst writes every element of its block, and on_candle_threads returned
        // only after every item ran.
        unsafe { out.set_len(len) };
        Ok((out, Shape::from(dims)))
    }
}

impl CustomOp2 for ParallelMatmul {
    fn name(&self) -> &'static str {
        "parallel-matmul"
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
                "parallel matmul: {:?} by {:?} (f32 or f64, both the same)",
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
        // Batched operands made contiguous: candle's matmul refuses some strided batches that
        // ours takes. (2-D ones it takes as they are; the LM head's is a view of 154 MB.)
        let fit = |t: &Tensor| {
            if t.rank() > 2 {
                t.contiguous()
            } else {
                Ok(t.clone())
            }
        };
        let (x, w, grad) = (fit(x)?, fit(w)?, fit(grad)?);
        Ok((Some(grad.matmul(&w.t()?)?), Some(x.t()?.matmul(&grad)?)))
    }
}

/// Per token of stacked depth sources `v` `[T, n, d]` and their mix `h` `[T, d]`:
/// `[<v_1, h>, .., <v_n, h>, <h, h>]` `[T, n + 1]`, the Trace's share statistics, in one pass
/// over the sources instead of a `[T, n, d]` product and a sum. Each dot accumulates in f64:
/// shares cancel, and the GPU parity tests hold the GPU to these sums, so the reference's own
/// rounding should not count against it. Statistics only, so no backward.
pub struct SourceDots;

impl SourceDots {
    fn run<F: Float>(v: &[F], h: &[F], t: usize, n: usize, d: usize) -> Result<Vec<F>> {
        let (out, _) = fill_rows(t, n + 1, |token, out| {
            let hr = &h[token * d..(token + 1) * d];
            for (i, o) in out[..n].iter_mut().enumerate() {
                let vr = &v[(token * n + i) * d..(token * n + i + 1) * d];
                *o = F::from_f64(dot_f64(vr, hr));
            }
            out[n] = F::from_f64(dot_f64(hr, hr));
        })?;
        Ok(out)
    }
}

impl CustomOp2 for SourceDots {
    fn name(&self) -> &'static str {
        "source-dots"
    }

    fn cpu_fwd(
        &self,
        v: &CpuStorage,
        lv: &Layout,
        h: &CpuStorage,
        lh: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some((v0, v1)), Some((h0, h1))) = (lv.contiguous_offsets(), lh.contiguous_offsets())
        else {
            candle_core::bail!("source dots: sources and mix must be contiguous");
        };
        let (&[t, n, d], &[th, dh]) = (lv.dims(), lh.dims()) else {
            candle_core::bail!(
                "source dots: {:?} and {:?}, not [T, n, d] and [T, d]",
                lv.dims(),
                lh.dims()
            );
        };
        if (th, dh) != (t, d) {
            candle_core::bail!("source dots: sources [{t}, {n}, {d}] but mix [{th}, {dh}]");
        }
        let out = match (v, h) {
            (CpuStorage::F32(v), CpuStorage::F32(h)) => {
                CpuStorage::F32(Self::run(&v[v0..v1], &h[h0..h1], t, n, d)?)
            }
            (CpuStorage::F64(v), CpuStorage::F64(h)) => {
                CpuStorage::F64(Self::run(&v[v0..v1], &h[h0..h1], t, n, d)?)
            }
            (v, h) => candle_core::bail!(
                "source dots: {:?} and {:?} (f32 or f64, both the same)",
                v.dtype(),
                h.dtype()
            ),
        };
        Ok((out, Shape::from((t, n + 1))))
    }
}

/// Rows `0..rows` of `width` values, each written by `row(i, out_row)`, spread over candle's
/// worker threads, with what each call returned (in row order): the element-wise kernels and the
/// depth mix make one pass over their rows this way.
fn fill_rows<F: Float, R: Send>(
    rows: usize,
    width: usize,
    row: impl Fn(usize, &mut [F]) -> R + Sync,
) -> Result<(Vec<F>, Vec<R>)> {
    // Zeroed row by row on the workers, not all at once here: a `vec![0; n]` of the MLP's
    // width was a serial memset that made this op slower than candle's two at 16 threads.
    let len = rows * width;
    let mut out: Vec<F> = Vec::with_capacity(len);
    let dst = SharedOut(out.as_mut_ptr());
    let dst = &dst;
    let results = on_candle_threads(rows, |range| {
        Ok(range
            .map(|i| {
                // SAFETY: each row index goes to exactly one worker, so the rows are disjoint
                // and inside the `len` values allocated; all-zero bytes are 0.0 for f32 and f64
                // (the only `Float`s), so the row is initialised before it is borrowed.
                let out_row = unsafe {
                    let start = dst.0.add(i * width);
                    std::ptr::write_bytes(start, 0, width);
                    std::slice::from_raw_parts_mut(start, width)
                };
                row(i, out_row)
            })
            .collect())
    })?;
    // SAFETY: on_candle_threads returned only after every row 0..rows was initialised above.
    unsafe { out.set_len(len) };
    Ok((out, results))
}

/// `$run` on the slices of two contiguous operands of one float type (f32 or f64), its result
/// wrapped as storage of that type; an error naming `$what` otherwise.
macro_rules! on_two_floats {
    ($what:expr, ($a:expr, $la:expr), ($b:expr, $lb:expr), |$x:ident, $y:ident| $run:expr) => {
        match ($a, $b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($x, $y) = (contiguous(a, $la, $what)?, contiguous(b, $lb, $what)?);
                CpuStorage::F32($run)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($x, $y) = (contiguous(a, $la, $what)?, contiguous(b, $lb, $what)?);
                CpuStorage::F64($run)
            }
            (a, b) => candle_core::bail!(
                "{}: {:?} and {:?} (f32 or f64, both alike)",
                $what,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

/// The slice of a contiguous operand, or an error naming `what`.
fn contiguous<'a, F>(data: &'a [F], layout: &Layout, what: &str) -> Result<&'a [F]> {
    match layout.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("{what}: operands must be contiguous"),
    }
}

/// Rotate-half RoPE on `x` `[.., T, hd]` with tables `[T, hd]` (each half repeated, as
/// [`super::ops::rope_tables`] makes them): `x cos + rotate_half(x) sin` in one pass, in place of
/// five candle ops (two narrows, a negation, a concatenation, two products and a sum).
pub struct RotateHalf;

impl RotateHalf {
    fn run<F: Float>(
        (x, lx): (&[F], &Layout),
        cos: &[F],
        sin: &[F],
        (lc, ls, t, hd): (&Layout, &Layout, usize, usize),
    ) -> Result<Vec<F>> {
        let x = contiguous(x, lx, "rope")?;
        let (cos, sin) = (contiguous(cos, lc, "rope")?, contiguous(sin, ls, "rope")?);
        let half = hd / 2;
        let (out, _) = fill_rows(x.len() / hd.max(1), hd, |r, out| {
            let xr = &x[r * hd..(r + 1) * hd];
            let pos = (r % t) * hd;
            let (c, s) = (&cos[pos..pos + hd], &sin[pos..pos + hd]);
            for j in 0..half {
                out[j] = xr[j] * c[j] - xr[j + half] * s[j];
                out[j + half] = xr[j + half] * c[j + half] + xr[j] * s[j + half];
            }
        })?;
        Ok(out)
    }
}

impl CustomOp3 for RotateHalf {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        cos: &CpuStorage,
        lc: &Layout,
        sin: &CpuStorage,
        ls: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = lx.dims();
        let (&[t, hd], true) = (lc.dims(), dims.len() >= 2) else {
            candle_core::bail!("rope: x {dims:?} and tables {:?}", lc.dims());
        };
        if ls.dims() != [t, hd] || dims[dims.len() - 2..] != [t, hd] || hd % 2 != 0 {
            candle_core::bail!(
                "rope: x {dims:?}, tables {:?} and {:?}",
                lc.dims(),
                ls.dims()
            );
        }
        let tables = (lc, ls, t, hd);
        let out = match (x, cos, sin) {
            (CpuStorage::F32(x), CpuStorage::F32(c), CpuStorage::F32(s)) => {
                CpuStorage::F32(Self::run((x, lx), c, s, tables)?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(c), CpuStorage::F64(s)) => {
                CpuStorage::F64(Self::run((x, lx), c, s, tables)?)
            }
            (x, ..) => candle_core::bail!("rope: {:?} (f32 or f64, tables alike)", x.dtype()),
        };
        Ok((out, lx.shape().clone()))
    }

    /// The rotation is linear and its halves' tables are equal, so its transpose is the same
    /// rotation with `-sin`. The tables are constants.
    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op3(cos, &sin.neg()?, RotateHalf)?;
        Ok((Some(dx), None, None))
    }
}

/// RMSNorm of the rows of `x` `[.., d]` with gain `w` `[d]`: `x w / sqrt(mean(x^2) + eps)` in
/// one pass per row, in place of five candle ops.
pub struct RmsNorm {
    pub eps: f64,
}

impl RmsNorm {
    fn run<F: Float>(&self, x: &[F], w: &[F]) -> Result<Vec<F>> {
        let d = w.len();
        let eps = self.eps;
        let (out, _) = fill_rows(x.len() / d.max(1), d, |r, out| {
            let xr = &x[r * d..(r + 1) * d];
            // The mean square in the input precision, as candle's ops and the GPU sum it: with
            // an f64 sum here, the wide GPU parity test's logits differed by 1.2e-5 normwise,
            // past its 1e-5 bar.
            let mean_square = dot(xr, xr) / F::from_f64(d as f64);
            let inv = F::ONE / (mean_square + F::from_f64(eps)).sqrt();
            for ((o, &v), &g) in out.iter_mut().zip(xr).zip(w) {
                *o = v * inv * g;
            }
        })?;
        Ok(out)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = lw.dims().iter().product::<usize>();
        if lx.dims().last() != Some(&d) || lw.dims().len() != 1 {
            candle_core::bail!("rms norm: rows {:?} and gain {:?}", lx.dims(), lw.dims());
        }
        let out = on_two_floats!("rms norm", (x, lx), (w, lw), |x, w| self.run(x, w)?);
        Ok((out, lx.shape().clone()))
    }

    /// With `r = 1 / sqrt(mean(x^2) + eps)` per row and `u = g w`:
    /// `dx = r u - x r^3 mean(u x)`, `dw = sum over rows of g x r`.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let u = grad.broadcast_mul(w)?;
        let mean_ux = (&u * x)?.mean_keepdim(D::Minus1)?;
        let dx = (u.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * mean_ux)?)?)?;
        let normed = x.broadcast_mul(&r)?;
        let rows = normed.elem_count() / w.elem_count().max(1);
        let dw = (grad * normed)?
            .reshape((rows, w.elem_count()))?
            .sum(0)?
            .reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// SwiGLU's `silu(g) u` for `g`, `u` of one shape, one pass in place of two candle ops.
pub struct SiluMul;

impl SiluMul {
    fn run<F: Float>(g: &[F], u: &[F], width: usize) -> Result<Vec<F>> {
        let (out, _) = fill_rows(g.len() / width.max(1), width, |r, out| {
            let span = r * width..(r + 1) * width;
            for ((o, &a), &b) in out.iter_mut().zip(&g[span.clone()]).zip(&u[span]) {
                *o = a / (F::ONE + (F::ZERO - a).exp()) * b;
            }
        })?;
        Ok(out)
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        lg: &Layout,
        u: &CpuStorage,
        lu: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if lg.dims() != lu.dims() {
            candle_core::bail!("silu mul: {:?} and {:?}", lg.dims(), lu.dims());
        }
        let width = lg.dims().last().copied().unwrap_or(1);
        let out = on_two_floats!("silu mul", (g, lg), (u, lu), |g, u| Self::run(g, u, width)?);
        Ok((out, lg.shape().clone()))
    }

    /// `s = sigmoid(g)`: `dg = grad u s (1 + g (1 - s))`, `du = grad g s`.
    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = (g.neg()?.exp()? + 1.0)?.recip()?;
        let silu = (g * &s)?;
        let slope = (&s * ((g * (1.0 - &s)?)? + 1.0)?)?;
        let dg = ((grad * u)? * slope)?;
        let du = (grad * silu)?;
        Ok((Some(dg), Some(du)))
    }
}

/// `<a, b>` summed in `A`, in eight interleaved sums: one running sum is a chain of dependent
/// adds, eight let the CPU overlap them.
fn dot_in<F: Float, A: Float>(a: &[F], b: &[F]) -> A {
    let widen = |x: F| A::from_f64(x.to_f64());
    let mut lanes = [A::ZERO; 8];
    let whole = a.len().min(b.len()) / 8 * 8;
    for (x, y) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] = lanes[l] + widen(x[l]) * widen(y[l]);
        }
    }
    let mut sum = A::ZERO;
    for (&x, &y) in a[whole..].iter().zip(&b[whole..]) {
        sum = sum + widen(x) * widen(y);
    }
    lanes.iter().fold(sum, |acc, &l| acc + l)
}

/// `<a, b>` in f64: the Trace's statistics, where f64 makes the order immaterial at f32 inputs.
fn dot_f64<F: Float>(a: &[F], b: &[F]) -> f64 {
    dot_in(a, b)
}

/// `<a, b>` in the input precision, as candle's matmul and the GPU sum the depth scores and the
/// RMSNorm mean square.
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    dot_in(a, b)
}

/// ATTNRES.md's scores for [`depth_mix_in_place`]: `(w * g) . v_i / sqrt(ms_i + eps)`.
pub struct DepthScores<'a> {
    /// The pseudo-query with the key norm's gain folded in, `[d]`.
    pub folded_query: &'a Tensor,
    /// Each source's key mean square, `[T, n]`.
    pub mean_squares: &'a Tensor,
    pub eps: f64,
}

/// What [`depth_mix_in_place`] makes.
pub struct DepthMixOut {
    /// `h = sum_i alpha_i v_i`, `[T, d]`.
    pub hidden: Tensor,
    /// `[T, n]`: the softmax over the scores, or ones for the residual sum.
    pub alpha: Tensor,
    /// With statistics: `[<v_1, h>, .., <v_n, h>, <h, h>]` per token, `[T, n + 1]`, in f64 sums
    /// like [`SourceDots`].
    pub source_dots: Option<Tensor>,
    /// With statistics and no scores (the residual sum): each source's mean square, `[T, n]`.
    pub mean_squares: Option<Tensor>,
}

/// The depth mix of `sources` (each `[T, d]`), read where they lie: scored and softmaxed over
/// sources with `scores`, summed with weight 1 without. With `stats`, each source's dot with the
/// mix (and the residual sum's mean squares) in the same pass, while a token's sources are in
/// cache. Stacking the sources into `[T, n, d]` for candle's ops was most of the CPU mix's time
/// (measured 2026-11-24; history of BENCHMARKS.md). No autograd: [`super::depth`] keeps the stacked path for sources
/// that track gradients.
pub fn depth_mix_in_place(
    sources: &[&Tensor],
    scores: Option<DepthScores>,
    stats: bool,
) -> Result<DepthMixOut> {
    let Some(first) = sources.first() else {
        candle_core::bail!("depth mix: no sources");
    };
    let (t, d) = first.dims2()?;
    let n = sources.len();
    let dtype = first.dtype();
    let mut operands = Vec::with_capacity(n + 2);
    for (i, s) in sources.iter().enumerate() {
        if s.dims() != [t, d] || s.dtype() != dtype {
            candle_core::bail!(
                "depth mix: source {i} is {:?} {:?}, source 0 [{t}, {d}] {dtype:?}",
                s.dims(),
                s.dtype()
            );
        }
        operands.push(s.contiguous()?);
    }
    let eps = match &scores {
        Some(sc) => {
            if sc.folded_query.dims() != [d] || sc.mean_squares.dims() != [t, n] {
                candle_core::bail!(
                    "depth mix: query {:?} and key mean squares {:?} for {n} sources of [{t}, {d}]",
                    sc.folded_query.dims(),
                    sc.mean_squares.dims()
                );
            }
            operands.push(sc.folded_query.to_dtype(dtype)?.contiguous()?);
            operands.push(sc.mean_squares.to_dtype(dtype)?.contiguous()?);
            Some(sc.eps)
        }
        None => None,
    };
    match dtype {
        candle_core::DType::F32 => mix_sources::<f32>(&operands, n, (t, d), eps, stats),
        candle_core::DType::F64 => mix_sources::<f64>(&operands, n, (t, d), eps, stats),
        other => candle_core::bail!("depth mix: {other:?} sources (the reference runs f32 or f64)"),
    }
}

/// [`depth_mix_in_place`] on `operands`: the `n` sources, then with `eps` the folded query and
/// the key mean squares, all contiguous and of type `F`.
fn mix_sources<F: Float + candle_core::WithDType>(
    operands: &[Tensor],
    n: usize,
    (t, d): (usize, usize),
    eps: Option<f64>,
    stats: bool,
) -> Result<DepthMixOut> {
    let guards: Vec<_> = operands.iter().map(|x| x.storage_and_layout()).collect();
    let mut slices: Vec<&[F]> = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let (candle_core::Storage::Cpu(cpu), Some((from, to))) =
            (&**storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("depth mix: the CPU reference's operands must be on the CPU");
        };
        slices.push(&cpu.as_slice::<F>()?[from..to]);
    }
    let (sources, rest) = slices.split_at(n);
    let scores = eps.map(|eps| (rest[0], rest[1], <F as Float>::from_f64(eps)));
    let (hidden, tokens) = fill_rows(t, d, |token, hidden| {
        mix_token(sources, scores, token, hidden, stats)
    })?;
    let mut out = TokenWeights {
        alpha: Vec::with_capacity(t * n),
        source_dots: Vec::new(),
        mean_squares: Vec::new(),
    };
    for token in tokens {
        out.alpha.extend(token.alpha);
        out.source_dots.extend(token.source_dots);
        out.mean_squares.extend(token.mean_squares);
    }
    let device = candle_core::Device::Cpu;
    let table = |v: Vec<F>, cols: usize| Tensor::from_vec(v, (t, cols), &device);
    Ok(DepthMixOut {
        hidden: table(hidden, d)?,
        alpha: table(out.alpha, n)?,
        source_dots: if stats {
            Some(table(out.source_dots, n + 1)?)
        } else {
            None
        },
        mean_squares: if stats && eps.is_none() {
            Some(table(out.mean_squares, n)?)
        } else {
            None
        },
    })
}

/// One token's weights and statistics from [`mix_token`] (the statistics empty when not asked
/// for); its mix is written in place.
struct TokenWeights<F> {
    alpha: Vec<F>,
    source_dots: Vec<F>,
    mean_squares: Vec<F>,
}

/// Token `token`'s mix into `hidden` (zeroed, `d` long), returning its weights.
fn mix_token<F: Float>(
    sources: &[&[F]],
    scores: Option<(&[F], &[F], F)>,
    token: usize,
    hidden: &mut [F],
    stats: bool,
) -> TokenWeights<F> {
    let (n, d) = (sources.len(), hidden.len());
    let row = |i: usize| &sources[i][token * d..(token + 1) * d];
    let mut alpha = vec![F::ONE; n];
    if let Some((query, mean_squares, eps)) = scores {
        let ms = &mean_squares[token * n..(token + 1) * n];
        for (i, a) in alpha.iter_mut().enumerate() {
            *a = dot(row(i), query) / (ms[i] + eps).sqrt();
        }
        let max = alpha
            .iter()
            .fold(alpha[0], |m, &x| if x > m { x } else { m });
        let mut sum = F::ZERO;
        for a in &mut alpha {
            *a = (*a - max).exp();
            sum = sum + *a;
        }
        for a in &mut alpha {
            *a = *a / sum;
        }
    }
    for (i, &a) in alpha.iter().enumerate() {
        for (h, &v) in hidden.iter_mut().zip(row(i)) {
            *h = *h + a * v;
        }
    }
    let (mut source_dots, mut mean_squares) = (Vec::new(), Vec::new());
    if stats {
        source_dots = (0..n)
            .map(|i| F::from_f64(dot_f64(row(i), hidden)))
            .collect();
        source_dots.push(F::from_f64(dot_f64(hidden, hidden)));
        if scores.is_none() {
            mean_squares = (0..n)
                .map(|i| F::from_f64(dot_f64(row(i), row(i)) / d as f64))
                .collect();
        }
    }
    TokenWeights {
        alpha,
        source_dots,
        mean_squares,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{
        depth_mix_in_place, DepthMixOut, DepthScores, ParallelMatmul, RmsNorm, RotateHalf, SiluMul,
        SourceDots,
    };

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

    /// `sum(y * upstream)` has the same gradient at every leaf for `ours` and `candle`.
    fn assert_same_gradients(
        ours: &Tensor,
        candle: &Tensor,
        upstream: &Tensor,
        leaves: &[&Tensor],
    ) {
        let grads = |y: &Tensor| {
            (y * upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (g_ours, g_candle) = (grads(ours), grads(candle));
        for leaf in leaves {
            let (a, b) = (g_ours.get(leaf).unwrap(), g_candle.get(leaf).unwrap());
            assert!(max_abs_diff(a, b) < 1e-12);
        }
    }

    #[test]
    fn parallel_matmul_and_its_gradients_equal_candles_matmul_at_odd_sizes_and_strides() {
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
            let ours = x.apply_op2(&w, ParallelMatmul).unwrap();
            let candle = x.matmul(&w).unwrap();
            assert!(max_abs_diff(&ours, &candle) < 1e-12);
            assert_same_gradients(&ours, &candle, &upstream, &[&x, leaf]);
        }
    }

    #[test]
    fn parallel_matmul_of_strided_heads_equals_candles_batched_matmul_with_gradients() {
        let dev = Device::Cpu;
        let q = Var::randn(0f64, 1.0, (2, 3, 7, 5), &dev).unwrap();
        let k = Var::randn(0f64, 1.0, (2, 3, 9, 5), &dev).unwrap();
        // Kᵀ as a view, as attention reads it; its product is [2, 3, 7, 9].
        let kt = k.t().unwrap();
        let upstream = Tensor::randn(0f64, 1.0, (2, 3, 7, 9), &dev).unwrap();
        let ours = q.apply_op2(&kt, ParallelMatmul).unwrap();
        let candle = q.matmul(&kt).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 7, 9]);
        assert!(max_abs_diff(&ours, &candle) < 1e-12);
        assert_same_gradients(&ours, &candle, &upstream, &[&q, &k]);
        // One head of a narrowed batch: offsets inside the storage.
        let narrowed = q.narrow(1, 1, 2).unwrap();
        let kt2 = kt.narrow(1, 0, 2).unwrap();
        let ours = narrowed.apply_op2(&kt2, ParallelMatmul).unwrap();
        // (candle's matmul refuses this striding: compare with contiguous copies)
        let expected = narrowed
            .contiguous()
            .unwrap()
            .matmul(&kt2.contiguous().unwrap())
            .unwrap();
        assert!(max_abs_diff(&ours, &expected) < 1e-12);
        let g = ours.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&q).is_some(), "the backward takes any striding too");
        let mismatched = k.narrow(1, 0, 2).unwrap().t().unwrap();
        assert!(q.apply_op2(&mismatched, ParallelMatmul).is_err());
    }

    #[test]
    fn empty_products_and_scores_give_empty_results_not_panics() {
        let dev = Device::Cpu;
        let f32_zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &dev).unwrap();
        for (a, b, out) in [
            (vec![0, 4], vec![4, 5], vec![0, 5]),
            (vec![3, 4], vec![4, 0], vec![3, 0]),
            (vec![3, 0], vec![0, 5], vec![3, 5]),
            (vec![0, 2, 3, 4], vec![0, 2, 4, 5], vec![0, 2, 3, 5]),
        ] {
            let y = f32_zeros(&a)
                .apply_op2(&f32_zeros(&b), ParallelMatmul)
                .unwrap();
            assert_eq!(y.dims(), out.as_slice());
            assert!(y
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v == 0.0));
        }
        let scores = f32_zeros(&[1, 2, 0, 0]);
        let p = super::super::ops::causal_softmax(&scores, 1.0, None).unwrap();
        assert_eq!(p.dims(), &[1, 2, 0, 0]);
        let no_tokens = f32_zeros(&[0, 6]);
        let mixed = depth_mix_in_place(&[&no_tokens, &no_tokens], None, true).unwrap();
        assert_eq!(mixed.hidden.dims(), &[0, 6]);
        assert_eq!(mixed.source_dots.unwrap().dims(), &[0, 3]);
    }

    #[test]
    fn rotate_half_rope_and_its_gradient_equal_candles_narrow_cat_form() {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (2, 3, 5, 6), &dev).unwrap();
        let angles = Tensor::randn(0f64, 2.0, (5, 3), &dev).unwrap();
        let repeat = |t: Tensor| Tensor::cat(&[&t, &t], 1).unwrap();
        let (cos, sin) = (repeat(angles.cos().unwrap()), repeat(angles.sin().unwrap()));
        let ours = x.apply_op3(&cos, &sin, RotateHalf).unwrap();
        let (x1, x2) = (x.narrow(3, 0, 3).unwrap(), x.narrow(3, 3, 3).unwrap());
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], 3).unwrap();
        let candle =
            (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap();
        assert!(max_abs_diff(&ours, &candle) < 1e-12);
        let upstream = Tensor::randn(0f64, 1.0, (2, 3, 5, 6), &dev).unwrap();
        assert_same_gradients(&ours, &candle, &upstream, &[&x]);
        let odd = Tensor::zeros((5, 5), DType::F64, &dev).unwrap();
        assert!(x.apply_op3(&odd, &odd, RotateHalf).is_err());
    }

    #[test]
    fn rms_norm_and_its_gradients_equal_candles_ops() {
        let dev = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (7, 13), &dev).unwrap();
        let w = Var::randn(1f64, 0.2, 13, &dev).unwrap();
        let eps = 1e-5;
        let ours = x.apply_op2(&w, RmsNorm { eps }).unwrap();
        let inv = (x.sqr().unwrap().mean_keepdim(1).unwrap() + eps)
            .unwrap()
            .sqrt()
            .unwrap()
            .recip()
            .unwrap();
        let candle = x.broadcast_mul(&inv).unwrap().broadcast_mul(&w).unwrap();
        assert!(max_abs_diff(&ours, &candle) < 1e-12);
        let upstream = Tensor::randn(0f64, 1.0, (7, 13), &dev).unwrap();
        assert_same_gradients(&ours, &candle, &upstream, &[&x, &w]);
        let short_gain = Tensor::ones(12, DType::F64, &dev).unwrap();
        assert!(x.apply_op2(&short_gain, RmsNorm { eps }).is_err());
    }

    #[test]
    fn silu_mul_and_its_gradients_equal_candles_silu_times_up() {
        let dev = Device::Cpu;
        let g = Var::randn(0f64, 3.0, (5, 11), &dev).unwrap();
        let u = Var::randn(0f64, 1.0, (5, 11), &dev).unwrap();
        let ours = g.apply_op2(&u, SiluMul).unwrap();
        let candle = (g.silu().unwrap() * u.as_tensor()).unwrap();
        assert!(max_abs_diff(&ours, &candle) < 1e-12);
        let upstream = Tensor::randn(0f64, 1.0, (5, 11), &dev).unwrap();
        assert_same_gradients(&ours, &candle, &upstream, &[&g, &u]);
        let other = Tensor::zeros((11, 5), DType::F64, &dev).unwrap();
        assert!(g.apply_op2(&other, SiluMul).is_err());
    }

    #[test]
    fn depth_mix_in_place_names_what_does_not_fit() {
        let dev = Device::Cpu;
        let zeros = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &dev).unwrap();
        let a = zeros(&[3, 4], DType::F32);
        let message = |r: candle_core::Result<DepthMixOut>| match r {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(message(depth_mix_in_place(&[], None, false)).contains("no sources"));
        let wider = zeros(&[3, 5], DType::F32);
        assert!(message(depth_mix_in_place(&[&a, &wider], None, false)).contains("source 1"));
        let f64_source = zeros(&[3, 4], DType::F64);
        assert!(message(depth_mix_in_place(&[&a, &f64_source], None, false)).contains("F64"));
        let half = zeros(&[3, 4], DType::F16);
        assert!(message(depth_mix_in_place(&[&half], None, false)).contains("F16"));
        let query = zeros(&[4], DType::F32);
        let wrong_ms = zeros(&[3, 1], DType::F32);
        let scores = DepthScores {
            folded_query: &query,
            mean_squares: &wrong_ms,
            eps: 1e-6,
        };
        assert!(message(depth_mix_in_place(&[&a, &a], Some(scores), false))
            .contains("key mean squares"));
    }

    #[test]
    fn source_dots_equal_candles_products_and_sums_and_check_their_shapes() {
        let dev = Device::Cpu;
        let v = Tensor::randn(0f64, 1.0, (5, 3, 37), &dev).unwrap();
        let h = Tensor::randn(0f64, 1.0, (5, 37), &dev).unwrap();
        let ours = v.apply_op2_no_bwd(&h, &SourceDots).unwrap();
        let dots = v
            .broadcast_mul(&h.unsqueeze(1).unwrap())
            .unwrap()
            .sum(2)
            .unwrap();
        let hh = h.sqr().unwrap().sum_keepdim(1).unwrap();
        let candle = Tensor::cat(&[dots, hh], 1).unwrap();
        assert!(max_abs_diff(&ours, &candle) < 1e-12);
        // f32 inputs: the same sums, rounded once at the end.
        let (v32, h32) = (
            v.to_dtype(DType::F32).unwrap(),
            h.to_dtype(DType::F32).unwrap(),
        );
        let ours32 = v32.apply_op2_no_bwd(&h32, &SourceDots).unwrap();
        let exact = v32
            .to_dtype(DType::F64)
            .unwrap()
            .apply_op2_no_bwd(&h32.to_dtype(DType::F64).unwrap(), &SourceDots)
            .unwrap();
        let rounded_once = exact
            .to_dtype(DType::F32)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert_eq!(
            max_abs_diff(&ours32.to_dtype(DType::F64).unwrap(), &rounded_once),
            0.0
        );
        let wrong_mix = Tensor::zeros((4, 37), DType::F64, &dev).unwrap();
        assert!(v.apply_op2_no_bwd(&wrong_mix, &SourceDots).is_err());
        assert!(h.apply_op2_no_bwd(&h, &SourceDots).is_err());
    }

    #[test]
    fn parallel_matmul_keeps_f32_and_rejects_mismatched_shapes_and_dtypes() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        let w = Tensor::ones((3, 5), DType::F32, &dev).unwrap();
        let y = x.apply_op2(&w, ParallelMatmul).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![3.0; 5]; 2]);
        let wrong = Tensor::ones((4, 5), DType::F32, &dev).unwrap();
        assert!(x.apply_op2(&wrong, ParallelMatmul).is_err());
        let w64 = Tensor::ones((3, 5), DType::F64, &dev).unwrap();
        assert!(x.apply_op2(&w64, ParallelMatmul).is_err());
    }
}

//! GEMM dispatch (kernel choice, split-K) for the forward, and the GEMM on its own: `C = A B^T`
//! for host matrices (kernel parity tests) and timed (the `bench --matmul` table).

use wgpu::util::DeviceExt;

use super::kernels::{
    choose_gemm, GemmChoice, GemmPolicy, KernelId, Kernels, NtTile, SPLIT_PARTIAL_FLOATS,
};
use super::plan::Plan;
use super::{Engine, Error};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// `C = alpha * A op(B) (+ bias) (+ C)`, in matmul.wgsl's strided layout (element offsets).
#[derive(Clone, Copy, Default, Debug)]
pub struct Gemm {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub b_group: u32,
    pub a_off: u32,
    pub a_bstride: u32,
    pub a_rs: u32,
    pub b_off: u32,
    pub b_bstride: u32,
    pub b_sk: u32,
    pub b_sn: u32,
    pub c_off: u32,
    pub c_bstride: u32,
    pub c_rs: u32,
    pub accumulate: bool,
    pub alpha: f32,
    /// Causal attention hint for `gemm_nt`: 1 = Q Kᵀ (skip tiles above the diagonal), 2 = P V (k
    /// stops at each tile's last row). Other kernels ignore it and compute everything.
    pub causal: u32,
}

impl Gemm {
    /// `[M, K] x [N, K]^T` into a dense `[M, N]`, weights-style (B rows are k-contiguous).
    pub fn nt(m: u32, n: u32, k: u32) -> Self {
        Self {
            m,
            n,
            k,
            batch: 1,
            a_rs: k,
            b_sk: 1,
            b_sn: k,
            c_rs: n,
            alpha: 1.0,
            ..Default::default()
        }
    }

    /// Both operands k-contiguous and every vec4 they are read as 16-byte aligned.
    pub fn nt_aligned(&self) -> bool {
        self.b_sk == 1
            && [
                self.k,
                self.a_off,
                self.a_bstride,
                self.a_rs,
                self.b_off,
                self.b_bstride,
                self.b_sn,
            ]
            .iter()
            .all(|v| v.is_multiple_of(4))
    }

    pub fn choice(&self, policy: &GemmPolicy) -> GemmChoice {
        choose_gemm(
            policy,
            (self.m, self.n, self.k),
            self.batch.max(1),
            self.nt_aligned(),
        )
    }

    fn params(&self, has_bias: bool, choice: &GemmChoice) -> [u32; 24] {
        [
            self.m,
            self.n,
            self.k,
            self.b_group.max(1),
            self.a_off,
            self.a_bstride,
            self.a_rs,
            u32::from(has_bias),
            self.b_off,
            self.b_bstride,
            self.b_sk,
            self.b_sn,
            self.c_off,
            self.c_bstride,
            self.c_rs,
            u32::from(self.accumulate),
            0,
            self.alpha.to_bits(),
            choice.splits,
            choice.k_chunk,
            self.batch.max(1) * self.m * self.n,
            self.batch.max(1),
            self.causal,
            0,
        ]
    }
}

/// Queue `g` with its chosen kernel: one dispatch, or with split-K the partial products into
/// `partials` (at least [`SPLIT_PARTIAL_FLOATS`] floats) and their reduction into `c`.
pub(crate) fn push_gemm(
    plan: &mut Plan,
    g: &Gemm,
    choice: GemmChoice,
    [a, b, bias, c, partials]: [&wgpu::Buffer; 5],
    has_bias: bool,
) {
    let params = g.params(has_bias, &choice);
    let batch = g.batch.max(1);
    let groups = [
        g.n.div_ceil(choice.tile.1),
        g.m.div_ceil(choice.tile.0),
        batch * choice.splits,
    ];
    let nt = matches!(
        choice.kernel,
        KernelId::MatmulNtXLarge
            | KernelId::MatmulNtLarge
            | KernelId::MatmulNtMid
            | KernelId::MatmulNtSmall
    );
    if choice.splits <= 1 {
        if nt {
            plan.push(choice.kernel, &params, &[a, b, bias, c, a, b], groups);
        } else {
            plan.push(choice.kernel, &params, &[a, b, bias, c], groups);
        }
        return;
    }
    debug_assert!(u64::from(choice.splits) * u64::from(batch * g.m * g.n) <= SPLIT_PARTIAL_FLOATS);
    plan.push(
        choice.kernel,
        &params,
        &[a, b, bias, partials, a, b],
        groups,
    );
    plan.push(
        KernelId::SplitKReduce,
        &params,
        &[partials, b, bias, c],
        super::plan::elementwise_groups(batch * g.m * g.n),
    );
}

/// Queue `g` (batch 1) writing to `c`, or with split-K only its partial products into `partials`
/// (at element 0, split `s` at `s * m * n`) and not their reduction: the caller's next kernel
/// sums them. Returns the number of splits (1: `c` holds the result, bias included).
pub(crate) fn push_gemm_unreduced(
    plan: &mut Plan,
    g: &Gemm,
    choice: GemmChoice,
    [a, b, bias, c, partials]: [&wgpu::Buffer; 5],
    has_bias: bool,
) -> u32 {
    if choice.splits <= 1 {
        push_gemm(plan, g, choice, [a, b, bias, c, partials], has_bias);
        return 1;
    }
    debug_assert!(g.batch <= 1);
    let params = g.params(has_bias, &choice);
    let groups = [
        g.n.div_ceil(choice.tile.1),
        g.m.div_ceil(choice.tile.0),
        choice.splits,
    ];
    plan.push(
        choice.kernel,
        &params,
        &[a, b, bias, partials, a, b],
        groups,
    );
    choice.splits
}

/// The buffer split-K writes its partial sums to.
pub(crate) fn partials_buffer(device: &wgpu::Device, policy: &GemmPolicy) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("split-K partials"),
        size: policy.partial_floats.max(4) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

impl Engine {
    /// A, B, a zero bias, C and split-K partials for a host GEMM.
    fn gemm_buffers(&self, a: &[f32], b: &[f32], c_len: usize) -> Result<[wgpu::Buffer; 5], Error> {
        for (what, len) in [("A", a.len()), ("B", b.len()), ("C", c_len)] {
            self.check_size(
                &format!("GEMM operand {what}"),
                len as u64 * 4,
                "use smaller matrices",
            )?;
        }
        let init = |label: &str, data: &[f32]| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(data),
                    usage: USAGE,
                })
        };
        let c = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("C"),
            size: (c_len as u64 * 4).max(16),
            usage: USAGE,
            mapped_at_creation: false,
        });
        let partials = partials_buffer(&self.device, &self.gemm_policy);
        Ok([
            init("A", a),
            init("B", b),
            init("bias", &[0.0; 4]),
            c,
            partials,
        ])
    }

    /// `C[M, N] = A[M, K] B[N, K]^T` on the GPU, through the shipped GEMM kernels: the one the
    /// forward would choose, or `forced`.
    pub fn matmul_nt(
        &self,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        forced: Option<GemmChoice>,
    ) -> Result<Vec<f32>, Error> {
        let choice = forced
            .unwrap_or_else(|| Gemm::nt(m as u32, n as u32, k as u32).choice(&self.gemm_policy));
        self.matmul_nt_with(&self.kernels, a, b, (m, n, k), choice)
    }

    /// Like [`Engine::matmul_nt`] for an NT tile that is not in the kernel table, split `splits`
    /// ways: how `bench --matmul --sweep --check` checks the tiles it times.
    pub fn matmul_nt_tile(
        &self,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        tile: NtTile,
        splits: u32,
    ) -> Result<Vec<f32>, Error> {
        let (kernels, kernel) = self
            .kernels
            .with_nt_tile(&self.device, tile, None)
            .map_err(Error::Unsupported)?;
        let choice = GemmChoice::nt_split(kernel, tile, k as u32, splits);
        self.matmul_nt_with(&kernels, a, b, (m, n, k), choice)
    }

    fn matmul_nt_with(
        &self,
        kernels: &Kernels,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        choice: GemmChoice,
    ) -> Result<Vec<f32>, Error> {
        if a.len() != m * k || b.len() != n * k {
            return Err(Error::Unsupported(format!(
                "GEMM operands of {} and {} values for {m}x{k} and {n}x{k}",
                a.len(),
                b.len()
            )));
        }
        let [ab, bb, bias, cb, partials] = self.gemm_buffers(a, b, m * n)?;
        let mut plan = Plan::new(self.limits.min_uniform_buffer_offset_alignment);
        let (m, n, k) = (m as u32, n as u32, k as u32);
        let g = Gemm::nt(m, n, k);
        push_gemm(
            &mut plan,
            &g,
            choice,
            [&ab, &bb, &bias, &cb, &partials],
            false,
        );
        let mut encoder = self.device.create_command_encoder(&Default::default());
        plan.record(&self.device, kernels, &mut encoder, None);
        let bytes = u64::from(m) * u64::from(n) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("C readback"),
            size: bytes.max(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(&cb, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let mut out = self.read(&staging)?;
        out.truncate((m * n) as usize);
        Ok(out)
    }

    /// Milliseconds per `[M, K] x [N, K]^T` GEMM (the chosen kernel, or `forced`): median of
    /// `reps` submissions of `iters` back-to-back GEMMs each, after one warm-up submission.
    pub fn time_matmul(
        &self,
        shape: (usize, usize, usize),
        forced: Option<GemmChoice>,
        iters: usize,
        reps: usize,
    ) -> Result<f64, Error> {
        let (m, n, k) = shape;
        let iters = iters_for(shape, iters);
        let choice = forced
            .unwrap_or_else(|| Gemm::nt(m as u32, n as u32, k as u32).choice(&self.gemm_policy));
        self.time_gemm_with(&self.kernels, shape, choice, iters, reps)
    }

    /// Like [`Engine::time_matmul`] for an NT tile that is not in the kernel table, split
    /// `splits` ways.
    pub fn time_matmul_tile(
        &self,
        shape: (usize, usize, usize),
        tile: NtTile,
        splits: u32,
        iters: usize,
        reps: usize,
    ) -> Result<f64, Error> {
        let iters = iters_for(shape, iters);
        let (kernels, kernel) = self
            .kernels
            .with_nt_tile(&self.device, tile, None)
            .map_err(Error::Unsupported)?;
        let choice = GemmChoice::nt_split(kernel, tile, shape.2 as u32, splits);
        self.time_gemm_with(&kernels, shape, choice, iters, reps)
    }

    fn time_gemm_with(
        &self,
        kernels: &Kernels,
        (m, n, k): (usize, usize, usize),
        choice: GemmChoice,
        iters: usize,
        reps: usize,
    ) -> Result<f64, Error> {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let b: Vec<f32> = (0..n * k)
            .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
            .collect();
        let [ab, bb, bias, cb, partials] = self.gemm_buffers(&a, &b, m * n)?;
        let g = Gemm::nt(m as u32, n as u32, k as u32);
        let mut plan = Plan::new(self.limits.min_uniform_buffer_offset_alignment);
        for _ in 0..iters.max(1) {
            push_gemm(
                &mut plan,
                &g,
                choice,
                [&ab, &bb, &bias, &cb, &partials],
                false,
            );
        }
        let recorded = plan.build(&self.device, kernels);
        let mut times = Vec::new();
        for rep in 0..=reps.max(1) {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            recorded.encode(kernels, &mut encoder, None);
            let started = std::time::Instant::now();
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Readback(e.to_string()))?;
            if rep > 0 {
                times.push(started.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

/// At least `iters` GEMMs per timed submission, more for small ones, so that submitting and
/// waiting (tens of microseconds) stays a small part of each measurement.
fn iters_for((m, n, k): (usize, usize, usize), iters: usize) -> usize {
    let flop = 2.0 * (m * n * k) as f64;
    iters.max((2e10 / flop).min(200.0) as usize)
}

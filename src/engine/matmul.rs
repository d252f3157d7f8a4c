//! The GEMM kernel on its own: `C = A B^T` for host matrices (kernel parity tests) and timed
//! (the `bench --matmul` table).

use wgpu::util::DeviceExt;

use super::kernels::gemm_variant;
use super::plan::Plan;
use super::{Engine, Error};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// `[M, K] x [N, K]^T` parameters for matmul.wgsl, weights-style (B rows are k-contiguous).
fn nt_params(m: u32, n: u32, k: u32) -> [u32; 20] {
    [
        m,
        n,
        k,
        1,
        0,
        0,
        k,
        0,
        0,
        0,
        1,
        k,
        0,
        0,
        n,
        0,
        0,
        1f32.to_bits(),
        0,
        0,
    ]
}

impl Engine {
    fn gemm_buffers(&self, a: &[f32], b: &[f32], c_len: usize) -> Result<[wgpu::Buffer; 4], Error> {
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
        Ok([init("A", a), init("B", b), init("bias", &[0.0; 4]), c])
    }

    /// `C[M, N] = A[M, K] B[N, K]^T` on the GPU, through the shipped GEMM kernel.
    pub fn matmul_nt(
        &self,
        a: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<Vec<f32>, Error> {
        if a.len() != m * k || b.len() != n * k {
            return Err(Error::Unsupported(format!(
                "GEMM operands of {} and {} values for {m}x{k} and {n}x{k}",
                a.len(),
                b.len()
            )));
        }
        let [ab, bb, bias, cb] = self.gemm_buffers(a, b, m * n)?;
        let mut plan = Plan::new(self.limits.min_uniform_buffer_offset_alignment);
        let (m, n, k) = (m as u32, n as u32, k as u32);
        let (kernel, tile) = gemm_variant(m, n);
        plan.push(
            kernel,
            &nt_params(m, n, k),
            &[&ab, &bb, &bias, &cb],
            [n.div_ceil(tile.1), m.div_ceil(tile.0), 1],
        );
        let mut encoder = self.device.create_command_encoder(&Default::default());
        plan.record(&self.device, &self.kernels, &mut encoder, None);
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

    /// Milliseconds per `[M, K] x [N, K]^T` GEMM: median of `reps` submissions of `iters`
    /// back-to-back dispatches each, after one warm-up submission.
    pub fn time_matmul(
        &self,
        m: usize,
        n: usize,
        k: usize,
        iters: usize,
        reps: usize,
    ) -> Result<f64, Error> {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let b: Vec<f32> = (0..n * k)
            .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
            .collect();
        let [ab, bb, bias, cb] = self.gemm_buffers(&a, &b, m * n)?;
        let (m, n, k) = (m as u32, n as u32, k as u32);
        let mut plan = Plan::new(self.limits.min_uniform_buffer_offset_alignment);
        let (kernel, tile) = gemm_variant(m, n);
        for _ in 0..iters.max(1) {
            plan.push(
                kernel,
                &nt_params(m, n, k),
                &[&ab, &bb, &bias, &cb],
                [n.div_ceil(tile.1), m.div_ceil(tile.0), 1],
            );
        }
        let recorded = plan.build(&self.device, &self.kernels);
        let mut times = Vec::new();
        for rep in 0..=reps.max(1) {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            recorded.encode(&self.kernels, &mut encoder, None);
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

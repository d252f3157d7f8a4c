//! A forward pass as a list of dispatches: recorded first, then its uniform parameters go into one
//! buffer (dynamic offsets), and the whole list into one compute pass.

use wgpu::util::DeviceExt;

use super::kernels::{KernelId, Kernels, ROW_WG};

struct Dispatch {
    kernel: KernelId,
    buffers: Vec<wgpu::Buffer>,
    params_offset: u32,
    groups: [u32; 3],
}

pub struct Plan {
    params: Vec<u8>,
    align: usize,
    dispatches: Vec<Dispatch>,
}

/// Workgroups for `n` items of `per_group` each, folded into y beyond the 65535 limit of x (the
/// kernels index `x + y * 65535`).
pub fn groups_for(n: u32, per_group: u32) -> [u32; 3] {
    let g = n.div_ceil(per_group).max(1);
    if g <= 65535 {
        [g, 1, 1]
    } else {
        [65535, g.div_ceil(65535), 1]
    }
}

/// One workgroup per row.
pub fn row_groups(rows: u32) -> [u32; 3] {
    groups_for(rows, 1)
}

/// One thread per element, ROW_WG per workgroup.
pub fn elementwise_groups(n: u32) -> [u32; 3] {
    groups_for(n, ROW_WG)
}

impl Plan {
    pub fn new(uniform_align: u32) -> Self {
        Self {
            params: Vec::new(),
            align: (uniform_align as usize).max(super::kernels::PARAMS_BINDING_SIZE as usize),
            dispatches: Vec::new(),
        }
    }

    /// Queue one dispatch. `params` are the kernel's `Params` struct as 32-bit words.
    pub fn push(
        &mut self,
        kernel: KernelId,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let offset = self.params.len();
        for w in params {
            self.params.extend_from_slice(&w.to_le_bytes());
        }
        self.params.resize(offset + self.align, 0);
        self.dispatches.push(Dispatch {
            kernel,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            params_offset: offset as u32,
            groups,
        });
    }

    /// Kernel of each dispatch, in order.
    pub fn kernel_ids(&self) -> Vec<KernelId> {
        self.dispatches.iter().map(|d| d.kernel).collect()
    }

    /// Create the parameter buffer and every bind group: what is reusable across submissions.
    pub fn build(self, device: &wgpu::Device, kernels: &Kernels) -> Recorded {
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &self.params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let dispatches = self
            .dispatches
            .into_iter()
            .map(|d| {
                let kernel = kernels.get(d.kernel);
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(super::kernels::PARAMS_BINDING_SIZE),
                    }),
                }];
                for (i, b) in d.buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: b.as_entire_binding(),
                    });
                }
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.name),
                    layout: &kernel.layout,
                    entries: &entries,
                });
                (d.kernel, bind_group, d.params_offset, d.groups)
            })
            .collect();
        Recorded {
            _params: params,
            dispatches,
        }
    }

    /// Build and encode in one go (one-off plans).
    pub fn record(
        self,
        device: &wgpu::Device,
        kernels: &Kernels,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<&wgpu::QuerySet>,
    ) {
        self.build(device, kernels)
            .encode(kernels, encoder, timestamps);
    }
}

/// A built plan: bind groups and parameters ready to encode any number of times.
pub struct Recorded {
    _params: wgpu::Buffer,
    dispatches: Vec<(KernelId, wgpu::BindGroup, u32, [u32; 3])>,
}

impl Recorded {
    /// Encode every dispatch, in order, into one compute pass; with `timestamps` (profiling),
    /// one pass per dispatch writing its begin/end at `2i`, `2i + 1`.
    pub fn encode(
        &self,
        kernels: &Kernels,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<&wgpu::QuerySet>,
    ) {
        self.encode_range(kernels, encoder, 0..self.dispatches.len(), timestamps);
    }

    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Encode dispatches `range` (with `timestamps`, at their own indices).
    pub fn encode_range(
        &self,
        kernels: &Kernels,
        encoder: &mut wgpu::CommandEncoder,
        range: std::ops::Range<usize>,
        timestamps: Option<&wgpu::QuerySet>,
    ) {
        let start = range.start;
        let dispatches = &self.dispatches[range];
        if let Some(query_set) = timestamps {
            for (j, (kernel, bg, offset, groups)) in dispatches.iter().enumerate() {
                let i = start + j;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(kernels.get(*kernel).name),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                pass.set_pipeline(&kernels.get(*kernel).pipeline);
                pass.set_bind_group(0, bg, &[*offset]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("forward"),
            timestamp_writes: None,
        });
        for (kernel, bg, offset, groups) in dispatches {
            pass.set_pipeline(&kernels.get(*kernel).pipeline);
            pass.set_bind_group(0, bg, &[*offset]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
    }
}

//! The GPU engine: the forward pass in our own WGSL compute shaders through wgpu, producing the
//! same [`Trace`](crate::trace::Trace) as the candle reference (minus gradients), recorded into
//! one command buffer and read back once.

pub mod driver_stats;
mod forward;
pub mod kernels;
pub mod matmul;
mod model;
mod plan;

pub use forward::{GpuTraceOptions, KernelTime, Profile, TRANSPOSED_V_MIN_TOKENS};
pub use model::GpuModel;

use kernels::Kernels;

/// Storage buffers the widest kernel binds (the depth op: sources, slot lists, query, h, stats,
/// norm gain and beta, normalised output).
pub const STORAGE_BUFFERS_NEEDED: u32 = 8;

/// Why the GPU engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found ({0}); install a Vulkan driver (Mesa's lavapipe works without a GPU) or use --device cpu")]
    NoAdapter(String),
    #[error("GPU adapter `{adapter}`: cannot create a device: {reason}")]
    Device { adapter: String, reason: String },
    #[error("GPU adapter `{adapter}` binds {has} storage buffers per compute shader; the depth kernel needs {STORAGE_BUFFERS_NEEDED}: use another adapter (WGPU_ADAPTER_NAME) or --device cpu")]
    TooFewStorageBuffers { adapter: String, has: u32 },
    #[error("GPU adapter `{adapter}`: {what} needs {needed} bytes, but the adapter allows {limit} ({hint})")]
    Limit {
        adapter: String,
        what: String,
        needed: u64,
        limit: u64,
        hint: String,
    },
    #[error("the GPU engine does not support {0}")]
    Unsupported(String),
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    #[error(transparent)]
    Input(#[from] crate::reference::Error),
}

/// A wgpu device with the depthlens kernels compiled for it.
pub struct Engine {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) kernels: Kernels,
    pub(crate) limits: wgpu::Limits,
    pub(crate) gemm_policy: kernels::GemmPolicy,
    pub(crate) attention: kernels::AttentionKernel,
    pub(crate) depth_weights: DepthWeights,
    adapter_name: String,
}

/// What the depth ops of an AttnRes model mix their sources with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DepthWeights {
    /// The checkpoint's: a softmax over the pseudo-queries' scores (ATTNRES.md).
    #[default]
    Learned,
    /// Every weight 1, no scoring: the sources (the embedding and every sublayer output, or
    /// Block's block sums) then add up to the PreNorm residual stream, so the model runs as its
    /// standard-residual counterpart with the same kernels and Trace statistics. What AttnRes
    /// costs over that is the report's inference overhead (`depthlens bench --depth-cost`).
    Uniform,
}

/// Adapters in the order we prefer them: real GPUs on Vulkan first, software last.
pub fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        _ => 2,
    };
    (device, backend)
}

impl Engine {
    /// Open the best adapter (`WGPU_BACKEND` / `WGPU_ADAPTER_NAME` narrow the choice) with its own
    /// limits, not wgpu's defaults (which cap a storage binding at 128 MiB).
    pub fn new() -> Result<Self, Error> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        // GL only when no Vulkan/Metal/DX12 adapter exists: it is the fallback (its adapters
        // rank last), and enumerating it opens an EGL context that would go unused.
        let (backends, mut adapters) = match wgpu::Backends::from_env() {
            Some(b) => (b, pollster::block_on(instance.enumerate_adapters(b))),
            None => {
                let primary =
                    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
                if primary.is_empty() {
                    let b = wgpu::Backends::all();
                    (b, pollster::block_on(instance.enumerate_adapters(b)))
                } else {
                    (wgpu::Backends::PRIMARY, primary)
                }
            }
        };
        if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
            let wanted = wanted.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&wanted));
        }
        // Compute needs storage buffers in compute shaders; GL adapters under WebGL2 limits have none.
        let (usable, short): (Vec<_>, Vec<_>) = adapters.into_iter().partition(|a| {
            a.limits().max_storage_buffers_per_shader_stage >= STORAGE_BUFFERS_NEEDED
        });
        let mut adapters = usable;
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            let skipped: Vec<String> = short
                .iter()
                .map(|a| {
                    let limit = a.limits().max_storage_buffers_per_shader_stage;
                    format!("`{}` binds only {limit} storage buffers", a.get_info().name)
                })
                .collect();
            let mut why = format!("backends {backends:?}");
            if !skipped.is_empty() {
                why += &format!("; skipped: {}", skipped.join(", "));
            }
            Error::NoAdapter(why)
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("depthlens"),
            // Timestamps only for `depthlens bench`; everything else needs no optional feature.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_device(device, queue, &info)
    }

    /// Use a device someone else opened (the app's eframe renderer), so there is only one.
    /// Fails, rather than panicking on the first pipeline, when the device binds too few storage
    /// buffers per compute shader (a device opened with WebGL2 limits binds none).
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
    ) -> Result<Self, Error> {
        let limits = device.limits();
        if limits.max_storage_buffers_per_shader_stage < STORAGE_BUFFERS_NEEDED {
            return Err(Error::TooFewStorageBuffers {
                adapter: info.name.clone(),
                has: limits.max_storage_buffers_per_shader_stage,
            });
        }
        let kernels = Kernels::build_all(&device);
        let mut gemm_policy = kernels::GemmPolicy::default();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        gemm_policy.partial_floats = gemm_policy.partial_floats.min(max_binding / 4);
        Ok(Self {
            device,
            queue,
            kernels,
            limits,
            gemm_policy,
            attention: kernels::AttentionKernel::default(),
            depth_weights: DepthWeights::Learned,
            adapter_name: format!("{} ({:?})", info.name, info.backend),
        })
    }

    /// Like [`Engine::new`], but binding at most `bytes` per storage buffer: how a GPU with
    /// smaller limits (or a device opened with WebGPU's defaults) runs the same model. Tensors
    /// and activations larger than that are split as they would be there; the tests use it.
    pub fn with_binding_cap(bytes: u64) -> Result<Self, Error> {
        let mut engine = Self::new()?;
        engine.limits.max_storage_buffer_binding_size =
            engine.limits.max_storage_buffer_binding_size.min(bytes);
        engine.gemm_policy.partial_floats = engine.gemm_policy.partial_floats.min(bytes / 4);
        Ok(engine)
    }

    /// A kernel's name as the profile tables print it.
    pub fn kernel_name(&self, id: kernels::KernelId) -> &'static str {
        self.kernels.get(id).name
    }

    /// The tile `matmul_nt_xlarge` runs on this device: 16-deep where the device allows its
    /// workgroup memory, else 8-deep.
    pub fn xlarge_tile(&self) -> kernels::NtTile {
        self.kernels.xlarge
    }

    pub fn gemm_policy(&self) -> &kernels::GemmPolicy {
        &self.gemm_policy
    }

    /// Choose GEMM tiles and splits by `policy` (rebuilding the short-prompt kernel for its tile).
    /// Call before loading models: prepared forwards keep the kernels they were built with.
    pub fn set_gemm_policy(&mut self, policy: kernels::GemmPolicy) -> Result<(), Error> {
        let (rebuilt, _) = self
            .kernels
            .with_nt_tile(
                &self.device,
                policy.small,
                Some(kernels::KernelId::MatmulNtSmall),
            )
            .map_err(Error::Unsupported)?;
        self.kernels = rebuilt;
        self.gemm_policy = policy;
        Ok(())
    }

    /// Rebuild the kernels of shader file `file` from `source` (kernel experiments: see
    /// `Kernels::with_shader_source`). Call before loading models, as for the GEMM policy.
    pub fn replace_shader(&mut self, file: &str, source: &str) -> Result<(), Error> {
        self.kernels = self
            .kernels
            .with_shader_source(&self.device, file, source)
            .map_err(Error::Unsupported)?;
        Ok(())
    }

    /// Which attention kernel forwards use. Call before loading models: prepared forwards keep
    /// the path they were recorded with.
    pub fn set_attention(&mut self, kernel: kernels::AttentionKernel) {
        self.attention = kernel;
    }

    /// What AttnRes depth ops mix with (models without AttnRes always sum with weight 1). Call
    /// before loading models: prepared forwards keep the weights they were recorded with.
    pub fn set_depth_weights(&mut self, weights: DepthWeights) {
        self.depth_weights = weights;
    }

    /// The adapter, as the Trace's `device` field names it.
    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// Largest storage buffer this device can bind.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    pub(crate) fn check_size(&self, what: &str, bytes: u64, hint: &str) -> Result<(), Error> {
        if bytes > self.max_binding() {
            return Err(Error::Limit {
                adapter: self.adapter_name.clone(),
                what: what.to_string(),
                needed: bytes,
                limit: self.max_binding(),
                hint: hint.to_string(),
            });
        }
        Ok(())
    }
}

//! The WGSL kernels: sources (with their tile and workgroup constants substituted from here, the
//! one place they are defined), bind-group layouts, and trusted compute pipelines.

/// GEMM tiles: a workgroup computes TILE x TILE outputs of C with 16 x 16 threads, staging
/// BK-deep slices of A and B. The small tile (4 x 4 outputs per thread) keeps short prompts'
/// GEMMs spread over many workgroups; the large one (8 x 8 per thread in vec4 registers, GPU.md's
/// 31.7 TFLOP/s configuration) serves big ones. Its register block is written out by hand for
/// `LT` = 128 (prepended like every constant here). A 64-tile variant with vec4 registers measured
/// no faster than the generic kernel on the H100, so the generic one serves the 64, 32 and skinny tiles.
pub const MATMUL_SMALL: GemmTile = GemmTile { tile: 64, bk: 16 };
/// Short prompts (M <= 64 rows): 16 x 32 tiles, 2 outputs per thread, so that a 64-token GEMM
/// still spreads over dozens of workgroups.
pub const MATMUL_SKINNY: (u32, u32) = (16, 32);
/// Deep K slices for the skinny tile: fewer barrier rounds, which is what short prompts wait on.
const SKINNY_BK: u32 = 64;
pub const MATMUL_LARGE: GemmTile = GemmTile { tile: 128, bk: 8 };
pub const MATMUL_WG: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    pub tile: u32,
    pub bk: u32,
}

/// Mid-size outputs that would give the 64-tile fewer workgroups than a GPU has multiprocessors:
/// 32 x 32 tiles, 2 x 2 outputs per thread.
pub const MATMUL_MID: (u32, u32) = (32, 32);

/// The GEMM variant for an `M x N` output and its (rows, columns) tile: skinny for few rows, the
/// large tile once it still yields enough workgroups, the 64-tile where that fills the GPU, the
/// 32-tile otherwise.
pub fn gemm_variant(m: u32, n: u32) -> (KernelId, (u32, u32)) {
    let tiles = |t: u32| u64::from(m.div_ceil(t)) * u64::from(n.div_ceil(t));
    if m <= 64 {
        (KernelId::MatmulSkinny, MATMUL_SKINNY)
    } else if m >= 256 && n >= 256 && tiles(MATMUL_LARGE.tile) >= 64 {
        let t = MATMUL_LARGE.tile;
        (KernelId::MatmulLarge, (t, t))
    } else if tiles(MATMUL_SMALL.tile) >= 128 {
        (KernelId::Matmul, (MATMUL_SMALL.tile, MATMUL_SMALL.tile))
    } else {
        (KernelId::MatmulMid, MATMUL_MID)
    }
}

/// Threads per workgroup of the row-wise and elementwise kernels (a power of two).
pub const ROW_WG: u32 = 256;
/// Most sources one depth op can attend over.
pub const MAX_SOURCES: u32 = 512;
/// Next-token predictions kept per position.
pub const TOP_K: u32 = 5;

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// How a kernel binds a storage buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Read,
    ReadWrite,
}
use Access::{Read, ReadWrite};

/// One compute entry point: its WGSL file, entry, constants and storage bindings (1..).
pub struct KernelSpec {
    pub name: &'static str,
    pub file: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    pub consts: &'static [(&'static str, u32)],
    /// Prepend `common.wgsl` (workgroup reductions).
    pub common: bool,
    pub storage: &'static [Access],
}

const ROW: &[(&str, u32)] = &[("WG", ROW_WG)];
/// Both GEMM entry points live in matmul.wgsl and see every tile constant.
const MATMUL_CONSTS: &[(&str, u32)] = &[
    ("TILE_M", MATMUL_SMALL.tile),
    ("TILE_N", MATMUL_SMALL.tile),
    ("BK", MATMUL_SMALL.bk),
    ("WG_X", MATMUL_WG),
    ("WG_Y", MATMUL_WG),
    ("LT", MATMUL_LARGE.tile),
    ("LBK", MATMUL_LARGE.bk),
];
const MID_CONSTS: &[(&str, u32)] = &[
    ("TILE_M", MATMUL_MID.0),
    ("TILE_N", MATMUL_MID.1),
    ("BK", MATMUL_SMALL.bk),
    ("WG_X", MATMUL_WG),
    ("WG_Y", MATMUL_WG),
    ("LT", MATMUL_LARGE.tile),
    ("LBK", MATMUL_LARGE.bk),
];
const SKINNY_CONSTS: &[(&str, u32)] = &[
    ("TILE_M", MATMUL_SKINNY.0),
    ("TILE_N", MATMUL_SKINNY.1),
    ("BK", SKINNY_BK),
    ("WG_X", MATMUL_WG),
    ("WG_Y", MATMUL_WG),
    ("LT", MATMUL_LARGE.tile),
    ("LBK", MATMUL_LARGE.bk),
];

macro_rules! shader {
    ($file:literal) => {
        ($file, include_str!(concat!("../../shaders/", $file)))
    };
}

const MATMUL: (&str, &str) = shader!("matmul.wgsl");
const NORM: (&str, &str) = shader!("norm.wgsl");
const ROPE: (&str, &str) = shader!("rope.wgsl");
const ATTENTION: (&str, &str) = shader!("attention.wgsl");
const ACTIVATIONS: (&str, &str) = shader!("activations.wgsl");
const EMBEDDING: (&str, &str) = shader!("embedding.wgsl");
const DEPTH: (&str, &str) = shader!("depth.wgsl");
const HEAD: (&str, &str) = shader!("head.wgsl");

const fn spec(
    name: &'static str,
    shader: (&'static str, &'static str),
    entry: &'static str,
    consts: &'static [(&'static str, u32)],
    common: bool,
    storage: &'static [Access],
) -> KernelSpec {
    KernelSpec {
        name,
        file: shader.0,
        source: shader.1,
        entry,
        consts,
        common,
        storage,
    }
}

/// Every kernel the engine ships, in one table (also what the naga validation test walks).
pub const KERNELS: &[KernelSpec] = &[
    spec(
        "matmul",
        MATMUL,
        "main",
        MATMUL_CONSTS,
        false,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "matmul_mid",
        MATMUL,
        "main",
        MID_CONSTS,
        false,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "matmul_skinny",
        MATMUL,
        "main",
        SKINNY_CONSTS,
        false,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "matmul_large",
        MATMUL,
        "main_large",
        MATMUL_CONSTS,
        false,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "norm",
        NORM,
        "norm",
        ROW,
        true,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "row_stats",
        NORM,
        "row_stats",
        ROW,
        true,
        &[Read, Read, Read, ReadWrite],
    ),
    spec("rope", ROPE, "main", ROW, false, &[Read, Read, ReadWrite]),
    spec(
        "causal_softmax",
        ATTENTION,
        "causal_softmax",
        ROW,
        true,
        &[ReadWrite],
    ),
    spec(
        "silu_mul",
        ACTIVATIONS,
        "silu_mul",
        ROW,
        false,
        &[Read, Read, ReadWrite],
    ),
    spec(
        "gelu_tanh",
        ACTIVATIONS,
        "gelu_tanh",
        ROW,
        false,
        &[Read, Read, ReadWrite],
    ),
    spec(
        "gelu_erf",
        ACTIVATIONS,
        "gelu_erf",
        ROW,
        false,
        &[Read, Read, ReadWrite],
    ),
    spec(
        "accumulate",
        ACTIVATIONS,
        "accumulate",
        ROW,
        false,
        &[Read, Read, ReadWrite],
    ),
    spec(
        "copy",
        ACTIVATIONS,
        "copy",
        ROW,
        false,
        &[Read, Read, ReadWrite],
    ),
    spec(
        "embedding",
        EMBEDDING,
        "main",
        ROW,
        false,
        &[Read, Read, Read, ReadWrite],
    ),
    spec(
        "depth",
        DEPTH,
        "main",
        &[("WG", ROW_WG), ("MAX_SOURCES", MAX_SOURCES)],
        true,
        &[Read, Read, Read, ReadWrite, ReadWrite],
    ),
    spec(
        "head",
        HEAD,
        "main",
        &[("WG", ROW_WG), ("K", TOP_K)],
        true,
        &[Read, Read, ReadWrite],
    ),
];

/// The full WGSL of a kernel: its constants, the shared reductions if used, then the file.
pub fn wgsl(spec: &KernelSpec) -> String {
    let mut s = String::new();
    for (name, value) in spec.consts {
        s.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    if spec.common {
        s.push_str(COMMON);
    }
    s.push_str(spec.source);
    s
}

/// A compiled kernel ready to dispatch.
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub storage: &'static [Access],
}

/// Byte size of every kernel's uniform parameter binding (each `Params` struct fits in it).
pub const PARAMS_BINDING_SIZE: u64 = 256;

pub fn build(device: &wgpu::Device, spec: &KernelSpec) -> Kernel {
    let source = wgsl(spec);
    // SAFETY: every kernel guards its own indices (partial tiles, odd sizes); the parity tests on
    // non-tile-multiple sizes prove the guards. Runtime bounds checks cost ~50x on GEMM (GPU.md).
    let module = unsafe {
        device.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor {
                label: Some(spec.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            },
            wgpu::ShaderRuntimeChecks::unchecked(),
        )
    };
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(PARAMS_BINDING_SIZE),
        },
        count: None,
    }];
    for (i, access) in spec.storage.iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: *access == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(spec.name),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(spec.name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(spec.name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(spec.entry),
        compilation_options: Default::default(),
        cache: None,
    });
    Kernel {
        name: spec.name,
        pipeline,
        layout,
        storage: spec.storage,
    }
}

/// Names the kernels of [`KERNELS`], in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelId {
    Matmul,
    MatmulMid,
    MatmulSkinny,
    MatmulLarge,
    Norm,
    RowStats,
    Rope,
    CausalSoftmax,
    SiluMul,
    GeluTanh,
    GeluErf,
    Accumulate,
    Copy,
    Embedding,
    Depth,
    Head,
}

/// All kernels, compiled.
pub struct Kernels {
    kernels: Vec<Kernel>,
}

impl Kernels {
    pub fn build_all(device: &wgpu::Device) -> Self {
        Self {
            kernels: KERNELS.iter().map(|s| build(device, s)).collect(),
        }
    }

    pub fn get(&self, id: KernelId) -> &Kernel {
        &self.kernels[id as usize]
    }
}

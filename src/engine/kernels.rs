//! The WGSL kernels: sources (with their tile and workgroup constants substituted from here, the
//! one place they are defined), bind-group layouts, and trusted compute pipelines.

/// Generic GEMM tiles (`main` in matmul.wgsl, any layout: the attention's P V, unaligned
/// operands): a workgroup computes TILE_M x TILE_N outputs with 16 x 16 threads, staging BK-deep
/// slices of A and B.
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

/// The generic GEMM variant for an `M x N` output and its (rows, columns) tile: skinny for few
/// rows, the large tile once it still yields enough workgroups, the 64-tile where that fills the
/// GPU, the 32-tile otherwise.
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

/// A tile of the NT fast path (`gemm_nt`): `bm x bn` outputs, `bk`-deep slices, `tm x tn`
/// outputs per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtTile {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

impl NtTile {
    pub const fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }
}

/// 8 x 8 outputs per thread, 256 threads, 8-deep slices: the largest outputs (4096^3, the LM head
/// of long prompts). On the H100 it takes 128 registers, so two workgroups share a
/// multiprocessor, and it ran 39.0 TFLOP/s at 4096^3 against NT_LARGE's 38.6; with fewer than
/// about four waves of workgroups it is slower than NT_LARGE (measured on the H100 2026-11-24: BENCHMARKS.md, "Measured and not shipped").
pub const NT_XLARGE: NtTile = NtTile {
    bm: 128,
    bn: 128,
    bk: 8,
    tm: 8,
    tn: 8,
};
/// NT_XLARGE with 16-deep slices: 42.8-43.0 TFLOP/s at 4096^3 on the H100 against 38.4-39.3, but its
/// staged tiles take 16896 bytes of workgroup memory, past WebGPU's default 16384 (what the
/// app's eframe device has). Devices that allow it (the engine's own, opened with the adapter's
/// limits) build `matmul_nt_xlarge` with it ([`xlarge_tile`]).
pub const NT_XLARGE_DEEP: NtTile = NtTile {
    bm: 128,
    bn: 128,
    bk: 16,
    tm: 8,
    tn: 8,
};

/// Workgroup memory gemm_nt stages for tile `t`: both operands' k-rows, each padded by one vec4.
pub const fn nt_workgroup_bytes(t: NtTile) -> u32 {
    t.bk * (t.bm / 4 + 1 + t.bn / 4 + 1) * 16
}

/// The xlarge tile a device with these limits builds.
pub fn xlarge_tile(limits: &wgpu::Limits) -> NtTile {
    if limits.max_compute_workgroup_storage_size >= nt_workgroup_bytes(NT_XLARGE_DEEP) {
        NT_XLARGE_DEEP
    } else {
        NT_XLARGE
    }
}

/// 8 x 4 outputs per thread, 256 threads: big outputs (the LM head, long prompts).
pub const NT_LARGE: NtTile = NtTile {
    bm: 128,
    bn: 64,
    bk: 16,
    tm: 8,
    tn: 4,
};
/// 4 x 4 per thread, 256 threads: outputs of a few hundred rows.
pub const NT_MID: NtTile = NtTile {
    bm: 64,
    bn: 64,
    bk: 16,
    tm: 4,
    tn: 4,
};
/// 4 x 4 per thread, 128 threads: short prompts, usually with split-K.
pub const NT_SMALL: NtTile = NtTile {
    bm: 32,
    bn: 64,
    bk: 16,
    tm: 4,
    tn: 4,
};

/// What gemm_nt supports: blocks of whole vec4s, at most 8 x 8 (its NACC accumulators), tiles
/// that are whole blocks, 8 k per written-out trip, and every thread loading whole vec4s of both
/// slices every round (GLOAD_A/B).
pub const fn nt_tile_is_valid(t: NtTile) -> bool {
    let threads = t.threads();
    t.bk.is_multiple_of(8)
        && t.tm.is_multiple_of(4)
        && t.tn.is_multiple_of(4)
        && t.tm * t.tn <= 64
        && t.bm.is_multiple_of(t.tm)
        && t.bn.is_multiple_of(t.tn)
        && (t.bm * t.bk / 4).is_multiple_of(threads)
        && (t.bn * t.bk / 4).is_multiple_of(threads)
        && t.bm * t.bk / 4 >= threads
        && t.bn * t.bk / 4 >= threads
}
const _: () = assert!(
    nt_tile_is_valid(NT_XLARGE)
        && nt_tile_is_valid(NT_XLARGE_DEEP)
        && nt_tile_is_valid(NT_LARGE)
        && nt_tile_is_valid(NT_MID)
        && nt_tile_is_valid(NT_SMALL)
);

/// How GEMMs pick their tile and split: the defaults were measured on the H100 (BENCHMARKS.md);
/// `bench --gemm-fill/--min-split-k/--small-tile` tries others on a whole forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmPolicy {
    /// Workgroups of the extra-large tile it needs to be worth it: about four waves of two per
    /// multiprocessor of an H100.
    pub xlarge_fill: u64,
    /// Workgroups the large tile needs to be worth it (about one per multiprocessor of an
    /// H100's 132: its 8 x 4 register block outruns smaller tiles even with fewer workgroups).
    pub large_fill: u64,
    /// Workgroups that keep the GPU busy with the mid tile (two per multiprocessor); below this
    /// a GEMM takes the small tile and splits K.
    pub fill: u64,
    /// Split-K never leaves a split fewer than this many k: the extra reduction dispatch costs
    /// about what a shorter K saves below it.
    pub min_split_k: u32,
    /// The tile of short prompts' GEMMs (the `matmul_nt_small` kernel is built for it).
    pub small: NtTile,
    /// Partial sums split-K may hold at once: [`SPLIT_PARTIAL_FLOATS`], or less where the
    /// adapter binds less.
    pub partial_floats: u64,
}

/// Two workgroups per multiprocessor of an H100 (132).
const DEFAULT_FILL: u64 = 264;

impl Default for GemmPolicy {
    fn default() -> Self {
        Self {
            xlarge_fill: 1024,
            large_fill: 128,
            fill: DEFAULT_FILL,
            min_split_k: 128,
            small: NT_SMALL,
            partial_floats: SPLIT_PARTIAL_FLOATS,
        }
    }
}

/// Most partial sums split-K may hold: two full mid tiles per workgroup of the default fill.
pub const SPLIT_PARTIAL_FLOATS: u64 = 2 * DEFAULT_FILL * (NT_MID.bm * NT_MID.bn) as u64;

/// How one GEMM runs: the kernel, its (rows, columns) tile, and how many k-splits (1: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmChoice {
    pub kernel: KernelId,
    pub tile: (u32, u32),
    pub splits: u32,
    pub k_chunk: u32,
}

impl GemmChoice {
    /// `kernel` built for NT tile `t`, with K (`k`) split about `splits` ways in chunks of whole
    /// slices, so that only the last split has a partial slice (the split count that results).
    pub fn nt_split(kernel: KernelId, t: NtTile, k: u32, splits: u32) -> Self {
        let k_chunk = (k.div_ceil(splits.max(1)).div_ceil(t.bk) * t.bk).max(1);
        Self {
            kernel,
            tile: (t.bm, t.bn),
            splits: k.div_ceil(k_chunk).max(1),
            k_chunk,
        }
    }
}

/// Pick the kernel for an `M x N x K` GEMM over `batch` matrices: the generic kernel unless the
/// operands suit the NT fast path (`nt_ok`); then the largest NT tile that still fills the GPU,
/// else the smallest one with K split until it does (batch 1 only, partials within
/// `policy.partial_floats`).
pub fn choose_gemm(
    policy: &GemmPolicy,
    (m, n, k): (u32, u32, u32),
    batch: u32,
    nt_ok: bool,
) -> GemmChoice {
    let whole = |kernel, tile: (u32, u32)| GemmChoice {
        kernel,
        tile,
        splits: 1,
        k_chunk: k.max(1),
    };
    if !nt_ok {
        let (kernel, tile) = gemm_variant(m, n);
        return whole(kernel, tile);
    }
    let wgs = |t: NtTile| {
        u64::from(m.div_ceil(t.bm)) * u64::from(n.div_ceil(t.bn)) * u64::from(batch.max(1))
    };
    for (kernel, t, fill) in [
        (KernelId::MatmulNtXLarge, NT_XLARGE, policy.xlarge_fill),
        (KernelId::MatmulNtLarge, NT_LARGE, policy.large_fill),
        (KernelId::MatmulNtMid, NT_MID, policy.fill),
    ] {
        // A half-empty tile wastes what a smaller one would not.
        if m >= t.bm && wgs(t) >= fill {
            return whole(kernel, (t.bm, t.bn));
        }
    }
    let t = policy.small;
    let tiles = wgs(t);
    let mut splits = 1u32;
    if batch <= 1 {
        let padded = u64::from(m.div_ceil(t.bm) * t.bm) * u64::from(n.div_ceil(t.bn) * t.bn);
        let want = policy.fill.div_ceil(tiles) as u32;
        let by_k = (k / policy.min_split_k.max(1)).max(1);
        let by_space = (policy.partial_floats / padded.max(1)).max(1) as u32;
        splits = want.min(by_k).min(by_space).max(1);
    }
    GemmChoice::nt_split(KernelId::MatmulNtSmall, t, k, splits)
}

/// Threads per workgroup of the row-wise and elementwise kernels (a power of two).
pub const ROW_WG: u32 = 256;
/// Threads per token of the depth op: a shallower reduction tree than ROW_WG, still a few
/// elements per thread at d = 576..768.
pub const DEPTH_WG: u32 = 128;
/// Most sources one depth op can attend over.
pub const MAX_SOURCES: u32 = 512;
/// `depth` `main_cached`: threads per token, vec4s per thread, and the source counts it is built
/// for. It serves ops with d % 4 == 0, d <= DEPTH_CACHED_DIM and at most the largest count
/// (every Block op of ~8 blocks, and the early ops of Full); `main` serves the rest. Each op
/// takes the smallest build that holds its sources: registers grow with the count, and fewer
/// registers let more tokens' workgroups run at once. On the H100 the 12x768 Block model's ops
/// took 0.45 ms built for 9 sources against 0.67 ms built for 12 (BENCHMARKS.md).
pub const DEPTH_CACHED_WG: u32 = 256;
pub const DEPTH_CACHED_VEC4S: u32 = 1;
pub const DEPTH_CACHED_SOURCES: [u32; 4] = [3, 6, 9, 12];
/// `main_cached` takes its slots in its parameters: vec4s of them, for the largest build.
pub const DEPTH_CACHED_SLOT_VEC4S: u32 = DEPTH_CACHED_SOURCES[3].div_ceil(4);
pub const DEPTH_CACHED_DIM: u32 = 4 * DEPTH_CACHED_WG * DEPTH_CACHED_VEC4S;
/// The depth kernels' constants, `main_cached` built for `$cn` sources (`main` ignores CN).
macro_rules! depth_consts {
    ($cn:expr) => {
        &[
            ("WG", DEPTH_WG),
            ("MAX_SOURCES", MAX_SOURCES),
            ("CWG", DEPTH_CACHED_WG),
            ("CE", DEPTH_CACHED_VEC4S),
            ("CN", DEPTH_CACHED_SOURCES[$cn]),
            ("CSLOT_VEC4S", DEPTH_CACHED_SLOT_VEC4S),
        ]
    };
}
/// The `main_cached` build that holds `n` sources, if one does.
pub fn depth_cached_kernel(n: u32) -> Option<KernelId> {
    use KernelId::*;
    let builds = [DepthCached3, DepthCached6, DepthCached9, DepthCached12];
    DEPTH_CACHED_SOURCES
        .iter()
        .zip(builds)
        .find(|&(&cn, _)| n <= cn)
        .map(|(_, id)| id)
}
/// Bindings of `depth` `main`: sources, slot lists, qg, h, stats, gain, beta, x.
const DEPTH_STORAGE: &[Access] = &[
    Read, Read, Read, ReadWrite, ReadWrite, Read, Read, ReadWrite,
];
/// Bindings of `main_cached`: sources (it writes the fused sublayer output there), y, qg, the
/// output projection's bias, stats, gain, beta, x. Eight, like `main`: the slots travel in the
/// parameters.
const DEPTH_CACHED_STORAGE: &[Access] = &[
    ReadWrite, Read, Read, Read, ReadWrite, Read, Read, ReadWrite,
];
/// `flash_attention`: queries per workgroup, keys per block, largest head dimension, threads per
/// query row. 15.4 KB of workgroup memory: inside WebGPU's default 16 KB, so it also runs on a
/// device opened with default limits (eframe's).
pub const FLASH_ROWS: u32 = 16;
pub const FLASH_KEYS: u32 = 16;
pub const FLASH_MAX_HEAD_DIM: u32 = 64;
pub const FLASH_THREADS_PER_ROW: u32 = 16;
const ATTENTION_CONSTS: &[(&str, u32)] = &[
    ("WG", ROW_WG),
    ("FA_BR", FLASH_ROWS),
    ("FA_BC", FLASH_KEYS),
    ("FA_HD", FLASH_MAX_HEAD_DIM),
    ("FA_TPR", FLASH_THREADS_PER_ROW),
];

/// How a layer's causal attention runs on the GPU (`bench --attention gemm|fused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttentionKernel {
    /// Q Kᵀ on the GEMM kernel, a causal softmax, P V on the GEMM kernel: three dispatches per
    /// pass of heads and a `[heads, T, T]` scores buffer. Measured on the H100 (BENCHMARKS.md).
    #[default]
    Gemm,
    /// `flash_attention`: one dispatch, no scores buffer, for head_dim <= FLASH_MAX_HEAD_DIM
    /// (larger heads take the GEMM path). Parity-tested; not yet timed on a GPU.
    Fused,
}

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

/// Every matmul.wgsl entry point sees all of the file's constants: the generic tile
/// (`TILE_M`, `TILE_N`, `BK`), the large tile, and the NT tile.
macro_rules! matmul_consts {
    ($tm:expr, $tn:expr, $bk:expr, $nt:expr) => {
        &[
            ("TILE_M", $tm),
            ("TILE_N", $tn),
            ("BK", $bk),
            ("WG_X", MATMUL_WG),
            ("WG_Y", MATMUL_WG),
            ("LT", MATMUL_LARGE.tile),
            ("LBK", MATMUL_LARGE.bk),
            ("GBM", $nt.bm),
            ("GBN", $nt.bn),
            ("GBK", $nt.bk),
            ("GTM", $nt.tm),
            ("GTN", $nt.tn),
            ("WG", ROW_WG),
        ]
    };
}
const MATMUL_CONSTS: &[(&str, u32)] = matmul_consts!(
    MATMUL_SMALL.tile,
    MATMUL_SMALL.tile,
    MATMUL_SMALL.bk,
    NT_MID
);
const MID_CONSTS: &[(&str, u32)] =
    matmul_consts!(MATMUL_MID.0, MATMUL_MID.1, MATMUL_SMALL.bk, NT_MID);
const SKINNY_CONSTS: &[(&str, u32)] =
    matmul_consts!(MATMUL_SKINNY.0, MATMUL_SKINNY.1, SKINNY_BK, NT_MID);
const NT_XLARGE_CONSTS: &[(&str, u32)] = matmul_consts!(
    MATMUL_SMALL.tile,
    MATMUL_SMALL.tile,
    MATMUL_SMALL.bk,
    NT_XLARGE
);
const NT_LARGE_CONSTS: &[(&str, u32)] = matmul_consts!(
    MATMUL_SMALL.tile,
    MATMUL_SMALL.tile,
    MATMUL_SMALL.bk,
    NT_LARGE
);
const NT_SMALL_CONSTS: &[(&str, u32)] = matmul_consts!(
    MATMUL_SMALL.tile,
    MATMUL_SMALL.tile,
    MATMUL_SMALL.bk,
    NT_SMALL
);
/// Bindings of the NT path: A, B, bias, C, then A and B again viewed as vec4s.
const NT_STORAGE: &[Access] = &[Read, Read, Read, ReadWrite, Read, Read];

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
        "matmul_nt_xlarge",
        MATMUL,
        "gemm_nt",
        NT_XLARGE_CONSTS,
        false,
        NT_STORAGE,
    ),
    spec(
        "matmul_nt_large",
        MATMUL,
        "gemm_nt",
        NT_LARGE_CONSTS,
        false,
        NT_STORAGE,
    ),
    spec(
        "matmul_nt_mid",
        MATMUL,
        "gemm_nt",
        MATMUL_CONSTS,
        false,
        NT_STORAGE,
    ),
    spec(
        "matmul_nt_small",
        MATMUL,
        "gemm_nt",
        NT_SMALL_CONSTS,
        false,
        NT_STORAGE,
    ),
    spec(
        "splitk_reduce",
        MATMUL,
        "splitk_reduce",
        MATMUL_CONSTS,
        false,
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
    spec(
        "sublayer_out",
        NORM,
        "sublayer_out",
        ROW,
        true,
        &[Read, Read, Read, ReadWrite, ReadWrite],
    ),
    spec("rope", ROPE, "main", ROW, false, &[Read, Read, ReadWrite]),
    spec(
        "reduce_rope",
        ROPE,
        "reduce_rope",
        ROW,
        false,
        &[Read, Read, ReadWrite, Read, Read],
    ),
    spec(
        "causal_softmax",
        ATTENTION,
        "causal_softmax",
        ATTENTION_CONSTS,
        true,
        &[ReadWrite],
    ),
    spec(
        "transpose_v",
        ATTENTION,
        "transpose_v",
        ATTENTION_CONSTS,
        true,
        &[Read, ReadWrite],
    ),
    spec(
        "flash_attention",
        ATTENTION,
        "flash_attention",
        ATTENTION_CONSTS,
        true,
        &[Read, ReadWrite],
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
        depth_consts!(3),
        true,
        DEPTH_STORAGE,
    ),
    spec(
        "depth_cached_3",
        DEPTH,
        "main_cached",
        depth_consts!(0),
        true,
        DEPTH_CACHED_STORAGE,
    ),
    spec(
        "depth_cached_6",
        DEPTH,
        "main_cached",
        depth_consts!(1),
        true,
        DEPTH_CACHED_STORAGE,
    ),
    spec(
        "depth_cached_9",
        DEPTH,
        "main_cached",
        depth_consts!(2),
        true,
        DEPTH_CACHED_STORAGE,
    ),
    spec(
        "depth_cached_12",
        DEPTH,
        "main_cached",
        depth_consts!(3),
        true,
        DEPTH_CACHED_STORAGE,
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
    wgsl_from(spec, spec.consts, spec.source)
}

/// A kernel's WGSL with `source` in place of its file's text.
fn wgsl_from(spec: &KernelSpec, consts: &[(&str, u32)], source: &str) -> String {
    let mut s = String::new();
    for (name, value) in consts {
        s.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    if spec.common {
        s.push_str(COMMON);
    }
    s.push_str(source);
    s
}

/// An NT GEMM kernel's WGSL (from `source`, its file's text) with its tile constants set to
/// `tile`.
pub fn nt_tile_wgsl(spec: &KernelSpec, tile: NtTile, source: &str) -> String {
    let consts: Vec<(&str, u32)> = spec
        .consts
        .iter()
        .map(|&(name, v)| match name {
            "GBM" => (name, tile.bm),
            "GBN" => (name, tile.bn),
            "GBK" => (name, tile.bk),
            "GTM" => (name, tile.tm),
            "GTN" => (name, tile.tn),
            _ => (name, v),
        })
        .collect();
    wgsl_from(spec, &consts, source)
}

/// A kernel's WGSL with `source` in place of its file's text, constants as in its table entry.
pub fn wgsl_with_source(spec: &KernelSpec, source: &str) -> String {
    wgsl_from(spec, spec.consts, source)
}

/// Kernel `i`'s WGSL from `source` as this device builds it: its table constants, except the
/// xlarge GEMM, which takes the device's `xlarge` tile.
fn device_wgsl(i: usize, spec: &KernelSpec, xlarge: NtTile, source: &str) -> String {
    if i == KernelId::MatmulNtXLarge as usize {
        nt_tile_wgsl(spec, xlarge, source)
    } else {
        wgsl_with_source(spec, source)
    }
}

/// A compiled kernel ready to dispatch.
#[derive(Clone)]
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub storage: &'static [Access],
}

/// Byte size of every kernel's uniform parameter binding (each `Params` struct fits in it).
pub const PARAMS_BINDING_SIZE: u64 = 256;

fn build_from(device: &wgpu::Device, spec: &KernelSpec, source: String) -> Kernel {
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
    MatmulNtXLarge,
    MatmulNtLarge,
    MatmulNtMid,
    MatmulNtSmall,
    SplitKReduce,
    RowStats,
    SublayerOut,
    Rope,
    ReduceRope,
    CausalSoftmax,
    TransposeV,
    FlashAttention,
    SiluMul,
    GeluTanh,
    GeluErf,
    Embedding,
    Depth,
    DepthCached3,
    DepthCached6,
    DepthCached9,
    DepthCached12,
    Head,
}

/// All kernels, compiled.
pub struct Kernels {
    kernels: Vec<Kernel>,
    /// The tile `matmul_nt_xlarge` was built for on this device ([`xlarge_tile`]).
    pub(crate) xlarge: NtTile,
    /// Shader files replaced by [`Kernels::with_shader_source`], by file name: kernels rebuilt
    /// later (another NT tile) are built from them too.
    replaced_sources: Vec<(&'static str, String)>,
}

impl Kernels {
    /// These kernels with one NT GEMM slot (`slot`, else `matmul_nt_mid`) rebuilt for `tile`:
    /// what `bench --matmul --sweep` times candidate tiles with, and a GEMM policy's small tile
    /// swaps in.
    pub fn with_nt_tile(
        &self,
        device: &wgpu::Device,
        tile: NtTile,
        slot: Option<KernelId>,
    ) -> Result<(Self, KernelId), String> {
        if !nt_tile_is_valid(tile) {
            return Err(format!(
                "{tile:?}: every thread must load whole vec4s of both slices"
            ));
        }
        let id = slot.unwrap_or(KernelId::MatmulNtMid);
        let spec = &KERNELS[id as usize];
        let source = self
            .replaced_sources
            .iter()
            .find(|(file, _)| *file == spec.file)
            .map_or(spec.source, |(_, text)| text.as_str());
        let mut kernels = self.kernels.clone();
        kernels[id as usize] = build_from(device, spec, nt_tile_wgsl(spec, tile, source));
        Ok((
            Self {
                kernels,
                xlarge: self.xlarge,
                replaced_sources: self.replaced_sources.clone(),
            },
            id,
        ))
    }

    /// These kernels with every entry point of shader file `file` (`depth.wgsl`) rebuilt from
    /// `source`: how `bench --shader` times a kernel variant without rebuilding depthlens. The
    /// variant must declare the same entry points and bindings; it is checked by the device
    /// (a validation error comes back as `Err`), but its indexing is trusted like ours.
    pub fn with_shader_source(
        &self,
        device: &wgpu::Device,
        file: &str,
        source: &str,
    ) -> Result<Self, String> {
        let mut kernels = self.kernels.clone();
        let mut replaced = 0;
        for (i, spec) in KERNELS.iter().enumerate() {
            if spec.file != file {
                continue;
            }
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let kernel = build_from(device, spec, device_wgsl(i, spec, self.xlarge, source));
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(format!("{file}, entry `{}`: {e}", spec.entry));
            }
            kernels[i] = kernel;
            replaced += 1;
        }
        if replaced == 0 {
            return Err(format!(
                "no kernel is built from a shader file named `{file}`"
            ));
        }
        let mut replaced_sources = self.replaced_sources.clone();
        replaced_sources.retain(|(f, _)| *f != file);
        if let Some(spec) = KERNELS.iter().find(|spec| spec.file == file) {
            replaced_sources.push((spec.file, source.to_string()));
        }
        Ok(Self {
            kernels,
            xlarge: self.xlarge,
            replaced_sources,
        })
    }

    pub fn build_all(device: &wgpu::Device) -> Self {
        let xlarge = xlarge_tile(&device.limits());
        let kernels = KERNELS
            .iter()
            .enumerate()
            .map(|(i, spec)| build_from(device, spec, device_wgsl(i, spec, xlarge, spec.source)))
            .collect();
        Self {
            kernels,
            xlarge,
            replaced_sources: Vec::new(),
        }
    }

    pub fn get(&self, id: KernelId) -> &Kernel {
        &self.kernels[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_depth_op_takes_the_smallest_cached_build_that_holds_its_sources() {
        let build = |n| depth_cached_kernel(n).map(|id| KERNELS[id as usize].name);
        assert_eq!(build(1), Some("depth_cached_3"));
        assert_eq!(build(3), Some("depth_cached_3"));
        assert_eq!(build(4), Some("depth_cached_6"));
        assert_eq!(build(9), Some("depth_cached_9"));
        assert_eq!(build(10), Some("depth_cached_12"));
        assert_eq!(build(12), Some("depth_cached_12"));
        assert_eq!(build(13), None, "past the largest build: `main`");
    }
}

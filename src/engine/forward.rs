//! Recording a whole forward pass (every sublayer, the depth ops and their Trace statistics, the
//! head's top-k and loss) as one list of dispatches, then reading back only the Trace.

use wgpu::util::DeviceExt;

use super::kernels::{
    depth_cached_kernel, AttentionKernel, KernelId, DEPTH_CACHED_DIM, DEPTH_CACHED_SLOT_VEC4S,
    FLASH_MAX_HEAD_DIM, FLASH_ROWS, MAX_SOURCES, TOP_K,
};
use super::matmul::{push_gemm, push_gemm_unreduced, Gemm};
use super::model::{GpuLinear, GpuMlp, GpuModel, GpuNorm};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

use super::plan::{elementwise_groups, row_groups, Plan, Recorded};
use super::{DepthWeights, Engine, Error};
use crate::model::{Activation, AttnResMode, NormKind, TextTokenizer, Token};
use crate::reference::forward::op_name;
use crate::reference::ops::rope_half_tables;
use crate::trace::{
    DepthOp, Mixing, ModelSummary, OpKind, Prediction, Rows, Trace, TRACE_SCHEMA_VERSION,
};

/// What to read back beyond the Trace's always-present fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuTraceOptions {
    pub logits: bool,
    /// Time every dispatch with GPU timestamps (one compute pass each; slower overall).
    pub profile: bool,
}

/// GPU time of one dispatch (profiling).
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub nanoseconds: f64,
}

/// Where one trace's wall time went, and with profiling the GPU time of every dispatch.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub kernels: Vec<KernelTime>,
    /// Writing the ids, encoding every dispatch and the readback copies, submitting.
    pub encode_ms: f64,
    /// From submission until the readback buffer is mapped: the GPU's work and the transfer.
    pub wait_ms: f64,
    /// Building the Trace from what came back.
    pub assemble_ms: f64,
}

const NONE: u32 = u32::MAX;

/// A trace submits the first 1 / this of its dispatches before encoding the rest.
const FIRST_SUBMISSION_DIVISOR: usize = 4;

/// Where a sublayer's output goes in the sources buffer.
#[derive(Clone, Copy)]
enum Sink {
    /// Full / baseline: the output is a source of its own.
    Slot(u32),
    /// Block: first sublayer of a block starts the partial in this slot...
    StartPartial(u32),
    /// ...later ones add to it.
    AddToPartial(u32),
}

/// Which slots each op reads, with their labels, and where each sublayer writes.
struct DepthLayout {
    slots: u32,
    sources: Vec<Vec<(u32, String)>>,
    sinks: Vec<Sink>,
}

fn depth_layout(cfg: &crate::model::ModelConfig) -> DepthLayout {
    let n_sub = cfg.num_sublayers();
    let mut sources = Vec::with_capacity(n_sub + 1);
    let mut sinks = Vec::with_capacity(n_sub);
    match cfg.attnres.map(|a| a.mode) {
        Some(AttnResMode::Block { block_size }) => {
            let mut completed = vec![(0u32, "emb".to_string())];
            let mut in_block = 0;
            for l in 0..n_sub {
                let slot = completed.len() as u32;
                let mut srcs = completed.clone();
                if in_block > 0 {
                    srcs.push((slot, "partial".to_string()));
                }
                sources.push(srcs);
                sinks.push(if in_block == 0 {
                    Sink::StartPartial(slot)
                } else {
                    Sink::AddToPartial(slot)
                });
                in_block += 1;
                if in_block == block_size || l + 1 == n_sub {
                    completed.push((slot, format!("B{}", completed.len())));
                    in_block = 0;
                }
            }
            sources.push(completed.clone());
            DepthLayout {
                slots: completed.len() as u32,
                sources,
                sinks,
            }
        }
        _ => {
            let mut all = vec![(0u32, "emb".to_string())];
            for l in 0..n_sub {
                sources.push(all.clone());
                sinks.push(Sink::Slot(l as u32 + 1));
                all.push((l as u32 + 1, op_name(l, cfg.num_layers)));
            }
            sources.push(all);
            DepthLayout {
                slots: n_sub as u32 + 1,
                sources,
                sinks,
            }
        }
    }
}

/// Offsets (in floats) of one op's statistics in the stats buffer.
struct OpStats {
    n: u32,
    alpha: u32,
    shares: u32,
    src_rms: u32,
    hidden_rms: u32,
    output_rms: u32,
    partial_rms: u32,
}

/// Everything a forward of one prompt length needs on the GPU, built once and reused.
pub(crate) struct Workspace {
    /// Positions whose logits one pass of the LM head holds (all T unless the binding limit
    /// splits them).
    logit_rows: u32,
    layout: DepthLayout,
    op_stats: Vec<OpStats>,
    stats_len: u32,
    head_len: u32,
    buffers: Buffers,
    recorded: Recorded,
    kernel_ids: Vec<KernelId>,
}

/// The depth sources of the tokens `[t0, t0 + tc)`, laid out `[slots, tc, d]`. They are split by
/// tokens when all of them exceed one binding (long prompts through Full AttnRes, many slots): every
/// kernel that touches the sources works per token, so it runs once per chunk.
struct SourceChunk {
    t0: u32,
    tc: u32,
    buffer: wgpu::Buffer,
}

struct Buffers {
    ids: wgpu::Buffer,
    sources: Vec<SourceChunk>,
    h: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    /// q, k, v side by side: `[T, (heads + 2 kv_heads) * hd]`.
    qkv: wgpu::Buffer,
    att: wgpu::Buffer,
    scores: wgpu::Buffer,
    /// V transposed to `[kv_heads, hd, T]` for the vec4 P V (when T is a multiple of 4).
    v_t: wgpu::Buffer,
    /// gate and up side by side (`[T, 2F]`), or the GELU MLP's fc output.
    ff_ab: wgpu::Buffer,
    ff_c: wgpu::Buffer,
    logits: wgpu::Buffer,
    head_out: wgpu::Buffer,
    stats: wgpu::Buffer,
    slot_lists: wgpu::Buffer,
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    partials: wgpu::Buffer,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A sublayer output not yet placed in the depth sources (see `Recorder::output_linear`).
struct PendingOutput {
    splits: u32,
    /// The bias, when the split-K partials do not include it yet.
    bias: Option<wgpu::Buffer>,
}

/// A sublayer output on its way to its sink slot, with where its statistics go: placed by the
/// next depth op when that op runs `main_cached` (fused), else by `sublayer_out` before it.
struct PendingSink {
    y: PendingOutput,
    slot: u32,
    /// 1: the slot takes y; 0: y is added to the Block partial already there.
    kind: u32,
    /// RMS of y (the op's output RMS), and of the partial after it (Block; NONE otherwise).
    output_rms: u32,
    partial_rms: u32,
}

struct Recorder<'a> {
    plan: Plan,
    policy: &'a super::kernels::GemmPolicy,
    model: &'a GpuModel,
    b: &'a Buffers,
    /// The depth ops' slot lists (`b.slot_lists` on the host): `main_cached` takes its slots in
    /// its parameters.
    slot_lists: &'a [u32],
    t: u32,
    /// Heads whose `T x T` scores one pass holds (all, unless the binding limit splits them).
    heads_per_pass: u32,
    /// Attention through `flash_attention` (else Q Kᵀ, softmax, P V).
    fused_attention: bool,
    /// The slots whose weight-1 sum the `h` buffer holds: the last depth op that wrote it (`main`
    /// in mode 0). The next op over the same slots plus one adds that one to it.
    residual_in_h: Option<Vec<u32>>,
}

impl Recorder<'_> {
    fn gemm(
        &mut self,
        g: Gemm,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        c: &wgpu::Buffer,
    ) {
        let has_bias = bias.is_some();
        let bias = bias.unwrap_or(&self.model.dummy);
        let buffers = [a, b, bias, c, &self.b.partials];
        push_gemm(&mut self.plan, &g, g.choice(self.policy), buffers, has_bias);
    }

    /// A sublayer's output projection `y = x W^T + bias`, left for `sublayer_out` to place: in
    /// `b.y`, or as split-K partial sums in `b.partials` (with the bias still to add).
    fn output_linear(&mut self, x: &wgpu::Buffer, l: &GpuLinear) -> PendingOutput {
        let g = Gemm::nt(self.t, l.out, l.inp);
        let has_bias = l.bias.is_some();
        let bias = l.bias.as_ref().unwrap_or(&self.model.dummy);
        let buffers = [x, &l.weight, bias, &self.b.y, &self.b.partials];
        let choice = g.choice(self.policy);
        let splits = push_gemm_unreduced(&mut self.plan, &g, choice, buffers, has_bias);
        PendingOutput {
            splits,
            bias: (splits > 1).then(|| l.bias.clone()).flatten(),
        }
    }

    /// `out = x W^T + bias` for x `[T, l.inp]`.
    fn linear(&mut self, x: &wgpu::Buffer, l: &GpuLinear, out: &wgpu::Buffer) {
        let g = Gemm::nt(self.t, l.out, l.inp);
        self.gemm(g, x, &l.weight, l.bias.as_ref(), out);
    }

    /// Mean square and RMS of `rows` rows of `x` from element `x_off`, into the stats buffer.
    fn row_stats(&mut self, x: &wgpu::Buffer, x_off: u32, rows: u32, ms_off: u32, rms_off: u32) {
        let d = self.model.cfg.hidden_size as u32;
        let params = [rows, d, x_off, 0, 0, 0, ms_off, rms_off];
        let dummy = &self.model.dummy;
        self.plan.push(
            KernelId::RowStats,
            &params,
            &[x, dummy, dummy, &self.b.stats],
            row_groups(rows),
        );
    }

    /// An activations.wgsl kernel over `rows x width` elements; each operand is (buffer,
    /// offset, row stride), and a and b are the sum of `splits` split-K partials `stride` apart
    /// (`(1, 0)`: a plain tensor).
    fn elementwise(
        &mut self,
        kernel: KernelId,
        (rows, width): (u32, u32),
        a: (&wgpu::Buffer, u32, u32),
        b: (&wgpu::Buffer, u32, u32),
        out: (&wgpu::Buffer, u32, u32),
        (splits, stride): (u32, u32),
    ) {
        let n = rows * width;
        let params = [n, a.1, b.1, out.1, width, a.2, b.2, out.2, splits, stride];
        self.plan
            .push(kernel, &params, &[a.0, b.0, out.0], elementwise_groups(n));
    }

    fn attention(&mut self, layer: &super::model::GpuLayer) -> PendingOutput {
        let cfg = &self.model.cfg;
        let b = self.b;
        let (t, hd) = (self.t, cfg.head_dim as u32);
        let (heads, kv_heads) = (cfg.num_heads as u32, cfg.num_kv_heads as u32);
        let row = (heads + 2 * kv_heads) * hd;
        let (k_off, v_off) = (heads * hd, (heads + kv_heads) * hd);
        // q's and k's heads are adjacent in a row: one pass rotates both. With split-K that pass
        // also sums the partials (and adds the bias), instead of a reduction dispatch of its own.
        let g = Gemm::nt(t, row, layer.qkv.inp);
        let choice = g.choice(self.policy);
        let h = heads + kv_heads;
        if cfg.rope.is_some() && choice.splits > 1 {
            let has_bias = layer.qkv.bias.is_some();
            let bias = layer.qkv.bias.as_ref().unwrap_or(&self.model.dummy);
            let buffers = [&b.x, &layer.qkv.weight, bias, &b.qkv, &b.partials];
            let splits = push_gemm_unreduced(&mut self.plan, &g, choice, buffers, false);
            let params = [t, h, hd, 0, row, splits, t * row, u32::from(has_bias)];
            let groups = elementwise_groups(t * (h * hd / 2 + row - h * hd));
            let buffers = [&b.cos, &b.sin, &b.qkv, &b.partials, bias];
            self.plan
                .push(KernelId::ReduceRope, &params, &buffers, groups);
        } else {
            self.linear(&b.x, &layer.qkv, &b.qkv);
            if cfg.rope.is_some() {
                let params = [t, h, hd, 0, row, 1, 0, 0];
                let groups = elementwise_groups(t * h * hd / 2);
                self.plan
                    .push(KernelId::Rope, &params, &[&b.cos, &b.sin, &b.qkv], groups);
            }
        }
        let group = heads / kv_heads;
        let window = cfg.sliding_window.map(|w| w as u32).unwrap_or(NONE);
        if self.fused_attention {
            let params = [
                t,
                heads,
                group,
                hd,
                row,
                k_off,
                v_off,
                window,
                (1.0 / (hd as f32).sqrt()).to_bits(),
                heads * hd,
                0,
                0,
            ];
            self.plan.push(
                KernelId::FlashAttention,
                &params,
                &[&b.qkv, &b.att],
                [t.div_ceil(FLASH_ROWS), heads, 1],
            );
            return self.output_linear(&b.att, &layer.o);
        }
        let v_t = transposed_v(t, self.fused_attention);
        if v_t {
            self.plan.push(
                KernelId::TransposeV,
                &[t, kv_heads, hd, row, v_off, 0, 0, 0],
                &[&b.qkv, &b.v_t],
                elementwise_groups(t * kv_heads * hd),
            );
        }
        // Heads in passes of `heads_per_pass` (whole kv groups, or within one), so that the
        // scores of a pass fit one binding.
        let mut h0 = 0;
        while h0 < heads {
            let hs = self.heads_per_pass.min(heads - h0);
            // scores[h] = Q_h K_{h/group}^T / sqrt(hd)
            let scores = Gemm {
                m: t,
                n: t,
                k: hd,
                batch: hs,
                b_group: group,
                a_off: h0 * hd,
                a_bstride: hd,
                a_rs: row,
                b_off: k_off + (h0 / group) * hd,
                b_bstride: hd,
                b_sk: 1,
                b_sn: row,
                c_off: 0,
                c_bstride: t * t,
                c_rs: t,
                accumulate: false,
                alpha: 1.0 / (hd as f32).sqrt(),
                causal: 1,
            };
            self.gemm(scores, &b.qkv, &b.qkv, None, &b.scores);
            self.plan.push(
                KernelId::CausalSoftmax,
                &[hs, t, window, 0],
                &[&b.scores],
                row_groups(hs * t),
            );
            // att[:, h] = P_h V_{h/group}, V read from its transpose when there is one.
            let (v, b_off, b_bstride, b_sk, b_sn) = if v_t {
                (&b.v_t, (h0 / group) * hd * t, hd * t, 1, t)
            } else {
                (&b.qkv, v_off + (h0 / group) * hd, hd, row, 1)
            };
            let pv = Gemm {
                m: t,
                n: hd,
                k: t,
                batch: hs,
                b_group: group,
                a_off: 0,
                a_bstride: t * t,
                a_rs: t,
                b_off,
                b_bstride,
                b_sk,
                b_sn,
                c_off: h0 * hd,
                c_bstride: hd,
                c_rs: heads * hd,
                accumulate: false,
                alpha: 1.0,
                causal: 2,
            };
            self.gemm(pv, &b.scores, v, None, &b.att);
            h0 += hs;
        }
        self.output_linear(&b.att, &layer.o)
    }

    fn mlp(&mut self, layer: &super::model::GpuLayer) -> PendingOutput {
        let b = self.b;
        let f = self.model.cfg.intermediate_size as u32;
        let shape = (self.t, f);
        match &layer.mlp {
            GpuMlp::SwiGlu { gate_up, down } => {
                // With split-K (and no bias) SiLU * up sums the partials itself.
                let g = Gemm::nt(self.t, 2 * f, gate_up.inp);
                let choice = g.choice(self.policy);
                let (src, splits) = if choice.splits > 1 && gate_up.bias.is_none() {
                    let dummy = &self.model.dummy;
                    let buffers = [&b.x, &gate_up.weight, dummy, &b.ff_ab, &b.partials];
                    let splits = push_gemm_unreduced(&mut self.plan, &g, choice, buffers, false);
                    (&b.partials, splits)
                } else {
                    self.linear(&b.x, gate_up, &b.ff_ab);
                    (&b.ff_ab, 1)
                };
                self.elementwise(
                    KernelId::SiluMul,
                    shape,
                    (src, 0, 2 * f),
                    (src, f, 2 * f),
                    (&b.ff_c, 0, f),
                    (splits, self.t * 2 * f),
                );
                self.output_linear(&b.ff_c, down)
            }
            GpuMlp::Gelu { fc, proj } => {
                self.linear(&b.x, fc, &b.ff_ab);
                let kernel = match self.model.cfg.activation {
                    Activation::GeluErf => KernelId::GeluErf,
                    _ => KernelId::GeluTanh,
                };
                let dense = (&b.ff_ab, 0, f);
                self.elementwise(kernel, shape, dense, dense, (&b.ff_c, 0, f), (1, 0));
                self.output_linear(&b.ff_c, proj)
            }
        }
    }
}

/// Prompts at least this long read V transposed in P V. On the H100 the transpose's dispatch per
/// layer cost ~0.3 ms of a 4.5 ms forward at T = 64 (30 layers), broke even at T = 512 and saved
/// ~6 ms of 33 at T = 2048, where P V on the generic kernel was a quarter of the forward.
pub const TRANSPOSED_V_MIN_TOKENS: u32 = 256;

/// Whether P V reads V transposed (`transpose_v`): the GEMM attention path on a long prompt, with
/// T a multiple of 4 so that the transposed rows are 16-byte aligned for `gemm_nt` (else the
/// generic kernel reads V in place and a transpose would buy nothing).
fn transposed_v(t: u32, fused_attention: bool) -> bool {
    !fused_attention && t >= TRANSPOSED_V_MIN_TOKENS && t.is_multiple_of(4)
}

/// Heads per attention pass whose `T x T` scores fit in `max_floats`: all of them if they fit,
/// else a multiple of the GQA group or a divisor of it (a pass never straddles a kv head unless
/// it covers whole groups). At least 1 (one head's scores were checked to fit).
fn attention_heads_per_pass(heads: u32, group: u32, t: u32, max_floats: u64) -> u32 {
    let fit = (max_floats / (u64::from(t) * u64::from(t)).max(1)).min(u64::from(heads)) as u32;
    (1..=fit.max(1))
        .rev()
        .find(|&g| g.is_multiple_of(group) || group.is_multiple_of(g))
        .unwrap_or(1)
}

fn storage(device: &wgpu::Device, label: &str, floats: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats * 4).max(16),
        usage: USAGE,
        mapped_at_creation: false,
    })
}

fn init(device: &wgpu::Device, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let mut data = bytes.to_vec();
    data.resize(data.len().max(16), 0);
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &data,
        usage: USAGE,
    })
}

impl Engine {
    /// The Trace of `tokens` (no gradients: those come from the reference).
    pub fn trace(
        &self,
        model: &GpuModel,
        tokenizer: &TextTokenizer,
        tokens: Vec<Token>,
        opts: GpuTraceOptions,
    ) -> Result<Trace, Error> {
        self.trace_profiled(model, tokenizer, tokens, opts)
            .map(|(t, _)| t)
    }

    /// The Trace and where its time went (with `opts.profile`, per dispatch on the GPU).
    pub fn trace_profiled(
        &self,
        model: &GpuModel,
        tokenizer: &TextTokenizer,
        tokens: Vec<Token>,
        opts: GpuTraceOptions,
    ) -> Result<(Trace, Profile), Error> {
        let cfg = &model.cfg;
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        crate::reference::check_ids(cfg, &ids)?;
        let workspace = self.workspace(model, ids.len() as u32)?;
        // A poisoned lock only means an earlier trace panicked; the buffers are still whole.
        let ws = workspace.lock().unwrap_or_else(|e| e.into_inner());
        self.run(model, &ws, tokenizer, tokens, &ids, opts)
    }

    /// Buffers, bind groups and the recorded dispatches for prompts of `t` tokens: built once per
    /// length and model, so that a trace only writes the ids, submits and reads back.
    fn workspace(&self, model: &GpuModel, t: u32) -> Result<Arc<Mutex<Workspace>>, Error> {
        let mut cache = model.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, ws)) = cache.iter().find(|(len, _)| *len == t) {
            return Ok(ws.clone());
        }
        let ws = Arc::new(Mutex::new(self.build_workspace(model, t)?));
        // Keep a few lengths (live typing revisits them); drop the oldest.
        if cache.len() >= 4 {
            cache.remove(0);
        }
        cache.push((t, ws.clone()));
        Ok(ws)
    }

    fn build_workspace(&self, model: &GpuModel, t: u32) -> Result<Workspace, Error> {
        let cfg = &model.cfg;
        let d = cfg.hidden_size as u32;
        let vocab = cfg.vocab_size as u32;
        let (heads, kv_heads, hd) = (
            cfg.num_heads as u32,
            cfg.num_kv_heads as u32,
            cfg.head_dim as u32,
        );
        let layout = depth_layout(cfg);
        if let Some(n) = layout
            .sources
            .iter()
            .map(Vec::len)
            .max()
            .filter(|&n| n as u32 > MAX_SOURCES)
        {
            return Err(Error::Unsupported(format!(
                "{n} depth sources (at most {MAX_SOURCES})"
            )));
        }
        let hint = "shorten the prompt or use --device cpu";
        let fused_attention = self.attention == AttentionKernel::Fused && hd <= FLASH_MAX_HEAD_DIM;
        // The fused kernel keeps no scores.
        let score_floats = if fused_attention {
            1
        } else {
            u64::from(t) * u64::from(t)
        };
        let sizes = [
            // All tokens' sources are split into token chunks below.
            (
                "the depth sources of one token",
                u64::from(layout.slots) * u64::from(d),
            ),
            // One head's scores, one position's logits: more are split into passes below.
            ("the attention scores of one head", score_floats),
            ("the logits of one position", u64::from(vocab)),
            (
                "the MLP activations",
                2 * u64::from(t) * cfg.intermediate_size as u64,
            ),
        ];
        for (what, floats) in sizes {
            self.check_size(what, floats * 4, hint)?;
        }
        let max_floats = self.max_binding() / 4;
        let heads_per_pass = attention_heads_per_pass(heads, heads / kv_heads, t, max_floats);
        let logit_rows = (max_floats / u64::from(vocab)).min(u64::from(t)) as u32;
        let source_tokens =
            (max_floats / (u64::from(layout.slots) * u64::from(d))).min(u64::from(t)) as u32;

        // Stats buffer layout: source mean squares, then each op's statistics.
        let mut cursor = layout.slots * t;
        let mut op_stats = Vec::with_capacity(layout.sources.len());
        let mut lists: Vec<u32> = Vec::new();
        let mut list_offsets = Vec::new();
        for srcs in &layout.sources {
            let n = srcs.len() as u32;
            list_offsets.push(lists.len() as u32);
            lists.extend(srcs.iter().map(|(slot, _)| *slot));
            let mut take = |len: u32| {
                let at = cursor;
                cursor += len;
                at
            };
            op_stats.push(OpStats {
                n,
                alpha: take(t * n),
                shares: take(t * n),
                src_rms: take(t * n),
                hidden_rms: take(t),
                output_rms: take(t),
                partial_rms: take(t),
            });
        }
        let stats_len = cursor;
        let head_len = t * (2 * TOP_K + 1);

        let (cos, sin): (Vec<f32>, Vec<f32>) = match &cfg.rope {
            Some(rope) => {
                let (c, s) = rope_half_tables(rope, cfg.head_dim, t as usize);
                (
                    c.iter().map(|&v| v as f32).collect(),
                    s.iter().map(|&v| v as f32).collect(),
                )
            }
            None => (vec![0.0], vec![0.0]),
        };
        let dev = &self.device;
        let ff = u64::from(t) * cfg.intermediate_size as u64;
        let b = Buffers {
            ids: storage(dev, "ids", u64::from(t)),
            sources: (0..t)
                .step_by(source_tokens as usize)
                .map(|t0| {
                    let tc = source_tokens.min(t - t0);
                    SourceChunk {
                        t0,
                        tc,
                        buffer: storage(
                            dev,
                            "sources",
                            u64::from(layout.slots) * u64::from(tc) * u64::from(d),
                        ),
                    }
                })
                .collect(),
            h: storage(dev, "h", u64::from(t * d)),
            x: storage(dev, "x", u64::from(t * d)),
            y: storage(dev, "y", u64::from(t * d)),
            qkv: storage(dev, "qkv", u64::from(t * (heads + 2 * kv_heads) * hd)),
            att: storage(dev, "att", u64::from(t * heads * hd)),
            scores: storage(dev, "scores", u64::from(heads_per_pass) * score_floats),
            v_t: storage(
                dev,
                "v_t",
                if transposed_v(t, fused_attention) {
                    u64::from(t * kv_heads * hd)
                } else {
                    1
                },
            ),
            ff_ab: storage(dev, "ff_ab", 2 * ff),
            ff_c: storage(dev, "ff_c", ff),
            logits: storage(dev, "logits", u64::from(logit_rows) * u64::from(vocab)),
            head_out: storage(dev, "head_out", u64::from(head_len)),
            stats: storage(dev, "stats", u64::from(stats_len)),
            slot_lists: init(dev, "slot_lists", bytemuck::cast_slice(&lists)),
            cos: init(dev, "cos", bytemuck::cast_slice(&cos)),
            sin: init(dev, "sin", bytemuck::cast_slice(&sin)),
            partials: super::matmul::partials_buffer(dev, &self.gemm_policy),
        };
        let mut r = Recorder {
            plan: Plan::new(self.limits.min_uniform_buffer_offset_alignment),
            policy: &self.gemm_policy,
            model,
            b: &b,
            slot_lists: &lists,
            t,
            heads_per_pass,
            fused_attention,
            residual_in_h: None,
        };

        // Embedding (+ learned positions) into slot 0, and its mean square for depth keys.
        for sc in &b.sources {
            for chunk in &model.embed {
                let has_pos = u32::from(model.positions.is_some());
                let positions = model.positions.as_ref().unwrap_or(&model.dummy);
                let params = [sc.tc, d, chunk.row0, chunk.rows, has_pos, 0, sc.t0, 0];
                r.plan.push(
                    KernelId::Embedding,
                    &params,
                    &[&b.ids, &chunk.buffer, positions, &sc.buffer],
                    elementwise_groups(sc.tc * d),
                );
            }
            r.row_stats(&sc.buffer, 0, sc.tc, sc.t0, NONE);
        }

        let eps = cfg.attnres.map(|a| a.eps).unwrap_or(0.0) as f32;
        // Without a pseudo-query an op sums its sources with weight 1 (depth.wgsl's mode 0).
        let learned = self.depth_weights == DepthWeights::Learned;
        let mut pending: Option<PendingSink> = None;
        for (l, (st, sink)) in op_stats.iter().zip(&layout.sinks).enumerate() {
            let layer = &model.layers[l / 2];
            let qg = if l % 2 == 0 {
                layer.attn_qg.as_ref()
            } else {
                layer.mlp_qg.as_ref()
            }
            .filter(|_| learned);
            let norm = if l % 2 == 0 {
                &layer.attn_norm
            } else {
                &layer.mlp_norm
            };
            depth_op(&mut r, st, list_offsets[l], qg, eps, norm, pending.take());
            let y = if l % 2 == 0 {
                r.attention(layer)
            } else {
                r.mlp(layer)
            };
            // y joins the sources: its own slot (Full, baseline) or the Block partial sum.
            let (slot, kind, partial_rms) = match *sink {
                Sink::Slot(s) => (s, 1, NONE),
                Sink::StartPartial(s) => (s, 1, st.partial_rms),
                Sink::AddToPartial(s) => (s, 0, st.partial_rms),
            };
            pending = Some(PendingSink {
                y,
                slot,
                kind,
                output_rms: st.output_rms,
                partial_rms,
            });
        }
        // Final op: aggregation (or residual sum), final norm, head, top-k and loss.
        let n_sub = cfg.num_sublayers();
        let fin = &op_stats[n_sub];
        depth_op(
            &mut r,
            fin,
            list_offsets[n_sub],
            model.final_qg.as_ref().filter(|_| learned),
            eps,
            &model.final_norm,
            pending.take(),
        );
        r.row_stats(&b.x, 0, t, NONE, fin.output_rms);
        // The LM head and its statistics over positions in passes of `logit_rows`, so that the
        // logits of a pass fit one binding.
        let mut r0 = 0;
        while r0 < t {
            let rows = logit_rows.min(t - r0);
            for chunk in model.head_chunks() {
                let g = Gemm {
                    m: rows,
                    n: chunk.rows,
                    k: d,
                    batch: 1,
                    a_off: r0 * d,
                    a_rs: d,
                    b_sk: 1,
                    b_sn: d,
                    c_off: chunk.row0,
                    c_rs: vocab,
                    alpha: 1.0,
                    ..Default::default()
                };
                r.gemm(g, &b.x, &chunk.buffer, None, &b.logits);
            }
            r.plan.push(
                KernelId::Head,
                &[rows, vocab, 0, 0, r0, t],
                &[&b.logits, &b.ids, &b.head_out],
                row_groups(rows),
            );
            r0 += rows;
        }

        let kernel_ids = r.plan.kernel_ids();
        let recorded = r.plan.build(dev, &self.kernels);
        Ok(Workspace {
            logit_rows,
            layout,
            op_stats,
            stats_len,
            head_len,
            buffers: b,
            recorded,
            kernel_ids,
        })
    }

    /// One forward on a prepared workspace: write the ids, submit, read back, build the Trace.
    fn run(
        &self,
        model: &GpuModel,
        ws: &Workspace,
        tokenizer: &TextTokenizer,
        tokens: Vec<Token>,
        ids: &[u32],
        opts: GpuTraceOptions,
    ) -> Result<(Trace, Profile), Error> {
        let started = std::time::Instant::now();
        let cfg = &model.cfg;
        let dev = &self.device;
        let t = ids.len() as u32;
        let vocab = cfg.vocab_size as u32;
        let n_sub = cfg.num_sublayers();
        let (b, layout, op_stats, stats_len, head_len) = (
            &ws.buffers,
            &ws.layout,
            &ws.op_stats,
            ws.stats_len,
            ws.head_len,
        );
        let kernel_ids = &ws.kernel_ids;
        if opts.logits && ws.logit_rows < t {
            return Err(Error::Limit {
                adapter: self.adapter_name.clone(),
                what: "the logits of every position (asked for with the Trace)".into(),
                needed: u64::from(t) * u64::from(vocab) * 4,
                limit: self.max_binding(),
                hint:
                    "trace without logits (the top-k and loss still come back), or a shorter prompt"
                        .into(),
            });
        }
        self.queue
            .write_buffer(&b.ids, 0, bytemuck::cast_slice(ids));
        // The forward, then copies of what the Trace needs into one staging buffer, read back once.
        let mut encoder = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("trace"),
        });
        let profile = opts.profile
            && self
                .device
                .features()
                .contains(wgpu::Features::TIMESTAMP_QUERY);
        if opts.profile && !profile {
            return Err(Error::Unsupported(format!(
                "GPU timestamps on `{}`",
                self.adapter_name
            )));
        }
        let n_queries = (2 * kernel_ids.len()) as u32;
        if profile && n_queries > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(Error::Unsupported(format!(
                "profiling {} dispatches in one forward",
                kernel_ids.len()
            )));
        }
        let query_set = profile.then(|| {
            dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: n_queries,
            })
        });
        let dispatches = ws.recorded.dispatch_count();
        // Without timestamps the first part goes to the GPU while the host encodes the rest:
        // encoding takes ~1-3 us per dispatch, time the GPU would otherwise sit idle.
        let first = if profile {
            0
        } else {
            dispatches / FIRST_SUBMISSION_DIVISOR
        };
        if first > 0 {
            let mut head = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("trace (first part)"),
            });
            ws.recorded
                .encode_range(&self.kernels, &mut head, 0..first, None);
            self.queue.submit([head.finish()]);
        }
        ws.recorded.encode_range(
            &self.kernels,
            &mut encoder,
            first..dispatches,
            query_set.as_ref(),
        );
        let times_bytes = if profile { u64::from(n_queries) * 8 } else { 0 };
        let times_staging = query_set.as_ref().map(|qs| {
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: times_bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            encoder.resolve_query_set(qs, 0..n_queries, &resolve, 0);
            let staging = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size: times_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, times_bytes);
            staging
        });
        let stats_bytes = u64::from(stats_len) * 4;
        let head_bytes = u64::from(head_len) * 4;
        let logits_bytes = if opts.logits {
            u64::from(t) * u64::from(vocab) * 4
        } else {
            0
        };
        let staging = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (stats_bytes + head_bytes + logits_bytes).max(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(&b.stats, 0, &staging, 0, stats_bytes);
        encoder.copy_buffer_to_buffer(&b.head_out, 0, &staging, stats_bytes, head_bytes);
        if opts.logits {
            encoder.copy_buffer_to_buffer(
                &b.logits,
                0,
                &staging,
                stats_bytes + head_bytes,
                logits_bytes,
            );
        }
        self.queue.submit([encoder.finish()]);
        let submitted = std::time::Instant::now();
        let data = self.read(&staging)?;
        let mapped = std::time::Instant::now();
        let mut kernel_times = Vec::new();
        if let Some(ts) = &times_staging {
            let raw: Vec<u64> = bytemuck::cast_slice::<f32, u64>(&self.read(ts)?).to_vec();
            let period = f64::from(self.queue.get_timestamp_period());
            for (i, id) in kernel_ids.iter().enumerate() {
                let (begin, end) = (raw[2 * i], raw[2 * i + 1]);
                kernel_times.push(KernelTime {
                    kernel: self.kernels.get(*id).name,
                    nanoseconds: end.saturating_sub(begin) as f64 * period,
                });
            }
        }
        let stats = &data[..stats_len as usize];
        let head = &data[stats_len as usize..(stats_len + head_len) as usize];

        let rows = |off: u32, n: u32| -> Rows {
            let flat = stats[off as usize..(off + t * n) as usize].to_vec();
            Rows::from_flat(t as usize, n as usize, flat).expect("a slice of t * n values")
        };
        let vec = |off: u32| stats[off as usize..(off + t) as usize].to_vec();
        let block = matches!(cfg.attnres.map(|a| a.mode), Some(AttnResMode::Block { .. }));
        let mixing = if cfg.attnres.is_some() {
            Mixing::DepthAttention
        } else {
            Mixing::ResidualSum
        };
        // Tens of thousands of per-token rows: spread over the CPU's threads.
        let ops = op_stats
            .par_iter()
            .zip(&layout.sources)
            .enumerate()
            .map(|(l, (st, srcs))| {
                let is_final = l == n_sub;
                DepthOp {
                    name: op_name(l, cfg.num_layers),
                    layer: if is_final { cfg.num_layers } else { l / 2 },
                    kind: if is_final {
                        OpKind::Final
                    } else if l % 2 == 0 {
                        OpKind::Attn
                    } else {
                        OpKind::Mlp
                    },
                    mixing,
                    sources: srcs.iter().map(|(_, label)| label.clone()).collect(),
                    alpha: rows(st.alpha, st.n),
                    shares: rows(st.shares, st.n),
                    source_rms: rows(st.src_rms, st.n),
                    hidden_rms: vec(st.hidden_rms),
                    output_rms: vec(st.output_rms),
                    partial_rms: (block && !is_final).then(|| vec(st.partial_rms)),
                    grad_rms: None,
                }
            })
            .collect();
        let k = TOP_K as usize;
        let mut nll_sum = 0f64;
        let mut token_nll = vec![None; t as usize];
        // Neighbouring positions predict the same tokens: decode each id once.
        let mut texts: std::collections::HashMap<u32, String> = Default::default();
        let topk = (0..t as usize)
            .map(|i| {
                let row = &head[i * (2 * k + 1)..(i + 1) * (2 * k + 1)];
                if i + 1 < t as usize {
                    nll_sum += f64::from(row[2 * k]);
                    token_nll[i + 1] = Some(row[2 * k]);
                }
                (0..k)
                    .filter(|&j| row[j].to_bits() != u32::MAX)
                    .map(|j| {
                        let id = row[j].to_bits();
                        Prediction {
                            id,
                            text: texts
                                .entry(id)
                                .or_insert_with(|| tokenizer.decode(&[id]))
                                .clone(),
                            prob: row[k + j],
                        }
                    })
                    .collect()
            })
            .collect();
        let logits = opts.logits.then(|| {
            let all = &data[(stats_len + head_len) as usize..];
            all.chunks(vocab as usize)
                .take(t as usize)
                .map(<[f32]>::to_vec)
                .collect()
        });
        let trace = Trace {
            schema_version: TRACE_SCHEMA_VERSION,
            model: ModelSummary::of(cfg),
            device: self.adapter_name().to_string(),
            tokens,
            ops,
            topk,
            loss: (t >= 2).then(|| (nll_sum / f64::from(t - 1)) as f32),
            token_nll,
            grads: None,
            logits,
            warnings: Vec::new(),
        };
        let profile = Profile {
            kernels: kernel_times,
            encode_ms: (submitted - started).as_secs_f64() * 1e3,
            wait_ms: (mapped - submitted).as_secs_f64() * 1e3,
            assemble_ms: mapped.elapsed().as_secs_f64() * 1e3,
        };
        Ok((trace, profile))
    }

    /// Map a staging buffer and copy it out as f32.
    pub(crate) fn read(&self, staging: &wgpu::Buffer) -> Result<Vec<f32>, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// `sublayer_out`: the pending sublayer output into its sink slot, with its statistics.
fn place_output(r: &mut Recorder, out: &PendingSink) {
    let d = r.model.cfg.hidden_size as u32;
    let t = r.t;
    let b = r.b;
    let input = if out.y.splits > 1 { &b.partials } else { &b.y };
    let bias = out.y.bias.as_ref().unwrap_or(&r.model.dummy);
    for sc in &b.sources {
        let params = [
            sc.tc,
            d,
            sc.t0 * d,
            out.slot * sc.tc * d,
            out.kind,
            0,
            out.slot * t + sc.t0,
            if out.partial_rms == NONE {
                NONE
            } else {
                out.partial_rms + sc.t0
            },
            out.output_rms + sc.t0,
            out.y.splits,
            t * d,
            u32::from(out.y.bias.is_some()),
        ];
        r.plan.push(
            KernelId::SublayerOut,
            &params,
            &[input, bias, &r.model.dummy, &sc.buffer, &b.stats],
            row_groups(sc.tc),
        );
    }
}

/// The depth op of one sublayer (or the final one) and the PreNorm `norm` of its output into `x`.
/// `list_off` is where the op's slots start in the slot lists. `pending`, the previous sublayer's
/// output, is placed first: inside the op's own dispatch when it runs `main_cached`.
fn depth_op(
    r: &mut Recorder,
    st: &OpStats,
    list_off: u32,
    qg: Option<&wgpu::Buffer>,
    eps: f32,
    norm: &GpuNorm,
    pending: Option<PendingSink>,
) {
    let d = r.model.cfg.hidden_size as u32;
    let mode = u32::from(qg.is_some());
    let (norm_kind, norm_eps) = match r.model.cfg.norm {
        NormKind::Rms { eps } => (0, eps),
        NormKind::Layer { eps } => (1, eps),
    };
    let qg = qg.unwrap_or(&r.model.dummy);
    let beta = norm.bias.as_ref().unwrap_or(&r.model.dummy);
    let b = r.b;
    // One read of the sources when they fit in registers (as vec4s); otherwise `main` reads them
    // to score (AttnRes), to mix (unless it adds one source to h, below) and for the shares.
    let cached = depth_cached_kernel(st.n).filter(|_| d <= DEPTH_CACHED_DIM && d.is_multiple_of(4));
    if cached.is_none() {
        if let Some(out) = &pending {
            place_output(r, out);
        }
    }
    let fused = pending.as_ref().filter(|_| cached.is_some());
    // PreNorm's residual stream grows by one source per op (baseline, Full with weights 1): when
    // h holds the sum of this op's other sources, `main` adds the new one instead of summing all.
    let lists: &[u32] = r.slot_lists;
    let op_slots = &lists[list_off as usize..(list_off + st.n) as usize];
    let weight_one_main = cached.is_none() && mode == 0;
    let h_holds_previous = weight_one_main
        && op_slots
            .split_last()
            .is_some_and(|(_, rest)| r.residual_in_h.as_deref() == Some(rest));
    r.residual_in_h = weight_one_main.then(|| op_slots.to_vec());
    let mut slots = [0u32; 4 * DEPTH_CACHED_SLOT_VEC4S as usize];
    if cached.is_some() {
        slots[..op_slots.len()].copy_from_slice(op_slots);
    }
    let dummy = &r.model.dummy;
    let (yin, bias) = match fused {
        Some(out) if out.y.splits > 1 => (&b.partials, out.y.bias.as_ref().unwrap_or(dummy)),
        Some(out) => (&b.y, out.y.bias.as_ref().unwrap_or(dummy)),
        None => (dummy, dummy),
    };
    for sc in &b.sources {
        let mut params = vec![
            r.t,
            d,
            st.n,
            mode,
            list_off,
            0,
            0,
            eps.to_bits(),
            0,
            st.alpha,
            st.shares,
            st.src_rms,
            st.hidden_rms,
            norm_kind,
            (norm_eps as f32).to_bits(),
            sc.t0,
            sc.tc,
            u32::from(fused.is_some()),
            fused.map_or(0, |o| o.slot),
            fused.map_or(0, |o| o.kind),
            fused.map_or(NONE, |o| o.output_rms),
            fused.map_or(NONE, |o| o.partial_rms),
            fused.map_or(1, |o| o.y.splits),
            r.t * d,
            u32::from(fused.is_some_and(|o| o.y.bias.is_some())),
            u32::from(h_holds_previous),
            0,
            0,
        ];
        params.extend_from_slice(&slots);
        let buffers: [&wgpu::Buffer; 8] = if cached.is_some() {
            [
                &sc.buffer,
                yin,
                qg,
                bias,
                &b.stats,
                &norm.weight,
                beta,
                &b.x,
            ]
        } else {
            [
                &sc.buffer,
                &b.slot_lists,
                qg,
                &b.h,
                &b.stats,
                &norm.weight,
                beta,
                &b.x,
            ]
        };
        r.plan.push(
            cached.unwrap_or(KernelId::Depth),
            &params,
            &buffers,
            row_groups(sc.tc),
        );
    }
}

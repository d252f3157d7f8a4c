//! The GPU engine against the candle reference, on Mesa's software Vulkan in CI (a real GPU where
//! there is one). These tests fail, never skip, when no adapter is found.

mod common;

use std::sync::OnceLock;

use depthlens::engine::kernels::{
    wgsl, AttentionKernel, GemmChoice, GemmPolicy, KernelId, KERNELS, NT_LARGE, NT_MID, NT_SMALL,
    NT_XLARGE, NT_XLARGE_DEEP,
};
use depthlens::engine::matmul::Gemm;
use depthlens::engine::{DepthWeights, Engine, GpuTraceOptions, TRANSPOSED_V_MIN_TOKENS};
use depthlens::model::random::Rng;
use depthlens::model::{ModelConfig, TextTokenizer, Weights};
use depthlens::progress::Silent;
use depthlens::reference::{self, TraceOptions};
use depthlens::trace::{DepthOp, Trace};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new().unwrap_or_else(|e| {
            panic!("GPU tests need an adapter (CI installs lavapipe via scripts/setup.sh): {e}")
        })
    })
}

/// An engine whose forwards run attention through `flash_attention`.
fn fused_attention_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut engine = Engine::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
        engine.set_attention(AttentionKernel::Fused);
        engine
    })
}

#[test]
fn every_shipped_wgsl_kernel_parses_and_validates() {
    for spec in KERNELS {
        let source = wgsl(spec);
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!(
                "{} ({}): {}",
                spec.name,
                spec.file,
                e.emit_to_string(&source)
            )
        });
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{} ({}): {e:?}", spec.name, spec.file));
        let (index, entry) = module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == spec.entry)
            .unwrap_or_else(|| panic!("{}: entry {}", spec.name, spec.entry));
        // WebGPU's default limits (what eframe's device has unless told otherwise): every kernel
        // must fit them, since the app hands its device to the engine.
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let uses = info.get_entry_point(index);
        let workgroup_bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(h, g)| g.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
            .map(|(_, g)| layouter[g.ty].size)
            .sum();
        assert!(
            workgroup_bytes <= 16384,
            "{}: {workgroup_bytes} bytes of workgroup memory, past WebGPU's default 16384",
            spec.name
        );
        let invocations: u32 = entry.workgroup_size.iter().product();
        assert!(
            invocations <= 256,
            "{}: {invocations} invocations per workgroup, past WebGPU's default 256",
            spec.name
        );
    }
}

fn both(kind: &str, ids: &[u32]) -> (Trace, Trace) {
    both_on(engine(), kind, ids)
}

fn both_on(engine: &Engine, kind: &str, ids: &[u32]) -> (Trace, Trace) {
    // The tiny model, with positions for a longer prompt when one is given.
    let mut cfg = common::tiny_config(kind);
    cfg.max_positions = cfg.max_positions.max(ids.len());
    let w = common::tiny_weights(&cfg, 31);
    let tok = TextTokenizer::byte_fallback();
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    let cpu =
        reference::trace_tokens(&cfg, &w, &tok, tok.tokens_from_ids(ids), opts, &Silent).unwrap();
    let gpu_model = engine.load(&cfg, &w).unwrap();
    let gpu = engine
        .trace(
            &gpu_model,
            &tok,
            tok.tokens_from_ids(ids),
            GpuTraceOptions {
                logits: true,
                profile: false,
            },
        )
        .unwrap();
    (cpu, gpu)
}

fn assert_rel(what: &str, gpu: &[f32], cpu: &[f32], floor: f32, tol: f32) {
    let err = common::max_rel_err(gpu, cpu, floor);
    assert!(err <= tol, "{what}: max rel err {err:.2e} > {tol:.0e}");
}

fn assert_parity(kind: &str, ids: &[u32]) {
    assert_parity_on(engine(), kind, ids);
}

fn assert_parity_on(engine: &Engine, kind: &str, ids: &[u32]) {
    let (cpu, gpu) = both_on(engine, kind, ids);
    let err = common::normwise_err(
        &gpu.logits.as_ref().unwrap().concat(),
        &cpu.logits.as_ref().unwrap().concat(),
    );
    assert!(
        err < 1e-5,
        "{kind}: logits max |diff| / max |logit| = {err:.2e}"
    );
    assert_traces_match(kind, &gpu, &cpu, 1e-4);
}

/// The reference's and `engine`'s Traces of `ids` (no logits), as (gpu, cpu).
fn gpu_and_cpu(engine: &Engine, cfg: &ModelConfig, w: &Weights, ids: &[u32]) -> (Trace, Trace) {
    let tok = TextTokenizer::byte_fallback();
    let tokens = || tok.tokens_from_ids(ids);
    let cpu =
        reference::trace_tokens(cfg, w, &tok, tokens(), TraceOptions::default(), &Silent).unwrap();
    let model = engine.load(cfg, w).unwrap();
    let gpu = engine
        .trace(&model, &tok, tokens(), GpuTraceOptions::default())
        .unwrap();
    (gpu, cpu)
}

/// Largest error of the GPU's shares against the reference's, each relative to the larger of
/// the share, its terms' scale and 1e-2. A share `alpha_i <v_i, h> / <h, h>` near zero is a sum
/// of terms of size about `alpha_i rms(v_i) / rms(h)` that cancel: fp32 sums in another order
/// differ at the terms' size, not the share's. (On the H100, GEMMs summing in another order than
/// lavapipe's put one cancelling share of the 260-token block:3 test at 1.2e-4 of itself.)
fn shares_err(gpu: &DepthOp, cpu: &DepthOp) -> f32 {
    let n = cpu.shares.cols();
    let (g, c) = (gpu.shares.flat(), cpu.shares.flat());
    assert_eq!(g.len(), c.len(), "{} shares: lengths differ", cpu.name);
    (0..c.len())
        .map(|k| {
            let t = k / n;
            let terms = cpu.alpha.flat()[k] * cpu.source_rms.flat()[k] / cpu.hidden_rms[t];
            (g[k] - c[k]).abs() / c[k].abs().max(terms).max(1e-2)
        })
        .fold(0.0, f32::max)
}

/// Every op statistic within 1e-4 relative (shares: `shares_tol`, see [`shares_err`]), the loss,
/// and the top-5.
fn assert_traces_match(kind: &str, gpu: &Trace, cpu: &Trace, shares_tol: f32) {
    assert_eq!(gpu.ops.len(), cpu.ops.len());
    for (g, c) in gpu.ops.iter().zip(&cpu.ops) {
        let what = |f: &str| format!("{kind} {} {f}", c.name);
        assert_eq!(g.name, c.name);
        assert_eq!(g.sources, c.sources, "{}", what("sources"));
        assert_eq!(g.kind, c.kind);
        assert_eq!(g.layer, c.layer);
        assert_rel(&what("alpha"), g.alpha.flat(), c.alpha.flat(), 1e-3, 1e-4);
        let err = shares_err(g, c);
        assert!(
            err <= shares_tol,
            "{}: max err {err:.2e} > {shares_tol:.0e}",
            what("shares")
        );
        assert_rel(
            &what("source_rms"),
            g.source_rms.flat(),
            c.source_rms.flat(),
            1e-6,
            1e-4,
        );
        assert_rel(
            &what("hidden_rms"),
            &g.hidden_rms,
            &c.hidden_rms,
            1e-6,
            1e-4,
        );
        assert_rel(
            &what("output_rms"),
            &g.output_rms,
            &c.output_rms,
            1e-6,
            1e-4,
        );
        match (&g.partial_rms, &c.partial_rms) {
            (Some(a), Some(b)) => assert_rel(&what("partial_rms"), a, b, 1e-6, 1e-4),
            (None, None) => {}
            _ => panic!("{}: partial_rms present on one side only", what("")),
        }
    }
    // A one-token prompt predicts nothing it could be scored on: no loss on either side.
    match (gpu.loss, cpu.loss) {
        (Some(gl), Some(cl)) => assert!(
            (gl - cl).abs() <= 1e-4 * cl.abs(),
            "{kind}: loss {gl} vs {cl}"
        ),
        (None, None) => {}
        other => panic!("{kind}: loss {other:?}"),
    }
    assert_eq!(
        gpu.token_nll.len(),
        cpu.tokens.len(),
        "{kind}: token_nll length"
    );
    assert_eq!(
        cpu.token_nll.len(),
        cpu.tokens.len(),
        "{kind}: token_nll length"
    );
    for (t, (g, c)) in gpu.token_nll.iter().zip(&cpu.token_nll).enumerate() {
        match (g, c) {
            (Some(g), Some(c)) => assert!(
                (g - c).abs() <= 1e-4 * c.abs().max(1e-2),
                "{kind} token {t}: nll {g} vs {c}"
            ),
            (None, None) => assert_eq!(t, 0, "{kind}: only the first token has no nll"),
            other => panic!("{kind} token {t}: nll {other:?}"),
        }
    }
    for (t, (g, c)) in gpu.topk.iter().zip(&cpu.topk).enumerate() {
        assert_eq!(g.len(), 5);
        // Ids agree unless two logits are within rounding of each other.
        for (a, b) in g.iter().zip(c) {
            assert!(
                a.id == b.id || (a.prob - b.prob).abs() < 1e-5,
                "{kind} token {t}: top-k {g:?} vs {c:?}"
            );
            assert!(
                (a.prob - b.prob).abs() <= 1e-4 * b.prob.max(1e-3),
                "{kind} token {t}: prob {} vs {}",
                a.prob,
                b.prob
            );
        }
    }
    assert!(
        gpu.device.contains('('),
        "the trace names its adapter: {}",
        gpu.device
    );
}

const ODD: [u32; 13] = [5, 17, 250, 3, 3, 99, 42, 0, 123, 7, 64, 299, 1];

#[test]
fn llama_trace_matches_the_reference() {
    assert_parity("llama", &ODD);
}

#[test]
fn qwen2_trace_matches_the_reference() {
    assert_parity("qwen2", &ODD);
}

#[test]
fn mistral_sliding_window_trace_matches_the_reference() {
    assert_parity("mistral", &ODD);
}

#[test]
fn gpt2_trace_matches_the_reference() {
    assert_parity("gpt2", &ODD);
}

/// The biased q/k/v projection (K = 256) runs split-K; RoPE sums its partials and adds the bias.
#[test]
fn prenorm_models_with_more_depth_sources_than_registers_hold_match_the_reference() {
    // 7 layers: the ops past 12 sources run `main`, which adds each new sublayer output to the
    // residual stream that it wrote for the op before (RMSNorm and LayerNorm models).
    assert_parity("llama:deep", &ODD);
    assert_parity("gpt2:deep", &ODD);
}

#[test]
fn split_k_qkv_with_bias_and_rope_match_the_reference() {
    let cfg = common::tiny_config("qwen2:wide");
    let row = ((cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim) as u32;
    let qkv = Gemm::nt(ODD.len() as u32, row, cfg.hidden_size as u32);
    let choice = qkv.choice(&GemmPolicy::default());
    assert!(
        choice.splits > 1,
        "the q/k/v projection splits K: {choice:?}"
    );
    assert_parity("qwen2:wide", &ODD);
}

/// The MLP's output projection (K = 300, with a bias) runs split-K; its partial sums and the bias
/// are added where the output joins the depth sources.
#[test]
fn split_k_sublayer_outputs_with_bias_match_the_reference() {
    let cfg = common::tiny_config("gpt2:deep-mlp");
    let (t, d, ffn) = (
        ODD.len() as u32,
        cfg.hidden_size as u32,
        cfg.intermediate_size as u32,
    );
    let choice = Gemm::nt(t, d, ffn).choice(&GemmPolicy::default());
    assert!(
        choice.splits > 1,
        "the down projection splits K: {choice:?}"
    );
    assert_parity("gpt2:deep-mlp", &ODD);
}

#[test]
fn full_attnres_trace_matches_the_reference() {
    assert_parity("full", &ODD);
}

#[test]
fn full_attnres_ops_with_more_sources_than_registers_hold_match_the_reference() {
    // The last ops of 7 layers see 13..15 sources: past the register-cached depth kernel.
    assert_parity("full:deep", &[5, 17, 2, 9, 250, 33, 101]);
}

#[test]
fn fused_attention_matches_the_reference_on_every_architecture_at_odd_lengths() {
    // 37 and 40 tokens: several query and key blocks of 16, the last one partial.
    let long: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % 300).collect();
    let fused = fused_attention_engine();
    for kind in ["llama", "mistral", "gpt2", "qwen2:wide", "block:3"] {
        assert_parity_on(fused, kind, &long[..37]);
    }
    assert_parity_on(fused, "llama", &long);
    assert_parity_on(fused, "llama", &ODD);
    assert_parity_on(fused, "mistral", &[7]);
}

/// A long prompt whose length is a multiple of 4: P V reads V transposed on the vec4 GEMM path,
/// and the causal hints skip Q Kᵀ tiles above the diagonal and stop P V's k at each tile's last
/// row (with several row and column tiles, so both take effect).
#[test]
fn causal_attention_gemms_on_a_long_aligned_prompt_match_the_reference() {
    let t = TRANSPOSED_V_MIN_TOKENS + 4;
    let long: Vec<u32> = (0..t).map(|i| (i * 53 + 7) % 300).collect();
    for kind in ["llama", "mistral", "gpt2", "qwen2", "block:3"] {
        assert_parity(kind, &long);
    }
}

#[test]
fn block_attnres_trace_matches_the_reference() {
    assert_parity("block:3", &ODD);
    assert_parity("block:4", &ODD[..7]);
}

#[test]
fn a_one_token_prompt_works_on_the_gpu() {
    let (cpu, gpu) = both("block:2", &[42]);
    assert_eq!(gpu.loss, None);
    assert_eq!(cpu.ops.len(), gpu.ops.len());
}

/// f64 product of `[m, k]` and `[n, k]^T`.
fn reference_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|x| f64::from(a[i * k + x]) * f64::from(b[j * k + x]))
                .sum::<f64>() as f32;
        }
    }
    c
}

fn check_gemm(
    m: usize,
    n: usize,
    k: usize,
    forced: Option<GemmChoice>,
    rng: &mut Rng,
) -> GemmChoice {
    let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
    let got = engine().matmul_nt(&a, &b, (m, n, k), forced).unwrap();
    let want = reference_nt(&a, &b, m, n, k);
    let err = common::normwise_err(&got, &want);
    let policy = GemmPolicy::default();
    let choice = forced.unwrap_or_else(|| Gemm::nt(m as u32, n as u32, k as u32).choice(&policy));
    assert!(
        err < 1e-5,
        "GEMM {m}x{n}x{k} ({choice:?}): max |diff| / max |c| = {err:.2e}"
    );
    choice
}

#[test]
fn gemm_kernels_the_forward_chooses_match_at_odd_sizes_on_fresh_random_inputs() {
    let mut rng = Rng::new(std::process::id() as u64);
    let mut seen = Vec::new();
    // Partial tiles on every edge, K not a multiple of any slice; K % 4 != 0 takes the generic
    // kernel, K % 4 == 0 the vec4 NT path (split-K for short prompts).
    for (m, n, k) in [
        (1, 7, 3),
        (67, 131, 45),
        (13, 300, 77),
        (257, 513, 129),
        (1031, 1029, 37),
        (700, 900, 19),
        (1, 7, 4),
        (13, 300, 76),
        (45, 71, 1020),
        (67, 131, 44),
        (257, 513, 132),
        (300, 1700, 20),
        (100, 8500, 12),
        (1031, 4100, 8),
        (1100, 15000, 12),
    ] {
        let choice = check_gemm(m, n, k, None, &mut rng);
        seen.push((choice.kernel, choice.splits > 1));
    }
    for v in [
        KernelId::Matmul,
        KernelId::MatmulSkinny,
        KernelId::MatmulLarge,
        KernelId::MatmulNtXLarge,
        KernelId::MatmulNtLarge,
        KernelId::MatmulNtMid,
        KernelId::MatmulNtSmall,
    ] {
        assert!(seen.iter().any(|s| s.0 == v), "GEMM variant {v:?} ran");
    }
    assert!(seen.iter().any(|s| s.1), "a split-K GEMM ran");
}

#[test]
fn a_device_with_room_for_it_runs_the_16_deep_xlarge_tile_and_it_matches() {
    // Engine::new asks for the adapter's limits: lavapipe, like the H100, allows 32 KB or more.
    assert_eq!(engine().xlarge_tile(), NT_XLARGE_DEEP);
    let mut rng = Rng::new(std::process::id() as u64 ^ 0xdee9);
    for (m, n, k) in [(131, 267, 100), (257, 130, 36), (5, 9, 4)] {
        let choice = GemmChoice::nt_split(KernelId::MatmulNtXLarge, NT_XLARGE_DEEP, k as u32, 1);
        check_gemm(m, n, k, Some(choice), &mut rng);
    }
}

#[test]
fn every_nt_tile_and_split_matches_at_odd_sizes() {
    let mut rng = Rng::new(std::process::id() as u64 ^ 0x5eed);
    let tiles = [
        (KernelId::MatmulNtXLarge, NT_XLARGE),
        (KernelId::MatmulNtLarge, NT_LARGE),
        (KernelId::MatmulNtMid, NT_MID),
        (KernelId::MatmulNtSmall, NT_SMALL),
    ];
    for (kernel, t) in tiles {
        for (m, n, k, splits) in [
            (131, 67, 100, 1),
            (37, 150, 204, 3),
            (5, 9, 4, 1),
            (70, 130, 68, 5),
        ] {
            // Chunks of whole slices; the last split is the short one.
            let choice = GemmChoice::nt_split(kernel, t, k as u32, splits);
            check_gemm(m, n, k, Some(choice), &mut rng);
        }
    }
}

/// A model with every dimension past one tile and none a multiple of a tile or workgroup:
/// d = 300 (> 256 threads per row), 270 tokens, 5 heads of 60, 261 MLP units, vocab 300.
#[test]
fn wide_block_model_trace_matches_the_reference() {
    block_model_matches_the_reference(300, 5, 261, 300, 270);
}

/// Rows longer than the depth kernel covers in one pass (d > 8 elements x 128 threads).
#[test]
fn block_model_with_d_past_one_depth_pass_matches_the_reference() {
    block_model_matches_the_reference(1100, 11, 64, 61, 9);
}

/// Rows of d % 4 != 0 floats: the cached depth kernel reads vec4s, so these ops take `main`.
#[test]
fn block_model_with_rows_not_a_whole_number_of_vec4s_matches_the_reference() {
    block_model_matches_the_reference(30, 3, 37, 41, 13);
}

fn block_model_matches_the_reference(d: usize, heads: usize, ffn: usize, vocab: usize, t: usize) {
    let v = serde_json::json!({
        "model_type": "attnres", "vocab_size": vocab, "hidden_size": d, "intermediate_size": ffn,
        "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "attnres_mode": "block", "attnres_block_size": 3
    });
    let cfg = depthlens::model::ModelConfig::from_json(&v, "wide").unwrap();
    let init = depthlens::model::random::RandomInit {
        weight_std: 0.1,
        gain_std: 0.1,
        query_std: 0.3,
    };
    let w = depthlens::model::random::random_weights(&cfg, init, 5).unwrap();
    let ids: Vec<u32> = (0..t).map(|i| (i * 37 % vocab) as u32).collect();
    let tok = TextTokenizer::byte_fallback();
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    let cpu =
        reference::trace_tokens(&cfg, &w, &tok, tok.tokens_from_ids(&ids), opts, &Silent).unwrap();
    let model = engine().load(&cfg, &w).unwrap();
    let gpu = engine()
        .trace(
            &model,
            &tok,
            tok.tokens_from_ids(&ids),
            GpuTraceOptions {
                logits: true,
                profile: false,
            },
        )
        .unwrap();
    // The logits against the exact forward (the reference in f64): at d = 300 and 270 tokens
    // the f32 reference is itself ~1e-5 from it (9.9e-6 on lavapipe's run of this test), so two
    // f32 forwards can differ by twice that while each is within 1e-5 of the truth.
    let w64 = w
        .map_tensors(&mut |_, t| t.to_dtype(candle_core::DType::F64))
        .unwrap();
    let exact = reference::trace_tokens(&cfg, &w64, &tok, tok.tokens_from_ids(&ids), opts, &Silent)
        .unwrap();
    let (gpu_logits, exact_logits) = (gpu.logits.unwrap().concat(), exact.logits.unwrap().concat());
    let err = common::normwise_err(&gpu_logits, &exact_logits);
    assert!(err < 1e-5, "logits against the f64 reference: {err:.2e}");
    let cpu_err = common::normwise_err(&cpu.logits.unwrap().concat(), &exact_logits);
    assert!(
        cpu_err < 2e-5,
        "the f32 reference's own logits: {cpu_err:.2e}"
    );
    for (g, c) in gpu.ops.iter().zip(&cpu.ops) {
        assert_rel(
            &format!("{} alpha", c.name),
            g.alpha.flat(),
            c.alpha.flat(),
            1e-3,
            1e-4,
        );
        assert_rel(
            &format!("{} hidden_rms", c.name),
            &g.hidden_rms,
            &c.hidden_rms,
            1e-6,
            1e-4,
        );
        assert_rel(
            &format!("{} output_rms", c.name),
            &g.output_rms,
            &c.output_rms,
            1e-6,
            1e-4,
        );
    }
}

#[test]
fn demo_checkpoints_trace_the_same_on_gpu_and_cpu() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    for arch in ["baseline", "full", "block"] {
        let ckpt =
            depthlens::model::Checkpoint::open(&dir.join(format!("{arch}.safetensors")), &Silent)
                .unwrap_or_else(|e| panic!("demo checkpoint {arch}: {e}"));
        let input = reference::Input::Text(
            "Full fathom five thy father lies; of his bones are coral made.".into(),
        );
        let tokens = reference::tokenize(&ckpt.tokenizer, &ckpt.config, &input).unwrap();
        let opts = TraceOptions {
            logits: true,
            ..Default::default()
        };
        let cpu = reference::trace_tokens(
            &ckpt.config,
            &ckpt.weights,
            &ckpt.tokenizer,
            tokens.clone(),
            opts,
            &Silent,
        )
        .unwrap();
        let model = engine().load(&ckpt.config, &ckpt.weights).unwrap();
        let gpu = engine()
            .trace(
                &model,
                &ckpt.tokenizer,
                tokens,
                GpuTraceOptions {
                    logits: true,
                    profile: false,
                },
            )
            .unwrap();
        let err =
            common::normwise_err(&gpu.logits.unwrap().concat(), &cpu.logits.unwrap().concat());
        assert!(err < 1e-5, "{arch}: logits {err:.2e}");
        for (g, c) in gpu.ops.iter().zip(&cpu.ops) {
            assert_eq!(g.sources, c.sources);
            assert_rel(
                &format!("{arch} {} alpha", c.name),
                g.alpha.flat(),
                c.alpha.flat(),
                1e-3,
                1e-4,
            );
            assert_rel(
                &format!("{arch} {} hidden_rms", c.name),
                &g.hidden_rms,
                &c.hidden_rms,
                1e-6,
                1e-4,
            );
            assert_rel(
                &format!("{arch} {} output_rms", c.name),
                &g.output_rms,
                &c.output_rms,
                1e-6,
                1e-4,
            );
        }
        let (gl, cl) = (gpu.loss.unwrap(), cpu.loss.unwrap());
        assert!((gl - cl).abs() < 1e-4 * cl, "{arch}: loss {gl} vs {cl}");
    }
}

#[test]
fn a_reused_workspace_gives_each_prompt_its_own_trace() {
    let cfg = common::tiny_config("block:3");
    let w = common::tiny_weights(&cfg, 17);
    let tok = TextTokenizer::byte_fallback();
    let model = engine().load(&cfg, &w).unwrap();
    let opts = GpuTraceOptions {
        logits: true,
        profile: false,
    };
    for ids in [
        [1u32, 2, 3, 4, 5, 6, 7],
        [70, 60, 50, 40, 30, 20, 10],
        [1, 2, 3, 4, 5, 6, 7],
    ] {
        let gpu = engine()
            .trace(&model, &tok, tok.tokens_from_ids(&ids), opts)
            .unwrap();
        let cpu_opts = TraceOptions {
            logits: true,
            ..Default::default()
        };
        let cpu =
            reference::trace_tokens(&cfg, &w, &tok, tok.tokens_from_ids(&ids), cpu_opts, &Silent)
                .unwrap();
        let err =
            common::normwise_err(&gpu.logits.unwrap().concat(), &cpu.logits.unwrap().concat());
        assert!(err < 1e-5, "{ids:?}: {err:.2e}");
        assert_rel(
            "alpha",
            gpu.ops[4].alpha.flat(),
            cpu.ops[4].alpha.flat(),
            1e-3,
            1e-4,
        );
    }
}

/// An adapter that binds only 32 KiB per buffer (as a small GPU, or WebGPU's defaults, would bind
/// less than a model needs at once): six heads' 40 x 40 scores and 40 positions' logits over 300
/// tokens no longer fit, so attention runs in passes of whole kv groups and the LM head in passes
/// of positions. The Trace is the reference's all the same.
#[test]
fn a_small_binding_limit_splits_attention_the_lm_head_and_the_depth_sources_and_the_trace_still_matches(
) {
    let cap = 32 * 1024;
    let small = Engine::with_binding_cap(cap).expect("an adapter");
    let cfg = common::tiny_config("full:deep");
    let (t, heads, vocab) = (40usize, cfg.num_heads, cfg.vocab_size);
    assert!(heads * t * t * 4 > cap as usize && t * vocab * 4 > cap as usize);
    // Embedding + 14 sublayer outputs for every token: two token chunks of sources.
    let slots = 2 * cfg.num_layers + 1;
    assert!(slots * t * cfg.hidden_size * 4 > cap as usize);
    let w = common::tiny_weights(&cfg, 8);
    let ids: Vec<u32> = (0..t).map(|i| (i * 53 % vocab) as u32).collect();
    let (gpu, cpu) = gpu_and_cpu(&small, &cfg, &w, &ids);
    // Shares over 15 sources are f32 dot products that cancel, on both sides: relative to the
    // share alone this op's error was 1.6e-4, with or without the cap; `shares_err` measures it
    // against the terms that cancel.
    assert_traces_match("full:deep under a 32 KiB binding cap", &gpu, &cpu, 1e-4);
    // All of the logits at once cannot come back through one binding: said, not truncated.
    let opts = GpuTraceOptions {
        logits: true,
        profile: false,
    };
    let tok = TextTokenizer::byte_fallback();
    let model = small.load(&cfg, &w).unwrap();
    let err = small
        .trace(&model, &tok, tok.tokens_from_ids(&ids), opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("logits"), "{err}");
}

/// The adapter check asks for exactly what the widest shipped kernel binds.
#[test]
fn the_storage_buffer_requirement_is_what_the_widest_kernel_binds() {
    let widest = KERNELS.iter().map(|k| k.storage.len()).max().unwrap();
    assert_eq!(widest as u32, depthlens::engine::STORAGE_BUFFERS_NEEDED);
}

#[test]
fn every_kernel_builds_and_runs_on_a_device_opened_with_webgpu_default_limits() {
    // What eframe's renderer asks for unless told otherwise: 8 storage buffers, 128 MiB per
    // binding, 16 KB of workgroup memory (each kernel's is checked against it by
    // every_shipped_wgsl_kernel_parses_and_validates). The whole forward runs on such a device.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .expect("GPU tests need an adapter (CI installs lavapipe via scripts/setup.sh)");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("webgpu defaults"),
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .expect("a device with WebGPU's default limits");
    let mut small = Engine::from_device(device, queue, &adapter.get_info()).expect("an engine");
    assert_eq!(
        small.xlarge_tile(),
        NT_XLARGE,
        "within 16 KB of workgroup memory, the 8-deep xlarge tile"
    );
    small.set_attention(AttentionKernel::Fused);
    let cfg = common::tiny_config("block:3");
    let w = common::tiny_weights(&cfg, 31);
    let (gpu, cpu) = gpu_and_cpu(&small, &cfg, &w, &ODD);
    assert_traces_match("block:3 on WebGPU default limits", &gpu, &cpu, 1e-4);
}

#[test]
fn attnres_with_every_depth_weight_one_is_its_prenorm_counterpart() {
    // `bench --depth-cost` times AttnRes against this: the same kernels summing their sources
    // with weight 1. Block's block sums and Full's sublayer outputs then add up to the PreNorm
    // residual stream, so the forward is the reference's forward of the same weights without
    // AttnRes (its pseudo-queries unused).
    let mut uniform = Engine::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    uniform.set_depth_weights(DepthWeights::Uniform);
    let tok = TextTokenizer::byte_fallback();
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    let gpu_opts = GpuTraceOptions {
        logits: true,
        profile: false,
    };
    // full:deep has ops past 12 sources, which run on `main` rather than `main_cached`.
    for kind in ["block:2", "full", "full:deep"] {
        let cfg = common::tiny_config(kind);
        let w = common::tiny_weights(&cfg, 31);
        let mut prenorm = cfg.clone();
        prenorm.attnres = None;
        let baseline =
            reference::trace_tokens(&prenorm, &w, &tok, tok.tokens_from_ids(&ODD), opts, &Silent)
                .unwrap();
        let model = uniform.load(&cfg, &w).unwrap();
        let gpu = uniform
            .trace(&model, &tok, tok.tokens_from_ids(&ODD), gpu_opts)
            .unwrap();
        let logits = gpu.logits.as_ref().unwrap().concat();
        let baseline_logits = baseline.logits.as_ref().unwrap().concat();
        let err = common::normwise_err(&logits, &baseline_logits);
        assert!(
            err < 1e-5,
            "{kind} with weights 1 against PreNorm: {err:.2e}"
        );
        assert_eq!(gpu.ops.len(), baseline.ops.len());
        for (g, b) in gpu.ops.iter().zip(&baseline.ops) {
            assert!(
                g.alpha.flat().iter().all(|&a| a == 1.0),
                "{kind} {}: every weight 1",
                g.name
            );
            let what = format!("{kind} {} hidden_rms", g.name);
            assert_rel(&what, &g.hidden_rms, &b.hidden_rms, 1e-6, 1e-4);
        }
        // The learned weights give another forward: the comparison is not of a model with itself.
        let learned =
            reference::trace_tokens(&cfg, &w, &tok, tok.tokens_from_ids(&ODD), opts, &Silent)
                .unwrap();
        let learned_err = common::normwise_err(&learned.logits.unwrap().concat(), &baseline_logits);
        assert!(
            learned_err > 1e-2,
            "{kind}: learned depth weights should change the logits ({learned_err:.2e})"
        );
    }
}

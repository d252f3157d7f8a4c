//! `depthlens bench`: time the forward with the full Trace read back, on the GPU engine or the CPU
//! reference, and the GEMM kernel alone. Prints tables; numbers go to BENCHMARKS.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use crate::engine::kernels::{
    nt_workgroup_bytes, AttentionKernel, GemmChoice, KernelId, NtTile, FLASH_MAX_HEAD_DIM,
    MATMUL_LARGE, MATMUL_MID, MATMUL_SKINNY, MATMUL_SMALL, NT_LARGE, NT_MID, NT_SMALL, NT_XLARGE,
    SPLIT_PARTIAL_FLOATS,
};
use crate::engine::matmul::Gemm;
use crate::engine::{DepthWeights, Engine, GpuModel, GpuTraceOptions, KernelTime};
use crate::model::random::{random_weights, RandomInit, Rng};
use crate::model::{Checkpoint, ModelConfig, TextTokenizer, Weights};
use crate::progress::Silent;
use crate::reference::phases::{self, PhaseTime};
use crate::reference::{self, TraceOptions};

use super::trace::DeviceChoice;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Checkpoint to time (or use --synthetic).
    pub checkpoint: Option<PathBuf>,
    /// A random model: ARCH,LAYERS,DIM with ARCH baseline|full|block (Llama-style, vocab 50304;
    /// 576 gives the SmolLM2-135M shape: 9 heads, 3 kv heads, vocab 49152; Block uses ~8 blocks).
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Prompt lengths to time.
    #[arg(long, value_delimiter = ',', default_value = "64,128,512,2048")]
    pub tokens: Vec<usize>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Gpu)]
    pub device: DeviceChoice,
    /// Timed runs per length (median reported), after warm-up runs.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Per-kernel GPU timestamps for this prompt length.
    #[arg(long)]
    pub profile: Option<usize>,
    /// With --device cpu: wall time per phase of the reference forward (projections, attention,
    /// depth mix, Trace statistics, ...), averaged over the timed runs of each length.
    #[arg(long)]
    pub phases: bool,
    /// Time the GEMM kernel alone: 4096^3 and the model's own shapes at 512 tokens.
    #[arg(long)]
    pub matmul: bool,
    /// With --matmul: also time every GEMM kernel and split count, not only the chosen one.
    #[arg(long, requires = "matmul")]
    pub sweep: bool,
    /// With --matmul: also time this NT tile, as BM,BN,BK,TM,TN (a `--shader` experiment's own
    /// tile, e.g. 128,128,16,8,8), after --sweep's tiles if given. Repeatable.
    #[arg(long = "tile", requires = "matmul")]
    pub tiles: Vec<String>,
    /// With --matmul: check each chosen GEMM's output on random operands against candle's CPU
    /// matmul (a column of max error relative to max |C|), so that a `--shader` experiment that
    /// is fast but wrong shows it.
    #[arg(long, requires = "matmul")]
    pub check: bool,
    /// With --matmul: the side of the square GEMM timed first (4096: the target).
    #[arg(long, default_value_t = 4096, requires = "matmul")]
    pub square: usize,
    /// With --matmul: only the square GEMM, not the model's shapes (a quick check of a
    /// `--shader` experiment, or the 4096^3 target alone).
    #[arg(long, requires = "matmul")]
    pub square_only: bool,
    /// GEMM policy: workgroups that fill the GPU (smaller tiles, then split-K below it).
    #[arg(long)]
    pub gemm_fill: Option<u64>,
    /// GEMM policy: fewest k per split.
    #[arg(long)]
    pub min_split_k: Option<u32>,
    /// GEMM policy: the short-prompt NT tile as BM,BN,BK,TM,TN.
    #[arg(long)]
    pub small_tile: Option<String>,
    /// Attention kernel: `gemm` (Q Kᵀ, softmax, P V; the default) or `fused` (flash_attention).
    #[arg(long, value_enum, default_value_t = AttentionKernel::Gemm)]
    pub attention: AttentionKernel,
    /// What AttnRes itself costs (the report's inference overhead): at each --tokens length,
    /// the forward and its depth kernels against the same model with every depth weight 1, its
    /// PreNorm counterpart (same kernels, same Trace statistics), alternated --iters times.
    #[arg(long)]
    pub depth_cost: bool,
    /// Kernel experiments: build the kernels of this WGSL file's name (e.g. `depth.wgsl`) from
    /// this file instead of the shipped one. Repeatable.
    #[arg(long = "shader")]
    pub shaders: Vec<PathBuf>,
    /// The desktop app, headless on the default adapter: type into it one character at a time
    /// (--iters keystrokes per --tokens length) and report keystroke-to-views latency and frame
    /// time with every view drawn.
    #[arg(long)]
    pub app: bool,
}

#[cfg(feature = "gui")]
fn app_bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    super::bench_app::run(args)
}

#[cfg(not(feature = "gui"))]
fn app_bench(_args: &BenchArgs) -> anyhow::Result<ExitCode> {
    bail!("--app needs the desktop app: this build has no `gui` feature")
}

/// The synthetic models of GPU.md's anchors.
pub fn synthetic_config(spec: &str) -> anyhow::Result<ModelConfig> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [arch, layers, dim] = parts.as_slice() else {
        bail!("--synthetic wants ARCH,LAYERS,DIM, e.g. block,12,768");
    };
    let layers: usize = layers.parse().context("LAYERS")?;
    let dim: usize = dim.parse().context("DIM")?;
    let (heads, kv_heads, vocab) = if dim == 576 {
        (9, 3, 49152)
    } else {
        (dim / 64, dim / 64, 50304)
    };
    let ffn = (8 * dim / 3).div_ceil(256) * 256;
    let mut v = serde_json::json!({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": dim, "intermediate_size": ffn,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true
    });
    match *arch {
        "baseline" => {}
        "full" => {
            v["model_type"] = "attnres".into();
            v["attnres_mode"] = "full".into();
        }
        "block" => {
            v["model_type"] = "attnres".into();
            v["attnres_mode"] = "block".into();
            v["attnres_block_size"] = (2 * layers).div_ceil(8).into();
        }
        other => bail!("ARCH `{other}`: expected baseline, full or block"),
    }
    Ok(ModelConfig::from_json(&v, "--synthetic")?)
}

/// Multiply-adds x2 of one forward: projections, attention (the full T x T the kernels compute)
/// and the LM head at every position.
fn forward_flops(cfg: &ModelConfig, t: usize) -> f64 {
    let (d, t) = (cfg.hidden_size as f64, t as f64);
    let q = (cfg.num_heads * cfg.head_dim) as f64;
    let kv = (cfg.num_kv_heads * cfg.head_dim) as f64;
    let ff = cfg.intermediate_size as f64;
    let mlp_mats = if matches!(cfg.activation, crate::model::Activation::SwiGlu) {
        3.0
    } else {
        2.0
    };
    let per_layer =
        2.0 * t * (d * q * 2.0 + d * kv * 2.0 + mlp_mats * d * ff) + 2.0 * 2.0 * t * t * q;
    cfg.num_layers as f64 * per_layer + 2.0 * t * d * cfg.vocab_size as f64
}

/// Bytes a forward must move at least: every weight once, and the logits written and read.
fn forward_bytes(params: usize, cfg: &ModelConfig, t: usize) -> f64 {
    4.0 * params as f64 + 8.0 * (t * cfg.vocab_size) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.app {
        return app_bench(&args);
    }
    let (cfg, weights, label): (ModelConfig, Weights, String) =
        match (&args.checkpoint, &args.synthetic) {
            (Some(path), None) => {
                let ckpt = Checkpoint::open(path, &Silent)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                (ckpt.config, ckpt.weights, path.display().to_string())
            }
            (None, Some(spec)) => {
                let cfg = synthetic_config(spec)?;
                let init = RandomInit {
                    weight_std: 0.02,
                    gain_std: 0.0,
                    query_std: 0.1,
                };
                let w = random_weights(&cfg, init, 1)?;
                (cfg, w, format!("synthetic {spec}"))
            }
            _ => bail!("give a checkpoint or --synthetic ARCH,LAYERS,DIM (not both)"),
        };
    if args.depth_cost && cfg.attnres.is_none() {
        bail!("--depth-cost compares AttnRes's depth weights with weight 1: {label} has no AttnRes (its depth weights are 1 already)");
    }
    let params = weights.parameter_count();
    let tok = TextTokenizer::byte_fallback();
    let ids_for = |t: usize| -> Vec<u32> {
        (0..t)
            .map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32)
            .collect()
    };
    let engine = match args.device {
        DeviceChoice::Cpu => None,
        _ => Some(gpu_engine(&args, DepthWeights::Learned, true)?),
    };
    let device = engine
        .as_ref()
        .map(|e| e.adapter_name().to_string())
        .unwrap_or_else(|| {
            format!(
                "cpu-reference (candle, {} threads)",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            )
        });
    println!(
        "model: {label} ({:.1} M parameters, {} layers, d={}, vocab {}, mixing {})",
        params as f64 / 1e6,
        cfg.num_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        crate::trace::ModelSummary::of(&cfg).depth_mixing
    );
    println!("device: {device}");
    if let Some(engine) = &engine {
        let t = engine.xlarge_tile();
        println!(
            "xlarge GEMM tile: {}x{}, {}-deep, {}x{} per thread ({} bytes of workgroup memory)",
            t.bm,
            t.bn,
            t.bk,
            t.tm,
            t.tn,
            nt_workgroup_bytes(t)
        );
    }
    if args.matmul {
        let Some(engine) = &engine else {
            bail!("--matmul times the GPU kernel: use --device gpu")
        };
        let d = cfg.hidden_size;
        let q = cfg.num_heads * cfg.head_dim;
        let s = args.square;
        let mut shapes = vec![(s, s, s, format!("{s}^3"))];
        for t in if args.square_only {
            vec![]
        } else {
            vec![64, 512]
        } {
            shapes.extend([
                (t, q, d, format!("q/o proj T={t}")),
                (t, cfg.intermediate_size, d, format!("gate/up T={t}")),
                (t, d, cfg.intermediate_size, format!("down T={t}")),
                (t, cfg.vocab_size, d, format!("LM head T={t}")),
            ]);
        }
        let check_col = if args.check { " max rel err |" } else { "" };
        let check_sep = if args.check { "---|" } else { "" };
        println!("\n| GEMM (M x K) x (N x K)^T | kernel | splits | ms | TFLOP/s |{check_col}\n|---|---|---|---|---|{check_sep}");
        for (m, n, k, name) in &shapes {
            let (m, n, k) = (*m, *n, *k);
            let flop = 2.0 * (m * n * k) as f64;
            let chosen = Gemm::nt(m as u32, n as u32, k as u32).choice(engine.gemm_policy());
            let mut candidates = vec![chosen];
            if args.sweep {
                candidates.extend(gemm_candidates(m as u32, n as u32, k as u32));
            }
            for (i, c) in candidates.iter().enumerate() {
                if i > 0 && *c == chosen {
                    continue;
                }
                let ms = engine.time_matmul((m, n, k), Some(*c), 10, 5)?;
                let mark = if i == 0 { " (chosen)" } else { "" };
                let err = if args.check {
                    format!(
                        " {:.1e} |",
                        gemm_error(engine, (m, n, k), GemmUnderTest::Table(*c))?
                    )
                } else {
                    String::new()
                };
                println!(
                    "| {name} ({m}x{k})x({n}x{k})^T | {}{mark} | {} | {ms:.4} | {:.2} |{err}",
                    engine.kernel_name(c.kernel),
                    c.splits,
                    flop / (ms * 1e-3) / 1e12
                );
            }
        }
        let mut tiles = if args.sweep {
            TILE_CANDIDATES.to_vec()
        } else {
            Vec::new()
        };
        for t in &args.tiles {
            tiles.push(parse_tile(t)?);
        }
        if !tiles.is_empty() {
            println!("\n| GEMM | NT tile (bm x bn, bk, tm x tn) | splits | ms | TFLOP/s |{check_col}\n|---|---|---|---|---|{check_sep}");
            for (m, n, k, name) in &shapes {
                let (m, n, k) = (*m, *n, *k);
                let flop = 2.0 * (m * n * k) as f64;
                for &tile in &tiles {
                    if m > 64 && tile.bm < 64 {
                        continue;
                    }
                    for splits in [1u32, 2, 4] {
                        if splits > 1 && (m > 64 || k < 512) {
                            continue;
                        }
                        let ms = engine.time_matmul_tile((m, n, k), tile, splits, 10, 5)?;
                        let err = if args.check {
                            let kernel = GemmUnderTest::Tile(tile, splits);
                            format!(" {:.1e} |", gemm_error(engine, (m, n, k), kernel)?)
                        } else {
                            String::new()
                        };
                        println!(
                            "| {name} | {}x{}, {}, {}x{} | {splits} | {ms:.4} | {:.2} |{err}",
                            tile.bm,
                            tile.bn,
                            tile.bk,
                            tile.tm,
                            tile.tn,
                            flop / (ms * 1e-3) / 1e12
                        );
                    }
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let gpu_model = match &engine {
        Some(e) => Some(e.load(&cfg, &weights)?),
        None => None,
    };
    println!("\n| tokens | ms / forward + Trace (median of {}) | tokens/s | TFLOP/s | GB/s | encode / wait / assemble ms |\n|---|---|---|---|---|---|", args.iters);
    let mut cpu_phases: Vec<PhaseTime> = Vec::new();
    let mut phase_tables = Vec::new();
    for &t in &args.tokens {
        if t > cfg.max_positions {
            println!(
                "| {t} | (longer than the model's {} positions) | | | | |",
                cfg.max_positions
            );
            continue;
        }
        let ids = ids_for(t);
        let mut times = Vec::new();
        let mut host_phases = [Vec::new(), Vec::new(), Vec::new()];
        for i in 0..args.warmup + args.iters {
            let started = Instant::now();
            match (&engine, &gpu_model) {
                (Some(e), Some(m)) => {
                    let (_, p) = e.trace_profiled(
                        m,
                        &tok,
                        tok.tokens_from_ids(&ids),
                        GpuTraceOptions::default(),
                    )?;
                    if i >= args.warmup {
                        host_phases[0].push(p.encode_ms);
                        host_phases[1].push(p.wait_ms);
                        host_phases[2].push(p.assemble_ms);
                    }
                }
                _ => {
                    let collect = args.phases && i >= args.warmup;
                    if collect {
                        phases::start();
                    }
                    reference::trace_tokens(
                        &cfg,
                        &weights,
                        &tok,
                        tok.tokens_from_ids(&ids),
                        TraceOptions::default(),
                        &Silent,
                    )?;
                    if collect {
                        for p in phases::take() {
                            phases::add(&mut cpu_phases, p);
                        }
                    }
                }
            }
            if i >= args.warmup {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        if args.phases && engine.is_none() {
            phase_tables.push((
                t,
                times.iter().sum::<f64>(),
                std::mem::take(&mut cpu_phases),
            ));
        }
        let ms = median(times);
        let host = if engine.is_some() {
            let [e, w, a] = host_phases.map(median);
            format!("{e:.2} / {w:.2} / {a:.2}")
        } else {
            String::new()
        };
        println!(
            "| {t} | {ms:.2} | {:.0} | {:.2} | {:.0} | {host} |",
            t as f64 / (ms * 1e-3),
            forward_flops(&cfg, t) / (ms * 1e-3) / 1e12,
            forward_bytes(params, &cfg, t) / (ms * 1e-3) / 1e9
        );
    }
    if args.phases && engine.is_some() {
        println!("\n(--phases times the CPU reference: use --device cpu)");
    }
    let runs = args.iters.max(1) as f64;
    for (t, total_ms, times) in &phase_tables {
        let per_run = total_ms / runs;
        println!(
            "\nCPU reference at T={t}, wall time per phase (mean of {} runs, {per_run:.2} ms each):",
            args.iters
        );
        println!("| phase | calls per run | ms per run | share |\n|---|---|---|---|");
        let mut covered = 0.0;
        for p in times {
            let ms = p.total.as_secs_f64() * 1e3 / runs;
            covered += ms;
            println!(
                "| {} | {} | {ms:.2} | {:.1}% |",
                p.phase,
                p.calls as f64 / runs,
                100.0 * ms / per_run
            );
        }
        let rest = per_run - covered;
        println!(
            "| rest (embedding, RoPE tables, assembling the Trace) | | {rest:.2} | {:.1}% |",
            100.0 * rest / per_run
        );
    }
    if args.depth_cost {
        let (Some(e), Some(m)) = (&engine, &gpu_model) else {
            bail!("--depth-cost times the GPU engine: use --device gpu")
        };
        depth_cost(&args, e, m, &cfg, &weights, &tok, &ids_for)?;
    }
    if let (Some(t), Some(e), Some(m)) = (args.profile, &engine, &gpu_model) {
        let ids = ids_for(t);
        let opts = GpuTraceOptions {
            logits: false,
            profile: true,
        };
        e.trace_profiled(m, &tok, tok.tokens_from_ids(&ids), opts)?; // warm-up
        let (_, profile) = e.trace_profiled(m, &tok, tok.tokens_from_ids(&ids), opts)?;
        let times = profile.kernels;
        let total: f64 = times.iter().map(|k| k.nanoseconds).sum();
        let mut by_kernel: Vec<(&str, usize, f64)> = Vec::new();
        for k in &times {
            match by_kernel.iter_mut().find(|(n, _, _)| *n == k.kernel) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += k.nanoseconds;
                }
                None => by_kernel.push((k.kernel, 1, k.nanoseconds)),
            }
        }
        by_kernel.sort_by(|a, b| b.2.total_cmp(&a.2));
        println!(
            "\nGPU time per kernel at T={t} (timestamps, one pass per dispatch; sum {:.3} ms):",
            total / 1e6
        );
        println!("| kernel | dispatches | ms | share |\n|---|---|---|---|");
        for (name, calls, ns) in &by_kernel {
            println!(
                "| {name} | {calls} | {:.3} | {:.1}% |",
                ns / 1e6,
                100.0 * ns / total
            );
        }
        let depth = depth_kernel_ns(&times);
        println!(
            "depth ops (the AttnRes / residual mixing kernel; `depth_cached_*` also places the previous sublayer's output, sublayer_out's work): {:.2}% of GPU time",
            100.0 * depth / total
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The GPU engine as the flags set it up (kernel experiments, GEMM policy, attention kernel),
/// mixing AttnRes's depth sources with `weights`; `announce` prints what differs from default.
fn gpu_engine(args: &BenchArgs, weights: DepthWeights, announce: bool) -> anyhow::Result<Engine> {
    let mut engine = Engine::new()?;
    let mut policy = *engine.gemm_policy();
    policy.fill = args.gemm_fill.unwrap_or(policy.fill);
    policy.min_split_k = args.min_split_k.unwrap_or(policy.min_split_k);
    if let Some(t) = &args.small_tile {
        policy.small = parse_tile(t).context("--small-tile")?;
    }
    for path in &args.shaders {
        let (file, source) = read_shader(path)?;
        engine
            .replace_shader(&file, &source)
            .with_context(|| format!("shader {}", path.display()))?;
        if announce {
            println!("shader: {} from {}", file, path.display());
        }
    }
    engine.set_attention(args.attention);
    engine.set_depth_weights(weights);
    if announce && args.attention == AttentionKernel::Fused {
        println!("attention: flash_attention (head_dim <= {FLASH_MAX_HEAD_DIM})");
    }
    if policy != *engine.gemm_policy() {
        engine.set_gemm_policy(policy)?;
        if announce {
            println!("GEMM policy: {policy:?}");
        }
    }
    Ok(engine)
}

/// GPU time of one profiled forward: (all kernels, the depth kernels), in ms.
fn gpu_times(
    engine: &Engine,
    model: &GpuModel,
    tok: &TextTokenizer,
    ids: &[u32],
) -> anyhow::Result<(f64, f64)> {
    let opts = GpuTraceOptions {
        logits: false,
        profile: true,
    };
    let (_, profile) = engine.trace_profiled(model, tok, tok.tokens_from_ids(ids), opts)?;
    let total: f64 = profile.kernels.iter().map(|k| k.nanoseconds).sum();
    Ok((total / 1e6, depth_kernel_ns(&profile.kernels) / 1e6))
}

/// GPU time of the depth kernels (`depth`, `depth_cached_*`) among `kernels`.
fn depth_kernel_ns(kernels: &[KernelTime]) -> f64 {
    kernels
        .iter()
        .filter(|k| k.kernel.starts_with("depth"))
        .map(|k| k.nanoseconds)
        .sum()
}

/// `--depth-cost`: AttnRes against its PreNorm counterpart (every depth weight 1) on a second
/// engine, alternated round by round so that both see the same clocks. The cost is the median
/// of the rounds' differences.
fn depth_cost(
    args: &BenchArgs,
    engine: &Engine,
    model: &GpuModel,
    cfg: &ModelConfig,
    weights: &Weights,
    tok: &TextTokenizer,
    ids_for: &dyn Fn(usize) -> Vec<u32>,
) -> anyhow::Result<()> {
    let uniform = gpu_engine(args, DepthWeights::Uniform, false)?;
    let uniform_model = uniform.load(cfg, weights)?;
    println!(
        "\nWhat AttnRes costs over its PreNorm counterpart (the same model and kernels with every depth weight 1; medians of {} alternated rounds; depth kernels by GPU timestamps, one pass per dispatch):",
        args.iters
    );
    println!("| tokens | forward + Trace ms: AttnRes | weights 1 | difference | GPU time ms: AttnRes | weights 1 | depth kernels ms: AttnRes | weights 1 | difference, % of GPU time |\n|---|---|---|---|---|---|---|---|---|");
    let wall = |e: &Engine, m: &GpuModel, ids: &[u32]| -> anyhow::Result<f64> {
        let started = Instant::now();
        e.trace(m, tok, tok.tokens_from_ids(ids), GpuTraceOptions::default())?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    for &t in &args.tokens {
        if t > cfg.max_positions {
            println!(
                "| {t} | (longer than the model's {} positions) | | | | | | | |",
                cfg.max_positions
            );
            continue;
        }
        let ids = ids_for(t);
        let mut rows: Vec<[f64; 6]> = Vec::new();
        for i in 0..args.warmup + args.iters {
            let a = wall(engine, model, &ids)?;
            let b = wall(&uniform, &uniform_model, &ids)?;
            let (ga, da) = gpu_times(engine, model, tok, &ids)?;
            let (gb, db) = gpu_times(&uniform, &uniform_model, tok, &ids)?;
            if i >= args.warmup {
                rows.push([a, b, ga, gb, da, db]);
            }
        }
        let col = |j: usize| median(rows.iter().map(|r| r[j]).collect());
        let wall_diff = median(rows.iter().map(|r| r[0] - r[1]).collect());
        let depth_share = median(rows.iter().map(|r| 100.0 * (r[4] - r[5]) / r[2]).collect());
        println!(
            "| {t} | {:.2} | {:.2} | {wall_diff:+.3} | {:.3} | {:.3} | {:.3} | {:.3} | {depth_share:+.2}% |",
            col(0),
            col(1),
            col(2),
            col(3),
            col(4),
            col(5)
        );
    }
    Ok(())
}

/// Every kernel and a few split counts for one shape (the `--sweep` table).
fn gemm_candidates(m: u32, n: u32, k: u32) -> Vec<GemmChoice> {
    let mut out = Vec::new();
    for kernel in [
        KernelId::MatmulMid,
        KernelId::Matmul,
        KernelId::MatmulLarge,
        KernelId::MatmulSkinny,
    ] {
        let tile = match kernel {
            KernelId::MatmulMid => MATMUL_MID,
            KernelId::MatmulSkinny => MATMUL_SKINNY,
            KernelId::MatmulLarge => (MATMUL_LARGE.tile, MATMUL_LARGE.tile),
            _ => (MATMUL_SMALL.tile, MATMUL_SMALL.tile),
        };
        out.push(GemmChoice {
            kernel,
            tile,
            splits: 1,
            k_chunk: k,
        });
    }
    for (kernel, t) in [
        (KernelId::MatmulNtXLarge, NT_XLARGE),
        (KernelId::MatmulNtLarge, NT_LARGE),
        (KernelId::MatmulNtMid, NT_MID),
        (KernelId::MatmulNtSmall, NT_SMALL),
    ] {
        for splits in [1u32, 2, 4, 8] {
            let c = GemmChoice::nt_split(kernel, t, k, splits);
            let partial = u64::from(c.splits) * u64::from(m) * u64::from(n);
            if c.splits > 1 && partial > SPLIT_PARTIAL_FLOATS {
                continue;
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// A `--shader` experiment: its file name (which shipped file it replaces) and its text.
pub fn read_shader(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read shader {}", path.display()))?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    Ok((file.to_owned(), source))
}

/// `BM,BN,BK,TM,TN` as an NT tile.
pub fn parse_tile(text: &str) -> anyhow::Result<NtTile> {
    let v: Vec<u32> = text
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("tile `{text}`: expected five numbers BM,BN,BK,TM,TN"))?;
    let [bm, bn, bk, tm, tn] = v[..] else {
        bail!("tile `{text}`: expected five numbers BM,BN,BK,TM,TN");
    };
    Ok(NtTile { bm, bn, bk, tm, tn })
}

/// NT tiles the `--sweep` tries beyond the table's.
const TILE_CANDIDATES: [NtTile; 9] = [
    NtTile {
        bm: 128,
        bn: 64,
        bk: 32,
        tm: 8,
        tn: 4,
    },
    NtTile {
        bm: 128,
        bn: 128,
        bk: 16,
        tm: 8,
        tn: 4,
    },
    NtTile {
        bm: 64,
        bn: 128,
        bk: 16,
        tm: 4,
        tn: 8,
    },
    NtTile {
        bm: 64,
        bn: 64,
        bk: 32,
        tm: 4,
        tn: 4,
    },
    NtTile {
        bm: 64,
        bn: 64,
        bk: 16,
        tm: 8,
        tn: 4,
    },
    NtTile {
        bm: 32,
        bn: 64,
        bk: 32,
        tm: 4,
        tn: 4,
    },
    NtTile {
        bm: 32,
        bn: 64,
        bk: 64,
        tm: 4,
        tn: 4,
    },
    NtTile {
        bm: 16,
        bn: 64,
        bk: 64,
        tm: 4,
        tn: 4,
    },
    NtTile {
        bm: 64,
        bn: 32,
        bk: 64,
        tm: 4,
        tn: 4,
    },
];

/// Largest `|C_gpu - C_cpu|` over the largest `|C_cpu|` for `A B^T` on random operands in
/// [-1, 1), the GPU through `choice`, the CPU through candle.
/// A GEMM kernel `--check` compares with candle: one of the table's, or a `--sweep` tile.
#[derive(Clone, Copy)]
enum GemmUnderTest {
    Table(GemmChoice),
    Tile(NtTile, u32),
}

fn gemm_error(
    engine: &Engine,
    (m, n, k): (usize, usize, usize),
    kernel: GemmUnderTest,
) -> anyhow::Result<f64> {
    let mut rng = Rng::new((m * 31 + n * 17 + k) as u64);
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
            .collect()
    };
    let (a, b) = (random(m * k), random(n * k));
    let gpu = match kernel {
        GemmUnderTest::Table(choice) => engine.matmul_nt(&a, &b, (m, n, k), Some(choice))?,
        GemmUnderTest::Tile(tile, splits) => {
            engine.matmul_nt_tile(&a, &b, (m, n, k), tile, splits)?
        }
    };
    let cpu_device = candle_core::Device::Cpu;
    let at = candle_core::Tensor::from_vec(a, (m, k), &cpu_device)?;
    let bt = candle_core::Tensor::from_vec(b, (n, k), &cpu_device)?;
    let cpu: Vec<f32> = at.matmul(&bt.t()?)?.flatten_all()?.to_vec1()?;
    let scale = cpu
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let worst = gpu
        .iter()
        .zip(&cpu)
        .fold(0f32, |m, (g, c)| m.max((g - c).abs()));
    Ok(f64::from(worst / scale))
}

//! `depthlens trace CKPT (--prompt TEXT | --ids 1,17,42) [--device ..] [--grads] [--logits] [--out F]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::BarProgress;
use crate::engine::{Engine, GpuTraceOptions};
use crate::model::Checkpoint;
use crate::reference::{self, Input, TraceOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct TraceArgs {
    /// Checkpoint folder or .safetensors file.
    pub checkpoint: PathBuf,
    /// Prompt text (tokenised with the checkpoint's tokenizer).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// Where to run the forward.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// Also run backward: d loss / d v per op and token, per-layer gradient histograms.
    #[arg(long)]
    pub grads: bool,
    /// Include the full logits [T][vocab].
    #[arg(long)]
    pub logits: bool,
    /// Write the Trace JSON here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the depth-profile figure (SVG, PNG), its data (CSV) and the Trace (JSON) here.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Print a per-op table (RMS, strongest depth weights of the last token) instead of JSON on
    /// stdout (with --out, the JSON still goes to the file).
    #[arg(long)]
    pub summary: bool,
}

/// One line per op: mean hidden/output RMS over tokens and the last token's three strongest
/// sources (AttnRes: depth weights; baselines: decomposition shares).
fn print_summary(trace: &crate::trace::Trace) {
    use crate::trace::Mixing;
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    println!(
        "{} | {} tokens | loss {}",
        trace.model.path,
        trace.tokens.len(),
        trace
            .loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "{:<9} {:>10} {:>10}  last token: strongest sources",
        "op", "hidden_rms", "output_rms"
    );
    for op in &trace.ops {
        let (table, what) = match op.mixing {
            Mixing::DepthAttention => (&op.alpha, "alpha"),
            Mixing::ResidualSum => (&op.shares, "share"),
        };
        let Some(weights) = table.last() else {
            continue;
        };
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| format!("{} {}={:.3}", op.sources[i], what, weights[i]))
            .collect();
        println!(
            "{:<9} {:>10.4} {:>10.4}  {}",
            op.name,
            mean(&op.hidden_rms),
            mean(&op.output_rms),
            top.join(", ")
        );
    }
    if let Some(last) = trace.topk.last() {
        let preds: Vec<String> = last
            .iter()
            .map(|p| format!("{:?} {:.3}", p.text, p.prob))
            .collect();
        println!("next token after the prompt: {}", preds.join(", "));
    }
}

/// The Trace from the GPU engine (weights uploaded for this one trace).
fn gpu_trace(
    engine: &Engine,
    ckpt: &Checkpoint,
    input: &Input,
    logits: bool,
) -> anyhow::Result<crate::trace::Trace> {
    let tokens = reference::tokenize(&ckpt.tokenizer, &ckpt.config, input)?;
    let model = engine.load(&ckpt.config, &ckpt.weights)?;
    let mut trace = engine.trace(
        &model,
        &ckpt.tokenizer,
        tokens,
        GpuTraceOptions {
            logits,
            profile: false,
        },
    )?;
    trace.model.path = ckpt.path.display().to_string();
    trace.warnings = ckpt.warnings.clone();
    Ok(trace)
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    // Gradients come from the reference's autograd; the engine computes forward Traces.
    if args.grads && args.device == DeviceChoice::Gpu {
        anyhow::bail!("--grads runs on the CPU reference (the GPU engine has no backward yet); use --device cpu or auto");
    }
    let engine = match args.device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Engine::new().context("--device gpu")?),
        DeviceChoice::Auto if args.grads => {
            eprintln!("note: --grads: running the CPU reference");
            None
        }
        DeviceChoice::Auto => match Engine::new() {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("note: no usable GPU ({e}); running the CPU reference");
                None
            }
        },
    };
    if let Some(e) = &engine {
        eprintln!("GPU adapter: {}", e.adapter_name());
    }
    let progress = BarProgress::new();
    let ckpt = Checkpoint::open(&args.checkpoint, &progress)
        .with_context(|| format!("cannot open {}", args.checkpoint.display()))?;
    super::prompt::report_checkpoint_notes(&ckpt);
    let input = super::prompt::input(&ckpt, args.prompt, args.ids)?;
    let opts = TraceOptions {
        grads: args.grads,
        logits: args.logits,
        ..TraceOptions::default()
    };
    let trace = match &engine {
        None => reference::trace(&ckpt, &input, opts, &progress).map_err(anyhow::Error::from),
        Some(engine) => gpu_trace(engine, &ckpt, &input, opts.logits),
    }
    .with_context(|| format!("cannot trace {}", args.checkpoint.display()))?;
    if let Some(dir) = &args.export {
        let name = args
            .checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let title = format!(
            "Depth profile of {name} ({} tokens, {})",
            trace.tokens.len(),
            trace.device
        );
        for path in crate::export::export_all(&trace, &title, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    let json = serde_json::to_string(&trace)?;
    if args.summary {
        print_summary(&trace);
    }
    match args.out {
        Some(path) => {
            std::fs::write(&path, json)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} ({} tokens, {} ops, loss {})",
                path.display(),
                trace.tokens.len(),
                trace.ops.len(),
                trace
                    .loss
                    .map(|l| format!("{l:.4}"))
                    .unwrap_or_else(|| "n/a".into())
            );
        }
        None if args.summary => {}
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

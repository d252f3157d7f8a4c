//! `depthlens export CKPT (--prompt TEXT | --ids ..) --figure NAME|all [--token I] [--op NAME]
//! [--compare CKPT_B] [--device ..] [--scale S] [--force] --out PATH`: the app's views as files,
//! without a window.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::trace::DeviceChoice;
use super::BarProgress;
use crate::engine::Engine;
use crate::export::views::{self, FigureKind, Format, ViewInput};
use crate::figures::{align_token, ModelInput, Quantity, Selection, Toggles};
use crate::model::Checkpoint;
use crate::reference::{self, Input, TraceOptions};
use crate::trace::Trace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FigureChoice {
    DepthAttention,
    TokenSource,
    Norms,
    Gradients,
    Difference,
    Training,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantityChoice {
    Natural,
    Alpha,
    Share,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct ExportArgs {
    /// Checkpoint (folder, .safetensors or .gguf).
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub prompt: Option<String>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// Which view; `all` writes every figure in every format, and trace.json, into --out (a folder).
    #[arg(long, value_enum)]
    pub figure: FigureChoice,
    /// The selected token (default: the last).
    #[arg(long)]
    pub token: Option<usize>,
    /// The op that token-source shows and the other views outline (default: `final`).
    #[arg(long)]
    pub op: Option<String>,
    /// Depth-attention: the mean over all tokens instead of --token.
    #[arg(long)]
    pub mean: bool,
    /// What depth heatmaps colour by (natural: AttnRes by alpha, baselines by shares).
    #[arg(long, value_enum, default_value_t = QuantityChoice::Natural)]
    pub quantity: QuantityChoice,
    /// A second checkpoint, drawn beside the first (and `difference` between them).
    #[arg(long, value_name = "CKPT_B")]
    pub compare: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// PNG pixels per SVG unit. Figures are laid out at 96 units per inch: --scale 3.125 gives
    /// 300 dpi at the SVG's own printed width (a 900-unit column prints 9.4 in wide).
    #[arg(long, default_value_t = 2.0)]
    pub scale: f32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// The file (format by extension: .svg .png .csv .json), or with --figure all a folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// The Trace of one checkpoint; with gradients from the reference (the engine has no backward).
fn trace_of(
    ckpt: &Checkpoint,
    input: &Input,
    engine: Option<&Engine>,
    grads: bool,
) -> anyhow::Result<Trace> {
    let progress = BarProgress::new();
    if grads || engine.is_none() {
        let opts = TraceOptions {
            grads,
            ..TraceOptions::default()
        };
        return Ok(reference::trace(ckpt, input, opts, &progress)?);
    }
    let engine = engine.context("no engine")?;
    let tokens = reference::tokenize(&ckpt.tokenizer, &ckpt.config, input)?;
    let model = engine.load(&ckpt.config, &ckpt.weights)?;
    let mut trace = engine.trace(&model, &ckpt.tokenizer, tokens, Default::default())?;
    trace.model.path = ckpt.path.display().to_string();
    trace.warnings = ckpt.warnings.clone();
    Ok(trace)
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let kinds: Vec<FigureKind> = match args.figure {
        FigureChoice::DepthAttention => vec![FigureKind::DepthAttention],
        FigureChoice::TokenSource => vec![FigureKind::TokenSource],
        FigureChoice::Norms => vec![FigureKind::Norms],
        FigureChoice::Gradients => vec![FigureKind::Gradients],
        FigureChoice::Difference => vec![FigureKind::Difference],
        FigureChoice::Training => vec![FigureKind::Training],
        FigureChoice::All => FigureKind::ALL.to_vec(),
    };
    let format = match args.figure {
        FigureChoice::All => None,
        _ => Some(Format::of(&args.out).with_context(|| {
            format!(
                "{}: the extension names the format: .svg, .png, .csv or .json",
                args.out.display()
            )
        })?),
    };
    if !(args.scale > 0.0 && args.scale <= 16.0) {
        bail!("--scale {}: give a scale in (0, 16]", args.scale);
    }
    if args.figure == FigureChoice::Difference && args.compare.is_none() {
        bail!("--figure difference draws B - A: give --compare CKPT_B");
    }
    let grads = kinds.contains(&FigureKind::Gradients);
    if grads && args.device == DeviceChoice::Gpu {
        eprintln!("note: gradients run on the CPU reference (the GPU engine has no backward)");
    }
    let engine = match args.device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Engine::new().context("--device gpu")?),
        DeviceChoice::Auto => Engine::new().ok(),
    };
    let input = super::prompt::input_quiet(args.prompt.clone(), args.ids.clone())?;
    let mut paths = vec![args.checkpoint.clone()];
    paths.extend(args.compare.clone());
    let mut traces = Vec::new();
    for path in &paths {
        let ckpt = Checkpoint::open(path, &BarProgress::new())
            .with_context(|| format!("cannot open {}", path.display()))?;
        super::prompt::report_checkpoint_notes(&ckpt);
        let trace = trace_of(&ckpt, &input, engine.as_ref(), grads)
            .with_context(|| format!("cannot trace {}", path.display()))?;
        let log = match ckpt
            .training_log
            .as_deref()
            .map(crate::figures::parse_training_log)
        {
            Some(Ok(log)) => Some(log),
            Some(Err(e)) => {
                eprintln!("warning: {}: {e}", path.display());
                None
            }
            None => None,
        };
        traces.push((crate::figures::checkpoint_name(path), trace, log));
    }
    let a = &traces[0].1;
    let token = match args.token {
        Some(t) if t < a.tokens.len() => t,
        Some(t) => bail!(
            "--token {t}: the prompt has {} tokens (0..{})",
            a.tokens.len(),
            a.tokens.len() - 1
        ),
        None => a.tokens.len() - 1,
    };
    let op = match &args.op {
        None => a.ops.len() - 1,
        Some(name) => a
            .ops
            .iter()
            .position(|o| &o.name == name)
            .with_context(|| {
                let names: Vec<&str> = a.ops.iter().map(|o| o.name.as_str()).collect();
                format!("--op {name}: no such op (ops: {})", names.join(", "))
            })?,
    };
    if let Some((_, b, _)) = traces.get(1) {
        eprintln!(
            "note: B's token {} is aligned to A's token {token} by byte span",
            align_token(a, b, token)
        );
    }
    let view = ViewInput {
        models: traces
            .iter()
            .map(|(name, t, log)| ModelInput {
                name,
                trace: t,
                grads: t.grads.is_some().then_some(t),
                training: log.as_ref(),
            })
            .collect(),
        selection: Selection { token, op },
        toggles: Toggles {
            quantity: match args.quantity {
                QuantityChoice::Natural => None,
                QuantityChoice::Alpha => Some(Quantity::Alpha),
                QuantityChoice::Share => Some(Quantity::Share),
            },
            depth_mean: args.mean,
            ..Toggles::default()
        },
    };
    match format {
        Some(format) => {
            let bytes = views::render(kinds[0], format, &view, args.scale)?;
            views::write_atomically(&args.out, &bytes, args.force)?;
            eprintln!("wrote {}", args.out.display());
        }
        None => {
            let (written, skipped) = views::export_all(
                &args.out,
                &view,
                args.scale,
                args.force,
                &BarProgress::new(),
            )?;
            for p in &written {
                eprintln!("wrote {}", p.display());
            }
            for s in skipped {
                eprintln!("skipped {s}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `depthlens trace CKPT (--prompt TEXT | --ids 1,17,42) [--device ..] [--grads] [--logits] [--out F]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::BarProgress;
use crate::model::{Checkpoint, TokenizerKind};
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
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    match args.device {
        DeviceChoice::Gpu => {
            eprintln!(
                "error: the GPU engine is not built yet; use --device cpu (the reference forward)"
            );
            return Ok(ExitCode::from(2));
        }
        DeviceChoice::Auto => {
            eprintln!("note: no GPU engine yet; running the CPU reference forward")
        }
        DeviceChoice::Cpu => {}
    }
    let progress = BarProgress::new();
    let ckpt = Checkpoint::open(&args.checkpoint, &progress)
        .with_context(|| format!("cannot open {}", args.checkpoint.display()))?;
    for w in &ckpt.warnings {
        eprintln!("warning: {w}");
    }
    let input = match (args.prompt, args.ids) {
        (Some(text), _) => {
            if ckpt.tokenizer.kind == TokenizerKind::ByteFallback {
                eprintln!("note: no tokenizer ships with this checkpoint; using byte-level tokens (id = byte)");
            }
            Input::Text(text)
        }
        (None, Some(ids)) => Input::Ids(ids),
        (None, None) => anyhow::bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let opts = TraceOptions {
        grads: args.grads,
        logits: args.logits,
        ..TraceOptions::default()
    };
    let trace = reference::trace(&ckpt, &input, opts, &progress)
        .with_context(|| format!("cannot trace {}", args.checkpoint.display()))?;
    let json = serde_json::to_string(&trace)?;
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
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

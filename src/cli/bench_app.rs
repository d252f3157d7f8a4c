//! `depthlens bench (CKPT | --synthetic ARCH,LAYERS,DIM) --app [--tokens 16,64,128]`: the
//! desktop app's keystroke-to-views latency and frame time, headless on the default adapter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::bench::BenchArgs;
use crate::model::{Checkpoint, TextTokenizer};
use crate::progress::Silent;

/// A text to cut prompts from: The Tempest (held out of the demo models' training).
const TEXT: &str = include_str!("../../assets/data/tempest.txt");

/// The longest start of `TEXT` that tokenises into `t` tokens (`None` if it has fewer).
fn prompt_of_length(tokenizer: &TextTokenizer, t: usize) -> anyhow::Result<Option<String>> {
    // Enough text for t tokens of any tokenizer (a token is at least one byte).
    let end = TEXT
        .char_indices()
        .nth(t * 8)
        .map_or(TEXT.len(), |(i, _)| i);
    let tokens = tokenizer.encode(&TEXT[..end])?;
    Ok(tokens
        .get(t.wrapping_sub(1))
        .map(|tok| TEXT[..tok.end].to_string()))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("a temporary folder for the synthetic model")?;
    let path: PathBuf = match (&args.checkpoint, &args.synthetic) {
        (Some(p), None) => p.clone(),
        (None, Some(spec)) => synthetic_checkpoint(spec, dir.path())?,
        _ => bail!("give a checkpoint or --synthetic ARCH,LAYERS,DIM (not both)"),
    };
    let ckpt = Checkpoint::open(&path, &Silent)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut prompts = Vec::new();
    for &t in &args.tokens {
        match prompt_of_length(&ckpt.tokenizer, t)? {
            Some(p) => prompts.push((t, p)),
            None => eprintln!(
                "note: the benchmark text has fewer than {t} tokens; skipping that length"
            ),
        }
    }
    drop(ckpt);
    let keystrokes = args.iters;
    // The app chooses where to trace (the GPU engine on a real GPU) unless told `--device cpu`.
    let tracer = match args.device {
        super::trace::DeviceChoice::Cpu => crate::ui::worker::TracerChoice::Cpu,
        _ => crate::ui::worker::TracerChoice::Auto,
    };
    let result = crate::ui::bench::bench_app(&path, tracer, &prompts, keystrokes, args.iters)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!(
        "model: {}",
        args.synthetic
            .as_deref()
            .map_or(path.display().to_string(), |s| format!("synthetic {s}"))
    );
    println!("traced by: {}", result.tracer);
    println!("window: 1600x1000, every view on screen (a grid of all panes), gradients computed");
    println!();
    println!("| tokens | keystrokes | keystroke -> views median ms | p95 ms | frame (egui pass) median ms | render + readback median ms |");
    println!("|---|---|---|---|---|---|");
    for r in &result.rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.tokens,
            r.keystrokes,
            r.keystroke_median_ms,
            r.keystroke_p95_ms,
            r.frame_median_ms,
            r.render_median_ms
        );
    }
    println!();
    if let Some(rss) = result.rss_traced {
        println!(
            "resident memory, model open and traced: {:.0} MB",
            rss as f64 / 1e6
        );
    }
    if let Some(rss) = result.peak_rss {
        println!(
            "peak resident memory, backward included: {:.0} MB",
            rss as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A random model of `spec`'s shape saved as a single-file checkpoint (the app opens files).
fn synthetic_checkpoint(spec: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    use crate::model::random::{random_weights, RandomInit};
    use crate::model::save::{save_single_file, StoreDtype};
    let cfg = super::bench::synthetic_config(spec)?;
    let init = RandomInit {
        weight_std: 0.02,
        gain_std: 0.0,
        query_std: 0.1,
    };
    let w = random_weights(&cfg, init, 1)?;
    let path = dir.join("synthetic.safetensors");
    save_single_file(&path, &cfg.to_hf_json(), None, &cfg, &w, StoreDtype::F32)?;
    Ok(path)
}

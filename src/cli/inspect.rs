//! `depthlens inspect CKPT [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::BarProgress;
use crate::model::{AttnResMode, Checkpoint, CheckpointLayout, ModelConfig, TokenizerKind};
use crate::reference::forward::op_name;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint folder or .safetensors file.
    pub checkpoint: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    path: String,
    layout: &'a CheckpointLayout,
    config: &'a ModelConfig,
    depth_mixing: String,
    /// Block AttnRes: the sublayers summed into each block (`B1` = first block after `emb`).
    blocks: Option<Vec<Vec<String>>>,
    parameters: usize,
    dtypes: &'a std::collections::BTreeMap<String, usize>,
    data_bytes: usize,
    tokenizer: &'a TokenizerKind,
    /// GGUF: the quantisation types, and that the weights were dequantised to f32.
    quantization: Option<&'a str>,
    warnings: &'a [String],
}

/// Which sublayers each Block-AttnRes block sums.
pub fn block_partition(cfg: &ModelConfig) -> Option<Vec<Vec<String>>> {
    let Some(AttnResMode::Block { block_size }) = cfg.attnres.map(|a| a.mode) else {
        return None;
    };
    let names: Vec<String> = (0..cfg.num_sublayers())
        .map(|l| op_name(l, cfg.num_layers))
        .collect();
    Some(names.chunks(block_size).map(<[String]>::to_vec).collect())
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let progress = BarProgress::new();
    let ckpt = Checkpoint::open(&args.checkpoint, &progress)
        .with_context(|| format!("cannot open {}", args.checkpoint.display()))?;
    let cfg = &ckpt.config;
    let depth_mixing = match cfg.attnres.map(|a| a.mode) {
        None => "baseline (PreNorm residual sum, implicit depth weights 1)".to_string(),
        Some(AttnResMode::Full) => "Full AttnRes (softmax over every earlier output)".to_string(),
        Some(AttnResMode::Block { block_size }) => {
            format!("Block AttnRes ({block_size} sublayers per block)")
        }
    };
    let report = Report {
        path: ckpt.path.display().to_string(),
        layout: &ckpt.layout,
        config: cfg,
        depth_mixing,
        blocks: block_partition(cfg),
        parameters: ckpt.weights.parameter_count(),
        dtypes: &ckpt.dtypes,
        data_bytes: ckpt.data_bytes,
        tokenizer: &ckpt.tokenizer.kind,
        quantization: ckpt.quantization.as_deref(),
        warnings: &ckpt.warnings,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("checkpoint     {}", report.path);
    if let Some(q) = &ckpt.quantization {
        println!("quantization   {q}");
    }
    println!("layout         {}", serde_json::to_string(&ckpt.layout)?);
    println!(
        "model_type     {} ({:?} family)",
        cfg.model_type, cfg.family
    );
    println!("depth mixing   {}", report.depth_mixing);
    if let Some(blocks) = &report.blocks {
        println!(
            "blocks         emb | {}",
            blocks
                .iter()
                .map(|b| b.join(" "))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    println!(
        "sizes          {} layers, d={}, {} heads ({} kv, head_dim {}), ffn {}, vocab {}, positions {}",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_positions
    );
    println!("norm           {:?}", cfg.norm);
    println!("activation     {:?}", cfg.activation);
    match &cfg.rope {
        Some(r) => println!(
            "positions      RoPE theta {} scaling {:?}",
            r.theta, r.scaling
        ),
        None => println!("positions      learned absolute"),
    }
    println!("tied head      {}", cfg.tie_word_embeddings);
    println!(
        "parameters     {} ({:.2} M)",
        report.parameters,
        report.parameters as f64 / 1e6
    );
    println!(
        "dtypes         {} (computed in f32); {:.2} MB of tensor data",
        ckpt.dtypes
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        ckpt.data_bytes as f64 / 1e6
    );
    match &ckpt.tokenizer.kind {
        TokenizerKind::HuggingFace { source } => {
            println!(
                "tokenizer      tokenizer.json from {source} ({} entries)",
                ckpt.tokenizer.vocab_size()
            )
        }
        TokenizerKind::Gguf { model, pre, .. } => {
            println!(
                "tokenizer      rebuilt from GGUF metadata (tokenizer.ggml.model {model}, pre {pre}; {} entries)",
                ckpt.tokenizer.vocab_size()
            )
        }
        TokenizerKind::ByteFallback => {
            println!(
                "tokenizer      none shipped: byte-level fallback (token id = UTF-8 byte value)"
            )
        }
    }
    // The quantisation note was printed at the top; the rest are warnings proper.
    for w in ckpt
        .warnings
        .iter()
        .filter(|w| Some(w.as_str()) != ckpt.quantization.as_deref())
    {
        println!("warning        {w}");
    }
    Ok(ExitCode::SUCCESS)
}

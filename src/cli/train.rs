//! `depthlens train`: train a small baseline / Full / Block AttnRes model on a text corpus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::Checkpoint;
use crate::progress::Silent;
use crate::train::{self, bpe, Arch, Data, Outputs, TrainObserver, TrainSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchChoice {
    Baseline,
    Full,
    Block,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    pub arch: ArchChoice,
    /// Sublayers per block (Block AttnRes).
    #[arg(long, default_value_t = 4)]
    pub block_size: usize,
    #[arg(long, default_value_t = 8)]
    pub layers: usize,
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Key/value heads (GQA); defaults to --heads.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// SwiGLU hidden size; defaults to 8/3 of --dim rounded up to a multiple of 32.
    #[arg(long)]
    pub ffn: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Training text (UTF-8).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Held-out text for validation loss; without it the last 5% of the corpus is held out.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// tokenizer.json to use; trained on the corpus and written here if it does not exist.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Vocabulary size when training the tokenizer.
    #[arg(long, default_value_t = 2048)]
    pub vocab: usize,
    #[arg(long)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Evaluate, log per-layer gradient norms and save resume state every N steps.
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    /// Output checkpoint (.safetensors, f16, config and tokenizer in its metadata).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the resume state saved next to --out.
    #[arg(long)]
    pub resume: bool,
}

struct BarObserver(ProgressBar);

impl TrainObserver for BarObserver {
    fn step(&self, step: usize, total: usize, loss: f64, tokens_per_second: f64) {
        self.0.set_length(total as u64);
        self.0.set_position(step as u64);
        self.0
            .set_message(format!("loss {loss:.3}  {tokens_per_second:.0} tok/s"));
    }
    fn note(&self, message: &str) {
        self.0.println(message);
    }
}

fn read_text(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let arch = match args.arch {
        ArchChoice::Baseline => Arch::Baseline,
        ArchChoice::Full => Arch::Full,
        ArchChoice::Block => Arch::Block {
            block_size: args.block_size,
        },
    };
    let ffn = args.ffn.unwrap_or((args.dim * 8 / 3).div_ceil(32) * 32);
    let spec = TrainSpec {
        arch,
        layers: args.layers,
        dim: args.dim,
        heads: args.heads,
        kv_heads: args.kv_heads.unwrap_or(args.heads),
        ffn,
        seq_len: args.seq_len,
        batch: args.batch,
        steps: args.steps,
        lr: args.lr,
        min_lr_ratio: 0.1,
        warmup: args.warmup.min(args.steps),
        clip: args.clip,
        seed: args.seed,
        eval_every: args.eval_every.max(1),
    };
    let tokenizer = if args.tokenizer.is_file() {
        tokenizers::Tokenizer::from_file(&args.tokenizer)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.tokenizer.display()))?
    } else {
        eprintln!(
            "training a {}-entry byte-level BPE on {}",
            args.vocab,
            args.corpus.display()
        );
        let t = bpe::train_bpe(&args.corpus, args.vocab)?;
        t.save(&args.tokenizer, false)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.tokenizer.display()))?;
        t
    };
    let corpus = read_text(&args.corpus)?;
    let mut train_ids = bpe::encode_corpus(&tokenizer, &corpus)?;
    let val_ids = match &args.val {
        Some(p) => bpe::encode_corpus(&tokenizer, &read_text(p)?)?,
        None => {
            let cut = train_ids.len() * 95 / 100;
            train_ids.split_off(cut)
        }
    };
    eprintln!(
        "corpus: {} training tokens, {} validation tokens; model: {:?}, {} layers, d={}, ffn={}",
        train_ids.len(),
        val_ids.len(),
        spec.arch,
        spec.layers,
        spec.dim,
        spec.ffn
    );
    let vocab_size = tokenizer.get_vocab_size(true);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C: finish the current step, save checkpoint and resume state, exit.
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let bar = ProgressBar::new(spec.steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let outputs = Outputs {
        checkpoint: args.out.clone(),
        tokenizer_json: Some(
            tokenizer
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))?,
        ),
    };
    let data = Data {
        train: train_ids,
        val: val_ids,
    };
    let summary = train::train(
        &spec,
        &data,
        vocab_size,
        &outputs,
        args.resume,
        &stop,
        &BarObserver(bar.clone()),
    )?;
    bar.finish_and_clear();
    // Report the validation loss of the checkpoint as shipped (f16), on every held-out window.
    let shipped = Checkpoint::open(&args.out, &Silent)?;
    let val_loss = train::eval_loss(
        &shipped.config,
        &shipped.weights,
        &data.val,
        spec.seq_len,
        usize::MAX,
    )?;
    eprintln!(
        "{} after {} steps in {:.0} s: last train loss {:.4}, validation loss of the saved f16 checkpoint {:.4}",
        if summary.interrupted { "interrupted" } else { "done" },
        summary.steps_done,
        summary.wall_seconds,
        summary.final_train_loss,
        val_loss
    );
    eprintln!(
        "wrote {} and {}",
        args.out.display(),
        outputs.log_path().display()
    );
    if summary.interrupted {
        eprintln!("resume with the same command and --resume");
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

//! `depthlens generate CKPT (--prompt TEXT | --ids 1,2,3) [--max-tokens N] [--json]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::BarProgress;
use crate::model::Checkpoint;
use crate::reference::{self, StopReason};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct GenerateArgs {
    /// Checkpoint folder, .safetensors or .gguf file.
    pub checkpoint: PathBuf,
    /// Prompt text (tokenised with the checkpoint's tokenizer, special tokens such as
    /// `<|im_start|>` included as written).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// Most tokens to generate (fewer when the model ends with EOS).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Print one JSON object (prompt tokens, generated ids, text, stop reason) at the end instead
    /// of streaming the text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let progress = BarProgress::new();
    let ckpt = Checkpoint::open(&args.checkpoint, &progress)
        .with_context(|| format!("cannot open {}", args.checkpoint.display()))?;
    super::prompt::report_checkpoint_notes(&ckpt);
    let input = super::prompt::input(&ckpt, args.prompt, args.ids)?;
    if ckpt.eos_token_ids.is_empty() {
        eprintln!(
            "note: the checkpoint names no EOS token; generating all {} tokens",
            args.max_tokens
        );
    }
    // Stream: after each token print what the decoded continuation gained (a multi-byte character
    // can span tokens, so decode the whole continuation, not the token alone).
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut stdout = std::io::stdout().lock();
    let stream = !args.json;
    let eos = ckpt.eos_token_ids.clone();
    let mut on_token = |id: u32| {
        if !stream || eos.contains(&id) {
            return;
        }
        generated.push(id);
        let text = ckpt.tokenizer.decode(&generated);
        if let Some(new) = text.strip_prefix(printed.as_str()) {
            if !new.ends_with('\u{FFFD}') {
                let _ = stdout.write_all(new.as_bytes());
                let _ = stdout.flush();
                printed = text;
            }
        }
    };
    let generation = reference::generate(&ckpt, &input, args.max_tokens, &mut on_token)
        .with_context(|| format!("cannot generate with {}", args.checkpoint.display()))?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &generation)?;
        writeln!(stdout)?;
    } else {
        // Whatever the stream held back (a trailing partial character) comes out now.
        if let Some(rest) = generation.text.strip_prefix(printed.as_str()) {
            stdout.write_all(rest.as_bytes())?;
        }
        writeln!(stdout)?;
    }
    let why = match generation.stop {
        StopReason::Eos => "EOS".to_string(),
        StopReason::MaxTokens => format!("--max-tokens {}", args.max_tokens),
        StopReason::ContextFull => format!(
            "the model's {} positions are full",
            ckpt.config.max_positions
        ),
    };
    eprintln!(
        "generated {} tokens after a {}-token prompt; stopped at {why}",
        generation.ids.len(),
        generation.prompt.len()
    );
    Ok(ExitCode::SUCCESS)
}

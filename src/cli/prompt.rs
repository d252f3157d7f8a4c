//! What the prompt-taking subcommands (`trace`, `generate`) share: reporting what was noticed
//! while opening the checkpoint, and turning `--prompt` / `--ids` into an [`Input`].

use crate::model::{Checkpoint, TokenizerKind};
use crate::reference::Input;

/// Print the checkpoint's quantisation note and warnings on stderr.
pub fn report_checkpoint_notes(ckpt: &Checkpoint) {
    if let Some(q) = &ckpt.quantization {
        eprintln!("note: {q}");
    }
    for w in ckpt
        .warnings
        .iter()
        .filter(|w| Some(w.as_str()) != ckpt.quantization.as_deref())
    {
        eprintln!("warning: {w}");
    }
}

/// `--prompt TEXT` (announcing a byte-level fallback tokenizer) or `--ids 1,2,3`.
pub fn input(
    ckpt: &Checkpoint,
    prompt: Option<String>,
    ids: Option<Vec<u32>>,
) -> anyhow::Result<Input> {
    let input = input_quiet(prompt, ids)?;
    if matches!(input, Input::Text(_)) && ckpt.tokenizer.kind == TokenizerKind::ByteFallback {
        eprintln!(
            "note: no tokenizer ships with this checkpoint; using byte-level tokens (id = byte)"
        );
    }
    Ok(input)
}

/// `--prompt TEXT` or `--ids 1,2,3`, before any checkpoint is open.
pub fn input_quiet(prompt: Option<String>, ids: Option<Vec<u32>>) -> anyhow::Result<Input> {
    match (prompt, ids) {
        (Some(text), _) => Ok(Input::Text(text)),
        (None, Some(ids)) => Ok(Input::Ids(ids)),
        (None, None) => anyhow::bail!("give --prompt TEXT or --ids 1,2,3"),
    }
}

//! Greedy decoding with the reference forward: a check that a checkpoint was read correctly (a
//! misread model still produces a Trace, but not a sensible continuation). No KV cache: every step
//! recomputes the whole sequence, which is what the reference is for, not speed.

use serde::Serialize;

use super::{check_ids, forward, tokenize, Error, Input};
use crate::model::{Checkpoint, ModelConfig, Token, Weights};

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence token (not included in the output).
    Eos,
    /// `max_new_tokens` were produced.
    MaxTokens,
    /// The sequence filled the model's positions.
    ContextFull,
}

/// A prompt and its greedy continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt: Vec<Token>,
    /// Generated ids, without the EOS token that ended them.
    pub ids: Vec<u32>,
    /// `ids` decoded.
    pub text: String,
    pub stop: StopReason,
}

/// Greedy continuation of already-tokenised `prompt`: at most `max_new_tokens` ids, stopping
/// before any of `eos`. `on_token` hears each id as it is chosen (EOS included).
pub fn greedy_ids(
    cfg: &ModelConfig,
    weights: &Weights,
    prompt: &[u32],
    max_new_tokens: usize,
    eos: &[u32],
    on_token: &mut dyn FnMut(u32),
) -> Result<(Vec<u32>, StopReason), Error> {
    check_ids(cfg, prompt)?;
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_new_tokens {
        if ids.len() >= cfg.max_positions {
            return Ok((out, StopReason::ContextFull));
        }
        let logits = forward::logits_batch(cfg, weights, &ids, ids.len())?;
        let last = logits.get(ids.len() - 1)?.to_vec1::<f32>()?;
        let next = argmax(&last);
        on_token(next);
        if eos.contains(&next) {
            return Ok((out, StopReason::Eos));
        }
        out.push(next);
        ids.push(next);
    }
    Ok((out, StopReason::MaxTokens))
}

/// The highest logit's id; NaN never wins, ties go to the lowest id.
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Tokenise `input` with the checkpoint's tokenizer and continue it greedily, stopping at the
/// checkpoint's EOS ids.
pub fn generate(
    ckpt: &Checkpoint,
    input: &Input,
    max_new_tokens: usize,
    on_token: &mut dyn FnMut(u32),
) -> Result<Generation, Error> {
    let prompt = tokenize(&ckpt.tokenizer, &ckpt.config, input)?;
    let prompt_ids: Vec<u32> = prompt.iter().map(|t| t.id).collect();
    let (ids, stop) = greedy_ids(
        &ckpt.config,
        &ckpt.weights,
        &prompt_ids,
        max_new_tokens,
        &ckpt.eos_token_ids,
        on_token,
    )?;
    Ok(Generation {
        text: ckpt.tokenizer.decode(&ids),
        prompt,
        ids,
        stop,
    })
}

//! The CPU reference forward (candle-core, f32): the source of truth for every number depthlens
//! shows. It records the [`Trace`]; with gradients on it runs candle's autograd backward.

pub mod depth;
pub mod forward;
pub mod generate;
pub mod grads;
pub mod ops;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use crate::model::weights::ParamGroup;
use crate::model::{Checkpoint, Family, ModelConfig, TextTokenizer, Token, Weights};
use crate::progress::Progress;
use crate::trace::{ModelSummary, Prediction, Trace, TRACE_SCHEMA_VERSION};

pub use generate::{generate, greedy_ids, Generation, StopReason};

/// Why a trace could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens, more than the model's {max} positions (config `{field}`); shorten it")]
    PromptTooLong {
        tokens: usize,
        max: usize,
        field: &'static str,
    },
    #[error("token id {id} at position {position} is outside the vocabulary (vocab_size {vocab})")]
    TokenOutOfRange {
        id: u32,
        position: usize,
        vocab: usize,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::model::Error),
    #[error("reference forward failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What the prompt is.
#[derive(Debug, Clone)]
pub enum Input {
    Text(String),
    Ids(Vec<u32>),
}

/// What to record beyond the always-present fields.
#[derive(Debug, Clone, Copy)]
pub struct TraceOptions {
    pub grads: bool,
    pub logits: bool,
    pub top_k: usize,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            grads: false,
            logits: false,
            top_k: 5,
        }
    }
}

/// Tokenise `input` for this checkpoint and check it fits the model.
pub fn tokenize(
    tokenizer: &TextTokenizer,
    cfg: &ModelConfig,
    input: &Input,
) -> Result<Vec<Token>, Error> {
    let tokens = match input {
        Input::Text(text) => tokenizer.encode(text)?,
        Input::Ids(ids) => tokenizer.tokens_from_ids(ids),
    };
    check_ids(cfg, &tokens.iter().map(|t| t.id).collect::<Vec<_>>())?;
    Ok(tokens)
}

/// The prompt must be non-empty, within the vocabulary and within the model's positions.
pub fn check_ids(cfg: &ModelConfig, ids: &[u32]) -> Result<(), Error> {
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if ids.len() > cfg.max_positions {
        return Err(Error::PromptTooLong {
            tokens: ids.len(),
            max: cfg.max_positions,
            field: match cfg.family {
                Family::Gpt2 => "n_positions",
                Family::Llama => "max_position_embeddings",
            },
        });
    }
    if let Some((position, &id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= cfg.vocab_size)
    {
        return Err(Error::TokenOutOfRange {
            id,
            position,
            vocab: cfg.vocab_size,
        });
    }
    Ok(())
}

/// Trace a checkpoint on an input: tokenise, run the reference forward, collect the Trace.
pub fn trace(
    ckpt: &Checkpoint,
    input: &Input,
    opts: TraceOptions,
    progress: &dyn Progress,
) -> Result<Trace, Error> {
    let tokens = tokenize(&ckpt.tokenizer, &ckpt.config, input)?;
    let mut trace = trace_tokens(
        &ckpt.config,
        &ckpt.weights,
        &ckpt.tokenizer,
        tokens,
        opts,
        progress,
    )?;
    trace.model.path = ckpt.path.display().to_string();
    trace.warnings.splice(0..0, ckpt.warnings.iter().cloned());
    Ok(trace)
}

/// Trace already-tokenised input with explicit weights (tests build weights directly).
pub fn trace_tokens(
    cfg: &ModelConfig,
    weights: &Weights,
    tokenizer: &TextTokenizer,
    tokens: Vec<Token>,
    opts: TraceOptions,
    progress: &dyn Progress,
) -> Result<Trace, Error> {
    let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    let run = run(cfg, weights, &ids, opts.grads, progress)?;
    let mut depth_ops = run.forward.ops;
    let mut warnings = Vec::new();
    let loss = match &run.loss {
        Some(l) => Some(l.to_dtype(DType::F32)?.to_scalar::<f32>()?),
        None => None,
    };
    let grads = match &run.backward {
        Some(b) => {
            for (op, probe) in depth_ops.iter_mut().zip(&b.probes) {
                op.grad_rms = Some(match b.store.get(probe.as_tensor()) {
                    Some(g) => ops::vec_f32(&ops::rms(g)?)?,
                    None => vec![0.0; ids.len()],
                });
            }
            Some(grads::histograms(cfg, &b.param_vars, &b.store)?)
        }
        None if opts.grads => {
            warnings
                .push("gradients need at least two tokens (the loss predicts the next one)".into());
            None
        }
        None => None,
    };
    let logits = run.forward.logits.detach();
    let topk = top_k(&logits, opts.top_k, tokenizer)?;
    Ok(Trace {
        schema_version: TRACE_SCHEMA_VERSION,
        model: ModelSummary::of(cfg),
        device: "cpu-reference".into(),
        tokens,
        ops: depth_ops,
        topk,
        loss,
        grads,
        logits: if opts.logits {
            Some(ops::rows_f32(&logits)?)
        } else {
            None
        },
        warnings,
    })
}

/// The backward pass of one forward: parameter variables, output probes, and their gradients.
pub struct Backward {
    /// Every parameter as a variable, with its histogram group, in [`Weights::map_tensors`] order.
    pub param_vars: Vec<(ParamGroup, Var)>,
    /// One zero `[T, d]` variable per op added to its output: its gradient is `d loss / d v`.
    pub probes: Vec<Var>,
    pub store: GradStore,
}

/// A forward, its loss, and (when asked and the prompt has two tokens or more) its backward.
pub struct Run {
    pub forward: forward::ForwardOutput,
    pub loss: Option<Tensor>,
    pub backward: Option<Backward>,
}

/// Run the reference forward (and backward) on token ids.
pub fn run(
    cfg: &ModelConfig,
    weights: &Weights,
    ids: &[u32],
    grads: bool,
    progress: &dyn Progress,
) -> Result<Run, Error> {
    check_ids(cfg, ids)?;
    let grads = grads && ids.len() >= 2;
    if !grads {
        let forward = forward::forward(cfg, weights, ids, None, progress)?;
        let loss = next_token_loss(&forward.logits, ids)?;
        return Ok(Run {
            forward,
            loss,
            backward: None,
        });
    }
    let mut param_vars = Vec::new();
    let weights = weights.map_tensors(&mut |group, t| {
        let v = Var::from_tensor(t)?;
        let tensor = v.as_tensor().clone();
        param_vars.push((group, v));
        Ok(tensor)
    })?;
    let dtype = weights.embed.dtype();
    let probes = (0..=cfg.num_sublayers())
        .map(|_| Var::zeros((ids.len(), cfg.hidden_size), dtype, &Device::Cpu))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let offsets: Vec<Tensor> = probes.iter().map(|p| p.as_tensor().clone()).collect();
    let forward = forward::forward(cfg, &weights, ids, Some(&offsets), progress)?;
    let loss = next_token_loss(&forward.logits, ids)?;
    let backward = match &loss {
        Some(l) => Some(Backward {
            param_vars,
            probes,
            store: l.backward()?,
        }),
        None => None,
    };
    Ok(Run {
        forward,
        loss,
        backward,
    })
}

/// Mean next-token cross-entropy over the prompt; `None` for a single token.
pub fn next_token_loss(logits: &Tensor, ids: &[u32]) -> candle_core::Result<Option<Tensor>> {
    let t = ids.len();
    if t < 2 {
        return Ok(None);
    }
    let inputs = logits.narrow(0, 0, t - 1)?;
    let targets = Tensor::from_vec(ids[1..].to_vec(), (t - 1, 1), logits.device())?;
    let picked = inputs.gather(&targets, 1)?.squeeze(1)?;
    let nll = (ops::log_sum_exp(&inputs)? - picked)?;
    nll.mean_all().map(Some)
}

/// The `k` most probable next tokens after each position.
pub fn top_k(
    logits: &Tensor,
    k: usize,
    tokenizer: &TextTokenizer,
) -> candle_core::Result<Vec<Vec<Prediction>>> {
    let rows = ops::rows_f32(logits)?;
    // One softmax sum and selection per position over the whole vocabulary: spread over threads.
    Ok(rows
        .par_iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let mut order: Vec<usize> = (0..row.len()).collect();
            let k = k.min(row.len());
            // Partial selection, then sort only the k winners; NaN logits rank last.
            let value = |i: usize| {
                if row[i].is_nan() {
                    f32::NEG_INFINITY
                } else {
                    row[i]
                }
            };
            let descending = |a: &usize, b: &usize| value(*b).total_cmp(&value(*a));
            if k < order.len() {
                order.select_nth_unstable_by(k, descending);
            }
            order.truncate(k);
            order.sort_by(descending);
            order
                .into_iter()
                .map(|i| Prediction {
                    id: i as u32,
                    text: tokenizer.decode(&[i as u32]),
                    prob: (((row[i] - max) as f64).exp() / sum) as f32,
                })
                .collect()
        })
        .collect())
}

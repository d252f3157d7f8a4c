//! The CPU reference forward (candle-core, f32): the source of truth for every number depthlens
//! shows. It records the [`Trace`]; with gradients on it runs candle's autograd backward.

pub mod depth;
pub mod forward;
pub mod generate;
pub mod grads;
pub mod kernels;
pub mod ops;
pub mod phases;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
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
    let (positions, vocab) = logits.dims2()?;
    let _readout = phases::Span::start("logits readout: loss, top-k");
    // One pass over the `[T, vocab]` logits, read where the LM head wrote them, gives both the
    // loss and the top-k probabilities; candle's log-sum-exp would build four logits-sized
    // temporaries for the loss alone.
    let (loss, token_nll, topk, logits) = ops::read_f32(&logits, |flat| {
        let rows = LogitRows {
            flat,
            positions,
            vocab,
        };
        let normalisers = log_normalisers(rows);
        let token_nll = token_nll(rows, &normalisers, &ids);
        let loss = mean_next_token_nll(rows, &normalisers, &ids);
        let topk = top_k(rows, &normalisers, opts.top_k, tokenizer);
        let all = opts
            .logits
            .then(|| (0..positions).map(|t| rows[t].to_vec()).collect());
        (loss, token_nll, topk, all)
    })?;
    Ok(Trace {
        schema_version: TRACE_SCHEMA_VERSION,
        model: ModelSummary::of(cfg),
        device: "cpu-reference".into(),
        tokens,
        ops: depth_ops,
        topk,
        loss,
        token_nll,
        grads,
        logits,
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

/// A forward and (when asked and the prompt has two tokens or more) its loss and backward.
pub struct Run {
    pub forward: forward::ForwardOutput,
    /// The differentiable loss the backward started from (with gradients only: a trace's loss
    /// comes from [`mean_next_token_nll`]).
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
        return Ok(Run {
            forward,
            loss: None,
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

/// `ln Σ_j exp(z_j)` of every row of logits, with the row's max taken out first, in f64.
pub struct LogNormaliser {
    max: f32,
    log_sum: f64,
}

impl LogNormaliser {
    /// `ln p` of a logit of this row.
    pub fn log_prob(&self, logit: f32) -> f64 {
        f64::from(logit - self.max) - self.log_sum
    }
}

/// `[positions, vocab]` logits, row-major in `flat`.
#[derive(Clone, Copy)]
pub struct LogitRows<'a> {
    pub flat: &'a [f32],
    pub positions: usize,
    pub vocab: usize,
}

impl LogitRows<'_> {
    pub fn len(&self) -> usize {
        self.positions
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<usize> for LogitRows<'_> {
    type Output = [f32];
    fn index(&self, t: usize) -> &[f32] {
        &self.flat[t * self.vocab..(t + 1) * self.vocab]
    }
}

/// One softmax normaliser per row of `[T, vocab]` logits, rows spread over threads.
pub fn log_normalisers(rows: LogitRows) -> Vec<LogNormaliser> {
    (0..rows.len())
        .into_par_iter()
        .map(|t| {
            let row = &rows[t];
            // Eight interleaved maxima and sums: one running value is a chain of dependent
            // operations, eight let the CPU overlap them. (NaN is skipped, as f32::max does.)
            let (lanes, tail) = row.split_at(row.len() / 8 * 8);
            let mut maxima = [f32::NEG_INFINITY; 8];
            for chunk in lanes.chunks_exact(8) {
                for (m, &x) in maxima.iter_mut().zip(chunk) {
                    *m = m.max(x);
                }
            }
            let max = maxima
                .iter()
                .chain(tail)
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            // Each term in f32 (x - max <= 0, so exp is within an ulp), summed in f64.
            let term = |x: f32| f64::from((x - max).exp());
            let mut sums = [0f64; 8];
            for chunk in lanes.chunks_exact(8) {
                for (s, &x) in sums.iter_mut().zip(chunk) {
                    *s += term(x);
                }
            }
            let sum = sums.iter().sum::<f64>() + tail.iter().map(|&x| term(x)).sum::<f64>();
            LogNormaliser {
                max,
                log_sum: sum.ln(),
            }
        })
        .collect()
}

/// Mean cross-entropy of predicting `ids[t + 1]` at every position `t`; `None` for one token.
/// Each token's surprise under the model: `-ln p(ids[t] | ids[..t])`, `None` for the first.
pub fn token_nll(rows: LogitRows, normalisers: &[LogNormaliser], ids: &[u32]) -> Vec<Option<f32>> {
    std::iter::once(None)
        .chain(
            ids[1..]
                .iter()
                .enumerate()
                .map(|(t, &next)| Some(-normalisers[t].log_prob(rows[t][next as usize]) as f32)),
        )
        .take(ids.len())
        .collect()
}

pub fn mean_next_token_nll(
    rows: LogitRows,
    normalisers: &[LogNormaliser],
    ids: &[u32],
) -> Option<f32> {
    if ids.len() < 2 {
        return None;
    }
    let nll: f64 = ids[1..]
        .iter()
        .enumerate()
        .map(|(t, &next)| -normalisers[t].log_prob(rows[t][next as usize]))
        .sum();
    Some((nll / (ids.len() - 1) as f64) as f32)
}

/// Indices of the `k` largest values, largest first; among equal values the lower index first,
/// and NaN ranks below everything. One pass that keeps the winners sorted: `k` is a handful
/// against a vocabulary of ~50k.
fn largest_k(row: &[f32], k: usize) -> Vec<usize> {
    let value = |i: usize| {
        if row[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            row[i]
        }
    };
    // A --top-k past the vocabulary asks for every token, not for that much memory.
    let k = k.min(row.len());
    let mut winners: Vec<usize> = Vec::with_capacity(k + 1);
    for i in 0..row.len() {
        let v = value(i);
        if winners.len() == k && winners.last().is_none_or(|&w| value(w) >= v) {
            continue;
        }
        let at = winners.partition_point(|&w| value(w) >= v);
        winners.insert(at, i);
        winners.truncate(k);
    }
    winners
}

/// The `k` most probable next tokens after each position.
pub fn top_k(
    rows: LogitRows,
    normalisers: &[LogNormaliser],
    k: usize,
    tokenizer: &TextTokenizer,
) -> Vec<Vec<Prediction>> {
    // One selection per position over the whole vocabulary: spread over threads.
    (0..rows.len())
        .into_par_iter()
        .map(|t| {
            let row = &rows[t];
            let winners = largest_k(row, k);
            winners
                .into_iter()
                .map(|i| Prediction {
                    id: i as u32,
                    text: tokenizer.decode(&[i as u32]),
                    prob: normalisers[t].log_prob(row[i]).exp() as f32,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::largest_k;

    /// What `largest_k` must equal: a full stable sort, NaN as the smallest value.
    fn by_full_sort(row: &[f32], k: usize) -> Vec<usize> {
        let key = |i: usize| {
            if row[i].is_nan() {
                f32::NEG_INFINITY
            } else {
                row[i]
            }
        };
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
        order.truncate(k);
        order
    }

    #[test]
    fn largest_k_agrees_with_a_full_sort_including_ties_and_nan() {
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            state >> 8
        };
        for len in [1, 2, 7, 64, 1000] {
            // Few distinct values, so ties are common; some NaN and infinities.
            let row: Vec<f32> = (0..len)
                .map(|_| match next() % 13 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    v => (v % 5) as f32 - 2.0,
                })
                .collect();
            for k in [0, 1, 3, 5, len, len + 4] {
                assert_eq!(
                    largest_k(&row, k),
                    by_full_sort(&row, k),
                    "len {len}, k {k}"
                );
            }
        }
    }
}

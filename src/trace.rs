//! The Trace: everything one forward pass records along depth. Both forwards (the candle
//! reference and the GPU engine) produce it; every view and export only reads it.
//!
//! Definitions (ATTNRES.md leaves these statistics open; these are ours):
//! - op `l < 2L` is sublayer `l` (`L{l/2}.attn` or `L{l/2}.mlp`); op `2L` is `final`, the input of
//!   the final norm (AttnRes: the final depth aggregation; baselines: the residual stream's sum);
//! - `alpha[t][i]`: AttnRes softmax weight of source `i` for token `t`; baselines: the implicit
//!   weight 1 of every source;
//! - `shares[t][i] = <alpha_i v_i, h> / <h, h>`: source `i`'s share of the op's input `h`
//!   (residual decomposition; sums to 1 per token);
//! - RMS of a vector `x` of size `d` is `||x|| / sqrt(d)`.

use serde::{Deserialize, Serialize};

pub use crate::model::Token;

/// Schema version of the JSON a Trace serialises to.
pub const TRACE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Attn,
    Mlp,
    Final,
}

/// How the op's input was formed from its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixing {
    /// Standard PreNorm residual: every source with weight 1.
    ResidualSum,
    /// AttnRes softmax over sources.
    DepthAttention,
}

/// One op along depth: a sublayer, or the final aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthOp {
    /// `L3.attn`, `L3.mlp`, `final`.
    pub name: String,
    /// Transformer layer (`L` for the final op).
    pub layer: usize,
    pub kind: OpKind,
    pub mixing: Mixing,
    /// Source labels: `emb`, `L0.attn`, ... (Full / baseline); `emb`, `B1`, ..., `partial` (Block).
    pub sources: Vec<String>,
    /// `[T][n_sources]` depth weights.
    pub alpha: Vec<Vec<f32>>,
    /// `[T][n_sources]` residual-decomposition shares of the input.
    pub shares: Vec<Vec<f32>>,
    /// `[T][n_sources]` RMS of each source.
    pub source_rms: Vec<Vec<f32>>,
    /// `[T]` RMS of the op's input `h` (before its PreNorm).
    pub hidden_rms: Vec<f32>,
    /// `[T]` RMS of the op's output `v` (final op: of the final norm's output).
    pub output_rms: Vec<f32>,
    /// `[T]` Block AttnRes: RMS of the current block's partial sum after this sublayer.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partial_rms: Option<Vec<f32>>,
    /// `[T]` RMS of `d loss / d v` (final op: `d loss / d h`), when gradients were asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_rms: Option<Vec<f32>>,
}

/// One of the top next-token predictions at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: u32,
    pub text: String,
    pub prob: f32,
}

/// Histogram of `log10 |grad|` of one parameter group, over bins shared by all groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradHistogram {
    /// `embedding`, `L0` .. `L{L-1}`, `head`.
    pub group: String,
    /// Counts per bin (`bin_edges.len() - 1` of them).
    pub counts: Vec<u64>,
    /// Gradients exactly zero (no logarithm).
    pub zeros: u64,
    /// Below the first edge / at or above the last edge.
    pub underflow: u64,
    pub overflow: u64,
    /// NaN or infinite gradients.
    pub non_finite: u64,
    /// RMS of all the group's gradients.
    pub grad_rms: f32,
    pub parameters: u64,
}

/// Parameter-gradient statistics of one forward + backward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gradients {
    /// Edges of the `log10 |grad|` bins (ascending, fixed for every trace).
    pub bin_edges: Vec<f32>,
    pub histograms: Vec<GradHistogram>,
}

/// What the trace was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub path: String,
    pub model_type: String,
    /// `baseline`, `full`, `block`.
    pub depth_mixing: String,
    pub block_size: Option<usize>,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
}

impl ModelSummary {
    /// The summary of a config (`path` left empty for the caller to fill).
    pub fn of(cfg: &crate::model::ModelConfig) -> Self {
        use crate::model::AttnResMode;
        let (depth_mixing, block_size) = match cfg.attnres.map(|a| a.mode) {
            None => ("baseline", None),
            Some(AttnResMode::Full) => ("full", None),
            Some(AttnResMode::Block { block_size }) => ("block", Some(block_size)),
        };
        Self {
            path: String::new(),
            model_type: cfg.model_type.clone(),
            depth_mixing: depth_mixing.into(),
            block_size,
            num_layers: cfg.num_layers,
            hidden_size: cfg.hidden_size,
            vocab_size: cfg.vocab_size,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub schema_version: u32,
    pub model: ModelSummary,
    /// `cpu-reference` or the GPU adapter's name.
    pub device: String,
    pub tokens: Vec<Token>,
    pub ops: Vec<DepthOp>,
    /// `[T][k]` top next-token predictions after each position.
    pub topk: Vec<Vec<Prediction>>,
    /// Mean next-token cross-entropy over the prompt (nats); `None` for a one-token prompt.
    pub loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grads: Option<Gradients>,
    /// `[T][vocab]`, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logits: Option<Vec<Vec<f32>>>,
    pub warnings: Vec<String>,
}

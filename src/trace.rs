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

/// A `[rows][cols]` table of f32 in one allocation. A trace holds three per-token tables per op
/// (tens of thousands of rows at T = 512); one `Vec` per row made building and dropping a trace
/// cost about a millisecond. Serialises as nested arrays: the same JSON as `Vec<Vec<f32>>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Rows {
    /// `rows` rows of `cols` values from row-major `data`, or `None` if the sizes disagree.
    pub fn from_flat(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Self { rows, cols, data })
    }

    /// From separate rows, or `None` if they are not all the same length.
    pub fn from_rows(rows: Vec<Vec<f32>>) -> Option<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != cols) {
            return None;
        }
        let n = rows.len();
        Some(Self {
            rows: n,
            cols,
            data: rows.concat(),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        (i < self.rows).then(|| &self.data[i * self.cols..(i + 1) * self.cols])
    }

    pub fn last(&self) -> Option<&[f32]> {
        self.rows.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Every value, row after row.
    pub fn flat(&self) -> &[f32] {
        &self.data
    }

    pub fn iter(&self) -> RowIter<'_> {
        RowIter {
            table: self,
            next: 0,
        }
    }

    /// Column `j` (one value per row).
    pub fn column(&self, j: usize) -> Vec<f32> {
        self.iter().filter_map(|r| r.get(j).copied()).collect()
    }
}

impl std::ops::Index<usize> for Rows {
    type Output = [f32];
    fn index(&self, i: usize) -> &[f32] {
        self.get(i)
            .unwrap_or_else(|| panic!("row {i} of {}", self.rows))
    }
}

/// The rows of a [`Rows`], in order.
pub struct RowIter<'a> {
    table: &'a Rows,
    next: usize,
}

impl<'a> Iterator for RowIter<'a> {
    type Item = &'a [f32];
    fn next(&mut self) -> Option<&'a [f32]> {
        let row = self.table.get(self.next)?;
        self.next += 1;
        Some(row)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.table.rows - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RowIter<'_> {}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a [f32];
    type IntoIter = RowIter<'a>;
    fn into_iter(self) -> RowIter<'a> {
        self.iter()
    }
}

impl Serialize for Rows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rows = Vec::<Vec<f32>>::deserialize(deserializer)?;
        Rows::from_rows(rows)
            .ok_or_else(|| serde::de::Error::custom("rows of different lengths in a table"))
    }
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
    pub alpha: Rows,
    /// `[T][n_sources]` residual-decomposition shares of the input.
    pub shares: Rows,
    /// `[T][n_sources]` RMS of each source.
    pub source_rms: Rows,
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
    /// `[T]` each token's surprise, `-ln p(token t | tokens < t)` (nats); `None` for the first
    /// token, which nothing predicts. `loss` is the mean of the others.
    #[serde(default)]
    pub token_nll: Vec<Option<f32>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grads: Option<Gradients>,
    /// `[T][vocab]`, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logits: Option<Vec<Vec<f32>>>,
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod rows_tests {
    use super::Rows;

    #[test]
    fn a_table_serialises_as_the_nested_arrays_it_replaces() {
        let nested = vec![vec![1.0f32, 2.0, 3.0], vec![4.0, 5.0, 6.0]];
        let table = Rows::from_rows(nested.clone()).expect("equal rows");
        assert_eq!(
            serde_json::to_string(&table).unwrap(),
            serde_json::to_string(&nested).unwrap()
        );
        let back: Rows = serde_json::from_str("[[1,2,3],[4,5,6]]").unwrap();
        assert_eq!(back, table);
        assert_eq!((back.len(), back.cols()), (2, 3));
        assert_eq!(&back[1], &[4.0, 5.0, 6.0]);
        assert_eq!(back.column(2), vec![3.0, 6.0]);
        assert_eq!(back.iter().len(), 2);
        assert_eq!(back.last(), Some(&[4.0f32, 5.0, 6.0][..]));
    }

    #[test]
    fn ragged_rows_are_refused_not_padded() {
        assert!(Rows::from_rows(vec![vec![1.0], vec![2.0, 3.0]]).is_none());
        assert!(serde_json::from_str::<Rows>("[[1],[2,3]]").is_err());
        assert!(Rows::from_flat(2, 3, vec![0.0; 5]).is_none());
    }
}

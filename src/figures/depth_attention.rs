//! Depth attention: for one token (or the mean over tokens), how every op draws on its sources.
//! Rows are the ops in execution order, columns every source any op sees.

use serde::{Deserialize, Serialize};

use super::{mean, model_name, source_union, token_label, Heatmap, Quantity};
use crate::trace::Trace;

/// What the depth-attention view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthAttentionSpec {
    /// The token, or `None` for the mean over all tokens.
    pub token: Option<usize>,
    pub quantity: Quantity,
}

/// The `[ops][sources]` heatmap of `spec`'s quantity. Depth weights keep the fixed range 0..1
/// (two models compare by eye); shares, which can be negative or exceed 1, fit their values.
pub fn depth_attention(trace: &Trace, spec: DepthAttentionSpec) -> Heatmap {
    let cols = source_union(trace);
    let t_len = trace.tokens.len();
    let token = spec.token.filter(|&t| t < t_len);
    let mut values = vec![f32::NAN; trace.ops.len() * cols.len()];
    for (r, op) in trace.ops.iter().enumerate() {
        let table = match spec.quantity {
            Quantity::Alpha => &op.alpha,
            Quantity::Share => &op.shares,
        };
        for (i, label) in op.sources.iter().enumerate() {
            let Some(c) = cols.iter().position(|u| u == label) else {
                continue;
            };
            values[r * cols.len() + c] = match token {
                Some(t) => table
                    .get(t)
                    .and_then(|row| row.get(i))
                    .copied()
                    .unwrap_or(f32::NAN),
                None => mean(table.iter().filter_map(|row| row.get(i).copied())),
            };
        }
    }
    let scale = spec.quantity.scale(&values);
    let what = match spec.quantity {
        Quantity::Alpha => "Depth weights alpha",
        Quantity::Share => "Residual shares",
    };
    let of = match token {
        Some(t) => format!("token {}", token_label(trace, t)),
        None => format!("mean over {t_len} tokens"),
    };
    Heatmap {
        title: format!("{what} in {}, {of}", model_name(trace)),
        row_axis: "op (input of)".into(),
        col_axis: "source".into(),
        row_labels: trace.ops.iter().map(|o| o.name.clone()).collect(),
        col_labels: cols,
        values,
        value_name: spec.quantity.symbol().into(),
        scale,
    }
}

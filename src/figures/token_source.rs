//! Token x source: for one op, how every token draws on that op's sources.

use super::{model_name, token_label, ColorScale, Heatmap, Quantity};
use crate::trace::Trace;

/// The `[tokens][sources]` heatmap of op `op` (clamped to the last op, `final`).
pub fn token_source(trace: &Trace, op: usize, quantity: Quantity) -> Heatmap {
    let Some(op) = trace.ops.get(op).or(trace.ops.last()) else {
        return Heatmap {
            title: "no ops in this trace".into(),
            row_axis: "token".into(),
            col_axis: "source".into(),
            row_labels: Vec::new(),
            col_labels: Vec::new(),
            values: Vec::new(),
            value_name: quantity.symbol().into(),
            scale: ColorScale::fixed(0.0, 1.0),
        };
    };
    let table = match quantity {
        Quantity::Alpha => &op.alpha,
        Quantity::Share => &op.shares,
    };
    let values = table.flat().to_vec();
    let scale = quantity.scale(&values);
    Heatmap {
        title: format!(
            "{} at the input of {} in {}, per token",
            quantity.symbol(),
            op.name,
            model_name(trace)
        ),
        row_axis: "token".into(),
        col_axis: format!("source of {}", op.name),
        row_labels: (0..trace.tokens.len())
            .map(|t| token_label(trace, t))
            .collect(),
        col_labels: op.sources.clone(),
        values,
        value_name: quantity.symbol().into(),
        scale,
    }
}

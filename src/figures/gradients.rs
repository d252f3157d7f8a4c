//! Gradients over depth (a trace with a backward): parameter-gradient histograms per layer and
//! `d loss / d v` per op and token.

use super::{model_name, token_label, ColorScale, Heatmap};
use crate::trace::Trace;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GradientsFigure {
    /// `[groups][bins]` counts of `log10 |grad|` (log colour).
    pub histogram: Heatmap,
    /// Each group's gradient RMS, in the histogram's row order.
    pub group_rms: Vec<(String, f32)>,
    /// `[tokens][ops]` RMS of `d loss / d v` (log colour).
    pub dv: Heatmap,
}

/// The gradients figure, or `None` when the trace was made without a backward.
pub fn gradients(trace: &Trace) -> Option<GradientsFigure> {
    let g = trace.grads.as_ref()?;
    let name = model_name(trace);
    let bins = g.bin_edges.len().saturating_sub(1);
    let col_labels: Vec<String> = (0..bins)
        .map(|i| format!("[{:.2}, {:.2})", g.bin_edges[i], g.bin_edges[i + 1]))
        .collect();
    let mut values = Vec::with_capacity(g.histograms.len() * bins);
    for h in &g.histograms {
        values.extend((0..bins).map(|i| h.counts.get(i).map_or(f32::NAN, |&c| c as f32)));
    }
    let histogram = Heatmap {
        title: format!("Parameter gradients of {name}: log10 |grad| per layer"),
        row_axis: "parameter group".into(),
        col_axis: "log10 |grad| bin".into(),
        row_labels: g.histograms.iter().map(|h| h.group.clone()).collect(),
        col_labels,
        scale: ColorScale::fit(&values, true),
        values,
        value_name: "count".into(),
    };
    let ops: Vec<String> = trace.ops.iter().map(|o| o.name.clone()).collect();
    let t_len = trace.tokens.len();
    let mut dv = vec![f32::NAN; t_len * ops.len()];
    for (c, op) in trace.ops.iter().enumerate() {
        if let Some(rms) = &op.grad_rms {
            for (t, v) in rms.iter().enumerate().take(t_len) {
                dv[t * ops.len() + c] = *v;
            }
        }
    }
    Some(GradientsFigure {
        histogram,
        group_rms: g
            .histograms
            .iter()
            .map(|h| (h.group.clone(), h.grad_rms))
            .collect(),
        dv: Heatmap {
            title: format!("RMS of d loss / d v per token and op in {name}"),
            row_axis: "token".into(),
            col_axis: "op (output of)".into(),
            row_labels: (0..t_len).map(|t| token_label(trace, t)).collect(),
            col_labels: ops,
            scale: ColorScale::fit(&dv, true),
            values: dv,
            value_name: "d loss/d v RMS".into(),
        },
    })
}

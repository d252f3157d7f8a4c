//! Norms along depth: how large each op's input h and output v are, per token and over tokens.

use super::lines::PALETTE;
use super::{model_name, token_label, ColorScale, Heatmap, LineChart, LineSeries};
use crate::analysis::median;
use crate::trace::Trace;

/// The norms view: RMS lines along depth and the token x op heatmap of hidden RMS.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NormsFigure {
    pub chart: LineChart,
    pub heatmap: Heatmap,
}

fn finite_min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold((f32::NAN, f32::NAN), |(a, b), x| (a.min(x), b.max(x)))
}

/// Median over tokens with its min-max band, per op, of `per_op(op)`.
fn spread<'a>(trace: &'a Trace, per_op: impl Fn(usize) -> Option<&'a [f32]>) -> LineSeriesData {
    let mut mid = Vec::new();
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for i in 0..trace.ops.len() {
        match per_op(i) {
            Some(v) if !v.is_empty() => {
                mid.push(median(v));
                let (a, b) = finite_min_max(v);
                lo.push(a);
                hi.push(b);
            }
            _ => {
                mid.push(f32::NAN);
                lo.push(f32::NAN);
                hi.push(f32::NAN);
            }
        }
    }
    (mid, lo, hi)
}

type LineSeriesData = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The norms figure, with `token`'s own lines when one is selected.
pub fn norms(trace: &Trace, token: Option<usize>) -> NormsFigure {
    let token = token.filter(|&t| t < trace.tokens.len());
    let mut series = Vec::new();
    let (m, lo, hi) = spread(trace, |i| Some(&trace.ops[i].hidden_rms));
    series.push(LineSeries {
        label: "hidden h: median, min-max band".into(),
        values: m,
        band: Some((lo, hi)),
        color: PALETTE[0],
        dashed: false,
    });
    let (m, lo, hi) = spread(trace, |i| Some(&trace.ops[i].output_rms));
    series.push(LineSeries {
        label: "output v: median, min-max band".into(),
        values: m,
        band: Some((lo, hi)),
        color: PALETTE[1],
        dashed: false,
    });
    if trace.ops.iter().any(|o| o.partial_rms.is_some()) {
        let (m, lo, hi) = spread(trace, |i| trace.ops[i].partial_rms.as_deref());
        series.push(LineSeries {
            label: "Block partial sum: median, band".into(),
            values: m,
            band: Some((lo, hi)),
            color: PALETTE[2],
            dashed: false,
        });
    }
    if let Some(t) = token {
        let at = |f: fn(&crate::trace::DepthOp) -> &Vec<f32>| -> Vec<f32> {
            trace
                .ops
                .iter()
                .map(|o| f(o).get(t).copied().unwrap_or(f32::NAN))
                .collect()
        };
        let who = token_label(trace, t);
        series.push(LineSeries {
            label: format!("hidden h, token {who}"),
            values: at(|o| &o.hidden_rms),
            band: None,
            color: PALETTE[0],
            dashed: true,
        });
        series.push(LineSeries {
            label: format!("output v, token {who}"),
            values: at(|o| &o.output_rms),
            band: None,
            color: PALETTE[1],
            dashed: true,
        });
    }
    let name = model_name(trace);
    let ops: Vec<String> = trace.ops.iter().map(|o| o.name.clone()).collect();
    let t_len = trace.tokens.len();
    let mut values = vec![f32::NAN; t_len * ops.len()];
    for (c, op) in trace.ops.iter().enumerate() {
        for (t, v) in op.hidden_rms.iter().enumerate().take(t_len) {
            values[t * ops.len() + c] = *v;
        }
    }
    NormsFigure {
        chart: LineChart {
            title: format!("RMS along depth in {name}"),
            x_axis: "op".into(),
            x_labels: ops.clone(),
            y_axis: "RMS (log)".into(),
            log_y: true,
            series,
        },
        heatmap: Heatmap {
            title: format!("Hidden-state RMS per token and op in {name}"),
            row_axis: "token".into(),
            col_axis: "op".into(),
            row_labels: (0..t_len).map(|t| token_label(trace, t)).collect(),
            col_labels: ops,
            scale: ColorScale::fit(&values, true),
            values,
            value_name: "hidden RMS".into(),
        },
    }
}

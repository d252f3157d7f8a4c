//! Per-group histograms of `log10 |d loss / d parameter|` over bins shared by every group, so that
//! rows compare directly (the report's gradient-uniformity figure).

use candle_core::backprop::GradStore;
use candle_core::Var;

use crate::model::weights::ParamGroup;
use crate::model::ModelConfig;
use crate::trace::{GradHistogram, Gradients};

/// `log10 |g|` bins: from 1e-12 to 1e2 in quarter decades.
pub const LOG10_MIN: f32 = -12.0;
pub const LOG10_MAX: f32 = 2.0;
pub const BINS_PER_DECADE: usize = 4;

pub fn bin_edges() -> Vec<f32> {
    let n = ((LOG10_MAX - LOG10_MIN) as usize) * BINS_PER_DECADE;
    (0..=n)
        .map(|i| LOG10_MIN + i as f32 / BINS_PER_DECADE as f32)
        .collect()
}

fn group_label(g: ParamGroup) -> String {
    match g {
        ParamGroup::Embedding => "embedding".into(),
        ParamGroup::Layer(i) => format!("L{i}"),
        ParamGroup::Head => "head".into(),
    }
}

/// One histogram per parameter group, in depth order: embedding, L0.., head.
pub fn histograms(
    cfg: &ModelConfig,
    vars: &[(ParamGroup, Var)],
    store: &GradStore,
) -> candle_core::Result<Gradients> {
    let edges = bin_edges();
    let n_bins = edges.len() - 1;
    let mut groups: Vec<ParamGroup> = vec![ParamGroup::Embedding];
    groups.extend((0..cfg.num_layers).map(ParamGroup::Layer));
    groups.push(ParamGroup::Head);
    let mut histograms = Vec::with_capacity(groups.len());
    for group in groups {
        let mut h = GradHistogram {
            group: group_label(group),
            counts: vec![0; n_bins],
            zeros: 0,
            underflow: 0,
            overflow: 0,
            non_finite: 0,
            grad_rms: 0.0,
            parameters: 0,
        };
        let mut sum_sq = 0f64;
        for (_, var) in vars.iter().filter(|(g, _)| *g == group) {
            let n = var.as_tensor().elem_count() as u64;
            h.parameters += n;
            let Some(grad) = store.get(var.as_tensor()) else {
                // A parameter the loss does not reach (e.g. positions beyond the prompt's rows
                // still get a zero gradient row; a wholly unreached tensor is all zeros).
                h.zeros += n;
                continue;
            };
            for g in grad
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?
            {
                if !g.is_finite() {
                    h.non_finite += 1;
                    continue;
                }
                sum_sq += f64::from(g) * f64::from(g);
                if g == 0.0 {
                    h.zeros += 1;
                    continue;
                }
                let lg = g.abs().log10();
                if lg < LOG10_MIN {
                    h.underflow += 1;
                } else if lg >= LOG10_MAX {
                    h.overflow += 1;
                } else {
                    let bin = ((lg - LOG10_MIN) * BINS_PER_DECADE as f32) as usize;
                    h.counts[bin.min(n_bins - 1)] += 1;
                }
            }
        }
        let finite = h.parameters - h.non_finite;
        h.grad_rms = if finite > 0 {
            (sum_sq / finite as f64).sqrt() as f32
        } else {
            0.0
        };
        histograms.push(h);
    }
    Ok(Gradients {
        bin_edges: edges,
        histograms,
    })
}

//! Every figure of the views at once, for one model or two compared: what the app draws and
//! what export writes, from the same selection and toggles.

use serde::{Deserialize, Serialize};

use super::{depth_attention, gradients, norms, token_source};
use super::{ColorScale, DepthAttentionSpec, GradientsFigure, Heatmap, NormsFigure, Quantity};
use crate::trace::Trace;

/// The views' toggles (the app persists them; export takes them from its flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Toggles {
    /// What depth heatmaps colour by; `None`: each model's natural quantity (AttnRes: alpha,
    /// baselines: shares).
    pub quantity: Option<Quantity>,
    /// The depth-attention view shows the mean over tokens instead of the selected token.
    pub depth_mean: bool,
    /// Log colour for the hidden-RMS heatmap.
    pub norms_log: bool,
    /// Log colour for the gradient heatmaps.
    pub grads_log: bool,
}

impl Default for Toggles {
    fn default() -> Self {
        Self {
            quantity: None,
            depth_mean: false,
            norms_log: true,
            grads_log: true,
        }
    }
}

/// The selected token (in model A's tokens) and op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selection {
    pub token: usize,
    pub op: usize,
}

/// One model's traces as the views read them.
#[derive(Clone, Copy)]
pub struct ModelInput<'a> {
    pub name: &'a str,
    pub trace: &'a Trace,
    /// A trace with a backward (gradients), when one has run.
    pub grads: Option<&'a Trace>,
    /// The checkpoint's training log, when it carries one.
    pub training: Option<&'a super::TrainingLog>,
}

/// The figures of one model.
#[derive(Debug, Clone)]
pub struct ModelFigures {
    pub name: String,
    /// The selected token in this model's tokens (B's is aligned to A's by byte span).
    pub token: usize,
    pub quantity: Quantity,
    pub depth: Heatmap,
    pub token_source: Heatmap,
    pub norms: NormsFigure,
    pub gradients: Option<GradientsFigure>,
    /// The backward ran on another prompt than the trace on screen.
    pub gradients_stale: bool,
    pub training: Option<super::TrainingFigure>,
}

/// Every figure the views draw, for A and (when comparing) B.
#[derive(Debug, Clone, Default)]
pub struct ViewFigures {
    pub models: [Option<ModelFigures>; 2],
    /// B - A of the depth-attention heatmaps, or why there is none (`None`: nothing to compare).
    pub difference: Option<Result<Heatmap, String>>,
}

/// The token of `b` that covers the first byte of token `t` of `a`: the same position where
/// both tokenise alike, else aligned by byte span.
pub fn align_token(a: &Trace, b: &Trace, t: usize) -> usize {
    let same = a.tokens.len() == b.tokens.len()
        && a.tokens
            .iter()
            .zip(&b.tokens)
            .all(|(x, y)| x.start == y.start && x.end == y.end);
    if same {
        return t.min(b.tokens.len().saturating_sub(1));
    }
    let Some(start) = a.tokens.get(t).map(|x| x.start) else {
        return 0;
    };
    b.tokens
        .iter()
        .position(|y| y.start <= start && start < y.end)
        .or_else(|| b.tokens.iter().rposition(|y| y.start <= start))
        .unwrap_or(0)
}

/// Whether two traces tokenised their prompts alike (same ids).
pub fn same_tokens(a: &Trace, b: &Trace) -> bool {
    a.tokens.len() == b.tokens.len() && a.tokens.iter().zip(&b.tokens).all(|(x, y)| x.id == y.id)
}

/// The same heatmap on a log or linear colour scale.
fn relog(mut fig: Heatmap, log: bool) -> Heatmap {
    if fig.scale.log != log {
        fig.scale = ColorScale::fit(&fig.values, log);
    }
    fig
}

/// The figures of one model with `token` selected (already in its own tokens).
pub fn model_figures(
    input: ModelInput,
    token: usize,
    op: usize,
    toggles: &Toggles,
) -> ModelFigures {
    let trace = input.trace;
    let token = token.min(trace.tokens.len().saturating_sub(1));
    let op = op.min(trace.ops.len().saturating_sub(1));
    let quantity = toggles
        .quantity
        .unwrap_or_else(|| Quantity::natural_for(trace));
    let mut norms_fig = norms(trace, Some(token));
    norms_fig.heatmap = relog(norms_fig.heatmap, toggles.norms_log);
    let gradients = input.grads.and_then(gradients).map(|mut g| {
        g.histogram = relog(g.histogram, toggles.grads_log);
        g.dv = relog(g.dv, toggles.grads_log);
        g
    });
    ModelFigures {
        name: input.name.to_string(),
        token,
        quantity,
        depth: depth_attention(
            trace,
            DepthAttentionSpec {
                token: (!toggles.depth_mean).then_some(token),
                quantity,
            },
        ),
        token_source: token_source(trace, op, quantity),
        norms: norms_fig,
        gradients,
        gradients_stale: input.grads.is_some_and(|g| !same_tokens(g, trace)),
        training: input.training.map(|log| super::training(log, input.name)),
    }
}

/// The figures of A (and B, aligned to A's selected token) and their difference.
pub fn view_figures(
    inputs: [Option<ModelInput>; 2],
    selection: Selection,
    toggles: &Toggles,
) -> ViewFigures {
    let a = inputs[0].map(|i| i.trace);
    let models = [0, 1].map(|i| {
        let input = inputs[i]?;
        let token = match (i, a) {
            (1, Some(a)) => align_token(a, input.trace, selection.token),
            _ => selection.token,
        };
        Some(model_figures(input, token, selection.op, toggles))
    });
    let difference = match (&inputs, &models) {
        ([Some(ia), Some(ib)], [Some(fa), Some(fb)]) => Some({
            // One quantity for both, or the difference would mix weights with shares.
            let spec = |token| DepthAttentionSpec {
                token: (!toggles.depth_mean).then_some(token),
                quantity: fa.quantity,
            };
            let ha = depth_attention(ia.trace, spec(fa.token));
            let hb = depth_attention(ib.trace, spec(fb.token));
            let title = format!(
                "{} of B ({}) - A ({})",
                fa.quantity.symbol(),
                ib.name,
                ia.name
            );
            Heatmap::difference(&ha, &hb, title).ok_or_else(|| {
                "A and B have different ops or sources (another depth, or Block against Full): \
                 no cell-by-cell difference"
                    .to_string()
            })
        }),
        _ => None,
    };
    ViewFigures { models, difference }
}

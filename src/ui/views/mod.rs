//! The views: each turns the figure descriptions of [`crate::figures`] into egui drawing, side
//! by side for A and B when comparing. Views never compute statistics; [`ViewFigures`] builds
//! every description once per change of trace, selection or settings, not per frame.

pub mod depth_attention;
pub mod difference;
pub mod gradients;
pub mod norms;
pub mod token_source;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::figures::{self, DepthAttentionSpec, GradientsFigure, Heatmap, NormsFigure, Quantity};
use crate::trace::Trace;
use crate::ui::app::{Command, Selection};
use crate::ui::worker::Slot;

/// The view panes of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pane {
    DepthAttention,
    TokenSource,
    Norms,
    Gradients,
    Difference,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::DepthAttention,
        Pane::TokenSource,
        Pane::Norms,
        Pane::Gradients,
        Pane::Difference,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::DepthAttention => "Depth attention",
            Pane::TokenSource => "Token x source",
            Pane::Norms => "Norms",
            Pane::Gradients => "Gradients",
            Pane::Difference => "Difference B - A",
        }
    }
}

/// Toggles of the views (persisted between runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewSettings {
    /// What depth heatmaps colour by; `None`: each model's natural quantity (AttnRes: alpha,
    /// baselines: shares).
    pub quantity: Option<Quantity>,
    /// The depth-attention view shows the mean over tokens instead of the selected token.
    pub depth_mean: bool,
    /// Log colour for the hidden-RMS heatmap.
    pub norms_log: bool,
    /// Log colour for the gradient heatmaps.
    pub grads_log: bool,
    /// What colours the token chips.
    pub strip_metric: StripMetric,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            quantity: None,
            depth_mean: false,
            norms_log: true,
            grads_log: true,
            strip_metric: StripMetric::Surprise,
        }
    }
}

/// The per-token value the token strip colours by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StripMetric {
    /// `-ln p(token | before)`.
    Surprise,
    /// RMS of the selected op's input h.
    HiddenRms,
    /// RMS of the selected op's output v.
    OutputRms,
    None,
}

impl StripMetric {
    pub const ALL: [StripMetric; 4] = [
        StripMetric::Surprise,
        StripMetric::HiddenRms,
        StripMetric::OutputRms,
        StripMetric::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StripMetric::Surprise => "surprise -ln p (nats)",
            StripMetric::HiddenRms => "hidden RMS at the selected op",
            StripMetric::OutputRms => "output RMS at the selected op",
            StripMetric::None => "no colour",
        }
    }

    /// The value of every token of `trace` (`op` for the per-op metrics).
    pub fn values(self, trace: &Trace, op: usize) -> Vec<Option<f32>> {
        let t = trace.tokens.len();
        let per_op = |f: fn(&crate::trace::DepthOp) -> &Vec<f32>| -> Vec<Option<f32>> {
            match trace.ops.get(op) {
                Some(o) => (0..t).map(|i| f(o).get(i).copied()).collect(),
                None => vec![None; t],
            }
        };
        match self {
            StripMetric::Surprise => (0..t)
                .map(|i| trace.token_nll.get(i).copied().flatten())
                .collect(),
            StripMetric::HiddenRms => per_op(|o| &o.hidden_rms),
            StripMetric::OutputRms => per_op(|o| &o.output_rms),
            StripMetric::None => vec![None; t],
        }
    }

    pub fn log_scale(self) -> bool {
        matches!(self, StripMetric::HiddenRms | StripMetric::OutputRms)
    }
}

/// The figures of one model.
#[derive(Debug, Clone)]
pub struct SlotFigures {
    pub name: String,
    /// The selected token in this model's tokens (B's is aligned to A's by byte span).
    pub token: usize,
    pub quantity: Quantity,
    pub depth: Heatmap,
    pub token_source: Heatmap,
    pub norms: NormsFigure,
    /// From the backward, when one has run.
    pub gradients: Option<GradientsFigure>,
    /// The backward ran on another prompt than the one on screen.
    pub gradients_stale: bool,
}

/// Every figure the views draw.
#[derive(Debug, Clone, Default)]
pub struct ViewFigures {
    pub slots: [Option<SlotFigures>; 2],
    /// B - A of the depth-attention heatmaps, or why there is none.
    pub difference: Option<Result<Heatmap, String>>,
}

/// What the figures were built from; a change rebuilds them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FigureKey {
    traces: [Option<usize>; 2],
    grads: [Option<usize>; 2],
    selection: Selection,
    settings: Option<ViewSettings>,
}

/// The inputs of one model's figures.
pub struct SlotInput<'a> {
    pub name: &'a str,
    pub trace: &'a Arc<Trace>,
    pub grads: Option<&'a Arc<Trace>>,
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

/// Whether two traces tokenised the prompt alike (same ids).
pub fn same_tokens(a: &Trace, b: &Trace) -> bool {
    a.tokens.len() == b.tokens.len() && a.tokens.iter().zip(&b.tokens).all(|(x, y)| x.id == y.id)
}

impl ViewFigures {
    pub fn key(
        inputs: &[Option<SlotInput>; 2],
        selection: Selection,
        settings: &ViewSettings,
    ) -> FigureKey {
        let ptr = |t: &Arc<Trace>| Arc::as_ptr(t) as usize;
        FigureKey {
            traces: [0, 1].map(|i| inputs[i].as_ref().map(|s| ptr(s.trace))),
            grads: [0, 1].map(|i| inputs[i].as_ref().and_then(|s| s.grads).map(ptr)),
            selection,
            settings: Some(settings.clone()),
        }
    }

    pub fn build(
        inputs: &[Option<SlotInput>; 2],
        selection: Selection,
        settings: &ViewSettings,
    ) -> Self {
        let a = inputs[0].as_ref().map(|s| s.trace.as_ref());
        let slot = |i: usize| -> Option<SlotFigures> {
            let input = inputs[i].as_ref()?;
            let trace = input.trace.as_ref();
            let token = match (i, a) {
                (1, Some(a)) => align_token(a, trace, selection.token),
                _ => selection.token.min(trace.tokens.len().saturating_sub(1)),
            };
            let op = selection.op.min(trace.ops.len().saturating_sub(1));
            let quantity = settings
                .quantity
                .unwrap_or_else(|| Quantity::natural_for(trace));
            let gradients = input.grads.and_then(|g| figures::gradients(g));
            let gradients_stale = input.grads.is_some_and(|g| !same_tokens(g, trace));
            Some(SlotFigures {
                name: input.name.to_string(),
                token,
                quantity,
                depth: figures::depth_attention(
                    trace,
                    DepthAttentionSpec {
                        token: (!settings.depth_mean).then_some(token),
                        quantity,
                    },
                ),
                token_source: figures::token_source(trace, op, quantity),
                norms: figures::norms(trace, Some(token)),
                gradients,
                gradients_stale,
            })
        };
        let slots = [slot(0), slot(1)];
        let difference = match (&inputs[0], &inputs[1], &slots[0], &slots[1]) {
            (Some(ia), Some(ib), Some(fa), Some(_)) => {
                Some({
                    // One quantity for both, or the difference would mix weights with shares.
                    let spec = |token| DepthAttentionSpec {
                        token: (!settings.depth_mean).then_some(token),
                        quantity: fa.quantity,
                    };
                    let ha = figures::depth_attention(ia.trace, spec(fa.token));
                    let tb = slots[1].as_ref().map_or(0, |f| f.token);
                    let hb = figures::depth_attention(ib.trace, spec(tb));
                    Heatmap::difference(&ha, &hb, format!("{} of B ({}) - A ({})", fa.quantity.symbol(), ib.name, ia.name))
                    .ok_or_else(|| {
                        "A and B have different ops or sources (another depth, or Block against Full): \
                         no cell-by-cell difference"
                            .to_string()
                    })
                })
            }
            _ => None,
        };
        Self { slots, difference }
    }
}

/// What every view gets to draw with.
pub struct ViewCx<'a> {
    pub figures: &'a ViewFigures,
    pub settings: &'a mut ViewSettings,
    pub selection: &'a mut Selection,
    pub commands: &'a mut Vec<Command>,
    /// The token of A that a token of B covers (a click in B's views selects in A's terms).
    pub b_to_a: &'a dyn Fn(usize) -> usize,
    /// Gradient job state, for the gradients view's buttons.
    pub gradients_running: Option<String>,
    pub gradients_error: Option<String>,
}

/// Draw `pane`.
pub fn pane_ui(pane: Pane, ui: &mut egui::Ui, cx: &mut ViewCx) {
    match pane {
        Pane::DepthAttention => depth_attention::ui(ui, cx),
        Pane::TokenSource => token_source::ui(ui, cx),
        Pane::Norms => norms::ui(ui, cx),
        Pane::Gradients => gradients::ui(ui, cx),
        Pane::Difference => difference::ui(ui, cx),
    }
}

/// The slots that have figures, laid out side by side (A left, B right).
pub fn side_by_side(
    ui: &mut egui::Ui,
    figures: &ViewFigures,
    mut draw: impl FnMut(&mut egui::Ui, Slot, &SlotFigures),
) {
    let shown: Vec<(Slot, &SlotFigures)> = [Slot::A, Slot::B]
        .into_iter()
        .filter_map(|s| figures.slots[s.index()].as_ref().map(|f| (s, f)))
        .collect();
    match shown.as_slice() {
        [] => {
            ui.label("No trace yet: open a model and type a prompt.");
        }
        [(slot, f)] => draw(ui, *slot, f),
        _ => {
            ui.columns(shown.len(), |cols| {
                for (col, (slot, f)) in cols.iter_mut().zip(&shown) {
                    // Columns justify their layout, which would stretch wrapped titles letter by
                    // letter; views lay out left-aligned as they do alone.
                    col.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                        ui.push_id(slot.index(), |ui| {
                            ui.label(
                                egui::RichText::new(format!("{}: {}", slot.name(), f.name)).weak(),
                            );
                            draw(ui, *slot, f);
                        });
                    });
                }
            });
        }
    }
}

/// A `?` button whose hover text names the definitions a view draws.
pub fn help_button(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Button::new("?").small())
        .on_hover_text(text)
        .on_hover_cursor(egui::CursorIcon::Help);
}

/// The depth quantity toggle shared by the depth views.
pub fn quantity_toggle(ui: &mut egui::Ui, settings: &mut ViewSettings) {
    ui.label("colour:");
    ui.selectable_value(&mut settings.quantity, None, "natural")
        .on_hover_text("AttnRes models by their depth weights alpha, baselines (all weights 1) by the residual shares");
    ui.selectable_value(&mut settings.quantity, Some(Quantity::Alpha), "alpha");
    ui.selectable_value(&mut settings.quantity, Some(Quantity::Share), "share");
}

pub const DEPTH_DEFINITIONS: &str = "\
alpha: the AttnRes softmax weight of each source in the op's input h (ATTNRES.md: a learned \
pseudo-query scores RMS-normalised keys of the embedding and earlier sublayer outputs, Full, or \
of the block sums, Block). Baselines add every source with weight 1: their alpha is 1 everywhere.\n\
share: our residual decomposition of h, <alpha_i v_i, h> / <h, h>; the shares of an op sum to 1 \
and can be negative (a source pointing against h) or exceed 1. The AttnRes report leaves such \
statistics open; this one is depthlens's definition.\n\
Rows: each sublayer's input (L0.attn, L0.mlp, ...), then `final`, the input of the final norm. \
Columns: emb, L3.attn, ... (Full and baselines) or emb, B1, ..., partial (Block: completed \
block sums and the current block's partial sum). Grey: not a source of that op.";

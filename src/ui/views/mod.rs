//! The views: each turns the figure descriptions of [`crate::figures`] into egui drawing, side
//! by side for A and B when comparing. Views never compute statistics; [`ViewFigures`] builds
//! every description once per change of trace, selection or settings, not per frame.

pub mod depth_attention;
pub mod difference;
pub mod gradients;
pub mod norms;
pub mod token_source;
pub mod training;

use serde::{Deserialize, Serialize};

use crate::export::views::{FigureKind, Format};
use crate::figures::{ModelFigures, ModelInput, Quantity, Selection, Toggles, ViewFigures};
use crate::trace::Trace;
use crate::ui::app::Command;
use crate::ui::worker::Slot;

/// The layout's panes are the views, one per figure kind: what a pane shows is what its Export
/// menu writes.
pub use crate::export::views::FigureKind as Pane;

/// What the views show beyond the selection (persisted between runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewSettings {
    pub toggles: Toggles,
    /// What colours the token chips.
    pub strip_metric: StripMetric,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            toggles: Toggles::default(),
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

/// What the figures were built from; a change rebuilds them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FigureKey {
    traces: [Option<usize>; 2],
    grads: [Option<usize>; 2],
    selection: Selection,
    toggles: Option<Toggles>,
}

impl FigureKey {
    pub fn of(inputs: &[Option<ModelInput>; 2], selection: Selection, toggles: &Toggles) -> Self {
        let ptr = |t: &Trace| t as *const Trace as usize;
        FigureKey {
            traces: [0, 1].map(|i| inputs[i].as_ref().map(|s| ptr(s.trace))),
            grads: [0, 1].map(|i| inputs[i].as_ref().and_then(|s| s.grads).map(ptr)),
            selection,
            toggles: Some(toggles.clone()),
        }
    }
}

/// What every view gets to draw with.
pub struct ViewCx<'a> {
    pub figures: &'a ViewFigures,
    pub toggles: &'a mut Toggles,
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
        Pane::Training => training::ui(ui, cx),
    }
}

/// The slots that have figures, laid out side by side (A left, B right).
pub fn side_by_side(
    ui: &mut egui::Ui,
    figures: &ViewFigures,
    mut draw: impl FnMut(&mut egui::Ui, Slot, &ModelFigures),
) {
    let shown: Vec<(Slot, &ModelFigures)> = [Slot::A, Slot::B]
        .into_iter()
        .filter_map(|s| figures.models[s.index()].as_ref().map(|f| (s, f)))
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

/// An "Export" menu: this view as SVG, PNG, CSV or JSON, exactly as it is on screen.
pub fn export_menu(ui: &mut egui::Ui, kind: FigureKind, commands: &mut Vec<Command>) {
    ui.menu_button("Export", |ui| {
        for format in Format::ALL {
            let label = format!(
                "{} as {}...",
                kind.name(),
                format.extension().to_uppercase()
            );
            if ui.button(label).clicked() {
                commands.push(Command::Export {
                    kind: Some(kind),
                    format,
                });
            }
        }
    })
    .response
    .on_hover_text("Save this view (selected token, op, toggles, A and B) as a file");
}

/// A `?` button whose hover text names the definitions a view draws.
pub fn help_button(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Button::new("?").small())
        .on_hover_text(text)
        .on_hover_cursor(egui::CursorIcon::Help);
}

/// The depth quantity toggle shared by the depth views.
pub fn quantity_toggle(ui: &mut egui::Ui, toggles: &mut Toggles) {
    ui.label("colour:");
    ui.selectable_value(&mut toggles.quantity, None, "natural")
        .on_hover_text("AttnRes models by their depth weights alpha, baselines (all weights 1) by the residual shares");
    ui.selectable_value(&mut toggles.quantity, Some(Quantity::Alpha), "alpha");
    ui.selectable_value(&mut toggles.quantity, Some(Quantity::Share), "share");
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

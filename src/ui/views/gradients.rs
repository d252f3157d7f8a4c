//! Gradients, on demand: the CPU reference's backward of the prompt's loss (off the UI thread,
//! with progress, cancellable). A heatmap of parameter groups x log10|grad| bins (colour =
//! count, log scale) with each group's gradient RMS, and d loss / d v RMS per token and op.

use super::{export_menu, help_button, side_by_side, ViewCx};
use crate::export::views::FigureKind;
use crate::figures::colormap::format_value;
use crate::ui::app::Command;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};

const HELP: &str = "\
The backward of the prompt's mean next-token cross-entropy, on the CPU reference (candle's \
autograd, f32).\n\
Histogram: every parameter gradient of a group (embedding, each layer L0.., head) binned by \
log10 |grad| over fixed bins; exact zeros, underflow and overflow are counted apart (Trace \
`grads`). Beside it: each group's gradient RMS.\n\
d loss / d v: the RMS over the hidden size of the gradient with respect to each op's output v \
(final: with respect to the final norm's input), per token. AttnRes reports more uniform \
gradients over depth than PreNorm.";

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    ui.horizontal(|ui| {
        match &cx.gradients_running {
            Some(progress) => {
                ui.spinner();
                ui.label(progress);
                if ui.button("Cancel").clicked() {
                    cx.commands.push(Command::CancelGradients);
                }
            }
            None => {
                if ui
                    .button("Compute gradients")
                    .on_hover_text("Run the backward of this prompt's loss on the CPU reference")
                    .clicked()
                {
                    cx.commands.push(Command::ComputeGradients);
                }
            }
        }
        ui.checkbox(&mut cx.toggles.grads_log, "log colour");
        export_menu(ui, FigureKind::Gradients, cx.commands);
        help_button(ui, HELP);
    });
    if let Some(e) = &cx.gradients_error {
        ui.colored_label(crate::ui::theme::ERROR, e);
    }
    let selection = *cx.selection;
    side_by_side(ui, cx.figures, |ui, slot, f| {
        let Some(g) = &f.gradients else {
            ui.label("No gradients yet: press Compute gradients (the prompt needs two tokens).");
            return;
        };
        if f.gradients_stale {
            ui.colored_label(
                crate::ui::theme::ERROR,
                "computed for an earlier prompt: press Compute gradients again",
            );
        }
        let half = (ui.available_height() * 0.5).max(140.0);
        ui.horizontal_top(|ui| {
            let w = ui.available_width() - 150.0;
            let size = egui::vec2(w.max(200.0), half);
            ui.allocate_ui_with_layout(size, egui::Layout::top_down(egui::Align::Min), |ui| {
                heatmap_ui(
                    ui,
                    ("grad_hist", slot.index()),
                    &g.histogram,
                    Marks::default(),
                );
            });
            ui.vertical(|ui| {
                ui.label(egui::RichText::new("gradient RMS").strong());
                egui::ScrollArea::vertical()
                    .id_salt(("grad_rms", slot.index()))
                    .max_height(half - 20.0)
                    .show(ui, |ui| {
                        egui::Grid::new(("grad_rms_grid", slot.index()))
                            .striped(true)
                            .show(ui, |ui| {
                                for (group, rms) in &g.group_rms {
                                    ui.label(group);
                                    ui.label(format_value(*rms))
                                        .on_hover_text(format!("{rms:e}"));
                                    ui.end_row();
                                }
                            });
                    });
            });
        });
        heatmap_ui(
            ui,
            ("grad_dv", slot.index()),
            &g.dv,
            Marks {
                row: Some(f.token),
                col: Some(selection.op),
            },
        );
    });
}

//! Training dynamics, where the checkpoint carries its training log (the demo models do):
//! train and validation loss over steps, each parameter group's gradient norm over steps as
//! lines and as a group x step heatmap.

use super::{export_menu, help_button, side_by_side, ViewCx};
use crate::export::views::FigureKind;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};
use crate::ui::widgets::lines::line_chart_ui;

const HELP: &str = "\
From the log `depthlens train` writes into a checkpoint (metadata `depthlens.training_log`) or \
beside it (`NAME.train.csv`): the mean next-token cross-entropy of each logged training step and \
of the validation text where it was evaluated, and the L2 norm of each parameter group's gradient \
(embedding, each layer L0.., head) before clipping. The AttnRes report's training-dynamics \
figure: PreNorm's gradient norms fall off with depth, AttnRes's stay more uniform.";

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    ui.horizontal(|ui| {
        export_menu(ui, FigureKind::Training, cx.commands);
        help_button(ui, HELP);
    });
    side_by_side(ui, cx.figures, |ui, slot, f| {
        let Some(t) = &f.training else {
            ui.label("This checkpoint carries no training log (`depthlens train` writes one).");
            return;
        };
        let h = (ui.available_height() / 3.0).max(120.0);
        line_chart_ui(ui, ("training_loss", slot.index()), &t.loss, h);
        line_chart_ui(ui, ("training_grads", slot.index()), &t.grad_lines, h);
        heatmap_ui(
            ui,
            ("training_heatmap", slot.index()),
            &t.grad_heatmap,
            Marks::default(),
        );
    });
}

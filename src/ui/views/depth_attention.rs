//! Depth attention: for the selected token (or the mean over tokens), rows = ops, columns =
//! sources, colour = alpha or share. Clicking a row picks the op that the token x source view
//! shows.

use super::{export_menu, help_button, quantity_toggle, side_by_side, ViewCx, DEPTH_DEFINITIONS};
use crate::export::views::FigureKind;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    ui.horizontal(|ui| {
        quantity_toggle(ui, cx.toggles);
        ui.separator();
        ui.checkbox(&mut cx.toggles.depth_mean, "mean over tokens")
            .on_hover_text(
                "Average each cell over all tokens instead of showing the selected token",
            );
        export_menu(ui, FigureKind::DepthAttention, cx.commands);
        help_button(ui, DEPTH_DEFINITIONS);
    });
    let selection = *cx.selection;
    let mut clicked_op = None;
    side_by_side(ui, cx.figures, |ui, slot, f| {
        let id = ("depth_attention", slot.index());
        let events = heatmap_ui(
            ui,
            id,
            &f.depth,
            Marks {
                row: Some(selection.op),
                col: None,
            },
        );
        if let Some((row, _)) = events.clicked {
            clicked_op = Some(row);
        }
    });
    if let Some(op) = clicked_op {
        cx.selection.op = op;
    }
}

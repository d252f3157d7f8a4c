//! Token x source for the selected op (click a row of the depth-attention view to choose it):
//! rows = tokens, columns = that op's sources. Clicking a row selects that token.

use super::{export_menu, help_button, quantity_toggle, side_by_side, ViewCx, DEPTH_DEFINITIONS};
use crate::export::views::FigureKind;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};
use crate::ui::worker::Slot;

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    let n_ops = cx
        .figures
        .models
        .iter()
        .flatten()
        .map(|f| f.depth.rows())
        .min()
        .unwrap_or(0);
    ui.horizontal(|ui| {
        quantity_toggle(ui, cx.toggles);
        ui.separator();
        let op_name = cx.figures.models[0]
            .as_ref()
            .and_then(|f| f.depth.row_labels.get(cx.selection.op).cloned())
            .unwrap_or_default();
        ui.label(format!("op: {op_name}"));
        if ui
            .small_button("\u{25b2}")
            .on_hover_text("previous op")
            .clicked()
        {
            cx.selection.op = cx.selection.op.saturating_sub(1);
        }
        if ui
            .small_button("\u{25bc}")
            .on_hover_text("next op")
            .clicked()
            && cx.selection.op + 1 < n_ops
        {
            cx.selection.op += 1;
        }
        export_menu(ui, FigureKind::TokenSource, cx.commands);
        help_button(ui, DEPTH_DEFINITIONS);
    });
    let mut clicked = None;
    side_by_side(ui, cx.figures, |ui, slot, f| {
        let id = ("token_source", slot.index());
        let events = heatmap_ui(
            ui,
            id,
            &f.token_source,
            Marks {
                row: Some(f.token),
                col: None,
            },
        );
        if let Some((row, _)) = events.clicked {
            clicked = Some((slot, row));
        }
    });
    match clicked {
        Some((Slot::A, t)) => cx.selection.token = t,
        Some((Slot::B, t)) => cx.selection.token = (cx.b_to_a)(t),
        None => {}
    }
}

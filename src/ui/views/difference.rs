//! The difference B - A of the depth-attention heatmaps, where A and B have the same ops and
//! sources (e.g. a Block AttnRes model against its baseline needs the same partition; Full
//! against a baseline of the same depth always lines up).

use super::{export_menu, help_button, ViewCx, DEPTH_DEFINITIONS};
use crate::export::views::FigureKind;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    ui.horizontal(|ui| {
        ui.label("B - A of the depth-attention view (same token, same quantity as A)");
        export_menu(ui, FigureKind::Difference, cx.commands);
        help_button(ui, DEPTH_DEFINITIONS);
    });
    match &cx.figures.difference {
        None => {
            ui.label("Open a second model to compare (File > Compare with...).");
        }
        Some(Err(why)) => {
            ui.label(why);
        }
        Some(Ok(fig)) => {
            let events = heatmap_ui(
                ui,
                "difference",
                fig,
                Marks {
                    row: Some(cx.selection.op),
                    col: None,
                },
            );
            if let Some((row, _)) = events.clicked {
                cx.selection.op = row;
            }
        }
    }
}

//! Norms: RMS of every op's input h and output v along depth on a log axis (median over tokens,
//! min-max band, the selected token's own dashed lines; Block's partial sum), and a token x op
//! heatmap of hidden RMS.

use super::{export_menu, help_button, side_by_side, ViewCx};
use crate::export::views::FigureKind;
use crate::ui::widgets::heatmap::{heatmap_ui, Marks};
use crate::ui::widgets::lines::line_chart_ui;
use crate::ui::worker::Slot;

const HELP: &str = "\
RMS of a vector x of size d: ||x|| / sqrt(d).\n\
hidden h: the op's input before its PreNorm (AttnRes: the depth mix; baselines: the residual \
stream). output v: the sublayer's output (final: the final norm's output).\n\
Block partial sum: the current block's running sum of sublayer outputs after each sublayer; it \
starts again at each block boundary.\n\
In a PreNorm baseline h grows with depth while v stays near constant: each new layer's \
contribution is diluted (depth dilution). AttnRes bounds h.";

pub fn ui(ui: &mut egui::Ui, cx: &mut ViewCx) {
    ui.horizontal(|ui| {
        ui.checkbox(&mut cx.toggles.norms_log, "log colour")
            .on_hover_text("Colour the heatmap on a log scale (hidden RMS spans decades)");
        export_menu(ui, FigureKind::Norms, cx.commands);
        help_button(ui, HELP);
    });
    let selection = *cx.selection;
    let mut clicked = None;
    side_by_side(ui, cx.figures, |ui, slot, f| {
        let chart_h = (ui.available_height() * 0.5).max(140.0);
        line_chart_ui(ui, ("norms_lines", slot.index()), &f.norms.chart, chart_h);
        let events = heatmap_ui(
            ui,
            ("norms_heatmap", slot.index()),
            &f.norms.heatmap,
            Marks {
                row: Some(f.token),
                col: Some(selection.op),
            },
        );
        if let Some(cell) = events.clicked {
            clicked = Some((slot, cell));
        }
    });
    if let Some((slot, (t, op))) = clicked {
        cx.selection.op = op;
        cx.selection.token = match slot {
            Slot::A => t,
            Slot::B => (cx.b_to_a)(t),
        };
    }
}

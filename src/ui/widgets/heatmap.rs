//! A [`Heatmap`] figure drawn with egui_plot (zoom, pan, thinned category labels), a hover
//! tooltip naming the cell's row, column and exact value, and a colour legend with ticks.
//! The cells are one texture (a pixel per cell, nearest-neighbour), made again only when the
//! figure changes: egui_plot's own `Heatmap` lays out a text label for every cell each frame,
//! which at 128 tokens x 61 ops took most of a frame.

use egui::{Color32, Rect, Sense, Stroke, Ui, Vec2};
use egui_plot::{Line, Plot, PlotImage, PlotPoint, PlotPoints};

use super::{category_label, category_marks, short};
use crate::figures::colormap::format_value;
use crate::figures::Heatmap;
use crate::ui::theme;

/// What the user did to the heatmap this frame, in cell coordinates `(row, col)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellEvents {
    pub hovered: Option<(usize, usize)>,
    pub clicked: Option<(usize, usize)>,
    pub secondary_clicked: Option<(usize, usize)>,
}

/// Rows and columns to outline (the selection).
#[derive(Debug, Clone, Copy, Default)]
pub struct Marks {
    pub row: Option<usize>,
    pub col: Option<usize>,
}

const LEGEND_WIDTH: f32 = 86.0;
const LABEL_CHARS: usize = 14;

/// Draw `fig` filling the space given: title, plot, legend.
pub fn heatmap_ui(ui: &mut Ui, id: impl egui::AsIdSalt, fig: &Heatmap, marks: Marks) -> CellEvents {
    ui.label(egui::RichText::new(&fig.title).strong());
    let (rows, cols) = (fig.rows(), fig.cols());
    if rows == 0 || cols == 0 {
        ui.label("nothing to show");
        return CellEvents::default();
    }
    let mut events = CellEvents::default();
    let height = ui.available_height().max(120.0);
    ui.horizontal_top(|ui| {
        let width = (ui.available_width() - LEGEND_WIDTH).max(120.0);
        let texture = cells_texture(ui, &id, fig);
        let item = PlotImage::new(
            fig.value_name.clone(),
            texture.id(),
            PlotPoint::new(cols as f64 / 2.0, rows as f64 / 2.0),
            Vec2::new(cols as f32, rows as f32),
        );
        let row_labels: Vec<String> = fig
            .row_labels
            .iter()
            .map(|l| short(l, LABEL_CHARS))
            .collect();
        let col_labels: Vec<String> = fig
            .col_labels
            .iter()
            .map(|l| short(l, LABEL_CHARS))
            .collect();
        let response = Plot::new(id)
            .width(width)
            .height(height)
            .invert_y(true)
            .show_grid(false)
            .show_x(false)
            .show_y(false)
            .allow_boxed_zoom(false)
            .label_formatter(|_| None)
            .x_axis_label(fig.col_axis.clone())
            .y_axis_label(fig.row_axis.clone())
            .x_grid_spacer(move |input| category_marks(input, cols))
            .y_grid_spacer(move |input| category_marks(input, rows))
            .x_axis_formatter(move |mark, _| category_label(&col_labels, mark.value))
            .y_axis_formatter(move |mark, _| category_label(&row_labels, mark.value))
            .set_margin_fraction(Vec2::ZERO)
            .include_x(0.0)
            .include_x(cols as f64)
            .include_y(0.0)
            .include_y(rows as f64)
            .show(ui, |plot| {
                plot.add(item);
                let outline = |points: Vec<[f64; 2]>| {
                    Line::new("selection", PlotPoints::new(points))
                        .color(theme::OUTLINE)
                        .width(2.0)
                };
                if let Some(r) = marks.row.filter(|&r| r < rows) {
                    let (r, c) = (r as f64, cols as f64);
                    plot.line(outline(vec![
                        [0.0, r],
                        [c, r],
                        [c, r + 1.0],
                        [0.0, r + 1.0],
                        [0.0, r],
                    ]));
                }
                if let Some(c) = marks.col.filter(|&c| c < cols) {
                    let (c, r) = (c as f64, rows as f64);
                    plot.line(outline(vec![
                        [c, 0.0],
                        [c + 1.0, 0.0],
                        [c + 1.0, r],
                        [c, r],
                        [c, 0.0],
                    ]));
                }
                plot.pointer_coordinate()
            });
        let cell = response.inner.and_then(|p| {
            let (c, r) = (p.x.floor(), p.y.floor());
            (c >= 0.0 && r >= 0.0 && (c as usize) < cols && (r as usize) < rows)
                .then_some((r as usize, c as usize))
        });
        let plot_response = response.response;
        if let Some((r, c)) = cell {
            if plot_response.hovered() {
                events.hovered = Some((r, c));
                plot_response.clone().on_hover_ui_at_pointer(|ui| {
                    ui.label(fig.describe(r, c));
                });
            }
            if plot_response.clicked() {
                events.clicked = Some((r, c));
            }
            if plot_response.secondary_clicked() {
                events.secondary_clicked = Some((r, c));
            }
        }
        legend_ui(
            ui,
            fig,
            height,
            events.hovered.and_then(|(r, c)| fig.value(r, c)),
        );
    });
    events
}

/// The figure's cells as a texture, from egui's memory while the figure is unchanged.
fn cells_texture(ui: &Ui, id: &impl egui::AsIdSalt, fig: &Heatmap) -> egui::TextureHandle {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        fig.rows(),
        fig.cols(),
        fig.scale.log,
        fig.scale.lo.to_bits(),
        fig.scale.hi.to_bits(),
    )
        .hash(&mut h);
    format!("{:?}", fig.scale.palette).hash(&mut h);
    for v in &fig.values {
        v.to_bits().hash(&mut h);
    }
    let key = h.finish();
    let cache = ui.make_persistent_id(("heatmap_cells", id));
    if let Some((k, t)) = ui.data(|d| d.get_temp::<(u64, egui::TextureHandle)>(cache)) {
        if k == key {
            return t;
        }
    }
    let (rows, cols) = (fig.rows(), fig.cols());
    let mut rgb = Vec::with_capacity(rows * cols * 3);
    for r in 0..rows {
        for c in 0..cols {
            rgb.extend_from_slice(&fig.color(r, c));
        }
    }
    let image = egui::ColorImage::from_rgb([cols, rows], &rgb);
    let texture = ui.ctx().load_texture(
        format!("heatmap {:?}", id),
        image,
        egui::TextureOptions::NEAREST,
    );
    ui.data_mut(|d| d.insert_temp(cache, (key, texture.clone())));
    texture
}

/// A vertical colour bar with tick values, the value name on top, and the hovered value marked.
pub fn legend_ui(ui: &mut Ui, fig: &Heatmap, height: f32, hovered: Option<f32>) {
    let (rect, response) = ui.allocate_exact_size(Vec2::new(LEGEND_WIDTH, height), Sense::hover());
    let painter = ui.painter_at(rect);
    let text = ui.visuals().text_color();
    let font = egui::FontId::proportional(11.0);
    let title = if fig.scale.log {
        format!("{} (log)", fig.value_name)
    } else {
        fig.value_name.clone()
    };
    painter.text(
        rect.left_top(),
        egui::Align2::LEFT_TOP,
        short(&title, 14),
        font.clone(),
        text,
    );
    let bar = Rect::from_min_size(
        rect.left_top() + Vec2::new(4.0, 20.0),
        Vec2::new(16.0, (height - 40.0).max(20.0)),
    );
    let steps = 64;
    for i in 0..steps {
        // Top of the bar is the top of the scale.
        let t = 1.0 - (i as f32 + 0.5) / steps as f32;
        let y0 = bar.top() + bar.height() * i as f32 / steps as f32;
        let y1 = bar.top() + bar.height() * (i + 1) as f32 / steps as f32;
        painter.rect_filled(
            Rect::from_x_y_ranges(bar.x_range(), y0..=y1 + 0.5),
            0.0,
            theme::color(fig.scale.color_at(t)),
        );
    }
    painter.rect_stroke(bar, 0.0, Stroke::new(1.0, text), egui::StrokeKind::Outside);
    for (value, pos) in fig.scale.ticks() {
        let y = bar.bottom() - pos * bar.height();
        painter.line_segment(
            [egui::pos2(bar.right(), y), egui::pos2(bar.right() + 4.0, y)],
            Stroke::new(1.0, text),
        );
        painter.text(
            egui::pos2(bar.right() + 6.0, y),
            egui::Align2::LEFT_CENTER,
            format_value(value),
            font.clone(),
            text,
        );
    }
    if let Some(v) = hovered {
        if let Some(pos) = fig.scale.position(v) {
            let y = bar.bottom() - pos * bar.height();
            painter.line_segment(
                [
                    egui::pos2(bar.left() - 3.0, y),
                    egui::pos2(bar.right() + 3.0, y),
                ],
                Stroke::new(2.0, Color32::RED),
            );
        }
    }
    response.on_hover_text(format!(
        "colour scale of {}: {} to {}{}",
        fig.value_name,
        format_value(fig.scale.lo),
        format_value(fig.scale.hi),
        if fig.scale.log { ", logarithmic" } else { "" }
    ));
}

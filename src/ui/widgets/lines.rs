//! A [`LineChart`] figure drawn with egui_plot: categorical x (ops), log or linear y, min-max
//! bands, dashed lines for the selected token, and a tooltip with every series' value at the
//! hovered op.

use egui::Ui;
use egui_plot::{Corner, FilledArea, Legend, Line, LineStyle, Plot, PlotPoints};

use super::{category_label, category_marks};
use crate::figures::colormap::format_value;
use crate::figures::LineChart;
use crate::ui::theme;

/// Draw `chart` at `height`; returns the hovered x position (op index), if any.
pub fn line_chart_ui(
    ui: &mut Ui,
    id: impl egui::AsIdSalt,
    chart: &LineChart,
    height: f32,
) -> Option<usize> {
    ui.label(egui::RichText::new(&chart.title).strong());
    let log = chart.log_y;
    let y = move |v: f32| -> f64 {
        if log {
            if v > 0.0 {
                f64::from(v).log10()
            } else {
                f64::NAN
            }
        } else {
            f64::from(v)
        }
    };
    let n = chart.x_labels.len();
    let labels = chart.x_labels.clone();
    let response = Plot::new(id)
        .height(height)
        .legend(
            Legend::default()
                .position(Corner::RightBottom)
                .background_alpha(0.6)
                .text_style(egui::TextStyle::Small),
        )
        .show_x(false)
        .show_y(false)
        .label_formatter(|_| None)
        .x_axis_label(chart.x_axis.clone())
        .y_axis_label(chart.y_axis.clone())
        .x_grid_spacer(move |input| category_marks(input, n))
        .x_axis_formatter(move |mark, _| category_label(&labels, mark.value))
        .y_axis_formatter(move |mark, _| {
            if log {
                format_value(10f32.powf(mark.value as f32))
            } else {
                format_value(mark.value as f32)
            }
        })
        .show(ui, |plot| {
            for s in &chart.series {
                let color = theme::color(s.color);
                let points: Vec<[f64; 2]> = s
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| [i as f64 + 0.5, y(v)])
                    .filter(|p| p[1].is_finite())
                    .collect();
                let mut line = Line::new(s.label.clone(), PlotPoints::new(points))
                    .color(color)
                    .width(2.0);
                if s.dashed {
                    line = line.style(LineStyle::dashed_loose());
                }
                plot.line(line);
                if let Some((lo, hi)) = &s.band {
                    let (mut xs, mut ys_lo, mut ys_hi) = (Vec::new(), Vec::new(), Vec::new());
                    for i in 0..n {
                        let (a, b) = (y(lo[i]), y(hi[i]));
                        if a.is_finite() && b.is_finite() {
                            xs.push(i as f64 + 0.5);
                            ys_lo.push(a);
                            ys_hi.push(b);
                        }
                    }
                    plot.add(
                        // Unnamed: the legend lists the line (whose label names its band), in
                        // the line's colour rather than the band's faint one.
                        FilledArea::new("", &xs, &ys_lo, &ys_hi)
                            .fill_color(color.gamma_multiply(0.18))
                            .allow_hover(false),
                    );
                }
            }
            plot.pointer_coordinate()
        });
    let hovered = response
        .inner
        .map(|p| p.x.floor())
        .filter(|x| *x >= 0.0 && (*x as usize) < n)
        .map(|x| x as usize);
    if let Some(i) = hovered {
        if response.response.hovered() {
            response.response.clone().on_hover_ui_at_pointer(|ui| {
                ui.label(egui::RichText::new(&chart.x_labels[i]).strong());
                for s in &chart.series {
                    let mut line = format!("{}: {}", s.label, format_value(s.values[i]));
                    if let Some((lo, hi)) = &s.band {
                        line += &format!("  [{} .. {}]", format_value(lo[i]), format_value(hi[i]));
                    }
                    ui.colored_label(theme::color(s.color), line);
                }
            });
        }
    }
    hovered
}

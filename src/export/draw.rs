//! Drawing figure descriptions ([`crate::figures`]) as SVG: heatmaps with their colour legend,
//! line charts with bands, laid out in panels. Text stays text (`<text>`, DejaVu Sans with
//! fallbacks); tick labels are thinned by the same nested powers of two as the app's axes, so
//! they never overlap, even at 2048 tokens.

use std::fmt::Write;

use crate::figures::colormap::format_value;
use crate::figures::{Heatmap, LineChart, Rgb};

/// The font stack: DejaVu Sans is what the PNG renderer bundles.
pub const FONT_FAMILY: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

/// Pixels between two tick labels, at least.
const LABEL_GAP: f64 = 13.0;
/// Heatmaps with more cells than this draw their cells as one embedded image (text stays text).
const MAX_CELL_RECTS: usize = 20_000;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `#rrggbb`.
pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

use crate::figures::clip_label as clip;

/// The label step: the smallest power of two whose labels are `LABEL_GAP` apart.
fn label_step(cell: f64) -> usize {
    let mut step = 1usize;
    while (step as f64) * cell < LABEL_GAP && step < 1 << 20 {
        step *= 2;
    }
    step
}

/// An SVG document being written.
pub struct Svg {
    pub width: f64,
    pub height: f64,
    body: String,
}

impl Svg {
    pub fn new(width: f64) -> Self {
        Self {
            width,
            height: 0.0,
            body: String::new(),
        }
    }

    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: &str, text: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" {extra}>{}</text>"#,
            escape(text)
        );
    }

    fn raw(&mut self, s: &str) {
        self.body.push_str(s);
        self.body.push('\n');
    }

    /// The finished document at `self.height`.
    pub fn finish(self) -> String {
        let (w, h) = (self.width.ceil(), self.height.ceil());
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT_FAMILY}\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body
        )
    }
}

/// Outlines for the selected row and column.
#[derive(Debug, Clone, Copy, Default)]
pub struct Marks {
    pub row: Option<usize>,
    pub col: Option<usize>,
}

/// Draw `fig` with its top-left at `(x0, y0)` in `width`; returns the height used.
pub fn heatmap(svg: &mut Svg, x0: f64, y0: f64, width: f64, fig: &Heatmap, marks: Marks) -> f64 {
    let (rows, cols) = (fig.rows(), fig.cols());
    svg.text(
        x0,
        y0 + 15.0,
        13.0,
        "start",
        &clip(&fig.title, (width / 7.2) as usize),
        r#"font-weight="bold""#,
    );
    if rows == 0 || cols == 0 {
        svg.text(x0, y0 + 40.0, 12.0, "start", "nothing to show", "");
        return 50.0;
    }
    let row_chars = fig
        .row_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .min(18);
    let col_chars = fig
        .col_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .min(16);
    let label_w = 10.0 + 6.6 * row_chars as f64;
    let legend_w = 96.0;
    let plot_x = x0 + 22.0 + label_w;
    let plot_w = (width - (plot_x - x0) - legend_w).max(80.0);
    let plot_y = y0 + 28.0;
    let plot_h = (rows as f64 * 18.0).clamp(150.0, 900.0);
    let (cw, ch) = (plot_w / cols as f64, plot_h / rows as f64);
    if rows * cols <= MAX_CELL_RECTS {
        for r in 0..rows {
            for c in 0..cols {
                let _ = writeln!(
                    svg.body,
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{}" shape-rendering="crispEdges"/>"#,
                    plot_x + c as f64 * cw,
                    plot_y + r as f64 * ch,
                    cw + 0.05,
                    ch + 0.05,
                    hex(fig.color(r, c))
                );
            }
        }
    } else if let Some(uri) = cells_png(fig) {
        let _ = writeln!(
            svg.body,
            r#"<image x="{plot_x:.2}" y="{plot_y:.2}" width="{plot_w:.2}" height="{plot_h:.2}" preserveAspectRatio="none" style="image-rendering:pixelated" href="{uri}"/>"#
        );
    }
    svg.raw(&format!(
        r##"<rect x="{plot_x:.2}" y="{plot_y:.2}" width="{plot_w:.2}" height="{plot_h:.2}" fill="none" stroke="#444"/>"##
    ));
    let outline = |x: f64, y: f64, w: f64, h: f64| {
        format!(
            r##"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="none" stroke="#d55e00" stroke-width="2"/>"##
        )
    };
    if let Some(r) = marks.row.filter(|&r| r < rows) {
        svg.raw(&outline(plot_x, plot_y + r as f64 * ch, plot_w, ch));
    }
    if let Some(c) = marks.col.filter(|&c| c < cols) {
        svg.raw(&outline(plot_x + c as f64 * cw, plot_y, cw, plot_h));
    }
    let step = label_step(ch);
    for (r, label) in fig.row_labels.iter().enumerate().step_by(step) {
        let y = plot_y + (r as f64 + 0.5) * ch + 4.0;
        svg.text(plot_x - 4.0, y, 11.0, "end", &clip(label, 18), "");
    }
    let step = label_step(cw);
    let base = plot_y + plot_h + 6.0;
    for (c, label) in fig.col_labels.iter().enumerate().step_by(step) {
        let x = plot_x + (c as f64 + 0.5) * cw;
        let extra = format!(r#"transform="rotate(-45 {x:.1} {base:.1})""#);
        svg.text(x, base + 8.0, 11.0, "end", &clip(label, 16), &extra);
    }
    let col_h = 12.0 + 5.5 * col_chars as f64;
    svg.text(
        plot_x + plot_w / 2.0,
        base + col_h + 14.0,
        12.0,
        "middle",
        &fig.col_axis,
        "",
    );
    let cy = plot_y + plot_h / 2.0;
    let extra = format!(r#"transform="rotate(-90 {:.1} {cy:.1})""#, x0 + 10.0);
    svg.text(x0 + 10.0, cy, 12.0, "middle", &fig.row_axis, &extra);
    legend(svg, plot_x + plot_w + 12.0, plot_y, plot_h, fig);
    (base + col_h + 22.0) - y0
}

/// The heatmap's cells as a PNG data URI, one pixel per cell.
fn cells_png(fig: &Heatmap) -> Option<String> {
    let (rows, cols) = (fig.rows() as u32, fig.cols() as u32);
    let mut pixmap = resvg::tiny_skia::Pixmap::new(cols, rows)?;
    for (i, px) in pixmap.pixels_mut().iter_mut().enumerate() {
        let (r, c) = (i / cols as usize, i % cols as usize);
        let [red, green, blue] = fig.color(r, c);
        *px = resvg::tiny_skia::PremultipliedColorU8::from_rgba(red, green, blue, 255)?;
    }
    let png = pixmap.encode_png().ok()?;
    Some(format!("data:image/png;base64,{}", base64(&png)))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ABC[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A vertical colour bar with ticks, as the app's legend.
fn legend(svg: &mut Svg, x: f64, y: f64, h: f64, fig: &Heatmap) {
    let title = if fig.scale.log {
        format!("{} (log)", fig.value_name)
    } else {
        fig.value_name.clone()
    };
    svg.text(x, y - 6.0, 11.0, "start", &clip(&title, 16), "");
    let steps = 64;
    for i in 0..steps {
        let t = 1.0 - (i as f32 + 0.5) / steps as f32;
        let _ = writeln!(
            svg.body,
            r#"<rect x="{x:.1}" y="{:.2}" width="14" height="{:.2}" fill="{}"/>"#,
            y + h * i as f64 / steps as f64,
            h / steps as f64 + 0.3,
            hex(fig.scale.color_at(t))
        );
    }
    svg.raw(&format!(
        r##"<rect x="{x:.1}" y="{y:.1}" width="14" height="{h:.1}" fill="none" stroke="#444"/>"##
    ));
    for (value, pos) in fig.scale.ticks() {
        let ty = y + h * (1.0 - f64::from(pos));
        svg.raw(&format!(
            r##"<line x1="{:.1}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#444"/>"##,
            x + 14.0,
            x + 18.0
        ));
        svg.text(x + 21.0, ty + 4.0, 10.0, "start", &format_value(value), "");
    }
}

/// Draw `chart` at `(x0, y0)` in `width` x `height`; returns the height used.
pub fn line_chart(
    svg: &mut Svg,
    x0: f64,
    y0: f64,
    width: f64,
    height: f64,
    chart: &LineChart,
) -> f64 {
    svg.text(
        x0,
        y0 + 15.0,
        13.0,
        "start",
        &clip(&chart.title, (width / 7.2) as usize),
        r#"font-weight="bold""#,
    );
    let n = chart.x_labels.len().max(1);
    let (px, py) = (x0 + 70.0, y0 + 28.0);
    let (pw, ph) = (width - 80.0, height - 28.0 - 70.0);
    let tr = |v: f32| -> Option<f64> {
        let v = f64::from(v);
        if !v.is_finite() || (chart.log_y && v <= 0.0) {
            None
        } else if chart.log_y {
            Some(v.log10())
        } else {
            Some(v)
        }
    };
    let all = chart.series.iter().flat_map(|s| {
        s.values
            .iter()
            .chain(s.band.iter().flat_map(|(lo, hi)| lo.iter().chain(hi)))
    });
    let (mut lo, mut hi) = all
        .filter_map(|&v| tr(v))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if chart.log_y {
        (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    } else if hi <= lo {
        hi = lo + 1.0;
    }
    let x_at = |i: usize| px + pw * (i as f64 + 0.5) / n as f64;
    let y_at = |v: f64| py + ph * (1.0 - (v - lo) / (hi - lo));
    svg.raw(&format!(r##"<rect x="{px:.1}" y="{py:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##));
    let ticks: Vec<f64> = if chart.log_y {
        (lo as i32..=hi as i32).map(f64::from).collect()
    } else {
        crate::figures::colormap::nice_ticks(lo as f32, hi as f32, 5)
            .into_iter()
            .map(f64::from)
            .collect()
    };
    for t in ticks {
        let y = y_at(t);
        let label = if chart.log_y {
            format_value(10f32.powf(t as f32))
        } else {
            format_value(t as f32)
        };
        svg.raw(&format!(
            r##"<line x1="{px:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
            px + pw
        ));
        svg.text(px - 6.0, y + 4.0, 10.0, "end", &label, "");
    }
    for s in &chart.series {
        let color = hex(s.color);
        if let Some((blo, bhi)) = &s.band {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            let mut back: Vec<(f64, f64)> = Vec::new();
            for i in 0..n.min(blo.len()) {
                if let (Some(a), Some(b)) = (tr(blo[i]), tr(bhi[i])) {
                    pts.push((x_at(i), y_at(b)));
                    back.push((x_at(i), y_at(a)));
                }
            }
            back.reverse();
            let d: Vec<String> = pts
                .iter()
                .chain(&back)
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            if !d.is_empty() {
                svg.raw(&format!(
                    r#"<polygon points="{}" fill="{color}" fill-opacity="0.18" stroke="none"/>"#,
                    d.join(" ")
                ));
            }
        }
        let mut path = String::new();
        let mut pen = false;
        for (i, &v) in s.values.iter().enumerate() {
            match tr(v) {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        x_at(i),
                        y_at(v)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        svg.raw(&format!(
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
        ));
    }
    let widest = chart
        .series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    svg.raw(&format!(
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="white" fill-opacity="0.8"/>"#,
        px + 4.0,
        py + 4.0,
        40.0 + 5.8 * widest as f64,
        8.0 + 15.0 * chart.series.len() as f64
    ));
    for (k, s) in chart.series.iter().enumerate() {
        let ly = py + 14.0 + k as f64 * 15.0;
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        svg.raw(&format!(r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2.5"{dash}/>"#, px + 8.0, px + 30.0, hex(s.color)));
        svg.text(px + 35.0, ly + 4.0, 10.0, "start", &s.label, "");
    }
    let step = label_step(pw / n as f64);
    let base = py + ph + 6.0;
    for (i, label) in chart.x_labels.iter().enumerate().step_by(step) {
        let x = x_at(i);
        let extra = format!(r#"transform="rotate(-45 {x:.1} {base:.1})""#);
        svg.text(x, base + 8.0, 10.0, "end", &clip(label, 12), &extra);
    }
    svg.text(
        px + pw / 2.0,
        y0 + height - 4.0,
        12.0,
        "middle",
        &chart.x_axis,
        "",
    );
    let cy = py + ph / 2.0;
    let extra = format!(r#"transform="rotate(-90 {:.1} {cy:.1})""#, x0 + 12.0);
    svg.text(x0 + 12.0, cy, 12.0, "middle", &chart.y_axis, &extra);
    height
}

/// A two-column table (label, value), as the gradients' per-group RMS; returns the height used.
pub fn table(svg: &mut Svg, x0: f64, y0: f64, title: &str, rows: &[(String, f32)]) -> f64 {
    svg.text(x0, y0 + 15.0, 12.0, "start", title, r#"font-weight="bold""#);
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = y0 + 32.0 + i as f64 * 15.0;
        svg.text(x0, y, 11.0, "start", label, "");
        svg.text(x0 + 150.0, y, 11.0, "end", &format_value(*v), "");
    }
    36.0 + rows.len() as f64 * 15.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn labels_thin_by_powers_of_two_until_they_are_apart() {
        assert_eq!(label_step(20.0), 1);
        assert_eq!(label_step(7.0), 2);
        assert_eq!(label_step(0.44), 32);
    }
}

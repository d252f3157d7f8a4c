//! Figures as SVG (self-contained; text in DejaVu Sans, which the PNG renderer bundles).

use std::fmt::Write;

use super::figure::Figure;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 56.0;
const PANEL_H: f64 = 250.0;
const GAP: f64 = 36.0;
const BOTTOM: f64 = 96.0;

use super::draw::escape;

/// Tick values and the mapping of a value into [0, 1] for one panel's y axis.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(values: impl Iterator<Item = f32>, log: bool) -> Self {
        let finite: Vec<f64> = values
            .map(f64::from)
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let (mut lo, mut hi) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = if log { (0.1, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            let (a, b) = (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            );
            let ticks = (a as i32..=b as i32).map(|e| 10f64.powi(e)).collect();
            return Self {
                lo: 10f64.powf(a),
                hi: 10f64.powf(b),
                log,
                ticks,
            };
        }
        lo = lo.min(0.0);
        if hi <= lo {
            hi = lo + 1.0;
        }
        let raw = (hi - lo) / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(raw);
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let ticks = (0..=((hi - lo) / step).round() as i32)
            .map(|i| lo + i as f64 * step)
            .collect();
        Self { lo, hi, log, ticks }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

fn tick_label(v: f64, log: bool) -> String {
    if log {
        let e = v.log10().round() as i32;
        if (-2..=3).contains(&e) {
            format!("{}", v)
        } else {
            format!("1e{e}")
        }
    } else if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Render a figure as an SVG document.
pub fn render(fig: &Figure) -> String {
    let n = fig.x_labels.len().max(1);
    let height = TOP + fig.panels.len() as f64 * (PANEL_H + GAP) - GAP + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_at = |i: usize| {
        LEFT + if n == 1 {
            plot_w / 2.0
        } else {
            plot_w * i as f64 / (n - 1) as f64
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="30" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(&fig.title)
    );
    for (pi, panel) in fig.panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP);
        let axis = Axis::new(
            panel.series.iter().flat_map(|s| s.values.iter().copied()),
            panel.log_y,
        );
        let y_at = |v: f64| top + PANEL_H * (1.0 - axis.frac(v));
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        for &t in &axis.ticks {
            let y = y_at(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                tick_label(t, axis.log)
            );
        }
        let cy = top + PANEL_H / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="22" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 22 {cy:.1})">{}{}</text>"#,
            escape(&panel.y_label),
            if panel.log_y { " (log)" } else { "" }
        );
        for (si, series) in panel.series.iter().enumerate() {
            // Break the line at values that cannot be drawn (NaN, or non-positive on a log axis).
            let mut path = String::new();
            let mut pen_down = false;
            for (i, &v) in series.values.iter().enumerate() {
                let v = f64::from(v);
                if !v.is_finite() || (axis.log && v <= 0.0) {
                    pen_down = false;
                    continue;
                }
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} ",
                    if pen_down { "L" } else { "M" },
                    x_at(i),
                    y_at(v)
                );
                pen_down = true;
            }
            let _ = writeln!(
                s,
                r#"<path d="{path}" fill="none" stroke="{}" stroke-width="2"/>"#,
                super::draw::hex(series.color)
            );
            for (i, &v) in series.values.iter().enumerate() {
                let v = f64::from(v);
                if v.is_finite() && (!axis.log || v > 0.0) {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                        x_at(i),
                        y_at(v),
                        super::draw::hex(series.color)
                    );
                }
            }
            let ly = top + 18.0 + si as f64 * 18.0;
            let _ = writeln!(
                s,
                r#"<line x1="{}" x2="{}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
                LEFT + 12.0,
                LEFT + 36.0,
                super::draw::hex(series.color),
                LEFT + 42.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
    }
    // Op labels under the last panel, thinned so that they never overlap.
    let every = n.div_ceil(40).max(1);
    let base = TOP + fig.panels.len() as f64 * (PANEL_H + GAP) - GAP + 12.0;
    for (i, label) in fig.x_labels.iter().enumerate() {
        if i % every != 0 && i + 1 != n {
            continue;
        }
        let x = x_at(i);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{base:.1}" text-anchor="end" font-size="10" transform="rotate(-60 {x:.1} {base:.1})">{}</text>"#,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

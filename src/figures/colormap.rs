//! Colour scales: a value to a colour of a perceptual, colour-blind-safe map (viridis for
//! magnitudes, purple-orange for signed differences), linear or logarithmic, with its ticks.

use serde::Serialize;

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Colour of a cell with no value (a source an op cannot see): a neutral grey.
pub const NO_VALUE: Rgb = [128, 128, 128];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Palette {
    /// Sequential (dark violet to yellow).
    Viridis,
    /// Diverging around zero (purple negative, orange positive).
    PurpleOrange,
}

/// How values map to colours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ColorScale {
    pub palette: Palette,
    pub log: bool,
    pub lo: f32,
    pub hi: f32,
}

impl ColorScale {
    /// A sequential scale over the finite values (positive ones, for a log scale).
    pub fn fit(values: &[f32], log: bool) -> Self {
        let (mut lo, mut hi) = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = if log { (0.1, 1.0) } else { (0.0, 1.0) };
        }
        if hi <= lo {
            hi = if log { lo * 10.0 } else { lo + 1.0 };
        }
        Self {
            palette: Palette::Viridis,
            log,
            lo,
            hi,
        }
    }

    /// A linear sequential scale over the finite values and at least `lo..hi` (residual shares:
    /// 0..1 always, wider where a share is negative or past 1).
    pub fn fit_including(values: &[f32], lo: f32, hi: f32) -> Self {
        let (a, b) = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold((lo, hi), |(a, b), v| (a.min(v), b.max(v)));
        Self::fixed(a, b)
    }

    /// A fixed sequential range (depth weights: always 0..1, so two models compare by eye).
    pub fn fixed(lo: f32, hi: f32) -> Self {
        Self {
            palette: Palette::Viridis,
            log: false,
            lo,
            hi,
        }
    }

    /// A diverging scale symmetric around 0 that holds every finite value.
    pub fn symmetric(values: &[f32]) -> Self {
        let m = values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f32, |m, v| m.max(v.abs()));
        let m = if m > 0.0 { m } else { 1.0 };
        Self {
            palette: Palette::PurpleOrange,
            log: false,
            lo: -m,
            hi: m,
        }
    }

    /// Where `v` falls on the scale, clamped to [0, 1]; `None` for NaN (and, on a log scale,
    /// values that are not positive get the bottom of the scale).
    pub fn position(&self, v: f32) -> Option<f32> {
        if v.is_nan() {
            return None;
        }
        let t = if self.log {
            if v <= 0.0 {
                return Some(0.0);
            }
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        Some(if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        })
    }

    /// The colour at a position in [0, 1] of the palette.
    pub fn color_at(&self, t: f32) -> Rgb {
        let g = match self.palette {
            Palette::Viridis => colorous::VIRIDIS,
            Palette::PurpleOrange => colorous::PURPLE_ORANGE,
        };
        let c = g.eval_continuous(f64::from(t.clamp(0.0, 1.0)));
        [c.r, c.g, c.b]
    }

    /// The colour of a value (grey for NaN).
    pub fn color(&self, v: f32) -> Rgb {
        self.position(v).map_or(NO_VALUE, |t| self.color_at(t))
    }

    /// Tick values for the legend, each with its position in [0, 1]: decades on a log scale,
    /// round steps otherwise.
    pub fn ticks(&self) -> Vec<(f32, f32)> {
        let values: Vec<f32> = if self.log {
            let (a, b) = (
                self.lo.log10().ceil() as i32,
                self.hi.log10().floor() as i32,
            );
            let mut v: Vec<f32> = (a..=b).map(|e| 10f32.powi(e)).collect();
            if v.len() < 2 {
                v = vec![self.lo, self.hi];
            }
            v
        } else {
            nice_ticks(self.lo, self.hi, 5)
        };
        values
            .into_iter()
            .filter_map(|v| self.position(v).map(|p| (v, p)))
            .collect()
    }
}

/// About `n` round values between `lo` and `hi` (steps of 1, 2 or 5 times a power of ten).
pub fn nice_ticks(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let span = f64::from(hi - lo);
    if span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (f64::from(lo) / step).ceil() as i64;
    let last = (f64::from(hi) / step + 1e-9).floor() as i64;
    (first..=last).map(|i| (i as f64 * step) as f32).collect()
}

/// A value as a legend tick or tooltip writes it: four significant digits, no trailing zeros,
/// scientific notation outside 0.001..10000.
pub fn format_value(v: f32) -> String {
    fn trim(s: String) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    if v.is_nan() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&a) {
        let s = format!("{v:.2e}");
        match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim(m.to_string())),
            None => s,
        }
    } else {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_scale_puts_decades_evenly_and_non_positive_values_at_the_bottom() {
        let s = ColorScale::fit(&[0.01, 0.1, 1.0, 0.0, f32::NAN], true);
        assert_eq!((s.lo, s.hi), (0.01, 1.0));
        assert!((s.position(0.1).unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(s.position(0.0), Some(0.0));
        assert_eq!(s.position(f32::NAN), None);
        let ticks: Vec<f32> = s.ticks().iter().map(|t| t.0).collect();
        assert_eq!(ticks.len(), 3);
    }

    #[test]
    fn a_share_scale_holds_0_to_1_even_when_every_share_is_1() {
        let s = ColorScale::fit_including(&[1.0, 1.0], 0.0, 1.0);
        assert_eq!((s.lo, s.hi), (0.0, 1.0));
        let s = ColorScale::fit_including(&[-0.2, 1.3, f32::NAN], 0.0, 1.0);
        assert_eq!((s.lo, s.hi), (-0.2, 1.3));
    }

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        for t in nice_ticks(-0.37, 0.37, 5) {
            assert!((-0.37..=0.37).contains(&t));
        }
    }

    #[test]
    fn values_print_with_four_significant_digits_and_no_trailing_zeros() {
        assert_eq!(format_value(10.0), "10");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(0.046), "0.046");
        assert_eq!(format_value(1.26123), "1.261");
        assert_eq!(format_value(10000.0), "1e4");
        assert_eq!(format_value(4.71e-4), "4.71e-4");
        assert_eq!(format_value(-0.25), "-0.25");
        assert_eq!(format_value(f32::NAN), "n/a");
    }

    #[test]
    fn the_diverging_scale_is_symmetric_and_centres_zero() {
        let s = ColorScale::symmetric(&[-0.2, 0.5]);
        assert_eq!((s.lo, s.hi), (-0.5, 0.5));
        assert_eq!(s.position(0.0), Some(0.5));
    }
}

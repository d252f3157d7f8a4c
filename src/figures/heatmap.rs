//! A heatmap: labelled rows and columns of values under one colour scale.

use serde::Serialize;

use super::colormap::{format_value, ColorScale, Rgb};

/// Rows top to bottom, columns left to right; `values` row-major, NaN where a cell has no value
/// (a source the op cannot see).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heatmap {
    pub title: String,
    pub row_axis: String,
    pub col_axis: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub values: Vec<f32>,
    /// What a cell's value is (`alpha`, `hidden RMS`, ...).
    pub value_name: String,
    pub scale: ColorScale,
}

impl Heatmap {
    pub fn rows(&self) -> usize {
        self.row_labels.len()
    }

    pub fn cols(&self) -> usize {
        self.col_labels.len()
    }

    /// The value at `(row, col)`, `None` outside the grid or where the cell has no value.
    pub fn value(&self, row: usize, col: usize) -> Option<f32> {
        if row >= self.rows() || col >= self.cols() {
            return None;
        }
        self.values
            .get(row * self.cols() + col)
            .copied()
            .filter(|v| !v.is_nan())
    }

    pub fn color(&self, row: usize, col: usize) -> Rgb {
        self.scale.color(self.value(row, col).unwrap_or(f32::NAN))
    }

    /// What a tooltip says about a cell: both labels and the exact value.
    pub fn describe(&self, row: usize, col: usize) -> String {
        let value = match self.value(row, col) {
            Some(v) => format!("{} = {} ({v:e})", self.value_name, format_value(v)),
            None => format!("{}: no value (not a source of this row)", self.value_name),
        };
        format!(
            "{}: {}\n{}: {}\n{value}",
            self.row_axis,
            self.row_labels.get(row).map_or("", String::as_str),
            self.col_axis,
            self.col_labels.get(col).map_or("", String::as_str),
        )
    }

    /// `B - A` of two heatmaps over the same rows and columns, on a diverging scale; `None`
    /// when the grids differ (other ops or sources).
    pub fn difference(a: &Heatmap, b: &Heatmap, title: String) -> Option<Heatmap> {
        if a.row_labels != b.row_labels || a.col_labels != b.col_labels {
            return None;
        }
        let values: Vec<f32> = a.values.iter().zip(&b.values).map(|(x, y)| y - x).collect();
        Some(Heatmap {
            title,
            row_axis: a.row_axis.clone(),
            col_axis: a.col_axis.clone(),
            row_labels: a.row_labels.clone(),
            col_labels: a.col_labels.clone(),
            scale: ColorScale::symmetric(&values),
            values,
            value_name: format!("{} (B - A)", a.value_name),
        })
    }
}

//! Line charts over categorical x positions (one per op), optionally with a min-max band.

use serde::Serialize;

use super::colormap::Rgb;

/// Okabe-Ito colours: distinguishable for colour-blind readers.
pub const PALETTE: [Rgb; 4] = [[0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167]];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineSeries {
    pub label: String,
    /// One value per x position (NaN: no point there).
    pub values: Vec<f32>,
    /// `(low, high)` per position: the spread the line is the median of.
    pub band: Option<(Vec<f32>, Vec<f32>)>,
    pub color: Rgb,
    /// Drawn dashed (the selected token's own line, against the medians).
    pub dashed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineChart {
    pub title: String,
    pub x_axis: String,
    pub x_labels: Vec<String>,
    pub y_axis: String,
    pub log_y: bool,
    pub series: Vec<LineSeries>,
}

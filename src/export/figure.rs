//! A figure described once (data, labels, scales) and drawn by any backend: the SVG writer here,
//! the app's plots later.

use crate::analysis::DepthProfile;

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub values: Vec<f32>,
    /// `#rrggbb`.
    pub color: crate::figures::Rgb,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Panels share the x axis (one position per op).
#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub x_labels: Vec<String>,
    pub panels: Vec<Panel>,
}

use crate::figures::lines::PALETTE;

/// The depth-dilution figure: RMS of every op's input and output along depth (log scale) and the
/// embedding's share of each op's input.
pub fn depth_profile_figure(title: &str, p: &DepthProfile) -> Figure {
    Figure {
        title: title.to_string(),
        x_labels: p.ops.clone(),
        panels: vec![
            Panel {
                y_label: "RMS (median over tokens)".into(),
                log_y: true,
                series: vec![
                    Series {
                        label: "hidden state h (op input)".into(),
                        values: p.hidden_rms.clone(),
                        color: PALETTE[0],
                    },
                    Series {
                        label: "sublayer output v".into(),
                        values: p.output_rms.clone(),
                        color: PALETTE[1],
                    },
                ],
            },
            Panel {
                y_label: "embedding's share of h".into(),
                log_y: false,
                series: vec![Series {
                    label: "share of emb, <v0,h>/<h,h> (median)".into(),
                    values: p.embedding_share.clone(),
                    color: PALETTE[2],
                }],
            },
        ],
    }
}

//! Figure descriptions: what every view draws, computed from a Trace by pure functions. The app
//! draws them with egui and the exporters write them to SVG/PNG/CSV/JSON, so the screen and the
//! files cannot drift apart. Nothing here knows about egui or files.

pub mod colormap;
pub mod depth_attention;
pub mod gradients;
pub mod heatmap;
pub mod lines;
pub mod norms;
pub mod token_source;
pub mod training;
pub mod view;

pub use colormap::{ColorScale, Palette, Rgb};
pub use depth_attention::{depth_attention, DepthAttentionSpec};
pub use gradients::{gradients, GradientsFigure};
pub use heatmap::Heatmap;
pub use lines::{LineChart, LineSeries};
pub use norms::{norms, NormsFigure};
pub use token_source::token_source;
pub use training::{parse_training_log, training, TrainingFigure, TrainingLog};
pub use view::{
    align_token, model_figures, same_tokens, view_figures, ModelFigures, ModelInput, Selection,
    Toggles, ViewFigures,
};

use serde::{Deserialize, Serialize};

use crate::trace::{Mixing, Trace};

/// What a depth-mixing heatmap colours by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Quantity {
    /// The depth weights `alpha` (baselines: the implicit 1 of every source).
    #[default]
    Alpha,
    /// The residual decomposition `<alpha_i v_i, h> / <h, h>` of the op's input.
    Share,
}

impl Quantity {
    /// What a trace is best read by: AttnRes models by their weights, baselines (whose weights
    /// are all 1) by the decomposition, so that both read the same way.
    pub fn natural_for(trace: &Trace) -> Self {
        match trace.ops.first().map(|o| o.mixing) {
            Some(Mixing::ResidualSum) => Quantity::Share,
            _ => Quantity::Alpha,
        }
    }

    /// The colour scale of these values: always 0..1 (so two models compare by eye; a
    /// baseline's weights are exactly 1), wider where shares are negative or exceed 1.
    pub fn scale(self, values: &[f32]) -> ColorScale {
        ColorScale::fit_including(values, 0.0, 1.0)
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Quantity::Alpha => "alpha",
            Quantity::Share => "share",
        }
    }
}

/// A token's text with whitespace made visible, so a chip or tick label never looks empty.
pub fn visible_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' ' => out.push('\u{2423}'),
            '\n' => out.push('\u{21b5}'),
            '\t' => out.push('\u{21e5}'),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('\u{2205}');
    }
    out
}

/// `"3 ␣the"`: a token's position and visible text, as axes label rows of tokens.
pub fn token_label(trace: &Trace, t: usize) -> String {
    match trace.tokens.get(t) {
        Some(tok) => format!("{t} {}", visible_text(&tok.text)),
        None => format!("{t}"),
    }
}

/// The model's short name for titles: the checkpoint's file or folder name.
pub fn model_name(trace: &Trace) -> String {
    checkpoint_name(std::path::Path::new(&trace.model.path))
}

/// A checkpoint's file or folder name (the whole path when it has none).
pub fn checkpoint_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// At most `max_chars` characters, an ellipsis marking a cut: one long token or title never
/// pushes an axis or a panel away.
pub fn clip_label(label: &str, max_chars: usize) -> String {
    if label.chars().count() <= max_chars {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(max_chars.saturating_sub(1)).collect();
        s.push('\u{2026}');
        s
    }
}

/// Source labels of every op, merged in depth order (`emb`, `L0.attn`, ... or `emb`, `B1`, ...,
/// `partial`): the columns of a heatmap that shows all ops at once.
pub fn source_union(trace: &Trace) -> Vec<String> {
    let mut union: Vec<String> = Vec::new();
    for op in &trace.ops {
        let mut after: Option<usize> = None;
        for label in &op.sources {
            match union.iter().position(|u| u == label) {
                Some(i) => after = Some(i),
                None => {
                    let at = after.map_or(0, |i| i + 1);
                    union.insert(at, label.clone());
                    after = Some(at);
                }
            }
        }
    }
    union
}

/// Mean of the finite values (NaN when there are none).
pub(crate) fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0f64, 0usize), |(s, n), v| (s + f64::from(v), n + 1));
    if n == 0 {
        f32::NAN
    } else {
        (sum / n as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_made_visible_and_nothing_is_blank() {
        assert_eq!(visible_text(" the\n"), "\u{2423}the\u{21b5}");
        assert_eq!(visible_text(""), "\u{2205}");
        assert_eq!(visible_text("a\u{1}"), "a\\u{1}");
    }
}

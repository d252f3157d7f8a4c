//! Widgets the views share: the heatmap with its colour legend, line charts, the token strip.

pub mod heatmap;
pub mod lines;
pub mod token_strip;

/// Grid marks at the centres of `n` categories (`i + 0.5`), each with the largest power of two
/// that divides its index as its step: egui_plot then labels every category when there is room
/// and thins the labels (every 2nd, 4th, 8th, ...) when there is not. The steps nest, so the
/// labels kept at one density are a subset of those at the next and never overlap.
pub fn category_marks(input: egui_plot::GridInput, n: usize) -> Vec<egui_plot::GridMark> {
    let (lo, hi) = input.bounds;
    let first = lo.floor().max(0.0) as usize;
    let last = (hi.ceil().max(0.0) as usize).min(n);
    (first..last)
        .map(|i| {
            // Index 0 is divisible by everything: give it the widest step there is.
            let step = if i == 0 {
                n.next_power_of_two()
            } else {
                1usize << i.trailing_zeros()
            };
            egui_plot::GridMark {
                value: i as f64 + 0.5,
                step_size: step as f64,
            }
        })
        .collect()
}

/// The label of the category a mark sits at, if it sits at one.
pub fn category_label(labels: &[String], value: f64) -> String {
    let i = (value - 0.5).round();
    if (value - 0.5 - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    labels.get(i as usize).cloned().unwrap_or_default()
}

pub use crate::figures::clip_label as short;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_steps_nest_so_thinned_labels_never_overlap() {
        let input = egui_plot::GridInput {
            bounds: (0.0, 40.0),
            base_step_size: 1.0,
        };
        let marks = category_marks(input, 40);
        assert_eq!(marks.len(), 40);
        for m in &marks {
            let i = (m.value - 0.5) as usize;
            // A mark shown at step s is at a multiple of s, and so of every smaller step.
            assert_eq!(i % m.step_size as usize, 0);
        }
        assert_eq!(category_label(&["a".into(), "b".into()], 1.5), "b");
        assert_eq!(category_label(&["a".into()], 1.0), "");
    }
}

//! The token strip: the prompt's tokens as chips (whitespace made visible), coloured by a
//! per-token value; hover tells the token's details, click selects it.

use egui::{Button, RichText, Stroke, Ui};

use crate::figures::{ColorScale, Rgb};
use crate::ui::theme;

/// One chip.
#[derive(Debug, Clone)]
pub struct Chip {
    pub label: String,
    pub value: Option<f32>,
}

/// What the user did to the strip.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripEvents {
    pub clicked: Option<usize>,
    pub hovered: Option<usize>,
}

/// Draw the chips wrapped over lines; `scale` colours them by value.
pub fn token_strip_ui(
    ui: &mut Ui,
    chips: &[Chip],
    tooltip: &dyn Fn(usize) -> String,
    scale: Option<&ColorScale>,
    selected: Option<usize>,
) -> StripEvents {
    let mut events = StripEvents::default();
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(3.0, 3.0);
        for (i, chip) in chips.iter().enumerate() {
            let bg: Option<Rgb> = match (scale, chip.value) {
                (Some(s), Some(v)) => Some(s.color(v)),
                _ => None,
            };
            let mut text = RichText::new(&chip.label).monospace();
            if let Some(bg) = bg {
                text = text.color(theme::text_on(bg));
            }
            let mut button = Button::new(text);
            if let Some(bg) = bg {
                button = button.fill(theme::color(bg));
            }
            if selected == Some(i) {
                button = button.stroke(Stroke::new(2.5, theme::SELECTED));
            }
            let r = ui.add(button).on_hover_ui(|ui| {
                ui.label(tooltip(i));
            });
            if r.clicked() {
                events.clicked = Some(i);
            }
            if r.hovered() {
                events.hovered = Some(i);
            }
        }
    });
    events
}

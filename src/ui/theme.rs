//! Colours and fonts of the app, from one place: the figures' colormaps and palette turned into
//! egui colours, and the bundled font as a fallback for the glyphs that make whitespace visible.

use egui::Color32;

use crate::figures::Rgb;

pub fn color(c: Rgb) -> Color32 {
    Color32::from_rgb(c[0], c[1], c[2])
}

/// Black or white, whichever reads on `background`.
pub fn text_on(background: Rgb) -> Color32 {
    let l = 0.2126 * f32::from(background[0])
        + 0.7152 * f32::from(background[1])
        + 0.0722 * f32::from(background[2]);
    if l > 140.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// Errors.
pub const ERROR: Color32 = Color32::from_rgb(0xD5, 0x5E, 0x00);
/// What a researcher should know about a model (not fatal).
pub const WARNING: Color32 = Color32::from_rgb(0xE6, 0x9F, 0x00);
/// The selected token chip.
pub const SELECTED: Color32 = Color32::from_rgb(0xF0, 0xE4, 0x42);
/// Outlines of the selected row or column in a heatmap: red-orange, a hue viridis never takes.
pub const OUTLINE: Color32 = Color32::from_rgb(0xFF, 0x4B, 0x2B);

/// egui's default fonts with DejaVu Sans (the figures' font, bundled for PNG export) behind
/// them, so `␣`, `↵` and the like render instead of boxes.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        "dejavu".into(),
        std::sync::Arc::new(egui::FontData::from_static(crate::export::FONT)),
    );
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push("dejavu".into());
    }
    ctx.set_fonts(fonts);
}

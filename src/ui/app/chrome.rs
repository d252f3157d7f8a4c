//! The window's fixed panels: menu bar, status bar, prompt box, token strip, next-token
//! predictions. They draw what the app holds and push [`Command`]s; they start no work.

use super::*;

impl App {
    pub(super) fn menu_bar(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open model file...").clicked() {
                    self.commands.push(Command::Pick {
                        slot: Slot::A,
                        folder: false,
                    });
                }
                if ui.button("Open model folder...").clicked() {
                    self.commands.push(Command::Pick {
                        slot: Slot::A,
                        folder: true,
                    });
                }
                ui.separator();
                if ui.button("Compare with file...").clicked() {
                    self.commands.push(Command::Pick {
                        slot: Slot::B,
                        folder: false,
                    });
                }
                if ui.button("Compare with folder...").clicked() {
                    self.commands.push(Command::Pick {
                        slot: Slot::B,
                        folder: true,
                    });
                }
                if ui
                    .add_enabled(self.compare_mode(), egui::Button::new("Close B"))
                    .clicked()
                {
                    self.commands.push(Command::CloseB);
                }
                ui.separator();
                if ui
                    .button("Export all views...")
                    .on_hover_text(
                        "Every view in SVG, PNG, CSV and JSON, and the traces, into a folder",
                    )
                    .clicked()
                {
                    self.commands.push(Command::Export {
                        kind: None,
                        format: Format::Svg,
                    });
                }
                ui.separator();
                ui.menu_button("Open recent", |ui| {
                    if self.persisted.recent.is_empty() {
                        ui.label("nothing yet");
                    }
                    for path in self.persisted.recent.clone() {
                        let name = path.display().to_string();
                        if ui
                            .button(&name)
                            .on_hover_text("Open as A (shift-click: as B)")
                            .clicked()
                        {
                            let slot = if ui.input(|i| i.modifiers.shift) {
                                Slot::B
                            } else {
                                Slot::A
                            };
                            self.commands.push(Command::Open { slot, path });
                        }
                    }
                });
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Examples", |ui| {
                for (label, file) in [
                    ("Block AttnRes demo", "block.safetensors"),
                    ("Full AttnRes demo", "full.safetensors"),
                    ("PreNorm baseline demo", "baseline.safetensors"),
                ] {
                    if ui.button(label).clicked() {
                        self.commands.push(Command::Open {
                            slot: Slot::A,
                            path: demo_model(file),
                        });
                    }
                }
                if ui
                    .button("Compare Block AttnRes with its baseline")
                    .clicked()
                {
                    self.commands.push(Command::Open {
                        slot: Slot::A,
                        path: demo_model("block.safetensors"),
                    });
                    self.commands.push(Command::Open {
                        slot: Slot::B,
                        path: demo_model("baseline.safetensors"),
                    });
                }
                ui.separator();
                match cached_smollm2() {
                    Some(path) => {
                        if ui.button("SmolLM2-135M-Instruct (GGUF)").clicked() {
                            self.commands.push(Command::Open {
                                slot: Slot::A,
                                path,
                            });
                        }
                    }
                    None => {
                        ui.add_enabled(false, egui::Button::new("SmolLM2-135M-Instruct"))
                            .on_disabled_hover_text("run scripts/fetch-smollm2.sh to fetch it");
                    }
                }
            });
            ui.menu_button("View", |ui| {
                for pane in Pane::ALL {
                    let mut shown = layout::is_shown(&self.persisted.layout, pane);
                    if ui.checkbox(&mut shown, pane.title()).changed() {
                        self.commands.push(Command::SetPaneShown(pane, shown));
                    }
                }
                ui.separator();
                if ui.button("Reset layout and toggles").clicked() {
                    self.commands.push(Command::ResetLayout);
                }
            });
        });
    }

    pub(super) fn status_bar(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            match &self.tracer {
                Some(t @ Tracer::Cpu { why }) => {
                    ui.label(t.describe()).on_hover_text(why);
                }
                Some(t) => {
                    ui.label(t.describe());
                }
                None => {
                    ui.spinner();
                    ui.label("preparing the GPU engine...");
                }
            }
            for slot in [Slot::A, Slot::B] {
                let s = &self.slots[slot.index()];
                let Some(info) = &s.info else { continue };
                ui.separator();
                let mut text = format!("{}: {}", slot.name(), info.name);
                if let Some(t) = &s.trace {
                    text += &format!(
                        " | {} tokens | {:.1} ms",
                        t.trace.tokens.len(),
                        t.milliseconds
                    );
                }
                ui.label(text)
                    .on_hover_text(format!("{}\n{}", info.path.display(), info.summary));
            }
            if let Some(note) = &self.export_note {
                ui.separator();
                ui.label(note);
            }
            for progress in [
                &self.worker.load_progress,
                &self.worker.grads_progress,
                &self.export_progress,
            ] {
                let state: Option<ProgressState> =
                    progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(p) = state {
                    ui.separator();
                    let bar = egui::ProgressBar::new(if p.total > 0 {
                        p.done as f32 / p.total as f32
                    } else {
                        0.0
                    })
                    .desired_width(160.0)
                    .text(format!("{} {}/{}", p.stage, p.done, p.total));
                    ui.add(if p.total == 0 { bar.animate(true) } else { bar });
                }
            }
        });
    }

    /// The prompt box and what is said under it.
    pub(super) fn prompt_ui(&mut self, ui: &mut egui::Ui) {
        let edit = egui::TextEdit::multiline(&mut self.persisted.prompt)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("Type a prompt: every edit re-traces")
            .id_salt("prompt");
        let output = edit.show(ui);
        let response = output.response.response.clone();
        if self.focus_prompt {
            response.request_focus();
            // Typing continues the prompt, as it would in any editor just opened.
            let mut state = output.state;
            let end = egui::text::CCursor::new(self.persisted.prompt.chars().count());
            state
                .cursor
                .set_char_range(Some(egui::text::CCursorRange::one(end)));
            state.store(ui.ctx(), response.id);
            self.focus_prompt = false;
        }
        if response.changed() {
            self.request_trace();
        }
        if self.persisted.prompt.is_empty() {
            ui.colored_label(
                theme::ERROR,
                "The prompt is empty: type at least one character to trace it.",
            );
        }
        for slot in [Slot::A, Slot::B] {
            let s = &self.slots[slot.index()];
            if let (Some(e), Some(info)) = (&s.error, &s.info) {
                if !self.persisted.prompt.is_empty() {
                    ui.colored_label(
                        theme::ERROR,
                        format!("{} ({}): {e}", slot.name(), info.name),
                    );
                }
            }
            // What was noticed on opening (NaN weights, dequantised GGUF, byte-level tokens):
            // every number on screen depends on it.
            if let Some(info) = &s.info {
                for note in &info.notes {
                    ui.label(
                        egui::RichText::new(format!("{} ({}): {note}", slot.name(), info.name))
                            .small()
                            .color(theme::WARNING),
                    );
                }
            }
            if let Some(path) = &s.opening {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("opening {} as {}...", path.display(), slot.name()));
                });
            }
        }
    }

    pub(super) fn messages_ui(&mut self, ui: &mut egui::Ui) {
        let mut dismissed = None;
        for (i, m) in self.messages.iter().enumerate() {
            ui.horizontal(|ui| {
                ui.colored_label(theme::ERROR, m);
                if ui.small_button("dismiss").clicked() {
                    dismissed = Some(i);
                }
            });
        }
        if let Some(i) = dismissed {
            self.messages.remove(i);
        }
    }

    /// The token strip of A (and B when its tokens differ).
    pub(super) fn tokens_ui(&mut self, ui: &mut egui::Ui) {
        let Some(a) = self.trace(Slot::A).cloned() else {
            return;
        };
        let b = self.trace(Slot::B).cloned();
        let metric = self.persisted.settings.strip_metric;
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("colours the tokens")
                .selected_text(metric.label())
                .show_ui(ui, |ui| {
                    for m in StripMetric::ALL {
                        ui.selectable_value(&mut self.persisted.settings.strip_metric, m, m.label());
                    }
                });
            ui.label("(click a token to select it; arrow keys move the selection when the prompt box is not focused)");
        });
        egui::ScrollArea::vertical().id_salt("strip").max_height(110.0).show(ui, |ui| {
            let clicked = self.strip(ui, Slot::A, &a, self.selection.token);
            if let Some(t) = clicked {
                self.selection.token = t;
            }
            if let Some(b) = &b {
                if !same_tokens(&a, b) {
                    ui.colored_label(
                        theme::ERROR,
                        "B tokenises the prompt differently: its tokens are aligned to A's by byte span",
                    );
                    let tb = align_token(&a, b, self.selection.token);
                    if let Some(t) = self.strip(ui, Slot::B, b, tb) {
                        self.selection.token = align_token(b, &a, t);
                    }
                }
            }
        });
    }

    /// The selected position's next-token predictions and the prompt's loss, per model.
    pub(super) fn predictions_panel(&self, ui: &mut egui::Ui) {
        let Some(a) = self.trace(Slot::A) else {
            ui.label("no trace yet");
            return;
        };
        self.predictions_at(ui, a, Slot::A, self.selection.token);
        if let Some(b) = self.trace(Slot::B) {
            ui.separator();
            self.predictions_at(ui, b, Slot::B, align_token(a, b, self.selection.token));
        }
    }

    fn strip(
        &self,
        ui: &mut egui::Ui,
        slot: Slot,
        trace: &Trace,
        selected: usize,
    ) -> Option<usize> {
        let metric = self.persisted.settings.strip_metric;
        let values = metric.values(trace, self.selection.op);
        let finite: Vec<f32> = values.iter().flatten().copied().collect();
        let scale =
            (metric != StripMetric::None).then(|| ColorScale::fit(&finite, metric.log_scale()));
        let chips: Vec<Chip> = trace
            .tokens
            .iter()
            .zip(&values)
            .map(|(tok, v)| Chip {
                label: visible_text(&tok.text),
                value: *v,
            })
            .collect();
        // Written only for the chip under the pointer, not for every token every frame.
        let tooltip = |i: usize| -> String {
            let (tok, v) = (&trace.tokens[i], values[i]);
            let surprise = trace.token_nll.get(i).copied().flatten();
            format!(
                "{} token {i}: id {}, piece {:?}, bytes {}..{}\nsurprise -ln p: {}\n{}: {}",
                slot.name(),
                tok.id,
                tok.piece,
                tok.start,
                tok.end,
                surprise.map_or("n/a (first token)".into(), format_value),
                metric.label(),
                v.map_or("n/a".into(), format_value),
            )
        };
        ui.push_id(("strip", slot.index()), |ui| {
            token_strip_ui(ui, &chips, &tooltip, scale.as_ref(), Some(selected))
        })
        .inner
        .clicked
    }

    fn predictions_at(&self, ui: &mut egui::Ui, trace: &Trace, slot: Slot, t: usize) {
        let tok = trace
            .tokens
            .get(t)
            .map(|x| visible_text(&x.text))
            .unwrap_or_default();
        ui.label(
            egui::RichText::new(format!("{}: after token {t} \"{tok}\"", slot.name())).strong(),
        );
        if let Some(preds) = trace.topk.get(t) {
            egui::Grid::new(("topk", slot.index()))
                .num_columns(2)
                .show(ui, |ui| {
                    for p in preds {
                        ui.label(egui::RichText::new(visible_text(&p.text)).monospace());
                        ui.add(
                            egui::ProgressBar::new(p.prob)
                                .desired_width(110.0)
                                .text(format!("{:.3}", p.prob)),
                        )
                        .on_hover_text(format!("id {}, p = {:e}", p.id, p.prob));
                        ui.end_row();
                    }
                });
        }
        let loss = trace
            .loss
            .map_or("n/a (one token)".into(), |l| format!("{l:.4} nats"));
        ui.label(format!("prompt loss: {loss}"))
            .on_hover_text("mean next-token cross-entropy over the prompt");
    }
}

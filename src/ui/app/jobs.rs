//! Work the app starts on threads of its own: file dialogs, exports, the backward. What they
//! produce comes back over channels the frame polls.

use super::*;

impl App {
    /// A file dialog on a thread of its own (a native dialog blocks its caller until closed);
    /// what the user picks comes back as an open command.
    pub(super) fn pick(&mut self, ctx: &egui::Context, slot: Slot, folder: bool) {
        let tx = self.picked_tx.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("depthlens-file-dialog".into())
            .spawn(move || {
                let dialog = rfd::FileDialog::new()
                    .set_title(format!("Open model {}", slot.name()))
                    .add_filter("checkpoints", &["safetensors", "gguf", "json"]);
                let picked = if folder {
                    dialog.pick_folder()
                } else {
                    dialog.pick_file()
                };
                if let Some(path) = picked {
                    // A config.json picked means its folder.
                    let path = match path.file_name() {
                        Some(n) if n == "config.json" => {
                            path.parent().map(Path::to_path_buf).unwrap_or(path)
                        }
                        _ => path,
                    };
                    let _ = tx.send((slot, path));
                    ctx.request_repaint();
                }
            });
        if let Err(e) = spawned {
            self.messages
                .push(format!("cannot open a file dialog: {e}"));
        }
    }

    /// Export on a thread of its own (dialog, rendering, writing), from the traces, selection
    /// and toggles on screen now; what happened comes back as a note or an error.
    pub(super) fn export(
        &mut self,
        ctx: &egui::Context,
        kind: Option<FigureKind>,
        format: Format,
        path: Option<PathBuf>,
    ) {
        type Exported = (
            String,
            Arc<Trace>,
            Option<Arc<Trace>>,
            Option<crate::figures::TrainingLog>,
        );
        let models: Vec<Exported> = self
            .slots
            .iter()
            .filter_map(|s| {
                let t = s.trace.as_ref()?;
                let info = s.info.as_ref()?;
                let grads = s.grads.as_ref().map(|g| g.trace.clone());
                let training = info.training.clone().and_then(Result::ok);
                Some((info.name.clone(), t.trace.clone(), grads, training))
            })
            .collect();
        if models.is_empty() {
            self.messages
                .push("nothing to export yet: open a model and type a prompt".into());
            return;
        }
        let (selection, toggles) = (self.selection, self.persisted.settings.toggles.clone());
        let (tx, ctx) = (self.exported_tx.clone(), ctx.clone());
        let progress_state = self.export_progress.clone();
        let spawned = std::thread::Builder::new()
            .name("depthlens-export".into())
            .spawn(move || {
                let target = path.or_else(|| {
                    let dialog = rfd::FileDialog::new();
                    match kind {
                        Some(k) => dialog
                            .set_title(format!("Export {}", k.name()))
                            .set_file_name(format!("{}.{}", k.name(), format.extension()))
                            .add_filter(format.extension(), &[format.extension()])
                            .save_file(),
                        None => dialog
                            .set_title("Export every view into a folder")
                            .pick_folder(),
                    }
                });
                let Some(target) = target else { return };
                let view = ViewInput {
                    models: models
                        .iter()
                        .map(
                            |(name, trace, grads, training)| crate::figures::ModelInput {
                                name,
                                trace,
                                grads: grads.as_deref(),
                                training: training.as_ref(),
                            },
                        )
                        .collect(),
                    selection,
                    toggles,
                };
                // The save dialog has asked before overwriting; a folder's files are replaced.
                let result = match kind {
                    Some(k) => export_views::render(k, format, &view, 2.0)
                        .and_then(|bytes| export_views::write_atomically(&target, &bytes, true))
                        .map(|()| format!("wrote {}", target.display())),
                    None => {
                        let progress = crate::ui::worker::SharedProgress::new(
                            progress_state,
                            Arc::new({
                                let ctx = ctx.clone();
                                move || ctx.request_repaint()
                            }),
                            "export all",
                        );
                        export_views::export_all(&target, &view, 2.0, true, &progress).map(
                            |(written, skipped)| {
                                let mut note = format!(
                                    "wrote {} files into {}",
                                    written.len(),
                                    target.display()
                                );
                                if !skipped.is_empty() {
                                    note += &format!(" (skipped {})", skipped.join("; "));
                                }
                                note
                            },
                        )
                    }
                };
                let _ = tx.send(result.map_err(|e| format!("export failed: {e}")));
                ctx.request_repaint();
            });
        if let Err(e) = spawned {
            self.messages.push(format!("cannot start the export: {e}"));
        }
    }

    pub(super) fn start_gradients(&mut self) {
        if let Some(job) = self.gradients.take() {
            job.cancel.store(true, Ordering::Relaxed);
        }
        self.gradients_error = None;
        let models = self.slots.iter().filter(|s| s.info.is_some()).count();
        if models == 0 || self.persisted.prompt.is_empty() {
            self.gradients_error = Some("open a model and type a prompt first".into());
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.generation += 1;
        self.gradients = Some(GradientsJob {
            generation: self.generation,
            cancel: cancel.clone(),
            pending: models,
        });
        self.worker.send(Job::Gradients {
            generation: self.generation,
            prompt: self.persisted.prompt.clone(),
            cancel,
        });
        // The trace of the same generation keeps the views' prompt in step.
        self.requested_prompt = Some(self.persisted.prompt.clone());
        self.worker.send(Job::Trace {
            generation: self.generation,
            prompt: self.persisted.prompt.clone(),
        });
    }
}

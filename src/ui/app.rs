//! The app: its state, the frame, and the commands that menus and views ask for. State that
//! persists (recent files, layout, toggles, the prompt) is kept apart from runtime state
//! (the worker, traces, in-flight jobs). Menus and views push [`Command`]s, run after the frame
//! is drawn, so drawing code never opens files or starts work itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layout::{self, Behavior};
use super::theme;
use super::views::{FigureKey, Pane, StripMetric, ViewCx, ViewSettings};
use super::widgets::token_strip::{token_strip_ui, Chip};
use super::worker::{
    Job, ModelInfo, ProgressState, Reply, SharedDevice, Slot, Traced, Tracer, TracerChoice, Worker,
};
use crate::export::views::{self as export_views, FigureKind, Format, ViewInput};
use crate::figures::colormap::format_value;
pub use crate::figures::Selection;
use crate::figures::{
    align_token, same_tokens, view_figures, visible_text, ColorScale, ModelInput, ViewFigures,
};
use crate::trace::Trace;

/// Key of the app's state in eframe's storage.
const STORAGE_KEY: &str = "depthlens";
const MAX_RECENT: usize = 10;

/// The bundled Block AttnRes demo model, opened when no checkpoint is given.
pub fn demo_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/demo")
        .join(name)
}

/// Where `scripts/fetch-smollm2.sh` caches SmolLM2-135M, if it has.
pub fn cached_smollm2() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/smollm2");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// What the app opens at start.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Model A (default: the bundled Block AttnRes demo model).
    pub checkpoint: Option<PathBuf>,
    /// Model B, compared against A.
    pub compare: Option<PathBuf>,
    /// The prompt (default: the one typed last time, else a line of Shakespeare).
    pub prompt: Option<String>,
    /// Start from the default layout and settings, ignoring saved state (tests, benchmarks).
    pub fresh_state: bool,
    pub tracer: TracerChoice,
}

pub const DEFAULT_PROMPT: &str = "To be, or not to be, that is the question:";

/// What menus and views ask the app to do, after the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Open {
        slot: Slot,
        path: PathBuf,
    },
    /// A file (or folder) dialog for a slot.
    Pick {
        slot: Slot,
        folder: bool,
    },
    CloseB,
    ComputeGradients,
    CancelGradients,
    ResetLayout,
    SetPaneShown(Pane, bool),
    /// Save a view (`kind`) or, with `None`, every view in every format into a folder; a save
    /// dialog asks where.
    Export {
        kind: Option<FigureKind>,
        format: Format,
    },
    /// Export to a known place (tests; the dialog's answer).
    ExportTo {
        kind: Option<FigureKind>,
        format: Format,
        path: PathBuf,
    },
}

/// What persists between runs.
#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub recent: Vec<PathBuf>,
    pub prompt: String,
    pub settings: ViewSettings,
    pub layout: egui_tiles::Tree<Pane>,
}

impl Default for Persisted {
    fn default() -> Self {
        Self {
            recent: Vec::new(),
            prompt: DEFAULT_PROMPT.into(),
            settings: ViewSettings::default(),
            layout: layout::default_layout(),
        }
    }
}

/// One open model and what came back for it.
#[derive(Default)]
pub struct SlotState {
    pub info: Option<ModelInfo>,
    pub trace: Option<Traced>,
    /// The trace request's error (an empty or too long prompt, ...), shown under the prompt.
    pub error: Option<String>,
    /// A file being opened into this slot.
    pub opening: Option<PathBuf>,
    pub grads: Option<Traced>,
}

struct GradientsJob {
    generation: u64,
    cancel: Arc<AtomicBool>,
    pending: usize,
}

pub struct App {
    pub persisted: Persisted,
    worker: Worker,
    pub tracer: Option<Tracer>,
    pub slots: [SlotState; 2],
    /// Errors shown in the window until dismissed (a file that would not open, ...).
    pub messages: Vec<String>,
    pub selection: Selection,
    /// The newest trace request; replies to older ones are dropped.
    generation: u64,
    /// The prompt of the newest trace request.
    requested_prompt: Option<String>,
    gradients: Option<GradientsJob>,
    pub gradients_error: Option<String>,
    commands: Vec<Command>,
    /// What finished exports said (`Ok`: what was written).
    exported_tx: std::sync::mpsc::Sender<Result<String, String>>,
    exported_rx: std::sync::mpsc::Receiver<Result<String, String>>,
    /// The last export's report, in the status bar.
    pub export_note: Option<String>,
    pub export_progress: Arc<std::sync::Mutex<Option<ProgressState>>>,
    /// Paths picked in file dialogs.
    picked_tx: std::sync::mpsc::Sender<(Slot, PathBuf)>,
    picked_rx: std::sync::mpsc::Receiver<(Slot, PathBuf)>,
    figures: ViewFigures,
    figure_key: FigureKey,
    focus_prompt: bool,
}

impl App {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        theme::install_fonts(&cc.egui_ctx);
        let mut persisted: Persisted = match (&cc.storage, options.fresh_state) {
            (Some(storage), false) => eframe::get_value(*storage, STORAGE_KEY).unwrap_or_default(),
            _ => Persisted::default(),
        };
        if !layout::usable(&persisted.layout) {
            persisted.layout = layout::default_layout();
        }
        if let Some(p) = options.prompt {
            persisted.prompt = p;
        }
        let device = cc.wgpu_render_state.as_ref().map(|rs| SharedDevice {
            device: rs.device.clone(),
            queue: rs.queue.clone(),
            info: rs.adapter.get_info(),
        });
        let ctx = cc.egui_ctx.clone();
        let worker = Worker::spawn(
            device,
            options.tracer,
            Arc::new(move || ctx.request_repaint()),
        );
        let (picked_tx, picked_rx) = std::sync::mpsc::channel();
        let (exported_tx, exported_rx) = std::sync::mpsc::channel();
        let mut app = Self {
            persisted,
            worker,
            tracer: None,
            slots: Default::default(),
            messages: Vec::new(),
            selection: Selection::default(),
            generation: 0,
            requested_prompt: None,
            gradients: None,
            gradients_error: None,
            commands: Vec::new(),
            exported_tx,
            exported_rx,
            export_note: None,
            export_progress: Default::default(),
            picked_tx,
            picked_rx,
            figures: ViewFigures::default(),
            figure_key: Default::default(),
            focus_prompt: true,
        };
        let a = options
            .checkpoint
            .unwrap_or_else(|| demo_model("block.safetensors"));
        app.open(Slot::A, a);
        if let Some(b) = options.compare {
            app.open(Slot::B, b);
        }
        app
    }

    /// Open a checkpoint into a slot (off the UI thread); the model open there stays until the
    /// new one has opened.
    pub fn open(&mut self, slot: Slot, path: PathBuf) {
        self.slots[slot.index()].opening = Some(path.clone());
        self.worker.send(Job::Open { slot, path });
    }

    /// Queue a command as a menu or view would (tests drive the app through this seam).
    pub fn run_command(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Replace the prompt, as typing would, and trace it.
    pub fn set_prompt(&mut self, prompt: &str) {
        self.persisted.prompt = prompt.to_string();
        // The prompt box takes the keyboard, with its cursor at the end.
        self.focus_prompt = true;
        self.request_trace();
    }

    /// The trace on screen for a slot.
    pub fn trace(&self, slot: Slot) -> Option<&Arc<Trace>> {
        self.slots[slot.index()].trace.as_ref().map(|t| &t.trace)
    }

    /// The figures the views draw now.
    pub fn figures(&self) -> &ViewFigures {
        &self.figures
    }

    /// Whether work is under way that will change what is on screen.
    pub fn busy(&self) -> bool {
        self.tracer.is_none()
            || self.slots.iter().any(|s| s.opening.is_some())
            || self.requested_prompt.is_some()
            || self.gradients.is_some()
    }

    pub fn compare_mode(&self) -> bool {
        self.slots[1].info.is_some()
    }

    fn request_trace(&mut self) {
        self.generation += 1;
        let prompt = self.persisted.prompt.clone();
        if prompt.is_empty() {
            // Nothing to trace; say so under the prompt box and keep the last result on screen.
            self.requested_prompt = None;
            return;
        }
        self.requested_prompt = Some(prompt.clone());
        self.worker.send(Job::Trace {
            generation: self.generation,
            prompt,
        });
    }

    fn remember(&mut self, path: &Path) {
        let recent = &mut self.persisted.recent;
        recent.retain(|p| p != path);
        recent.insert(0, path.to_path_buf());
        recent.truncate(MAX_RECENT);
    }

    fn handle(&mut self, reply: Reply) {
        match reply {
            Reply::TracerReady(t) => self.tracer = Some(t),
            Reply::Opened { slot, info } => {
                let s = &mut self.slots[slot.index()];
                s.opening = None;
                s.error = None;
                s.grads = None;
                s.trace = None;
                let path = info.path.clone();
                s.info = Some(*info);
                self.remember(&path);
                self.request_trace();
            }
            Reply::OpenFailed { slot, path, error } => {
                self.slots[slot.index()].opening = None;
                let kept = match &self.slots[slot.index()].info {
                    Some(i) => format!(" {} stays open.", i.name),
                    None => String::new(),
                };
                self.messages
                    .push(format!("Cannot open {}: {error}.{kept}", path.display()));
            }
            Reply::Traced {
                slot,
                generation,
                result,
            } => {
                if generation < self.generation {
                    return;
                }
                let s = &mut self.slots[slot.index()];
                match result {
                    Ok(t) => {
                        s.trace = Some(t);
                        s.error = None;
                    }
                    Err(e) => s.error = Some(e),
                }
                let open = self.slots.iter().filter(|s| s.info.is_some()).count();
                let answered = self
                    .slots
                    .iter()
                    .filter(|s| s.info.is_some() && s.opening.is_none())
                    .count();
                if slot.index() + 1 >= open.min(answered).max(1) {
                    self.requested_prompt = None;
                }
                self.clamp_selection();
            }
            Reply::Gradients {
                slot,
                generation,
                result,
            } => {
                let Some(job) = &mut self.gradients else {
                    return;
                };
                if job.generation != generation {
                    return;
                }
                job.pending = job.pending.saturating_sub(1);
                match result {
                    Ok(t) => self.slots[slot.index()].grads = Some(t),
                    Err(e) if !job.cancel.load(Ordering::Relaxed) => {
                        self.gradients_error = Some(format!("gradients of {}: {e}", slot.name()));
                    }
                    Err(_) => {}
                }
                if job.pending == 0 {
                    self.gradients = None;
                }
            }
        }
    }

    fn clamp_selection(&mut self) {
        if let Some(t) = self.trace(Slot::A) {
            let (n_tokens, n_ops) = (t.tokens.len(), t.ops.len());
            self.selection.token = self.selection.token.min(n_tokens.saturating_sub(1));
            self.selection.op = self.selection.op.min(n_ops.saturating_sub(1));
        }
    }

    fn run_commands(&mut self, ctx: &egui::Context) {
        for command in std::mem::take(&mut self.commands) {
            match command {
                Command::Open { slot, path } => self.open(slot, path),
                Command::Pick { slot, folder } => self.pick(ctx, slot, folder),
                Command::CloseB => {
                    self.worker.send(Job::Close { slot: Slot::B });
                    self.slots[1] = SlotState::default();
                }
                Command::ComputeGradients => self.start_gradients(),
                Command::CancelGradients => {
                    if let Some(job) = self.gradients.take() {
                        job.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Command::ResetLayout => {
                    self.persisted.layout = layout::default_layout();
                    self.persisted.settings = ViewSettings::default();
                }
                Command::SetPaneShown(pane, shown) => {
                    layout::set_shown(&mut self.persisted.layout, pane, shown)
                }
                Command::Export { kind, format } => self.export(ctx, kind, format, None),
                Command::ExportTo { kind, format, path } => {
                    self.export(ctx, kind, format, Some(path))
                }
            }
        }
        ctx.request_repaint_after(std::time::Duration::from_millis(250));
    }

    /// A file dialog on a thread of its own (a native dialog blocks its caller until closed);
    /// what the user picks comes back as an open command.
    fn pick(&mut self, ctx: &egui::Context, slot: Slot, folder: bool) {
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
    fn export(
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
                        let progress = super::worker::SharedProgress::new(
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

    fn start_gradients(&mut self) {
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

    fn rebuild_figures(&mut self) {
        let inputs: [Option<ModelInput>; 2] = [0, 1].map(|i| {
            let s = &self.slots[i];
            let (info, trace) = (s.info.as_ref()?, s.trace.as_ref()?);
            Some(ModelInput {
                name: &info.name,
                trace: &trace.trace,
                grads: s.grads.as_ref().map(|g| g.trace.as_ref()),
                training: info.training.as_ref().and_then(|t| t.as_ref().ok()),
            })
        });
        let toggles = &self.persisted.settings.toggles;
        let key = FigureKey::of(&inputs, self.selection, toggles);
        if key != self.figure_key {
            self.figures = view_figures(inputs, self.selection, toggles);
            self.figure_key = key;
        }
    }

    fn keyboard(&mut self, ctx: &egui::Context) {
        // Arrows move the selection unless a text box has them.
        if ctx.memory(|m| m.focused().is_some()) {
            return;
        }
        let (left, right, up, down) = ctx.input(|i| {
            (
                i.key_pressed(egui::Key::ArrowLeft),
                i.key_pressed(egui::Key::ArrowRight),
                i.key_pressed(egui::Key::ArrowUp),
                i.key_pressed(egui::Key::ArrowDown),
            )
        });
        if left {
            self.selection.token = self.selection.token.saturating_sub(1);
        }
        if right {
            self.selection.token += 1;
        }
        if up {
            self.selection.op = self.selection.op.saturating_sub(1);
        }
        if down {
            self.selection.op += 1;
        }
        self.clamp_selection();
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        // The first file dropped opens as A; a second one dropped with it as B.
        for (path, slot) in dropped.into_iter().zip([Slot::A, Slot::B]) {
            self.open(slot, path);
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
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

    fn status_bar(&self, ui: &mut egui::Ui) {
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
    fn prompt_ui(&mut self, ui: &mut egui::Ui) {
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
            if let Some(path) = &s.opening {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("opening {} as {}...", path.display(), slot.name()));
                });
            }
        }
    }

    fn messages_ui(&mut self, ui: &mut egui::Ui) {
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
    fn tokens_ui(&mut self, ui: &mut egui::Ui) {
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
    fn predictions_panel(&self, ui: &mut egui::Ui) {
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
            .enumerate()
            .map(|(i, (tok, v))| {
                let surprise = trace.token_nll.get(i).copied().flatten();
                Chip {
                    label: visible_text(&tok.text),
                    tooltip: format!(
                        "{} token {i}: id {}, piece {:?}, bytes {}..{}\nsurprise -ln p: {}\n{}: {}",
                        slot.name(),
                        tok.id,
                        tok.piece,
                        tok.start,
                        tok.end,
                        surprise.map_or("n/a (first token)".into(), format_value),
                        metric.label(),
                        v.map_or("n/a".into(), format_value),
                    ),
                    value: *v,
                }
            })
            .collect();
        ui.push_id(("strip", slot.index()), |ui| {
            token_strip_ui(ui, &chips, scale.as_ref(), Some(selected))
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

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        for reply in self.worker.poll() {
            self.handle(reply);
        }
        while let Ok((slot, path)) = self.picked_rx.try_recv() {
            self.open(slot, path);
        }
        while let Ok(result) = self.exported_rx.try_recv() {
            match result {
                Ok(note) => self.export_note = Some(note),
                Err(e) => self.messages.push(e),
            }
        }
        self.dropped_files(&ctx);
        self.keyboard(&ctx);
        self.rebuild_figures();
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::top("prompt").resizable(false).show(ui, |ui| {
            ui.add_space(4.0);
            self.messages_ui(ui);
            self.prompt_ui(ui);
            ui.add_space(2.0);
            self.tokens_ui(ui);
            ui.add_space(4.0);
        });
        egui::Panel::right("predictions")
            .resizable(false)
            .exact_size(230.0)
            .show(ui, |ui| {
                ui.add_space(4.0);
                self.predictions_panel(ui);
            });
        egui::CentralPanel::default().show(ui, |ui| {
            let a_trace = self.trace(Slot::A).cloned();
            let b_trace = self.trace(Slot::B).cloned();
            let b_to_a = move |t: usize| match (&a_trace, &b_trace) {
                (Some(a), Some(b)) => align_token(b, a, t),
                _ => t,
            };
            let running = self.gradients.as_ref().map(|_| {
                let p = self
                    .worker
                    .grads_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                p.map_or("backward...".to_string(), |p| {
                    format!("{} {}/{}", p.stage, p.done, p.total)
                })
            });
            let mut selection = self.selection;
            let mut cx = ViewCx {
                figures: &self.figures,
                toggles: &mut self.persisted.settings.toggles,
                selection: &mut selection,
                commands: &mut self.commands,
                b_to_a: &b_to_a,
                gradients_running: running,
                gradients_error: self.gradients_error.clone(),
            };
            let mut behavior = Behavior { cx: &mut cx };
            self.persisted.layout.ui(&mut behavior, ui);
            self.selection = selection;
        });
        self.clamp_selection();
        if !self.commands.is_empty() {
            self.run_commands(&ctx);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.persisted);
    }
}

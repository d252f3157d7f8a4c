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

mod chrome;
mod jobs;

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
                self.clamp_selection();
            }
            Reply::TracesDone { generation } => {
                if generation == self.generation {
                    self.requested_prompt = None;
                }
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

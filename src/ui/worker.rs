//! The worker: a thread that owns the open models, the GPU engine and the reference, and does
//! everything slow (open, trace, backward) so the frame only draws. The UI sends jobs tagged
//! with a generation; the worker runs the newest trace only and the UI drops stale replies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine::{Engine, GpuModel, GpuTraceOptions};
use crate::model::{Checkpoint, TokenizerKind};
use crate::progress::Progress;
use crate::reference::{self, Input, TraceOptions};
use crate::trace::Trace;

/// Model A (the one every view shows) or model B (compared against A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

/// The GPU eframe renders on, offered to the engine so there is one device.
#[derive(Clone)]
pub struct SharedDevice {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
}

/// Where the user wants traces to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TracerChoice {
    /// The GPU engine on a real GPU, the CPU reference on a software adapter.
    #[default]
    Auto,
    Cpu,
    /// The GPU engine even on a software adapter (where it is slower, but runs).
    Gpu,
}

/// Where traces run.
#[derive(Debug, Clone, PartialEq)]
pub enum Tracer {
    /// The WGSL engine on this adapter.
    Gpu(String),
    /// The CPU reference, and why not the GPU.
    Cpu { why: String },
}

impl Tracer {
    /// What the status bar says.
    pub fn describe(&self) -> String {
        match self {
            Tracer::Gpu(adapter) => format!("GPU engine on {adapter}"),
            Tracer::Cpu { .. } => "CPU reference".into(),
        }
    }
}

/// What the UI knows of an open model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// File or folder name.
    pub name: String,
    /// `attnres block (size 4), 8 layers x 128, vocab 2048`.
    pub summary: String,
    /// Quantisation, NaN weights, byte-level tokens, ...
    pub notes: Vec<String>,
    /// The training log the checkpoint carries, parsed (or why it would not parse).
    pub training: Option<Result<crate::figures::TrainingLog, String>>,
}

/// A job for the worker.
pub enum Job {
    Open {
        slot: Slot,
        path: PathBuf,
    },
    Close {
        slot: Slot,
    },
    Trace {
        generation: u64,
        prompt: String,
    },
    /// A forward + backward of every open model (the CPU reference), on its own thread so traces
    /// go on; `cancel` stops it between layers.
    Gradients {
        generation: u64,
        prompt: String,
        cancel: Arc<AtomicBool>,
    },
}

/// A finished trace.
#[derive(Debug, Clone)]
pub struct Traced {
    pub trace: Arc<Trace>,
    pub milliseconds: f64,
}

/// What comes back.
pub enum Reply {
    TracerReady(Tracer),
    Opened {
        slot: Slot,
        info: Box<ModelInfo>,
    },
    OpenFailed {
        slot: Slot,
        path: PathBuf,
        error: String,
    },
    Traced {
        slot: Slot,
        generation: u64,
        result: Result<Traced, String>,
    },
    /// Every open model has answered the trace request of `generation`.
    TracesDone {
        generation: u64,
    },
    Gradients {
        slot: Slot,
        generation: u64,
        result: Result<Traced, String>,
    },
}

/// Long work in progress, as the status bar draws it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressState {
    pub stage: String,
    pub done: u64,
    pub total: u64,
}

/// Writes progress where the UI reads it, wakes the UI, and tells long work when to stop.
pub struct SharedProgress {
    state: Arc<Mutex<Option<ProgressState>>>,
    wake: Arc<dyn Fn() + Send + Sync>,
    label: String,
    cancel: Option<Arc<AtomicBool>>,
}

impl SharedProgress {
    pub fn new(
        state: Arc<Mutex<Option<ProgressState>>>,
        wake: Arc<dyn Fn() + Send + Sync>,
        label: &str,
    ) -> Self {
        Self {
            state,
            wake,
            label: label.to_string(),
            cancel: None,
        }
    }

    fn set(&self, f: impl FnOnce(&mut Option<ProgressState>)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        (self.wake)();
    }
}

impl Progress for SharedProgress {
    fn start(&self, stage: &str, total: u64) {
        let stage = format!("{}: {stage}", self.label);
        self.set(|s| {
            *s = Some(ProgressState {
                stage,
                done: 0,
                total,
            })
        });
    }
    fn advance(&self, done: u64) {
        self.set(|s| {
            if let Some(s) = s {
                s.done = done;
            }
        });
    }
    fn finish(&self) {
        self.set(|s| *s = None);
    }
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

struct OpenModel {
    ckpt: Arc<Checkpoint>,
    gpu: Option<GpuModel>,
}

/// The UI's handle on the worker thread.
pub struct Worker {
    jobs: Sender<Job>,
    replies: Receiver<Reply>,
    /// Load and backward progress (traces are too short to show one).
    pub load_progress: Arc<Mutex<Option<ProgressState>>>,
    pub grads_progress: Arc<Mutex<Option<ProgressState>>>,
}

impl Worker {
    /// Start the worker. `wake` is called whenever something comes back (the app's repaint).
    pub fn spawn(
        device: Option<SharedDevice>,
        choice: TracerChoice,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let (jobs, job_rx) = mpsc::channel();
        let (reply_tx, replies) = mpsc::channel();
        let load_progress = Arc::new(Mutex::new(None));
        let grads_progress = Arc::new(Mutex::new(None));
        let state = WorkerState {
            replies: reply_tx,
            wake,
            load_progress: load_progress.clone(),
            grads_progress: grads_progress.clone(),
            models: [None, None],
            engine: None,
        };
        let spawned = std::thread::Builder::new()
            .name("depthlens-worker".into())
            .spawn(move || state.run(device, choice, job_rx));
        if let Err(e) = spawned {
            // Without a thread nothing can load; say so instead of hanging.
            eprintln!("depthlens: cannot start the worker thread: {e}");
        }
        Self {
            jobs,
            replies,
            load_progress,
            grads_progress,
        }
    }

    pub fn send(&self, job: Job) {
        // A closed channel means the worker died; the UI keeps what it has.
        let _ = self.jobs.send(job);
    }

    /// Every reply that has arrived, without waiting.
    pub fn poll(&self) -> Vec<Reply> {
        self.replies.try_iter().collect()
    }
}

struct WorkerState {
    replies: Sender<Reply>,
    wake: Arc<dyn Fn() + Send + Sync>,
    load_progress: Arc<Mutex<Option<ProgressState>>>,
    grads_progress: Arc<Mutex<Option<ProgressState>>>,
    models: [Option<OpenModel>; 2],
    engine: Option<Engine>,
}

/// Which tracer to use on `device`. A software adapter (lavapipe, llvmpipe) runs the engine's
/// kernels far slower than the CPU reference runs the same model (BENCHMARKS.md: the app's
/// latency), so it only renders there.
fn choose_tracer(device: Option<SharedDevice>, choice: TracerChoice) -> (Tracer, Option<Engine>) {
    if choice == TracerChoice::Cpu {
        return (
            Tracer::Cpu {
                why: "chosen with --device cpu".into(),
            },
            None,
        );
    }
    let Some(d) = device else {
        return (
            Tracer::Cpu {
                why: "no wgpu device".into(),
            },
            None,
        );
    };
    if d.info.device_type == wgpu::DeviceType::Cpu && choice == TracerChoice::Auto {
        return (
            Tracer::Cpu {
                why: format!(
                    "`{}` is a software adapter: the CPU reference is faster there",
                    d.info.name
                ),
            },
            None,
        );
    }
    match Engine::from_device(d.device, d.queue, &d.info) {
        Ok(e) => (Tracer::Gpu(e.adapter_name().to_string()), Some(e)),
        Err(e) => (Tracer::Cpu { why: e.to_string() }, None),
    }
}

impl WorkerState {
    fn reply(&self, r: Reply) {
        let _ = self.replies.send(r);
        (self.wake)();
    }

    fn progress(&self, label: &str, cancel: Option<Arc<AtomicBool>>) -> SharedProgress {
        SharedProgress {
            state: if cancel.is_some() {
                self.grads_progress.clone()
            } else {
                self.load_progress.clone()
            },
            wake: self.wake.clone(),
            label: label.to_string(),
            cancel,
        }
    }

    fn run(mut self, device: Option<SharedDevice>, choice: TracerChoice, jobs: Receiver<Job>) {
        let (tracer, engine) = choose_tracer(device, choice);
        self.engine = engine;
        self.reply(Reply::TracerReady(tracer));
        while let Ok(first) = jobs.recv() {
            // Take everything queued: opens and closes run in order, and only the newest trace
            // and backward request run (typing queues one per keystroke).
            let mut trace = None;
            let mut grads = None;
            for job in std::iter::once(first).chain(jobs.try_iter()) {
                match job {
                    Job::Open { slot, path } => self.open(slot, path),
                    Job::Close { slot } => self.models[slot.index()] = None,
                    Job::Trace { generation, prompt } => trace = Some((generation, prompt)),
                    Job::Gradients {
                        generation,
                        prompt,
                        cancel,
                    } => grads = Some((generation, prompt, cancel)),
                }
            }
            if let Some((generation, prompt, cancel)) = grads {
                self.gradients(generation, prompt, cancel);
            }
            if let Some((generation, prompt)) = trace {
                for slot in [Slot::A, Slot::B] {
                    if self.models[slot.index()].is_some() {
                        let result = self.trace(slot, &prompt);
                        self.reply(Reply::Traced {
                            slot,
                            generation,
                            result,
                        });
                    }
                }
                self.reply(Reply::TracesDone { generation });
            }
        }
    }

    fn open(&mut self, slot: Slot, path: PathBuf) {
        let progress = self.progress(&format!("opening {}", path.display()), None);
        let opened = Checkpoint::open(&path, &progress).map_err(|e| e.to_string());
        let opened = opened.and_then(|ckpt| {
            let gpu = match &self.engine {
                Some(engine) => {
                    progress.start("uploading weights to the GPU", 0);
                    let m = engine
                        .load(&ckpt.config, &ckpt.weights)
                        .map_err(|e| format!("GPU engine: {e}"));
                    progress.finish();
                    Some(m?)
                }
                None => None,
            };
            Ok(OpenModel {
                ckpt: Arc::new(ckpt),
                gpu,
            })
        });
        progress.finish();
        match opened {
            Ok(model) => {
                let info = model_info(&model.ckpt);
                self.models[slot.index()] = Some(model);
                self.reply(Reply::Opened {
                    slot,
                    info: Box::new(info),
                });
            }
            Err(error) => self.reply(Reply::OpenFailed { slot, path, error }),
        }
    }

    fn trace(&self, slot: Slot, prompt: &str) -> Result<Traced, String> {
        let Some(model) = &self.models[slot.index()] else {
            return Err("no model open".into());
        };
        let ckpt = &model.ckpt;
        let started = Instant::now();
        let input = Input::Text(prompt.to_string());
        let trace = match (&self.engine, &model.gpu) {
            (Some(engine), Some(gpu)) => {
                let tokens = reference::tokenize(&ckpt.tokenizer, &ckpt.config, &input)
                    .map_err(|e| e.to_string())?;
                let mut trace = engine
                    .trace(gpu, &ckpt.tokenizer, tokens, GpuTraceOptions::default())
                    .map_err(|e| e.to_string())?;
                trace.model.path = ckpt.path.display().to_string();
                trace.warnings = ckpt.warnings.clone();
                trace
            }
            _ => reference::trace(
                ckpt,
                &input,
                TraceOptions::default(),
                &crate::progress::Silent,
            )
            .map_err(|e| e.to_string())?,
        };
        Ok(Traced {
            trace: Arc::new(trace),
            milliseconds: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The backward runs on a thread of its own (the reference, which has the autograd), so a
    /// long one never holds up the traces of what the user types meanwhile.
    fn gradients(&self, generation: u64, prompt: String, cancel: Arc<AtomicBool>) {
        let models: Vec<(Slot, Arc<Checkpoint>)> = [Slot::A, Slot::B]
            .into_iter()
            .filter_map(|s| self.models[s.index()].as_ref().map(|m| (s, m.ckpt.clone())))
            .collect();
        let replies = self.replies.clone();
        let wake = self.wake.clone();
        let progress = self.progress("gradients", Some(cancel.clone()));
        let spawned = std::thread::Builder::new()
            .name("depthlens-backward".into())
            .spawn(move || {
                for (slot, ckpt) in models {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let opts = TraceOptions {
                        grads: true,
                        ..TraceOptions::default()
                    };
                    let input = Input::Text(prompt.clone());
                    let result = reference::trace(&ckpt, &input, opts, &progress)
                        .map(|trace| Traced {
                            trace: Arc::new(trace),
                            milliseconds: started.elapsed().as_secs_f64() * 1e3,
                        })
                        .map_err(|e| e.to_string());
                    progress.finish();
                    let _ = replies.send(Reply::Gradients {
                        slot,
                        generation,
                        result,
                    });
                    wake();
                }
            });
        if let Err(e) = spawned {
            self.reply(Reply::Gradients {
                slot: Slot::A,
                generation,
                result: Err(format!("cannot start the backward thread: {e}")),
            });
        }
    }
}

/// What the UI shows of a checkpoint.
fn model_info(ckpt: &Checkpoint) -> ModelInfo {
    let cfg = &ckpt.config;
    let summary = crate::trace::ModelSummary::of(cfg);
    let mixing = match summary.block_size {
        Some(b) => format!("block AttnRes (block size {b})"),
        None if summary.depth_mixing == "full" => "full AttnRes".into(),
        None => "PreNorm baseline".into(),
    };
    let mut notes = ckpt.warnings.clone();
    if ckpt.tokenizer.kind == TokenizerKind::ByteFallback {
        notes.push(
            "no tokenizer ships with this checkpoint: the prompt is read as UTF-8 bytes".into(),
        );
    }
    ModelInfo {
        name: crate::figures::checkpoint_name(&ckpt.path),
        path: ckpt.path.clone(),
        summary: format!(
            "{} {mixing}, {} layers x {}, vocab {}",
            cfg.model_type, cfg.num_layers, cfg.hidden_size, cfg.vocab_size
        ),
        notes,
        training: ckpt
            .training_log
            .as_deref()
            .map(crate::figures::parse_training_log),
    }
}

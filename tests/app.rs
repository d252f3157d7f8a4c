//! The desktop app, driven headless through egui_kittest with the wgpu renderer (lavapipe in
//! CI): what the views show is the Trace's, selection follows clicks and keys, a broken file
//! leaves the open model usable, and a storm of random input neither panics nor hangs.
#![cfg(feature = "gui")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use depthlens::figures::{source_union, Quantity};
use depthlens::trace::Trace;
use depthlens::ui::app::{demo_model, Command};
use depthlens::ui::views::Pane;
use depthlens::ui::worker::{Slot, Tracer, TracerChoice};
use depthlens::ui::{App, AppOptions};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

const PROMPT: &str = "To be, or not to be";

fn harness(options: AppOptions) -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu_setup(depthlens::ui::wgpu_setup())
        .build_eframe(move |cc| App::new(cc, options))
}

/// A harness that draws tofu for characters no font has (what the app does for a user who
/// types an emoji) instead of failing the test.
fn harness_for_any_text(options: AppOptions) -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .allow_missing_glyphs()
        .wgpu_setup(depthlens::ui::wgpu_setup())
        .build_eframe(move |cc| App::new(cc, options))
}

fn options(a: &str, b: Option<&str>) -> AppOptions {
    AppOptions {
        checkpoint: Some(demo_model(a)),
        compare: b.map(demo_model),
        prompt: Some(PROMPT.into()),
        fresh_state: true,
        tracer: TracerChoice::Auto,
    }
}

/// Step frames until `done` holds (the worker answers asynchronously); fail after a minute.
fn step_until(h: &mut Harness<'static, App>, what: &str, done: impl Fn(&App) -> bool) {
    let started = Instant::now();
    while !done(h.state()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(2));
    }
    // Settle: the frame after the reply builds the figures from it.
    h.run_steps(2);
}

fn prompt_of(trace: &Trace) -> String {
    trace.tokens.iter().map(|t| t.text.as_str()).collect()
}

fn traced(app: &App, slot: Slot, prompt: &str) -> bool {
    !app.busy() && app.trace(slot).is_some_and(|t| prompt_of(t) == prompt)
}

/// The depth-attention figure holds the trace's alpha (or shares) of `token` cell by cell.
fn assert_depth_view_is_the_trace(app: &App, slot: Slot, token: usize, quantity: Quantity) {
    let trace = app.trace(slot).expect("a trace");
    let fig = &app.figures().models[slot.index()]
        .as_ref()
        .expect("figures")
        .depth;
    let cols = source_union(trace);
    assert_eq!(fig.col_labels, cols);
    assert_eq!(fig.rows(), trace.ops.len());
    for (r, op) in trace.ops.iter().enumerate() {
        let table = match quantity {
            Quantity::Alpha => &op.alpha,
            Quantity::Share => &op.shares,
        };
        for (c, label) in cols.iter().enumerate() {
            let expected = op
                .sources
                .iter()
                .position(|s| s == label)
                .map(|i| table[token][i]);
            assert_eq!(fig.value(r, c), expected, "{} {label}", op.name);
        }
    }
}

#[test]
fn typing_and_clicking_a_token_shows_that_tokens_depth_attention() {
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    // The prompt box has the keyboard at start: typing goes straight into it.
    h.event(egui::Event::Text(", that".into()));
    let prompt = format!("{PROMPT}, that");
    step_until(&mut h, "the trace of the edited prompt", |a| {
        traced(a, Slot::A, &prompt)
    });
    let trace = h.state().trace(Slot::A).unwrap().clone();
    let t = trace
        .tokens
        .iter()
        .position(|t| t.text == " not")
        .expect("a token ' not'");
    h.get_by_label("\u{2423}not").click();
    h.run_steps(3);
    assert_eq!(h.state().selection.token, t);
    assert_depth_view_is_the_trace(h.state(), Slot::A, t, Quantity::Alpha);
    assert!(h.state().figures().models[0]
        .as_ref()
        .unwrap()
        .depth
        .title
        .contains("not"));
    // Arrow keys move the selection once the prompt box has let go of the keyboard.
    h.key_press(egui::Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().selection.token, t + 1);
    assert_depth_view_is_the_trace(h.state(), Slot::A, t + 1, Quantity::Alpha);
    // The token x source view shows the selected op for every token.
    h.key_press(egui::Key::ArrowDown);
    h.run_steps(2);
    let op = h.state().selection.op;
    assert_eq!(op, 1);
    let ts = &h.state().figures().models[0].as_ref().unwrap().token_source;
    assert_eq!(ts.col_labels, trace.ops[op].sources);
    assert_eq!(ts.values, trace.ops[op].alpha.flat());
}

#[test]
fn a_baseline_reads_by_shares_and_compare_mode_aligns_both_models() {
    let mut h = harness(options("full.safetensors", Some("baseline.safetensors")));
    step_until(&mut h, "both traces", |a| {
        traced(a, Slot::A, PROMPT) && traced(a, Slot::B, PROMPT)
    });
    // " be" is the prompt's second and fourth word; either selects a " be".
    h.get_all_by_label("\u{2423}be")
        .next()
        .expect("a chip")
        .click();
    h.run_steps(3);
    let t = h.state().selection.token;
    assert_eq!(h.state().trace(Slot::A).unwrap().tokens[t].text, " be");
    assert_depth_view_is_the_trace(h.state(), Slot::A, t, Quantity::Alpha);
    // The baseline's weights are all 1: its natural reading is the residual decomposition.
    assert_depth_view_is_the_trace(h.state(), Slot::B, t, Quantity::Share);
    let figures = h.state().figures();
    assert_eq!(
        figures.models[1].as_ref().unwrap().token,
        t,
        "same tokenizer, same position"
    );
    // Full and baseline have the same ops and sources: B - A in A's quantity (alpha), where the
    // baseline's alpha is exactly 1.
    let diff = figures
        .difference
        .clone()
        .expect("a difference")
        .expect("same grid");
    let a = &figures.models[0].as_ref().unwrap().depth;
    for (d, x) in diff.values.iter().zip(&a.values) {
        if x.is_nan() {
            assert!(d.is_nan());
        } else {
            assert!((d - (1.0 - x)).abs() < 1e-6, "{d} vs 1 - {x}");
        }
    }
    assert!(
        h.query_all_by_label_contains("B: baseline.safetensors")
            .count()
            >= 1,
        "the status bar names B"
    );
}

#[test]
fn a_broken_file_is_an_error_in_the_window_and_the_open_model_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let broken: PathBuf = dir.path().join("broken.safetensors");
    let bytes = std::fs::read(demo_model("block.safetensors")).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 3]).unwrap();
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    h.state_mut().open(Slot::A, broken.clone());
    step_until(&mut h, "the failed open", |a| !a.messages.is_empty());
    let message = h.state().messages[0].clone();
    assert!(message.contains("broken.safetensors"), "{message}");
    assert!(
        message.contains("block.safetensors stays open"),
        "{message}"
    );
    assert!(
        h.query_by_label_contains("Cannot open").is_some(),
        "shown in the window"
    );
    assert_eq!(
        h.state().slots[0].info.as_ref().unwrap().name,
        "block.safetensors"
    );
    // Still traces what is typed.
    h.event(egui::Event::Text("!".into()));
    let prompt = format!("{PROMPT}!");
    step_until(&mut h, "a trace after the failure", |a| {
        traced(a, Slot::A, &prompt)
    });
}

#[test]
fn an_empty_or_too_long_prompt_is_said_under_the_prompt_box() {
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    for _ in 0..PROMPT.len() {
        h.key_press(egui::Key::Backspace);
    }
    h.run_steps(3);
    assert!(h.query_by_label_contains("The prompt is empty").is_some());
    assert!(
        h.state().trace(Slot::A).is_some(),
        "the last trace stays on screen"
    );
    let long = "a".repeat(600);
    h.event(egui::Event::Text(long));
    step_until(&mut h, "the refusal", |a| {
        a.slots[0].error.is_some() && !a.busy()
    });
    assert!(h.query_by_label_contains("more than the model's").is_some());
}

#[test]
fn gradients_come_on_demand_and_their_view_holds_the_traces_histograms() {
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    h.get_by_label("Gradients").click();
    h.run_steps(2);
    h.get_by_label("Compute gradients").click();
    step_until(&mut h, "the backward", |a| {
        a.slots[0].grads.is_some() && !a.busy()
    });
    let grads = h.state().slots[0].grads.as_ref().unwrap().trace.clone();
    let g = grads.grads.as_ref().expect("histograms");
    let fig = h.state().figures().models[0]
        .as_ref()
        .unwrap()
        .gradients
        .clone()
        .expect("figure");
    assert_eq!(fig.histogram.rows(), g.histograms.len());
    for (r, hist) in g.histograms.iter().enumerate() {
        for (c, &count) in hist.counts.iter().enumerate() {
            assert_eq!(fig.histogram.value(r, c), Some(count as f32));
        }
        assert_eq!(fig.group_rms[r], (hist.group.clone(), hist.grad_rms));
    }
}

/// A reference image of the app as it is now, with the status bar's trace times (which differ
/// from run to run) masked.
fn snapshot(h: &mut Harness<'static, App>, name: &str) {
    h.remove_cursor();
    h.run_steps(3);
    h.mask(egui::Rect::from_min_max(
        egui::pos2(0.0, 860.0),
        egui::pos2(1400.0, 900.0),
    ));
    h.snapshot(name);
}

/// Views as a first-time user sees them, kept as reference images (`UPDATE_SNAPSHOTS=1`).
#[test]
fn snapshots_of_one_models_views() {
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    h.get_by_label("\u{2423}not").click();
    snapshot(&mut h, "app_depth_attention_and_norms");
    h.get_by_label("Gradients").click();
    h.run_steps(2);
    h.get_by_label("Compute gradients").click();
    step_until(&mut h, "the backward", |a| {
        a.slots[0].grads.is_some() && !a.busy()
    });
    snapshot(&mut h, "app_gradients");
}

#[test]
fn snapshot_of_compare_mode_and_the_difference_view() {
    let mut h = harness(options("full.safetensors", Some("baseline.safetensors")));
    step_until(&mut h, "both traces", |a| {
        traced(a, Slot::A, PROMPT) && traced(a, Slot::B, PROMPT)
    });
    h.get_by_label("Difference B - A").click();
    snapshot(&mut h, "app_compare_difference");
}

/// A small deterministic generator, so a failing storm can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 10_000) as f32 / 10_000.0
    }
}

#[test]
fn thousands_of_random_events_with_traces_in_flight_neither_panic_nor_hang() {
    let mut h = harness_for_any_text(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut size = egui::vec2(1400.0, 900.0);
    let keys = [
        egui::Key::ArrowLeft,
        egui::Key::ArrowRight,
        egui::Key::ArrowUp,
        egui::Key::ArrowDown,
        egui::Key::Backspace,
        egui::Key::Enter,
        egui::Key::Tab,
        egui::Key::Escape,
    ];
    let started = Instant::now();
    for i in 0..3000 {
        let pos = egui::pos2(rng.unit() * size.x, rng.unit() * size.y);
        match rng.below(12) {
            0..=3 => {
                h.hover_at(pos);
                h.event(egui::Event::PointerButton {
                    pos,
                    button: if rng.below(5) == 0 {
                        egui::PointerButton::Secondary
                    } else {
                        egui::PointerButton::Primary
                    },
                    pressed: true,
                    modifiers: Default::default(),
                });
                h.event(egui::Event::PointerButton {
                    pos,
                    button: egui::PointerButton::Primary,
                    pressed: false,
                    modifiers: Default::default(),
                });
            }
            4 => {
                h.drag_at(pos);
                let to = egui::pos2(rng.unit() * size.x, rng.unit() * size.y);
                h.hover_at(to);
                h.drop_at(to);
            }
            5 | 6 => h.key_press(keys[rng.below(keys.len() as u64) as usize]),
            7 => {
                let words = ["the", " ", "é", "\n", "to be", "🙂", ",", "zz"];
                h.event(egui::Event::Text(
                    words[rng.below(words.len() as u64) as usize].into(),
                ));
            }
            8 => h.event(egui::Event::MouseWheel {
                unit: egui::MouseWheelUnit::Point,
                delta: egui::vec2(0.0, rng.unit() * 200.0 - 100.0),
                phase: egui::TouchPhase::Move,
                modifiers: Default::default(),
                source: egui::MouseWheelSource::Wheel,
            }),
            9 => {
                size = egui::vec2(500.0 + rng.unit() * 1100.0, 400.0 + rng.unit() * 600.0);
                h.set_size(size);
            }
            10 => {
                let pane = Pane::ALL[rng.below(Pane::ALL.len() as u64) as usize];
                let shown = rng.below(3) != 0;
                h.state_mut()
                    .run_command(Command::SetPaneShown(pane, shown));
            }
            _ => match rng.below(4) {
                0 => h
                    .state_mut()
                    .open(Slot::B, demo_model("baseline.safetensors")),
                1 => h.state_mut().run_command(Command::CloseB),
                2 => h.state_mut().run_command(Command::ComputeGradients),
                _ => h.state_mut().run_command(Command::CancelGradients),
            },
        }
        h.step();
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "event {i}: the storm took too long"
        );
    }
    // And it still answers: a fresh prompt traces.
    for pane in Pane::ALL {
        h.state_mut().run_command(Command::SetPaneShown(pane, true));
    }
    h.state_mut().set_prompt("All the world's a stage");
    step_until(&mut h, "a trace after the storm", |a| {
        traced(a, Slot::A, "All the world's a stage")
    });
}

#[test]
fn the_gpu_engine_traces_on_the_renderers_own_device_and_agrees_with_the_reference() {
    // Forced onto the GPU engine even on a software adapter (lavapipe in CI), where the app
    // would choose the reference for speed.
    let mut gpu_options = options("block.safetensors", None);
    gpu_options.tracer = TracerChoice::Gpu;
    let mut h = harness(gpu_options);
    step_until(&mut h, "the engine's trace", |a| traced(a, Slot::A, PROMPT));
    assert!(
        matches!(h.state().tracer, Some(Tracer::Gpu(_))),
        "the engine ran on eframe's device: {:?}",
        h.state().tracer
    );
    let gpu = h.state().trace(Slot::A).unwrap().clone();
    assert_ne!(gpu.device, "cpu-reference");
    let ckpt = depthlens::model::Checkpoint::open(
        &demo_model("block.safetensors"),
        &depthlens::progress::Silent,
    )
    .unwrap();
    let cpu = depthlens::reference::trace(
        &ckpt,
        &depthlens::reference::Input::Text(PROMPT.into()),
        Default::default(),
        &depthlens::progress::Silent,
    )
    .unwrap();
    assert_eq!(gpu.tokens, cpu.tokens);
    for (g, c) in gpu.ops.iter().zip(&cpu.ops) {
        for (a, b) in g.alpha.flat().iter().zip(c.alpha.flat()) {
            assert!((a - b).abs() < 1e-4, "{} alpha {a} vs {b}", g.name);
        }
        for (a, b) in g.hidden_rms.iter().zip(&c.hidden_rms) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "{} hidden_rms {a} vs {b}",
                g.name
            );
        }
    }
    assert!((gpu.loss.unwrap() - cpu.loss.unwrap()).abs() < 1e-4);
    // And the views draw the engine's numbers.
    assert_depth_view_is_the_trace(h.state(), Slot::A, 0, Quantity::Alpha);
}

#[test]
fn a_panels_export_writes_what_the_panel_shows_and_export_all_fills_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    h.get_by_label("\u{2423}not").click();
    h.run_steps(2);
    let t = h.state().selection.token;
    let csv_path = dir.path().join("view.csv");
    h.state_mut().run_command(Command::ExportTo {
        kind: Some(depthlens::export::views::FigureKind::DepthAttention),
        format: depthlens::export::views::Format::Csv,
        path: csv_path.clone(),
    });
    step_until(&mut h, "the export", |a| {
        a.export_note.is_some() || !a.messages.is_empty()
    });
    assert!(h.state().messages.is_empty(), "{:?}", h.state().messages);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let trace = h.state().trace(Slot::A).unwrap().clone();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        trace.ops.iter().map(|o| o.sources.len()).sum::<usize>()
    );
    assert!(
        rows.iter().all(|r| r.starts_with(&format!("{t},"))),
        "the selected token's rows"
    );
    let folder = dir.path().join("all");
    h.state_mut().export_note = None;
    h.state_mut().run_command(Command::ExportTo {
        kind: None,
        format: depthlens::export::views::Format::Svg,
        path: folder.clone(),
    });
    step_until(&mut h, "export all", |a| {
        a.export_note.is_some() || !a.messages.is_empty()
    });
    assert!(
        h.state().export_note.as_ref().unwrap().contains("wrote"),
        "{:?}",
        h.state().export_note
    );
    for name in [
        "depth-attention.svg",
        "token-source.png",
        "norms.csv",
        "trace.json",
    ] {
        assert!(folder.join(name).is_file(), "{name}");
    }
    // An unwritable target is an error in the window, not a crash.
    h.state_mut().run_command(Command::ExportTo {
        kind: Some(depthlens::export::views::FigureKind::Norms),
        format: depthlens::export::views::Format::Svg,
        path: dir.path().join("missing/folder/n.svg"),
    });
    step_until(&mut h, "the failed export", |a| !a.messages.is_empty());
    assert!(
        h.state().messages[0].contains("missing/folder"),
        "{:?}",
        h.state().messages
    );
}

/// A file dropped on the window, as the platform hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn a_dropped_checkpoint_opens_and_is_remembered_with_the_layout() {
    let mut h = harness(options("block.safetensors", None));
    step_until(&mut h, "the first trace", |a| traced(a, Slot::A, PROMPT));
    let full = demo_model("full.safetensors");
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(full.clone())));
    step_until(&mut h, "the dropped model's trace", |a| {
        a.slots[0]
            .info
            .as_ref()
            .is_some_and(|i| i.name == "full.safetensors")
            && traced(a, Slot::A, PROMPT)
    });
    assert_eq!(
        h.state().persisted.recent.first(),
        Some(&full),
        "most recent first"
    );
    // What persists between runs survives a round trip through serde (eframe stores it as RON).
    h.state_mut()
        .run_command(Command::SetPaneShown(Pane::Norms, false));
    h.run_steps(2);
    let saved = serde_json::to_string(&h.state().persisted).unwrap();
    let back: depthlens::ui::app::Persisted = serde_json::from_str(&saved).unwrap();
    assert_eq!(back.recent, h.state().persisted.recent);
    assert_eq!(back.prompt, PROMPT);
    assert!(!depthlens::ui::layout::is_shown(&back.layout, Pane::Norms));
    assert!(depthlens::ui::layout::is_shown(
        &back.layout,
        Pane::DepthAttention
    ));
}

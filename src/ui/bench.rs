//! `depthlens bench --app`: the real app, headless (egui_kittest with the wgpu renderer on the
//! default adapter, the same setup as the window), typed into one character at a time. It
//! measures what a researcher feels: from a keystroke until the views show that keystroke's
//! trace, and how long a frame with every view on screen takes.

use std::path::Path;
use std::time::{Duration, Instant};

use egui_kittest::Harness;

use super::views::Pane;
use super::worker::Slot;
use super::{App, AppOptions};

/// One prompt length's figures.
#[derive(Debug, Clone)]
pub struct AppBenchRow {
    /// Tokens of the prompt before typing began.
    pub tokens: usize,
    pub keystrokes: usize,
    pub keystroke_median_ms: f64,
    pub keystroke_p95_ms: f64,
    /// One egui pass of the whole window (layout, every view's drawing commands), median.
    pub frame_median_ms: f64,
    /// Rasterising that frame on the GPU and reading it back (kittest's render), median.
    pub render_median_ms: f64,
}

/// What the benchmark ran on.
#[derive(Debug, Clone)]
pub struct AppBench {
    pub tracer: String,
    pub rows: Vec<AppBenchRow>,
    /// Resident memory once the model is open and its first trace is on screen (VmRSS), bytes.
    pub rss_traced: Option<u64>,
    /// Peak resident memory of the process over the whole run, backward included (VmHWM).
    pub peak_rss: Option<u64>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn prompt_of(app: &App) -> Option<String> {
    app.trace(Slot::A)
        .map(|t| t.tokens.iter().map(|x| x.text.as_str()).collect())
}

/// Step frames until the app shows the trace of `prompt` (and nothing is in flight).
fn step_until_shown(
    h: &mut Harness<'static, App>,
    prompt: &str,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        h.step();
        // A window draws when the worker wakes it; stepping back to back would take a core
        // from the trace it waits for.
        std::thread::sleep(Duration::from_micros(200));
        let app = h.state();
        if !app.busy() && prompt_of(app).as_deref() == Some(prompt) {
            return Ok(());
        }
        if let Some(e) = &app.slots[0].error {
            return Err(format!("the app could not trace: {e}"));
        }
        if started.elapsed() > limit {
            return Err(format!(
                "no trace of the prompt after {limit:?} (prompt box: {:?}, on screen: {:?})",
                app.persisted.prompt,
                prompt_of(app)
            ));
        }
    }
}

/// A memory figure of this process from /proc (Linux): `VmRSS` (now) or `VmHWM` (peak).
pub fn memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open `checkpoint` in the headless app; for each prompt (a starting text), type `keystrokes`
/// characters one by one, then time `frames` frames with every view on screen.
pub fn bench_app(
    checkpoint: &Path,
    tracer: super::worker::TracerChoice,
    prompts: &[(usize, String)],
    keystrokes: usize,
    frames: usize,
) -> Result<AppBench, String> {
    let first = prompts.first().map(|p| p.1.clone()).unwrap_or_default();
    let options = AppOptions {
        checkpoint: Some(checkpoint.to_path_buf()),
        compare: None,
        prompt: Some(first.clone()),
        fresh_state: true,
        tracer,
    };
    let mut h: Harness<'static, App> = Harness::builder()
        .with_size(egui::vec2(1600.0, 1000.0))
        .allow_missing_glyphs()
        .wgpu_setup(super::wgpu_setup())
        .build_eframe(move |cc| App::new(cc, options));
    // Every view on screen at once: a grid of all panes.
    h.state_mut().persisted.layout =
        egui_tiles::Tree::new_grid(egui::Id::unique("bench_grid"), Pane::ALL.to_vec());
    step_until_shown(&mut h, &first, Duration::from_secs(600))?;
    if let Some(e) = h.state().messages.first() {
        return Err(e.clone());
    }
    let tracer = h
        .state()
        .tracer
        .as_ref()
        .map(|t| t.describe())
        .unwrap_or_default();
    let rss_traced = memory("VmRSS:");
    let typed = "etaoinshr ";
    let mut rows = Vec::new();
    for (tokens, start) in prompts {
        h.state_mut().set_prompt(start);
        step_until_shown(&mut h, start, Duration::from_secs(600))?;
        // The gradients view draws too.
        h.state_mut()
            .run_command(super::app::Command::ComputeGradients);
        h.step();
        let started = Instant::now();
        while h.state().busy() {
            h.step();
            std::thread::sleep(Duration::from_millis(1));
            if started.elapsed() > Duration::from_secs(600) {
                return Err("the backward took over 10 minutes".into());
            }
        }
        let mut prompt = start.clone();
        let mut times = Vec::new();
        // Two keystrokes warm up (the first trace of a new length builds its workspace).
        for (k, c) in typed.chars().cycle().take(keystrokes + 2).enumerate() {
            prompt.push(c);
            let t0 = Instant::now();
            h.event(egui::Event::Text(c.to_string()));
            step_until_shown(&mut h, &prompt, Duration::from_secs(60))?;
            if k >= 2 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mut frame = Vec::new();
        let mut render = Vec::new();
        for _ in 0..frames {
            let t0 = Instant::now();
            h.step();
            frame.push(t0.elapsed().as_secs_f64() * 1e3);
            let t1 = Instant::now();
            h.render()?;
            render.push(t1.elapsed().as_secs_f64() * 1e3);
        }
        rows.push(AppBenchRow {
            tokens: *tokens,
            keystrokes,
            keystroke_median_ms: percentile(&mut times.clone(), 0.5),
            keystroke_p95_ms: percentile(&mut times, 0.95),
            frame_median_ms: percentile(&mut frame, 0.5),
            render_median_ms: percentile(&mut render, 0.5),
        });
    }
    Ok(AppBench {
        tracer,
        rows,
        rss_traced,
        peak_rss: memory("VmHWM:"),
    })
}

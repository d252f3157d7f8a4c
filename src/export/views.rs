//! The views as files: each figure the app draws (the same [`crate::figures`] descriptions,
//! from the same selection and toggles) as SVG, PNG, CSV or JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::draw::{self, Marks, Svg};
use super::Error;
use crate::figures::{view_figures, ModelFigures, ModelInput, Selection, Toggles, ViewFigures};
use crate::trace::Trace;

/// A figure: one of the app's views (and panes), and what export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FigureKind {
    DepthAttention,
    TokenSource,
    Norms,
    Gradients,
    /// B - A of depth attention (compare only).
    Difference,
    /// Loss and per-group gradient norms over training steps (checkpoints with a training log).
    Training,
}

impl FigureKind {
    pub const ALL: [FigureKind; 6] = [
        FigureKind::DepthAttention,
        FigureKind::TokenSource,
        FigureKind::Norms,
        FigureKind::Gradients,
        FigureKind::Difference,
        FigureKind::Training,
    ];

    /// The view's title in the app.
    pub fn title(self) -> &'static str {
        match self {
            FigureKind::DepthAttention => "Depth attention",
            FigureKind::TokenSource => "Token x source",
            FigureKind::Norms => "Norms",
            FigureKind::Gradients => "Gradients",
            FigureKind::Difference => "Difference B - A",
            FigureKind::Training => "Training",
        }
    }

    /// The file-name stem and `--figure` value.
    pub fn name(self) -> &'static str {
        match self {
            FigureKind::DepthAttention => "depth-attention",
            FigureKind::TokenSource => "token-source",
            FigureKind::Norms => "norms",
            FigureKind::Gradients => "gradients",
            FigureKind::Difference => "difference",
            FigureKind::Training => "training",
        }
    }
}

/// A file format, chosen by the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
    Csv,
    Json,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Svg, Format::Png, Format::Csv, Format::Json];

    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// What the views show: the models (A, then B when comparing), the selection and toggles.
#[derive(Clone)]
pub struct ViewInput<'a> {
    pub models: Vec<ModelInput<'a>>,
    pub selection: Selection,
    pub toggles: Toggles,
}

impl ViewInput<'_> {
    fn figures(&self) -> ViewFigures {
        let inputs = [self.models.first().copied(), self.models.get(1).copied()];
        view_figures(inputs, self.selection, &self.toggles)
    }

    fn prompt(&self) -> String {
        self.models
            .first()
            .map(|m| m.trace.tokens.iter().map(|t| t.text.as_str()).collect())
            .unwrap_or_default()
    }
}

const COLUMN_W: f64 = 900.0;

fn models(figs: &ViewFigures) -> Vec<&ModelFigures> {
    figs.models.iter().flatten().collect()
}

/// B - A, or why the figures have none.
fn difference_of(figs: &ViewFigures) -> Result<crate::figures::Heatmap, Error> {
    let kind = FigureKind::Difference;
    figs.difference
        .clone()
        .ok_or_else(|| unavailable(kind, "needs two models (--compare)"))?
        .map_err(|why| unavailable(kind, &why))
}

fn unavailable(kind: FigureKind, why: &str) -> Error {
    Error::Unavailable {
        figure: kind.name().into(),
        why: why.into(),
    }
}

/// The figure as an SVG document: a header naming the prompt, then a column per model.
pub fn svg(kind: FigureKind, input: &ViewInput) -> Result<String, Error> {
    let figs = input.figures();
    let shown = models(&figs);
    if shown.is_empty() {
        return Err(unavailable(kind, "no trace"));
    }
    let columns = if kind == FigureKind::Difference {
        1
    } else {
        shown.len()
    };
    let mut svg = Svg::new(COLUMN_W * columns as f64 + 20.0);
    let prompt = input.prompt();
    let header = format!(
        "depthlens: {} | prompt ({} tokens): \"{}\"",
        kind.name(),
        input.models[0].trace.tokens.len(),
        prompt.replace('\n', "\u{21b5}")
    );
    svg.text(
        10.0,
        20.0,
        12.0,
        "start",
        &crate::figures::clip_label(&header, (svg.width / 6.8) as usize),
        "",
    );
    let top = 34.0;
    let mut bottom: f64 = top;
    if kind == FigureKind::Difference {
        let diff = difference_of(&figs)?;
        let h = draw::heatmap(
            &mut svg,
            10.0,
            top,
            COLUMN_W,
            &diff,
            Marks {
                row: Some(input.selection.op),
                col: None,
            },
        );
        svg.height = top + h + 10.0;
        return Ok(svg.finish());
    }
    for (i, f) in shown.iter().enumerate() {
        let x = 10.0 + i as f64 * COLUMN_W;
        let device = &input.models[i].trace.device;
        svg.text(
            x,
            top + 12.0,
            11.0,
            "start",
            &format!("{}: {} ({device})", ["A", "B"][i], f.name),
            r##"fill="#555""##,
        );
        let y = top + 20.0;
        let h = match kind {
            FigureKind::DepthAttention => draw::heatmap(
                &mut svg,
                x,
                y,
                COLUMN_W - 20.0,
                &f.depth,
                Marks {
                    row: Some(input.selection.op),
                    col: None,
                },
            ),
            FigureKind::TokenSource => draw::heatmap(
                &mut svg,
                x,
                y,
                COLUMN_W - 20.0,
                &f.token_source,
                Marks {
                    row: Some(f.token),
                    col: None,
                },
            ),
            FigureKind::Norms => {
                let h = draw::line_chart(&mut svg, x, y, COLUMN_W - 20.0, 380.0, &f.norms.chart);
                h + draw::heatmap(
                    &mut svg,
                    x,
                    y + h + 10.0,
                    COLUMN_W - 20.0,
                    &f.norms.heatmap,
                    Marks {
                        row: Some(f.token),
                        col: Some(input.selection.op),
                    },
                ) + 10.0
            }
            FigureKind::Gradients => {
                let g = f.gradients.as_ref().ok_or_else(|| {
                    unavailable(kind, "the trace has no backward (trace with gradients)")
                })?;
                let h1 = draw::heatmap(
                    &mut svg,
                    x,
                    y,
                    COLUMN_W - 200.0,
                    &g.histogram,
                    Marks::default(),
                );
                let h2 = draw::table(
                    &mut svg,
                    x + COLUMN_W - 180.0,
                    y,
                    "gradient RMS",
                    &g.group_rms,
                );
                let h = h1.max(h2) + 10.0;
                h + draw::heatmap(
                    &mut svg,
                    x,
                    y + h,
                    COLUMN_W - 20.0,
                    &g.dv,
                    Marks {
                        row: Some(f.token),
                        col: Some(input.selection.op),
                    },
                )
            }
            FigureKind::Training => {
                let tf = f
                    .training
                    .as_ref()
                    .ok_or_else(|| unavailable(kind, "the checkpoint carries no training log"))?;
                let w = COLUMN_W - 20.0;
                let h1 = draw::line_chart(&mut svg, x, y, w, 300.0, &tf.loss);
                let h2 = draw::line_chart(&mut svg, x, y + h1 + 10.0, w, 360.0, &tf.grad_lines);
                let y3 = y + h1 + h2 + 20.0;
                h1 + h2
                    + 20.0
                    + draw::heatmap(&mut svg, x, y3, w, &tf.grad_heatmap, Marks::default())
            }
            FigureKind::Difference => 0.0,
        };
        bottom = bottom.max(y + h);
    }
    svg.height = bottom + 10.0;
    Ok(svg.finish())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The figure's data, tidy: one row per value, with a header. With two models a leading
/// `model` column names which.
pub fn csv(kind: FigureKind, input: &ViewInput) -> Result<String, Error> {
    let figs = input.figures();
    let shown = models(&figs);
    if shown.is_empty() {
        return Err(unavailable(kind, "no trace"));
    }
    let compare = shown.len() > 1;
    let mut out = String::new();
    let lead = |out: &mut String, f: &ModelFigures| {
        if compare {
            out.push_str(&csv_field(&f.name));
            out.push(',');
        }
    };
    let header = |out: &mut String, cols: &str| {
        if compare {
            out.push_str("model,");
        }
        out.push_str(cols);
        out.push('\n');
    };
    match kind {
        FigureKind::DepthAttention | FigureKind::TokenSource => {
            header(&mut out, "token_index,token,op,source,alpha,share");
            for (m, f) in input.models.iter().zip(&shown) {
                let t = m.trace;
                let (tokens, ops): (Vec<usize>, Vec<usize>) = if kind == FigureKind::DepthAttention
                {
                    let tokens = if input.toggles.depth_mean {
                        (0..t.tokens.len()).collect()
                    } else {
                        vec![f.token]
                    };
                    (tokens, (0..t.ops.len()).collect())
                } else {
                    (
                        (0..t.tokens.len()).collect(),
                        vec![input.selection.op.min(t.ops.len().saturating_sub(1))],
                    )
                };
                for &ti in &tokens {
                    for &oi in &ops {
                        let op = &t.ops[oi];
                        for (i, source) in op.sources.iter().enumerate() {
                            lead(&mut out, f);
                            let _ = writeln!(
                                out,
                                "{ti},{},{},{},{},{}",
                                csv_field(&t.tokens[ti].text),
                                csv_field(&op.name),
                                csv_field(source),
                                op.alpha[ti][i],
                                op.shares[ti][i]
                            );
                        }
                    }
                }
            }
        }
        FigureKind::Norms => {
            header(
                &mut out,
                "token_index,token,op,hidden_rms,output_rms,partial_rms",
            );
            for (m, f) in input.models.iter().zip(&shown) {
                let t = m.trace;
                for ti in 0..t.tokens.len() {
                    for op in &t.ops {
                        lead(&mut out, f);
                        let partial = op
                            .partial_rms
                            .as_ref()
                            .map_or(String::new(), |p| p[ti].to_string());
                        let _ = writeln!(
                            out,
                            "{ti},{},{},{},{},{partial}",
                            csv_field(&t.tokens[ti].text),
                            csv_field(&op.name),
                            op.hidden_rms[ti],
                            op.output_rms[ti]
                        );
                    }
                }
            }
        }
        FigureKind::Gradients => {
            header(&mut out, "group,bin_low,bin_high,count");
            for (m, f) in input.models.iter().zip(&shown) {
                let g = m.grads.and_then(|g| g.grads.as_ref()).ok_or_else(|| {
                    unavailable(kind, "the trace has no backward (trace with gradients)")
                })?;
                for h in &g.histograms {
                    for (i, count) in h.counts.iter().enumerate() {
                        lead(&mut out, f);
                        let _ = writeln!(
                            out,
                            "{},{},{},{count}",
                            csv_field(&h.group),
                            g.bin_edges[i],
                            g.bin_edges[i + 1]
                        );
                    }
                }
            }
        }
        FigureKind::Training => {
            header(&mut out, "step,train_loss,val_loss,group,grad_norm");
            for (m, f) in input.models.iter().zip(&shown) {
                let log = m
                    .training
                    .ok_or_else(|| unavailable(kind, "the checkpoint carries no training log"))?;
                for (s, step) in log.steps.iter().enumerate() {
                    let val = if log.val_loss[s].is_nan() {
                        String::new()
                    } else {
                        log.val_loss[s].to_string()
                    };
                    for (g, group) in log.groups.iter().enumerate() {
                        lead(&mut out, f);
                        let _ = writeln!(
                            out,
                            "{step},{},{val},{},{}",
                            log.train_loss[s],
                            csv_field(group),
                            log.grad_norms[g][s]
                        );
                    }
                }
            }
        }
        FigureKind::Difference => {
            let diff = difference_of(&figs)?;
            out.push_str("op,source,difference\n");
            for (r, op) in diff.row_labels.iter().enumerate() {
                for (c, source) in diff.col_labels.iter().enumerate() {
                    if let Some(v) = diff.value(r, c) {
                        let _ = writeln!(out, "{},{},{v}", csv_field(op), csv_field(source));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The part of each model's Trace that the figure draws, under the Trace's own keys.
pub fn json(kind: FigureKind, input: &ViewInput) -> Result<String, Error> {
    let figs = input.figures();
    let shown = models(&figs);
    if shown.is_empty() {
        return Err(unavailable(kind, "no trace"));
    }
    let mut out = Vec::new();
    for (m, f) in input.models.iter().zip(&shown) {
        let t: &Trace = m.trace;
        let op_at = input.selection.op.min(t.ops.len().saturating_sub(1));
        let part: Value = match kind {
            FigureKind::DepthAttention => {
                let rows = |table: &crate::trace::Rows| -> Value {
                    if input.toggles.depth_mean {
                        serde_json::to_value(table).unwrap_or(Value::Null)
                    } else {
                        json!([table.get(f.token)])
                    }
                };
                json!({
                    "token_index": if input.toggles.depth_mean { Value::Null } else { json!(f.token) },
                    "ops": t.ops.iter().map(|o| json!({
                        "name": o.name, "layer": o.layer, "kind": o.kind, "mixing": o.mixing,
                        "sources": o.sources, "alpha": rows(&o.alpha), "shares": rows(&o.shares),
                    })).collect::<Vec<_>>(),
                })
            }
            FigureKind::TokenSource => {
                let o = &t.ops[op_at];
                json!({"ops": [{
                    "name": o.name, "layer": o.layer, "kind": o.kind, "mixing": o.mixing,
                    "sources": o.sources, "alpha": o.alpha, "shares": o.shares,
                }]})
            }
            FigureKind::Norms => json!({
                "ops": t.ops.iter().map(|o| json!({
                    "name": o.name, "layer": o.layer, "kind": o.kind,
                    "hidden_rms": o.hidden_rms, "output_rms": o.output_rms, "partial_rms": o.partial_rms,
                })).collect::<Vec<_>>(),
            }),
            FigureKind::Gradients => {
                let g = m.grads.ok_or_else(|| {
                    unavailable(kind, "the trace has no backward (trace with gradients)")
                })?;
                json!({
                    "grads": g.grads,
                    "ops": g.ops.iter().map(|o| json!({"name": o.name, "grad_rms": o.grad_rms})).collect::<Vec<_>>(),
                })
            }
            FigureKind::Training => {
                let log = m
                    .training
                    .ok_or_else(|| unavailable(kind, "the checkpoint carries no training log"))?;
                // NaN (no evaluation at that step) is JSON null.
                let opt = |v: &[f32]| -> Vec<Option<f32>> {
                    v.iter().map(|x| x.is_finite().then_some(*x)).collect()
                };
                json!({"training": {
                    "steps": log.steps,
                    "train_loss": opt(&log.train_loss),
                    "val_loss": opt(&log.val_loss),
                    "groups": log.groups,
                    "grad_norms": log.grad_norms,
                }})
            }
            FigureKind::Difference => {
                let diff = difference_of(&figs)?;
                return Ok(serde_json::to_string_pretty(
                    &json!({"figure": kind.name(), "difference": diff}),
                )?);
            }
        };
        let mut part = part;
        part["model"] = serde_json::to_value(&t.model)?;
        part["device"] = json!(t.device);
        part["tokens"] = serde_json::to_value(&t.tokens)?;
        out.push(part);
    }
    Ok(serde_json::to_string_pretty(&json!({
        "figure": kind.name(),
        "schema_version": crate::trace::TRACE_SCHEMA_VERSION,
        "selection": {"token": input.selection.token, "op": input.selection.op},
        "models": out,
    }))?)
}

/// The figure in `format` (PNG rendered from the SVG at `scale`).
pub fn render(
    kind: FigureKind,
    format: Format,
    input: &ViewInput,
    scale: f32,
) -> Result<Vec<u8>, Error> {
    Ok(match format {
        Format::Svg => svg(kind, input)?.into_bytes(),
        Format::Png => super::svg_to_png(&svg(kind, input)?, scale)?,
        Format::Csv => csv(kind, input)?.into_bytes(),
        Format::Json => json(kind, input)?.into_bytes(),
    })
}

/// Write `bytes` to `path` through a temporary file in the same folder, renamed into place, so
/// a failed or interrupted export leaves nothing half-written. An existing file is kept unless
/// `force`.
pub fn write_atomically(path: &Path, bytes: &[u8], force: bool) -> Result<(), Error> {
    use std::io::Write;
    if !force && path.exists() {
        return Err(Error::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".depthlens-").suffix(".part");
    // A temporary file is private (0600); the export is an ordinary file (0644, less umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if force {
        tmp.persist(path).map_err(|e| io(e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| match e.error.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists {
                    path: path.to_path_buf(),
                },
                _ => io(e.error),
            })?;
    }
    Ok(())
}

/// Every figure that `input` can draw, in every format, plus each model's `trace.json`
/// (`trace-B.json` for B), into `dir`. Figures a trace cannot draw (gradients without a
/// backward, a difference without two comparable models) are skipped and named in the result.
pub fn export_all(
    dir: &Path,
    input: &ViewInput,
    scale: f32,
    force: bool,
    progress: &dyn crate::progress::Progress,
) -> Result<(Vec<PathBuf>, Vec<String>), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    progress.start("export", (FigureKind::ALL.len() * Format::ALL.len()) as u64);
    let mut done = 0;
    for kind in FigureKind::ALL {
        for format in Format::ALL {
            done += 1;
            progress.advance(done);
            match render(kind, format, input, scale) {
                Ok(bytes) => {
                    let path = dir.join(format!("{}.{}", kind.name(), format.extension()));
                    write_atomically(&path, &bytes, force)?;
                    written.push(path);
                }
                Err(Error::Unavailable { figure, why }) => {
                    if format == Format::Svg {
                        skipped.push(format!("{figure}: {why}"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    for (i, m) in input.models.iter().enumerate() {
        let name = if i == 0 { "trace.json" } else { "trace-B.json" };
        let path = dir.join(name);
        write_atomically(
            &path,
            &serde_json::to_vec(m.grads.unwrap_or(m.trace))?,
            force,
        )?;
        written.push(path);
    }
    progress.finish();
    Ok((written, skipped))
}

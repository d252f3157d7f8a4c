//! Figures (SVG, PNG) and their data (CSV, JSON), written from a Trace; the CLI's `export` and
//! the app's export buttons both call this.

pub mod draw;
pub mod figure;
pub mod svg;
pub mod views;

use std::path::{Path, PathBuf};

use crate::analysis::{depth_profile, DepthProfile};
use crate::trace::Trace;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rendering PNG: {0}")]
    Render(String),
    #[error("serialising JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: exists; pass --force to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("figure `{figure}`: {why}")]
    Unavailable { figure: String, why: String },
}

/// The bundled font (DejaVu Sans, Bitstream Vera licence: assets/fonts/DejaVuSans.LICENSE), so
/// PNGs look the same on every machine.
pub const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Rasterise an SVG document at `scale` (2 gives a sharp figure for a README).
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, Error> {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_font_data(FONT.to_vec());
    opt.font_family = "DejaVu Sans".into();
    let tree = resvg::usvg::Tree::from_str(svg, &opt).map_err(|e| Error::Render(e.to_string()))?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).ceil() as u32,
        (size.height() * scale).ceil() as u32,
    );
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h)
        .ok_or_else(|| Error::Render(format!("empty canvas {w}x{h}")))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| Error::Render(e.to_string()))
}

/// The depth profile as CSV: one row per op.
pub fn depth_profile_csv(p: &DepthProfile) -> String {
    let mut s = String::from(
        "op,hidden_rms_median,output_rms_median,embedding_share_median,embedding_alpha_median\n",
    );
    for i in 0..p.ops.len() {
        s.push_str(&format!(
            "{},{},{},{},{}\n",
            p.ops[i], p.hidden_rms[i], p.output_rms[i], p.embedding_share[i], p.embedding_alpha[i]
        ));
    }
    s
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Write `depth_profile.{svg,png,csv}` and `trace.json` into `dir`; returns the paths written.
pub fn export_all(trace: &Trace, title: &str, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let profile = depth_profile(trace);
    let svg = svg::render(&figure::depth_profile_figure(title, &profile));
    let files = [
        ("depth_profile.svg", svg.clone().into_bytes()),
        ("depth_profile.png", svg_to_png(&svg, 2.0)?),
        (
            "depth_profile.csv",
            depth_profile_csv(&profile).into_bytes(),
        ),
        ("trace.json", serde_json::to_vec(trace)?),
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        write(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

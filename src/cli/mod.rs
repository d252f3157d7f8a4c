//! Command-line interface: one file per subcommand.

mod bench;
#[cfg(feature = "gui")]
mod bench_app;
mod export;
mod generate;
mod inspect;
mod kernels;
mod progress;
mod prompt;
mod trace;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use progress::BarProgress;

#[derive(Parser, Debug)]
#[command(
    name = "depthlens",
    version,
    about = "Look inside transformer language models along depth"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Checkpoint to open in the desktop app (a folder, a .safetensors or a .gguf file; default:
    /// the bundled Block AttnRes demo model).
    pub checkpoint: Option<PathBuf>,
    /// A second checkpoint to compare with the first, side by side.
    #[arg(long, value_name = "CKPT_B")]
    pub compare: Option<PathBuf>,
    /// The app's first prompt (default: the last one typed).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Where the app traces: `auto` runs the GPU engine on a real GPU and the CPU reference on a
    /// software adapter (where it is faster).
    #[arg(long, value_enum, default_value_t = trace::DeviceChoice::Auto)]
    pub device: trace::DeviceChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Architecture, sizes, dtypes, parameter count, AttnRes mode and block partition, tokenizer.
    Inspect(inspect::InspectArgs),
    /// Run a prompt through the model and write the Trace as JSON.
    Trace(trace::TraceArgs),
    /// Continue a prompt greedily with the reference forward (checks a checkpoint reads right).
    Generate(generate::GenerateArgs),
    /// Write the app's views as files: SVG, PNG, CSV or JSON (no window needed).
    Export(Box<export::ExportArgs>),
    /// Time the forward (GPU engine or CPU reference) and the GEMM kernel; prints tables.
    Bench(bench::BenchArgs),
    /// What the Vulkan driver compiled each kernel into: registers, spills, instruction counts.
    Kernels(kernels::KernelsArgs),
    /// Train a small baseline / Full / Block AttnRes model on a text corpus (CPU).
    Train(Box<train::TrainArgs>),
}

/// Run a parsed command line. Errors carry a one-line cause naming the file, tensor or field.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Trace(args)) => trace::run(args),
        Some(Command::Export(args)) => export::run(*args),
        Some(Command::Generate(args)) => generate::run(args),
        Some(Command::Train(args)) => train::run(*args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Kernels(args)) => kernels::run(args),
        None => run_app(cli.checkpoint, cli.compare, cli.prompt, cli.device),
    }
}

#[cfg(feature = "gui")]
fn run_app(
    checkpoint: Option<PathBuf>,
    compare: Option<PathBuf>,
    prompt: Option<String>,
    device: trace::DeviceChoice,
) -> anyhow::Result<ExitCode> {
    use crate::ui::worker::TracerChoice;
    for path in checkpoint.iter().chain(&compare) {
        // The app reports a broken file in its window; a path that does not exist is a typo.
        if !path.exists() {
            anyhow::bail!("{}: no such file or folder", path.display());
        }
    }
    crate::ui::run(crate::ui::AppOptions {
        checkpoint,
        compare,
        prompt,
        fresh_state: false,
        tracer: match device {
            trace::DeviceChoice::Auto => TracerChoice::Auto,
            trace::DeviceChoice::Cpu => TracerChoice::Cpu,
            trace::DeviceChoice::Gpu => TracerChoice::Gpu,
        },
    })
    .map_err(|e| anyhow::anyhow!("the desktop app failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "gui"))]
fn run_app(
    _checkpoint: Option<PathBuf>,
    _compare: Option<PathBuf>,
    _prompt: Option<String>,
    _device: trace::DeviceChoice,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this build has no desktop app (built without the `gui` feature); use `depthlens inspect` \
         or `depthlens trace` (see --help)"
    )
}

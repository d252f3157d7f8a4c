//! Command-line interface: one file per subcommand.

mod bench;
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
    /// Checkpoint to open in the desktop app (a folder, a .safetensors or a .gguf file).
    pub checkpoint: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Architecture, sizes, dtypes, parameter count, AttnRes mode and block partition, tokenizer.
    Inspect(inspect::InspectArgs),
    /// Run a prompt through the model and write the Trace as JSON.
    Trace(trace::TraceArgs),
    /// Continue a prompt greedily with the reference forward (checks a checkpoint reads right).
    Generate(generate::GenerateArgs),
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
        Some(Command::Generate(args)) => generate::run(args),
        Some(Command::Train(args)) => train::run(*args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Kernels(args)) => kernels::run(args),
        None => {
            eprintln!(
                "depthlens: the desktop app is not part of this build yet.\n\
                 Use `depthlens inspect CKPT` or `depthlens trace CKPT --prompt TEXT` (see --help)."
            );
            Ok(ExitCode::from(2))
        }
    }
}

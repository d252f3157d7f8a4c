//! The `depthlens` binary: parse the command line, dispatch, report errors with exit code 2.

use std::process::ExitCode;

use clap::Parser;

/// A trace builds and drops tens of thousands of small per-token rows; mimalloc's small
/// allocations are several times cheaper than glibc's (measured on the H100 host: BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = depthlens::cli::Cli::parse();
    match depthlens::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

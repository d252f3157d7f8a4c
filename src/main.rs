//! The `depthlens` binary: parse the command line, dispatch, report errors with exit code 2.

use std::process::ExitCode;

use clap::Parser;

/// A trace builds and drops tens of thousands of small per-token rows; mimalloc's small
/// allocations are several times cheaper than glibc's (measured on the H100 host: BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Iterations candle's element-wise worker threads spin before they sleep, unless the user sets
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT`. Candle's default (25 000) keeps them spinning through the
/// GEMMs that follow, on the cores the GEMM's own threads need: on the 16-core H100 host a
/// 16-thread CPU trace took 499-678 ms with the default and 174-188 ms with 200 (2 threads:
/// the same within noise). BENCHMARKS.md has the run.
const CANDLE_SPIN_LIMIT: &str = "200";

fn main() -> ExitCode {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Before any thread exists (candle reads it when its pool starts), so nothing races it.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
    }
    let cli = depthlens::cli::Cli::parse();
    match depthlens::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

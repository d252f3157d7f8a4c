//! The `depthlens` binary: parse the command line, dispatch, report errors with exit code 2.

use std::process::ExitCode;

use clap::Parser;

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

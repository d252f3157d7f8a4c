#!/usr/bin/env bash
# The test command of README.md: set up a fresh machine, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two cores: two test binaries at a time, each test single-threaded inside candle where it matters.
cargo test --all-targets "$@"

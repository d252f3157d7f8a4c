#!/usr/bin/env bash
# The test command of README.md: set up a fresh machine, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The SmolLM2 GGUF that tests/gguf.rs needs (cached in .cache/, never in git); those tests fail
# without it.
bash scripts/fetch-smollm2.sh >/dev/null
cargo test --all-targets "$@"

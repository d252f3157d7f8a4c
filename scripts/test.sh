#!/usr/bin/env bash
# The test command of README.md: set up a fresh machine, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The SmolLM2 GGUF that tests/gguf.rs needs (cached in .cache/, never in git); those tests fail
# without it.
bash scripts/fetch-smollm2.sh >/dev/null
# wgpu's Vulkan loader complains without a runtime dir (CI runs as root with none).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR; XDG_RUNTIME_DIR=$(mktemp -d)
fi
cargo test --all-targets "$@"

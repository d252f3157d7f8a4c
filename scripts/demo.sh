#!/usr/bin/env bash
# The main job of README.md: trace a prompt through the bundled Block AttnRes demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --bin depthlens
bin=target/debug/depthlens
model=assets/demo/block.safetensors
prompt="${1:-To be, or not to be, that is the question:}"
"$bin" inspect "$model"
echo
"$bin" trace "$model" --prompt "$prompt" --grads --summary --export out/demo
echo "figure, data and full Trace: out/demo/ (depth_profile.svg/.png/.csv, trace.json)"

#!/usr/bin/env bash
# The main job of README.md: the desktop app on the bundled Block AttnRes demo model (builds
# everything, installs missing system packages). Extra arguments go to the app, e.g.
#   bash scripts/demo.sh assets/demo/full.safetensors --compare assets/demo/baseline.safetensors
# Without a display (DISPLAY / WAYLAND_DISPLAY unset) the app runs under Xvfb for a while and a
# screenshot of it is saved to out/demo/app.png instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin depthlens
bin=target/release/depthlens
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR; XDG_RUNTIME_DIR=$(mktemp -d)
fi
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec "$bin" "$@"
fi
mkdir -p out/demo
echo "demo: no display; running the app under Xvfb and saving a screenshot" >&2
xvfb-run -a -s "-screen 0 1600x1000x24" bash -c '
  "$0" "$@" & app=$!
  sleep "${DEPTHLENS_DEMO_SECONDS:-15}"
  import -window root out/demo/app.png
  kill $app
' "$bin" "$@"
echo "screenshot of the app: out/demo/app.png"

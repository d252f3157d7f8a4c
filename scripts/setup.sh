#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test depthlens:
# Mesa's software Vulkan (lavapipe) and the loader for GPU tests without a GPU, Xvfb and
# ImageMagick for screenshots of the app. The Rust toolchain (1.95) must already be there.
set -euo pipefail
need=()
for pkg in mesa-vulkan-drivers libvulkan1 xvfb xauth imagemagick; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95 (rustup) first" >&2
  exit 1
fi

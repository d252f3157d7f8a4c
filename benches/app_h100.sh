#!/usr/bin/env bash
# The desktop app's latency figures of BENCHMARKS.md, on the lent GPU machine (run from the
# repository root there, with .gl/ and .bench/depthlens carried: a release build with the app).
# The app runs headless (egui_kittest, the wgpu renderer) on the GPU it finds, as a window would.
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig; I=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $I ] && export VK_DRIVER_FILES=$I
export XDG_RUNTIME_DIR; XDG_RUNTIME_DIR=$(mktemp -d)
B=.bench/depthlens
for m in baseline,30,576 block,30,576; do echo "### app, synthetic $m (the SmolLM2-135M shape)"; $B bench --synthetic $m --app --tokens 16,64,128 --iters 20; done
echo "### app, the Block demo model"; $B bench assets/demo/block.safetensors --app --tokens 16,64,96 --iters 20
echo "### app, the Block demo model, CPU reference"; $B bench assets/demo/block.safetensors --app --tokens 16,64,96 --iters 20 --device cpu
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

#!/usr/bin/env bash
# Where the depth kernel's ~30 us per op goes on the H100 (session 3 left this to run): the
# shipped kernel against variants that drop one part each, by GPU timestamps. Run from the
# repository root on the GPU machine, with .gl/ and .bench/depthlens carried (see BENCHMARKS.md).
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig; I=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $I ] && export VK_DRIVER_FILES=$I
B=.bench/depthlens
for v in shipped empty loads-and-writes no-reductions branchless-loads; do
  S=""; [ $v != shipped ] && S="--shader benches/depth-experiments/$v/depth.wgsl"
  echo "## $v"
  $B bench --synthetic block,12,768 --tokens 512 --iters 3 --profile 512 $S | grep -E "sum|depth_cached|sublayer_out|silu_mul"
done

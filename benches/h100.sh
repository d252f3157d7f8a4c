#!/usr/bin/env bash
# Every figure of BENCHMARKS.md in one command, on the lent GPU machine (run from the repository
# root there, with .gl/ and .bench/depthlens carried; see BENCHMARKS.md "How to reproduce").
for f in .gl/*.deb; do dpkg -x $f / >/dev/null; done; ldconfig; I=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $I ] && export VK_DRIVER_FILES=$I
B=.bench/depthlens
echo "### GEMM"; $B bench --synthetic block,12,768 --matmul | tail -11; python3 benches/torch_forward.py --synthetic block,12,768 --matmul | tail -6
for a in baseline full block; do echo "### $a 12x768"; $B bench --synthetic $a,12,768 --tokens 64,128,512,2048 --iters 20 | tail -4; python3 benches/torch_forward.py --synthetic $a,12,768 --tokens 64,128,512,2048 --iters 20 | tail -4; done
echo "### fused attention (flash_attention)"; for a in baseline block; do $B bench --synthetic $a,12,768 --tokens 512,2048 --iters 20 --attention fused | tail -2; done; $B bench --synthetic block,30,576 --tokens 64 --iters 30 --attention fused | tail -1; $B bench --synthetic block,12,768 --tokens 512 --iters 3 --profile 512 --attention fused | sed -n '/GPU time/,$p'
echo "### compile"; python3 benches/torch_forward.py --synthetic block,12,768 --tokens 512 --compile 2>/dev/null | tail -3
for a in baseline full block; do echo "### $a 30x576"; $B bench --synthetic $a,30,576 --tokens 64 --iters 30 | tail -1; python3 benches/torch_forward.py --synthetic $a,30,576 --tokens 64 --iters 20 | tail -1; done
echo "### profile block 512"; $B bench --synthetic block,12,768 --tokens 512 --iters 3 --profile 512 | sed -n '/GPU time/,$p'
echo "### profile full 512"; $B bench --synthetic full,12,768 --tokens 512 --iters 3 --profile 512 | grep -E "GPU time|depth"
echo "### profile block 64"; $B bench --synthetic block,30,576 --tokens 64 --iters 3 --profile 64 | sed -n '/GPU time/,$p'
echo "### profile full 64"; $B bench --synthetic full,30,576 --tokens 64 --iters 3 --profile 64 | grep -E "GPU time|depth"
echo "### depth cost (AttnRes against every depth weight 1)"; for m in block,12,768 full,12,768; do $B bench --synthetic $m --tokens 64,512,2048 --iters 10 --depth-cost | sed -n '/What AttnRes/,$p'; done; $B bench --synthetic block,30,576 --tokens 64 --iters 20 --depth-cost | sed -n '/What AttnRes/,$p'
echo "### cpu"; RAYON_NUM_THREADS=2 $B bench --synthetic block,12,768 --tokens 128 --device cpu --iters 3 --warmup 1 | tail -1; python3 benches/torch_forward.py --synthetic block,12,768 --tokens 128 --cpu-threads 2 --iters 5 | tail -1; RAYON_NUM_THREADS=16 $B bench --synthetic block,12,768 --tokens 128 --device cpu --iters 3 --warmup 1 | tail -1; python3 benches/torch_forward.py --synthetic block,12,768 --tokens 128 --cpu-threads 16 --iters 5 | tail -1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

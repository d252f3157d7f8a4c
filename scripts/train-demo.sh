#!/usr/bin/env bash
# Reproduces the three demo checkpoints in assets/demo/ (see assets/README.md): same data,
# tokenizer, size, steps and seed; only the depth mixing differs. ~20 minutes each on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$(bash scripts/fetch-corpus.sh)
cargo build --bin depthlens
bin=${DEPTHLENS_BIN:-target/debug/depthlens}
mkdir -p assets/demo
common=(--corpus "$corpus" --val assets/data/tempest.txt --tokenizer assets/demo/tokenizer.json
        --vocab 2048 --layers 8 --dim 128 --heads 4 --seq-len 128 --batch 16
        --steps 500 --warmup 50 --lr 3e-3 --eval-every 25 --seed 1)
for arch in "${@:-baseline full block}"; do
  for a in $arch; do
    extra=()
    [ "$a" = block ] && extra=(--block-size 4)
    echo "== $a" >&2
    /usr/bin/time -f "$a wall %e s" "$bin" train --arch "$a" "${extra[@]}" "${common[@]}" --out "assets/demo/$a.safetensors"
  done
done

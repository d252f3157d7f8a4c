"""Where the depth kernel's ~30 us per op goes on the H100 (session 3 left this to run).

Writes variants of shaders/depth.wgsl that each drop one part of `main_cached` (results wrong on
purpose, except `branchless-loads`), then times the shipped kernel against each by GPU timestamps
with `depthlens bench --shader`. Run from the repository root on the GPU machine, with .gl/ and
.bench/depthlens carried (see BENCHMARKS.md), after unpacking .gl as benches/h100.sh does:

    python3 benches/depth_experiments.py
"""

import os
import subprocess
import sys

SHIPPED = open("shaders/depth.wgsl").read()


def replaced(text, old, new):
    if text.count(old) != 1:
        sys.exit(f"depth.wgsl changed: the experiment's anchor is gone:\n{old}")
    return text.replace(old, new)


def variants():
    cached = SHIPPED.index("fn main_cached")
    head, body = SHIPPED[:cached], SHIPPED[cached:]
    early = "    if (lt >= p.tc) { return; }\n"
    yield "empty", "main_cached returns at once: the dispatch floor", head + replaced(
        body, early, "    if (lt >= p.tc || p.tc > 0u) { return; }\n"
    )
    sums = "fn cached_sums(lid: u32, part: array<f32, CR>) -> array<f32, CR> {"
    no_red = replaced(SHIPPED, sums, sums + "\n    if (lid < 100000u) { return part; }")
    yield "no-reductions", "cached_sums returns its own part", no_red
    scoring = "    if (p.mode == 1u) {\n        var q: array<f32, CE>;"
    yield "loads-and-writes", "no scoring, no reductions", replaced(
        no_red, scoring, scoring.replace("1u", "7u")
    )
    loads = """        if (c < p.n) {
            let slot = slots[p.list_off + c];
            let base = (slot * p.tc + lt) * p.d;
            ms[c] = stats[p.ms_off + slot * p.t + t];
            for (var e = 0u; e < CE; e++) {
                let j = lid + e * CWG;
                if (j < p.d) { v[c * CE + e] = src[base + j]; }
            }
        }"""
    branchless = """        let slot = slots[p.list_off + min(c, p.n - 1u)];
        let base = (slot * p.tc + lt) * p.d;
        ms[c] = select(1.0, stats[p.ms_off + slot * p.t + t], c < p.n);
        for (var e = 0u; e < CE; e++) {
            let j = lid + e * CWG;
            v[c * CE + e] = select(0.0, src[base + min(j, p.d - 1u)], j < p.d && c < p.n);
        }"""
    yield "branchless-loads", "same results, loads without branches", replaced(
        SHIPPED, loads, branchless
    )


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    runs = [("shipped", "", None)]
    os.makedirs(".bench/depth-experiments", exist_ok=True)
    for name, what, text in variants():
        path = f".bench/depth-experiments/{name}/depth.wgsl"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        runs.append((name, what, path))
    # Per kernel by timestamps (one pass per dispatch), then the whole forward without them: the
    # shipped forward minus the `empty` one is what the depth ops really cost in the pipelined
    # forward (the report's "inference overhead" is measured that way).
    for name, what, path in runs:
        print(f"## {name}" + (f" ({what})" if what else ""), flush=True)
        shader = ["--shader", path] if path else []
        base = [binary, "bench", "--synthetic", "block,12,768", "--tokens", "512"]
        profiled = base + ["--iters", "3", "--profile", "512"] + shader
        out = subprocess.run(profiled, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if any(k in line for k in ("sum ", "depth_cached", "sublayer_out", "silu_mul")):
                print(line)
        whole = base + ["--iters", "30"] + shader
        out = subprocess.run(whole, capture_output=True, text=True, check=True).stdout
        print("forward:", out.splitlines()[-1])


if __name__ == "__main__":
    main()

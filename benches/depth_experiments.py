"""Where the depth kernel's time goes on the H100, and which shape of `main_cached` is fastest.

Writes variants of shaders/depth.wgsl (`empty` and `no-reductions` drop one part of `main_cached`,
wrong results on purpose; the others change its shape), then times the shipped kernel against
each by GPU timestamps with `depthlens bench --shader`, on the 12x768 Block model at 512 tokens
and the 30x576 one at 64. Run from the repository root on the GPU machine, with .gl/ and
.bench/depthlens carried (see BENCHMARKS.md), after unpacking .gl as benches/h100.sh does:

    python3 benches/depth_experiments.py [VARIANT ...]
"""

import os
import subprocess
import sys

from shader_variants import replaced, with_consts, write_variants

SHIPPED = open("shaders/depth.wgsl").read()
CACHED_MARK = "// ---------------------------------------------------------------------------------------------\n// `main_cached`"


def cached(text):
    """main_cached's section of `text` (constants are overridden there only)."""
    return slice(text.index(CACHED_MARK), len(text))


def in_cached(text, old, new):
    """`text` with `old` replaced by `new` in main_cached's section only."""
    section = cached(text)
    return text[: section.start] + replaced(text[section], old, new)


def variants():
    early = "    if (lt >= p.tc) { return; }\n    let t = p.t0 + lt;\n    let d4"
    yield "empty", "main_cached returns at once: the dispatch floor", in_cached(
        SHIPPED, early, early.replace("p.tc", "p.tc || p.tc > 0u")
    )
    sums = "fn cached_sums(lid: u32, part: array<f32, CR>) -> array<f32, CR> {"
    yield "no-reductions", "cached_sums returns its own part", replaced(
        SHIPPED, sums, sums + "\n    if (lid < 100000u) { return part; }"
    )
    # AttnRes's own share: the same kernel summing its sources with weight 1, as a PreNorm
    # residual stream does (Block's sources sum to that stream), with the same norm and Trace
    # statistics; the report's "inference overhead" compares against that.
    text = SHIPPED
    for anchor in [
        "        if (p.mode == 1u) {\n            var q",
        "        if (p.mode == 1u) {\n            // Softmax",
        "    if (p.mode != 1u) {\n        for (var c = 0u; c < CN; c++) { w[c] = select(",
    ]:
        text = in_cached(text, anchor, anchor.replace("1u", "7u", 1))
    yield "residual-sum", "weights all 1: no scoring, no softmax", text
    # The rest give the shipped results on the 12x768 and 30x576 Block models (n <= 9 there).
    yield "one-build-12", "every op on the build for 12 sources", with_consts(SHIPPED, cached(SHIPPED), CN=12)
    yield "one-build-9", "every op on the build for 9 sources", with_consts(SHIPPED, cached(SHIPPED), CN=9)
    yield "wg128", "128 threads x 2 vec4s per token", with_consts(SHIPPED, cached(SHIPPED), CWG=128, CE=2)


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    # Variant names on the command line run only those (beside the shipped kernel).
    runs = write_variants(variants(), ".bench/depth-experiments", "depth.wgsl", set(sys.argv[1:]))
    # Per kernel by timestamps (one pass per dispatch), then the whole forward without them: the
    # shipped forward minus the `empty` one is what the depth ops really cost in the pipelined
    # forward (the report's "inference overhead" is measured that way).
    models = [("block,12,768", "512"), ("block,30,576", "64")]
    for name, what, path in runs:
        print(f"## {name}" + (f" ({what})" if what else ""), flush=True)
        shader = ["--shader", path] if path else []
        for model, tokens in models:
            base = [binary, "bench", "--synthetic", model, "--tokens", tokens]
            profiled = base + ["--iters", "3", "--profile", tokens] + shader
            out = subprocess.run(profiled, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                if any(k in line for k in ("sum ", "depth", "sublayer_out")):
                    print(model, line)
            whole = base + ["--iters", "30"] + shader
            out = subprocess.run(whole, capture_output=True, text=True, check=True).stdout
            print(model, "forward:", out.splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

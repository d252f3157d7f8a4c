"""Where the depth kernel's time goes on the H100, and which shape of `main_cached` is fastest.

Writes variants of shaders/depth.wgsl (`empty` and `no-reductions` drop one part of `main_cached`,
wrong results on purpose; the others change its shape), then times the shipped kernel against
each by GPU timestamps with `depthlens bench --shader`, on the 12x768 Block model at 512 tokens
and the 30x576 one at 64. Run from the repository root on the GPU machine, with .gl/ and
.bench/depthlens carried (see BENCHMARKS.md), after unpacking .gl as benches/h100.sh does:

    python3 benches/depth_experiments.py [VARIANT ...]
"""

import os
import re
import subprocess
import sys

SHIPPED = open("shaders/depth.wgsl").read()
# Where the cached kernel's section starts: constants are overridden from here on only.
CACHED_SECTION = "// ---------------------------------------------------------------------------------------------\n// `main_cached`"


def replaced(text, old, new):
    if text.count(old) != 1:
        sys.exit(f"depth.wgsl changed: the experiment's anchor is gone:\n{old}")
    return text.replace(old, new)


def with_consts(text, **consts):
    """`text` with main_cached's constants (CWG, CE, CN) overridden: the host prepends its own,
    so the variant renames them in the cached section and declares the new values."""
    cut = text.index(CACHED_SECTION)
    head, body = text[:cut], text[cut:]
    decl = ""
    for name, value in consts.items():
        body = re.sub(rf"\b{name}\b", f"X{name}", body)
        decl += f"const X{name}: u32 = {value}u;\n"
    return decl + head + body


def in_cached(old, new):
    """The shipped file with `old` replaced by `new` in main_cached's section only."""
    cut = SHIPPED.index(CACHED_SECTION)
    return SHIPPED[:cut] + replaced(SHIPPED[cut:], old, new)


def variants():
    early = "    if (lt >= p.tc) { return; }\n    let t = p.t0 + lt;\n    let d4"
    yield "empty", "main_cached returns at once: the dispatch floor", in_cached(
        early, early.replace("p.tc", "p.tc || p.tc > 0u")
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
        cut = text.index(CACHED_SECTION)
        text = text[:cut] + replaced(text[cut:], anchor, anchor.replace("1u", "7u", 1))
    yield "residual-sum", "weights all 1: no scoring, no softmax", text
    # The rest give the shipped results on the 12x768 and 30x576 Block models (n <= 9 there).
    yield "one-build-12", "every op on the build for 12 sources", with_consts(SHIPPED, CN=12)
    yield "one-build-9", "every op on the build for 9 sources", with_consts(SHIPPED, CN=9)
    yield "wg128", "128 threads x 2 vec4s per token", with_consts(SHIPPED, CWG=128, CE=2)


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    # Variant names on the command line run only those (beside the shipped kernel).
    wanted = set(sys.argv[1:])
    runs = [("shipped", "", None)]
    os.makedirs(".bench/depth-experiments", exist_ok=True)
    for name, what, text in variants():
        if wanted and name not in wanted:
            continue
        path = f".bench/depth-experiments/{name}/depth.wgsl"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        runs.append((name, what, path))
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

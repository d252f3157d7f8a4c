"""Which shape of `gemm_nt` is fastest on the H100 (the 4096^3 target and the model's own GEMMs).

Writes variants of shaders/matmul.wgsl's `gemm_nt` (the other kernels stay as shipped), then times
the shipped file against each with `depthlens bench --matmul --shader` and the whole 12x768 Block
forward at 512 and 2048 tokens. Every variant computes the same tile per workgroup as the shipped
build it replaces (the host's dispatch grid is unchanged) and gives the shipped results; some need
more than WebGPU's default 16 KB of workgroup memory, which the engine's own device has on the H100
(it asks for the adapter's limits). Run from the repository root on the GPU machine, with .gl/ and
.bench/depthlens carried (see BENCHMARKS.md), after unpacking .gl as benches/h100.sh does:

    python3 benches/gemm_experiments.py [VARIANT ...]
"""

import os
import subprocess
import sys
import textwrap

from shader_variants import between, replaced, with_consts, write_variants

SHIPPED = open("shaders/matmul.wgsl").read()


def nt(text):
    """gemm_nt's section of `text`."""
    start = text.index("// ---- NT fast path")
    return slice(start, text.index("// Split-K second pass", start))


def in_nt(text, edits):
    """`text` with each (old, new) of `edits` replaced in gemm_nt's section only."""
    section = nt(text)
    body = text[section]
    for old, new in edits:
        body = replaced(body, old, new)
    return text[: section.start] + body + text[section.stop :]


# Pieces of the shipped gemm_nt the variants reuse, so that they differ from it only where they
# mean to: its setup up to the register arrays, the first slice's loads, the stores of a slice
# into workgroup memory, the read-ahead of the next slice, and the multiply of a slice.
NT = SHIPPED[nt(SHIPPED)]
SETUP = between(NT, "    let batch = wg.z / p.splits;", "    var ra:")
FIRST_LOADS = between(NT, "    for (var s = 0u; s < GLOAD_A; s++) {\n        let e = lid + s * GTHREADS;\n        let row", "\n    for (var k0")
STORES = between(NT, "        for (var s = 0u; s < GLOAD_A; s++) {\n            let e = lid + s * GTHREADS;\n            sa[", "        workgroupBarrier();\n        let k1")
READ_AHEAD = between(NT, "        let k1 = k0 + GBK;\n", "        for (var kq")
MULTIPLY = between(NT, "        for (var kq", "        workgroupBarrier();\n    }\n\n    if (p.splits")
LOOP = between(NT, "    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n", "    if (p.splits > 1u) {\n")


def offset(stores_or_reads, a, b):
    """Workgroup-tile accesses moved to the buffer at offsets `a` (of sa) and `b` (of sb)."""
    return stores_or_reads.replace("sa[(", f"sa[{a} + (").replace("sb[(", f"sb[{b} + (")


# Two workgroup-memory buffers per operand: the slice read ahead into registers is stored into the
# other buffer while this one is multiplied, so one barrier per slice instead of two.
DOUBLE_BUFFERED_LOOP = (
    textwrap.dedent(STORES).replace("\n", "\n    ").rstrip(" ").replace("for", "    for", 1)
    + "    workgroupBarrier();\n    var cur = 0u;\n    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n"
    + READ_AHEAD
    + "        let oa = cur * GBM * GPAD;\n        let ob = cur * GBN * GPAD;\n"
    + offset(MULTIPLY, "oa", "ob")
    + "        if (k1 < k_end) {\n            let na = (1u - cur) * GBM * GPAD;\n            let nb = (1u - cur) * GBN * GPAD;\n"
    + textwrap.indent(offset(STORES, "na", "nb"), "    ")
    + "        }\n        workgroupBarrier();\n        cur = 1u - cur;\n    }\n\n"
)


def double_buffered(text):
    return in_nt(
        text,
        [
            (LOOP, DOUBLE_BUFFERED_LOOP),
            ("array<vec4<f32>, GBM * GPAD>;", "array<vec4<f32>, 2u * GBM * GPAD>;"),
            ("array<vec4<f32>, GBN * GPAD>;", "array<vec4<f32>, 2u * GBN * GPAD>;"),
        ],
    )


# The large build (8 x 4 per thread) as 8 x 8 per thread in the outer-product layout: workgroup
# tiles stored k-major (in sa and sb, which hold them), so a thread reads two vec4s of rows and
# two of columns per k and does 16 vec4 FMAs into named accumulators (an indexed 8 x 8 array
# spills). Setup, global loads and read-ahead are gemm_nt's. Other builds keep gemm_nt's path.
OUTER_NAMES = [f"c{i}{h}" for i in range(8) for h in range(2)]
OUTER_FMAS = "".join(
    f"            c{i}0 = fma(vec4<f32>(a{i // 4}.{'xyzw'[i % 4]}), b0, c{i}0); "
    f"c{i}1 = fma(vec4<f32>(a{i // 4}.{'xyzw'[i % 4]}), b1, c{i}1);\n"
    for i in range(8)
)
OUTER_ROWS = "".join(
    f"    outer_row({'r' if i < 4 else 'r2'} + {i % 4}u, cc, c_base, part, c{i}0, c{i}1);\n"
    for i in range(8)
)
OUTER_STORE = """        for (var s = 0u; s < GLOAD_{X}; s++) {{
            let e = lid + s * GTHREADS;
            let k = (e % GKQ) * 4u;
            let v = r{x}[s];
            for (var j = 0u; j < 4u; j++) {{ outer_store({is_a}, (k + j) * 4u * OS{X} + e / GKQ, v[j]); }}
        }}
"""
OUTER = (
    """
const XGTN: u32 = select(GTN, 8u, GTM == 8u);
const OSA: u32 = GBM / 4u + 1u; // vec4s per k-row of A, padded
const OSB: u32 = GBN / 4u + 1u;

fn outer_store(is_a: bool, idx: u32, v: f32) {
    if (is_a) { sa[idx / 4u][idx % 4u] = v; } else { sb[idx / 4u][idx % 4u] = v; }
}

fn outer_row(row: u32, col0: u32, c_base: u32, part: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (row >= p.m) { return; }
    let cols = array<vec4<f32>, 2>(v0, v1);
    for (var half = 0u; half < 2u; half++) {
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + half * 4u * GWX + j;
            if (col >= p.n) { continue; }
            if (p.splits > 1u) { c[part + row * p.n + col] = cols[half][j]; continue; }
            var v = p.alpha * cols[half][j];
            if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
            let idx = c_base + row * p.c_rs + col;
            if (p.accumulate != 0u) { v += c[idx]; }
            c[idx] = v;
        }
    }
}

fn gemm_nt_outer(wg: vec3<u32>, lid: u32, l: vec3<u32>) {
"""
    + SETUP
    + "    var ra: array<vec4<f32>, GLOAD_A>;\n    var rb: array<vec4<f32>, GLOAD_B>;\n"
    + "".join(f"    var {n} = vec4<f32>(0.0);\n" for n in OUTER_NAMES)
    + FIRST_LOADS
    + "\n    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n"
    + OUTER_STORE.format(X="A", x="a", is_a="true")
    + OUTER_STORE.format(X="B", x="b", is_a="false")
    + "        workgroupBarrier();\n"
    + READ_AHEAD
    + """        for (var kk = 0u; kk < GBK; kk++) {
            let a0 = sa[kk * OSA + l.y];
            let a1 = sa[kk * OSA + GWY + l.y];
            let b0 = sb[kk * OSB + l.x];
            let b1 = sb[kk * OSB + GWX + l.x];
"""
    + OUTER_FMAS
    + """        }
        workgroupBarrier();
    }
    let part = split * p.split_stride + batch * p.m * p.n;
    let c_base = p.c_off + batch * p.c_bstride;
    let r = row0 + l.y * 4u;
    let r2 = r + 4u * GWY;
    let cc = col0 + l.x * 4u;
"""
    + OUTER_ROWS
    + "}\n\n"
)


def outer_8x8(text):
    entry = "@compute @workgroup_size(GWX, GWY, 1)\nfn gemm_nt("
    first = "           @builtin(local_invocation_id) l: vec3<u32>) {\n"
    return in_nt(
        text,
        [
            ("const GWX: u32 = GBN / GTN;", "const GWX: u32 = GBN / XGTN;"),
            (entry, OUTER + entry),
            (first, first + "    if (GTM == 8u) { gemm_nt_outer(wg, lid, l); return; }\n"),
        ],
    )


# Fewer live registers (more workgroups per multiprocessor): the multiply holds B's GTN vec4s
# and one A vec4 at a time instead of all GTM + GTN.
ROWWISE_MULTIPLY = replaced(
    replaced(
        MULTIPLY,
        "            var av: array<vec4<f32>, GTM>;\n",
        "",
    ),
    """            for (var i = 0u; i < GTM; i++) { av[i] = sa[(l.y + i * GWY) * GPAD + kq]; }
""",
    "",
)
ROWWISE_MULTIPLY = replaced(
    ROWWISE_MULTIPLY,
    """            for (var i = 0u; i < GTM; i++) {
                for (var j = 0u; j < GTN; j++) {
                    let x = av[i];
""",
    """            for (var i = 0u; i < GTM; i++) {
                let x = sa[(l.y + i * GWY) * GPAD + kq];
                for (var j = 0u; j < GTN; j++) {
""",
)

# No read-ahead: each slice is loaded from global memory and stored straight into workgroup
# memory, so the loaded vec4s are not live across the multiply (latency left to occupancy).
DIRECT_LOOP = (
    "    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n"
    + textwrap.indent(FIRST_LOADS.replace("k_begin +", "k0 +"), "    ").rstrip() + "\n"
    + STORES
    + "        workgroupBarrier();\n"
    + MULTIPLY
    + "        workgroupBarrier();\n    }\n\n"
)


def direct(text, multiply=MULTIPLY):
    return in_nt(
        text,
        [
            (FIRST_LOADS, ""),
            (LOOP, DIRECT_LOOP.replace(MULTIPLY, multiply)),
        ],
    )


def variants():
    yield "rowwise", "one A vec4 live at a time in the multiply", in_nt(SHIPPED, [(MULTIPLY, ROWWISE_MULTIPLY)])
    yield "direct", "no register read-ahead of the next slice", direct(SHIPPED)
    yield "rowwise_direct", "both", direct(SHIPPED, ROWWISE_MULTIPLY)
    yield "bk32", "32-deep slices (half the barriers; 27 KB of workgroup memory)", with_consts(
        SHIPPED, nt(SHIPPED), GBK=32
    )
    yield "double", "double-buffered workgroup tiles, one barrier per slice (30 KB)", double_buffered(
        SHIPPED
    )
    # The large tile (128 x 64) with 4 x 8 outputs per thread instead of 8 x 4: threads then read
    # 4 A and 8 B vec4s per step, and a warp reads more distinct A rows.
    yield "t4x8", "4 x 8 outputs per thread", with_consts(SHIPPED, nt(SHIPPED), GTM=4, GTN=8)
    yield "outer8x8", "the large build as 8 x 8 per thread, outer-product layout", outer_8x8(SHIPPED)


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    runs = write_variants(variants(), ".bench/gemm-experiments", "matmul.wgsl", set(sys.argv[1:]))
    for name, what, path in runs:
        print(f"## {name}" + (f" ({what})" if what else ""), flush=True)
        shader = ["--shader", path] if path else []
        model = [binary, "bench", "--synthetic", "block,12,768"]
        out = subprocess.run(model + ["--matmul", "--check"] + shader, capture_output=True, text=True)
        if out.returncode != 0:
            print("failed:", out.stderr.strip().splitlines()[-1:], flush=True)
            continue
        print("\n".join(out.stdout.splitlines()[-9:]), flush=True)
        forward = model + ["--tokens", "512,2048", "--iters", "20"] + shader
        out = subprocess.run(forward, capture_output=True, text=True, check=True).stdout
        print("\n".join(out.splitlines()[-2:]), flush=True)


if __name__ == "__main__":
    main()

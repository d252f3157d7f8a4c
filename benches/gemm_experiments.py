"""Which shape of `gemm_nt` is fastest on the H100 (the 4096^3 target and the model's own GEMMs).

Writes variants of shaders/matmul.wgsl's `gemm_nt` (the other kernels stay as shipped), then times
the shipped file against each with `depthlens bench --matmul --shader` and the whole 12x768 Block
forward at 512 and 2048 tokens. Every variant computes the same tiles as the shipped build it
replaces (the host's dispatch grid is unchanged; `grouped` only reorders which workgroup takes
which) and gives the shipped results, except the tile-only ones (TILES), timed on their own
`--tile` beside the shipped build of it; some need
more than WebGPU's default 16 KB of workgroup memory, which the engine's own device has on the H100
(it asks for the adapter's limits). Run from the repository root on the GPU machine, with .gl/ and
.bench/depthlens carried (see BENCHMARKS.md), after unpacking .gl as benches/h100.sh does:

    python3 benches/gemm_experiments.py [VARIANT ...]

`--write-only` writes the variants' files (.bench/gemm-experiments/NAME/matmul.wgsl), prints their
paths and runs nothing (for checking them elsewhere).

Since commit b91263f the variants are of the earlier, dot-product gemm_nt (commit cce4c19, read with
`git show`): they reproduce the 2026-11-23/24 GEMM results, and time against today's shipped kernel.
"""

import os
import re
import subprocess
import sys
import textwrap

from shader_variants import between, replaced, with_consts, write_variants

# The variants edit the gemm_nt of cce4c19 (dot products over k-contiguous staged tiles), which
# b91263f replaced with outer products over k-major tiles; they are kept to reproduce the
# 2026-11-23/24 GEMM results files. Their base is that file as of commit cce4c19, from git.
BASE_COMMIT = "cce4c19"
try:
    SHIPPED = subprocess.run(
        ["git", "show", f"{BASE_COMMIT}:shaders/matmul.wgsl"], capture_output=True, text=True, check=True
    ).stdout
except (OSError, subprocess.CalledProcessError) as e:
    sys.exit(f"the variants edit shaders/matmul.wgsl as of {BASE_COMMIT}; `git show` failed ({e}): "
             f"run --write-only in a git checkout and carry .bench/gemm-experiments")


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


# Where gemm_nt begins, and its first line after the signature: variants that take their own
# path insert their code there.
NT_ENTRY = "@compute @workgroup_size(GWX, GWY, 1)\nfn gemm_nt("
NT_FIRST = "           @builtin(local_invocation_id) l: vec3<u32>) {\n"


# warp2d: the same tile and ownership rule, with the thread's (x, y) taken from its index so a
# 32-lane warp is 8 x 4 threads instead of 16 x 2: its B reads are then 8 distinct vec4s (one
# 128-byte shared-memory wavefront, not two) and its A reads 4 broadcast rows. Builds whose
# GWX is not a multiple of 8 or GWY of 4 keep the shipped (x, y) (the const `select`).
WARP2D_CONSTS = """
const W2D: bool = (GWX % 8u) + (GWY % 4u) == 0u; // whole 8 x 4 warps tile the workgroup
const W2D_X: u32 = max(GWX / 8u, 1u); // warps across a row of threads
"""
WARP2D_MAP = """    let lane = lid % 32u;
    let warp = lid / 32u;
    let tx = select(l.x, (warp % W2D_X) * 8u + lane % 8u, W2D);
    let ty = select(l.y, (warp / W2D_X) * 4u + lane / 8u, W2D);
"""


def warp2d(text):
    """`text` with every l.x / l.y of gemm_nt (from its signature on) read as the remapped tx /
    ty; the loads index by lid and stay as they are."""
    section = nt(text)
    body = text[section]
    entry = body.index(NT_ENTRY)
    tail = re.sub(r"\bl\.([xy])\b", r"t\1", body[entry:])
    tail = replaced(tail, NT_FIRST, NT_FIRST + WARP2D_MAP)
    body = body[:entry] + WARP2D_CONSTS + "\n" + tail
    return text[: section.start] + body + text[section.stop :]


# nt8x8: a 128 x 128 tile, 8 x 8 outputs per thread, in gemm_nt's own layout (dot products along
# k from the [m][k / 4] tiles), taken only by the 8 x 8 build (--tile 128,128,16,8,8). The 64
# accumulators are named variables (an indexed 8 x 8 array spills on the H100); per k / 4 a
# thread reads B's 8 vec4s (y0..y7: b4 names the B binding), then A one vec4 at a time into 8
# dot-4 FMA chains. Setup, loads, read-ahead, guards and the split-K / epilogue rules are
# gemm_nt's.
N8 = range(8)
NT8_ACCS = "".join("    " + " ".join(f"var c{i}{j} = 0.0;" for j in N8) + "\n" for i in N8)
NT8_MULTIPLY = (
    "        for (var kq = 0u; kq < GKQ; kq++) {\n"
    + "".join(f"            let y{j} = sb[(tx + {j}u * GWX) * GPAD + kq];\n" for j in N8)
    + "".join(
        "            {\n"
        + f"                let x = sa[(ty + {i}u * GWY) * GPAD + kq];\n"
        + "".join(
            f"                c{i}{j} = fma(x.w, y{j}.w, fma(x.z, y{j}.z, fma(x.y, y{j}.y, "
            f"fma(x.x, y{j}.x, c{i}{j}))));\n"
            for j in N8
        )
        + "            }\n"
        for i in N8
    )
    + "        }\n"
)
NT8_STORES = "".join(
    "    " + " ".join(f"nt8_out(r + {i}u * GWY, cl + {j}u * GWX, part, c_base, c{i}{j});" for j in N8) + "\n"
    for i in N8
)
NT8 = (
    """
// One output of the 8 x 8 path, guarded like gemm_nt's: a raw partial sum under split-K, else
// alpha, bias and accumulation.
fn nt8_out(row: u32, col: u32, part: u32, c_base: u32, x: f32) {
    if (row >= p.m || col >= p.n) { return; }
    if (p.splits > 1u) { c[part + row * p.n + col] = x; return; }
    var v = p.alpha * x;
    if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
    let idx = c_base + row * p.c_rs + col;
    if (p.accumulate != 0u) { v += c[idx]; }
    c[idx] = v;
}

fn gemm_nt_8x8(wg: vec3<u32>, lid: u32, tx: u32, ty: u32) {
"""
    + SETUP
    + "    var ra: array<vec4<f32>, GLOAD_A>;\n    var rb: array<vec4<f32>, GLOAD_B>;\n"
    + NT8_ACCS
    + FIRST_LOADS
    + "\n    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n"
    + STORES
    + "        workgroupBarrier();\n"
    + READ_AHEAD
    + NT8_MULTIPLY
    + """        workgroupBarrier();
    }
    let part = split * p.split_stride + batch * p.m * p.n;
    let c_base = p.c_off + batch * p.c_bstride;
    let r = row0 + ty;
    let cl = col0 + tx;
"""
    + NT8_STORES
    + "}\n\n"
)


def nt_8x8(text):
    return in_nt(
        text,
        [
            (NT_ENTRY, NT8 + NT_ENTRY),
            (NT_FIRST, NT_FIRST + "    if (GTM == 8u && GTN == 8u) { gemm_nt_8x8(wg, lid, l.x, l.y); return; }\n"),
        ],
    )


# The 8 x 8 path through the table's large build, so that the forward runs it too (a `--tile`
# build only times GEMMs): that build (128 x 64, 8 x 4) becomes 128 x 128 with 8 x 8 per thread
# (GBN and GTN doubled in gemm_nt). The host's grid, made for 64 columns per workgroup, then has
# twice the workgroups needed across: those past the last column exit at once (uniformly,
# before any barrier; for every other build the grid is exact and the test never holds).
LARGE_AS_8X8 = """
const X8: bool = GTM == 8u && GTN == 4u; // the table's large build
const XGBN: u32 = select(GBN, 2u * GBN, X8);
const XGTN: u32 = select(GTN, 8u, X8);
"""


def on_large(text):
    section = nt(text)
    body = re.sub(r"(?m)^(?!//)(.*)$", lambda m: re.sub(r"\bG(BN|TN)\b", r"XG\1", m[1]), text[section])
    body = replaced(
        body,
        "    let col0 = wg.x * XGBN;\n",
        "    let col0 = wg.x * XGBN;\n    if (col0 >= p.n) { return; }\n",
        count=2,
    )
    return text[: section.start] + LARGE_AS_8X8 + body + text[section.stop :]


# grouped: the shipped kernel with workgroups visited in groups of GROUP_M tile rows (column by
# column within a group) instead of row by row, so the workgroups resident at once share fewer
# A rows and B columns and more of each slice comes from L2 (4096^3 on the large tile: a row of
# 64 tiles reads all of B, 64 MB, more than the H100's 50 MB of L2). Only the tile a workgroup
# computes moves; the grid and every guard are unchanged.
GROUP_M = 8
GROUPED_TILE = f"""    // Workgroup id in dispatch order, then its tile: groups of {GROUP_M} tile rows, column-major in one.
    let wg_id = wg.y * nwg.x + wg.x;
    let per_group = {GROUP_M}u * nwg.x;
    let first_row = (wg_id / per_group) * {GROUP_M}u;
    let rows = min(nwg.y - first_row, {GROUP_M}u);
    let row0 = (first_row + (wg_id % per_group) % rows) * GBM;
    let col0 = ((wg_id % per_group) / rows) * GBN;
"""


def grouped(text):
    return in_nt(
        text,
        [
            (NT_FIRST, NT_FIRST.replace(") {", ",\n           @builtin(num_workgroups) nwg: vec3<u32>) {")),
            ("    let row0 = wg.y * GBM;\n    let col0 = wg.x * GBN;\n", GROUPED_TILE),
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
    yield "warp2d", "each warp 8 x 4 threads: one wavefront per B read", warp2d(SHIPPED)
    yield "nt8x8", "128 x 128 tile, 8 x 8 per thread in named registers", nt_8x8(SHIPPED)
    yield "nt8x8_warp2d", "nt8x8 with warp2d's threads", warp2d(nt_8x8(SHIPPED))
    yield "nt8x8_large", "nt8x8 in place of the table's large tile", on_large(nt_8x8(SHIPPED))
    yield "nt8x8_warp2d_large", "nt8x8_warp2d in place of the large tile", on_large(
        warp2d(nt_8x8(SHIPPED))
    )
    yield "grouped", f"workgroups in groups of {GROUP_M} tile rows (L2 reuse)", grouped(SHIPPED)
    yield "warp2d_grouped", "warp2d and grouped together", grouped(warp2d(SHIPPED))


# Variants whose own code only some `--tile` build takes (the table's kernels stay shipped): their
# runs and the shipped one time those tiles, and the forward, which only uses table tiles, is
# not timed for them (their `_large` forms run the same code through the table). Before
# e21d4f4, `--tile` built from the shipped shader whatever --shader said.
TILES = {"nt8x8": ["128,128,16,8,8"], "nt8x8_warp2d": ["128,128,16,8,8"]}


def tables(stdout):
    """The rows of each table in `stdout`, by its first header cell ("GEMM (M x K) ..." for the
    chosen kernels, "GEMM" for the tiles)."""
    out, name = {}, None
    for line in stdout.splitlines():
        if not line.startswith("|"):
            name = None
        elif name is None:
            name = line.split("|")[1].strip()
            out[name] = []
        elif not line.startswith("|---"):
            out[name].append(line)
    return out


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    args = sys.argv[1:]
    write_only = "--write-only" in args
    wanted = set(args) - {"--write-only"}
    runs = write_variants(variants(), ".bench/gemm-experiments", "matmul.wgsl", wanted)
    if write_only:
        print("\n".join(path for _, _, path in runs if path))
        return
    # Every tile any requested variant needs, so the shipped run times them too.
    tiles = list(dict.fromkeys(t for name, _, _ in runs for t in TILES.get(name, [])))
    for name, what, path in runs:
        print(f"## {name}" + (f" ({what})" if what else ""), flush=True)
        shader = ["--shader", path] if path else []
        own = TILES.get(name, tiles if name == "shipped" else [])
        model = [binary, "bench", "--synthetic", "block,12,768"]
        matmul = model + ["--matmul", "--check"] + shader + [a for t in own for a in ("--tile", t)]
        out = subprocess.run(matmul, capture_output=True, text=True)
        if out.returncode != 0:
            print("failed:", out.stderr.strip().splitlines()[-1:], flush=True)
            continue
        found = tables(out.stdout)
        chosen = next(rows for header, rows in found.items() if header.startswith("GEMM ("))
        if name not in TILES:  # a tile-only variant's table kernels are the shipped ones
            print("\n".join(chosen), flush=True)
        # The tiles on 4096^3 and the T=512 shapes, unsplit: where a large tile would be used.
        for row in found.get("GEMM", []):
            cells = [c.strip() for c in row.split("|")]
            if cells[3] == "1" and "T=64" not in cells[1]:
                print(row, flush=True)
        if name in TILES:
            print(f"(forward not timed: its own code builds only for --tile {' '.join(TILES[name])})")
            continue
        forward = model + ["--tokens", "512,2048", "--iters", "20"] + shader
        out = subprocess.run(forward, capture_output=True, text=True, check=True).stdout
        print("\n".join(out.splitlines()[-2:]), flush=True)


if __name__ == "__main__":
    main()

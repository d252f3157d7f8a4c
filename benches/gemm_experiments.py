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
import re
import subprocess
import sys

SHIPPED = open("shaders/matmul.wgsl").read()
SECTION = "// ---- NT fast path"
SECTION_END = "// Split-K second pass"
LOOP_BEGIN = "    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {\n"
LOOP_END = "    if (p.splits > 1u) {\n"


def nt_section(text):
    start, end = text.index(SECTION), text.index(SECTION_END)
    return text[:start], text[start:end], text[end:]


def with_consts(text, **consts):
    """`text` with gemm_nt's tile constants overridden (the host prepends its own, so the variant
    renames them in the NT section and declares the new values)."""
    head, body, tail = nt_section(text)
    decl = ""
    for name, value in consts.items():
        body = re.sub(rf"\b{name}\b", f"X{name}", body)
        decl += f"const X{name}: u32 = {value}u;\n"
    return decl + head + body + tail


# Two workgroup-memory buffers per operand: the slice read ahead into registers is stored into the
# other buffer while this one is multiplied, so one barrier per slice instead of two.
DOUBLE_BUFFERED_LOOP = """    for (var s = 0u; s < GLOAD_A; s++) {
        let e = lid + s * GTHREADS;
        sa[(e / GKQ) * GPAD + e % GKQ] = ra[s];
    }
    for (var s = 0u; s < GLOAD_B; s++) {
        let e = lid + s * GTHREADS;
        sb[(e / GKQ) * GPAD + e % GKQ] = rb[s];
    }
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {
        let k1 = k0 + GBK;
        if (k1 < k_end) {
            for (var s = 0u; s < GLOAD_A; s++) {
                let e = lid + s * GTHREADS;
                let row = row0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (row < p.m && kx < k_end) { v = a4[a_base + row * a_rs4 + kx / 4u]; }
                ra[s] = v;
            }
            for (var s = 0u; s < GLOAD_B; s++) {
                let e = lid + s * GTHREADS;
                let col = col0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (col < p.n && kx < k_end) { v = b4[b_base + col * b_rs4 + kx / 4u]; }
                rb[s] = v;
            }
        }
        let oa = cur * GBM * GPAD;
        let ob = cur * GBN * GPAD;
        for (var kq = 0u; kq < GKQ; kq++) {
            var av: array<vec4<f32>, GTM>;
            var bv: array<vec4<f32>, GTN>;
            for (var i = 0u; i < GTM; i++) { av[i] = sa[oa + (l.y + i * GWY) * GPAD + kq]; }
            for (var j = 0u; j < GTN; j++) { bv[j] = sb[ob + (l.x + j * GWX) * GPAD + kq]; }
            for (var i = 0u; i < GTM; i++) {
                for (var j = 0u; j < GTN; j++) {
                    let x = av[i];
                    let y = bv[j];
                    acc[i][j] = fma(x.w, y.w, fma(x.z, y.z, fma(x.y, y.y, fma(x.x, y.x, acc[i][j]))));
                }
            }
        }
        if (k1 < k_end) {
            let na = (1u - cur) * GBM * GPAD;
            let nb = (1u - cur) * GBN * GPAD;
            for (var s = 0u; s < GLOAD_A; s++) {
                let e = lid + s * GTHREADS;
                sa[na + (e / GKQ) * GPAD + e % GKQ] = ra[s];
            }
            for (var s = 0u; s < GLOAD_B; s++) {
                let e = lid + s * GTHREADS;
                sb[nb + (e / GKQ) * GPAD + e % GKQ] = rb[s];
            }
        }
        workgroupBarrier();
        cur = 1u - cur;
    }

"""


def double_buffered(text):
    head, body, tail = nt_section(text)
    begin, end = body.index(LOOP_BEGIN), body.index(LOOP_END)
    body = body[:begin] + DOUBLE_BUFFERED_LOOP + body[end:]
    for old, new in [
        ("array<vec4<f32>, GBM * GPAD>;", "array<vec4<f32>, 2u * GBM * GPAD>;"),
        ("array<vec4<f32>, GBN * GPAD>;", "array<vec4<f32>, 2u * GBN * GPAD>;"),
    ]:
        if body.count(old) != 1:
            sys.exit(f"matmul.wgsl changed: the experiment's anchor is gone:\n{old}")
        body = body.replace(old, new)
    return head + body + tail


# The large build (8 x 4 per thread) as 8 x 8 per thread in the outer-product layout: workgroup
# tiles stored k-major, so a thread reads two vec4s of rows and two of columns per k and does 16
# vec4 FMAs into named accumulators (an indexed 8 x 8 array spills); the global loads and their
# read-ahead are gemm_nt's. Other builds keep gemm_nt's own path.
OUTER = """
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
    let batch = wg.z / p.splits;
    let split = wg.z % p.splits;
    let row0 = wg.y * GBM;
    let col0 = wg.x * GBN;
    if (p.causal == 1u && col0 >= row0 + GBM) { return; }
    var k_last = p.k;
    if (p.causal == 2u) { k_last = min(k_last, row0 + GBM); }
    let k_begin = split * p.k_chunk;
    let k_end = min(k_last, k_begin + p.k_chunk);
    let a_base = (p.a_off + batch * p.a_bstride) / 4u;
    let b_base = (p.b_off + (batch / p.b_group) * p.b_bstride) / 4u;
    let a_rs4 = p.a_rs / 4u;
    let b_rs4 = p.b_sn / 4u;
    var ra: array<vec4<f32>, GLOAD_A>;
    var rb: array<vec4<f32>, GLOAD_B>;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
    for (var s = 0u; s < GLOAD_A; s++) {
        let e = lid + s * GTHREADS;
        let row = row0 + e / GKQ;
        let kx = k_begin + (e % GKQ) * 4u;
        var v = vec4<f32>(0.0);
        if (row < p.m && kx < k_end) { v = a4[a_base + row * a_rs4 + kx / 4u]; }
        ra[s] = v;
    }
    for (var s = 0u; s < GLOAD_B; s++) {
        let e = lid + s * GTHREADS;
        let col = col0 + e / GKQ;
        let kx = k_begin + (e % GKQ) * 4u;
        var v = vec4<f32>(0.0);
        if (col < p.n && kx < k_end) { v = b4[b_base + col * b_rs4 + kx / 4u]; }
        rb[s] = v;
    }
    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {
        for (var s = 0u; s < GLOAD_A; s++) {
            let e = lid + s * GTHREADS;
            let m = e / GKQ;
            let k = (e % GKQ) * 4u;
            let v = ra[s];
            outer_store(true, k * 4u * OSA + m, v.x);
            outer_store(true, (k + 1u) * 4u * OSA + m, v.y);
            outer_store(true, (k + 2u) * 4u * OSA + m, v.z);
            outer_store(true, (k + 3u) * 4u * OSA + m, v.w);
        }
        for (var s = 0u; s < GLOAD_B; s++) {
            let e = lid + s * GTHREADS;
            let n = e / GKQ;
            let k = (e % GKQ) * 4u;
            let v = rb[s];
            outer_store(false, k * 4u * OSB + n, v.x);
            outer_store(false, (k + 1u) * 4u * OSB + n, v.y);
            outer_store(false, (k + 2u) * 4u * OSB + n, v.z);
            outer_store(false, (k + 3u) * 4u * OSB + n, v.w);
        }
        workgroupBarrier();
        let k1 = k0 + GBK;
        if (k1 < k_end) {
            for (var s = 0u; s < GLOAD_A; s++) {
                let e = lid + s * GTHREADS;
                let row = row0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (row < p.m && kx < k_end) { v = a4[a_base + row * a_rs4 + kx / 4u]; }
                ra[s] = v;
            }
            for (var s = 0u; s < GLOAD_B; s++) {
                let e = lid + s * GTHREADS;
                let col = col0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (col < p.n && kx < k_end) { v = b4[b_base + col * b_rs4 + kx / 4u]; }
                rb[s] = v;
            }
        }
        for (var kk = 0u; kk < GBK; kk++) {
            let a0 = sa[kk * OSA + l.y];
            let a1 = sa[kk * OSA + GWY + l.y];
            let b0 = sb[kk * OSB + l.x];
            let b1 = sb[kk * OSB + GWX + l.x];
            c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }
    let part = split * p.split_stride + batch * p.m * p.n;
    let c_base = p.c_off + batch * p.c_bstride;
    let r = row0 + l.y * 4u;
    let r2 = r + 4u * GWY;
    let cc = col0 + l.x * 4u;
    outer_row(r, cc, c_base, part, c00, c01);
    outer_row(r + 1u, cc, c_base, part, c10, c11);
    outer_row(r + 2u, cc, c_base, part, c20, c21);
    outer_row(r + 3u, cc, c_base, part, c30, c31);
    outer_row(r2, cc, c_base, part, c40, c41);
    outer_row(r2 + 1u, cc, c_base, part, c50, c51);
    outer_row(r2 + 2u, cc, c_base, part, c60, c61);
    outer_row(r2 + 3u, cc, c_base, part, c70, c71);
}

"""


def outer_8x8(text):
    head, body, tail = nt_section(text)
    for old, new in [
        ("const GWX: u32 = GBN / GTN;", "const GWX: u32 = GBN / XGTN;"),
        ("@compute @workgroup_size(GWX, GWY, 1)\nfn gemm_nt(", OUTER + "@compute @workgroup_size(GWX, GWY, 1)\nfn gemm_nt("),
        (
            "    let batch = wg.z / p.splits;\n    let split = wg.z % p.splits;\n    let row0 = wg.y * GBM;\n    let col0 = wg.x * GBN;\n    // Causal",
            "    if (GTM == 8u) { gemm_nt_outer(wg, lid, l); return; }\n    let batch = wg.z / p.splits;\n    let split = wg.z % p.splits;\n    let row0 = wg.y * GBM;\n    let col0 = wg.x * GBN;\n    // Causal",
        ),
    ]:
        if body.count(old) != 1:
            sys.exit(f"matmul.wgsl changed: the experiment's anchor is gone:\n{old}")
        body = body.replace(old, new)
    return head + body + tail


def variants():
    yield "bk32", "32-deep slices (half the barriers; 27 KB of workgroup memory)", with_consts(
        SHIPPED, GBK=32
    )
    yield "double", "double-buffered workgroup tiles, one barrier per slice (30 KB)", double_buffered(
        SHIPPED
    )
    # The large tile (128 x 64) with 4 x 8 outputs per thread instead of 8 x 4: threads then read
    # 4 A and 8 B vec4s per step, and a warp reads more distinct A rows.
    yield "t4x8", "4 x 8 outputs per thread", with_consts(SHIPPED, GTM=4, GTN=8)
    yield "outer8x8", "the large build as 8 x 8 per thread, outer-product layout", outer_8x8(SHIPPED)


def main():
    binary = os.environ.get("DEPTHLENS", ".bench/depthlens")
    wanted = set(sys.argv[1:])
    runs = [("shipped", "", None)]
    os.makedirs(".bench/gemm-experiments", exist_ok=True)
    for name, what, text in variants():
        if wanted and name not in wanted:
            continue
        path = f".bench/gemm-experiments/{name}/matmul.wgsl"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        runs.append((name, what, path))
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

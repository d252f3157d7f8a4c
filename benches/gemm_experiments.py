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

"""Where the depth kernel's ~30 us per op goes on the H100 (session 3 left this to run).

Writes variants of shaders/depth.wgsl that each drop one part of `main_cached` (results wrong on
purpose, except `branchless-loads`, `slots-once` and `unrolled`), then times the shipped kernel against each by GPU timestamps
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


# Source c's row loaded into registers, as main_cached does it (the anchor of two variants).
SOURCE_LOADS = """        if (c < p.n) {
            let slot = slots[p.list_off + c];
            let base = (slot * p.tc + lt) * p.d;
            ms[c] = stats[p.ms_off + slot * p.t + t];
            for (var e = 0u; e < CE; e++) {
                let j = lid + e * CWG;
                if (j < p.d) { v[c * CE + e] = src[base + j]; }
            }
        }"""
# Workgroup memory for each source's row start and mean square, looked up once per workgroup.
REDUCTION_DECL = "var<workgroup> cred: array<f32, CR * CWG>;"
LOOKUP_DECL = REDUCTION_DECL + "\nvar<workgroup> cbase: array<u32, CN>;\nvar<workgroup> cms: array<f32, CN>;"


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
    # The rest give the shipped results (checked by copying each over shaders/depth.wgsl and
    # running tests/gpu_parity.rs).
    branchless = """        let slot = slots[p.list_off + min(c, p.n - 1u)];
        let base = (slot * p.tc + lt) * p.d;
        ms[c] = select(1.0, stats[p.ms_off + slot * p.t + t], c < p.n);
        for (var e = 0u; e < CE; e++) {
            let j = lid + e * CWG;
            v[c * CE + e] = select(0.0, src[base + min(j, p.d - 1u)], j < p.d && c < p.n);
        }"""
    yield "branchless-loads", "loads without branches", replaced(
        SHIPPED, SOURCE_LOADS, branchless
    )
    lookup = """    if (lid < p.n) {
        let slot = slots[p.list_off + lid];
        cbase[lid] = (slot * p.tc + lt) * p.d;
        cms[lid] = stats[p.ms_off + slot * p.t + t];
    }
    workgroupBarrier();
    // v[c * CE + e]:"""
    from_lookup = """        if (c < p.n) {
            let base = cbase[c];
            ms[c] = cms[c];
            for (var e = 0u; e < CE; e++) {
                let j = lid + e * CWG;
                if (j < p.d) { v[c * CE + e] = src[base + j]; }
            }
        }"""
    slots_once = replaced(SHIPPED, SOURCE_LOADS, from_lookup)
    slots_once = replaced(slots_once, "    // v[c * CE + e]:", lookup)
    yield "slots-once", "rows looked up once into workgroup memory", replaced(
        slots_once, REDUCTION_DECL, LOOKUP_DECL
    )
    cached_entry = SHIPPED.index("@compute @workgroup_size(CWG)\nfn main_cached")
    yield "unrolled", "literal indices only, generated for 12 sources x 4 elements", replaced(
        SHIPPED[:cached_entry], REDUCTION_DECL, LOOKUP_DECL
    ) + unrolled_main_cached()


def unrolled_main_cached(CN=12, CE=4):
    """main_cached written out for CN sources x CE elements (the host's DEPTH_CACHED_SOURCES and
    DEPTH_CACHED_ELEMS) with literal indices only: no indexed private arrays, which the driver may
    place in local memory. Looks rows up as `slots-once` does."""
    cs = range(CN)
    es = range(CE)
    L = []
    a = L.append

    a("@compute @workgroup_size(CWG)")
    a("fn main_cached(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {")
    a("    let lt = wg.x + wg.y * 65535u;")
    a("    if (lt >= p.tc) { return; }")
    a("    let t = p.t0 + lt;")
    a("    if (lid < p.n) {")
    a("        let slot = slots[p.list_off + lid];")
    a("        cbase[lid] = (slot * p.tc + lt) * p.d;")
    a("        cms[lid] = stats[p.ms_off + slot * p.t + t];")
    a("    }")
    a("    workgroupBarrier();")
    for e in es:
        a(f"    let j{e} = lid + {e}u * CWG;")
        a(f"    let in{e} = j{e} < p.d;")
    for c in cs:
        a(f"    let on{c} = {c}u < p.n;")
        a(f"    let b{c} = cbase[min({c}u, p.n - 1u)];")
        a(f"    let ms{c} = select(1.0, cms[min({c}u, p.n - 1u)], on{c});")
        for e in es:
            a(f"    let v{c}_{e} = select(0.0, src[b{c} + min(j{e}, p.d - 1u)], on{c} && in{e});")
    for c in cs:
        a(f"    var w{c} = select(0.0, 1.0, on{c});")
    a("    if (p.mode == 1u) {")
    for e in es:
        a(f"        let q{e} = select(0.0, qg[p.q_off + min(j{e}, p.d - 1u)], in{e});")
    parts = ", ".join([" + ".join(f"v{c}_{e} * q{e}" for e in es) for c in cs] + ["0.0", "0.0"])
    a(f"        let dots = cached_sums(lid, array<f32, CR>({parts}));")
    a("        var m = -3.0e38;")
    for c in cs:
        a(f"        let l{c} = dots[{c}] / sqrt(ms{c} + p.eps);")
        a(f"        if (on{c}) {{ m = max(m, l{c}); }}")
    for c in cs:
        a(f"        w{c} = select(0.0, exp(l{c} - m), on{c});")
    a("        let sum = " + " + ".join(f"w{c}" for c in cs) + ";")
    for c in cs:
        a(f"        w{c} = w{c} / sum;")
    a("    }")
    for e in es:
        a(f"    var h{e} = 0.0;")
        for c in cs:
            a(f"    if (p.mode == 1u) {{ h{e} = fma(w{c}, v{c}_{e}, h{e}); }} else {{ h{e} += v{c}_{e}; }}")
    a("    let hb = p.h_off + t * p.d;")
    for e in es:
        a(f"    if (in{e}) {{ h[hb + j{e}] = h{e}; }}")
    sp = ", ".join([" + ".join(f"v{c}_{e} * h{e}" for e in es) for c in cs]
                   + [" + ".join(f"h{e} * h{e}" for e in es), " + ".join(f"h{e}" for e in es)])
    a(f"    let sums = cached_sums(lid, array<f32, CR>({sp}));")
    a(f"    let hh = sums[{CN}];")
    a("    var mean = 0.0;")
    a("    var inv = 1.0 / sqrt(hh / f32(p.d) + p.norm_eps);")
    a("    if (p.norm_kind == 1u) {")
    a(f"        mean = sums[{CN + 1}] / f32(p.d);")
    sq = " + ".join(f"select(0.0, (h{e} - mean) * (h{e} - mean), in{e})" for e in es)
    a(f"        inv = 1.0 / sqrt(cached_sums(lid, array<f32, CR>({sq}" + ", 0.0" * (CN + 1) + "))[0] / f32(p.d) + p.norm_eps);")
    a("    }")
    for e in es:
        a(f"    if (in{e}) {{")
        a(f"        var y = (h{e} - mean) * inv * gain[j{e}];")
        a("        if (p.norm_kind == 1u) { y += beta[j%d]; }" % e)
        a(f"        x[t * p.d + j{e}] = y;")
        a("    }")
    for c in cs:
        a(f"    if (lid == {c}u && on{c}) {{")
        a(f"        let row = t * p.n + {c}u;")
        a(f"        stats[p.alpha_off + row] = w{c};")
        a(f"        stats[p.shares_off + row] = w{c} * sums[{c}] / max(hh, 1.1754944e-38);")
        a(f"        stats[p.src_rms_off + row] = sqrt(ms{c});")
        a("    }")
    a("    if (lid == 0u) { stats[p.hidden_rms_off + t] = sqrt(hh / f32(p.d)); }")
    a("}")
    return "\n".join(L) + "\n"


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

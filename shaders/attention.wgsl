// Causal softmax over attention scores S [heads, T, T] (already scaled by 1/sqrt(hd)), in place,
// one workgroup per (head, query row t): keys j with j <= t and t - j < window survive, the rest
// become exactly 0. The products Q K^T and P V run on the GEMM kernel (matmul.wgsl).

struct Params { heads: u32, t: u32, window: u32, s_off: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;

@compute @workgroup_size(WG)
fn causal_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * 65535u; // head * T + t
    if (row >= p.heads * p.t) { return; }
    let t = row % p.t;
    let base = p.s_off + row * p.t;
    var lo = 0u;
    if (t + 1u > p.window) { lo = t + 1u - p.window; }
    var m = -3.0e38;
    for (var j = lo + lid; j <= t; j += WG) { m = max(m, s[base + j]); }
    m = workgroup_max(lid, m);
    var sum = 0.0;
    for (var j = lo + lid; j <= t; j += WG) { sum += exp(s[base + j] - m); }
    sum = workgroup_sum(lid, sum);
    for (var j = lid; j < p.t; j += WG) {
        var v = 0.0;
        if (j >= lo && j <= t) { v = exp(s[base + j] - m) / sum; }
        s[base + j] = v;
    }
}

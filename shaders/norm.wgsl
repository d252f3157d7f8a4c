// Row-wise kernels on [rows, d] activations, one workgroup of WG threads per row.
//   row_stats: ms[r] = mean(x[r]^2) and rms[r] = sqrt(ms[r]) (Trace RMS; depth-key norms)
//   sublayer_out: a sublayer's output y (the sum of `splits` split-K partials in x, plus the bias
//              gain[] when has_bias) lands in the depth sources, in one pass:
//              out[r] = y[r] (kind 1: its own slot, or a Block's first sublayer) or out[r] + y[r]
//              (kind 0: added to the Block partial); stats[y_rms_off + r] = rms(y[r]),
//              stats[ms_off + r] = mean(out[r]^2) (its depth-key norm), stats[rms_off + r] = rms
//              (Only before a depth op that runs `main`: depth.wgsl's `main_cached` does the
//              same work for its token inside its own dispatch.)
// Offsets are in elements; ms/rms outputs are skipped when their offset is NONE. sublayer_out
// reads y from row x_off / d on (its rows are one token chunk of the depth sources).

struct Params {
    rows: u32, d: u32, x_off: u32, out_off: u32,
    kind: u32, eps: f32, ms_off: u32, rms_off: u32,
    y_rms_off: u32, splits: u32, split_stride: u32, has_bias: u32,
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gain: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(WG)
fn row_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) { return; }
    let base = p.x_off + r * p.d;
    var sq = 0.0;
    for (var j = lid; j < p.d; j += WG) { let v = x[base + j]; sq += v * v; }
    let ms = workgroup_sum(lid, sq) / f32(p.d);
    if (lid == 0u) {
        if (p.ms_off != NONE) { out[p.ms_off + r] = ms; }
        if (p.rms_off != NONE) { out[p.rms_off + r] = sqrt(ms); }
    }
}

@compute @workgroup_size(WG)
fn sublayer_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) { return; }
    let ob = p.out_off + r * p.d;
    var sy = 0.0;
    var sp = 0.0;
    for (var j = lid; j < p.d; j += WG) {
        // The split-K partial sums of y, added in split order (deterministic).
        var y = 0.0;
        for (var s = 0u; s < p.splits; s++) { y += x[p.x_off + s * p.split_stride + r * p.d + j]; }
        if (p.has_bias != 0u) { y += gain[j]; }
        var v = y;
        if (p.kind == 0u) { v += out[ob + j]; }
        out[ob + j] = v;
        sy += y * y;
        sp += v * v;
    }
    let ms_y = workgroup_sum(lid, sy) / f32(p.d);
    let ms_p = workgroup_sum(lid, sp) / f32(p.d);
    if (lid == 0u) {
        stats[p.y_rms_off + r] = sqrt(ms_y);
        stats[p.ms_off + r] = ms_p;
        if (p.rms_off != NONE) { stats[p.rms_off + r] = sqrt(ms_p); }
    }
}

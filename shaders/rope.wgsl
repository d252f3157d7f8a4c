// Rotate-half RoPE in place on `heads` consecutive heads of hd in rows of `row_stride` (q and k
// side by side in the stacked qkv activations):
//   (x_i, x_{i+hd/2}) <- (x_i cos - x_{i+hd/2} sin, x_{i+hd/2} cos + x_i sin),  angle = t * inv_freq_i
// cos/sin come precomputed [T, hd/2] (f64 on the host, then f32), so scaling variants (linear,
// llama3) live in one place, the host. One thread per (t, head, i < hd/2).

struct Params {
    t: u32, heads: u32, hd: u32, x_off: u32, row_stride: u32, splits: u32, split_stride: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> parts: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.hd / 2u;
    let idx = gid.x + gid.y * 65535u * WG;
    if (idx >= p.t * p.heads * half) { return; }
    let i = idx % half;
    let h = (idx / half) % p.heads;
    let t = idx / (half * p.heads);
    let base = p.x_off + t * p.row_stride + h * p.hd;
    let c = cos_t[t * half + i];
    let s = sin_t[t * half + i];
    let x1 = x[base + i];
    let x2 = x[base + i + half];
    x[base + i] = x1 * c - x2 * s;
    x[base + i + half] = x2 * c + x1 * s;
}

// reduce_rope: the stacked qkv activations from their split-K partial sums (parts
// [splits][T][row_stride], added in split order, plus the bias), written into x with q's and k's
// `heads` heads rotated on the way and the rest of the row (v) copied: the split-K second pass
// and RoPE in one dispatch. One thread per (t, rotated pair or copied element).
fn part_sum(idx: u32, col: u32) -> f32 {
    var v = 0.0;
    for (var s = 0u; s < p.splits; s++) { v += parts[s * p.split_stride + idx]; }
    if (p.has_bias != 0u) { v += bias[col]; }
    return v;
}

@compute @workgroup_size(WG)
fn reduce_rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.hd / 2u;
    let rotated = p.heads * half;
    let per_row = rotated + p.row_stride - p.heads * p.hd;
    let idx = gid.x + gid.y * 65535u * WG;
    if (idx >= p.t * per_row) { return; }
    let t = idx / per_row;
    let c = idx % per_row;
    let rb = t * p.row_stride;
    if (c < rotated) {
        let i = c % half;
        let col1 = (c / half) * p.hd + i;
        let col2 = col1 + half;
        let x1 = part_sum(rb + col1, col1);
        let x2 = part_sum(rb + col2, col2);
        let co = cos_t[t * half + i];
        let si = sin_t[t * half + i];
        x[rb + col1] = x1 * co - x2 * si;
        x[rb + col2] = x2 * co + x1 * si;
    } else {
        let col = p.heads * p.hd + (c - rotated);
        x[rb + col] = part_sum(rb + col, col);
    }
}

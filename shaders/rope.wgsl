// Rotate-half RoPE in place on `heads` consecutive heads of hd in rows of `row_stride` (q and k
// side by side in the stacked qkv activations):
//   (x_i, x_{i+hd/2}) <- (x_i cos - x_{i+hd/2} sin, x_{i+hd/2} cos + x_i sin),  angle = t * inv_freq_i
// cos/sin come precomputed [T, hd/2] (f64 on the host, then f32), so scaling variants (linear,
// llama3) live in one place, the host. One thread per (t, head, i < hd/2).

struct Params { t: u32, heads: u32, hd: u32, x_off: u32, row_stride: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

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

// Token embedding gather, for one row chunk of a (possibly split) table and the tokens
// [t0, t0 + t): for each token whose id lies in [row0, row0 + rows), out[t - t0] =
// table[id - row0] (+ positions[t] when has_pos). One thread per (t, j < d). `out` is one token
// chunk of the depth sources (they are split by tokens when they exceed one binding).

struct Params { t: u32, d: u32, row0: u32, rows: u32, has_pos: u32, out_off: u32, t0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.t * p.d) { return; }
    let t = p.t0 + i / p.d;
    let j = i % p.d;
    let id = ids[t];
    if (id < p.row0 || id >= p.row0 + p.rows) { return; }
    var v = table[(id - p.row0) * p.d + j];
    if (p.has_pos != 0u) { v += positions[t * p.d + j]; }
    out[p.out_off + i] = v;
}

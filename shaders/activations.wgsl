// Elementwise kernels over n elements, one thread each:
//   silu_mul:   out = silu(a) * b                (SwiGLU)
//   gelu_tanh:  out = gelu_tanh(a)               (GPT-2 gelu_new)
//   gelu_erf:   out = gelu_erf(a)                (erf: Abramowitz-Stegun 7.1.26, |error| < 1.5e-7)

// Element i is column i % width of row i / width; each operand has its own row stride (so silu_mul
// reads gate and up from the stacked [T, 2F] activations). width = n: one dense row.
// silu_mul also sums `splits` split-K partials of a and b, split_stride apart (1: plain).
struct Params {
    n: u32, a_off: u32, b_off: u32, out_off: u32,
    width: u32, a_rs: u32, b_rs: u32, out_rs: u32,
    splits: u32, split_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(gid: vec3<u32>) -> u32 { return gid.x + gid.y * 65535u * WG; }
fn at(i: u32, off: u32, rs: u32) -> u32 { return off + (i / p.width) * rs + i % p.width; }

@compute @workgroup_size(WG)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) { return; }
    var g = 0.0;
    var u = 0.0;
    for (var s = 0u; s < max(p.splits, 1u); s++) {
        g += a[s * p.split_stride + at(i, p.a_off, p.a_rs)];
        u += b[s * p.split_stride + at(i, p.b_off, p.b_rs)];
    }
    out[at(i, p.out_off, p.out_rs)] = g / (1.0 + exp(-g)) * u;
}

@compute @workgroup_size(WG)
fn gelu_tanh(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) { return; }
    let x = a[at(i, p.a_off, p.a_rs)];
    let inner = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    out[at(i, p.out_off, p.out_rs)] = 0.5 * x * (1.0 + tanh(clamp(inner, -20.0, 20.0)));
}

fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
    return s * y;
}

@compute @workgroup_size(WG)
fn gelu_erf(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p.n) { return; }
    let x = a[at(i, p.a_off, p.a_rs)];
    out[at(i, p.out_off, p.out_rs)] = 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

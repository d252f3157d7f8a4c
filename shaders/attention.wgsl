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

// ---------------------------------------------------------------------------------------------
// transpose_v: V of every kv head as [kv_heads, hd, T] (token-contiguous), so that P V reads its
// B operand k-contiguous and runs on the vec4 `gemm_nt` path instead of the generic GEMM (P V
// was a quarter of the forward at T = 2048). One thread per element: the writes are coalesced.

struct TransposeParams {
    t: u32, kv_heads: u32, hd: u32, row: u32,
    v_off: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> tp: TransposeParams;
@group(0) @binding(2) var<storage, read_write> vt: array<f32>;

@compute @workgroup_size(WG)
fn transpose_v(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * WG;
    if (idx >= tp.kv_heads * tp.hd * tp.t) { return; }
    let token = idx % tp.t;
    let channel = idx / tp.t; // kv_head * hd + dim
    vt[idx] = qkv[token * tp.row + tp.v_off + channel];
}

// ---------------------------------------------------------------------------------------------
// flash_attention: the same causal (optionally sliding-window) attention in one dispatch per layer,
// without the [heads, T, T] scores: att[t, h] = softmax_j(q_t . k_j * scale) v_j over the keys j a
// row sees, by blocks of FA_BC keys with a running max and sum (online softmax). One workgroup per
// (FA_BR queries, head); FA_TPR threads per query row. Thread `lane` of row r scores keys lane, lane + FA_TPR,
// ... of a block and owns the output dimensions lane, lane + FA_TPR, ... (head_dim <= FA_HD; the host
// uses the GEMM path above otherwise). Grouped-query heads read kv head h / group.

struct FlashParams {
    t: u32, heads: u32, group: u32, hd: u32,
    row: u32, k_off: u32, v_off: u32, window: u32,
    scale: f32, out_rs: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> fp: FlashParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> att: array<f32>;

const FA_THREADS: u32 = FA_BR * FA_TPR;
const FA_KPT: u32 = FA_BC / FA_TPR; // keys scored per thread per block
const FA_DPT: u32 = FA_HD / FA_TPR; // output dimensions per thread
// Key rows padded by one float: the FA_TPR threads of a row read FA_TPR different keys at the same
// dimension, which would otherwise sit in one memory bank.
const FA_KS: u32 = FA_HD + 1u;
const_assert FA_BC % FA_TPR == 0u;
const_assert FA_HD % FA_TPR == 0u;

var<workgroup> fq: array<f32, FA_BR * FA_HD>;
var<workgroup> fk: array<f32, FA_BC * FA_KS>;
var<workgroup> fv: array<f32, FA_BC * FA_HD>;
var<workgroup> fprob: array<f32, FA_BR * FA_BC>;
var<workgroup> fmax: array<f32, FA_THREADS>;
var<workgroup> fsum: array<f32, FA_THREADS>;

@compute @workgroup_size(FA_THREADS)
fn flash_attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q0 = wg.x * FA_BR;
    let h = wg.y;
    // Uniform per workgroup: every thread returns or none does (barriers below).
    if (q0 >= fp.t || h >= fp.heads) { return; }
    let kvh = h / fp.group;
    let r = lid / FA_TPR;
    let lane = lid % FA_TPR;
    let tq = q0 + r;
    let row_ok = tq < fp.t;
    for (var i = lid; i < FA_BR * FA_HD; i += FA_THREADS) {
        let tr = q0 + i / FA_HD;
        let d = i % FA_HD;
        var v = 0.0;
        if (tr < fp.t && d < fp.hd) { v = qkv[tr * fp.row + h * fp.hd + d] * fp.scale; }
        fq[i] = v;
    }
    let q_last = min(q0 + FA_BR, fp.t) - 1u;
    // Keys below the first row's window are seen by no row of the block.
    var k_lo = 0u;
    if (fp.window != 0xffffffffu && q0 + 1u > fp.window) { k_lo = q0 + 1u - fp.window; }
    var m = -3.0e38;
    var l = 0.0;
    var o: array<f32, FA_DPT>;
    for (var e = 0u; e < FA_DPT; e++) { o[e] = 0.0; }
    for (var kb = k_lo; kb <= q_last; kb += FA_BC) {
        workgroupBarrier(); // the previous block's fk / fv / fprob / fmax / fsum are read
        for (var i = lid; i < FA_BC * FA_HD; i += FA_THREADS) {
            let j = i / FA_HD;
            let d = i % FA_HD;
            let kj = kb + j;
            var kv = 0.0;
            var vv = 0.0;
            if (kj <= q_last && d < fp.hd) {
                kv = qkv[kj * fp.row + fp.k_off + kvh * fp.hd + d];
                vv = qkv[kj * fp.row + fp.v_off + kvh * fp.hd + d];
            }
            fk[j * FA_KS + d] = kv;
            fv[i] = vv;
        }
        workgroupBarrier();
        var sc: array<f32, FA_KPT>;
        var ok: array<bool, FA_KPT>;
        var local_max = -3.0e38;
        for (var u = 0u; u < FA_KPT; u++) {
            let j = lane + u * FA_TPR;
            let kj = kb + j;
            ok[u] = row_ok && kj <= tq && tq - kj < fp.window;
            var dot = 0.0;
            for (var d = 0u; d < fp.hd; d++) { dot = fma(fq[r * FA_HD + d], fk[j * FA_KS + d], dot); }
            sc[u] = dot;
            if (ok[u]) { local_max = max(local_max, dot); }
        }
        fmax[lid] = local_max;
        workgroupBarrier();
        // Every thread of a row computes the same running max and sum from the row's partials.
        var m_new = m;
        for (var i = 0u; i < FA_TPR; i++) { m_new = max(m_new, fmax[r * FA_TPR + i]); }
        var part = 0.0;
        for (var u = 0u; u < FA_KPT; u++) {
            var pr = 0.0;
            if (ok[u]) { pr = exp(sc[u] - m_new); }
            fprob[r * FA_BC + lane + u * FA_TPR] = pr;
            part += pr;
        }
        fsum[lid] = part;
        let rescale = exp(m - m_new);
        m = m_new;
        workgroupBarrier();
        var block_sum = 0.0;
        for (var i = 0u; i < FA_TPR; i++) { block_sum += fsum[r * FA_TPR + i]; }
        l = l * rescale + block_sum;
        for (var e = 0u; e < FA_DPT; e++) {
            let d = lane + e * FA_TPR;
            var acc = o[e] * rescale;
            for (var j = 0u; j < FA_BC; j++) { acc = fma(fprob[r * FA_BC + j], fv[j * FA_HD + d], acc); }
            o[e] = acc;
        }
    }
    if (row_ok) {
        for (var e = 0u; e < FA_DPT; e++) {
            let d = lane + e * FA_TPR;
            if (d < fp.hd) { att[tq * fp.out_rs + h * fp.hd + d] = o[e] / l; }
        }
    }
}

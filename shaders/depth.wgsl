// The depth op of one sublayer, per token t (one workgroup each), over n sources held in slots of
// the sources buffer (slot indices in `slots[list_off ..]`). The buffer holds the tokens
// [t0, t0 + tc) as [slots, tc, d]: the sources are split by tokens when all of them exceed one
// binding, and the op runs once per token chunk. Everything else is indexed by the token t < T:
//   mode 1 (AttnRes, ATTNRES.md): logit_i = (w*g) . v_i / sqrt(ms_i + eps), alpha = softmax(logit),
//                                 h = sum_i alpha_i v_i   (w*g folded on upload; ms_i = mean(v_i^2)
//                                 computed once when the source is written)
//   mode 0 (PreNorm baseline):    alpha_i = 1, h = v_0 + v_1 + ... (summed in source order)
// and the op's Trace statistics: alpha, shares_i = alpha_i <v_i, h> / <h, h>, source RMS, hidden
// RMS; then the sublayer's PreNorm of h into x (norm_kind 0: RMSNorm, 1: LayerNorm with beta),
// fused here because h's sum of squares is already at hand (one dispatch fewer per op). The d loop is spread over WG threads, E elements each; sources go CH at a time.

struct Params {
    t: u32, d: u32, n: u32, mode: u32,
    list_off: u32, q_off: u32, h_off: u32, eps: f32,
    ms_off: u32, alpha_off: u32, shares_off: u32, src_rms_off: u32,
    hidden_rms_off: u32, norm_kind: u32, norm_eps: f32, t0: u32,
    tc: u32, fused: u32, sink_slot: u32, sink_kind: u32,
    y_rms_off: u32, partial_rms_off: u32, splits: u32, split_stride: u32,
    has_bias: u32, h_holds_previous: u32, _p2: u32, _p3: u32,
    // main_cached's source slots (`main` reads `slots[list_off ..]`): its own binding 2 is y.
    cached_slots: array<vec4<u32>, CSLOT_VEC4S>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> slots: array<u32>;
@group(0) @binding(3) var<storage, read> qg: array<f32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> gain: array<f32>;
@group(0) @binding(7) var<storage, read> beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> x: array<f32>;

var<workgroup> weight: array<f32, MAX_SOURCES>;
// Where each source's row for this token starts, and its mean square: looked up once per
// workgroup instead of once per element.
var<workgroup> base_of: array<u32, MAX_SOURCES>;
var<workgroup> ms_of: array<f32, MAX_SOURCES>;
// Sources are scored CH at a time: one tree reduction serves CH dot products, so an op over n
// sources waits on ceil(n / CH) reductions, not n (barrier latency is what this kernel spends).
const CH: u32 = 8u;
var<workgroup> chunk: array<f32, CH * WG>;


// Sums each of `part`'s CH values over the workgroup; the totals land in chunk[c * WG].
// Every thread must call it; the caller reads the totals, then barriers before the next call.
fn chunk_sums(lid: u32, part: array<f32, CH>) {
    for (var c = 0u; c < CH; c++) { chunk[c * WG + lid] = part[c]; }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var c = 0u; c < CH; c++) { chunk[c * WG + lid] += chunk[c * WG + lid + s]; }
        }
        workgroupBarrier();
    }
}


// A thread's elements of a row: j = j0 + lid + e * WG for e < E. Loops over e and over the CH
// sources of a chunk have constant bounds, so they unroll and every load of a chunk is in flight
// at once: one token's rows are few, and a loop that waits on each load in turn is what made this
// kernel slow (latency, not bandwidth).
const E: u32 = 8u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lt = wg.x + wg.y * 65535u;
    if (lt >= p.tc) { return; }
    let t = p.t0 + lt;
    for (var i = lid; i < p.n; i += WG) {
        let slot = slots[p.list_off + i];
        base_of[i] = (slot * p.tc + lt) * p.d;
        ms_of[i] = stats[p.ms_off + slot * p.t + t];
    }
    workgroupBarrier();
    if (p.mode == 1u) {
        for (var i0 = 0u; i0 < p.n; i0 += CH) {
            var part: array<f32, CH>;
            for (var c = 0u; c < CH; c++) { part[c] = 0.0; }
            for (var j0 = 0u; j0 < p.d; j0 += E * WG) {
                var q: array<f32, E>;
                for (var e = 0u; e < E; e++) {
                    let j = j0 + lid + e * WG;
                    q[e] = 0.0;
                    if (j < p.d) { q[e] = qg[p.q_off + j]; }
                }
                for (var c = 0u; c < CH; c++) {
                    let i = min(i0 + c, p.n - 1u);
                    let base = base_of[i];
                    var dot = 0.0;
                    for (var e = 0u; e < E; e++) {
                        let j = j0 + lid + e * WG;
                        if (j < p.d) { dot = fma(src[base + j], q[e], dot); }
                    }
                    part[c] += dot;
                }
            }
            chunk_sums(lid, part);
            if (lid < CH && i0 + lid < p.n) {
                weight[i0 + lid] = chunk[lid * WG] / sqrt(ms_of[i0 + lid] + p.eps);
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            var m = -3.0e38;
            for (var i = 0u; i < p.n; i++) { m = max(m, weight[i]); }
            var sum = 0.0;
            for (var i = 0u; i < p.n; i++) { weight[i] = exp(weight[i] - m); sum += weight[i]; }
            for (var i = 0u; i < p.n; i++) { weight[i] = weight[i] / sum; }
        }
        workgroupBarrier();
    } else {
        for (var i = lid; i < p.n; i += WG) { weight[i] = 1.0; }
        workgroupBarrier();
    }
    let hb = p.h_off + t * p.d;
    var hh = 0.0;
    var hs = 0.0;
    for (var j0 = 0u; j0 < p.d; j0 += E * WG) {
        var acc: array<f32, E>;
        for (var e = 0u; e < E; e++) { acc[e] = 0.0; }
        // Sources in order (the baseline's residual sum keeps the reference's summation order).
        // With h_holds_previous, h already holds the weight-1 sum of all sources but the last
        // (the previous op's, as `main` wrote it), so adding the last gives the same sum, bit for
        // bit, from two rows instead of n.
        if (p.mode != 1u && p.h_holds_previous != 0u) {
            let last = base_of[p.n - 1u];
            for (var e = 0u; e < E; e++) {
                let j = j0 + lid + e * WG;
                if (j < p.d) { acc[e] = h[hb + j] + src[last + j]; }
            }
        } else {
            for (var i0 = 0u; i0 < p.n; i0 += CH) {
                for (var c = 0u; c < CH; c++) {
                    if (i0 + c < p.n) {
                        let base = base_of[i0 + c];
                        let w = weight[i0 + c];
                        for (var e = 0u; e < E; e++) {
                            let j = j0 + lid + e * WG;
                            if (j < p.d) {
                                let v = src[base + j];
                                if (p.mode == 1u) { acc[e] = fma(w, v, acc[e]); } else { acc[e] += v; }
                            }
                        }
                    }
                }
            }
        }
        for (var e = 0u; e < E; e++) {
            let j = j0 + lid + e * WG;
            if (j < p.d) { h[hb + j] = acc[e]; hh = fma(acc[e], acc[e], hh); hs += acc[e]; }
        }
    }
    hh = workgroup_sum(lid, hh);
    // PreNorm of h (this thread's own elements of h, as it wrote them).
    var mean = 0.0;
    var inv = 1.0 / sqrt(hh / f32(p.d) + p.norm_eps);
    if (p.norm_kind == 1u) {
        mean = workgroup_sum(lid, hs) / f32(p.d);
        var sq = 0.0;
        for (var j = lid; j < p.d; j += WG) { let c = h[hb + j] - mean; sq += c * c; }
        inv = 1.0 / sqrt(workgroup_sum(lid, sq) / f32(p.d) + p.norm_eps);
    }
    for (var j = lid; j < p.d; j += WG) {
        var v = (h[hb + j] - mean) * inv * gain[j];
        if (p.norm_kind == 1u) { v += beta[j]; }
        x[t * p.d + j] = v;
    }
    // Shares need <v_i, h>: read h back from this thread's own writes (same elements).
    for (var i0 = 0u; i0 < p.n; i0 += CH) {
        var part: array<f32, CH>;
        for (var c = 0u; c < CH; c++) { part[c] = 0.0; }
        for (var j0 = 0u; j0 < p.d; j0 += E * WG) {
            var hv: array<f32, E>;
            for (var e = 0u; e < E; e++) {
                let j = j0 + lid + e * WG;
                hv[e] = 0.0;
                if (j < p.d) { hv[e] = h[hb + j]; }
            }
            for (var c = 0u; c < CH; c++) {
                let base = base_of[min(i0 + c, p.n - 1u)];
                var dot = 0.0;
                for (var e = 0u; e < E; e++) {
                    let j = j0 + lid + e * WG;
                    if (j < p.d) { dot = fma(src[base + j], hv[e], dot); }
                }
                part[c] += dot;
            }
        }
        chunk_sums(lid, part);
        if (lid < CH && i0 + lid < p.n) {
            let i = i0 + lid;
            let row = t * p.n + i;
            stats[p.alpha_off + row] = weight[i];
            stats[p.shares_off + row] = weight[i] * chunk[lid * WG] / max(hh, 1.1754944e-38);
            stats[p.src_rms_off + row] = sqrt(ms_of[i]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) { stats[p.hidden_rms_off + t] = sqrt(hh / f32(p.d)); }
}

// ---------------------------------------------------------------------------------------------
// `main_cached`: the same op and statistics in one read of the sources, for ops whose sources fit
// in registers (n <= CN, d % 4 == 0 and d <= 4 * CE * CWG; the host picks it, `main` otherwise).
// With p.fused = 1 it first does the previous sublayer's `sublayer_out` (norm.wgsl) for its
// token: y (the sum of `splits` split-K partials in `yin`, plus the bias when has_bias) goes to
// the sink slot, written (sink_kind 1) or added to the Block partial there (0), with rms(y) at
// y_rms_off, the sink's mean square (its depth-key norm) and, for a partial, its RMS at
// partial_rms_off. One dispatch per sublayer instead of two; y's squares ride on the first
// workgroup reduction. Each thread writes the sink elements it then loads as a source, so what
// it reads back is its own write (no barrier).
// Each thread loads its CE vec4s of every source once, up front (n * CE 16-byte loads in flight),
// and scores, mixes and takes the shares from those registers.
// On the H100 this op waits on memory latency, not bandwidth: one token's rows are few, so what
// counts is how few dependent load rounds a workgroup makes. h is not written: nothing reads it.
// Reductions over the workgroup take CR values at once (CN dots, then Σh², Σh) in three
// barriers, not a log2 tree.

// Rows of a cached reduction: one per source, plus Σh² and Σh.
// (The first reduction's last two rows carry Σy² and Σ(sink)² of the fused sublayer_out.)
const CR: u32 = CN + 2u;
const_assert CN <= 4u * CSLOT_VEC4S;
const NO_OFFSET: u32 = 0xffffffffu;
// Each thread of the second step sums SEG values, strided so that neighbours read neighbours.
const SEG: u32 = 16u;
const_assert CWG % SEG == 0u;
const_assert CR * (CWG / SEG) <= CWG;
var<workgroup> cred: array<f32, CR * CWG>;
var<workgroup> cseg: array<f32, CR * (CWG / SEG)>;
var<workgroup> ctot: array<f32, CR>;

// vec4 views of the bindings `main_cached` streams (rows of d % 4 == 0 floats).
@group(0) @binding(1) var<storage, read_write> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> yin4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> qg4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> gain4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> x4: array<vec4<f32>>;

// Every thread's `part` summed over the workgroup; every thread gets the totals back. Every
// thread must call it (barriers); totals are copied out before the next call can overwrite them.
fn cached_sums(lid: u32, part: array<f32, CR>) -> array<f32, CR> {
    for (var r = 0u; r < CR; r++) { cred[r * CWG + lid] = part[r]; }
    workgroupBarrier();
    let segs = CWG / SEG;
    if (lid < CR * segs) {
        let r = lid / segs;
        let s = lid % segs;
        var acc = 0.0;
        for (var k = 0u; k < SEG; k++) { acc += cred[r * CWG + s + k * segs]; }
        cseg[lid] = acc;
    }
    workgroupBarrier();
    if (lid < CR) {
        var acc = 0.0;
        for (var s = 0u; s < segs; s++) { acc += cseg[lid * segs + s]; }
        ctot[lid] = acc;
    }
    workgroupBarrier();
    var out: array<f32, CR>;
    for (var r = 0u; r < CR; r++) { out[r] = ctot[r]; }
    return out;
}

@compute @workgroup_size(CWG)
fn main_cached(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lt = wg.x + wg.y * 65535u;
    if (lt >= p.tc) { return; }
    let t = p.t0 + lt;
    let d4 = p.d / 4u;
    var sy = 0.0;
    var sv = 0.0;
    if (p.fused != 0u) {
        let sink = (p.sink_slot * p.tc + lt) * d4;
        for (var e = 0u; e < CE; e++) {
            let j = lid + e * CWG;
            if (j < d4) {
                // The split-K partial sums in split order (deterministic), as sublayer_out.
                var y = vec4<f32>(0.0);
                for (var s = 0u; s < p.splits; s++) { y += yin4[(s * p.split_stride + t * p.d) / 4u + j]; }
                if (p.has_bias != 0u) { y += bias4[j]; }
                var v = y;
                if (p.sink_kind == 0u) { v += src4[sink + j]; }
                src4[sink + j] = v;
                sy += dot(y, y);
                sv += dot(v, v);
            }
        }
    }
    // v[(c * CE + e) * 4 + k]: component k of vec4 lid + e * CWG of source c's row (0 past the
    // row or past n). Scalar arrays, loaded through vec4s: Mesa's LLVM backend took minutes to
    // compile arrays of vec4 that live across barriers (seen on llvmpipe GL; lavapipe shares it).
    var v: array<f32, CN * CE * 4>;
    var ms: array<f32, CN>;
    // Which source is the fused sink (CN: none); its mean square comes from the reduction.
    var sink_c = CN;
    for (var c = 0u; c < CN; c++) {
        ms[c] = 1.0;
        for (var k = 0u; k < CE * 4u; k++) { v[c * CE * 4u + k] = 0.0; }
        if (c < p.n) {
            let slot = p.cached_slots[c / 4u][c % 4u];
            if (p.fused != 0u && slot == p.sink_slot) { sink_c = c; }
            let base = (slot * p.tc + lt) * d4;
            ms[c] = stats[p.ms_off + slot * p.t + t];
            for (var e = 0u; e < CE; e++) {
                let j = lid + e * CWG;
                if (j < d4) {
                    let x = src4[base + j];
                    let o = (c * CE + e) * 4u;
                    v[o] = x.x; v[o + 1u] = x.y; v[o + 2u] = x.z; v[o + 3u] = x.w;
                }
            }
        }
    }
    var w: array<f32, CN>;
    var ms_y = 0.0;
    var ms_sink = 0.0;
    if (p.mode == 1u || p.fused != 0u) {
        var part: array<f32, CR>;
        for (var r = 0u; r < CR; r++) { part[r] = 0.0; }
        if (p.mode == 1u) {
            var q: array<f32, CE * 4>;
            for (var e = 0u; e < CE; e++) {
                let j = lid + e * CWG;
                var x = vec4<f32>(0.0);
                if (j < d4) { x = qg4[p.q_off / 4u + j]; }
                q[e * 4u] = x.x; q[e * 4u + 1u] = x.y; q[e * 4u + 2u] = x.z; q[e * 4u + 3u] = x.w;
            }
            for (var c = 0u; c < CN; c++) {
                for (var k = 0u; k < CE * 4u; k++) { part[c] = fma(v[c * CE * 4u + k], q[k], part[c]); }
            }
        }
        part[CN] = sy;
        part[CN + 1u] = sv;
        let dots = cached_sums(lid, part);
        ms_y = dots[CN] / f32(p.d);
        ms_sink = dots[CN + 1u] / f32(p.d);
        for (var c = 0u; c < CN; c++) { if (c == sink_c) { ms[c] = ms_sink; } }
        if (p.mode == 1u) {
            // Softmax over at most CN logits: every thread computes it (no barrier, no broadcast).
            var m = -3.0e38;
            for (var c = 0u; c < CN; c++) {
                w[c] = dots[c] / sqrt(ms[c] + p.eps);
                if (c < p.n) { m = max(m, w[c]); }
            }
            var sum = 0.0;
            for (var c = 0u; c < CN; c++) {
                w[c] = select(0.0, exp(w[c] - m), c < p.n);
                sum += w[c];
            }
            for (var c = 0u; c < CN; c++) { w[c] = w[c] / sum; }
        }
    }
    if (p.mode != 1u) {
        for (var c = 0u; c < CN; c++) { w[c] = select(0.0, 1.0, c < p.n); }
    }
    // h, in source order (the baseline's residual sum keeps the reference's summation order).
    var hv: array<f32, CE * 4>;
    for (var k = 0u; k < CE * 4u; k++) { hv[k] = 0.0; }
    for (var c = 0u; c < CN; c++) {
        if (c < p.n) {
            for (var k = 0u; k < CE * 4u; k++) {
                if (p.mode == 1u) {
                    hv[k] = fma(w[c], v[c * CE * 4u + k], hv[k]);
                } else {
                    hv[k] += v[c * CE * 4u + k];
                }
            }
        }
    }
    var part: array<f32, CR>;
    for (var r = 0u; r < CR; r++) { part[r] = 0.0; }
    for (var k = 0u; k < CE * 4u; k++) {
        for (var c = 0u; c < CN; c++) { part[c] = fma(v[c * CE * 4u + k], hv[k], part[c]); }
        part[CN] = fma(hv[k], hv[k], part[CN]);
        part[CN + 1u] += hv[k];
    }
    let sums = cached_sums(lid, part);
    let hh = sums[CN];
    // PreNorm of h into x.
    var mean = 0.0;
    var inv = 1.0 / sqrt(hh / f32(p.d) + p.norm_eps);
    if (p.norm_kind == 1u) {
        mean = sums[CN + 1u] / f32(p.d);
        var sq: array<f32, CR>;
        for (var r = 0u; r < CR; r++) { sq[r] = 0.0; }
        for (var e = 0u; e < CE; e++) {
            if (lid + e * CWG < d4) {
                for (var k = 0u; k < 4u; k++) { let c = hv[e * 4u + k] - mean; sq[0] = fma(c, c, sq[0]); }
            }
        }
        inv = 1.0 / sqrt(cached_sums(lid, sq)[0] / f32(p.d) + p.norm_eps);
    }
    for (var e = 0u; e < CE; e++) {
        let j = lid + e * CWG;
        if (j < d4) {
            let h4 = vec4<f32>(hv[e * 4u], hv[e * 4u + 1u], hv[e * 4u + 2u], hv[e * 4u + 3u]);
            var y = (h4 - mean) * inv * gain4[j];
            if (p.norm_kind == 1u) { y += beta4[j]; }
            x4[t * d4 + j] = y;
        }
    }
    // Thread c writes source c's statistics (constant indices: the arrays stay in registers).
    for (var c = 0u; c < CN; c++) {
        if (lid == c && c < p.n) {
            let row = t * p.n + c;
            stats[p.alpha_off + row] = w[c];
            stats[p.shares_off + row] = w[c] * sums[c] / max(hh, 1.1754944e-38);
            stats[p.src_rms_off + row] = sqrt(ms[c]);
        }
    }
    if (lid == 0u) {
        stats[p.hidden_rms_off + t] = sqrt(hh / f32(p.d));
        if (p.fused != 0u) {
            stats[p.y_rms_off + t] = sqrt(ms_y);
            stats[p.ms_off + p.sink_slot * p.t + t] = ms_sink;
            if (p.partial_rms_off != NO_OFFSET) { stats[p.partial_rms_off + t] = sqrt(ms_sink); }
        }
    }
}

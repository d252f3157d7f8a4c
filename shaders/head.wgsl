// Per position t over the logits row [vocab] (one workgroup each): log-sum-exp, the top-K
// predictions (ids and probabilities) and, when a target exists, the next-token loss term
// lse - logit[target]. K and WG are prepended by engine/kernels.rs. One read of the row: each
// thread keeps a running max and rescaled sum of exponentials (online softmax) and its own top-K
// of a strided slice; the WG lists are then merged pairwise in log2(WG) rounds.

// One pass covers `rows` positions from row0 (the logits buffer holds only those rows when the
// prompt's logits exceed one binding); `total` is the prompt length.
struct Params { rows: u32, vocab: u32, logits_off: u32, out_off: u32, row0: u32, total: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // per t: K ids (as f32 bits), K probs, nll

const NO_ID: u32 = 0xffffffffu;

var<workgroup> cand_v: array<f32, WG * K>;
var<workgroup> cand_i: array<u32, WG * K>;

// Candidate (v, i) ranks before (w, j): higher value, ties to the lower id (as a stable sort of
// the logits would order them). Empty slots (NO_ID) rank last.
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    if (i == NO_ID) { return false; }
    if (j == NO_ID) { return true; }
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local = wg.x + wg.y * 65535u;
    if (local >= p.rows) { return; }
    let t = p.row0 + local;
    let base = p.logits_off + local * p.vocab;
    var m = -3.0e38;
    var s = 0.0;
    var tv: array<f32, K>;
    var ti: array<u32, K>;
    for (var k = 0u; k < K; k++) { tv[k] = -3.4e38; ti[k] = NO_ID; }
    for (var j = lid; j < p.vocab; j += WG) {
        let v = logits[base + j];
        if (v > m) { s = s * exp(m - v); m = v; }
        s += exp(v - m);
        if (v > tv[K - 1u] || ti[K - 1u] == NO_ID) {
            var pos = K - 1u;
            while (pos > 0u && (v > tv[pos - 1u] || ti[pos - 1u] == NO_ID)) {
                tv[pos] = tv[pos - 1u]; ti[pos] = ti[pos - 1u]; pos--;
            }
            tv[pos] = v; ti[pos] = j;
        }
    }
    let gm = workgroup_max(lid, m);
    let total = workgroup_sum(lid, s * exp(m - gm));
    for (var k = 0u; k < K; k++) { cand_v[lid * K + k] = tv[k]; cand_i[lid * K + k] = ti[k]; }
    workgroupBarrier();
    // Pairwise merges of sorted lists: after the round with stride h, list lid holds the best K
    // of lists lid .. lid + 2h - 1.
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            var a = lid * K;
            var b = (lid + h) * K;
            let a_end = a + K;
            let b_end = b + K;
            for (var k = 0u; k < K; k++) {
                let take_a = b >= b_end || (a < a_end && !before(cand_v[b], cand_i[b], cand_v[a], cand_i[a]));
                if (take_a) { tv[k] = cand_v[a]; ti[k] = cand_i[a]; a++; } else { tv[k] = cand_v[b]; ti[k] = cand_i[b]; b++; }
            }
        }
        workgroupBarrier();
        if (lid < h) {
            for (var k = 0u; k < K; k++) { cand_v[lid * K + k] = tv[k]; cand_i[lid * K + k] = ti[k]; }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let ob = p.out_off + t * (2u * K + 1u);
        for (var k = 0u; k < K; k++) {
            out[ob + k] = bitcast<f32>(cand_i[k]);
            out[ob + K + k] = exp(cand_v[k] - gm) / total;
        }
        var nll = 0.0;
        if (t + 1u < p.total) { nll = (gm + log(total)) - logits[base + targets[t + 1u]]; }
        out[ob + 2u * K] = nll;
    }
}

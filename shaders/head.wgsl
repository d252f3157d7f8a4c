// Per position t over the logits row [vocab] (one workgroup each): log-sum-exp, the top-K
// predictions (ids and probabilities) and, when a target exists, the next-token loss term
// lse - logit[target]. K and WG are prepended by engine/head.rs. Each thread keeps its own
// top-K of a strided slice; thread 0 merges the WG * K candidates.

struct Params { t: u32, vocab: u32, logits_off: u32, out_off: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // per t: K ids (as f32 bits), K probs, nll

var<workgroup> cand_v: array<f32, WG * K>;
var<workgroup> cand_i: array<u32, WG * K>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.x + wg.y * 65535u;
    if (t >= p.t) { return; }
    let base = p.logits_off + t * p.vocab;
    var m = -3.0e38;
    for (var j = lid; j < p.vocab; j += WG) { m = max(m, logits[base + j]); }
    m = workgroup_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < p.vocab; j += WG) { s += exp(logits[base + j] - m); }
    s = workgroup_sum(lid, s);
    var tv: array<f32, K>;
    var ti: array<u32, K>;
    for (var k = 0u; k < K; k++) { tv[k] = -3.4e38; ti[k] = 0xffffffffu; }
    for (var j = lid; j < p.vocab; j += WG) {
        let v = logits[base + j];
        if (v > tv[K - 1u]) {
            var pos = K - 1u;
            while (pos > 0u && v > tv[pos - 1u]) { tv[pos] = tv[pos - 1u]; ti[pos] = ti[pos - 1u]; pos--; }
            tv[pos] = v; ti[pos] = j;
        }
    }
    for (var k = 0u; k < K; k++) { cand_v[lid * K + k] = tv[k]; cand_i[lid * K + k] = ti[k]; }
    workgroupBarrier();
    if (lid == 0u) {
        let ob = p.out_off + t * (2u * K + 1u);
        for (var k = 0u; k < K; k++) {
            var best = 0u;
            var best_v = -3.4e38;
            var best_i = 0xffffffffu;
            for (var c = 0u; c < WG * K; c++) {
                let ci = cand_i[c];
                // Highest value, ties to the lower id (as a stable sort of the logits would).
                if (ci != 0xffffffffu && (cand_v[c] > best_v || (cand_v[c] == best_v && ci < best_i))) {
                    best = c; best_v = cand_v[c]; best_i = ci;
                }
            }
            cand_i[best] = 0xffffffffu;
            out[ob + k] = bitcast<f32>(best_i);
            out[ob + K + k] = exp(best_v - m) / s;
        }
        var nll = 0.0;
        if (t + 1u < p.t) { nll = (m + log(s)) - logits[base + targets[t + 1u]]; }
        out[ob + 2u * K] = nll;
    }
}

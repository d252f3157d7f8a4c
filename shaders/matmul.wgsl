// Batched, strided GEMM (three entry points: `main`, any layout; `gemm_nt`, the fast path for
// k-contiguous, 16-byte-aligned operands with optional split-K; `splitk_reduce`, its second pass): C[b] = alpha * A[b] * B[b / b_group] (+ bias) (+ C[b] if accumulate).
//   A(i, k) = a[a_off + b * a_bstride + i * a_rs + k]              (rows of A are k-contiguous)
//   B(k, n) = b[b_off + (b / b_group) * b_bstride + k * b_sk + n * b_sn]
//             (weights stored [out, in] are B with b_sk = 1, b_sn = in; V in P*V has b_sn = 1)
//   C(i, n) = c[c_off + b * c_bstride + i * c_rs + n]
// Tiling: a workgroup computes a TILE_M x TILE_N tile of C, WG_X * WG_Y threads each computing
// (TILE_M / WG_Y) x (TILE_N / WG_X) outputs from BK-deep slices of A and B staged in workgroup
// memory. Every load and store is guarded: partial tiles (odd M, N, K) read zeros and write
// nothing, because this module is built without runtime bounds checks.
// TILE_M, TILE_N, BK, WG_X, WG_Y are prepended by engine/kernels.rs.

struct Params {
    m: u32, n: u32, k: u32, b_group: u32,
    a_off: u32, a_bstride: u32, a_rs: u32, has_bias: u32,
    b_off: u32, b_bstride: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_bstride: u32, c_rs: u32, accumulate: u32,
    bias_off: u32, alpha: f32, splits: u32, k_chunk: u32,
    split_stride: u32, batches: u32, causal: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const RM: u32 = TILE_M / WG_Y;
const RN: u32 = TILE_N / WG_X;
const THREADS: u32 = WG_X * WG_Y;

var<workgroup> tile_a: array<f32, BK * TILE_M>; // [k][m]
var<workgroup> tile_b: array<f32, BK * TILE_N>; // [k][n]

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(local_invocation_id) l: vec3<u32>) {
    let batch = wg.z;
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    let a_base = p.a_off + batch * p.a_bstride;
    let b_base = p.b_off + (batch / p.b_group) * p.b_bstride;
    var acc: array<f32, RM * RN>;
    for (var i = 0u; i < RM * RN; i++) { acc[i] = 0.0; }
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = lid; e < BK * TILE_M; e += THREADS) {
            let mm = e / BK;
            let kk = e % BK;
            let row = row0 + mm;
            let kx = k0 + kk;
            var v = 0.0;
            if (row < p.m && kx < p.k) { v = a[a_base + row * p.a_rs + kx]; }
            tile_a[kk * TILE_M + mm] = v;
        }
        for (var e = lid; e < BK * TILE_N; e += THREADS) {
            var kk: u32; var nn: u32;
            if (p.b_sk == 1u) { nn = e / BK; kk = e % BK; } else { kk = e / TILE_N; nn = e % TILE_N; }
            let col = col0 + nn;
            let kx = k0 + kk;
            var v = 0.0;
            if (col < p.n && kx < p.k) { v = b[b_base + kx * p.b_sk + col * p.b_sn]; }
            tile_b[kk * TILE_N + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, RM>;
            var bv: array<f32, RN>;
            for (var i = 0u; i < RM; i++) { av[i] = tile_a[kk * TILE_M + l.y * RM + i]; }
            for (var j = 0u; j < RN; j++) { bv[j] = tile_b[kk * TILE_N + l.x * RN + j]; }
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) { acc[i * RN + j] = fma(av[i], bv[j], acc[i * RN + j]); }
            }
        }
        workgroupBarrier();
    }
    let c_base = p.c_off + batch * p.c_bstride;
    for (var i = 0u; i < RM; i++) {
        let row = row0 + l.y * RM + i;
        if (row >= p.m) { continue; }
        for (var j = 0u; j < RN; j++) {
            let col = col0 + l.x * RN + j;
            if (col >= p.n) { continue; }
            var v = p.alpha * acc[i * RN + j];
            if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
            let idx = c_base + row * p.c_rs + col;
            if (p.accumulate != 0u) { v += c[idx]; }
            c[idx] = v;
        }
    }
}

// ---- Large-tile variant: a 128 x 128 tile of C per workgroup of 16 x 16 threads, each thread an
// 8 x 8 register block held as sixteen vec4 accumulators (named, so they stay in registers: WGSL
// has no unroll pragma and an indexed private array may spill). A thread owns rows
// {4ty..4ty+3} and {64+4ty..64+4ty+3}, and likewise columns, so that its workgroup-memory reads
// are whole vec4s without bank conflicts. LT (128: the register block is written for it) and LBK
// are prepended by engine/kernels.rs. Same edge guards as above.

var<workgroup> la: array<vec4<f32>, LBK * LT / 4u>; // [k][m / 4]
var<workgroup> lb: array<vec4<f32>, LBK * LT / 4u>; // [k][n / 4]

fn store_tile(is_a: bool, k: u32, mn: u32, v: f32) {
    let idx = k * LT + mn;
    if (is_a) { la[idx / 4u][idx % 4u] = v; } else { lb[idx / 4u][idx % 4u] = v; }
}

fn write_row(row: u32, col0: u32, c_base: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (row >= p.m) { return; }
    let cols = array<vec4<f32>, 2>(v0, v1);
    for (var half = 0u; half < 2u; half++) {
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + half * 64u + j;
            if (col >= p.n) { continue; }
            var v = p.alpha * cols[half][j];
            if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
            let idx = c_base + row * p.c_rs + col;
            if (p.accumulate != 0u) { v += c[idx]; }
            c[idx] = v;
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main_large(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
              @builtin(local_invocation_id) l: vec3<u32>) {
    let batch = wg.z;
    let row0 = wg.y * LT;
    let col0 = wg.x * LT;
    let a_base = p.a_off + batch * p.a_bstride;
    let b_base = p.b_off + (batch / p.b_group) * p.b_bstride;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += LBK) {
        // 1024 values of each tile, 4 per thread: A rows (and B rows when k-contiguous) are read
        // as runs of 4 consecutive k.
        for (var e = lid; e < LBK * LT; e += 256u) {
            let mm = e / LBK;
            let kk = e % LBK;
            let row = row0 + mm;
            let kx = k0 + kk;
            var v = 0.0;
            if (row < p.m && kx < p.k) { v = a[a_base + row * p.a_rs + kx]; }
            store_tile(true, kk, mm, v);
        }
        for (var e = lid; e < LBK * LT; e += 256u) {
            var kk: u32; var nn: u32;
            if (p.b_sk == 1u) { nn = e / LBK; kk = e % LBK; } else { kk = e / LT; nn = e % LT; }
            let col = col0 + nn;
            let kx = k0 + kk;
            var v = 0.0;
            if (col < p.n && kx < p.k) { v = b[b_base + kx * p.b_sk + col * p.b_sn]; }
            store_tile(false, kk, nn, v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < LBK; kk++) {
            let a0 = la[kk * (LT / 4u) + l.y];
            let a1 = la[kk * (LT / 4u) + 16u + l.y];
            let b0 = lb[kk * (LT / 4u) + l.x];
            let b1 = lb[kk * (LT / 4u) + 16u + l.x];
            c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }
    let c_base = p.c_off + batch * p.c_bstride;
    let r = row0 + l.y * 4u;
    let cc = col0 + l.x * 4u;
    write_row(r + 0u, cc, c_base, c00, c01);
    write_row(r + 1u, cc, c_base, c10, c11);
    write_row(r + 2u, cc, c_base, c20, c21);
    write_row(r + 3u, cc, c_base, c30, c31);
    write_row(r + 64u, cc, c_base, c40, c41);
    write_row(r + 65u, cc, c_base, c50, c51);
    write_row(r + 66u, cc, c_base, c60, c61);
    write_row(r + 67u, cc, c_base, c70, c71);
}

// ---- NT fast path: both A rows and B rows k-contiguous (B is a weight stored [out, in]), K and
// every offset and row stride a multiple of 4, so slices load as vec4. A workgroup computes a
// GBM x GBN tile with (GBN / GTN) x (GBM / GTM) threads of GTM x GTN outputs (GTM, GTN multiples
// of 4, at most 8 x 8). Outer products: each GBK-deep slice is staged k-major (transposed on its
// way into workgroup memory), so for every k a thread reads whole vec4s of its rows and columns
// (broadcast for A, consecutive for B) and does GTM x GTN multiply-adds from them. Thread (x, y)
// owns rows (h * GWY + y) * 4 + r and columns (g * GWX + x) * 4 + j. The next slice is loaded
// into registers while the current one is multiplied.
// Split-K (p.splits > 1): workgroup z = batch * splits + split covers k in
// [split * k_chunk, (split + 1) * k_chunk) and writes raw partial sums to
// c[split * split_stride + (batch * m + row) * n + col] (c is then the partials buffer);
// `splitk_reduce` sums them in split order, so results do not depend on scheduling.
// GBM, GBN, GBK, GTM, GTN are prepended by engine/kernels.rs. On the H100 (`depthlens kernels`
// shows the driver's register counts), the 8 x 8 block of 128 x 128 tiles uses no local memory:
// 128 registers with 8-deep slices (two workgroups per multiprocessor), 149 with 16-deep ones.

@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

const GKQ: u32 = GBK / 4u;
const GWX: u32 = GBN / GTN;
const GWY: u32 = GBM / GTM;
const GTHREADS: u32 = GWX * GWY;
const GLOAD_A: u32 = GBM * GKQ / GTHREADS; // whole: checked in engine/kernels.rs
const GLOAD_B: u32 = GBN * GKQ / GTHREADS;
const RM4: u32 = GTM / 4u; // a thread's row groups of 4
const RN4: u32 = GTN / 4u;
// vec4s per k-row of the staged tiles, padded by one so that the transposed stores of a warp
// (8 or 16 rows, 2 or 4 vec4s along k) fall on other banks: none or two to a bank.
const SA4: u32 = GBM / 4u + 1u;
const SB4: u32 = GBN / 4u + 1u;
const NACC: u32 = 16u; // vec4 accumulators of the largest block, 8 x 8 (engine/kernels.rs checks)

// k-major staged tiles: sa[k * SA4 + m / 4][m % 4] = A(row0 + m, k0 + k).
var<workgroup> sa: array<vec4<f32>, GBK * SA4>;
var<workgroup> sb: array<vec4<f32>, GBK * SB4>;

@compute @workgroup_size(GWX, GWY, 1)
fn gemm_nt(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(local_invocation_id) l: vec3<u32>) {
    let batch = wg.z / p.splits;
    let split = wg.z % p.splits;
    let row0 = wg.y * GBM;
    let col0 = wg.x * GBN;
    // Causal attention (only gemm_nt reads this hint; other kernels compute everything, which is
    // also correct): 1 = Q Kᵀ, whose tiles wholly above the diagonal are masked, so skip them
    // (uniform per workgroup, before any barrier); 2 = P V, where P is zero past each row's
    // position, so k stops at the tile's last row.
    if (p.causal == 1u && col0 >= row0 + GBM) { return; }
    var k_last = p.k;
    if (p.causal == 2u) { k_last = min(k_last, row0 + GBM); }
    let k_begin = split * p.k_chunk;
    let k_end = min(k_last, k_begin + p.k_chunk);
    let a_base = (p.a_off + batch * p.a_bstride) / 4u;
    let b_base = (p.b_off + (batch / p.b_group) * p.b_bstride) / 4u;
    let a_rs4 = p.a_rs / 4u;
    let b_rs4 = p.b_sn / 4u;

    var ra: array<vec4<f32>, GLOAD_A>;
    var rb: array<vec4<f32>, GLOAD_B>;
    // acc[i * RN4 + g]: row i, column group g. Sized for the largest tile (8 x 8) and indexed with
    // constants only (the write-out below names each entry), so that it stays in registers: one
    // loop over it that the compiler does not unroll puts all of it in local memory.
    var acc: array<vec4<f32>, NACC>;
    for (var i = 0u; i < NACC; i++) { acc[i] = vec4<f32>(0.0); }

    // Slice at k_begin into registers. (Written out here and again for the read-ahead below: one
    // shared function over private-scope arrays measured 7-19% slower on the H100.)
    for (var s = 0u; s < GLOAD_A; s++) {
        let e = lid + s * GTHREADS;
        let row = row0 + e / GKQ;
        let kx = k_begin + (e % GKQ) * 4u;
        var v = vec4<f32>(0.0);
        if (row < p.m && kx < k_end) { v = a4[a_base + row * a_rs4 + kx / 4u]; }
        ra[s] = v;
    }
    for (var s = 0u; s < GLOAD_B; s++) {
        let e = lid + s * GTHREADS;
        let col = col0 + e / GKQ;
        let kx = k_begin + (e % GKQ) * 4u;
        var v = vec4<f32>(0.0);
        if (col < p.n && kx < k_end) { v = b4[b_base + col * b_rs4 + kx / 4u]; }
        rb[s] = v;
    }

    for (var k0 = k_begin; k0 < k_end; k0 += GBK) {
        // Transposed into k-major rows: four scalar stores per vec4 read along k.
        for (var s = 0u; s < GLOAD_A; s++) {
            let e = lid + s * GTHREADS;
            let m = e / GKQ;
            let k = (e % GKQ) * 4u;
            for (var j = 0u; j < 4u; j++) { sa[(k + j) * SA4 + m / 4u][m % 4u] = ra[s][j]; }
        }
        for (var s = 0u; s < GLOAD_B; s++) {
            let e = lid + s * GTHREADS;
            let n = e / GKQ;
            let k = (e % GKQ) * 4u;
            for (var j = 0u; j < 4u; j++) { sb[(k + j) * SB4 + n / 4u][n % 4u] = rb[s][j]; }
        }
        workgroupBarrier();
        let k1 = k0 + GBK;
        if (k1 < k_end) {
            for (var s = 0u; s < GLOAD_A; s++) {
                let e = lid + s * GTHREADS;
                let row = row0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (row < p.m && kx < k_end) { v = a4[a_base + row * a_rs4 + kx / 4u]; }
                ra[s] = v;
            }
            for (var s = 0u; s < GLOAD_B; s++) {
                let e = lid + s * GTHREADS;
                let col = col0 + e / GKQ;
                let kx = k1 + (e % GKQ) * 4u;
                var v = vec4<f32>(0.0);
                if (col < p.n && kx < k_end) { v = b4[b_base + col * b_rs4 + kx / 4u]; }
                rb[s] = v;
            }
        }
        // The slice written out, 16 k per trip (8 for 8-deep slices): NVIDIA's compiler does not
        // unroll a loop over k_step, and each trip of a rolled one starts by waiting on its
        // workgroup-memory reads and ends copying accumulators between registers (its SASS). The
        // 16-deep 8 x 8 tile on the H100: 42.9 TFLOP/s at 16 per trip, 39.5 at 8, 37.9 at 4.
        if (GBK % 16u == 0u) {
            for (var k = 0u; k < GBK; k += 16u) {
                k_step8(&acc, k, l.x, l.y);
                k_step8(&acc, k + 8u, l.x, l.y);
            }
        } else {
            for (var k = 0u; k < GBK; k += 8u) { k_step8(&acc, k, l.x, l.y); }
        }
        workgroupBarrier();
    }

    let out = Out(row0, col0, l.x, l.y, split * p.split_stride + batch * p.m * p.n,
                  p.c_off + batch * p.c_bstride);
    write_out(out, 0u, acc[0]); write_out(out, 1u, acc[1]); write_out(out, 2u, acc[2]);
    write_out(out, 3u, acc[3]); write_out(out, 4u, acc[4]); write_out(out, 5u, acc[5]);
    write_out(out, 6u, acc[6]); write_out(out, 7u, acc[7]); write_out(out, 8u, acc[8]);
    write_out(out, 9u, acc[9]); write_out(out, 10u, acc[10]); write_out(out, 11u, acc[11]);
    write_out(out, 12u, acc[12]); write_out(out, 13u, acc[13]); write_out(out, 14u, acc[14]);
    write_out(out, 15u, acc[15]);
}

// Eight k, k0 .. k0 + 7, written out (see the slice loop above for why).
fn k_step8(acc: ptr<function, array<vec4<f32>, NACC>>, k0: u32, x: u32, y: u32) {
    k_step(acc, k0, x, y);
    k_step(acc, k0 + 1u, x, y);
    k_step(acc, k0 + 2u, x, y);
    k_step(acc, k0 + 3u, x, y);
    k_step(acc, k0 + 4u, x, y);
    k_step(acc, k0 + 5u, x, y);
    k_step(acc, k0 + 6u, x, y);
    k_step(acc, k0 + 7u, x, y);
}

// One k of the staged tiles into a thread's accumulators: GTM x GTN multiply-adds.
fn k_step(acc: ptr<function, array<vec4<f32>, NACC>>, k: u32, x: u32, y: u32) {
    var av: array<vec4<f32>, RM4>;
    var bv: array<vec4<f32>, RN4>;
    for (var h = 0u; h < RM4; h++) { av[h] = sa[k * SA4 + h * GWY + y]; }
    for (var g = 0u; g < RN4; g++) { bv[g] = sb[k * SB4 + g * GWX + x]; }
    for (var i = 0u; i < GTM; i++) {
        let a = vec4<f32>(av[i / 4u][i % 4u]);
        for (var g = 0u; g < RN4; g++) { (*acc)[i * RN4 + g] = fma(a, bv[g], (*acc)[i * RN4 + g]); }
    }
}

struct Out { row0: u32, col0: u32, x: u32, y: u32, part: u32, c_base: u32 }

// Accumulator q of thread (x, y): row i = q / RN4, (i / 4 * GWY + y) * 4 + i % 4 of the tile, and
// columns (g * GWX + x) * 4 + j, g = q % RN4.
fn write_out(o: Out, q: u32, v4: vec4<f32>) {
    if (q >= GTM * RN4) { return; }
    let i = q / RN4;
    let g = q % RN4;
    let row = o.row0 + ((i / 4u) * GWY + o.y) * 4u + i % 4u;
    if (row >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let col = o.col0 + (g * GWX + o.x) * 4u + j;
        if (col >= p.n) { continue; }
        if (p.splits > 1u) { c[o.part + row * p.n + col] = v4[j]; continue; }
        var v = p.alpha * v4[j];
        if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
        let idx = o.c_base + row * p.c_rs + col;
        if (p.accumulate != 0u) { v += c[idx]; }
        c[idx] = v;
    }
}

// Split-K second pass, one thread per output: the partial sums (bound as `a`) added in split
// order, then alpha, bias and accumulation as in a single pass.
@compute @workgroup_size(WG)
fn splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * WG;
    let per_batch = p.m * p.n;
    if (idx >= p.batches * per_batch) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) { sum += a[s * p.split_stride + idx]; }
    let batch = idx / per_batch;
    let row = (idx % per_batch) / p.n;
    let col = idx % p.n;
    var v = p.alpha * sum;
    if (p.has_bias != 0u) { v += bias[p.bias_off + col]; }
    let out = p.c_off + batch * p.c_bstride + row * p.c_rs + col;
    if (p.accumulate != 0u) { v += c[out]; }
    c[out] = v;
}

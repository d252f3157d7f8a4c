#!/usr/bin/env python3
"""PyTorch twin of `depthlens bench`: the same Llama-style models (baseline, Full and Block AttnRes,
ATTNRES.md) in PyTorch eager (and torch.compile), fp32 with TF32 off, batch 1, timing the forward
with the full Trace read back (per op: depth weights, shares, source/hidden/output RMS; top-5 per
position; loss). Also times cuBLAS GEMM at 4096^3 and at the model's shapes for T=512.

    python3 benches/torch_forward.py --synthetic block,12,768 --tokens 128,512,2048 [--compile]

Prints tables in the same units as `depthlens bench`, for ratios taken in one run.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")


def config(spec):
    arch, layers, dim = spec.split(",")
    layers, dim = int(layers), int(dim)
    heads, kv, vocab = (9, 3, 49152) if dim == 576 else (dim // 64, dim // 64, 50304)
    ffn = math.ceil(8 * dim / 3 / 256) * 256
    block = math.ceil(2 * layers / 8) if arch == "block" else None
    return dict(arch=arch, L=layers, d=dim, H=heads, Hkv=kv, V=vocab, ffn=ffn, S=block)


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d, hd = c["d"], c["d"] // c["H"]
        g = torch.Generator().manual_seed(1)
        w = lambda *s: torch.nn.Parameter(0.02 * torch.randn(*s, generator=g))
        self.embed = w(c["V"], d)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["L"]):
            m = torch.nn.Module()
            m.q, m.k, m.v, m.o = w(c["H"] * hd, d), w(c["Hkv"] * hd, d), w(c["Hkv"] * hd, d), w(d, c["H"] * hd)
            m.gate, m.up, m.down = w(c["ffn"], d), w(c["ffn"], d), w(d, c["ffn"])
            m.n1, m.n2 = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.ones(d))
            self.layers.append(m)
        self.final_norm = torch.nn.Parameter(torch.ones(d))
        self.queries = torch.nn.Parameter(0.1 * torch.randn(2 * c["L"] + 1, d, generator=g))
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        self.register_buffer("inv_freq", inv)

    def rope(self, x, T):
        ang = torch.arange(T, device=x.device).float()[:, None] * self.inv_freq[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        x1, x2 = x.chunk(2, -1)
        return x * cos + torch.cat([-x2, x1], -1) * sin

    @staticmethod
    def rms(x):
        return x.pow(2).mean(-1).sqrt()

    def norm(self, x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * g

    def mix(self, srcs, l, stats):
        s = torch.stack(srcs)  # [n, T, d]
        if self.c["arch"] == "baseline":
            h = s.sum(0)
            alpha = torch.ones(s.shape[:2], device=s.device)
        else:
            k = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6)
            alpha = (k @ self.queries[l]).softmax(0)  # [n, T]
            h = (alpha[..., None] * s).sum(0)
        hh = h.pow(2).sum(-1)
        shares = alpha * (s * h).sum(-1) / hh
        stats += [alpha, shares, self.rms(s), self.rms(h)]
        return h

    def attention(self, m, x, T):
        c = self.c
        hd = c["d"] // c["H"]
        q = (x @ m.q.T).view(T, c["H"], hd).transpose(0, 1)
        k = (x @ m.k.T).view(T, c["Hkv"], hd).transpose(0, 1)
        v = (x @ m.v.T).view(T, c["Hkv"], hd).transpose(0, 1)
        q, k = self.rope(q, T), self.rope(k, T)
        rep = c["H"] // c["Hkv"]
        k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
        o = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
        return o.transpose(0, 1).reshape(T, -1) @ m.o.T

    def forward(self, ids):
        T = ids.shape[0]
        stats = []
        blocks, partial, count = [self.embed[ids]], None, 0
        full = [blocks[0]]
        for l in range(2 * self.c["L"]):
            m = self.layers[l // 2]
            if self.c["arch"] == "block":
                srcs = blocks + ([partial] if partial is not None else [])
            else:
                srcs = full
            h = self.mix(srcs, l, stats)
            if l % 2 == 0:
                y = self.attention(m, self.norm(h, m.n1), T)
            else:
                x = self.norm(h, m.n2)
                y = (F.silu(x @ m.gate.T) * (x @ m.up.T)) @ m.down.T
            stats.append(self.rms(y))
            if self.c["arch"] == "block":
                partial = y if partial is None else partial + y
                count += 1
                if count == self.c["S"] or l == 2 * self.c["L"] - 1:
                    blocks.append(partial)
                    partial, count = None, 0
            else:
                full.append(y)
        h = self.mix(blocks if self.c["arch"] == "block" else full, 2 * self.c["L"], stats)
        logits = self.norm(h, self.final_norm) @ self.embed.T
        probs = logits.softmax(-1)
        top = probs.topk(5, -1)
        loss = F.cross_entropy(logits[:-1], ids[1:])
        return stats, top.values, top.indices, loss


def trace(model, ids):
    """Forward + read every Trace statistic back to the host."""
    stats, tv, ti, loss = model(ids)
    return [s.cpu() for s in stats], tv.cpu(), ti.cpu(), loss.item()


def time_ms(fn, iters, warmup=3):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return sorted(out)[len(out) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", default="block,12,768")
    ap.add_argument("--tokens", default="128,512,2048")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="also torch.compile default and reduce-overhead")
    ap.add_argument("--matmul", action="store_true")
    ap.add_argument("--cpu-threads", type=int, help="run on the CPU with this many threads (the candle reference's anchor)")
    a = ap.parse_args()
    c = config(a.synthetic)
    global dev
    if a.cpu_threads:
        dev = torch.device("cpu")
        torch.set_num_threads(a.cpu_threads)
        where = f"CPU, {torch.get_num_threads()} threads"
    else:
        where = torch.cuda.get_device_name()
    print(f"PyTorch {torch.__version__} on {where}, fp32, TF32 off; model {a.synthetic} {c}")
    if a.matmul:
        print("\n| GEMM (M x K) x (N x K)^T | ms | TFLOP/s |\n|---|---|---|")
        d, q = c["d"], c["H"] * (c["d"] // c["H"])
        for m, n, k, name in [(4096, 4096, 4096, "4096^3"), (512, q, d, "q/o proj T=512"),
                              (512, c["ffn"], d, "gate/up T=512"), (512, d, c["ffn"], "down T=512"),
                              (512, c["V"], d, "LM head T=512")]:
            A, B = torch.randn(m, k, device=dev), torch.randn(n, k, device=dev)
            ms = time_ms(lambda: A @ B.T, 20)
            print(f"| {name} ({m}x{k})x({n}x{k})^T | {ms:.3f} | {2 * m * n * k / ms / 1e9:.2f} |")
        return
    model = Model(c).to(dev).eval()
    modes = [("eager", model)]
    if a.compile:
        modes += [("compile", torch.compile(model)), ("reduce-overhead", torch.compile(model, mode="reduce-overhead"))]
    print("\n| mode | tokens | ms / forward + Trace (median) |\n|---|---|---|")
    with torch.no_grad():
        for name, m in modes:
            for T in [int(t) for t in a.tokens.split(",")]:
                ids = (torch.arange(T, device=dev) * 7919 + 13) % c["V"]
                ms = time_ms(lambda: trace(m, ids), a.iters)
                print(f"| {name} | {T} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Tiny random checkpoints written by Hugging Face transformers, with the logits transformers
computes for them (float64, CPU, eager attention). depthlens' tests load these folders and must
reproduce the logits: an implementation we did not write checks ours.

Also writes AttnRes checkpoints (ATTNRES.md format) with logits from a plain PyTorch
implementation of ATTNRES.md that reuses transformers' Llama modules for attention and MLP.

Run where torch and transformers are installed (the H100 machine has both):
    python3 tools/make_hf_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
import transformers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT = sys.argv[1]
IDS = [1, 77, 203, 5, 5, 140, 9, 255, 31, 64, 2]
torch.manual_seed(0)


def randomise(model):
    """Large enough weights that every part of the model moves the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))


def rms(x):
    return x.pow(2).mean(-1).sqrt()


def save(name, model, logits, hidden_rms, extra=None):
    d = os.path.join(OUT, name)
    model.save_pretrained(d, safe_serialization=True)
    expected = {"ids": IDS, "logits": logits.tolist(), "hidden_rms": hidden_rms,
                "transformers": transformers.__version__, "torch": torch.__version__}
    if extra:
        expected.update(extra)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(name, "saved", os.listdir(d), flush=True)


def hf_case(name, cfg_cls, model_cls, **kw):
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).eval()
    randomise(model)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    ref = model_cls(cfg).eval().double()
    ref.load_state_dict(model.state_dict())
    ref.config._attn_implementation = "eager"
    with torch.no_grad():
        out = ref(torch.tensor([IDS]), output_hidden_states=True)
    # hidden_states[i] for i < L is the residual stream entering layer i (our op 2i's input).
    n_layers = len(out.hidden_states) - 1
    hidden_rms = [rms(out.hidden_states[i][0]).tolist() for i in range(n_layers)]
    save(name, model, out.logits[0], hidden_rms, {"hidden_rms_ops": [2 * i for i in range(n_layers)]})


common = dict(vocab_size=256, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
              num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5)

rope_llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
try:
    hf_case("llama_gqa_llama3rope", LlamaConfig, LlamaForCausalLM, head_dim=8,
            rope_parameters=dict(rope_theta=50000.0, **rope_llama3), tie_word_embeddings=False, **common)
except TypeError:
    hf_case("llama_gqa_llama3rope", LlamaConfig, LlamaForCausalLM, head_dim=8, rope_theta=50000.0,
            rope_scaling=rope_llama3, tie_word_embeddings=False, **common)
try:
    hf_case("llama_linear_rope_tied", LlamaConfig, LlamaForCausalLM,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
            tie_word_embeddings=True, **common)
except TypeError:
    hf_case("llama_linear_rope_tied", LlamaConfig, LlamaForCausalLM, rope_theta=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0}, tie_word_embeddings=True, **common)
hf_case("mistral_sliding_window", MistralConfig, MistralForCausalLM, sliding_window=4,
        tie_word_embeddings=False, **common)
hf_case("qwen2_bias_tied", Qwen2Config, Qwen2ForCausalLM, tie_word_embeddings=True,
        use_sliding_window=False, **common)
hf_case("gpt2", GPT2Config, GPT2LMHeadModel, vocab_size=256, n_embd=48, n_layer=2, n_head=4,
        n_positions=64, activation_function="gelu_new")


# ---- AttnRes (ATTNRES.md), on transformers' Llama blocks -------------------------------------
def attnres_case(name, mode, block_size=None):
    cfg = LlamaConfig(head_dim=8, rope_theta=10000.0, tie_word_embeddings=False, **common)
    cfg._attn_implementation = "eager"
    base = LlamaForCausalLM(cfg).eval()
    randomise(base)
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    queries = [0.5 * torch.randn(d) for _ in range(2 * L + 1)]
    gains = [1.0 + 0.1 * torch.randn(d) for _ in range(2 * L + 1)]
    eps = 1e-6
    ref = LlamaForCausalLM(cfg).eval().double()
    ref.load_state_dict(base.state_dict())
    m = ref.model
    ids = torch.tensor([IDS])
    T = len(IDS)
    pos = torch.arange(T)[None]
    cos_sin = m.rotary_emb(m.embed_tokens(ids), pos)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)[None, None]

    def depth(srcs, l):
        s = torch.stack(srcs)  # [n, 1, T, d]
        k = s / (s.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        logits = (k * (queries[l] * gains[l]).double()).sum(-1)
        alpha = logits.softmax(0)
        return (alpha[..., None] * s).sum(0), alpha[:, 0].T

    emb = m.embed_tokens(ids)
    blocks, partial, count = [emb], None, 0
    alphas, hidden_rms = [], []
    with torch.no_grad():
        for l in range(2 * L):
            layer = m.layers[l // 2]
            srcs = blocks + ([partial] if partial is not None else [])
            h, alpha = depth(srcs, l)
            alphas.append(alpha.tolist())
            hidden_rms.append(rms(h[0]).tolist())
            if l % 2 == 0:
                y = layer.self_attn(hidden_states=layer.input_layernorm(h), position_embeddings=cos_sin,
                                    attention_mask=mask)[0]
            else:
                y = layer.mlp(layer.post_attention_layernorm(h))
            if mode == "full":
                blocks.append(y)
            else:
                partial = y if partial is None else partial + y
                count += 1
                if count == block_size or l == 2 * L - 1:
                    blocks.append(partial)
                    partial, count = None, 0
        h, alpha = depth(blocks + ([partial] if partial is not None else []), 2 * L)
        alphas.append(alpha.tolist())
        logits = ref.lm_head(m.norm(h))[0]
    d_out = os.path.join(OUT, name)
    base.save_pretrained(d_out, safe_serialization=True)
    # Rewrite as an ATTNRES.md checkpoint: model_type attnres + the depth tensors.
    from safetensors.torch import load_file, save_file
    tensors = load_file(os.path.join(d_out, "model.safetensors"))
    for l in range(2 * L + 1):
        prefix = "model.final_res" if l == 2 * L else f"model.layers.{l // 2}.{'attn_res' if l % 2 == 0 else 'mlp_res'}"
        tensors[prefix + ".query"] = queries[l].float().contiguous()
        tensors[prefix + ".key_norm.weight"] = gains[l].float().contiguous()
    save_file(tensors, os.path.join(d_out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d_out, "config.json")) as f:
        c = json.load(f)
    c["model_type"] = "attnres"
    c["architectures"] = ["AttnResForCausalLM"]
    c["attnres_mode"] = mode
    c["attnres_eps"] = eps
    if block_size:
        c["attnres_block_size"] = block_size
    with open(os.path.join(d_out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    with open(os.path.join(d_out, "expected.json"), "w") as f:
        json.dump({"ids": IDS, "logits": logits.tolist(), "hidden_rms": hidden_rms, "alpha": alphas,
                   "hidden_rms_ops": list(range(2 * L)),
                   "transformers": transformers.__version__, "torch": torch.__version__}, f)
    print(name, "saved", flush=True)


attnres_case("attnres_full", "full")
attnres_case("attnres_block3", "block", 3)

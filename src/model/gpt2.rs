//! GPT-2 weights: fused Conv1D q/k/v stored `[in, out]`, LayerNorms with bias, learned positions.

use candle_core::Tensor;

use super::config::ModelConfig;
use super::llama::load_head;
use super::loader::Loader;
use super::weights::{Layer, Linear, Mlp, Weights};
use super::Error;

/// GPT-2's Conv1D computes `x W + b` with `W` stored `[in, out]`; we keep every linear `[out, in]`.
fn conv1d(l: &mut Loader, prefix: &str, inp: usize, out: usize) -> Result<(Tensor, Tensor), Error> {
    let w = l.tensor(&format!("{prefix}.weight"), &[inp, out])?;
    let b = l.tensor(&format!("{prefix}.bias"), &[out])?;
    Ok((w.t()?.contiguous()?, b))
}

fn rows(w: &Tensor, b: &Tensor, start: usize, len: usize) -> Result<Linear, Error> {
    Ok(Linear::new(
        w.narrow(0, start, len)?.contiguous()?,
        Some(b.narrow(0, start, len)?.contiguous()?),
    ))
}

pub fn load(cfg: &ModelConfig, l: &mut Loader) -> Result<Weights, Error> {
    // Checkpoints saved from GPT2LMHeadModel prefix everything with `transformer.`, GPT2Model not.
    let pre = if l.has("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let d = cfg.hidden_size;
    let ff = cfg.intermediate_size;
    let embed = l.tensor(&format!("{pre}wte.weight"), &[cfg.vocab_size, d])?;
    let positions = l.tensor(&format!("{pre}wpe.weight"), &[cfg.max_positions, d])?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("{pre}h.{i}");
        // Causal-mask buffers that old exports store; not parameters.
        l.ignore(&format!("{p}.attn.bias"));
        l.ignore(&format!("{p}.attn.masked_bias"));
        let (qkv_w, qkv_b) = conv1d(l, &format!("{p}.attn.c_attn"), d, 3 * d)?;
        let (o_w, o_b) = conv1d(l, &format!("{p}.attn.c_proj"), d, d)?;
        let (fc_w, fc_b) = conv1d(l, &format!("{p}.mlp.c_fc"), d, ff)?;
        let (pr_w, pr_b) = conv1d(l, &format!("{p}.mlp.c_proj"), ff, d)?;
        layers.push(Layer {
            attn_norm: l.norm(&format!("{p}.ln_1"), d, true)?,
            q: rows(&qkv_w, &qkv_b, 0, d)?,
            k: rows(&qkv_w, &qkv_b, d, d)?,
            v: rows(&qkv_w, &qkv_b, 2 * d, d)?,
            o: Linear::new(o_w, Some(o_b)),
            mlp_norm: l.norm(&format!("{p}.ln_2"), d, true)?,
            mlp: Mlp::Gelu {
                fc: Linear::new(fc_w, Some(fc_b)),
                proj: Linear::new(pr_w, Some(pr_b)),
            },
            attn_res: None,
            mlp_res: None,
        });
    }
    let final_norm = l.norm(&format!("{pre}ln_f"), d, true)?;
    let lm_head = load_head(cfg, l, "lm_head.weight", &embed)?;
    Ok(Weights {
        embed,
        positions: Some(positions),
        layers,
        final_norm,
        lm_head,
        final_res: None,
    })
}

//! Llama-family weights (Llama, Mistral, SmolLM, TinyLlama, Qwen2) and the Llama base of AttnRes.

use super::attnres;
use super::config::ModelConfig;
use super::loader::Loader;
use super::weights::{Layer, Mlp, Weights};
use super::Error;

pub fn load(cfg: &ModelConfig, l: &mut Loader) -> Result<Weights, Error> {
    let d = cfg.hidden_size;
    let q_out = cfg.num_heads * cfg.head_dim;
    let kv_out = cfg.num_kv_heads * cfg.head_dim;
    let ff = cfg.intermediate_size;
    let embed = l.tensor("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        // A cached RoPE table some exporters save; we recompute it from the config.
        l.ignore(&format!("{p}.self_attn.rotary_emb.inv_freq"));
        let (attn_res, mlp_res) = match cfg.attnres {
            Some(_) => (
                Some(attnres::load_op(l, &format!("{p}.attn_res"), d)?),
                Some(attnres::load_op(l, &format!("{p}.mlp_res"), d)?),
            ),
            None => (None, None),
        };
        layers.push(Layer {
            attn_norm: l.norm(&format!("{p}.input_layernorm"), d, false)?,
            q: l.linear(&format!("{p}.self_attn.q_proj"), q_out, d, cfg.qkv_bias)?,
            k: l.linear(&format!("{p}.self_attn.k_proj"), kv_out, d, cfg.qkv_bias)?,
            v: l.linear(&format!("{p}.self_attn.v_proj"), kv_out, d, cfg.qkv_bias)?,
            o: l.linear(&format!("{p}.self_attn.o_proj"), d, q_out, false)?,
            mlp_norm: l.norm(&format!("{p}.post_attention_layernorm"), d, false)?,
            mlp: Mlp::SwiGlu {
                gate: l.linear(&format!("{p}.mlp.gate_proj"), ff, d, false)?,
                up: l.linear(&format!("{p}.mlp.up_proj"), ff, d, false)?,
                down: l.linear(&format!("{p}.mlp.down_proj"), d, ff, false)?,
            },
            attn_res,
            mlp_res,
        });
    }
    let final_res = match cfg.attnres {
        Some(_) => Some(attnres::load_op(l, "model.final_res", d)?),
        None => None,
    };
    let final_norm = l.norm("model.norm", d, false)?;
    let lm_head = load_head(cfg, l, "lm_head.weight", &embed)?;
    Ok(Weights {
        embed,
        positions: None,
        layers,
        final_norm,
        lm_head,
        final_res,
    })
}

/// The output projection: its own tensor, or the embedding when tied. A tied checkpoint that
/// still stores a head is checked to hold the same numbers (HF would ignore it).
pub fn load_head(
    cfg: &ModelConfig,
    l: &mut Loader,
    name: &str,
    embed: &candle_core::Tensor,
) -> Result<Option<candle_core::Tensor>, Error> {
    let shape = [cfg.vocab_size, cfg.hidden_size];
    if !cfg.tie_word_embeddings {
        return l.tensor(name, &shape).map(Some);
    }
    if let Some(head) = l.optional(name, &shape)? {
        let diff = (head - embed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        if diff > 0.0 {
            l.warnings.push(format!(
                "tie_word_embeddings is true but `{name}` differs from the embedding (max |diff| {diff:e}); \
                 using the embedding, as transformers does"
            ));
        }
    }
    Ok(None)
}

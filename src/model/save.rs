//! Writing checkpoints: our weights under their Hugging Face / ATTNRES.md names, to a single
//! `.safetensors` file (config in `__metadata__`) or a folder.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::{Dtype, TensorView};

use super::checkpoint::{CONFIG_METADATA_KEY, TOKENIZER_METADATA_KEY};
use super::config::{Family, ModelConfig};
use super::weights::{DepthQuery, Linear, Mlp, Norm, Weights};
use super::Error;

/// Storage precision of a written checkpoint (computation is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
    BF16,
}

/// Every tensor of `w` under the name its family's checkpoints use.
pub fn named_tensors(cfg: &ModelConfig, w: &Weights) -> Result<Vec<(String, Tensor)>, Error> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let push_norm = |out: &mut Vec<(String, Tensor)>, p: &str, n: &Norm| {
        out.push((format!("{p}.weight"), n.weight.clone()));
        if let Some(b) = &n.bias {
            out.push((format!("{p}.bias"), b.clone()));
        }
    };
    let push_lin = |out: &mut Vec<(String, Tensor)>, p: &str, l: &Linear| {
        out.push((format!("{p}.weight"), l.weight.clone()));
        if let Some(b) = &l.bias {
            out.push((format!("{p}.bias"), b.clone()));
        }
    };
    let push_depth = |out: &mut Vec<(String, Tensor)>, p: &str, d: &Option<DepthQuery>| {
        if let Some(d) = d {
            out.push((format!("{p}.query"), d.query.clone()));
            out.push((format!("{p}.key_norm.weight"), d.key_gain.clone()));
        }
    };
    match cfg.family {
        Family::Llama => {
            out.push(("model.embed_tokens.weight".into(), w.embed.clone()));
            for (i, l) in w.layers.iter().enumerate() {
                let p = format!("model.layers.{i}");
                push_depth(&mut out, &format!("{p}.attn_res"), &l.attn_res);
                push_norm(&mut out, &format!("{p}.input_layernorm"), &l.attn_norm);
                push_lin(&mut out, &format!("{p}.self_attn.q_proj"), &l.q);
                push_lin(&mut out, &format!("{p}.self_attn.k_proj"), &l.k);
                push_lin(&mut out, &format!("{p}.self_attn.v_proj"), &l.v);
                push_lin(&mut out, &format!("{p}.self_attn.o_proj"), &l.o);
                push_depth(&mut out, &format!("{p}.mlp_res"), &l.mlp_res);
                push_norm(
                    &mut out,
                    &format!("{p}.post_attention_layernorm"),
                    &l.mlp_norm,
                );
                if let Mlp::SwiGlu { gate, up, down } = &l.mlp {
                    push_lin(&mut out, &format!("{p}.mlp.gate_proj"), gate);
                    push_lin(&mut out, &format!("{p}.mlp.up_proj"), up);
                    push_lin(&mut out, &format!("{p}.mlp.down_proj"), down);
                }
            }
            push_depth(&mut out, "model.final_res", &w.final_res);
            push_norm(&mut out, "model.norm", &w.final_norm);
        }
        Family::Gpt2 => {
            out.push(("transformer.wte.weight".into(), w.embed.clone()));
            if let Some(p) = &w.positions {
                out.push(("transformer.wpe.weight".into(), p.clone()));
            }
            // Conv1D stores [in, out]; q, k, v are fused column blocks of c_attn.
            let conv =
                |out: &mut Vec<(String, Tensor)>, p: &str, ls: &[&Linear]| -> Result<(), Error> {
                    let ws: Vec<&Tensor> = ls.iter().map(|l| &l.weight).collect();
                    let w = Tensor::cat(&ws, 0)?.t()?.contiguous()?;
                    let bs: Vec<Tensor> = ls
                        .iter()
                        .map(|l| {
                            l.bias.clone().ok_or_else(|| Error::Unsupported {
                                name: format!("{p}.bias"),
                                reason: "GPT-2 linears need a bias".into(),
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    out.push((format!("{p}.weight"), w));
                    out.push((format!("{p}.bias"), Tensor::cat(&bs, 0)?));
                    Ok(())
                };
            for (i, l) in w.layers.iter().enumerate() {
                let p = format!("transformer.h.{i}");
                push_norm(&mut out, &format!("{p}.ln_1"), &l.attn_norm);
                conv(&mut out, &format!("{p}.attn.c_attn"), &[&l.q, &l.k, &l.v])?;
                conv(&mut out, &format!("{p}.attn.c_proj"), &[&l.o])?;
                push_norm(&mut out, &format!("{p}.ln_2"), &l.mlp_norm);
                if let Mlp::Gelu { fc, proj } = &l.mlp {
                    conv(&mut out, &format!("{p}.mlp.c_fc"), &[fc])?;
                    conv(&mut out, &format!("{p}.mlp.c_proj"), &[proj])?;
                }
            }
            push_norm(&mut out, "transformer.ln_f", &w.final_norm);
        }
    }
    if let Some(h) = &w.lm_head {
        out.push(("lm_head.weight".into(), h.clone()));
    }
    Ok(out)
}

fn encode(t: &Tensor, dtype: StoreDtype) -> Result<(Dtype, Vec<u8>), Error> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(match dtype {
        StoreDtype::F32 => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        StoreDtype::F16 => (
            Dtype::F16,
            v.iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
        ),
        StoreDtype::BF16 => (
            Dtype::BF16,
            v.iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        ),
    })
}

/// Write named tensors to one safetensors file with the given `__metadata__`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    dtype: StoreDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), Error> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (dt, bytes) = encode(t, dtype)?;
            Ok((n.clone(), dt, t.dims().to_vec(), bytes))
        })
        .collect::<Result<_, Error>>()?;
    let views: Vec<(String, TensorView)> = encoded
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{n}`: {e}"),
                })
        })
        .collect::<Result<_, Error>>()?;
    // Write to a sibling temp file and rename, so an interrupted save never leaves a torn file.
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| Error::Safetensors {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Save a single-file checkpoint: weights plus the config JSON (and tokenizer JSON) in metadata.
pub fn save_single_file(
    path: &Path,
    config_json: &serde_json::Value,
    tokenizer_json: Option<&str>,
    cfg: &ModelConfig,
    w: &Weights,
    dtype: StoreDtype,
) -> Result<(), Error> {
    let mut meta = HashMap::new();
    meta.insert(CONFIG_METADATA_KEY.to_string(), config_json.to_string());
    meta.insert("format".to_string(), "pt".to_string());
    if let Some(t) = tokenizer_json {
        meta.insert(TOKENIZER_METADATA_KEY.to_string(), t.to_string());
    }
    write_safetensors(path, &named_tensors(cfg, w)?, dtype, Some(meta))
}

//! Helpers shared by the integration tests: tiny configs of every architecture and checkpoints
//! written to temporary folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use depthlens::model::random::{random_weights, RandomInit};
use depthlens::model::save::{named_tensors, save_single_file, write_safetensors, StoreDtype};
use depthlens::model::{ModelConfig, Weights};
use serde_json::json;

/// A tiny config of the given kind: `llama`, `qwen2`, `mistral`, `gpt2`, `gpt2:deep-mlp` (an MLP
/// wide enough that its biased output projection splits K on the GPU), `qwen2:wide` (d = 256: the
/// biased q/k/v projection splits K), `full`, `full:deep` (7 layers: its late ops have more sources
/// than the GPU depth kernel holds in registers), `block:S`.
/// Sizes are odd where the architecture allows, to catch shape mix-ups.
pub fn tiny_config(kind: &str) -> ModelConfig {
    let value = match kind {
        "gpt2" => json!({
            "model_type": "gpt2", "vocab_size": 300, "n_embd": 24, "n_layer": 3, "n_head": 3,
            "n_positions": 40, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"
        }),
        "gpt2:deep" => json!({
            "model_type": "gpt2", "vocab_size": 300, "n_embd": 24, "n_layer": 7, "n_head": 3,
            "n_positions": 40, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"
        }),
        "gpt2:deep-mlp" => json!({
            "model_type": "gpt2", "vocab_size": 300, "n_embd": 24, "n_layer": 2, "n_head": 3,
            "n_inner": 300, "n_positions": 40, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new"
        }),
        _ => {
            let (model_type, extra) = match kind {
                "llama" => ("llama", json!({})),
                "llama:deep" => ("llama", json!({"num_hidden_layers": 7})),
                "qwen2" => ("qwen2", json!({"tie_word_embeddings": true})),
                "qwen2:wide" => (
                    "qwen2",
                    json!({"hidden_size": 256, "num_attention_heads": 4, "head_dim": 64,
                           "num_hidden_layers": 2, "intermediate_size": 64}),
                ),
                "mistral" => ("mistral", json!({"sliding_window": 5})),
                "full" => ("attnres", json!({"attnres_mode": "full"})),
                "full:deep" => (
                    "attnres",
                    json!({"attnres_mode": "full", "num_hidden_layers": 7}),
                ),
                k if k.starts_with("block:") => (
                    "attnres",
                    json!({"attnres_mode": "block", "attnres_block_size": k[6..].parse::<usize>().unwrap()}),
                ),
                other => panic!("unknown tiny config {other}"),
            };
            let mut v = json!({
                "model_type": model_type, "vocab_size": 300, "hidden_size": 24,
                "intermediate_size": 37, "num_hidden_layers": 3, "num_attention_heads": 6,
                "num_key_value_heads": 2, "head_dim": 6, "max_position_embeddings": 40,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
                "attnres_eps": 1e-6
            });
            if model_type != "attnres" {
                v.as_object_mut().unwrap().remove("attnres_eps");
            }
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        }
    };
    ModelConfig::from_json(&value, "test config").expect("tiny config parses")
}

pub fn tiny_weights(cfg: &ModelConfig, seed: u64) -> Weights {
    random_weights(cfg, RandomInit::TEST, seed).expect("random weights")
}

/// Write a single-file checkpoint (config in metadata) and return its path.
pub fn write_single(
    dir: &Path,
    name: &str,
    cfg: &ModelConfig,
    w: &Weights,
    dtype: StoreDtype,
) -> PathBuf {
    let path = dir.join(name);
    save_single_file(&path, &cfg.to_hf_json(), None, cfg, w, dtype).expect("save checkpoint");
    path
}

/// Write a Hugging Face folder: config.json + model.safetensors.
pub fn write_folder(dir: &Path, cfg: &ModelConfig, w: &Weights) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        &named_tensors(cfg, w).unwrap(),
        StoreDtype::F32,
        None,
    )
    .unwrap();
    dir.to_path_buf()
}

/// Write a sharded folder: tensors split across `shards` files plus the index.
pub fn write_sharded(dir: &Path, cfg: &ModelConfig, w: &Weights, shards: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    let tensors = named_tensors(cfg, w).unwrap();
    let per = tensors.len().div_ceil(shards);
    let mut map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        write_safetensors(&dir.join(&file), chunk, StoreDtype::F32, None).unwrap();
        for (name, _) in chunk {
            map.insert(name.clone(), json!(file));
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Largest |a - b| / max(|b|, floor) over two equally long slices.
pub fn max_rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f32::max)
}

/// max |a - b| / max |b|: the error relative to the tensor's scale (logits near zero would make
/// an elementwise relative error meaningless).
pub fn normwise_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

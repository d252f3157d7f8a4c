//! Opening checkpoints: every layout and dtype gives the same Trace, and every kind of broken
//! file is a typed error whose message names the file, tensor or field.

mod common;

use std::path::{Path, PathBuf};

use depthlens::model::save::StoreDtype;
use depthlens::model::{Checkpoint, Error};
use depthlens::progress::Silent;
use depthlens::reference::{self, Input, TraceOptions};
use depthlens::trace::Trace;
use serde_json::json;

fn open(path: &Path) -> Result<Checkpoint, Error> {
    Checkpoint::open(path, &Silent)
}

fn trace(path: &Path) -> Trace {
    let ckpt = open(path).unwrap();
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    reference::trace(
        &ckpt,
        &Input::Ids(vec![3, 1, 4, 1, 5, 9, 2, 6]),
        opts,
        &Silent,
    )
    .unwrap()
}

fn logits(t: &Trace) -> Vec<f32> {
    t.logits.as_ref().unwrap().concat()
}

/// Relative closeness allowed for a checkpoint stored at reduced precision: the weights are
/// rounded, so compare to the f32 original rounded the same way.
fn assert_same_trace(a: &Trace, b: &Trace, tol: f32) {
    let err = common::max_rel_err(&logits(a), &logits(b), 1e-2);
    assert!(err <= tol, "logits rel err {err}");
    assert_eq!(a.ops.len(), b.ops.len());
    for (x, y) in a.ops.iter().zip(&b.ops) {
        assert_eq!(x.sources, y.sources);
        assert!(common::max_rel_err(x.alpha.flat(), y.alpha.flat(), 1e-2) <= tol);
        assert!(common::max_rel_err(&x.hidden_rms, &y.hidden_rms, 1e-3) <= tol);
    }
}

fn round_weights(
    w: &depthlens::model::Weights,
    dtype: candle_core::DType,
) -> depthlens::model::Weights {
    w.map_tensors(&mut |_, t| t.to_dtype(dtype)?.to_dtype(candle_core::DType::F32))
        .unwrap()
}

#[test]
fn f16_bf16_and_sharded_copies_give_the_same_trace_as_the_f32_original() {
    for kind in ["llama", "block:3", "gpt2"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = common::tiny_config(kind);
        let w = common::tiny_weights(&cfg, 21);
        let f32_path = common::write_single(dir.path(), "m.safetensors", &cfg, &w, StoreDtype::F32);
        let original = trace(&f32_path);
        let sharded = common::write_sharded(&dir.path().join("sharded"), &cfg, &w, 3);
        assert_same_trace(&trace(&sharded), &original, 0.0);
        let folder = common::write_folder(&dir.path().join("folder"), &cfg, &w);
        assert_same_trace(&trace(&folder), &original, 0.0);
        for (store, dtype) in [
            (StoreDtype::F16, candle_core::DType::F16),
            (StoreDtype::BF16, candle_core::DType::BF16),
        ] {
            let p = common::write_single(
                dir.path(),
                &format!("m-{dtype:?}.safetensors"),
                &cfg,
                &w,
                store,
            );
            let rounded = common::write_single(
                dir.path(),
                "rounded.safetensors",
                &cfg,
                &round_weights(&w, dtype),
                StoreDtype::F32,
            );
            assert_same_trace(&trace(&p), &trace(&rounded), 1e-6);
        }
    }
}

#[test]
fn saved_then_reloaded_weights_are_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("full");
    let w = common::tiny_weights(&cfg, 2);
    let p = common::write_single(dir.path(), "m.safetensors", &cfg, &w, StoreDtype::F32);
    let back = open(&p).unwrap();
    assert_eq!(back.config, cfg);
    assert_eq!(back.weights.parameter_count(), w.parameter_count());
    let a = w.layers[1]
        .mlp_res
        .as_ref()
        .unwrap()
        .query
        .to_vec1::<f32>()
        .unwrap();
    let b = back.weights.layers[1]
        .mlp_res
        .as_ref()
        .unwrap()
        .query
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

/// Raw safetensors bytes from a header JSON and a data section.
fn raw(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn expect_error(path: &Path, needles: &[&str]) -> Error {
    let err = match open(path) {
        Ok(_) => panic!("{} opened, but should not", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message `{msg}` should mention `{n}`");
    }
    err
}

fn good_checkpoint(dir: &Path) -> PathBuf {
    let cfg = common::tiny_config("llama");
    common::write_single(
        dir,
        "good.safetensors",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        StoreDtype::F32,
    )
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(good_checkpoint(dir.path())).unwrap();
    let p = write(dir.path(), "cut.safetensors", &bytes[..bytes.len() - 100]);
    let e = expect_error(&p, &["cut.safetensors", "truncated"]);
    assert!(matches!(e, Error::Safetensors { .. }));
    let p = write(dir.path(), "tiny.safetensors", &bytes[..5]);
    expect_error(&p, &["tiny.safetensors", "shorter than the 8-byte header"]);
}

#[test]
fn header_length_past_the_end_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 5000u64.to_le_bytes().to_vec();
    bytes.extend(b"{}");
    let p = write(dir.path(), "long.safetensors", &bytes);
    expect_error(&p, &["long.safetensors", "past the end"]);
}

#[test]
fn header_that_is_not_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 10u64.to_le_bytes().to_vec();
    bytes.extend(b"not json!!");
    let p = write(dir.path(), "garbage.safetensors", &bytes);
    expect_error(&p, &["garbage.safetensors", "not valid safetensors JSON"]);
}

#[test]
fn offsets_out_of_range_or_overlapping_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_of_range = raw(
        &json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}),
        &[0u8; 12],
    );
    let p = write(dir.path(), "range.safetensors", &out_of_range);
    expect_error(&p, &["range.safetensors"]);
    let overlap = raw(
        &json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}),
        &[0u8; 12],
    );
    let p = write(dir.path(), "overlap.safetensors", &overlap);
    expect_error(&p, &["overlap.safetensors", "overlap"]);
}

#[test]
fn unknown_dtype_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = raw(
        &json!({"a": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}),
        &[0u8; 8],
    );
    let p = write(dir.path(), "dtype.safetensors", &bytes);
    expect_error(&p, &["dtype.safetensors", "dtype"]);
}

/// A folder holding a good model whose tensors the test edits before writing.
fn folder_with(
    dir: &Path,
    kind: &str,
    edit: impl FnOnce(&mut Vec<(String, candle_core::Tensor)>),
    config_edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let cfg = common::tiny_config(kind);
    let w = common::tiny_weights(&cfg, 3);
    let mut tensors = depthlens::model::save::named_tensors(&cfg, &w).unwrap();
    edit(&mut tensors);
    let mut config = cfg.to_hf_json();
    config_edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    depthlens::model::save::write_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "llama",
        |t| t.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight"),
        |_| {},
    );
    let e = expect_error(&p, &["model.layers.1.mlp.up_proj.weight", "missing"]);
    assert!(matches!(e, Error::MissingTensor { .. }));
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "llama",
        |t| {
            for (n, x) in t.iter_mut() {
                if n == "model.layers.2.self_attn.k_proj.weight" {
                    *x = x.narrow(0, 0, 6).unwrap();
                }
            }
        },
        |_| {},
    );
    expect_error(
        &p,
        &[
            "model.layers.2.self_attn.k_proj.weight",
            "[6, 24]",
            "expected [12, 24]",
        ],
    );
}

#[test]
fn unknown_architecture_and_missing_config_field_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "llama",
        |_| {},
        |c| c["model_type"] = json!("mamba"),
    );
    let e = expect_error(&p, &["config.json", "mamba", "not supported"]);
    assert!(matches!(e, Error::UnknownArchitecture { .. }));
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "full",
        |_| {},
        |c| {
            c.as_object_mut().unwrap().remove("num_hidden_layers");
        },
    );
    expect_error(&p, &["config.json", "num_hidden_layers", "missing"]);
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "full",
        |_| {},
        |c| c["attnres_mode"] = json!("diagonal"),
    );
    expect_error(&p, &["attnres_mode", "diagonal"]);
}

#[test]
fn an_unused_tensor_is_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "llama",
        |t| {
            let extra = t[0].1.narrow(0, 0, 1).unwrap();
            t.push(("model.layers.0.mystery.weight".into(), extra));
        },
        |_| {},
    );
    expect_error(&p, &["model.layers.0.mystery.weight", "not a parameter"]);
}

#[test]
fn nan_weights_warn_and_still_trace() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "llama",
        |t| {
            for (n, x) in t.iter_mut() {
                if n == "model.layers.1.mlp.down_proj.weight" {
                    let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    v[3] = f32::NAN;
                    v[10] = f32::INFINITY;
                    *x = candle_core::Tensor::from_vec(v, x.dims(), x.device()).unwrap();
                }
            }
        },
        |_| {},
    );
    let ckpt = open(&p).unwrap();
    assert!(ckpt
        .warnings
        .iter()
        .any(|w| w.contains("model.layers.1.mlp.down_proj.weight") && w.contains("2 NaN/Inf")));
    let t = reference::trace(
        &ckpt,
        &Input::Ids(vec![1, 2, 3]),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    assert!(t.warnings.iter().any(|w| w.contains("NaN")));
    assert_eq!(t.topk.len(), 3, "the trace still comes back");
}

#[test]
fn public_reproduction_names_map_onto_ours() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("full");
    let w = common::tiny_weights(&cfg, 12);
    let ours = common::write_single(dir.path(), "ours.safetensors", &cfg, &w, StoreDtype::F32);
    // nn.Linear(d, 1) stores the query as [1, d]; the key norm has its own module name.
    let renamed_tensors = {
        let mut t = depthlens::model::save::named_tensors(&cfg, &w).unwrap();
        for (n, x) in t.iter_mut() {
            if let Some(p) = n.strip_suffix("_res.query") {
                *n = format!("{p}_res_proj.weight");
                *x = x.unsqueeze(0).unwrap();
            } else if let Some(p) = n.strip_suffix("_res.key_norm.weight") {
                *n = format!("{p}_res_norm.weight");
            }
        }
        t
    };
    let d = dir.path().join("renamed");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    depthlens::model::save::write_safetensors(
        &d.join("model.safetensors"),
        &renamed_tensors,
        StoreDtype::F32,
        None,
    )
    .unwrap();
    assert!(renamed_tensors
        .iter()
        .any(|(n, _)| n == "model.layers.0.attn_res_proj.weight"));
    assert_same_trace(&trace(&d), &trace(&ours), 0.0);
}

#[test]
fn attnres_variants_with_other_semantics_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "full",
        |t| {
            let d = t[0].1.dim(1).unwrap();
            t.push((
                "model.layers.1.mlp_res.gate".into(),
                candle_core::Tensor::zeros(d, candle_core::DType::F32, &candle_core::Device::Cpu)
                    .unwrap(),
            ));
        },
        |_| {},
    );
    expect_error(&p, &["model.layers.1.mlp_res.gate", "sigmoid gate"]);
    let dir = tempfile::tempdir().unwrap();
    let p = folder_with(
        dir.path(),
        "full",
        |_| {},
        |c| c["attnres_recency_bias"] = json!(true),
    );
    expect_error(&p, &["attnres_recency_bias", "recency"]);
}

#[test]
fn shard_index_naming_a_missing_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config("llama");
    let p = common::write_sharded(dir.path(), &cfg, &common::tiny_weights(&cfg, 1), 2);
    let index_path = p.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.extra.weight"] = json!("model-00001-of-00002.safetensors");
    std::fs::write(&index_path, index.to_string()).unwrap();
    expect_error(
        &p,
        &["model-00001-of-00002.safetensors", "model.extra.weight"],
    );
}

#[test]
fn a_folder_without_weights_and_a_gguf_path_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    expect_error(dir.path(), &["no model.safetensors"]);
    let e = open(&dir.path().join("nope")).err().unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn transformers_5_config_with_rope_parameters_and_dtype_is_read() {
    let v = json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 24, "intermediate_size": 37,
        "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
        "max_position_embeddings": 40, "rms_norm_eps": 1e-5, "dtype": "bfloat16",
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
    });
    let cfg = depthlens::model::ModelConfig::from_json(&v, "config.json").unwrap();
    assert_eq!(cfg.head_dim, 4, "derived from hidden_size / heads");
    assert_eq!(cfg.declared_dtype.as_deref(), Some("bfloat16"));
    let rope = cfg.rope.unwrap();
    assert_eq!(rope.theta, 500000.0);
    assert!(
        matches!(rope.scaling, depthlens::model::RopeScaling::Llama3 { factor, .. } if factor == 8.0)
    );
    let mut bad = v.clone();
    bad["rope_parameters"]["rope_type"] = json!("yarn");
    let e = depthlens::model::ModelConfig::from_json(&bad, "config.json").unwrap_err();
    assert!(e.to_string().contains("yarn"), "{e}");
}

#[test]
fn a_folder_tokenizer_json_tokenises_prompts_with_byte_spans() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(50) + "über naïve café ";
    std::fs::write(&corpus, &text).unwrap();
    let tokenizer = depthlens::train::bpe::train_bpe(&corpus, 280).unwrap();
    let cfg = common::tiny_config("llama");
    let folder = common::write_folder(&dir.path().join("m"), &cfg, &common::tiny_weights(&cfg, 2));
    tokenizer
        .save(folder.join("tokenizer.json"), false)
        .unwrap();
    let ckpt = open(&folder).unwrap();
    assert!(matches!(
        ckpt.tokenizer.kind,
        depthlens::model::TokenizerKind::HuggingFace { .. }
    ));
    let prompt = "the lazy café fox";
    let t = reference::trace(
        &ckpt,
        &Input::Text(prompt.into()),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    assert!(
        t.tokens.len() < prompt.len(),
        "BPE merges bytes into words: {:?}",
        t.tokens
    );
    let mut covered = String::new();
    for tok in &t.tokens {
        assert_eq!(&prompt[tok.start..tok.end], tok.text, "span of {tok:?}");
        covered.push_str(&tok.text);
    }
    assert_eq!(covered, prompt, "spans tile the prompt");
}

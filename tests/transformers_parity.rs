//! Parity with Hugging Face transformers 5.17 (an implementation we did not write). The folders
//! under `tests/fixtures/transformers/` were written by `tools/make_hf_fixtures.py` on a machine
//! with torch: tiny random Llama (GQA, llama3 and linear RoPE scaling, tied and untied), Mistral
//! (sliding window shorter than the prompt), Qwen2 (q/k/v biases) and GPT-2 checkpoints saved by
//! `save_pretrained`, with the logits transformers computed in float64; and AttnRes checkpoints
//! whose expected values come from PyTorch on transformers' Llama attention and MLP modules.

mod common;

use std::path::PathBuf;

use depthlens::model::Checkpoint;
use depthlens::progress::Silent;
use depthlens::reference::{self, Input, TraceOptions};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformers")
        .join(name)
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn check(name: &str) {
    let dir = fixture(name);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids: Vec<u32> = expected["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let ckpt = Checkpoint::open(&dir, &Silent).unwrap_or_else(|e| panic!("{name}: {e}"));
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    let trace = reference::trace(&ckpt, &Input::Ids(ids), opts, &Silent).unwrap();

    let want = floats(&expected["logits"]);
    let got: Vec<f32> = trace.logits.as_ref().unwrap().concat();
    let err = common::normwise_err(&got, &want);
    eprintln!("{name}: max |logit diff| / max |logit| = {err:.2e}");
    assert!(
        err < 1e-5,
        "{name}: logits differ from transformers, max |diff| / max |logit| = {err}"
    );

    let op_indices: Vec<usize> = expected["hidden_rms_ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for (k, &op) in op_indices.iter().enumerate() {
        let want = floats(&expected["hidden_rms"][k]);
        let err = common::max_rel_err(&trace.ops[op].hidden_rms, &want, 1e-6);
        assert!(
            err < 1e-4,
            "{name} {}: hidden rms rel err {err}",
            trace.ops[op].name
        );
    }
    if let Some(alpha) = expected.get("alpha") {
        for (op, want) in trace.ops.iter().zip(alpha.as_array().unwrap()) {
            let want = floats(want);
            let got = op.alpha.flat();
            assert_eq!(got.len(), want.len(), "{name} {}", op.name);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{name} {}: alpha differs by {worst}", op.name);
        }
    }
}

#[test]
fn llama_with_gqa_and_llama3_rope_scaling_matches_transformers() {
    check("llama_gqa_llama3rope");
}

#[test]
fn llama_with_linear_rope_scaling_and_tied_head_matches_transformers() {
    check("llama_linear_rope_tied");
}

#[test]
fn mistral_with_a_sliding_window_shorter_than_the_prompt_matches_transformers() {
    check("mistral_sliding_window");
}

#[test]
fn qwen2_with_qkv_biases_matches_transformers() {
    check("qwen2_bias_tied");
}

#[test]
fn gpt2_matches_transformers() {
    check("gpt2");
}

#[test]
fn full_attnres_matches_pytorch_on_transformers_llama_blocks() {
    check("attnres_full");
}

#[test]
fn block_attnres_matches_pytorch_on_transformers_llama_blocks() {
    check("attnres_block3");
}

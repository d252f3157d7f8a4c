//! GGUF checkpoints. Tiny GGUF files written here (candle's GGUF writer, with llama.cpp's Q/K row
//! permutation applied by an independent implementation) give the same Trace as the safetensors
//! original: exactly for f32, exactly as the rounded weights for f16 and Q8_0. Broken files are
//! typed errors. And a real model, SmolLM2-135M-Instruct (Q4_1, fetched by
//! `scripts/fetch-smollm2.sh`), answers the golden prompt, tokenises like its Hugging Face
//! tokenizer and shows the depth dilution of a PreNorm model. Those tests fail, never skip, when
//! the file is missing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use depthlens::model::save::{named_tensors, StoreDtype};
use depthlens::model::{Checkpoint, CheckpointLayout, Error, ModelConfig, TokenizerKind, Weights};
use depthlens::progress::Silent;
use depthlens::reference::{self, Input, StopReason, TraceOptions};
use depthlens::trace::Trace;
use gguf_file::Value as V;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Writing tiny GGUF files the way llama.cpp's convert_hf_to_gguf does.

/// A Llama or Qwen2 config whose matrix widths are multiples of 32, the Q8_0 block size.
fn quantisable_config(arch: &str) -> ModelConfig {
    let v = json!({
        "model_type": arch, "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "head_dim": 8, "max_position_embeddings": 40, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": arch == "qwen2"
    });
    ModelConfig::from_json(&v, "test config").unwrap()
}

/// The GGUF name of a Hugging Face tensor name (llama.cpp's tensor map, written out here).
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (module, param) = rest.rsplit_once('.').unwrap();
    let g = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{g}.{param}")
}

/// convert_hf_to_gguf's `permute`: within each head, row `s * hd/2 + j` (half `s`, index `j`)
/// moves to row `2 j + s`, the interleaved order llama.cpp's RoPE expects.
fn permute_like_llama_cpp(w: &Tensor, n_head: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; v.len()];
    for h in 0..n_head {
        for s in 0..2 {
            for j in 0..half {
                let src = h * hd + s * half + j;
                let dst = h * hd + 2 * j + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    Tensor::from_vec(out, (rows, cols), &Device::Cpu).unwrap()
}

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to U+0100 on.
fn bytes_to_unicode() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in printable.iter().zip(&chars) {
        table[*b as usize] = char::from_u32(*c).unwrap();
    }
    table
}

const IM_START: u32 = 256;
const IM_END: u32 = 257;

/// A 300-token byte-level BPE vocabulary: 256 bytes, `<|im_start|>` and `<|im_end|>` as control
/// tokens, and 42 merges (`ae` .. `ue`, `Ġa` .. `Ġu`).
fn tokenizer_metadata(add_bos: bool) -> Vec<(String, V)> {
    let table = bytes_to_unicode();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let mut merges = Vec::new();
    for c in 'a'..='u' {
        merges.push(format!("{c} e"));
        tokens.push(format!("{c}e"));
    }
    for c in 'a'..='u' {
        merges.push(format!("Ġ {c}"));
        tokens.push(format!("Ġ{c}"));
    }
    assert_eq!(tokens.len(), 300);
    let types: Vec<V> = (0..tokens.len())
        .map(|i| V::I32(if i == 256 || i == 257 { 3 } else { 1 }))
        .collect();
    let strings = |v: Vec<String>| V::Array(v.into_iter().map(V::String).collect());
    vec![
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.merges".into(), strings(merges)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(IM_START)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(IM_END)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(add_bos)),
    ]
}

/// Metadata and tensors of a GGUF file holding `w`: matrices stored as `dtype`, norms and biases
/// as f32 (as llama.cpp does), Q/K rows permuted for `llama` when `permute_qk`.
struct GgufParts {
    metadata: Vec<(String, V)>,
    tensors: Vec<(String, QTensor)>,
}

fn gguf_parts(
    arch: &str,
    cfg: &ModelConfig,
    w: &Weights,
    dtype: GgmlDType,
    permute_qk: bool,
) -> GgufParts {
    let k = |key: &str| format!("{arch}.{key}");
    let mut metadata = vec![
        ("general.architecture".into(), V::String(arch.into())),
        ("general.alignment".into(), V::U32(32)),
        (k("context_length"), V::U32(cfg.max_positions as u32)),
        (k("embedding_length"), V::U32(cfg.hidden_size as u32)),
        (k("block_count"), V::U32(cfg.num_layers as u32)),
        (
            k("feed_forward_length"),
            V::U32(cfg.intermediate_size as u32),
        ),
        (k("attention.head_count"), V::U32(cfg.num_heads as u32)),
        (
            k("attention.head_count_kv"),
            V::U32(cfg.num_kv_heads as u32),
        ),
        (k("attention.key_length"), V::U32(cfg.head_dim as u32)),
        (k("rope.dimension_count"), V::U32(cfg.head_dim as u32)),
        (k("rope.freq_base"), V::F32(10000.0)),
        (k("attention.layer_norm_rms_epsilon"), V::F32(1e-5)),
    ];
    metadata.extend(tokenizer_metadata(false));
    let mut tensors = Vec::new();
    for (hf, t) in named_tensors(cfg, w).unwrap() {
        let mut t = t;
        if permute_qk && arch == "llama" && t.rank() == 2 {
            if hf.ends_with("q_proj.weight") {
                t = permute_like_llama_cpp(&t, cfg.num_heads);
            } else if hf.ends_with("k_proj.weight") {
                t = permute_like_llama_cpp(&t, cfg.num_kv_heads);
            }
        }
        let stored = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
        tensors.push((gguf_name(&hf), QTensor::quantize(&t, stored).unwrap()));
    }
    GgufParts { metadata, tensors }
}

impl GgufParts {
    fn set(&mut self, key: &str, value: V) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.into(), value));
    }

    fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    /// Write as GGUF v3 (candle writes version 2, whose layout v3 keeps; the field is patched).
    fn write(&self, path: &Path) -> PathBuf {
        let mut buf = std::io::Cursor::new(Vec::new());
        let meta: Vec<(&str, &V)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> =
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut buf, &meta, &tensors).unwrap();
        let mut bytes = buf.into_inner();
        bytes[4..8].copy_from_slice(&3u32.to_le_bytes());
        std::fs::write(path, bytes).unwrap();
        path.to_path_buf()
    }
}

fn open(path: &Path) -> Result<Checkpoint, Error> {
    Checkpoint::open(path, &Silent)
}

const IDS: [u32; 9] = [3, 1, 4, 1, 5, 9, 2, 6, 299];

fn trace(path: &Path) -> Trace {
    let ckpt = open(path).unwrap_or_else(|e| panic!("{e}"));
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    reference::trace(&ckpt, &Input::Ids(IDS.to_vec()), opts, &Silent).unwrap()
}

fn logits(t: &Trace) -> Vec<f32> {
    t.logits.as_ref().unwrap().concat()
}

fn assert_identical(a: &Trace, b: &Trace, what: &str) {
    assert_eq!(logits(a), logits(b), "{what}: logits differ");
    for (x, y) in a.ops.iter().zip(&b.ops) {
        assert_eq!(x.hidden_rms, y.hidden_rms, "{what}: {} hidden rms", x.name);
        assert_eq!(x.shares, y.shares, "{what}: {} shares", x.name);
    }
}

/// The weights as the GGUF file holds them: matrices through `dtype` and back, 1-D tensors as is.
fn stored_as(w: &Weights, dtype: GgmlDType) -> Weights {
    w.map_tensors(&mut |_, t| {
        if t.rank() == 2 {
            QTensor::quantize(t, dtype)?.dequantize(&Device::Cpu)
        } else {
            Ok(t.clone())
        }
    })
    .unwrap()
}

fn safetensors_trace(dir: &Path, name: &str, cfg: &ModelConfig, w: &Weights) -> Trace {
    trace(&common::write_single(dir, name, cfg, w, StoreDtype::F32))
}

// ---------------------------------------------------------------------------------------------
// Tiny GGUF files: the same model as safetensors.

#[test]
fn llama_gguf_with_permuted_qk_rows_gives_exactly_the_safetensors_trace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 7);
    let original = safetensors_trace(dir.path(), "m.safetensors", &cfg, &w);
    let p = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true).write(&dir.path().join("m.gguf"));
    let ckpt = open(&p).unwrap();
    assert_eq!(ckpt.config, cfg, "config rebuilt from GGUF metadata");
    assert!(matches!(ckpt.layout, CheckpointLayout::Gguf { .. }));
    assert_identical(&trace(&p), &original, "f32 GGUF");
}

#[test]
fn leaving_the_qk_permutation_in_place_would_compute_a_different_model() {
    // The control for the test above: the same file without llama.cpp's permutation is read
    // as a different model, so that test would catch a reader that forgot to undo it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 7);
    let original = safetensors_trace(dir.path(), "m.safetensors", &cfg, &w);
    let p = gguf_parts("llama", &cfg, &w, GgmlDType::F32, false).write(&dir.path().join("m.gguf"));
    let err = common::normwise_err(&logits(&trace(&p)), &logits(&original));
    assert!(
        err > 1e-3,
        "unpermuted Q/K gave the same logits (err {err})"
    );
}

#[test]
fn qwen2_gguf_keeps_qk_rows_reads_biases_and_ties_the_head_when_output_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("qwen2");
    assert!(cfg.qkv_bias && cfg.tie_word_embeddings);
    let w = common::tiny_weights(&cfg, 8);
    let original = safetensors_trace(dir.path(), "m.safetensors", &cfg, &w);
    let parts = gguf_parts("qwen2", &cfg, &w, GgmlDType::F32, false);
    assert!(parts.tensors.iter().all(|(n, _)| n != "output.weight"));
    assert!(parts.tensors.iter().any(|(n, _)| n == "blk.1.attn_k.bias"));
    let p = parts.write(&dir.path().join("m.gguf"));
    assert_eq!(open(&p).unwrap().config, cfg);
    assert_identical(&trace(&p), &original, "qwen2 GGUF");
}

#[test]
fn f16_and_q8_0_gguf_give_the_trace_of_their_rounded_weights_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 9);
    let exact = safetensors_trace(dir.path(), "exact.safetensors", &cfg, &w);
    for (dtype, name, max_err) in [
        (GgmlDType::F16, "f16", 1e-2),
        (GgmlDType::Q8_0, "q8_0", 5e-2),
    ] {
        let p = gguf_parts("llama", &cfg, &w, dtype, true)
            .write(&dir.path().join(format!("{name}.gguf")));
        let rounded = safetensors_trace(
            dir.path(),
            &format!("{name}.safetensors"),
            &cfg,
            &stored_as(&w, dtype),
        );
        let got = trace(&p);
        assert_identical(&got, &rounded, name);
        let err = common::normwise_err(&logits(&got), &logits(&exact));
        assert!(
            err > 0.0 && err < max_err,
            "{name}: error against the unrounded model {err}"
        );

        let ckpt = open(&p).unwrap();
        if dtype == GgmlDType::Q8_0 {
            let note = ckpt.quantization.clone().expect("a quantised file says so");
            assert!(
                note.contains("q8_0") && note.contains("dequantised to f32"),
                "{note}"
            );
            assert_eq!(
                ckpt.warnings.first(),
                Some(&note),
                "the note is also the first warning"
            );
            assert!(
                got.warnings.iter().any(|w| w.contains("dequantised")),
                "traces carry it"
            );
        } else {
            // f16 widens to f32 exactly, as safetensors f16 does: nothing to announce.
            assert_eq!(ckpt.quantization, None);
            assert_eq!(ckpt.dtypes.get("f16"), Some(&(7 * cfg.num_layers + 2)));
        }
    }
}

#[test]
fn matrices_of_every_layer_are_counted_by_storage_type() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 9);
    let p = gguf_parts("llama", &cfg, &w, GgmlDType::Q8_0, true).write(&dir.path().join("m.gguf"));
    let ckpt = open(&p).unwrap();
    // Per layer 7 matrices and 2 norms; plus embedding and head (matrices) and the final norm.
    let l = cfg.num_layers;
    assert_eq!(ckpt.dtypes.get("q8_0"), Some(&(7 * l + 2)));
    assert_eq!(ckpt.dtypes.get("f32"), Some(&(2 * l + 1)));
}

// ---------------------------------------------------------------------------------------------
// The tokenizer rebuilt from metadata.

#[test]
fn gguf_tokenizer_keeps_control_tokens_whole_applies_merges_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 3);
    let p = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true).write(&dir.path().join("m.gguf"));
    let ckpt = open(&p).unwrap();
    assert!(
        matches!(&ckpt.tokenizer.kind, TokenizerKind::Gguf { model, pre, .. } if model == "gpt2" && pre == "smollm")
    );
    assert_eq!(ckpt.eos_token_ids, vec![IM_END]);
    let text = "<|im_start|>be a ue<|im_end|>\n";
    let toks = ckpt.tokenizer.encode(text).unwrap();
    let ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
    // Ids: bytes 0..=255 in byte order, the two control tokens, `ae`..`ue` (258..=278), then
    // `Ġa`..`Ġu` (279..=299); merges rank in that order.
    let merged = |first: u8| 258 + u32::from(first - b'a');
    let spaced = |letter: u8| 279 + u32::from(letter - b'a');
    // `be` merges; ` a` becomes `Ġa`; in ` ue` the `u e` merge outranks `Ġ u`, giving `Ġ` + `ue`;
    // no BOS is added.
    let expected = [
        IM_START,
        merged(b'b'),
        spaced(b'a'),
        u32::from(b' '),
        merged(b'u'),
        IM_END,
        u32::from(b'\n'),
    ];
    assert_eq!(ids, expected, "{toks:?}");
    assert_eq!(ckpt.tokenizer.decode(&ids), text);
    assert_eq!(
        toks.iter().map(|t| t.text.as_str()).collect::<String>(),
        text,
        "spans tile the prompt"
    );
}

#[test]
fn add_bos_token_prepends_bos_and_its_absence_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 3);
    let mut parts = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true);
    parts.set("tokenizer.ggml.add_bos_token", V::Bool(true));
    let with_bos = open(&parts.write(&dir.path().join("bos.gguf"))).unwrap();
    assert_eq!(
        with_bos
            .tokenizer
            .encode("be")
            .unwrap()
            .first()
            .map(|t| t.id),
        Some(IM_START)
    );
    parts.remove("tokenizer.ggml.add_bos_token");
    let without = open(&parts.write(&dir.path().join("nobos.gguf"))).unwrap();
    assert_eq!(without.tokenizer.encode("be").unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Broken files are typed errors that say what is wrong.

fn valid_gguf(dir: &Path) -> PathBuf {
    let cfg = quantisable_config("llama");
    gguf_parts(
        "llama",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        GgmlDType::Q8_0,
        true,
    )
    .write(&dir.join("m.gguf"))
}

fn gguf_error(path: &Path, needles: &[&str]) {
    let e = open(path).err().expect("opening should fail");
    let msg = e.to_string();
    assert!(matches!(e, Error::Gguf { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

#[test]
fn truncated_gguf_is_a_clear_error_naming_the_tensor_that_runs_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid_gguf(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    gguf_error(&p, &["truncated", "tensor `", "runs past the end"]);
    std::fs::write(&p, &bytes[..200]).unwrap();
    gguf_error(&p, &["header", "truncated"]);
    std::fs::write(&p, &bytes[..5]).unwrap();
    gguf_error(&p, &["truncated"]);
}

#[test]
fn wrong_magic_or_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid_gguf(dir.path());
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    gguf_error(&p, &["version 7"]);
    bytes[..4].copy_from_slice(b"GGML");
    std::fs::write(&p, &bytes).unwrap();
    gguf_error(&p, &["magic"]);
}

#[test]
fn an_unsupported_architecture_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let mut parts = gguf_parts(
        "llama",
        &cfg,
        &common::tiny_weights(&cfg, 1),
        GgmlDType::F32,
        true,
    );
    parts.set("general.architecture", V::String("mamba".into()));
    let p = parts.write(&dir.path().join("m.gguf"));
    let e = open(&p).err().unwrap();
    assert!(
        matches!(&e, Error::GgufArchitecture { architecture, .. } if architecture == "mamba"),
        "{e}"
    );
    assert!(
        e.to_string().contains("`mamba`") && e.to_string().contains("llama, qwen2"),
        "{e}"
    );
}

#[test]
fn missing_metadata_and_unknown_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quantisable_config("llama");
    let w = common::tiny_weights(&cfg, 1);
    let mut parts = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true);
    parts.remove("llama.block_count");
    let e = open(&parts.write(&dir.path().join("a.gguf")))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "llama.block_count"),
        "{e}"
    );

    let mut parts = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true);
    let extra = QTensor::quantize(
        &Tensor::zeros((8, 64), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    parts.tensors.push(("blk.0.attn_qkv.weight".into(), extra));
    let e = open(&parts.write(&dir.path().join("b.gguf")))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Unsupported { name, .. } if name == "blk.0.attn_qkv.weight"),
        "{e}"
    );

    let mut parts = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true);
    parts.set("llama.feed_forward_length", V::U32(128));
    let e = open(&parts.write(&dir.path().join("d.gguf")))
        .err()
        .unwrap();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("`model.layers.0.mlp.gate_proj.weight`, GGUF `blk.0.ffn_gate.weight`:"),
        "names both spellings: {e}"
    );

    let mut parts = gguf_parts("llama", &cfg, &w, GgmlDType::F32, true);
    parts.tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight");
    let e = open(&parts.write(&dir.path().join("c.gguf")))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Greedy decoding.

#[test]
fn greedy_decoding_stops_at_eos_at_max_tokens_and_when_positions_run_out() {
    let cfg = common::tiny_config("llama");
    let w = common::tiny_weights(&cfg, 5);
    let (ids, stop) = reference::greedy_ids(&cfg, &w, &[1, 2, 3], 4, &[], &mut |_| {}).unwrap();
    assert_eq!((ids.len(), stop), (4, StopReason::MaxTokens));
    // Greedy is deterministic: the first token of the run above, named EOS, ends at once.
    let mut heard = Vec::new();
    let (none, stop) =
        reference::greedy_ids(&cfg, &w, &[1, 2, 3], 4, &[ids[0]], &mut |t| heard.push(t)).unwrap();
    assert_eq!(
        (none.len(), stop, heard),
        (0, StopReason::Eos, vec![ids[0]])
    );
    let long: Vec<u32> = (0..cfg.max_positions as u32 - 2).collect();
    let (two, stop) = reference::greedy_ids(&cfg, &w, &long, 10, &[], &mut |_| {}).unwrap();
    assert_eq!((two.len(), stop), (2, StopReason::ContextFull));
}

#[test]
fn the_cli_inspects_and_generates_from_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid_gguf(dir.path());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_depthlens"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = p.to_str().unwrap();
    let (out, _) = run(&["inspect", path]);
    assert!(
        out.contains("q8_0") && out.contains("dequantised to f32"),
        "{out}"
    );
    assert!(out.contains("rebuilt from GGUF metadata"), "{out}");
    let (_, err) = run(&["generate", path, "--prompt", "be a", "--max-tokens", "3"]);
    assert!(err.contains("dequantised to f32"), "{err}");
    let (json, _) = run(&[
        "generate",
        path,
        "--ids",
        "1,2,3",
        "--max-tokens",
        "3",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["ids"].as_array().unwrap().len() <= 3);
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct, a real pretrained Llama-family model (Q4_1 GGUF).

const CHAT_PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn smollm2() -> &'static Checkpoint {
    static CKPT: OnceLock<Checkpoint> = OnceLock::new();
    CKPT.get_or_init(|| {
        let path = match std::env::var_os("DEPTHLENS_SMOLLM2_GGUF") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        };
        assert!(
            path.is_file(),
            "SmolLM2 GGUF not found at {}: run `bash scripts/fetch-smollm2.sh` first (or set \
             DEPTHLENS_SMOLLM2_GGUF to the .gguf file)",
            path.display()
        );
        open(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn smollm2_answers_the_golden_prompt_with_paris() {
    let ckpt = smollm2();
    let g = reference::generate(ckpt, &Input::Text(CHAT_PROMPT.into()), 12, &mut |_| {}).unwrap();
    eprintln!("SmolLM2: {:?} ({:?})", g.text, g.stop);
    assert!(
        g.text.starts_with("The capital of France is Paris."),
        "greedy continuation: {:?}",
        g.text
    );
    // And then it ends its turn with <|im_end|>.
    assert_eq!(g.stop, StopReason::Eos, "{:?}", g.text);
}

#[test]
fn smollm2_tokenizer_rebuilt_from_gguf_matches_its_hugging_face_tokenizer() {
    let ckpt = smollm2();
    assert!(matches!(&ckpt.tokenizer.kind, TokenizerKind::Gguf { pre, .. } if pre == "smollm"));
    let toks = ckpt.tokenizer.encode(CHAT_PROMPT).unwrap();
    let ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
    // transformers' AutoTokenizer("HuggingFaceTB/SmolLM2-135M-Instruct") on the same text: the
    // special tokens are single ids (1, 2), no BOS is added, `assistant` is `ass` + `istant`.
    assert_eq!(
        ids,
        [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
    );
    assert_eq!(ckpt.tokenizer.decode(&ids), CHAT_PROMPT);
    assert_eq!(ckpt.eos_token_ids, vec![2], "<|im_end|> ends a turn");
    // The `smollm` pre-tokenizer puts every digit on its own.
    let digits = ckpt.tokenizer.encode("in 2024").unwrap();
    assert_eq!(
        digits.iter().map(|t| t.piece.as_str()).collect::<Vec<_>>(),
        ["in", "Ġ", "2", "0", "2", "4"]
    );
}

#[test]
fn smollm2_opens_as_a_dequantised_tied_llama_of_the_published_shape() {
    let ckpt = smollm2();
    let c = &ckpt.config;
    assert_eq!(
        (
            c.model_type.as_str(),
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size,
            c.vocab_size
        ),
        ("llama", 30, 576, 9, 3, 1536, 49152)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope.unwrap().theta, 100000.0);
    assert_eq!(ckpt.weights.parameter_count(), 134_515_008);
    let note = ckpt.quantization.as_deref().unwrap();
    assert!(
        note.contains("q4_1 x210") && note.contains("dequantised to f32"),
        "{note}"
    );
}

fn median(v: &[f32]) -> f32 {
    let mut v = v.to_vec();
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

#[test]
fn smollm2_trace_shows_depth_dilution_hidden_rms_grows_and_the_embedding_share_vanishes() {
    let ckpt = smollm2();
    let t = reference::trace(
        ckpt,
        &Input::Text(CHAT_PROMPT.into()),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    let l = ckpt.config.num_layers;
    let op = |name: &str| t.ops.iter().find(|o| o.name == name).unwrap();
    // Medians over tokens: the first token carries the model's massive activations.
    let rms = |name: &str| median(&op(name).hidden_rms);
    let emb_share = |name: &str| median(&op(name).shares.iter().map(|s| s[0]).collect::<Vec<_>>());
    let early = rms("L1.attn");
    let late = rms(&format!("L{}.attn", l - 2));
    eprintln!(
        "SmolLM2 hidden RMS: L1.attn {early:.3}, L{}.attn {late:.3}, final {:.3}",
        l - 2,
        rms("final")
    );
    assert!(
        late > 4.0 * early,
        "hidden RMS does not grow with depth: {early} -> {late}"
    );
    // Growth is the trend over the stack, not one jump: each third exceeds the one before.
    let third = |k: usize| {
        let ops: Vec<f32> = (k * l / 3..(k + 1) * l / 3)
            .map(|i| rms(&format!("L{i}.attn")))
            .collect();
        ops.iter().sum::<f32>() / ops.len() as f32
    };
    assert!(
        third(0) < third(1) && third(1) < third(2),
        "{} {} {}",
        third(0),
        third(1),
        third(2)
    );
    let first = emb_share("L0.mlp");
    let deep = emb_share(&format!("L{}.mlp", l - 1)).abs();
    eprintln!(
        "SmolLM2 embedding share: L0.mlp {first:.3}, L{}.mlp {deep:.5}",
        l - 1
    );
    assert!(
        first > 0.2,
        "the embedding should still be a large part of L0.mlp's input: {first}"
    );
    assert!(
        deep < 0.02 * first,
        "the embedding's share does not shrink: {first} -> {deep}"
    );
}

//! The trainer: it learns, it saves what it trained, it resumes exactly where it stopped, and the
//! shipped demo checkpoints are the ones the model card describes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use depthlens::model::Checkpoint;
use depthlens::progress::Silent;
use depthlens::reference::{self, Input, TraceOptions};
use depthlens::train::{self, bpe, Arch, Data, Outputs, TrainObserver, TrainSpec};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Stops the run (as Ctrl-C does) once it reaches `stop_at`.
struct StopAt<'a> {
    stop_at: usize,
    flag: &'a AtomicBool,
}

impl TrainObserver for StopAt<'_> {
    fn step(&self, step: usize, _total: usize, _loss: f64, _tps: f64) {
        if step >= self.stop_at {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
    fn note(&self, _message: &str) {}
}

/// Train byte-level `data` with `spec`, stopping as Ctrl-C would once `stop_at` steps are done.
fn run(
    spec: &TrainSpec,
    data: &Data,
    out: &Outputs,
    resume: bool,
    stop_at: usize,
) -> train::Summary {
    let flag = AtomicBool::new(false);
    let observer = StopAt {
        stop_at,
        flag: &flag,
    };
    train::train(spec, data, 256, out, resume, &flag, &observer).unwrap()
}

fn tiny_spec(arch: Arch, steps: usize) -> TrainSpec {
    TrainSpec {
        arch,
        layers: 2,
        dim: 32,
        heads: 2,
        kv_heads: 2,
        ffn: 64,
        seq_len: 32,
        batch: 4,
        steps,
        lr: 1e-2,
        min_lr_ratio: 0.1,
        warmup: 3,
        clip: 1.0,
        seed: 7,
        eval_every: 5,
    }
}

/// The held-out Tempest text, byte-tokenised (vocabulary 256): no corpus download needed.
fn byte_data() -> Data {
    let text = std::fs::read(repo("assets/data/tempest.txt")).unwrap();
    let ids: Vec<u32> = text.iter().map(|&b| u32::from(b)).collect();
    let cut = ids.len() * 9 / 10;
    Data {
        train: ids[..cut].to_vec(),
        val: ids[cut..].to_vec(),
    }
}

fn outputs(dir: &Path, name: &str) -> Outputs {
    Outputs {
        checkpoint: dir.join(name),
        // Byte-level ids: the checkpoint ships no tokenizer and opens with the byte fallback.
        tokenizer_json: None,
    }
}

#[test]
fn training_a_tiny_model_for_a_few_steps_lowers_the_loss() {
    for arch in [Arch::Baseline, Arch::Block { block_size: 3 }] {
        let dir = tempfile::tempdir().unwrap();
        let data = byte_data();
        let spec = tiny_spec(arch, 30);
        let summary = run(
            &spec,
            &data,
            &outputs(dir.path(), "m.safetensors"),
            false,
            usize::MAX,
        );
        let first = summary.log.first().unwrap();
        let last = summary.log.last().unwrap();
        assert_eq!(first.step, 1);
        assert_eq!(last.step, 30);
        let (v0, v1) = (first.val_loss.unwrap(), last.val_loss.unwrap());
        assert!(
            v1 < v0 - 0.5,
            "{arch:?}: validation loss went from {v0} to {v1}"
        );
        assert!(
            last.train_loss < first.train_loss - 0.5,
            "{arch:?}: train loss {} -> {}",
            first.train_loss,
            last.train_loss
        );
        assert_eq!(
            last.group_grad_norms.len(),
            2 + 2,
            "embedding, two layers, head"
        );
        // The log travels with the checkpoint, as CSV beside it and in its metadata.
        let csv = std::fs::read_to_string(dir.path().join("m.train.csv")).unwrap();
        assert!(csv.starts_with("step,train_loss,val_loss,lr,grad_norm,grad_norm_embedding,grad_norm_L0,grad_norm_L1,grad_norm_head"));
        assert_eq!(csv.lines().count(), 1 + summary.log.len());
    }
}

#[test]
fn attnres_training_starts_from_zero_queries_and_learns_non_uniform_depth_weights() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_spec(Arch::Full, 30);
    let cfg = spec.model_config(256).unwrap();
    let init = train::init_weights(&cfg, 1).unwrap();
    let zero = init.layers[1]
        .mlp_res
        .as_ref()
        .unwrap()
        .query
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(zero, 0.0, "the report initialises pseudo-queries to zero");
    run(
        &spec,
        &byte_data(),
        &outputs(dir.path(), "m.safetensors"),
        false,
        usize::MAX,
    );
    let ckpt = Checkpoint::open(&dir.path().join("m.safetensors"), &Silent).unwrap();
    let trace = reference::trace(
        &ckpt,
        &Input::Ids(vec![72, 101, 108, 108, 111]),
        TraceOptions::default(),
        &Silent,
    )
    .unwrap();
    let last = trace.ops.last().unwrap();
    let spread = last.alpha[4].iter().fold(0f32, |m, a| m.max(*a))
        - last.alpha[4].iter().fold(1f32, |m, a| m.min(*a));
    assert!(
        spread > 1e-3,
        "depth weights stayed uniform: {:?}",
        &last.alpha[4]
    );
}

#[test]
fn an_interrupted_run_resumes_exactly_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = byte_data();
    let spec = tiny_spec(Arch::Block { block_size: 2 }, 8);
    let straight = outputs(dir.path(), "straight.safetensors");
    run(&spec, &data, &straight, false, usize::MAX);

    let split = outputs(dir.path(), "split.safetensors");
    let first = run(&spec, &data, &split, false, 3);
    assert!(first.interrupted);
    assert_eq!(first.steps_done, 3);
    assert!(
        split.checkpoint.is_file(),
        "an interrupted run still saves its checkpoint"
    );
    let rest = run(&spec, &data, &split, true, usize::MAX);
    assert_eq!(rest.steps_done, 8);

    let a = std::fs::read(&straight.checkpoint).unwrap();
    let b = std::fs::read(&split.checkpoint).unwrap();
    let weights = |bytes: &[u8]| {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert!(
        weights(&a) == weights(&b),
        "resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn a_trained_checkpoint_reloads_to_the_identical_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = outputs(dir.path(), "m.safetensors");
    run(
        &tiny_spec(Arch::Block { block_size: 3 }, 4),
        &byte_data(),
        &out,
        false,
        usize::MAX,
    );
    let copy = dir.path().join("copy.safetensors");
    std::fs::copy(&out.checkpoint, &copy).unwrap();
    let opts = TraceOptions {
        grads: true,
        logits: true,
        ..Default::default()
    };
    let input = Input::Ids(vec![10, 20, 30, 40, 50, 60]);
    let a = reference::trace(
        &Checkpoint::open(&out.checkpoint, &Silent).unwrap(),
        &input,
        opts,
        &Silent,
    )
    .unwrap();
    let b = reference::trace(
        &Checkpoint::open(&copy, &Silent).unwrap(),
        &input,
        opts,
        &Silent,
    )
    .unwrap();
    assert_eq!(a.ops, b.ops);
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.grads, b.grads);
}

/// The model card's validation losses, as `| arch | ... | val loss |` rows.
fn card_val_loss(arch: &str) -> f64 {
    let card = std::fs::read_to_string(repo("assets/README.md"))
        .expect("assets/README.md (the model card)");
    let row = card
        .lines()
        .find(|l| l.starts_with(&format!("| `{arch}`")))
        .unwrap_or_else(|| panic!("model card has no row for `{arch}`"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    cells[cells.len() - 2]
        .parse()
        .unwrap_or_else(|_| panic!("last column of `{row}` is not the val loss"))
}

#[test]
fn shipped_demo_checkpoints_have_the_validation_loss_of_the_model_card() {
    let text = std::fs::read_to_string(repo("assets/data/tempest.txt")).unwrap();
    for arch in ["baseline", "full", "block"] {
        let ckpt = Checkpoint::open(&repo(&format!("assets/demo/{arch}.safetensors")), &Silent)
            .unwrap_or_else(|e| panic!("demo checkpoint {arch}: {e}"));
        let tok = tokenizers::Tokenizer::from_file(repo("assets/demo/tokenizer.json")).unwrap();
        let ids = bpe::encode_corpus(&tok, &text).unwrap();
        let seq = ckpt.config.max_positions;
        let loss = train::eval_loss(&ckpt.config, &ckpt.weights, &ids, seq, usize::MAX).unwrap();
        let card = card_val_loss(arch);
        assert!(
            (loss - card).abs() <= 0.02 * card,
            "{arch}: val loss {loss:.4}, model card says {card}"
        );
    }
}

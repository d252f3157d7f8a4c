//! Identities the reference forward must satisfy on whole models, and a finite-difference check
//! of its gradients.

mod common;

use candle_core::{DType, Tensor};
use depthlens::model::random::{random_weights, RandomInit};
use depthlens::model::{DepthQuery, ModelConfig, TextTokenizer, Weights};
use depthlens::progress::Silent;
use depthlens::reference::{self, forward, next_token_loss, Input, TraceOptions};
use depthlens::trace::Trace;

const IDS: [u32; 9] = [1, 200, 33, 33, 4, 290, 18, 77, 5];

fn trace_of(cfg: &ModelConfig, w: &Weights, grads: bool) -> Trace {
    let tok = TextTokenizer::byte_fallback();
    let opts = TraceOptions {
        grads,
        logits: true,
        ..Default::default()
    };
    reference::trace_tokens(cfg, w, &tok, tok.tokens_from_ids(&IDS), opts, &Silent).unwrap()
}

fn logits(t: &Trace) -> Vec<f32> {
    t.logits.as_ref().unwrap().concat()
}

#[test]
fn zero_pseudo_queries_give_uniform_depth_weights() {
    for kind in ["full", "block:2"] {
        let cfg = common::tiny_config(kind);
        let init = RandomInit {
            query_std: 0.0,
            ..RandomInit::TEST
        };
        let trace = trace_of(&cfg, &random_weights(&cfg, init, 3).unwrap(), false);
        for op in &trace.ops {
            let n = op.sources.len() as f32;
            for row in &op.alpha {
                for a in row {
                    assert!(
                        (a - 1.0 / n).abs() < 1e-6,
                        "{kind} {}: alpha {a}, want 1/{n}",
                        op.name
                    );
                }
            }
        }
    }
}

#[test]
fn decomposition_shares_sum_to_one() {
    for kind in ["llama", "gpt2", "full", "block:3"] {
        let cfg = common::tiny_config(kind);
        let trace = trace_of(&cfg, &common::tiny_weights(&cfg, 11), false);
        for op in &trace.ops {
            for row in &op.shares {
                let s: f32 = row.iter().sum();
                assert!(
                    (s - 1.0).abs() < 1e-4,
                    "{kind} {}: shares sum to {s}",
                    op.name
                );
            }
        }
    }
}

#[test]
fn baseline_depth_weights_are_implicitly_one_and_sources_grow_by_one() {
    let cfg = common::tiny_config("llama");
    let trace = trace_of(&cfg, &common::tiny_weights(&cfg, 1), false);
    assert_eq!(trace.ops.len(), 2 * cfg.num_layers + 1);
    for (l, op) in trace.ops.iter().enumerate() {
        assert_eq!(op.sources.len(), l + 1, "{}", op.name);
        assert!(op.alpha.iter().flatten().all(|&a| a == 1.0));
    }
    assert_eq!(trace.ops[0].sources, ["emb"]);
    assert_eq!(
        trace.ops[3].sources,
        ["emb", "L0.attn", "L0.mlp", "L1.attn"]
    );
    assert_eq!(trace.ops.last().unwrap().name, "final");
}

#[test]
fn block_mode_with_one_sublayer_per_block_equals_full() {
    let full_cfg = common::tiny_config("full");
    let block_cfg = common::tiny_config("block:1");
    let w = common::tiny_weights(&full_cfg, 5);
    let (full, block) = (
        trace_of(&full_cfg, &w, false),
        trace_of(&block_cfg, &w, false),
    );
    let err = common::max_rel_err(&logits(&block), &logits(&full), 1e-3);
    assert!(err < 1e-5, "logits rel err {err}");
    for (a, b) in full.ops.iter().zip(&block.ops) {
        assert_eq!(a.alpha.len(), b.alpha.len());
        let err = common::max_rel_err(b.alpha.flat(), a.alpha.flat(), 1e-3);
        assert!(err < 1e-5, "{}: alpha rel err {err}", a.name);
    }
}

#[test]
fn folding_the_key_norm_gain_into_the_query_changes_nothing() {
    let cfg = common::tiny_config("block:2");
    let w = common::tiny_weights(&cfg, 9);
    let fold = |q: &Option<DepthQuery>| {
        q.as_ref().map(|q| DepthQuery {
            query: (&q.query * &q.key_gain).unwrap(),
            key_gain: q.key_gain.ones_like().unwrap(),
        })
    };
    let mut folded = w.clone();
    for l in &mut folded.layers {
        l.attn_res = fold(&l.attn_res);
        l.mlp_res = fold(&l.mlp_res);
    }
    folded.final_res = fold(&folded.final_res);
    let (a, b) = (trace_of(&cfg, &w, false), trace_of(&cfg, &folded, false));
    assert!(common::max_rel_err(&logits(&b), &logits(&a), 1e-3) < 1e-5);
    for (x, y) in a.ops.iter().zip(&b.ops) {
        assert!(common::max_rel_err(y.alpha.flat(), x.alpha.flat(), 1e-3) < 1e-5);
    }
}

#[test]
fn block_partial_rms_resets_when_a_block_closes() {
    let cfg = common::tiny_config("block:2");
    let trace = trace_of(&cfg, &common::tiny_weights(&cfg, 2), false);
    for (l, op) in trace.ops.iter().take(2 * cfg.num_layers).enumerate() {
        let partial = op
            .partial_rms
            .as_ref()
            .expect("block ops record the partial");
        if l % 2 == 0 {
            // First sublayer of a block: the partial is exactly this sublayer's output.
            assert!(
                common::max_rel_err(partial, &op.output_rms, 1e-6) < 1e-5,
                "{}",
                op.name
            );
        }
    }
    let labels = &trace.ops[3].sources;
    assert_eq!(labels, &["emb", "B1", "partial"]);
}

#[test]
fn sliding_window_wider_than_the_prompt_changes_nothing() {
    let wide = {
        let mut c = common::tiny_config("mistral");
        c.sliding_window = Some(IDS.len());
        c
    };
    let narrow = common::tiny_config("mistral"); // window 5 < 9 tokens
    let mut plain = common::tiny_config("llama");
    plain.model_type = "mistral".into();
    let w = common::tiny_weights(&plain, 4);
    let (a, b, c) = (
        trace_of(&wide, &w, false),
        trace_of(&plain, &w, false),
        trace_of(&narrow, &w, false),
    );
    assert!(common::max_rel_err(&logits(&a), &logits(&b), 1e-3) < 1e-6);
    // Positions inside the window agree, later ones must differ.
    let v = plain.vocab_size;
    assert!(common::max_rel_err(&logits(&c)[..5 * v], &logits(&b)[..5 * v], 1e-3) < 1e-6);
    assert!(common::max_rel_err(&logits(&c)[5 * v..], &logits(&b)[5 * v..], 1e-3) > 1e-3);
}

#[test]
fn gradients_come_with_every_op_and_every_layer() {
    let cfg = common::tiny_config("block:3");
    let trace = trace_of(&cfg, &common::tiny_weights(&cfg, 6), true);
    let grads = trace.grads.as_ref().expect("asked for gradients");
    let groups: Vec<&str> = grads.histograms.iter().map(|h| h.group.as_str()).collect();
    assert_eq!(groups, ["embedding", "L0", "L1", "L2", "head"]);
    for h in &grads.histograms {
        assert_eq!(h.counts.len(), grads.bin_edges.len() - 1);
        let total: u64 =
            h.counts.iter().sum::<u64>() + h.zeros + h.underflow + h.overflow + h.non_finite;
        assert_eq!(
            total, h.parameters,
            "{}: every parameter lands somewhere",
            h.group
        );
        assert!(h.grad_rms > 0.0, "{}", h.group);
    }
    for op in &trace.ops {
        let g = op.grad_rms.as_ref().expect("grad rms per op");
        assert_eq!(g.len(), IDS.len());
        assert!(g.iter().any(|&x| x > 0.0), "{}", op.name);
    }
}

/// Loss of the f64 model with one parameter entry or one op-output entry nudged.
fn loss_with(cfg: &ModelConfig, w: &Weights, offsets: Option<&[Tensor]>) -> f64 {
    let out = forward::forward(cfg, w, &IDS, offsets, &Silent).unwrap();
    next_token_loss(&out.logits, &IDS)
        .unwrap()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn nudge(t: &Tensor, index: usize, h: f64) -> Tensor {
    let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[index] += h;
    Tensor::from_vec(v, t.dims(), t.device()).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    for kind in ["block:3", "gpt2"] {
        let cfg = common::tiny_config(kind);
        let w = common::tiny_weights(&cfg, 8)
            .map_tensors(&mut |_, t| t.to_dtype(DType::F64))
            .unwrap();
        let run = reference::run(&cfg, &w, &IDS, true, &Silent).unwrap();
        let back = run.backward.expect("backward");
        let h = 1e-5;
        // Parameters: a few entries of tensors spread over depth, including AttnRes queries.
        let n_params = back.param_vars.len();
        let mut checked = 0;
        for (k, (group, var)) in back.param_vars.iter().enumerate().step_by(5) {
            let grad = back
                .store
                .get(var.as_tensor())
                .expect("every parameter gets a gradient");
            let g = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let index = (k * 7919) % g.len();
            let perturbed = |sign: f64| {
                let mut i = 0;
                w.map_tensors(&mut |_, t| {
                    let r = if i == k {
                        Ok(nudge(t, index, sign * h))
                    } else {
                        Ok(t.clone())
                    };
                    i += 1;
                    r
                })
                .unwrap()
            };
            let fd = (loss_with(&cfg, &perturbed(1.0), None)
                - loss_with(&cfg, &perturbed(-1.0), None))
                / (2.0 * h);
            assert!(
                (fd - g[index]).abs() <= 1e-6 + 1e-4 * fd.abs(),
                "{kind} param {k}/{n_params} ({group:?}) [{index}]: autograd {} vs finite difference {fd}",
                g[index]
            );
            checked += 1;
        }
        assert!(checked >= 5);
        // Op outputs: d loss / d v for a few ops and tokens.
        let zeros: Vec<Tensor> = back
            .probes
            .iter()
            .map(|p| p.as_tensor().zeros_like().unwrap())
            .collect();
        for (op, probe) in back.probes.iter().enumerate().step_by(2) {
            let grad = back
                .store
                .get(probe.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let index = (op * 131 + 3) % grad.len();
            let at = |sign: f64| {
                let mut o = zeros.clone();
                o[op] = nudge(&o[op], index, sign * h);
                loss_with(&cfg, &w, Some(&o))
            };
            let fd = (at(1.0) - at(-1.0)) / (2.0 * h);
            assert!(
                (fd - grad[index]).abs() <= 1e-6 + 1e-4 * fd.abs(),
                "{kind} op {op} [{index}]: d loss/d v {} vs finite difference {fd}",
                grad[index]
            );
        }
    }
}

#[test]
fn a_one_token_prompt_has_no_loss_and_says_why_there_are_no_gradients() {
    let cfg = common::tiny_config("full");
    let w = common::tiny_weights(&cfg, 1);
    let tok = TextTokenizer::byte_fallback();
    let opts = TraceOptions {
        grads: true,
        ..Default::default()
    };
    let trace =
        reference::trace_tokens(&cfg, &w, &tok, tok.tokens_from_ids(&[3]), opts, &Silent).unwrap();
    assert_eq!(trace.loss, None);
    assert!(trace.grads.is_none());
    assert!(trace.warnings.iter().any(|w| w.contains("two tokens")));
}

#[test]
fn empty_and_too_long_prompts_are_clear_errors() {
    let cfg = common::tiny_config("llama");
    let tok = TextTokenizer::byte_fallback();
    let e = reference::tokenize(&tok, &cfg, &Input::Text(String::new())).unwrap_err();
    assert!(matches!(e, reference::Error::EmptyPrompt), "{e}");
    let long = "x".repeat(cfg.max_positions + 1);
    let e = reference::tokenize(&tok, &cfg, &Input::Text(long)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("41 tokens") && msg.contains("max_position_embeddings"),
        "{msg}"
    );
    let e = reference::tokenize(&tok, &cfg, &Input::Ids(vec![1, 300])).unwrap_err();
    assert!(e.to_string().contains("token id 300"), "{e}");
}

#[test]
fn a_batch_of_sequences_gives_each_sequence_its_own_logits() {
    for kind in ["gpt2", "block:2", "llama"] {
        let cfg = common::tiny_config(kind);
        let w = common::tiny_weights(&cfg, 13);
        let (a, b) = (&IDS[..4], &IDS[5..9]);
        let batch: Vec<u32> = a.iter().chain(b).copied().collect();
        let together = forward::logits_batch(&cfg, &w, &batch, 4).unwrap();
        for (i, seq) in [a, b].iter().enumerate() {
            let alone = forward::logits_batch(&cfg, &w, seq, 4).unwrap();
            let part = together.narrow(0, 4 * i, 4).unwrap();
            let diff = (part - alone)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{kind} sequence {i}: {diff}");
        }
    }
}

#[test]
fn each_tokens_surprise_is_minus_log_softmax_of_the_logits_and_the_loss_is_their_mean() {
    let cfg = common::tiny_config("block:2");
    let trace = trace_of(&cfg, &common::tiny_weights(&cfg, 5), false);
    let logits = trace.logits.as_ref().unwrap();
    assert_eq!(trace.token_nll.len(), IDS.len());
    assert_eq!(trace.token_nll[0], None, "nothing predicts the first token");
    for t in 1..IDS.len() {
        // Independent of the readout's one-pass normaliser: f64 log-sum-exp of the row before.
        let row = &logits[t - 1];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let expected = lse - row[IDS[t] as usize] as f64;
        let got = trace.token_nll[t].expect("every later token has a surprise") as f64;
        assert!(
            (got - expected).abs() < 1e-5 * expected.max(1.0),
            "token {t}: {got} vs {expected}"
        );
    }
    let mean = trace.token_nll[1..]
        .iter()
        .map(|v| v.unwrap() as f64)
        .sum::<f64>()
        / (IDS.len() - 1) as f64;
    assert!((mean - trace.loss.unwrap() as f64).abs() < 1e-5);
}

//! A second, deliberately naive implementation of the Llama / AttnRes forward (f64, plain loops,
//! no candle), written from ATTNRES.md and the Llama definition alone. The candle reference must
//! agree with it on logits, depth weights and hidden-state RMS.

mod common;

use depthlens::model::{AttnResMode, Linear, Mlp, ModelConfig, NormKind, Weights};
use depthlens::progress::Silent;
use depthlens::reference::{self, TraceOptions};

type Mat = Vec<Vec<f64>>;

fn mat(t: &candle_core::Tensor) -> Mat {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap()
}
fn vec1(t: &candle_core::Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}
fn matvec(w: &Linear, x: &[f64]) -> Vec<f64> {
    let m = mat(&w.weight);
    let b = w.bias.as_ref().map(vec1);
    m.iter()
        .enumerate()
        .map(|(o, r)| {
            r.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + b.as_ref().map_or(0.0, |b| b[o])
        })
        .collect()
}
fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
}
fn rmsnorm(x: &[f64], g: &[f64], eps: f64) -> Vec<f64> {
    let r = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(g).map(|(v, g)| v / r * g).collect()
}
fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

struct Naive {
    logits: Mat,
    /// Per op: `[T][n_src]`.
    alpha: Vec<Mat>,
    hidden_rms: Vec<Vec<f64>>,
}

fn naive_forward(cfg: &ModelConfig, w: &Weights, ids: &[u32]) -> Naive {
    let t_len = ids.len();
    let d = cfg.hidden_size;
    let NormKind::Rms { eps: norm_eps } = cfg.norm else {
        panic!("llama family")
    };
    let emb = mat(&w.embed);
    let v0: Mat = ids.iter().map(|&i| emb[i as usize].clone()).collect();
    let ar = cfg.attnres;
    let block = match ar.map(|a| a.mode) {
        Some(AttnResMode::Block { block_size }) => Some(block_size),
        _ => None,
    };
    // Sources in the sense of ATTNRES.md: Full / baseline keep every output, Block keeps blocks.
    let mut completed: Vec<Mat> = vec![v0];
    let mut partial: Option<Mat> = None;
    let mut in_block = 0;
    let mut out = Naive {
        logits: vec![],
        alpha: vec![],
        hidden_rms: vec![],
    };
    let n_sub = 2 * cfg.num_layers;
    let mix = |l: usize, completed: &Vec<Mat>, partial: &Option<Mat>, out: &mut Naive| -> Mat {
        let mut srcs: Vec<&Mat> = completed.iter().collect();
        if let Some(p) = partial {
            srcs.push(p);
        }
        let mut hs: Mat = vec![];
        let mut alphas = vec![];
        for t in 0..t_len {
            let (h, alpha) = match (ar, w.depth_query(l)) {
                (Some(a), Some(q)) => {
                    let wq = vec1(&q.query);
                    let g = vec1(&q.key_gain);
                    let logits: Vec<f64> = srcs
                        .iter()
                        .map(|s| {
                            let v = &s[t];
                            let r =
                                (v.iter().map(|x| x * x).sum::<f64>() / d as f64 + a.eps).sqrt();
                            (0..d).map(|j| wq[j] * g[j] * v[j] / r).sum()
                        })
                        .collect();
                    let alpha = softmax(&logits);
                    let h: Vec<f64> = (0..d)
                        .map(|j| srcs.iter().zip(&alpha).map(|(s, a)| a * s[t][j]).sum())
                        .collect();
                    (h, alpha)
                }
                _ => (
                    (0..d)
                        .map(|j| srcs.iter().map(|s| s[t][j]).sum())
                        .collect::<Vec<f64>>(),
                    vec![1.0; srcs.len()],
                ),
            };
            hs.push(h);
            alphas.push(alpha);
        }
        out.alpha.push(alphas);
        out.hidden_rms.push(hs.iter().map(|h| rms(h)).collect());
        hs
    };
    let rope = cfg.rope.unwrap();
    let hd = cfg.head_dim;
    for l in 0..n_sub {
        let layer = &w.layers[l / 2];
        let h = mix(l, &completed, &partial, &mut out);
        let y: Mat = if l % 2 == 0 {
            let g = vec1(&layer.attn_norm.weight);
            let x: Mat = h.iter().map(|r| rmsnorm(r, &g, norm_eps)).collect();
            let rot = |v: Vec<f64>, pos: usize, heads: usize| -> Vec<f64> {
                let mut o = v.clone();
                for hh in 0..heads {
                    for i in 0..hd / 2 {
                        let ang = pos as f64 / rope.theta.powf(2.0 * i as f64 / hd as f64);
                        let (a, b) = (v[hh * hd + i], v[hh * hd + i + hd / 2]);
                        o[hh * hd + i] = a * ang.cos() - b * ang.sin();
                        o[hh * hd + i + hd / 2] = b * ang.cos() + a * ang.sin();
                    }
                }
                o
            };
            let q: Mat = x
                .iter()
                .enumerate()
                .map(|(p, r)| rot(matvec(&layer.q, r), p, cfg.num_heads))
                .collect();
            let k: Mat = x
                .iter()
                .enumerate()
                .map(|(p, r)| rot(matvec(&layer.k, r), p, cfg.num_kv_heads))
                .collect();
            let v: Mat = x.iter().map(|r| matvec(&layer.v, r)).collect();
            let group = cfg.num_heads / cfg.num_kv_heads;
            (0..t_len)
                .map(|t| {
                    let mut cat = vec![0.0; cfg.num_heads * hd];
                    for head in 0..cfg.num_heads {
                        let kvh = head / group;
                        let scores: Vec<f64> = (0..=t)
                            .map(|u| {
                                (0..hd)
                                    .map(|i| q[t][head * hd + i] * k[u][kvh * hd + i])
                                    .sum::<f64>()
                                    / (hd as f64).sqrt()
                            })
                            .collect();
                        let p = softmax(&scores);
                        for i in 0..hd {
                            cat[head * hd + i] = (0..=t).map(|u| p[u] * v[u][kvh * hd + i]).sum();
                        }
                    }
                    matvec(&layer.o, &cat)
                })
                .collect()
        } else {
            let g = vec1(&layer.mlp_norm.weight);
            let Mlp::SwiGlu { gate, up, down } = &layer.mlp else {
                panic!("llama family")
            };
            h.iter()
                .map(|r| {
                    let x = rmsnorm(r, &g, norm_eps);
                    let a: Vec<f64> = matvec(gate, &x)
                        .iter()
                        .zip(matvec(up, &x))
                        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                        .collect();
                    matvec(down, &a)
                })
                .collect()
        };
        match block {
            Some(s) => {
                let p = match partial.take() {
                    Some(p) => p
                        .iter()
                        .zip(&y)
                        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                        .collect(),
                    None => y,
                };
                in_block += 1;
                if in_block == s || l == n_sub - 1 {
                    completed.push(p);
                    in_block = 0;
                } else {
                    partial = Some(p);
                }
            }
            None => completed.push(y),
        }
    }
    let h = mix(n_sub, &completed, &partial, &mut out);
    let g = vec1(&w.final_norm.weight);
    let head = mat(w.lm_head.as_ref().unwrap_or(&w.embed));
    out.logits = h
        .iter()
        .map(|r| {
            let x = rmsnorm(r, &g, norm_eps);
            head.iter()
                .map(|row| row.iter().zip(&x).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    out
}

fn check_against_naive(kind: &str) {
    let cfg = common::tiny_config(kind);
    let w = common::tiny_weights(&cfg, 7);
    let ids: Vec<u32> = vec![5, 17, 250, 3, 3, 99, 42, 0, 123, 7, 64];
    let tokenizer = depthlens::model::TextTokenizer::byte_fallback();
    let tokens = tokenizer.tokens_from_ids(&ids);
    let opts = TraceOptions {
        logits: true,
        ..Default::default()
    };
    let trace =
        reference::trace_tokens(&cfg, &w, &tokenizer, tokens.clone(), opts, &Silent).unwrap();
    let naive = naive_forward(&cfg, &w, &ids);
    // In f64 the two implementations must agree to rounding: any gap is a bug, not precision.
    let w64 = w
        .map_tensors(&mut |_, t| t.to_dtype(candle_core::DType::F64))
        .unwrap();
    let run = reference::run(&cfg, &w64, &ids, false, &Silent).unwrap();
    let exact: Vec<f64> = run.forward.logits.flatten_all().unwrap().to_vec1().unwrap();
    let worst = exact
        .iter()
        .zip(naive.logits.concat())
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(
        worst < 1e-9,
        "{kind}: f64 reference and naive forward differ by {worst}"
    );
    let got: Vec<f32> = trace.logits.as_ref().unwrap().concat();
    let want: Vec<f32> = naive.logits.concat().iter().map(|&x| x as f32).collect();
    let err = common::normwise_err(&got, &want);
    assert!(
        err < 1e-5,
        "{kind}: logits differ from the naive forward, max |diff| / max |logit| = {err}"
    );
    assert_eq!(trace.ops.len(), naive.alpha.len());
    for (op, (alpha, hrms)) in trace
        .ops
        .iter()
        .zip(naive.alpha.iter().zip(&naive.hidden_rms))
    {
        for (t, (a_row, n_row)) in op.alpha.iter().zip(alpha).enumerate() {
            assert_eq!(a_row.len(), n_row.len(), "{kind} {}: source count", op.name);
            for (a, n) in a_row.iter().zip(n_row) {
                assert!(
                    (f64::from(*a) - n).abs() < 1e-5,
                    "{kind} {} token {t}: alpha {a} vs {n}",
                    op.name
                );
            }
        }
        let got: Vec<f32> = op.hidden_rms.clone();
        let want: Vec<f32> = hrms.iter().map(|&x| x as f32).collect();
        let err = common::max_rel_err(&got, &want, 1e-6);
        assert!(err < 1e-4, "{kind} {}: hidden rms rel err {err}", op.name);
    }
    // The loss and the top-k, from the naive logits by textbook softmax in f64.
    let log_softmax = |row: &[f64]| -> Vec<f64> {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = row.iter().map(|z| (z - max).exp()).sum::<f64>().ln() + max;
        row.iter().map(|z| z - log_sum).collect()
    };
    let log_probs: Vec<Vec<f64>> = naive.logits.iter().map(|r| log_softmax(r)).collect();
    let nll = (1..ids.len())
        .map(|t| -log_probs[t - 1][ids[t] as usize])
        .sum::<f64>()
        / (ids.len() - 1) as f64;
    let loss = f64::from(trace.loss.expect("a loss for a prompt of several tokens"));
    assert!(
        (loss - nll).abs() < 1e-5 * nll.abs().max(1.0),
        "{kind}: loss {loss} vs naive {nll}"
    );
    for (t, (predictions, lp)) in trace.topk.iter().zip(&log_probs).enumerate() {
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        assert_eq!(predictions.len(), 5, "{kind} token {t}: top-5");
        for (p, &want) in predictions.iter().zip(&order) {
            assert_eq!(p.id as usize, want, "{kind} token {t}: top-k order");
            let err = (f64::from(p.prob) - lp[want].exp()).abs();
            assert!(err < 1e-6, "{kind} token {t}: p(id {want}) off by {err}");
        }
    }
}

#[test]
fn llama_baseline_matches_the_naive_forward() {
    check_against_naive("llama");
}

#[test]
fn qwen2_with_qkv_bias_and_tied_head_matches_the_naive_forward() {
    check_against_naive("qwen2");
}

#[test]
fn full_attnres_matches_the_naive_forward() {
    check_against_naive("full");
}

#[test]
fn block_attnres_with_blocks_ending_mid_layer_matches_the_naive_forward() {
    // 6 sublayers in blocks of 4: the first block ends between L1.attn and L1.mlp, the second is
    // a short trailing block.
    check_against_naive("block:4");
}

#[test]
fn block_attnres_of_three_matches_the_naive_forward() {
    check_against_naive("block:3");
}

//! The forward pass along depth, recording the Trace's per-op statistics as it goes.

use candle_core::Tensor;

use super::depth::{DepthRule, DepthState, Mixed};
use super::kernels::SourceDots;
use super::ops;
use super::phases::{timed, Span};
use crate::model::{Activation, Layer, Mlp, ModelConfig, Weights};
use crate::progress::Progress;
use crate::trace::{DepthOp, Mixing, OpKind, Rows};

/// The message of the error a forward stops with when its caller cancels it.
pub const CANCELLED: &str = "cancelled";

/// What the forward produced, before top-k and gradients are turned into Trace fields.
pub struct ForwardOutput {
    pub ops: Vec<DepthOp>,
    /// `[T, vocab]`.
    pub logits: Tensor,
}

/// The rule a config implies.
pub fn depth_rule(cfg: &ModelConfig) -> DepthRule {
    match cfg.attnres {
        Some(a) => DepthRule::AttnRes(a.mode),
        None => DepthRule::ResidualSum,
    }
}

/// Op label of sublayer `l` (`L3.attn`, `L3.mlp`) or of the final op.
pub fn op_name(l: usize, num_layers: usize) -> String {
    if l == 2 * num_layers {
        "final".into()
    } else if l.is_multiple_of(2) {
        format!("L{}.attn", l / 2)
    } else {
        format!("L{}.mlp", l / 2)
    }
}

/// Per-op statistics of the input `h` formed from `sources` with weights `alpha` (`[n, T]`).
struct InputStats {
    alpha: Rows,
    shares: Rows,
    source_rms: Rows,
    hidden_rms: Vec<f32>,
}

fn input_stats(sources: &[&Tensor], mixed: &Mixed) -> candle_core::Result<InputStats> {
    let h = mixed.hidden.detach();
    let alpha = mixed.alpha.detach(); // [T, n]

    // <v_i, h> and <h, h> in f64 sums: made by the in-place mix, or here in one pass over the
    // stacked sources (`SourceDots`). Shares cancel, so summation order shows: a batched matmul
    // here once moved one share of the 260-token block:3 parity test by 1e-4 of itself.
    let (dots_hh, mean_sq) = match (&mixed.source_stats, &mixed.keys) {
        (Some((dots_hh, mean_sq)), _) => (dots_hh.clone(), mean_sq.detach()),
        (None, keys) => {
            let (stacked, mean_sq) = match keys {
                Some((stacked, mean_sq)) => (stacked.detach(), mean_sq.detach()),
                None => {
                    let stacked = Tensor::stack(sources, 1)?.detach(); // [T, n, d]
                    let mean_sq = stacked.sqr()?.mean(2)?;
                    (stacked, mean_sq)
                }
            };
            let dots_hh = stacked
                .contiguous()?
                .apply_op2_no_bwd(&h.contiguous()?, &SourceDots)?; // [T, n + 1]
            (dots_hh, mean_sq)
        }
    };
    let n = alpha.dim(1)?;
    let dots = dots_hh.narrow(1, 0, n)?;
    let hh = dots_hh.narrow(1, n, 1)?;
    // A zero input (an untrained or degenerate model) has no decomposition; report zeros, not NaN.
    let safe_hh = hh.maximum(f32::MIN_POSITIVE)?;
    let shares = (dots * &alpha)?.broadcast_div(&safe_hh)?;
    let d = h.dim(1)? as f64;
    Ok(InputStats {
        alpha: ops::table_f32(&alpha)?,
        shares: ops::table_f32(&shares)?,
        source_rms: ops::table_f32(&mean_sq.sqrt()?)?,
        hidden_rms: ops::vec_f32(&(hh / d)?.sqrt()?.squeeze(1)?)?,
    })
}

struct Context<'a> {
    cfg: &'a ModelConfig,
    /// Sequences in the batch (rows are `batch * seq_len`).
    batch: usize,
    rope: Option<(Tensor, Tensor)>,
}

fn attention_sublayer(ctx: &Context, layer: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
    let cfg = ctx.cfg;
    let hd = cfg.head_dim;
    let b = ctx.batch;
    let (mut q, mut k, v) = {
        let _phase = Span::start("attention: q, k, v projections");
        let qkv = ops::linears(x, &[&layer.q, &layer.k, &layer.v])?;
        (
            ops::split_heads(&qkv[0], b, cfg.num_heads, hd)?,
            ops::split_heads(&qkv[1], b, cfg.num_kv_heads, hd)?,
            ops::split_heads(&qkv[2], b, cfg.num_kv_heads, hd)?,
        )
    };
    if let Some((cos, sin)) = &ctx.rope {
        let _phase = Span::start("attention: RoPE");
        q = ops::apply_rope(&q, cos, sin)?;
        k = ops::apply_rope(&k, cos, sin)?;
    }
    let mixed = {
        let _phase = Span::start("attention: scores, softmax, P V");
        ops::causal_attention(&q, &k, &v, ctx.cfg.sliding_window)?
    };
    let _phase = Span::start("attention: output projection");
    ops::linear(&mixed, &layer.o)
}

fn mlp_sublayer(cfg: &ModelConfig, layer: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
    match &layer.mlp {
        Mlp::SwiGlu { gate, up, down } => {
            let (g, u) = {
                let _phase = Span::start("MLP: up projections");
                let gate_up = ops::linears(x, &[gate, up])?;
                (gate_up[0].clone(), gate_up[1].clone())
            };
            let a = {
                let _phase = Span::start("MLP: activation");
                ops::silu_mul(&g, &u)?
            };
            let _phase = Span::start("MLP: down projection");
            ops::linear(&a, down)
        }
        Mlp::Gelu { fc, proj } => {
            let h = {
                let _phase = Span::start("MLP: up projections");
                ops::linear(x, fc)?
            };
            let a = {
                let _phase = Span::start("MLP: activation");
                match cfg.activation {
                    Activation::GeluErf => h.gelu_erf()?,
                    _ => h.gelu()?,
                }
            };
            let _phase = Span::start("MLP: down projection");
            ops::linear(&a, proj)
        }
    }
}

/// Run the model on one sequence `ids`, recording every op. `offsets`, one `[T, d]` tensor per op,
/// are added to each op's output (the final op: to its input); pass zero variables to get
/// `d loss / d v` from backward, or small perturbations for a finite-difference check. The forward
/// computes in the weights' dtype (f32; f64 for checks).
pub fn forward(
    cfg: &ModelConfig,
    w: &Weights,
    ids: &[u32],
    offsets: Option<&[Tensor]>,
    progress: &dyn Progress,
) -> candle_core::Result<ForwardOutput> {
    forward_batch(cfg, w, ids, ids.len(), true, offsets, progress)
}

/// Logits `[B * T, vocab]` of a batch of equally long sequences laid end to end in `ids`
/// (training). Records no Trace statistics.
pub fn logits_batch(
    cfg: &ModelConfig,
    w: &Weights,
    ids: &[u32],
    seq_len: usize,
) -> candle_core::Result<Tensor> {
    Ok(forward_batch(cfg, w, ids, seq_len, false, None, &crate::progress::Silent)?.logits)
}

fn forward_batch(
    cfg: &ModelConfig,
    w: &Weights,
    ids: &[u32],
    seq_len: usize,
    record: bool,
    offsets: Option<&[Tensor]>,
    progress: &dyn Progress,
) -> candle_core::Result<ForwardOutput> {
    if seq_len == 0 || !ids.len().is_multiple_of(seq_len) {
        candle_core::bail!("{} ids do not split into sequences of {seq_len}", ids.len());
    }
    let t = seq_len;
    let batch = ids.len() / seq_len;
    let dtype = w.embed.dtype();
    let n_ops = cfg.num_sublayers() + 1;
    progress.start("forward", n_ops as u64);
    let ids_t = Tensor::from_vec(ids.to_vec(), ids.len(), &candle_core::Device::Cpu)?;
    let mut emb = w.embed.embedding(&ids_t)?;
    if let Some(pos) = &w.positions {
        emb = (emb + pos.narrow(0, 0, t)?.repeat((batch, 1))?)?;
    }
    let ctx = Context {
        cfg,
        batch,
        rope: match &cfg.rope {
            Some(r) => Some(ops::rope_tables(r, cfg.head_dim, t, dtype)?),
            None => None,
        },
    };
    let rule = depth_rule(cfg);
    let eps = cfg.attnres.map(|a| a.eps).unwrap_or(0.0);
    let mixing = match rule {
        DepthRule::ResidualSum => Mixing::ResidualSum,
        DepthRule::AttnRes(_) => Mixing::DepthAttention,
    };
    let mut state = DepthState::new(rule, emb)?;
    let mix = |state: &DepthState, query| {
        if record {
            state.mix_for_trace(query, eps)
        } else {
            state.mix(query, eps)
        }
    };
    let mut ops_out = Vec::with_capacity(n_ops);
    if let Some(o) = offsets {
        if o.len() != n_ops {
            candle_core::bail!("{} output offsets given for {n_ops} ops", o.len());
        }
    }
    let offset = |l: usize, x: Tensor| -> candle_core::Result<Tensor> {
        match offsets {
            Some(o) => x + &o[l],
            None => Ok(x),
        }
    };

    for l in 0..cfg.num_sublayers() {
        let name = op_name(l, cfg.num_layers);
        let mixed = timed("depth mix", || mix(&state, w.depth_query(l)))?;
        let (labels, sources): (Vec<String>, Vec<&Tensor>) = state
            .sources()
            .into_iter()
            .map(|(s, t)| (s.to_string(), t))
            .unzip();
        let stats = if record {
            Some(timed("Trace statistics", || input_stats(&sources, &mixed))?)
        } else {
            None
        };
        let layer = &w.layers[l / 2];
        let norm = if l % 2 == 0 {
            &layer.attn_norm
        } else {
            &layer.mlp_norm
        };
        let x = timed("PreNorm", || ops::norm(&mixed.hidden, norm, cfg.norm))?;
        let (kind, output) = if l % 2 == 0 {
            (OpKind::Attn, attention_sublayer(&ctx, layer, &x)?)
        } else {
            (OpKind::Mlp, mlp_sublayer(cfg, layer, &x)?)
        };
        let output = offset(l, output)?;
        let last = l + 1 == cfg.num_sublayers();
        let Some(stats) = stats else {
            timed("place output", || state.push_output(&name, output, last))?;
            continue;
        };
        let output_rms = timed("Trace statistics", || {
            ops::vec_f32(&ops::rms(&output.detach())?)
        })?;
        timed("place output", || state.push_output(&name, output, last))?;
        let _phase = Span::start("Trace statistics");
        // Block: the partial after this sublayer (or the block it just closed), from the mean
        // square the depth state keeps for its keys.
        let partial_rms = match state.partial_mean_square() {
            Some(ms) => Some(ops::vec_f32(&ms.detach().sqrt()?.squeeze(1)?)?),
            None => None,
        };
        ops_out.push(DepthOp {
            name,
            layer: l / 2,
            kind,
            mixing,
            sources: labels,
            alpha: stats.alpha,
            shares: stats.shares,
            source_rms: stats.source_rms,
            hidden_rms: stats.hidden_rms,
            output_rms,
            partial_rms,
            grad_rms: None,
        });
        progress.advance(l as u64 + 1);
        if progress.cancelled() {
            candle_core::bail!("{CANCELLED}");
        }
    }

    // The final op: the input of the final norm (AttnRes: the final aggregation over all sources).
    let mixed = timed("depth mix", || {
        mix(&state, w.depth_query(cfg.num_sublayers()))
    })?;
    let (labels, sources): (Vec<String>, Vec<&Tensor>) = state
        .sources()
        .into_iter()
        .map(|(s, t)| (s.to_string(), t))
        .unzip();
    let stats = if record {
        Some(timed("Trace statistics", || input_stats(&sources, &mixed))?)
    } else {
        None
    };
    let hidden = offset(cfg.num_sublayers(), mixed.hidden)?;
    let normed = timed("PreNorm", || ops::norm(&hidden, &w.final_norm, cfg.norm))?;
    let head = w.lm_head.as_ref().unwrap_or(&w.embed);
    let logits = timed("LM head", || {
        ops::matmul_weight(&normed, &head.t()?, head.is_variable())
    })?;
    let Some(stats) = stats else {
        progress.finish();
        return Ok(ForwardOutput {
            ops: ops_out,
            logits,
        });
    };
    ops_out.push(DepthOp {
        name: op_name(cfg.num_sublayers(), cfg.num_layers),
        layer: cfg.num_layers,
        kind: OpKind::Final,
        mixing,
        sources: labels,
        alpha: stats.alpha,
        shares: stats.shares,
        source_rms: stats.source_rms,
        hidden_rms: stats.hidden_rms,
        output_rms: ops::vec_f32(&ops::rms(&normed.detach())?)?,
        partial_rms: None,
        grad_rms: None,
    });
    progress.advance(n_ops as u64);
    progress.finish();
    Ok(ForwardOutput {
        ops: ops_out,
        logits,
    })
}

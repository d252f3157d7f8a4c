//! Mixing along depth: the residual sum of a PreNorm baseline and the softmax over sources of
//! Full and Block AttnRes (ATTNRES.md), plus the bookkeeping of which sources exist when.

use candle_core::{Result, Tensor};

use super::kernels::{depth_mix_in_place, DepthScores};
use super::ops::mean_square;
use crate::model::{AttnResMode, DepthQuery};

/// Which rule forms a sublayer's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DepthRule {
    /// PreNorm baseline: every source with weight 1.
    ResidualSum,
    /// AttnRes (Full keeps every output as a source; Block sums outputs within blocks).
    AttnRes(AttnResMode),
}

/// The sources available to the next op, updated as sublayers run.
pub struct DepthState {
    rule: DepthRule,
    /// Full / baseline: `emb` and every sublayer output. Block: `emb` and completed blocks.
    completed: Vec<(String, Tensor)>,
    /// Block: running sum of the current block's outputs (none before its first sublayer).
    partial: Option<Tensor>,
    /// AttnRes: each completed source's key mean squares `[T, 1]`, made once when the source is
    /// (ATTNRES.md's keys are RMS-normalised), and the partial's; empty for the residual sum.
    completed_ms: Vec<Tensor>,
    partial_ms: Option<Tensor>,
    in_block: usize,
}

/// A mixed input with its depth weights.
pub struct Mixed {
    /// `[T, d]` the op's input `h`.
    pub hidden: Tensor,
    /// `[T, n]` weight of each source (ones for the residual sum).
    pub alpha: Tensor,
    /// AttnRes on the autograd path: the sources stacked `[T, n, d]` and their mean squares
    /// `[T, n]`, as the weights were computed from them; the Trace statistics reuse both rather
    /// than stack again.
    pub keys: Option<(Tensor, Tensor)>,
    /// The in-place path asked for statistics ([`DepthState::mix_for_trace`]): `<v_i, h>` and
    /// `<h, h>` per token `[T, n + 1]`, and each source's mean square `[T, n]`.
    pub source_stats: Option<(Tensor, Tensor)>,
}

impl DepthState {
    pub fn new(rule: DepthRule, embedding: Tensor) -> Result<Self> {
        let completed_ms = match rule {
            DepthRule::AttnRes(_) => vec![mean_square(&embedding)?],
            DepthRule::ResidualSum => Vec::new(),
        };
        Ok(Self {
            rule,
            completed: vec![("emb".to_string(), embedding)],
            partial: None,
            completed_ms,
            partial_ms: None,
            in_block: 0,
        })
    }

    /// Labels and tensors of the sources the next op attends over, in order.
    pub fn sources(&self) -> Vec<(&str, &Tensor)> {
        let mut v: Vec<(&str, &Tensor)> = self
            .completed
            .iter()
            .map(|(l, t)| (l.as_str(), t))
            .collect();
        if let Some(p) = &self.partial {
            v.push(("partial", p));
        }
        v
    }

    /// Block AttnRes: the mean square `[T, 1]` of the current block's partial sum or, right after
    /// a block closes, of that block (so the Trace's series shows the periodic reset); the one
    /// [`DepthState::push_output`] made for the keys. `None` for other rules.
    pub fn partial_mean_square(&self) -> Option<&Tensor> {
        match self.rule {
            DepthRule::AttnRes(AttnResMode::Block { .. }) => {
                self.partial_ms.as_ref().or(self.completed_ms.last())
            }
            _ => None,
        }
    }

    /// Record sublayer `label`'s output. `last` closes a trailing short block.
    pub fn push_output(&mut self, label: &str, output: Tensor, last: bool) -> Result<()> {
        match self.rule {
            DepthRule::ResidualSum => {
                self.completed.push((label.to_string(), output));
            }
            DepthRule::AttnRes(AttnResMode::Full) => {
                self.completed_ms.push(mean_square(&output)?);
                self.completed.push((label.to_string(), output));
            }
            DepthRule::AttnRes(AttnResMode::Block { block_size }) => {
                let partial = match self.partial.take() {
                    Some(p) => (p + output)?,
                    None => output,
                };
                let partial_ms = mean_square(&partial)?;
                self.in_block += 1;
                if self.in_block == block_size || last {
                    let label = format!("B{}", self.completed.len());
                    self.completed.push((label, partial));
                    self.completed_ms.push(partial_ms);
                    self.partial_ms = None;
                    self.in_block = 0;
                } else {
                    self.partial = Some(partial);
                    self.partial_ms = Some(partial_ms);
                }
            }
        }
        Ok(())
    }

    /// Form the next op's input from the current sources. AttnRes needs the op's `query`.
    pub fn mix(&self, query: Option<&DepthQuery>, eps: f64) -> Result<Mixed> {
        self.mix_with(query, eps, false)
    }

    /// [`DepthState::mix`] with the Trace's statistics of the sources made in the same pass
    /// ([`Mixed::source_stats`]) where no source tracks gradients.
    pub fn mix_for_trace(&self, query: Option<&DepthQuery>, eps: f64) -> Result<Mixed> {
        self.mix_with(query, eps, true)
    }

    fn mix_with(&self, query: Option<&DepthQuery>, eps: f64, stats: bool) -> Result<Mixed> {
        let sources: Vec<&Tensor> = self.sources().into_iter().map(|(_, t)| t).collect();
        match (self.rule, query) {
            (DepthRule::AttnRes(_), Some(q)) => {
                let mean_squares: Vec<&Tensor> =
                    self.completed_ms.iter().chain(&self.partial_ms).collect();
                attend(&sources, &mean_squares, q, eps, stats)
            }
            _ => residual_sum_with(&sources, stats),
        }
    }
}

/// `h = sum_i v_i`, weights all 1.
pub fn residual_sum(sources: &[&Tensor]) -> Result<Mixed> {
    residual_sum_with(sources, false)
}

fn residual_sum_with(sources: &[&Tensor], stats: bool) -> Result<Mixed> {
    if !sources.iter().any(|s| s.track_op()) {
        let out = depth_mix_in_place(sources, None, stats)?;
        return Ok(Mixed {
            hidden: out.hidden,
            alpha: out.alpha,
            keys: None,
            source_stats: out.source_dots.zip(out.mean_squares),
        });
    }
    let mut hidden = sources[0].clone();
    for s in &sources[1..] {
        hidden = (hidden + *s)?;
    }
    let t = hidden.dim(0)?;
    let alpha = Tensor::ones((t, sources.len()), hidden.dtype(), hidden.device())?;
    Ok(Mixed {
        hidden,
        alpha,
        keys: None,
        source_stats: None,
    })
}

/// ATTNRES.md: `alpha_i = softmax_i((w * g) . v_i / sqrt(mean(v_i^2) + eps))`, `h = sum_i alpha_i v_i`.
/// `(v / r) . q = (v . q) / r`, so the keys need no normalised copy. Without gradients the mix
/// reads the sources where they lie ([`depth_mix_in_place`]). With them, candle's ops carry the
/// autograd: the sources are stacked as `[T, n, d]` so that every reduction runs over a last
/// dimension and the mix is one batched matmul, because candle's CPU reductions over a leading
/// dimension are several times slower.
pub fn depth_attention(sources: &[&Tensor], q: &DepthQuery, eps: f64) -> Result<Mixed> {
    let mean_squares = sources
        .iter()
        .map(|s| mean_square(s))
        .collect::<Result<Vec<_>>>()?;
    depth_attention_with(sources, &mean_squares.iter().collect::<Vec<_>>(), q, eps)
}

/// [`depth_attention`] with each source's key mean squares (`[T, 1]`, [`mean_square`] of its
/// rows) already made: a source's stay the same for every later op, and recomputing them took
/// as long as the rest of the CPU mix (measured 2026-11-23; history of BENCHMARKS.md).
pub fn depth_attention_with(
    sources: &[&Tensor],
    mean_squares: &[&Tensor],
    q: &DepthQuery,
    eps: f64,
) -> Result<Mixed> {
    attend(sources, mean_squares, q, eps, false)
}

/// Where nothing tracks gradients, the mix reads the sources in place
/// ([`depth_mix_in_place`]); otherwise candle's ops on the stacked sources carry the autograd.
fn attend(
    sources: &[&Tensor],
    mean_squares: &[&Tensor],
    q: &DepthQuery,
    eps: f64,
    stats: bool,
) -> Result<Mixed> {
    if mean_squares.len() != sources.len() {
        candle_core::bail!(
            "{} key mean squares for {} depth sources",
            mean_squares.len(),
            sources.len()
        );
    }
    let mean_sq = Tensor::cat(mean_squares, 1)?; // [T, n]
    let folded = (&q.query * &q.key_gain)?;
    let tracked = sources.iter().any(|s| s.track_op()) || folded.track_op();
    if !tracked {
        let scores = DepthScores {
            folded_query: &folded,
            mean_squares: &mean_sq,
            eps,
        };
        let out = depth_mix_in_place(sources, Some(scores), stats)?;
        return Ok(Mixed {
            hidden: out.hidden,
            alpha: out.alpha,
            keys: None,
            source_stats: out.source_dots.map(|dots| (dots, mean_sq)),
        });
    }
    let stacked = Tensor::stack(sources, 1)?; // [T, n, d]
    let (t, n, d) = stacked.dims3()?;
    let key_rms = (&mean_sq + eps)?.sqrt()?;
    let folded = folded.reshape((d, 1))?;
    let dots = stacked
        .reshape((t * n, d))?
        .matmul(&folded)?
        .reshape((t, n))?;
    let alpha = super::ops::softmax(&(dots / key_rms)?, 1)?; // [T, n]
    let hidden = alpha.unsqueeze(1)?.matmul(&stacked)?.squeeze(1)?; // [T, 1, n] x [T, n, d]
    Ok(Mixed {
        hidden,
        alpha,
        keys: Some((stacked, mean_sq)),
        source_stats: None,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{attend, mean_square, residual_sum_with};
    use crate::model::DepthQuery;
    use crate::reference::kernels::tests::max_abs_diff;
    use crate::reference::kernels::SourceDots;

    /// Sources at odd sizes (d = 13 is not a multiple of the kernel's eight interleaved sums),
    /// once as variables (the stacked autograd path) and once as plain tensors (in place).
    fn sources() -> (Vec<Var>, Vec<Tensor>) {
        let dev = Device::Cpu;
        let vars: Vec<Var> = (0..4)
            .map(|_| Var::randn(0f64, 1.0, (5, 13), &dev).unwrap())
            .collect();
        let plain = vars.iter().map(|v| v.as_tensor().detach()).collect();
        (vars, plain)
    }

    /// `<v_i, h>`, `<h, h>` and each source's mean square, as the stacked path's statistics.
    fn stacked_stats(sources: &[&Tensor], hidden: &Tensor) -> (Tensor, Tensor) {
        let stacked = Tensor::stack(sources, 1).unwrap().detach();
        let dots = stacked
            .apply_op2_no_bwd(&hidden.detach(), &SourceDots)
            .unwrap();
        (dots, stacked.sqr().unwrap().mean(2).unwrap())
    }

    #[test]
    fn attention_read_in_place_equals_the_stacked_autograd_path_and_its_statistics() {
        let (vars, plain) = sources();
        let dev = Device::Cpu;
        let q = DepthQuery {
            query: Tensor::randn(0f64, 1.0, 13, &dev).unwrap(),
            key_gain: Tensor::randn(1f64, 0.1, 13, &dev).unwrap(),
        };
        let tracked: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let in_place: Vec<&Tensor> = plain.iter().collect();
        let ms: Vec<Tensor> = in_place.iter().map(|s| mean_square(s).unwrap()).collect();
        let ms: Vec<&Tensor> = ms.iter().collect();
        let stacked = attend(&tracked, &ms, &q, 1e-6, true).unwrap();
        let fast = attend(&in_place, &ms, &q, 1e-6, true).unwrap();
        assert!(stacked.keys.is_some() && stacked.source_stats.is_none());
        assert!(fast.keys.is_none());
        assert!(max_abs_diff(&fast.hidden, &stacked.hidden) < 1e-12);
        assert!(max_abs_diff(&fast.alpha, &stacked.alpha) < 1e-12);
        let (dots, mean_sq) = fast.source_stats.expect("statistics were asked for");
        let (want_dots, want_ms) = stacked_stats(&in_place, &stacked.hidden);
        assert!(max_abs_diff(&dots, &want_dots) < 1e-12);
        assert!(max_abs_diff(&mean_sq, &want_ms) < 1e-12);
        // Without statistics the mix is the same and makes none.
        let plain_mix = attend(&in_place, &ms, &q, 1e-6, false).unwrap();
        assert!(plain_mix.source_stats.is_none());
        assert!(max_abs_diff(&plain_mix.hidden, &fast.hidden) == 0.0);
    }

    #[test]
    fn residual_sum_read_in_place_equals_candles_adds_and_its_statistics() {
        let (vars, plain) = sources();
        let tracked: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let in_place: Vec<&Tensor> = plain.iter().collect();
        let adds = residual_sum_with(&tracked, true).unwrap();
        let fast = residual_sum_with(&in_place, true).unwrap();
        assert!(adds.source_stats.is_none());
        // The same adds in the same order: equal to the last bit.
        assert!(max_abs_diff(&fast.hidden, &adds.hidden) == 0.0);
        assert!(max_abs_diff(&fast.alpha, &adds.alpha) == 0.0);
        let (dots, mean_sq) = fast.source_stats.expect("statistics were asked for");
        let (want_dots, want_ms) = stacked_stats(&in_place, &adds.hidden);
        assert!(max_abs_diff(&dots, &want_dots) < 1e-12);
        assert!(max_abs_diff(&mean_sq, &want_ms) < 1e-12);
    }
}

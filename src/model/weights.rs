//! The weights of one model in the one layout every forward reads (f32, `[out, in]` linears).

use std::sync::{Arc, OnceLock};

use candle_core::{Result, Tensor, TensorId};

/// `y = x W^T + b` with `weight` stored `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// `weight` transposed to `[in, out]` and contiguous, made on first use by the CPU forward,
    /// with the id of the tensor it came from. candle's CPU GEMM packs a transposed view with
    /// strided gathers, which took a fifth of a CPU trace (3.4 against 8.4 ms for 2048 -> 768
    /// at T=128). Shared by clones, since they share the weight.
    transposed: Arc<OnceLock<(TensorId, Tensor)>>,
    /// This weight and the others that read the same input, transposed side by side (see
    /// [`Linear::stacked_weight_t`]), with the ids they came from.
    stacked: Arc<OnceLock<(Vec<TensorId>, Tensor)>>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            transposed: Arc::default(),
            stacked: Arc::default(),
        }
    }

    /// `[W^T | W_1^T | ..]` `[in, out + out_1 + ..]`, contiguous, for linears that read the same
    /// input (q, k, v; gate, up) as one GEMM: at T = 128 on 16 threads three 768-wide products
    /// ran at about half the FLOP rate of one wide one (BENCHMARKS.md). Cached like
    /// [`Linear::weight_t`]; `None` when a weight is a training variable or was replaced since.
    pub fn stacked_weight_t(&self, others: &[&Linear]) -> Result<Option<Tensor>> {
        let all: Vec<&Linear> = std::iter::once(self)
            .chain(others.iter().copied())
            .collect();
        if all.iter().any(|l| l.weight.is_variable()) {
            return Ok(None);
        }
        let ids: Vec<TensorId> = all.iter().map(|l| l.weight.id()).collect();
        if let Some((made_from, t)) = self.stacked.get() {
            return Ok((*made_from == ids).then(|| t.clone()));
        }
        let parts = all
            .iter()
            .map(|l| l.weight.t())
            .collect::<Result<Vec<_>>>()?;
        let t = Tensor::cat(&parts, 1)?.contiguous()?;
        let _ = self.stacked.set((ids, t.clone()));
        Ok(Some(t))
    }

    /// `W^T` `[in, out]` for `x W^T`: the cached contiguous copy for weights that cannot change
    /// in place, a view of `weight` for training variables (their values change every step and
    /// gradients must reach them) or a weight replaced since the copy was made.
    pub fn weight_t(&self) -> Result<Tensor> {
        if self.weight.is_variable() {
            return self.weight.t();
        }
        if let Some((id, t)) = self.transposed.get() {
            return if *id == self.weight.id() {
                Ok(t.clone())
            } else {
                self.weight.t()
            };
        }
        let t = self.weight.t()?.contiguous()?;
        let _ = self.transposed.set((self.weight.id(), t.clone()));
        Ok(t)
    }
}

/// RMSNorm (`bias == None`) or LayerNorm gain and bias, `[d]`.
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// An AttnRes depth-attention op: pseudo-query `w` and key RMSNorm gain `g`, both `[d]`.
#[derive(Debug, Clone)]
pub struct DepthQuery {
    pub query: Tensor,
    pub key_gain: Tensor,
}

#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(silu(gate x) * up x)`.
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// `proj(gelu(fc x))`.
    Gelu { fc: Linear, proj: Linear },
}

/// One transformer layer: an attention sublayer and an MLP sublayer, each with its PreNorm and,
/// for AttnRes, its depth query.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Norm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub mlp_norm: Norm,
    pub mlp: Mlp,
    pub attn_res: Option<DepthQuery>,
    pub mlp_res: Option<DepthQuery>,
}

#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, d]`.
    pub embed: Tensor,
    /// Learned absolute positions `[max_positions, d]` (GPT-2).
    pub positions: Option<Tensor>,
    pub layers: Vec<Layer>,
    pub final_norm: Norm,
    /// `[vocab, d]`; `None` when tied to `embed`.
    pub lm_head: Option<Tensor>,
    /// AttnRes final aggregation (op `2L`).
    pub final_res: Option<DepthQuery>,
}

/// Which histogram row a parameter belongs to: the embedding, a layer, or the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamGroup {
    Embedding,
    Layer(usize),
    Head,
}

impl Weights {
    /// Rebuild the weights with every tensor passed through `f` (e.g. to make autograd variables),
    /// telling `f` which group each tensor belongs to.
    pub fn map_tensors(
        &self,
        f: &mut impl FnMut(ParamGroup, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        fn lin(
            l: &Linear,
            g: ParamGroup,
            f: &mut impl FnMut(ParamGroup, &Tensor) -> Result<Tensor>,
        ) -> Result<Linear> {
            Ok(Linear::new(
                f(g, &l.weight)?,
                l.bias.as_ref().map(|b| f(g, b)).transpose()?,
            ))
        }
        fn norm(
            n: &Norm,
            g: ParamGroup,
            f: &mut impl FnMut(ParamGroup, &Tensor) -> Result<Tensor>,
        ) -> Result<Norm> {
            Ok(Norm {
                weight: f(g, &n.weight)?,
                bias: n.bias.as_ref().map(|b| f(g, b)).transpose()?,
            })
        }
        fn depth(
            d: &Option<DepthQuery>,
            g: ParamGroup,
            f: &mut impl FnMut(ParamGroup, &Tensor) -> Result<Tensor>,
        ) -> Result<Option<DepthQuery>> {
            d.as_ref()
                .map(|d| {
                    Ok(DepthQuery {
                        query: f(g, &d.query)?,
                        key_gain: f(g, &d.key_gain)?,
                    })
                })
                .transpose()
        }
        let embed = f(ParamGroup::Embedding, &self.embed)?;
        let positions = self
            .positions
            .as_ref()
            .map(|p| f(ParamGroup::Embedding, p))
            .transpose()?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let g = ParamGroup::Layer(i);
            let mlp = match &layer.mlp {
                Mlp::SwiGlu { gate, up, down } => Mlp::SwiGlu {
                    gate: lin(gate, g, f)?,
                    up: lin(up, g, f)?,
                    down: lin(down, g, f)?,
                },
                Mlp::Gelu { fc, proj } => Mlp::Gelu {
                    fc: lin(fc, g, f)?,
                    proj: lin(proj, g, f)?,
                },
            };
            layers.push(Layer {
                attn_norm: norm(&layer.attn_norm, g, f)?,
                q: lin(&layer.q, g, f)?,
                k: lin(&layer.k, g, f)?,
                v: lin(&layer.v, g, f)?,
                o: lin(&layer.o, g, f)?,
                mlp_norm: norm(&layer.mlp_norm, g, f)?,
                mlp,
                attn_res: depth(&layer.attn_res, g, f)?,
                mlp_res: depth(&layer.mlp_res, g, f)?,
            });
        }
        Ok(Self {
            embed,
            positions,
            layers,
            final_norm: norm(&self.final_norm, ParamGroup::Head, f)?,
            lm_head: self
                .lm_head
                .as_ref()
                .map(|h| f(ParamGroup::Head, h))
                .transpose()?,
            final_res: depth(&self.final_res, ParamGroup::Head, f)?,
        })
    }

    /// Number of parameters (a tied head counts once).
    pub fn parameter_count(&self) -> usize {
        let mut n = 0;
        // map_tensors only fails if the closure fails; this one never does.
        let _ = self.map_tensors(&mut |_, t| {
            n += t.elem_count();
            Ok(t.clone())
        });
        n
    }

    /// The depth query of op `l` (`2i` attention, `2i+1` MLP, `2L` final), if AttnRes.
    pub fn depth_query(&self, op: usize) -> Option<&DepthQuery> {
        let n = self.layers.len();
        if op == 2 * n {
            return self.final_res.as_ref();
        }
        let layer = self.layers.get(op / 2)?;
        if op.is_multiple_of(2) {
            layer.attn_res.as_ref()
        } else {
            layer.mlp_res.as_ref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    #[test]
    fn the_transposed_weight_is_w_transposed_and_follows_a_replaced_weight() {
        let w = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap();
        let mut l = Linear::new(w.clone(), None);
        let expected = values(&w.t().unwrap());
        assert_eq!(values(&l.weight_t().unwrap()), expected);
        assert_eq!(values(&l.weight_t().unwrap()), expected, "from the cache");
        l.weight = (w * 2.0).unwrap();
        assert_eq!(
            values(&l.weight_t().unwrap())[0],
            vec![2., 8.],
            "not the stale copy"
        );
    }

    #[test]
    fn a_training_variable_is_never_cached_so_updates_and_gradients_reach_it() {
        let var = Var::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let l = Linear::new(var.as_tensor().clone(), None);
        let _ = l.weight_t().unwrap();
        var.set(&Tensor::new(&[[0f32, 0.], [0., 7.]], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(
            values(&l.weight_t().unwrap()),
            vec![vec![0., 0.], vec![0., 7.]]
        );
        let y = Tensor::new(&[[1f32, 1.]], &Device::Cpu)
            .unwrap()
            .matmul(&l.weight_t().unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(y.backward().unwrap().get(var.as_tensor()).is_some());
    }

    #[test]
    fn stacked_weights_sit_side_by_side_and_are_not_served_for_variables_or_replaced_weights() {
        let dev = Device::Cpu;
        let q = Linear::new(Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap(), None);
        let mut k = Linear::new(Tensor::new(&[[5f32, 6.]], &dev).unwrap(), None);
        let stacked = q.stacked_weight_t(&[&k]).unwrap().unwrap();
        assert_eq!(values(&stacked), vec![vec![1., 3., 5.], vec![2., 4., 6.]]);
        assert!(stacked.is_contiguous());
        assert_eq!(
            values(&q.stacked_weight_t(&[&k]).unwrap().unwrap())[0],
            vec![1., 3., 5.]
        );

        k.weight = Tensor::new(&[[7f32, 8.]], &dev).unwrap();
        assert!(
            q.stacked_weight_t(&[&k]).unwrap().is_none(),
            "not the stale copy"
        );

        let var = Var::new(&[[1f32, 2.]], &dev).unwrap();
        let v = Linear::new(var.as_tensor().clone(), None);
        let fresh = Linear::new(q.weight.clone(), None);
        assert!(fresh.stacked_weight_t(&[&v]).unwrap().is_none());
    }
}

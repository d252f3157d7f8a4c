//! AdamW with decoupled weight decay, a warmup + cosine learning-rate schedule, and global
//! gradient-norm clipping.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// One trainable tensor with its Adam moments.
pub struct Param {
    pub var: Var,
    /// Matrices decay; gains, biases and AttnRes pseudo-queries do not.
    pub decay: bool,
    pub m: Tensor,
    pub v: Tensor,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Learning rate at `step` (0-based): linear warmup, then cosine decay to `min_ratio * peak`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

/// L2 norm of a set of gradients.
pub fn global_norm(grads: &[&Tensor]) -> candle_core::Result<f64> {
    let mut sum = 0f64;
    for g in grads {
        sum += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(sum.sqrt())
}

impl AdamW {
    /// One update of every parameter. `step` is 1-based (bias correction). Gradients are scaled by
    /// `grad_scale` (clipping) first. A parameter without a gradient is left alone.
    pub fn step(
        &self,
        params: &mut [Param],
        grads: &GradStore,
        lr: f64,
        step: usize,
        grad_scale: f64,
    ) -> candle_core::Result<()> {
        let bc1 = 1.0 - self.beta1.powi(step as i32);
        let bc2 = 1.0 - self.beta2.powi(step as i32);
        for p in params.iter_mut() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = (g * grad_scale)?;
            p.m = ((&p.m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            p.v = ((&p.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&p.m / bc1)? / ((&p.v / bc2)?.sqrt()? + self.eps)?)?;
            let w = p.var.as_tensor();
            let decayed = if p.decay {
                (w * (1.0 - lr * self.weight_decay))?
            } else {
                w.clone()
            };
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

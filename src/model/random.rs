//! Seeded random weights for any config: synthetic benchmark models, test models, and the
//! trainer's initialisation. Deterministic for a given seed on every machine.

use candle_core::{Device, Tensor};

use super::config::{Family, ModelConfig};
use super::weights::{DepthQuery, Layer, Linear, Mlp, Norm, Weights};
use super::Error;

/// SplitMix64: tiny, fast, and good enough for initialisation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator's state, to save and restore a run exactly.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn from_state(state: u64) -> Self {
        Self(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A tensor of `N(mean, std^2)` values.
    pub fn tensor(&mut self, shape: &[usize], mean: f64, std: f64) -> Result<Tensor, Error> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// How to draw the parameters.
#[derive(Debug, Clone, Copy)]
pub struct RandomInit {
    /// Std of linear and embedding weights.
    pub weight_std: f64,
    /// Std of norm gains around 1 (0 gives exactly 1).
    pub gain_std: f64,
    /// Std of AttnRes pseudo-queries (0 gives the report's zero init: uniform depth weights).
    pub query_std: f64,
}

impl RandomInit {
    /// Parameters that make every part of the forward matter (tests, synthetic benchmarks).
    pub const TEST: RandomInit = RandomInit {
        weight_std: 0.2,
        gain_std: 0.1,
        query_std: 0.5,
    };
}

/// Random weights of the right shapes for `cfg`.
pub fn random_weights(cfg: &ModelConfig, init: RandomInit, seed: u64) -> Result<Weights, Error> {
    let mut rng = Rng::new(seed);
    let d = cfg.hidden_size;
    let ff = cfg.intermediate_size;
    let q_out = cfg.num_heads * cfg.head_dim;
    let kv_out = cfg.num_kv_heads * cfg.head_dim;
    let ws = init.weight_std;
    let gpt2 = cfg.family == Family::Gpt2;
    let lin = |rng: &mut Rng, out: usize, inp: usize, bias: bool| -> Result<Linear, Error> {
        let weight = rng.tensor(&[out, inp], 0.0, ws / (inp as f64 / 64.0).sqrt().max(1.0))?;
        let bias = if bias {
            Some(rng.tensor(&[out], 0.0, ws)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    };
    let norm = |rng: &mut Rng| -> Result<Norm, Error> {
        Ok(Norm {
            weight: rng.tensor(&[d], 1.0, init.gain_std)?,
            bias: if gpt2 {
                Some(rng.tensor(&[d], 0.0, init.gain_std)?)
            } else {
                None
            },
        })
    };
    let depth = |rng: &mut Rng| -> Result<Option<DepthQuery>, Error> {
        if cfg.attnres.is_none() {
            return Ok(None);
        }
        Ok(Some(DepthQuery {
            query: rng.tensor(&[d], 0.0, init.query_std)?,
            key_gain: rng.tensor(&[d], 1.0, init.gain_std)?,
        }))
    };
    let embed = rng.tensor(&[cfg.vocab_size, d], 0.0, ws.max(0.02))?;
    let positions = if gpt2 {
        Some(rng.tensor(&[cfg.max_positions, d], 0.0, ws.max(0.01))?)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for _ in 0..cfg.num_layers {
        let attn_res = depth(&mut rng)?;
        let attn_norm = norm(&mut rng)?;
        let q = lin(&mut rng, q_out, d, cfg.qkv_bias)?;
        let k = lin(&mut rng, kv_out, d, cfg.qkv_bias)?;
        let v = lin(&mut rng, kv_out, d, cfg.qkv_bias)?;
        let o = lin(&mut rng, d, q_out, cfg.proj_bias)?;
        let mlp_res = depth(&mut rng)?;
        let mlp_norm = norm(&mut rng)?;
        let mlp = if gpt2 {
            Mlp::Gelu {
                fc: lin(&mut rng, ff, d, true)?,
                proj: lin(&mut rng, d, ff, true)?,
            }
        } else {
            Mlp::SwiGlu {
                gate: lin(&mut rng, ff, d, false)?,
                up: lin(&mut rng, ff, d, false)?,
                down: lin(&mut rng, d, ff, false)?,
            }
        };
        layers.push(Layer {
            attn_norm,
            q,
            k,
            v,
            o,
            mlp_norm,
            mlp,
            attn_res,
            mlp_res,
        });
    }
    let final_res = depth(&mut rng)?;
    let final_norm = norm(&mut rng)?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(rng.tensor(&[cfg.vocab_size, d], 0.0, ws)?)
    };
    Ok(Weights {
        embed,
        positions,
        layers,
        final_norm,
        lm_head,
        final_res,
    })
}

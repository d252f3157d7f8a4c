//! Training small models on the CPU with candle: the demo checkpoints (a PreNorm baseline, Full
//! and Block AttnRes) are trained here, so the app shows depth weights that mean something.

pub mod bpe;
pub mod optim;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::random::Rng;
use crate::model::save::{named_tensors, write_safetensors, StoreDtype};
use crate::model::weights::ParamGroup;
use crate::model::{
    AttnResConfig, AttnResMode, DepthQuery, Layer, Linear, Mlp, ModelConfig, Norm, Weights,
};
use crate::reference::{forward, ops};
use optim::{AdamW, Param};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Invalid(String),
    #[error("resume state {}: {reason}", path.display())]
    Resume { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error("training step failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// How sublayer inputs are formed in the trained model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum Arch {
    Baseline,
    Full,
    Block { block_size: usize },
}

/// Everything that determines a training run (saved with the checkpoint and the resume state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    pub arch: Arch,
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub warmup: usize,
    pub clip: f64,
    pub seed: u64,
    /// Evaluate, log per-layer gradient norms and save resume state every this many steps.
    pub eval_every: usize,
}

impl TrainSpec {
    /// The model this run trains (a `llama` baseline or an `attnres` model), tied embeddings.
    pub fn model_config(&self, vocab_size: usize) -> Result<ModelConfig, Error> {
        if !self.dim.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::Invalid(format!(
                "--dim {} must be a multiple of --heads {}, and --heads of --kv-heads {}",
                self.dim, self.heads, self.kv_heads
            )));
        }
        if self.layers == 0 || self.seq_len < 2 || self.batch == 0 || self.steps == 0 {
            return Err(Error::Invalid(
                "layers, batch and steps must be >= 1, seq_len >= 2".into(),
            ));
        }
        let attnres = match self.arch {
            Arch::Baseline => None,
            Arch::Full => Some(AttnResConfig {
                mode: AttnResMode::Full,
                eps: 1e-6,
            }),
            Arch::Block { block_size } if block_size >= 1 => Some(AttnResConfig {
                mode: AttnResMode::Block { block_size },
                eps: 1e-6,
            }),
            Arch::Block { .. } => return Err(Error::Invalid("--block-size must be >= 1".into())),
        };
        let mut cfg = ModelConfig::from_json(
            &serde_json::json!({
                "model_type": "llama",
                "vocab_size": vocab_size, "hidden_size": self.dim, "intermediate_size": self.ffn,
                "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads, "max_position_embeddings": self.seq_len,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
                "torch_dtype": "float16"
            }),
            "training spec",
        )?;
        if attnres.is_some() {
            cfg.model_type = "attnres".into();
            cfg.attnres = attnres;
        }
        Ok(cfg)
    }
}

/// Initial weights: N(0, 0.02) matrices, residual projections scaled by 1/sqrt(2L) (GPT-2),
/// unit gains, and AttnRes pseudo-queries at zero (uniform depth weights at the start, as the
/// report prescribes).
pub fn init_weights(cfg: &ModelConfig, seed: u64) -> Result<Weights, Error> {
    let mut rng = Rng::new(seed);
    let d = cfg.hidden_size;
    let std = 0.02;
    let proj_std = std / ((2 * cfg.num_layers) as f64).sqrt();
    let ones = || Tensor::ones(d, DType::F32, &Device::Cpu);
    let zeros = || Tensor::zeros(d, DType::F32, &Device::Cpu);
    let depth = || -> Result<Option<DepthQuery>, Error> {
        Ok(match cfg.attnres {
            Some(_) => Some(DepthQuery {
                query: zeros()?,
                key_gain: ones()?,
            }),
            None => None,
        })
    };
    let lin = |rng: &mut Rng, out: usize, inp: usize, s: f64| -> Result<Linear, Error> {
        Ok(Linear::new(rng.tensor(&[out, inp], 0.0, s)?, None))
    };
    let embed = rng.tensor(&[cfg.vocab_size, d], 0.0, std)?;
    let (q_out, kv_out, ff) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for _ in 0..cfg.num_layers {
        layers.push(Layer {
            attn_norm: Norm {
                weight: ones()?,
                bias: None,
            },
            q: lin(&mut rng, q_out, d, std)?,
            k: lin(&mut rng, kv_out, d, std)?,
            v: lin(&mut rng, kv_out, d, std)?,
            o: lin(&mut rng, d, q_out, proj_std)?,
            mlp_norm: Norm {
                weight: ones()?,
                bias: None,
            },
            mlp: Mlp::SwiGlu {
                gate: lin(&mut rng, ff, d, std)?,
                up: lin(&mut rng, ff, d, std)?,
                down: lin(&mut rng, d, ff, proj_std)?,
            },
            attn_res: depth()?,
            mlp_res: depth()?,
        });
    }
    Ok(Weights {
        embed,
        positions: None,
        layers,
        final_norm: Norm {
            weight: ones()?,
            bias: None,
        },
        lm_head: None,
        final_res: depth()?,
    })
}

/// Mean cross-entropy of `logits` `[N, V]` against `targets` `[N]`.
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
    let t = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), logits.device())?;
    let picked = logits.gather(&t, 1)?.squeeze(1)?;
    (ops::log_sum_exp(logits)? - picked)?.mean_all()
}

/// Mean next-token loss of a model over `ids`, in non-overlapping windows of `seq_len + 1`
/// tokens (the held-out evaluation the model card reports).
pub fn eval_loss(
    cfg: &ModelConfig,
    w: &Weights,
    ids: &[u32],
    seq_len: usize,
    max_windows: usize,
) -> Result<f64, Error> {
    let windows: Vec<&[u32]> = ids
        .windows(seq_len + 1)
        .step_by(seq_len)
        .take(max_windows)
        .collect();
    if windows.is_empty() {
        return Err(Error::Invalid(format!(
            "evaluation text has fewer than {} tokens",
            seq_len + 1
        )));
    }
    let mut total = 0f64;
    for group in windows.chunks(16) {
        let inputs: Vec<u32> = group
            .iter()
            .flat_map(|w| w[..seq_len].iter().copied())
            .collect();
        let targets: Vec<u32> = group.iter().flat_map(|w| w[1..].iter().copied()).collect();
        let logits = forward::logits_batch(cfg, w, &inputs, seq_len)?;
        total +=
            f64::from(cross_entropy(&logits, &targets)?.to_scalar::<f32>()?) * group.len() as f64;
    }
    Ok(total / windows.len() as f64)
}

/// One logged step of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    /// Gradient norm of each group: embedding, L0 .. L{L-1}, head (before clipping).
    pub group_grad_norms: Vec<f64>,
}

/// The training log as CSV (what the app draws as the report's training-dynamics figure).
pub fn log_csv(rows: &[LogRow], layers: usize) -> String {
    let mut s = String::from("step,train_loss,val_loss,lr,grad_norm,grad_norm_embedding");
    for i in 0..layers {
        s.push_str(&format!(",grad_norm_L{i}"));
    }
    s.push_str(",grad_norm_head\n");
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{},{:.6e},{:.6e}",
            r.step,
            r.train_loss,
            r.val_loss.map(|v| format!("{v:.6}")).unwrap_or_default(),
            r.lr,
            r.grad_norm
        ));
        for g in &r.group_grad_norms {
            s.push_str(&format!(",{g:.6e}"));
        }
        s.push('\n');
    }
    s
}

/// Reports training progress (the CLI draws a bar with loss and tokens/s).
pub trait TrainObserver {
    fn step(&self, step: usize, total: usize, loss: f64, tokens_per_second: f64);
    fn note(&self, message: &str);
}

/// Token streams to train and evaluate on.
pub struct Data {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

/// Where a run writes: the checkpoint, its CSV log, and the resume state.
pub struct Outputs {
    pub checkpoint: PathBuf,
    /// Stored in the checkpoint's metadata; `None` for byte-level ids (byte fallback).
    pub tokenizer_json: Option<String>,
}

impl Outputs {
    pub fn log_path(&self) -> PathBuf {
        self.checkpoint.with_extension("train.csv")
    }
    pub fn state_path(&self) -> PathBuf {
        self.checkpoint.with_extension("state.safetensors")
    }
}

/// What a finished (or interrupted) run reports.
pub struct Summary {
    pub steps_done: usize,
    pub interrupted: bool,
    pub final_train_loss: f64,
    pub wall_seconds: f64,
    pub log: Vec<LogRow>,
}

const STATE_SPEC_KEY: &str = "depthlens.train.spec";
const STATE_STEP_KEY: &str = "depthlens.train.step";
const STATE_RNG_KEY: &str = "depthlens.train.rng";
const STATE_LOG_KEY: &str = "depthlens.train.log";
const STATE_ELAPSED_KEY: &str = "depthlens.train.elapsed";
/// Metadata key under which a trained checkpoint carries its training log (CSV).
pub const TRAINING_LOG_KEY: &str = crate::model::TRAINING_LOG_METADATA_KEY;
/// Metadata key under which a trained checkpoint carries its training spec (JSON).
pub const TRAINING_SPEC_KEY: &str = "depthlens.training_spec";

fn param_group_index(g: ParamGroup, layers: usize) -> usize {
    match g {
        ParamGroup::Embedding => 0,
        ParamGroup::Layer(i) => 1 + i,
        ParamGroup::Head => 1 + layers,
    }
}

struct Run {
    params: Vec<Param>,
    groups: Vec<ParamGroup>,
    weights: Weights,
    step: usize,
    rng: Rng,
    log: Vec<LogRow>,
    elapsed_before: f64,
}

fn fresh_run(cfg: &ModelConfig, spec: &TrainSpec) -> Result<Run, Error> {
    let init = init_weights(cfg, spec.seed)?;
    let (params, groups, weights) = make_params(&init, None)?;
    Ok(Run {
        params,
        groups,
        weights,
        step: 0,
        rng: Rng::new(spec.seed.wrapping_add(1)),
        log: Vec::new(),
        elapsed_before: 0.0,
    })
}

/// Variables for every tensor of `w` (moments zero, or taken from `moments`).
fn make_params(
    w: &Weights,
    moments: Option<&[(Tensor, Tensor)]>,
) -> Result<(Vec<Param>, Vec<ParamGroup>, Weights), Error> {
    let mut params = Vec::new();
    let mut groups = Vec::new();
    let weights = w.map_tensors(&mut |group, t| {
        let var = Var::from_tensor(t)?;
        let tensor = var.as_tensor().clone();
        let (m, v) = match moments.and_then(|m| m.get(params.len())) {
            Some((m, v)) => (m.clone(), v.clone()),
            None => (t.zeros_like()?, t.zeros_like()?),
        };
        params.push(Param {
            decay: t.rank() >= 2,
            var,
            m,
            v,
        });
        groups.push(group);
        Ok(tensor)
    })?;
    Ok((params, groups, weights))
}

fn save_state(path: &Path, spec: &TrainSpec, run: &Run, elapsed: f64) -> Result<(), Error> {
    let mut tensors = Vec::new();
    for (i, p) in run.params.iter().enumerate() {
        tensors.push((format!("w.{i}"), p.var.as_tensor().clone()));
        tensors.push((format!("m.{i}"), p.m.clone()));
        tensors.push((format!("v.{i}"), p.v.clone()));
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        STATE_SPEC_KEY.to_string(),
        serde_json::to_string(spec).unwrap_or_default(),
    );
    meta.insert(STATE_STEP_KEY.to_string(), run.step.to_string());
    meta.insert(STATE_RNG_KEY.to_string(), run.rng.state().to_string());
    meta.insert(
        STATE_LOG_KEY.to_string(),
        serde_json::to_string(&run.log).unwrap_or_default(),
    );
    meta.insert(STATE_ELAPSED_KEY.to_string(), elapsed.to_string());
    write_safetensors(path, &tensors, StoreDtype::F32, Some(meta))?;
    Ok(())
}

fn load_state(path: &Path, spec: &TrainSpec, cfg: &ModelConfig) -> Result<Run, Error> {
    let bad = |reason: String| Error::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let store = crate::model::store::TensorStore::open(&[path.to_path_buf()], None)?;
    let meta = store.file_metadata().cloned().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("metadata `{k}` missing")))
    };
    let saved: TrainSpec =
        serde_json::from_str(&get(STATE_SPEC_KEY)?).map_err(|e| bad(e.to_string()))?;
    let comparable = |s: &TrainSpec| TrainSpec {
        steps: 0,
        eval_every: 0,
        ..s.clone()
    };
    if comparable(&saved) != comparable(spec) {
        return Err(bad(format!(
            "was written by a different run ({saved:?}); use the same flags"
        )));
    }
    let step: usize = get(STATE_STEP_KEY)?
        .parse()
        .map_err(|_| bad("bad step".into()))?;
    let rng: u64 = get(STATE_RNG_KEY)?
        .parse()
        .map_err(|_| bad("bad rng state".into()))?;
    let elapsed: f64 = get(STATE_ELAPSED_KEY)?.parse().unwrap_or(0.0);
    let log: Vec<LogRow> =
        serde_json::from_str(&get(STATE_LOG_KEY)?).map_err(|e| bad(e.to_string()))?;
    // Shapes come from a fresh init of the same config.
    let template = init_weights(cfg, spec.seed)?;
    let mut i = 0;
    let mut moments = Vec::new();
    let weights = template.map_tensors(&mut |_, t| {
        let shape = t.dims().to_vec();
        let load = |name: String| store.load_f32(&name, &shape).map(|(t, _)| t);
        let w = load(format!("w.{i}")).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let m = load(format!("m.{i}")).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let v = load(format!("v.{i}")).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        moments.push((m, v));
        i += 1;
        Ok(w)
    })?;
    let (params, groups, weights) = make_params(&weights, Some(&moments))?;
    Ok(Run {
        params,
        groups,
        weights,
        step,
        rng: Rng::from_state(rng),
        log,
        elapsed_before: elapsed,
    })
}

fn save_checkpoint(
    out: &Outputs,
    cfg: &ModelConfig,
    spec: &TrainSpec,
    run: &Run,
) -> Result<(), Error> {
    let csv = log_csv(&run.log, cfg.num_layers);
    std::fs::write(out.log_path(), &csv).map_err(|source| Error::Io {
        path: out.log_path(),
        source,
    })?;
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        crate::model::CONFIG_METADATA_KEY.to_string(),
        cfg.to_hf_json().to_string(),
    );
    if let Some(json) = &out.tokenizer_json {
        meta.insert(
            crate::model::TOKENIZER_METADATA_KEY.to_string(),
            json.clone(),
        );
    }
    meta.insert(TRAINING_LOG_KEY.to_string(), csv);
    meta.insert(
        TRAINING_SPEC_KEY.to_string(),
        serde_json::to_string(spec).unwrap_or_default(),
    );
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(
        &out.checkpoint,
        &named_tensors(cfg, &run.weights)?,
        StoreDtype::F16,
        Some(meta),
    )?;
    Ok(())
}

/// Train (or resume) and save. `stop` is polled every step: when set (Ctrl-C), the run saves its
/// checkpoint and resume state and returns with `interrupted`.
pub fn train(
    spec: &TrainSpec,
    data: &Data,
    vocab_size: usize,
    out: &Outputs,
    resume: bool,
    stop: &AtomicBool,
    observer: &dyn TrainObserver,
) -> Result<Summary, Error> {
    let cfg = spec.model_config(vocab_size)?;
    if data.train.len() <= spec.seq_len + 1 {
        return Err(Error::Invalid(
            "the training corpus is shorter than one window".into(),
        ));
    }
    if let Some(&bad) = data
        .train
        .iter()
        .chain(&data.val)
        .find(|&&id| id as usize >= vocab_size)
    {
        return Err(Error::Invalid(format!(
            "token id {bad} is outside the vocabulary ({vocab_size})"
        )));
    }
    let mut run = if resume && out.state_path().is_file() {
        let r = load_state(&out.state_path(), spec, &cfg)?;
        observer.note(&format!(
            "resuming from step {} ({})",
            r.step,
            out.state_path().display()
        ));
        r
    } else {
        if resume {
            observer.note(&format!(
                "no resume state at {}; starting fresh",
                out.state_path().display()
            ));
        }
        fresh_run(&cfg, spec)?
    };
    let adam = AdamW::default();
    let started = Instant::now();
    let n_groups = cfg.num_layers + 2;
    let val_windows = 16;
    let mut last_loss = f64::NAN;
    let mut interrupted = false;
    while run.step < spec.steps {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let step_started = Instant::now();
        let max_start = data.train.len() - spec.seq_len - 1;
        let mut inputs = Vec::with_capacity(spec.batch * spec.seq_len);
        let mut targets = Vec::with_capacity(spec.batch * spec.seq_len);
        for _ in 0..spec.batch {
            let s = (run.rng.next_u64() % (max_start as u64 + 1)) as usize;
            inputs.extend_from_slice(&data.train[s..s + spec.seq_len]);
            targets.extend_from_slice(&data.train[s + 1..s + spec.seq_len + 1]);
        }
        let logits = forward::logits_batch(&cfg, &run.weights, &inputs, spec.seq_len)?;
        let loss = cross_entropy(&logits, &targets)?;
        let grads = loss.backward()?;
        last_loss = f64::from(loss.to_scalar::<f32>()?);
        let mut group_sq = vec![0f64; n_groups];
        for (p, g) in run.params.iter().zip(&run.groups) {
            if let Some(grad) = grads.get(p.var.as_tensor()) {
                group_sq[param_group_index(*g, cfg.num_layers)] +=
                    f64::from(grad.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let grad_norm = group_sq.iter().sum::<f64>().sqrt();
        let scale = if grad_norm > spec.clip {
            spec.clip / grad_norm
        } else {
            1.0
        };
        let lr = optim::learning_rate(
            run.step,
            spec.steps,
            spec.warmup,
            spec.lr,
            spec.min_lr_ratio,
        );
        run.step += 1;
        adam.step(&mut run.params, &grads, lr, run.step, scale)?;
        if !last_loss.is_finite() {
            return Err(Error::Invalid(format!(
                "loss became {last_loss} at step {}; lower --lr",
                run.step
            )));
        }
        let tokens_per_second =
            (spec.batch * spec.seq_len) as f64 / step_started.elapsed().as_secs_f64();
        observer.step(run.step, spec.steps, last_loss, tokens_per_second);
        let log_now = run.step % spec.eval_every == 0 || run.step == spec.steps || run.step == 1;
        if log_now {
            let val_loss = if data.val.len() > spec.seq_len {
                Some(eval_loss(
                    &cfg,
                    &run.weights,
                    &data.val,
                    spec.seq_len,
                    val_windows,
                )?)
            } else {
                None
            };
            run.log.push(LogRow {
                step: run.step,
                train_loss: last_loss,
                val_loss,
                lr,
                grad_norm,
                group_grad_norms: group_sq.iter().map(|s| s.sqrt()).collect(),
            });
            let elapsed = run.elapsed_before + started.elapsed().as_secs_f64();
            save_state(&out.state_path(), spec, &run, elapsed)?;
        }
    }
    let wall_seconds = run.elapsed_before + started.elapsed().as_secs_f64();
    save_state(&out.state_path(), spec, &run, wall_seconds)?;
    save_checkpoint(out, &cfg, spec, &run)?;
    Ok(Summary {
        steps_done: run.step,
        interrupted,
        final_train_loss: last_loss,
        wall_seconds,
        log: run.log,
    })
}

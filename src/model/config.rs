//! `config.json` (as written by transformers 4.x and 5.x, or our `depthlens.config` metadata) into
//! one [`ModelConfig`] that every forward reads.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Error;

/// The base architecture family. AttnRes models are Llama-based (ATTNRES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama, Mistral, SmolLM, TinyLlama, Qwen2 (and AttnRes on top of them).
    Llama,
    /// GPT-2: LayerNorm, learned positions, GELU, fused QKV Conv1D.
    Gpt2,
}

/// How a sublayer's input is formed from the earlier sources.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum AttnResMode {
    /// Softmax over the embedding and every earlier sublayer output.
    Full,
    /// Softmax over completed block sums and the running partial of the current block.
    Block { block_size: usize },
}

/// The AttnRes part of a config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AttnResConfig {
    #[serde(flatten)]
    pub mode: AttnResMode,
    /// Epsilon of the key RMSNorm.
    pub eps: f64,
}

/// Normalisation used by every PreNorm and the final norm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NormKind {
    Rms { eps: f64 },
    Layer { eps: f64 },
}

/// The sublayer MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `down(silu(gate(x)) * up(x))` (Llama family).
    SwiGlu,
    /// `proj(gelu_tanh(fc(x)))` (GPT-2 `gelu_new`).
    GeluTanh,
    /// `proj(gelu_erf(fc(x)))` (GPT-2 configs that say `gelu`).
    GeluErf,
}

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// Everything the forward needs to know about a model, whatever file it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// `model_type` as written in the file (`llama`, `qwen2`, `gpt2`, `attnres`, ...).
    pub model_type: String,
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
    pub norm: NormKind,
    pub activation: Activation,
    /// `None` for learned absolute positions (GPT-2).
    pub rope: Option<Rope>,
    /// Biases on q, k, v (Qwen2, GPT-2).
    pub qkv_bias: bool,
    /// Biases on the attention output and MLP projections (GPT-2).
    pub proj_bias: bool,
    pub tie_word_embeddings: bool,
    /// Mistral-style local attention: a query sees keys less than this many positions back.
    pub sliding_window: Option<usize>,
    /// `torch_dtype` / `dtype` as declared (informational: weights are computed in f32).
    pub declared_dtype: Option<String>,
    pub attnres: Option<AttnResConfig>,
}

impl ModelConfig {
    /// Number of sublayers (attention and MLP each count one).
    pub fn num_sublayers(&self) -> usize {
        2 * self.num_layers
    }

    /// Parse a Hugging Face style config. `origin` names the file in errors.
    pub fn from_json(value: &Value, origin: &str) -> Result<Self, Error> {
        let obj = value.as_object().ok_or_else(|| Error::Config {
            origin: origin.to_string(),
            field: "(root)".into(),
            reason: "expected a JSON object".into(),
        })?;
        let fields = Fields { obj, origin };
        let model_type = fields.string("model_type")?;
        match model_type.as_str() {
            "llama" | "mistral" | "qwen2" | "attnres" => parse_llama_like(&fields, model_type),
            "gpt2" => parse_gpt2(&fields),
            other => Err(Error::UnknownArchitecture {
                origin: origin.to_string(),
                model_type: other.to_string(),
            }),
        }
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            origin: self.origin.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<String, Error> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err(key, "expected a string")),
            None => Err(self.err(key, "missing")),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, Error> {
        self.opt_usize(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn positive(&self, key: &str) -> Result<usize, Error> {
        let n = self.usize(key)?;
        if n == 0 {
            return Err(self.err(key, "must be at least 1"));
        }
        Ok(n)
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn declared_dtype(&self) -> Option<String> {
        ["torch_dtype", "dtype"]
            .iter()
            .find_map(|k| self.get(k).and_then(Value::as_str).map(str::to_string))
    }

    /// Keys whose presence would change the math in a way this forward does not implement.
    fn refuse_if_set(&self, key: &str, harmless: &[Value], what: &str) -> Result<(), Error> {
        match self.get(key) {
            Some(v) if !harmless.contains(v) => Err(self.err(
                key,
                format!("{what} is not supported (value {v}); depthlens would compute a different model"),
            )),
            _ => Ok(()),
        }
    }
}

fn parse_llama_like(f: &Fields, model_type: String) -> Result<ModelConfig, Error> {
    let hidden_size = f.positive("hidden_size")?;
    let num_heads = f.positive("num_attention_heads")?;
    let num_kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
        ));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(h) if h > 0 => h,
        _ => {
            if hidden_size % num_heads != 0 {
                return Err(f.err(
                    "head_dim",
                    "missing, and hidden_size is not a multiple of num_attention_heads",
                ));
            }
            hidden_size / num_heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(f.err(
            "head_dim",
            format!("{head_dim} is odd; RoPE needs an even head_dim"),
        ));
    }
    let act = f
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" && act != "swish" {
        return Err(f.err(
            "hidden_act",
            format!("`{act}` is not supported (expected silu)"),
        ));
    }
    f.refuse_if_set("mlp_bias", &[Value::Bool(false)], "an MLP bias")?;
    f.refuse_if_set(
        "pretraining_tp",
        &[1.into()],
        "tensor-parallel sliced linears",
    )?;
    let qkv_bias = match model_type.as_str() {
        // Qwen2 always has q/k/v biases; Llama's `attention_bias` also puts one on o_proj.
        "qwen2" => true,
        _ => {
            f.refuse_if_set("attention_bias", &[Value::Bool(false)], "an attention bias")?;
            false
        }
    };
    let sliding_window = match model_type.as_str() {
        "mistral" => f.opt_usize("sliding_window")?,
        "qwen2" if f.opt_bool("use_sliding_window")? == Some(true) => {
            // Qwen2 applies the window only from `max_window_layers` on; we do not model that split.
            return Err(f.err(
                "use_sliding_window",
                "Qwen2 sliding-window attention is not supported; set it to false",
            ));
        }
        _ => None,
    };
    let attnres = if model_type == "attnres" {
        Some(parse_attnres(f)?)
    } else {
        for key in ["attnres_mode", "attnres_block_size"] {
            if f.get(key).is_some() {
                return Err(f.err(
                    key,
                    format!("set, but model_type is `{model_type}`; AttnRes checkpoints use model_type `attnres`"),
                ));
            }
        }
        None
    };
    Ok(ModelConfig {
        family: Family::Llama,
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_layers: f.positive("num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim,
        max_positions: f.positive("max_position_embeddings")?,
        norm: NormKind::Rms {
            eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        },
        activation: Activation::SwiGlu,
        rope: Some(parse_rope(f)?),
        qkv_bias,
        proj_bias: false,
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        sliding_window,
        declared_dtype: f.declared_dtype(),
        attnres,
        model_type,
    })
}

/// RoPE settings: transformers 4.x writes `rope_theta` + `rope_scaling` at the top level, 5.x
/// nests both in `rope_parameters`.
fn parse_rope(f: &Fields) -> Result<Rope, Error> {
    let params = f.get("rope_parameters").and_then(Value::as_object);
    let scaling_obj = params.or_else(|| f.get("rope_scaling").and_then(Value::as_object));
    let theta = match params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
    {
        Some(t) => t,
        None => f.opt_f64("rope_theta")?.unwrap_or(10_000.0),
    };
    let scaling = match scaling_obj {
        None => RopeScaling::None,
        Some(s) => {
            let field = if params.is_some() {
                "rope_parameters"
            } else {
                "rope_scaling"
            };
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            let num = |key: &str| -> Result<f64, Error> {
                s.get(key)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| f.err(&format!("{field}.{key}"), "missing or not a number"))
            };
            match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: num("factor")?,
                },
                "llama3" => RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?
                        as usize,
                },
                other => {
                    return Err(f.err(
                        &format!("{field}.rope_type"),
                        format!("`{other}` is not supported (supported: default, linear, llama3)"),
                    ))
                }
            }
        }
    };
    if !(theta.is_finite() && theta > 0.0) {
        return Err(f.err("rope_theta", format!("{theta} is not a positive number")));
    }
    Ok(Rope { theta, scaling })
}

fn parse_attnres(f: &Fields) -> Result<AttnResConfig, Error> {
    // Variants of public reproductions that mean something else than ATTNRES.md: refuse by name.
    for (key, what) in [
        ("attnres_recency_bias", "a recency bias on depth logits"),
        ("attnres_gate", "sigmoid gates instead of a depth softmax"),
        (
            "attnres_zero_partial",
            "a zero partial source at the start of a block",
        ),
        (
            "attnres_cumulative_sources",
            "cumulative residual states as sources",
        ),
        (
            "attnres_norm_final_hidden",
            "norm(h_L) into the head instead of a final aggregation",
        ),
    ] {
        f.refuse_if_set(key, &[Value::Bool(false)], what)?;
    }
    if let Some(src) = f.get("attnres_sources") {
        if src.as_str() != Some("outputs") {
            return Err(f.err(
                "attnres_sources",
                format!("{src}: only sublayer outputs as sources (\"outputs\") is implemented"),
            ));
        }
    }
    let mode = match f.string("attnres_mode")?.as_str() {
        "full" => AttnResMode::Full,
        "block" => AttnResMode::Block {
            block_size: f.positive("attnres_block_size")?,
        },
        other => {
            return Err(f.err(
                "attnres_mode",
                format!("`{other}` is not a mode (expected \"full\" or \"block\")"),
            ))
        }
    };
    let eps = f.opt_f64("attnres_eps")?.unwrap_or(1e-6);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(f.err("attnres_eps", format!("{eps} is not a non-negative number")));
    }
    Ok(AttnResConfig { mode, eps })
}

fn parse_gpt2(f: &Fields) -> Result<ModelConfig, Error> {
    let hidden_size = f.positive("n_embd")?;
    let num_heads = f.positive("n_head")?;
    if hidden_size % num_heads != 0 {
        return Err(f.err(
            "n_head",
            format!("{num_heads} does not divide n_embd = {hidden_size}"),
        ));
    }
    let activation = match f
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new")
    {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        other => {
            return Err(f.err(
                "activation_function",
                format!("`{other}` is not supported (gelu_new, gelu_pytorch_tanh, gelu)"),
            ))
        }
    };
    f.refuse_if_set(
        "scale_attn_by_inverse_layer_idx",
        &[Value::Bool(false)],
        "scaling attention by 1/layer_idx",
    )?;
    f.refuse_if_set(
        "scale_attn_weights",
        &[Value::Bool(true)],
        "unscaled attention logits",
    )?;
    f.refuse_if_set(
        "add_cross_attention",
        &[Value::Bool(false)],
        "cross-attention",
    )?;
    Ok(ModelConfig {
        model_type: "gpt2".into(),
        family: Family::Gpt2,
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
        num_layers: f.positive("n_layer")?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim: hidden_size / num_heads,
        max_positions: f.positive("n_positions")?,
        norm: NormKind::Layer {
            eps: f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        },
        activation,
        rope: None,
        qkv_bias: true,
        proj_bias: true,
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(true),
        sliding_window: None,
        declared_dtype: f.declared_dtype(),
        attnres: None,
    })
}

impl ModelConfig {
    /// The config as a Hugging Face style `config.json` (what [`ModelConfig::from_json`] reads).
    pub fn to_hf_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("model_type", self.model_type.clone().into());
        put("vocab_size", self.vocab_size.into());
        put("tie_word_embeddings", self.tie_word_embeddings.into());
        if let Some(dtype) = &self.declared_dtype {
            put("torch_dtype", dtype.clone().into());
        }
        match self.family {
            Family::Gpt2 => {
                put("architectures", serde_json::json!(["GPT2LMHeadModel"]));
                put("n_embd", self.hidden_size.into());
                put("n_layer", self.num_layers.into());
                put("n_head", self.num_heads.into());
                put("n_inner", self.intermediate_size.into());
                put("n_positions", self.max_positions.into());
                let eps = match self.norm {
                    NormKind::Layer { eps } | NormKind::Rms { eps } => eps,
                };
                put("layer_norm_epsilon", eps.into());
                put(
                    "activation_function",
                    match self.activation {
                        Activation::GeluErf => "gelu",
                        _ => "gelu_new",
                    }
                    .into(),
                );
            }
            Family::Llama => {
                put("hidden_size", self.hidden_size.into());
                put("intermediate_size", self.intermediate_size.into());
                put("num_hidden_layers", self.num_layers.into());
                put("num_attention_heads", self.num_heads.into());
                put("num_key_value_heads", self.num_kv_heads.into());
                put("head_dim", self.head_dim.into());
                put("max_position_embeddings", self.max_positions.into());
                put("hidden_act", "silu".into());
                let eps = match self.norm {
                    NormKind::Layer { eps } | NormKind::Rms { eps } => eps,
                };
                put("rms_norm_eps", eps.into());
                if let Some(rope) = &self.rope {
                    put("rope_theta", rope.theta.into());
                    match rope.scaling {
                        RopeScaling::None => {}
                        RopeScaling::Linear { factor } => put(
                            "rope_scaling",
                            serde_json::json!({"rope_type": "linear", "factor": factor}),
                        ),
                        RopeScaling::Llama3 {
                            factor,
                            low_freq_factor,
                            high_freq_factor,
                            original_max_position_embeddings,
                        } => put(
                            "rope_scaling",
                            serde_json::json!({
                                "rope_type": "llama3", "factor": factor,
                                "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                                "original_max_position_embeddings": original_max_position_embeddings
                            }),
                        ),
                    }
                }
                if let Some(w) = self.sliding_window {
                    put("sliding_window", w.into());
                }
                if let Some(a) = &self.attnres {
                    put("attnres_eps", a.eps.into());
                    match a.mode {
                        AttnResMode::Full => put("attnres_mode", "full".into()),
                        AttnResMode::Block { block_size } => {
                            put("attnres_mode", "block".into());
                            put("attnres_block_size", block_size.into());
                        }
                    }
                }
            }
        }
        Value::Object(m)
    }
}

//! Checkpoints: configs, tensors, tokenizers, and the weights of each architecture family.

mod attnres;
mod checkpoint;
pub mod config;
pub mod gguf;
mod gguf_tokenizer;
mod gpt2;
mod llama;
mod loader;
pub mod random;
pub mod save;
pub mod store;
pub mod tokenizer;
pub mod weights;

use std::path::PathBuf;

pub use checkpoint::{
    Checkpoint, CheckpointLayout, CONFIG_METADATA_KEY, TOKENIZER_METADATA_KEY,
    TRAINING_LOG_METADATA_KEY,
};
pub use config::{
    Activation, AttnResConfig, AttnResMode, Family, ModelConfig, NormKind, Rope, RopeScaling,
};
pub use tokenizer::{TextTokenizer, Token, TokenizerKind};
pub use weights::{DepthQuery, Layer, Linear, Mlp, Norm, Weights};

/// Why a checkpoint could not be opened. Every message names the file, tensor or field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },
    #[error("{origin}: config field `{field}`: {reason}")]
    Config {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("{origin}: model_type `{model_type}` is not supported (supported: attnres, llama, mistral, qwen2, gpt2)")]
    UnknownArchitecture { origin: String, model_type: String },
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}`: shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}`: dtype {dtype} is not supported (use f32, f16 or bf16 weights)")]
    Dtype { name: String, dtype: String },
    #[error("tensor `{name}`: {reason}")]
    Unsupported { name: String, reason: String },
    #[error("{}: not a valid GGUF file: {reason}", path.display())]
    Gguf { path: PathBuf, reason: String },
    #[error("{}: GGUF general.architecture `{architecture}` is not supported (supported: llama, qwen2)", path.display())]
    GgufArchitecture { path: PathBuf, architecture: String },
    #[error("{}: tokenizer: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

//! Opening a checkpoint: a Hugging Face folder (single file or shards) or one `.safetensors` file
//! that carries its config in `__metadata__`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::config::{Family, ModelConfig};
use super::gguf::{self, GgufFile};
use super::gguf_tokenizer;
use super::loader::{Loader, TensorSource};
use super::store::TensorStore;
use super::tokenizer::TextTokenizer;
use super::weights::Weights;
use super::{gpt2, llama, Error};
use crate::progress::Progress;

/// Metadata key of a single-file checkpoint's config (ATTNRES.md).
pub const CONFIG_METADATA_KEY: &str = "depthlens.config";
/// Metadata key of a single-file checkpoint's tokenizer JSON.
pub const TOKENIZER_METADATA_KEY: &str = "depthlens.tokenizer";
/// Metadata key under which a trained checkpoint carries its training log (CSV).
pub const TRAINING_LOG_METADATA_KEY: &str = "depthlens.training_log";

/// How the checkpoint is laid out on disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointLayout {
    /// One `.safetensors` file with the config in its metadata (or a `config.json` beside it).
    SingleFile { file: PathBuf },
    /// `config.json` + `model.safetensors`.
    Folder { file: PathBuf },
    /// `config.json` + `model.safetensors.index.json` + shards.
    Sharded {
        index: PathBuf,
        shards: Vec<PathBuf>,
    },
    /// One llama.cpp `.gguf` file: config and tokenizer from its metadata, weights dequantised.
    Gguf { file: PathBuf },
}

/// An opened model: config, f32 weights on the CPU, tokenizer, and what we noticed on the way.
pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: CheckpointLayout,
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
    /// Stored dtypes and how many tensors of each.
    pub dtypes: BTreeMap<String, usize>,
    /// Bytes of tensor data on disk.
    pub data_bytes: usize,
    /// Things a researcher should know (NaN weights, tied head mismatch, dequantised GGUF
    /// weights, ...). Never fatal.
    pub warnings: Vec<String>,
    /// Set when the stored weights were quantised (GGUF): which types, and that every number
    /// depthlens shows comes from their f32 dequantisation. Also the first of `warnings`.
    pub quantization: Option<String>,
    /// Token ids that end a generation (`eos_token_id` of the config or GGUF metadata).
    pub eos_token_ids: Vec<u32>,
    /// The training log (CSV as `depthlens train` writes it), from the checkpoint's metadata or
    /// a `.train.csv` beside it.
    pub training_log: Option<String>,
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        origin: path.display().to_string(),
        field: "(file)".into(),
        reason: format!("not valid JSON: {e}"),
    })
}

impl Checkpoint {
    /// Open a folder, a `.safetensors` file or a `.gguf` file. `progress` hears about weight
    /// loading.
    pub fn open(path: &Path, progress: &dyn Progress) -> Result<Self, Error> {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() && looks_like_gguf(path) {
            return Self::open_gguf(path, progress);
        }
        let (layout, store, config_json, config_origin, tokenizer) = if meta.is_dir() {
            open_folder(path)?
        } else {
            open_single_file(path)?
        };
        let config = ModelConfig::from_json(&config_json, &config_origin)?;
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => TextTokenizer::byte_fallback(),
        };
        let mut dtypes = BTreeMap::new();
        for e in store.entries() {
            *dtypes
                .entry(format!("{:?}", e.dtype).to_lowercase())
                .or_insert(0) += 1;
        }
        let eos_token_ids = eos_ids(&config_json, path, &layout);
        let training_log = store
            .file_metadata()
            .and_then(|m| m.get(TRAINING_LOG_METADATA_KEY).cloned())
            .or_else(|| std::fs::read_to_string(path.with_extension("train.csv")).ok());
        let parts = Parts {
            path,
            layout,
            config,
            tokenizer,
            dtypes,
            data_bytes: store.data_bytes(),
            warnings: Vec::new(),
            quantization: None,
            eos_token_ids,
            training_log,
        };
        parts.build(&store, progress)
    }

    fn open_gguf(path: &Path, progress: &dyn Progress) -> Result<Self, Error> {
        let file = GgufFile::open(path)?;
        let (config_json, origin) = file.config_json()?;
        let config = ModelConfig::from_json(&config_json, &origin)?;
        let mut warnings = Vec::new();
        let quantization = file.quantization_note();
        warnings.extend(quantization.clone());
        let (tokenizer, eos_token_ids) = match gguf_tokenizer::from_gguf(&file)? {
            Some(t) => {
                warnings.extend(t.warnings);
                (t.tokenizer, t.eos_ids)
            }
            None => {
                if config.vocab_size >= 256 {
                    warnings.push(
                        "the GGUF file has no tokenizer.ggml.* metadata: prompts are read as bytes \
                         (id = byte value), which is not this model's vocabulary; use --ids"
                            .into(),
                    );
                }
                (TextTokenizer::byte_fallback(), Vec::new())
            }
        };
        let tensors = file.dequantise(config.num_heads, config.num_kv_heads, progress)?;
        let parts = Parts {
            path,
            layout: CheckpointLayout::Gguf {
                file: path.to_path_buf(),
            },
            config,
            tokenizer,
            dtypes: file.dtypes(),
            data_bytes: file.data_bytes(),
            warnings,
            quantization,
            eos_token_ids,
            training_log: None,
        };
        parts.build(&tensors, progress)
    }
}

/// Everything but the weights; [`Parts::build`] loads those the same way for every format.
struct Parts<'a> {
    path: &'a Path,
    layout: CheckpointLayout,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    dtypes: BTreeMap<String, usize>,
    data_bytes: usize,
    warnings: Vec<String>,
    quantization: Option<String>,
    eos_token_ids: Vec<u32>,
    training_log: Option<String>,
}

impl Parts<'_> {
    fn build(
        self,
        source: &dyn TensorSource,
        progress: &dyn Progress,
    ) -> Result<Checkpoint, Error> {
        let config = self.config;
        let mut loader = Loader::new(source, progress);
        let weights = match config.family {
            Family::Llama => llama::load(&config, &mut loader)?,
            Family::Gpt2 => gpt2::load(&config, &mut loader)?,
        };
        let mut warnings = self.warnings;
        warnings.extend(loader.finish(&config.model_type)?);
        if matches!(self.tokenizer.kind, super::TokenizerKind::ByteFallback)
            && config.vocab_size < 256
        {
            warnings.push(format!(
                "no tokenizer ships with this checkpoint and its vocabulary ({}) is smaller than 256 \
                 bytes: use --ids",
                config.vocab_size
            ));
        }
        Ok(Checkpoint {
            path: self.path.to_path_buf(),
            layout: self.layout,
            config,
            weights,
            tokenizer: self.tokenizer,
            dtypes: self.dtypes,
            data_bytes: self.data_bytes,
            warnings,
            quantization: self.quantization,
            eos_token_ids: self.eos_token_ids,
            training_log: self.training_log,
        })
    }
}

/// A `.gguf` name, or GGUF magic bytes under another name. A `.gguf` file with other bytes still
/// goes to the GGUF reader, whose error then says what is wrong with it.
fn looks_like_gguf(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    ext.eq_ignore_ascii_case("gguf") || gguf::is_gguf(path)
}

/// `eos_token_id` (a number or a list) from `generation_config.json` beside the checkpoint, else
/// from the config.
fn eos_ids(config: &Value, path: &Path, layout: &CheckpointLayout) -> Vec<u32> {
    let parse = |v: Option<&Value>| -> Vec<u32> {
        match v {
            Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|n| n.as_u64().map(|n| n as u32))
                .collect(),
            _ => Vec::new(),
        }
    };
    let dir = match layout {
        CheckpointLayout::SingleFile { file } => file.parent().map(Path::to_path_buf),
        _ => Some(path.to_path_buf()),
    };
    let generation = dir
        .map(|d| d.join("generation_config.json"))
        .filter(|p| p.is_file())
        .and_then(|p| read_json(&p).ok());
    let from_generation = parse(generation.as_ref().and_then(|g| g.get("eos_token_id")));
    if !from_generation.is_empty() {
        return from_generation;
    }
    parse(config.get("eos_token_id"))
}

type Opened = (
    CheckpointLayout,
    TensorStore,
    Value,
    String,
    Option<TextTokenizer>,
);

fn open_folder(dir: &Path) -> Result<Opened, Error> {
    let config_path = dir.join("config.json");
    let index_path = dir.join("model.safetensors.index.json");
    let single_path = dir.join("model.safetensors");
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.is_file() {
        Some(TextTokenizer::from_file(&tokenizer_path)?)
    } else {
        None
    };
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Config {
                origin: index_path.display().to_string(),
                field: "weight_map".into(),
                reason: "missing or not an object".into(),
            })?;
        let mut expected = HashMap::new();
        let mut shards: Vec<PathBuf> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| Error::Config {
                origin: index_path.display().to_string(),
                field: format!("weight_map.{name}"),
                reason: "expected a file name".into(),
            })?;
            let shard = dir.join(file);
            if !shards.contains(&shard) {
                shards.push(shard.clone());
            }
            expected.insert(name.clone(), shard);
        }
        shards.sort();
        let store = TensorStore::open(&shards, Some(&expected))?;
        let config = read_json(&config_path)?;
        let layout = CheckpointLayout::Sharded {
            index: index_path,
            shards,
        };
        return Ok((
            layout,
            store,
            config,
            config_path.display().to_string(),
            tokenizer,
        ));
    }
    if single_path.is_file() {
        let store = TensorStore::open(std::slice::from_ref(&single_path), None)?;
        let (config, origin) = if config_path.is_file() {
            (read_json(&config_path)?, config_path.display().to_string())
        } else {
            config_from_metadata(&store, &single_path)?
        };
        return Ok((
            CheckpointLayout::Folder { file: single_path },
            store,
            config,
            origin,
            tokenizer,
        ));
    }
    Err(Error::NotACheckpoint {
        path: dir.to_path_buf(),
        reason: "no model.safetensors or model.safetensors.index.json in this folder \
                 (GGUF files are opened by path)"
            .into(),
    })
}

fn config_from_metadata(store: &TensorStore, file: &Path) -> Result<(Value, String), Error> {
    let origin = format!("{} (__metadata__.{CONFIG_METADATA_KEY})", file.display());
    let text = store
        .file_metadata()
        .and_then(|m| m.get(CONFIG_METADATA_KEY))
        .ok_or_else(|| Error::NotACheckpoint {
            path: file.to_path_buf(),
            reason: format!(
                "no config: put a config.json beside it or the config JSON under \
                 __metadata__[\"{CONFIG_METADATA_KEY}\"]"
            ),
        })?;
    let value = serde_json::from_str(text).map_err(|e| Error::Config {
        origin: origin.clone(),
        field: "(file)".into(),
        reason: format!("not valid JSON: {e}"),
    })?;
    Ok((value, origin))
}

fn open_single_file(file: &Path) -> Result<Opened, Error> {
    let store = TensorStore::open(&[file.to_path_buf()], None)?;
    let sibling_config = file.parent().map(|p| p.join("config.json"));
    let (config, origin) = match store
        .file_metadata()
        .and_then(|m| m.get(CONFIG_METADATA_KEY))
    {
        Some(_) => config_from_metadata(&store, file)?,
        None => match sibling_config.filter(|p| p.is_file()) {
            Some(p) => (read_json(&p)?, p.display().to_string()),
            None => config_from_metadata(&store, file)?,
        },
    };
    let tokenizer = match store
        .file_metadata()
        .and_then(|m| m.get(TOKENIZER_METADATA_KEY))
    {
        Some(json) => Some(TextTokenizer::from_json_bytes(json.as_bytes(), file)?),
        None => {
            let sibling = file.parent().map(|p| p.join("tokenizer.json"));
            match sibling.filter(|p| p.is_file()) {
                Some(p) => Some(TextTokenizer::from_file(&p)?),
                None => None,
            }
        }
    };
    Ok((
        CheckpointLayout::SingleFile {
            file: file.to_path_buf(),
        },
        store,
        config,
        origin,
        tokenizer,
    ))
}

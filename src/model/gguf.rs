//! GGUF checkpoints (llama.cpp's format, v3; v2 has the same layout): the `llama` and `qwen2`
//! architectures. The metadata becomes a Hugging Face style config, every tensor is dequantised to
//! f32 under its Hugging Face name (llama.cpp's Q/K row permutation undone for `llama`), and the
//! result goes through the same [`Loader`](super::loader::Loader) as a safetensors checkpoint.
//!
//! No cache of dequantised weights: the file is memory-mapped and the tensors are expanded on
//! every core straight from the map. Most of an open is the kernel handing out the f32 memory
//! itself (SmolLM2-135M: 540 MB, ~0.45 s of a ~0.65 s warm open on a busy 2-core VM), which a cache
//! would pay too; opening the same weights from an f32 safetensors file measured slower (~0.75 s).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};
use memmap2::{Mmap, MmapOptions};
use serde_json::{json, Map, Value};

use super::loader::TensorSource;
use super::Error;
use crate::progress::Progress;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Architectures (`general.architecture`) whose tensors map onto the Llama-family forward.
pub const SUPPORTED_ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// Whether `path` holds a GGUF file: by its first four bytes, so a renamed file is still recognised.
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    read.is_ok() && &magic == GGUF_MAGIC
}

/// One tensor's entry in the header, with its byte range in the file already checked.
struct TensorRecord {
    dtype: GgmlDType,
    /// Row-major dims (outermost first, as Hugging Face writes them).
    dims: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened GGUF file: the map, its parsed metadata and its validated tensor table.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    metadata: HashMap<String, gguf_file::Value>,
    tensors: BTreeMap<String, TensorRecord>,
}

fn gguf_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Gguf {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl GgufFile {
    /// Map the file, read its header and check that every tensor lies inside it.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: read-only map; a file changed under us by another process would give wrong
        // numbers, never memory unsafety beyond what any reader of a mutated file sees.
        // `populate`: every tensor is read right away, so fault the pages in one go.
        let mmap =
            unsafe { MmapOptions::new().populate().map(&file) }.map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if mmap.len() < 8 {
            return Err(gguf_error(
                path,
                format!(
                    "the file has {} bytes, fewer than the 8-byte magic and version: truncated",
                    mmap.len()
                ),
            ));
        }
        if &mmap[..4] != GGUF_MAGIC {
            return Err(gguf_error(
                path,
                format!(
                    "wrong magic bytes {:02x?} (a GGUF file starts with \"GGUF\")",
                    &mmap[..4]
                ),
            ));
        }
        let version = u32::from_le_bytes([mmap[4], mmap[5], mmap[6], mmap[7]]);
        if !(2..=3).contains(&version) {
            return Err(gguf_error(
                path,
                format!("GGUF version {version} is not supported (versions 2 and 3 are)"),
            ));
        }
        let content = gguf_file::Content::read(&mut Cursor::new(&mmap[..])).map_err(|e| {
            gguf_error(
                path,
                format!("the header cannot be read (truncated or corrupt): {e}"),
            )
        })?;
        let mut tensors = BTreeMap::new();
        for (name, info) in &content.tensor_infos {
            let record = tensor_record(info, content.tensor_data_offset, mmap.len())
                .map_err(|reason| gguf_error(path, format!("tensor `{name}`: {reason}")))?;
            tensors.insert(name.clone(), record);
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            metadata: content.metadata,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.metadata
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, Error> {
        match self.metadata.get("general.architecture") {
            Some(gguf_file::Value::String(s)) => Ok(s),
            Some(v) => Err(self.config_error(
                "general.architecture",
                format!("expected a string, got {v:?}"),
            )),
            None => Err(self.config_error("general.architecture", "missing")),
        }
    }

    fn config_origin(&self) -> String {
        format!("{} (GGUF metadata)", self.path.display())
    }

    fn config_error(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            origin: self.config_origin(),
            field: key.to_string(),
            reason: reason.into(),
        }
    }

    /// An unsigned integer value of any width (writers differ: u32, u64, i32 ...).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, Error> {
        use gguf_file::Value as V;
        let Some(v) = self.metadata.get(key) else {
            return Ok(None);
        };
        let n = match *v {
            V::U8(n) => Some(u64::from(n)),
            V::U16(n) => Some(u64::from(n)),
            V::U32(n) => Some(u64::from(n)),
            V::U64(n) => Some(n),
            V::I8(n) => u64::try_from(n).ok(),
            V::I16(n) => u64::try_from(n).ok(),
            V::I32(n) => u64::try_from(n).ok(),
            V::I64(n) => u64::try_from(n).ok(),
            _ => None,
        };
        n.map(Some).ok_or_else(|| {
            self.config_error(key, format!("expected a non-negative integer, got {v:?}"))
        })
    }

    fn u64(&self, key: &str) -> Result<u64, Error> {
        self.opt_u64(key)?
            .ok_or_else(|| self.config_error(key, "missing"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, Error> {
        match self.metadata.get(key) {
            None => Ok(None),
            // The writer meant the shortest decimal that rounds to this f32 (`1e-5`, not
            // `9.99999974e-6`): read that, so the config equals the Hugging Face original.
            Some(gguf_file::Value::F32(x)) => {
                Ok(Some(x.to_string().parse::<f64>().unwrap_or(f64::from(*x))))
            }
            Some(gguf_file::Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.config_error(key, format!("expected a number, got {v:?}"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.config_error(key, format!("expected a string, got {v:?}"))),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.config_error(key, format!("expected true or false, got {v:?}"))),
        }
    }

    /// The architecture, checked to be one the Llama-family forward computes.
    fn supported_architecture(&self) -> Result<&str, Error> {
        let arch = self.architecture()?;
        if SUPPORTED_ARCHITECTURES.contains(&arch) {
            Ok(arch)
        } else {
            Err(Error::GgufArchitecture {
                path: self.path.clone(),
                architecture: arch.to_string(),
            })
        }
    }

    /// A Hugging Face `config.json` equivalent of the `{arch}.*` metadata, for
    /// [`ModelConfig::from_json`](super::ModelConfig::from_json); and the origin its errors name.
    pub fn config_json(&self) -> Result<(Value, String), Error> {
        let arch = self.supported_architecture()?;
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = self.u64(&key("embedding_length"))?;
        let heads = self.u64(&key("attention.head_count"))?;
        let kv_heads = self
            .opt_u64(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        let mut m = Map::new();
        m.insert("model_type".into(), arch.into());
        m.insert("hidden_size".into(), hidden.into());
        m.insert(
            "num_hidden_layers".into(),
            self.u64(&key("block_count"))?.into(),
        );
        m.insert(
            "intermediate_size".into(),
            self.u64(&key("feed_forward_length"))?.into(),
        );
        m.insert("num_attention_heads".into(), heads.into());
        m.insert("num_key_value_heads".into(), kv_heads.into());
        m.insert(
            "max_position_embeddings".into(),
            self.u64(&key("context_length"))?.into(),
        );
        let head_dim = match self.opt_u64(&key("attention.key_length"))? {
            Some(k) => {
                if let Some(v) = self.opt_u64(&key("attention.value_length"))? {
                    if v != k {
                        return Err(self.config_error(
                            &key("attention.value_length"),
                            format!("{v} differs from attention.key_length {k}; the forward needs equal head sizes"),
                        ));
                    }
                }
                m.insert("head_dim".into(), k.into());
                Some(k)
            }
            None if heads > 0 && hidden % heads == 0 => Some(hidden / heads),
            None => None,
        };
        if let (Some(rot), Some(hd)) = (self.opt_u64(&key("rope.dimension_count"))?, head_dim) {
            if rot != hd {
                return Err(self.config_error(
                    &key("rope.dimension_count"),
                    format!(
                        "RoPE on {rot} of {hd} head dimensions (partial rotary) is not supported"
                    ),
                ));
            }
        }
        if let Some(eps) = self.opt_f64(&key("attention.layer_norm_rms_epsilon"))? {
            m.insert("rms_norm_eps".into(), eps.into());
        }
        if let Some(theta) = self.opt_f64(&key("rope.freq_base"))? {
            m.insert("rope_theta".into(), theta.into());
        }
        if let Some(scaling) = self.rope_scaling(arch)? {
            m.insert("rope_scaling".into(), scaling);
        }
        let vocab = match self.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(tokens)) => tokens.len() as u64,
            _ => match self.opt_u64(&key("vocab_size"))? {
                Some(v) => v,
                None => self
                    .tensors
                    .get("token_embd.weight")
                    .and_then(|t| t.dims.first())
                    .map(|&v| v as u64)
                    .ok_or_else(|| {
                        self.config_error(
                            "tokenizer.ggml.tokens",
                            "missing, and neither the vocab_size key nor token_embd.weight gives the vocabulary size",
                        )
                    })?,
            },
        };
        m.insert("vocab_size".into(), vocab.into());
        // convert_hf_to_gguf leaves the head out when it is the embedding.
        m.insert(
            "tie_word_embeddings".into(),
            (!self.tensors.contains_key("output.weight")).into(),
        );
        Ok((Value::Object(m), self.config_origin()))
    }

    /// `{arch}.rope.scaling.*` as a `rope_scaling` object; kinds the forward lacks pass through by
    /// name so that the config parser refuses them with its usual message.
    fn rope_scaling(&self, arch: &str) -> Result<Option<Value>, Error> {
        let key = |k: &str| format!("{arch}.rope.{k}");
        let factor = self.opt_f64(&key("scaling.factor"))?;
        match self.opt_str(&key("scaling.type"))? {
            None | Some("none") => match self.opt_f64(&key("scale_linear"))? {
                // The older single key for linear scaling.
                Some(f) if f != 1.0 => Ok(Some(json!({"rope_type": "linear", "factor": f}))),
                _ => Ok(None),
            },
            Some("linear") => {
                let f =
                    factor.ok_or_else(|| self.config_error(&key("scaling.factor"), "missing"))?;
                Ok(Some(json!({"rope_type": "linear", "factor": f})))
            }
            Some(other) => Ok(Some(json!({"rope_type": other, "factor": factor}))),
        }
    }

    /// Storage types and how many tensors of each (`q4_1`, `q8_0`, `f32`, ...).
    pub fn dtypes(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.tensors.values() {
            *out.entry(dtype_name(t.dtype)).or_insert(0) += 1;
        }
        out
    }

    /// Bytes of tensor data (quantised, as stored).
    pub fn data_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.end - t.start).sum()
    }

    /// The sentence that says the numbers come from dequantised weights, or `None` when every
    /// tensor is stored as plain floats.
    pub fn quantization_note(&self) -> Option<String> {
        let dtypes = self.dtypes();
        let quantised: Vec<String> = dtypes
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "f32" | "f16" | "bf16"))
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        let plain: Vec<String> = dtypes
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "f32" | "f16" | "bf16"))
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        if quantised.is_empty() {
            // Plain floats widen to f32 exactly as safetensors f16/bf16 do: nothing to announce.
            return None;
        }
        Some(format!(
            "GGUF weights are quantised ({}{}) and were dequantised to f32: every number is that \
             of the quantised model, not of the original full-precision weights",
            quantised.join(", "),
            if plain.is_empty() {
                String::new()
            } else {
                format!("; {} unquantised", plain.join(", "))
            }
        ))
    }

    /// Dequantise every tensor to f32 under its Hugging Face name, undoing llama.cpp's Q/K row
    /// permutation for `llama` (`num_heads`, `num_kv_heads` from the config). Runs on every core.
    pub fn dequantise(
        &self,
        num_heads: usize,
        num_kv_heads: usize,
        progress: &dyn Progress,
    ) -> Result<DequantisedTensors, Error> {
        let arch = self.supported_architecture()?;
        if self.tensors.contains_key("rope_freqs.weight") {
            return Err(Error::Unsupported {
                name: "rope_freqs.weight".into(),
                reason: "per-frequency RoPE factors (llama3-style rope scaling in GGUF) are not \
                         supported; depthlens would compute a different model"
                    .into(),
            });
        }
        let mut jobs: Vec<Job> = Vec::with_capacity(self.tensors.len());
        let mut hf_names: BTreeMap<String, String> = BTreeMap::new();
        for (name, record) in &self.tensors {
            let hf = hf_name(name).unwrap_or_else(|| name.clone());
            if let Some(previous) = hf_names.insert(hf.clone(), name.clone()) {
                return Err(gguf_error(
                    &self.path,
                    format!("tensors `{previous}` and `{name}` both map to `{hf}`"),
                ));
            }
            // convert_hf_to_gguf permutes q/k rows of Llama for rotate-half RoPE; Qwen2 is left as is.
            let permute_heads = match (arch, name.split('.').nth(2)) {
                ("llama", Some("attn_q")) => Some(num_heads),
                ("llama", Some("attn_k")) => Some(num_kv_heads),
                _ => None,
            };
            jobs.push(Job {
                gguf_name: name,
                hf_name: hf,
                record,
                permute_heads,
            });
        }
        // Largest first, so the last tensor a worker picks up is a small one.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.record.end - j.record.start));
        progress.start("dequantising GGUF", jobs.len() as u64);
        let next = AtomicUsize::new(0);
        let done = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, jobs.len().max(1));
        let results: Vec<Result<Vec<(String, Dequantised)>, Error>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        while !failed.load(Ordering::Relaxed) {
                            let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                                break;
                            };
                            match self.dequantise_one(job) {
                                Ok(t) => out.push((job.hf_name.clone(), t)),
                                Err(e) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                            progress.advance(done.fetch_add(1, Ordering::Relaxed) + 1);
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(gguf_error(&self.path, "a dequantisation worker panicked"))
                    })
                })
                .collect()
        });
        progress.finish();
        let mut tensors = BTreeMap::new();
        for r in results {
            tensors.extend(r?);
        }
        Ok(DequantisedTensors {
            path: self.path.clone(),
            gguf_names: hf_names,
            tensors,
        })
    }

    fn dequantise_one(&self, job: &Job) -> Result<Dequantised, Error> {
        let r = job.record;
        let fail = |e: candle_core::Error| {
            gguf_error(
                &self.path,
                format!("tensor `{}` ({}): {e}", job.gguf_name, dtype_name(r.dtype)),
            )
        };
        let bytes = self.mmap.get(r.start..r.end).ok_or_else(|| {
            gguf_error(
                &self.path,
                format!("tensor `{}`: data lies outside the file", job.gguf_name),
            )
        })?;
        let rows = match job.permute_heads {
            Some(n_head) => RowOrder::for_heads(&r.dims, n_head),
            None => RowOrder::Same,
        };
        let row_len = r.dims.last().copied().unwrap_or(1);
        let values = dequantise_bytes(r.dtype, bytes, row_len, rows);
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        let tensor = Tensor::from_vec(values, r.dims.as_slice(), &Device::Cpu).map_err(fail)?;
        Ok(Dequantised { tensor, non_finite })
    }
}

/// Where each stored row goes in the Hugging Face tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowOrder {
    Same,
    /// Undo convert_hf_to_gguf's `permute` (Llama q/k): within each head of `head_dim` rows it
    /// stores Hugging Face row `s * head_dim/2 + j` (half `s`, pair index `j`) at row `2 j + s`,
    /// the interleaved pairs llama.cpp's RoPE rotates.
    UnpermuteHeads {
        head_dim: usize,
    },
}

impl RowOrder {
    /// The order for a tensor of `dims` split into `n_head` heads. Rows that do not split into
    /// heads of even size stay as they are; the loader's shape check then reports the tensor.
    pub fn for_heads(dims: &[usize], n_head: usize) -> Self {
        let rows = dims.first().copied().unwrap_or(0);
        if dims.len() < 2 || n_head == 0 || !rows.is_multiple_of(n_head) {
            return Self::Same;
        }
        let head_dim = rows / n_head;
        if head_dim.is_multiple_of(2) {
            Self::UnpermuteHeads { head_dim }
        } else {
            Self::Same
        }
    }

    /// The Hugging Face row of stored row `r`.
    pub fn destination(self, r: usize) -> usize {
        match self {
            Self::Same => r,
            Self::UnpermuteHeads { head_dim } => {
                let (head, i) = (r / head_dim, r % head_dim);
                head * head_dim + (i % 2) * (head_dim / 2) + i / 2
            }
        }
    }
}

/// Expand one tensor's blocks with candle's dequantisation kernels, straight from the map (no
/// intermediate copy of the quantised data), each row of `row_len` values written where `rows`
/// puts it. `bytes` holds whole rows of whole blocks (checked at open).
fn dequantise_bytes(dtype: GgmlDType, bytes: &[u8], row_len: usize, rows: RowOrder) -> Vec<f32> {
    use candle_core::quantized::k_quants::*;
    let row_len = row_len.max(1);
    macro_rules! expand {
        ($t:ty) => {
            blocks::<$t>(bytes, row_len, rows)
        };
    }
    match dtype {
        GgmlDType::F32 => expand!(f32),
        GgmlDType::F16 => expand!(half::f16),
        GgmlDType::BF16 => expand!(half::bf16),
        GgmlDType::Q4_0 => expand!(BlockQ4_0),
        GgmlDType::Q4_1 => expand!(BlockQ4_1),
        GgmlDType::Q5_0 => expand!(BlockQ5_0),
        GgmlDType::Q5_1 => expand!(BlockQ5_1),
        GgmlDType::Q8_0 => expand!(BlockQ8_0),
        GgmlDType::Q8_1 => expand!(BlockQ8_1),
        GgmlDType::Q2K => expand!(BlockQ2K),
        GgmlDType::Q3K => expand!(BlockQ3K),
        GgmlDType::Q4K => expand!(BlockQ4K),
        GgmlDType::Q5K => expand!(BlockQ5K),
        GgmlDType::Q6K => expand!(BlockQ6K),
        GgmlDType::Q8K => expand!(BlockQ8K),
    }
}

/// `bytes` as GGML blocks of type `T`, expanded to f32 row by row. Only instantiated with
/// candle's block types and plain floats: `#[repr(C)]` structs of integers and floats, valid for
/// any bits.
fn blocks<T: candle_core::quantized::GgmlType>(
    bytes: &[u8],
    row_len: usize,
    rows: RowOrder,
) -> Vec<f32> {
    let count = bytes.len() / std::mem::size_of::<T>();
    let mut ys = vec![0f32; count * T::BLCK_SIZE];
    let ptr = bytes.as_ptr().cast::<T>();
    let owned: Vec<T>;
    let xs: &[T] = if ptr.is_aligned() {
        // SAFETY: aligned, `count` blocks lie inside `bytes`, any bit pattern is a valid `T`
        // (see above), and the read-only map outlives the slice.
        unsafe { std::slice::from_raw_parts(ptr, count) }
    } else {
        // An odd `general.alignment` can misalign a tensor: copy it block by block.
        owned = (0..count)
            // SAFETY: block `i` lies inside `bytes`; the read is unaligned by design; any bits
            // are a valid `T`.
            .map(|i| unsafe { std::ptr::read_unaligned(ptr.add(i)) })
            .collect();
        &owned
    };
    if rows == RowOrder::Same {
        T::to_float(xs, &mut ys);
        return ys;
    }
    let per_row = row_len / T::BLCK_SIZE;
    for (r, row) in xs.chunks_exact(per_row.max(1)).enumerate() {
        let dst = rows.destination(r) * row_len;
        T::to_float(row, &mut ys[dst..dst + row_len]);
    }
    ys
}

/// Validate one header entry against the file: a whole number of blocks, inside the file.
fn tensor_record(
    info: &gguf_file::TensorInfo,
    data_offset: u64,
    file_len: usize,
) -> Result<TensorRecord, String> {
    let dims = info.shape.dims().to_vec();
    let elems = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the element count overflows")?;
    let block = info.ggml_dtype.block_size();
    // ggml quantises along rows: the innermost dimension must hold whole blocks.
    if !dims.last().copied().unwrap_or(1).is_multiple_of(block) {
        return Err(format!(
            "shape {dims:?}: rows of {} elements are not a whole number of {} blocks of {block}",
            dims.last().copied().unwrap_or(1),
            dtype_name(info.ggml_dtype)
        ));
    }
    let bytes = (elems / block)
        .checked_mul(info.ggml_dtype.type_size())
        .ok_or("the byte size overflows")?;
    let start = data_offset
        .checked_add(info.offset)
        .and_then(|s| usize::try_from(s).ok())
        .ok_or("the data offset overflows")?;
    let end = start.checked_add(bytes).ok_or("the data range overflows")?;
    if end > file_len {
        return Err(format!(
            "its data ({bytes} bytes at offset {start}) runs past the end of the {file_len}-byte \
             file: truncated"
        ));
    }
    Ok(TensorRecord {
        dtype: info.ggml_dtype,
        dims,
        start,
        end,
    })
}

struct Job<'a> {
    gguf_name: &'a str,
    hf_name: String,
    record: &'a TensorRecord,
    /// `Some(heads)`: undo the rotate-half row permutation over this many heads.
    permute_heads: Option<usize>,
}

struct Dequantised {
    tensor: Tensor,
    non_finite: usize,
}

/// `q4_1`, `q8_0`, `f32`, `q4k`, ...
fn dtype_name(dtype: GgmlDType) -> String {
    format!("{dtype:?}").to_lowercase()
}

/// The Hugging Face name of a llama.cpp tensor name, `None` for names the map does not know
/// (they stay as they are, so the loader's unused-tensor refusal names them).
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// A GGUF file's tensors, dequantised to f32, under Hugging Face names.
pub struct DequantisedTensors {
    path: PathBuf,
    /// Hugging Face name -> GGUF name, for messages.
    gguf_names: BTreeMap<String, String>,
    tensors: BTreeMap<String, Dequantised>,
}

impl DequantisedTensors {
    /// The name for an error message that wraps it in backticks: the Hugging Face name, and the
    /// GGUF name a user of llama.cpp knows: ``tensor `…q_proj.weight`, GGUF `…attn_q.weight`: ``.
    fn describe(&self, name: &str) -> String {
        match self.gguf_names.get(name) {
            Some(g) if g != name => format!("{name}`, GGUF `{g}"),
            _ => name.to_string(),
        }
    }
}

impl TensorSource for DequantisedTensors {
    fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    fn stored_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.tensor.dims().to_vec())
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<(Tensor, usize), Error> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        if t.tensor.dims() != shape {
            return Err(Error::Shape {
                name: self.describe(name),
                got: t.tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok((t.tensor.clone(), t.non_finite))
    }

    fn origin(&self) -> PathBuf {
        self.path.clone()
    }
}

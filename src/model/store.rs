//! Memory-mapped safetensors files (one or several shards) and typed access to their tensors.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensorError, SafeTensors};

use super::Error;

/// One mapped `.safetensors` file with its validated header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    metadata: Metadata,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
}

/// Where a tensor lives and what it claims to be.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    file: usize,
}

/// All tensors of a checkpoint, across shards, by name.
pub struct TensorStore {
    files: Vec<MappedFile>,
    entries: BTreeMap<String, TensorEntry>,
}

fn describe_safetensors_error(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            "file is shorter than the 8-byte header length: truncated or not a safetensors file".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length points past the end of the file: truncated or corrupt".into()
        }
        SafeTensorError::HeaderTooLarge => "the header length is absurdly large: corrupt".into(),
        SafeTensorError::InvalidHeader(_) => "the header is not UTF-8 text: corrupt".into(),
        SafeTensorError::InvalidHeaderDeserialization(err) => {
            let msg = err.to_string();
            if msg.contains("unknown variant") {
                format!("the header names a dtype this reader does not know ({msg})")
            } else {
                format!("the header is not valid safetensors JSON ({msg})")
            }
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{name}`: data offsets overlap, leave a gap or run out of order: corrupt"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype: corrupt".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the data section does not end where the header says (truncated file, or offsets out of range)".into()
        }
        other => other.to_string(),
    }
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; a file changed under us by another process would give
        // wrong numbers, never memory unsafety beyond what any reader of a mutated file sees.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                path: path.to_path_buf(),
                reason: describe_safetensors_error(&e),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            metadata,
            data_start: 8 + header_len,
        })
    }
}

impl TensorStore {
    /// Map one or more files; `expected` optionally says which names each file must hold (a shard
    /// index's `weight_map`).
    pub fn open(
        paths: &[PathBuf],
        expected: Option<&HashMap<String, PathBuf>>,
    ) -> Result<Self, Error> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        for (index, path) in paths.iter().enumerate() {
            let mapped = MappedFile::open(path)?;
            for (name, info) in mapped.metadata.tensors() {
                if let Some(previous) = entries.get(&name) {
                    let previous: &TensorEntry = previous;
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        reason: format!(
                            "tensor `{name}` also appears in {}",
                            files_path(&files, previous.file).display()
                        ),
                    });
                }
                entries.insert(
                    name.clone(),
                    TensorEntry {
                        name,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        file: index,
                    },
                );
            }
            files.push(mapped);
        }
        if let Some(map) = expected {
            for (name, file) in map {
                match entries.get(name) {
                    None => {
                        return Err(Error::Safetensors {
                            path: file.clone(),
                            reason: format!(
                                "the shard index lists tensor `{name}` in this file, but it is not there"
                            ),
                        })
                    }
                    Some(e) if files[e.file].path != *file => {
                        return Err(Error::Safetensors {
                            path: files[e.file].path.clone(),
                            reason: format!(
                                "tensor `{name}` is here, but the shard index puts it in {}",
                                file.display()
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(Self { files, entries })
    }

    /// The `__metadata__` of the first file (single-file checkpoints carry their config there).
    pub fn file_metadata(&self) -> Option<&HashMap<String, String>> {
        self.files
            .first()
            .and_then(|f| f.metadata.metadata().as_ref())
    }

    pub fn entries(&self) -> impl Iterator<Item = &TensorEntry> {
        self.entries.values()
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Total bytes of tensor data across files.
    pub fn data_bytes(&self) -> usize {
        self.files.iter().map(|f| f.metadata.data_len()).sum()
    }

    /// Read a tensor as f32 on the CPU, checking its shape. Counts non-finite values.
    pub fn load_f32(&self, name: &str, expected_shape: &[usize]) -> Result<(Tensor, usize), Error> {
        let entry = self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            path: self
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            name: name.to_string(),
        })?;
        if entry.shape != expected_shape {
            return Err(Error::Shape {
                name: name.to_string(),
                got: entry.shape.clone(),
                expected: expected_shape.to_vec(),
            });
        }
        let file = &self.files[entry.file];
        let info = file
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor {
                path: file.path.clone(),
                name: name.to_string(),
            })?;
        let (start, end) = info.data_offsets;
        let bytes = file
            .mmap
            .get(file.data_start + start..file.data_start + end)
            .ok_or_else(|| Error::Safetensors {
                path: file.path.clone(),
                reason: format!("tensor `{name}`: data range lies outside the file"),
            })?;
        let values = decode_to_f32(bytes, entry.dtype).ok_or_else(|| Error::Dtype {
            name: name.to_string(),
            dtype: format!("{:?}", entry.dtype),
        })?;
        let non_finite = values.iter().filter(|v| !v.is_finite()).count();
        let tensor = Tensor::from_vec(values, expected_shape, &Device::Cpu)?;
        Ok((tensor, non_finite))
    }
}

fn files_path(files: &[MappedFile], index: usize) -> &Path {
    files
        .get(index)
        .map(|f| f.path.as_path())
        .unwrap_or(Path::new("?"))
}

/// Little-endian f32/f16/bf16/f64 bytes to f32. `None` for dtypes that are not floating point
/// weights we can compute with. Works on unaligned data (safetensors does not align).
pub fn decode_to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        _ => return None,
    })
}

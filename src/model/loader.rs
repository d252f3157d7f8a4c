//! Reads named tensors out of a [`TensorSource`], remembering which were used, so that a
//! checkpoint holding parameters the forward would not use is refused rather than silently
//! computed as a different model.

use std::collections::BTreeSet;
use std::path::PathBuf;

use candle_core::Tensor;

use super::store::TensorStore;
use super::weights::{Linear, Norm};
use super::Error;
use crate::progress::Progress;

/// Named tensors under their Hugging Face names: a memory-mapped safetensors checkpoint, or a
/// GGUF file already dequantised in memory. One trait, so every format goes through the same
/// family loaders, shape checks and unused-tensor refusal.
pub trait TensorSource {
    /// Every tensor name.
    fn names(&self) -> Vec<&str>;
    /// The shape as stored, `None` when absent.
    fn stored_shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor as f32, checked to have exactly `shape`, and its count of NaN/Inf values.
    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<(Tensor, usize), Error>;
    /// The file that errors about absent tensors name.
    fn origin(&self) -> PathBuf;
}

impl TensorSource for TensorStore {
    fn names(&self) -> Vec<&str> {
        self.entries().map(|e| e.name.as_str()).collect()
    }

    fn stored_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.get(name).map(|e| e.shape.clone())
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<(Tensor, usize), Error> {
        TensorStore::load_f32(self, name, shape)
    }

    fn origin(&self) -> PathBuf {
        self.paths()
            .first()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }
}

pub struct Loader<'a> {
    store: &'a dyn TensorSource,
    used: BTreeSet<String>,
    pub warnings: Vec<String>,
    progress: &'a dyn Progress,
    loaded: u64,
}

impl<'a> Loader<'a> {
    pub fn new(store: &'a dyn TensorSource, progress: &'a dyn Progress) -> Self {
        progress.start("loading weights", store.names().len() as u64);
        Self {
            store,
            used: BTreeSet::new(),
            warnings: Vec::new(),
            progress,
            loaded: 0,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.store.stored_shape(name).is_some()
    }

    /// The error for a required tensor that is absent.
    pub fn missing(&self, name: &str) -> Error {
        Error::MissingTensor {
            path: self.store.origin(),
            name: name.to_string(),
        }
    }

    /// A required tensor of exactly this shape.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
        let (tensor, non_finite) = self.store.load_f32(name, shape)?;
        if non_finite > 0 {
            self.warnings.push(format!(
                "tensor `{name}` holds {non_finite} NaN/Inf values: the trace will carry them"
            ));
        }
        self.used.insert(name.to_string());
        self.loaded += 1;
        self.progress.advance(self.loaded);
        Ok(tensor)
    }

    /// A tensor that may be absent.
    pub fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>, Error> {
        if self.has(name) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The first of several accepted names (public reproductions spell things differently).
    /// The tensor may be stored with extra unit dimensions (`[1, d]` for `[d]`).
    pub fn first_of(&mut self, names: &[String], shape: &[usize]) -> Result<Option<Tensor>, Error> {
        let present: Vec<&String> = names.iter().filter(|n| self.has(n)).collect();
        if present.len() > 1 {
            return Err(Error::Unsupported {
                name: present[1].clone(),
                reason: format!(
                    "holds the same parameter as `{}`; keep only one",
                    present[0]
                ),
            });
        }
        let Some(name) = present.first() else {
            return Ok(None);
        };
        let stored = self.store.stored_shape(name).unwrap_or_default();
        let squeezed: Vec<usize> = stored.iter().copied().filter(|&n| n != 1).collect();
        let wanted: Vec<usize> = shape.iter().copied().filter(|&n| n != 1).collect();
        if squeezed == wanted && stored != shape {
            let t = self.tensor(name, &stored)?;
            return Ok(Some(t.reshape(shape)?));
        }
        self.tensor(name, shape).map(Some)
    }

    pub fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear, Error> {
        let weight = self.tensor(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    }

    pub fn norm(&mut self, prefix: &str, d: usize, bias: bool) -> Result<Norm, Error> {
        Ok(Norm {
            weight: self.tensor(&format!("{prefix}.weight"), &[d])?,
            bias: if bias {
                Some(self.tensor(&format!("{prefix}.bias"), &[d])?)
            } else {
                None
            },
        })
    }

    /// Mark a tensor as deliberately not a parameter (a cached buffer such as `rotary_emb.inv_freq`).
    pub fn ignore(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// Fail on the first tensor that nothing used. `family` names the forward in the message.
    pub fn finish(self, family: &str) -> Result<Vec<String>, Error> {
        self.progress.finish();
        if let Some(unused) = self
            .store
            .names()
            .into_iter()
            .find(|n| !self.used.contains(*n))
        {
            return Err(Error::Unsupported {
                name: unused.to_string(),
                reason: format!(
                    "not a parameter of the {family} forward; depthlens refuses to drop parameters \
                     silently (is this a variant of the architecture, or a different model?)"
                ),
            });
        }
        Ok(self.warnings)
    }
}

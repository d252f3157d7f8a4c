//! A checkpoint's weights on the GPU (f32, uploaded once). Tables larger than one storage binding
//! (embedding, LM head) are split into row chunks.

use candle_core::Tensor;
use wgpu::util::DeviceExt;

use super::{Engine, Error};
use crate::model::{DepthQuery, Linear, Mlp, ModelConfig, Norm, Weights};

pub(crate) struct GpuLinear {
    pub weight: wgpu::Buffer,
    pub bias: Option<wgpu::Buffer>,
    pub out: u32,
    pub inp: u32,
}

pub(crate) struct GpuNorm {
    pub weight: wgpu::Buffer,
    pub bias: Option<wgpu::Buffer>,
}

pub(crate) enum GpuMlp {
    /// `gate_up` is gate and up stacked: one GEMM gives `[T, 2F]` (gate columns first).
    SwiGlu {
        gate_up: GpuLinear,
        down: GpuLinear,
    },
    Gelu {
        fc: GpuLinear,
        proj: GpuLinear,
    },
}

pub(crate) struct GpuLayer {
    pub attn_norm: GpuNorm,
    /// q, k and v projections stacked: one GEMM gives `[T, (heads + 2 kv_heads) * hd]`.
    pub qkv: GpuLinear,
    pub o: GpuLinear,
    pub mlp_norm: GpuNorm,
    pub mlp: GpuMlp,
    /// AttnRes pseudo-queries with the key-norm gain folded in (`w * g`, exact: ATTNRES.md).
    pub attn_qg: Option<wgpu::Buffer>,
    pub mlp_qg: Option<wgpu::Buffer>,
}

/// Rows `[row0, row0 + rows)` of a `[vocab, d]` table.
pub(crate) struct Chunk {
    pub buffer: wgpu::Buffer,
    pub row0: u32,
    pub rows: u32,
}

/// A model resident on the GPU.
pub struct GpuModel {
    pub(crate) cfg: ModelConfig,
    pub(crate) embed: Vec<Chunk>,
    pub(crate) positions: Option<wgpu::Buffer>,
    pub(crate) layers: Vec<GpuLayer>,
    pub(crate) final_norm: GpuNorm,
    /// `None`: tied to `embed`.
    pub(crate) head: Option<Vec<Chunk>>,
    pub(crate) final_qg: Option<wgpu::Buffer>,
    /// Bound where a kernel's optional input is absent (no bias, no positions).
    pub(crate) dummy: wgpu::Buffer,
    /// Prepared forwards by prompt length (most recent last).
    pub(crate) workspaces: WorkspaceCache,
}

pub(crate) type WorkspaceCache = std::sync::Mutex<
    Vec<(
        u32,
        std::sync::Arc<std::sync::Mutex<super::forward::Workspace>>,
    )>,
>;

impl GpuModel {
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub(crate) fn head_chunks(&self) -> &[Chunk] {
        self.head.as_deref().unwrap_or(&self.embed)
    }
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

fn values(t: &Tensor) -> Result<Vec<f32>, Error> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| Error::Unsupported(format!("weights that cannot be read as f32: {e}")))
}

impl Engine {
    fn upload_values(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer, Error> {
        let bytes = (data.len() * 4) as u64;
        self.check_size(
            &format!("tensor `{label}`"),
            bytes,
            "the adapter's storage binding limit",
        )?;
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: USAGE,
            }))
    }

    fn upload(&self, label: &str, t: &Tensor) -> Result<wgpu::Buffer, Error> {
        self.upload_values(label, &values(t)?)
    }

    fn upload_linear(&self, label: &str, l: &Linear) -> Result<GpuLinear, Error> {
        let (out, inp) = l
            .weight
            .dims2()
            .map_err(|e| Error::Unsupported(format!("linear `{label}`: {e}")))?;
        Ok(GpuLinear {
            weight: self.upload(label, &l.weight)?,
            bias: l.bias.as_ref().map(|b| self.upload(label, b)).transpose()?,
            out: out as u32,
            inp: inp as u32,
        })
    }

    /// Several linears with the same input as one: weights stacked along the output, biases
    /// likewise (zeros where a part has none). One GEMM then replaces several small dispatches.
    fn upload_stacked(&self, label: &str, parts: &[&Linear]) -> Result<GpuLinear, Error> {
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        let mut out = 0;
        let mut inp = None;
        for l in parts {
            let (o, i) = l
                .weight
                .dims2()
                .map_err(|e| Error::Unsupported(format!("linear `{label}`: {e}")))?;
            if inp.is_some_and(|prev| prev != i) {
                return Err(Error::Unsupported(format!(
                    "linear `{label}`: stacked parts take inputs of {} and {i} features",
                    inp.unwrap_or(0)
                )));
            }
            inp = Some(i);
            weight.extend(values(&l.weight)?);
            match &l.bias {
                Some(b) => bias.extend(values(b)?),
                None => bias.resize(bias.len() + o, 0.0),
            }
            out += o;
        }
        let has_bias = parts.iter().any(|l| l.bias.is_some());
        Ok(GpuLinear {
            weight: self.upload_values(label, &weight)?,
            bias: has_bias
                .then(|| self.upload_values(label, &bias))
                .transpose()?,
            out: out as u32,
            inp: inp.unwrap_or(0) as u32,
        })
    }

    fn upload_norm(&self, label: &str, n: &Norm) -> Result<GpuNorm, Error> {
        Ok(GpuNorm {
            weight: self.upload(label, &n.weight)?,
            bias: n.bias.as_ref().map(|b| self.upload(label, b)).transpose()?,
        })
    }

    fn upload_query(
        &self,
        label: &str,
        q: &Option<DepthQuery>,
    ) -> Result<Option<wgpu::Buffer>, Error> {
        q.as_ref()
            .map(|q| {
                let folded = (&q.query * &q.key_gain)
                    .map_err(|e| Error::Unsupported(format!("depth query `{label}`: {e}")))?;
                self.upload(label, &folded)
            })
            .transpose()
    }

    /// A `[rows, d]` table split into chunks that each fit one binding.
    fn upload_table(&self, label: &str, t: &Tensor) -> Result<Vec<Chunk>, Error> {
        let data = values(t)?;
        let d = t.dims().get(1).copied().unwrap_or(1).max(1);
        let rows = data.len() / d;
        let per_chunk = ((self.max_binding() / 4) as usize / d).max(1);
        let mut chunks = Vec::new();
        for (i, part) in data.chunks(per_chunk * d).enumerate() {
            chunks.push(Chunk {
                buffer: self.upload_values(&format!("{label}[{i}]"), part)?,
                row0: (i * per_chunk) as u32,
                rows: (part.len() / d) as u32,
            });
        }
        debug_assert_eq!(chunks.iter().map(|c| c.rows as usize).sum::<usize>(), rows);
        Ok(chunks)
    }

    /// Upload a model's weights (once; traces reuse them).
    pub fn load(&self, cfg: &ModelConfig, w: &Weights) -> Result<GpuModel, Error> {
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let p = |s: &str| format!("L{i}.{s}");
            let mlp = match &l.mlp {
                Mlp::SwiGlu { gate, up, down } => GpuMlp::SwiGlu {
                    gate_up: self.upload_stacked(&p("gate_up"), &[gate, up])?,
                    down: self.upload_linear(&p("down"), down)?,
                },
                Mlp::Gelu { fc, proj } => GpuMlp::Gelu {
                    fc: self.upload_linear(&p("fc"), fc)?,
                    proj: self.upload_linear(&p("proj"), proj)?,
                },
            };
            layers.push(GpuLayer {
                attn_norm: self.upload_norm(&p("attn_norm"), &l.attn_norm)?,
                qkv: self.upload_stacked(&p("qkv"), &[&l.q, &l.k, &l.v])?,
                o: self.upload_linear(&p("o"), &l.o)?,
                mlp_norm: self.upload_norm(&p("mlp_norm"), &l.mlp_norm)?,
                mlp,
                attn_qg: self.upload_query(&p("attn_res"), &l.attn_res)?,
                mlp_qg: self.upload_query(&p("mlp_res"), &l.mlp_res)?,
            });
        }
        Ok(GpuModel {
            cfg: cfg.clone(),
            embed: self.upload_table("embed", &w.embed)?,
            positions: w
                .positions
                .as_ref()
                .map(|p| self.upload("positions", p))
                .transpose()?,
            layers,
            final_norm: self.upload_norm("final_norm", &w.final_norm)?,
            head: w
                .lm_head
                .as_ref()
                .map(|h| self.upload_table("lm_head", h))
                .transpose()?,
            final_qg: self.upload_query("final_res", &w.final_res)?,
            dummy: self.upload_values("dummy", &[0.0; 4])?,
            workspaces: Default::default(),
        })
    }
}

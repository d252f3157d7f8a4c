//! Statistics derived from a Trace: what views and exports draw. Pure functions of the Trace.

use crate::trace::Trace;

/// Median of a slice (NaN-free input assumed; NaNs sort last).
pub fn median(values: &[f32]) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Per op, over the prompt's tokens: the depth-dilution profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DepthProfile {
    pub ops: Vec<String>,
    /// Median RMS of each op's input `h`.
    pub hidden_rms: Vec<f32>,
    /// Median RMS of each op's output `v`.
    pub output_rms: Vec<f32>,
    /// Median share of the embedding (`emb`) in each op's input (residual decomposition).
    pub embedding_share: Vec<f32>,
    /// Median depth weight of the embedding (baselines: the implicit 1).
    pub embedding_alpha: Vec<f32>,
}

/// The profile of a trace: medians over tokens of each op's statistics.
pub fn depth_profile(trace: &Trace) -> DepthProfile {
    let emb = |sources: &[String]| sources.iter().position(|s| s == "emb").unwrap_or(0);
    DepthProfile {
        ops: trace.ops.iter().map(|o| o.name.clone()).collect(),
        hidden_rms: trace.ops.iter().map(|o| median(&o.hidden_rms)).collect(),
        output_rms: trace.ops.iter().map(|o| median(&o.output_rms)).collect(),
        embedding_share: trace
            .ops
            .iter()
            .map(|o| median(&o.shares.column(emb(&o.sources))))
            .collect(),
        embedding_alpha: trace
            .ops
            .iter()
            .map(|o| median(&o.alpha.column(emb(&o.sources))))
            .collect(),
    }
}

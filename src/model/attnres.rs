//! AttnRes depth-query tensors, under our names (ATTNRES.md) or those of public reproductions.

use candle_core::{Device, Tensor};

use super::loader::Loader;
use super::weights::DepthQuery;
use super::Error;

/// Suffixes that public reproductions use for things ATTNRES.md does not have. Refused by name.
const DIFFERENT_SEMANTICS: [(&str, &str); 4] = [
    ("bias", "a bias on the depth logits"),
    ("recency", "a recency bias over sources"),
    ("gate", "a sigmoid gate instead of a depth softmax"),
    ("temperature", "a temperature on the depth logits"),
];

/// Load op `name` (e.g. `model.layers.3.mlp_res`); reproductions spell the same parameters
/// `model.layers.3.mlp_res_proj.weight` ([1, d]) and `model.layers.3.mlp_res_norm.weight`.
pub fn load_op(l: &mut Loader, name: &str, d: usize) -> Result<DepthQuery, Error> {
    let alias = name;
    let query_names = [
        format!("{name}.query"),
        format!("{name}.query_vec"),
        format!("{alias}_proj.weight"),
    ];
    let gain_names = [
        format!("{name}.key_norm.weight"),
        format!("{alias}_norm.weight"),
    ];
    for prefix in [
        name.to_string(),
        format!("{alias}_proj"),
        format!("{alias}_norm"),
    ] {
        for (word, what) in DIFFERENT_SEMANTICS {
            for candidate in [
                format!("{prefix}.{word}"),
                format!("{prefix}.{word}.weight"),
            ] {
                if l.has(&candidate) {
                    return Err(Error::Unsupported {
                        name: candidate,
                        reason: format!(
                            "{what}: this AttnRes variant computes something else than ATTNRES.md; \
                             depthlens does not implement it"
                        ),
                    });
                }
            }
        }
    }
    let query = l
        .first_of(&query_names, &[d])?
        .ok_or_else(|| l.missing(&query_names[0]))?;
    let key_gain = match l.first_of(&gain_names, &[d])? {
        Some(g) => g,
        // ATTNRES.md: a missing key-norm gain means gain 1.
        None => Tensor::ones(d, candle_core::DType::F32, &Device::Cpu)?,
    };
    Ok(DepthQuery { query, key_gain })
}

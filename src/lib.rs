//! depthlens: look inside transformer language models along the depth axis.
//!
//! Data flows one way: [`model`] (checkpoint, config, tokenizer) -> [`reference`] (the candle-core
//! forward, the source of truth for every number) -> [`trace::Trace`] -> analysis, views and exports.

pub mod analysis;
pub mod cli;
pub mod engine;
pub mod export;
pub mod figures;
pub mod model;
pub mod progress;
pub mod reference;
pub mod trace;
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;

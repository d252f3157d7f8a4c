//! Progress reporting that library code can call without knowing who draws it.

/// Receives progress of long work: the CLI draws an indicatif bar, the app a progress widget.
pub trait Progress: Sync {
    /// A new stage begins with `total` steps (0 when unknown).
    fn start(&self, stage: &str, total: u64);
    /// `done` of the current stage's steps are finished.
    fn advance(&self, done: u64);
    /// The current stage is over.
    fn finish(&self);
    /// Whether the caller gave up on the work: long work checks between steps and stops early
    /// (the app's Cancel button).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing (tests, library callers that do not care).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _stage: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn finish(&self) {}
}

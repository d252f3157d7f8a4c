//! An indicatif bar on stderr that appears only once work has taken over a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::Progress;

const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct BarProgress {
    state: Mutex<Option<(ProgressBar, Instant, bool)>>,
}

impl BarProgress {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for BarProgress {
    fn start(&self, stage: &str, total: u64) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(stage.to_string());
        if let Ok(mut s) = self.state.lock() {
            *s = Some((bar, Instant::now(), false));
        }
    }

    fn advance(&self, done: u64) {
        if let Ok(mut s) = self.state.lock() {
            if let Some((bar, started, shown)) = s.as_mut() {
                if !*shown && started.elapsed() > SHOW_AFTER {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    *shown = true;
                }
                bar.set_position(done);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            if let Some((bar, _, _)) = s.take() {
                bar.finish_and_clear();
            }
        }
    }
}

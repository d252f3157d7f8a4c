//! Wall time per phase of the CPU reference forward, collected only while a caller asks for it
//! (`bench --device cpu --phases`): where a trace's time goes, and, compared across thread
//! counts, which parts do not get faster with more threads. Candle's CPU ops run to completion
//! before they return, so a phase's wall time is its own.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// One phase's total over the forwards collected.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTime {
    pub phase: &'static str,
    pub total: Duration,
    pub calls: usize,
}

thread_local! {
    static COLLECTED: RefCell<Option<Vec<PhaseTime>>> = const { RefCell::new(None) };
}

/// Start collecting on this thread, from nothing.
pub fn start() {
    COLLECTED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Stop collecting on this thread; the totals, in the order the phases first ran.
pub fn take() -> Vec<PhaseTime> {
    COLLECTED
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default()
}

/// Run `f`; while collecting, add its wall time to `phase`. Phases must not nest (a nested one
/// would be counted twice).
pub fn timed<T>(phase: &'static str, f: impl FnOnce() -> T) -> T {
    let _span = Span::start(phase);
    f()
}

/// Adds the wall time from its start to its drop to `phase`, while collecting: for a phase that
/// returns early with `?`.
pub struct Span {
    phase: &'static str,
    started: Option<Instant>,
}

impl Span {
    pub fn start(phase: &'static str) -> Self {
        let collecting = COLLECTED.with(|c| c.borrow().is_some());
        Self {
            phase,
            started: collecting.then(Instant::now),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(started) = self.started else {
            return;
        };
        let time = PhaseTime {
            phase: self.phase,
            total: started.elapsed(),
            calls: 1,
        };
        COLLECTED.with(|c| {
            if let Some(times) = c.borrow_mut().as_mut() {
                add(times, time);
            }
        });
    }
}

/// `time` added to its phase's total in `totals` (appended if the phase is new there).
pub fn add(totals: &mut Vec<PhaseTime>, time: PhaseTime) {
    match totals.iter_mut().find(|p| p.phase == time.phase) {
        Some(p) => {
            p.total += time.total;
            p.calls += time.calls;
        }
        None => totals.push(time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_summed_per_name_in_first_run_order_only_while_collecting() {
        let nap = || std::thread::sleep(Duration::from_millis(3));
        timed("before", nap);
        start();
        assert_eq!(timed("mix", || 7), 7);
        timed("norm", nap);
        timed("mix", nap);
        let times = take();
        let names: Vec<_> = times.iter().map(|p| (p.phase, p.calls)).collect();
        assert_eq!(names, [("mix", 2), ("norm", 1)]);
        assert!(times[0].total >= Duration::from_millis(3));
        assert!(times[1].total >= Duration::from_millis(3));
        timed("after", nap);
        assert!(take().is_empty());
    }
}

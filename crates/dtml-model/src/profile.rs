//! Where a training step's time goes: wall time summed per kind of work
//! (each custom CPU kernel by name, and the spans the trainer marks:
//! forward, objective, backward, optimiser), switched on by
//! [`enable`] or `DTML_PROFILE=1` and off by default, when a timed span
//! costs one relaxed load. The step bench prints the breakdown; whatever
//! a span holds beyond the kernels inside it is candle's element-wise
//! work, allocation and graph bookkeeping.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static CHECKED: std::sync::Once = std::sync::Once::new();
static TOTALS: Mutex<BTreeMap<&'static str, (f64, u64)>> = Mutex::new(BTreeMap::new());

/// Starts collecting (also set by `DTML_PROFILE=1`).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

fn on() -> bool {
    CHECKED.call_once(|| {
        if std::env::var_os("DTML_PROFILE").is_some_and(|v| v != "0") {
            enable();
        }
    });
    ON.load(Ordering::Relaxed)
}

/// Runs `f`, adding its wall time to `what` when profiling is on.
pub fn timed<T>(what: &'static str, f: impl FnOnce() -> T) -> T {
    if !on() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let seconds = start.elapsed().as_secs_f64();
    if let Ok(mut totals) = TOTALS.lock() {
        let e = totals.entry(what).or_insert((0.0, 0));
        e.0 += seconds;
        e.1 += 1;
    }
    out
}

/// The totals so far, `(what, seconds, calls)`, and a fresh start.
pub fn take() -> Vec<(&'static str, f64, u64)> {
    let Ok(mut totals) = TOTALS.lock() else {
        return Vec::new();
    };
    std::mem::take(&mut *totals)
        .into_iter()
        .map(|(k, (s, n))| (k, s, n))
        .collect()
}

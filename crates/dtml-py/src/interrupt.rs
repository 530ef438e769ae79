//! Ctrl-C during long calls. Python runs signal handlers only on the main
//! thread, between bytecodes; a call that holds the thread in Rust for
//! seconds would ignore them. So the work runs on a scoped thread while
//! the calling thread, without the GIL, checks for signals every few
//! milliseconds; on Ctrl-C it sets the work's stop flag, waits for it to
//! give up at its next check, and raises `KeyboardInterrupt`.

use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the calling thread looks for a signal.
const POLL: Duration = Duration::from_millis(20);

/// Runs `work(stop)` without the GIL; a signal handler that raises (Ctrl-C)
/// sets `stop` and its exception is returned once `work` has returned.
pub(crate) fn interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&AtomicBool) -> T + Send,
) -> PyResult<T> {
    let stop = AtomicBool::new(false);
    py.detach(|| {
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| work(&stop));
            let mut raised = None;
            while !worker.is_finished() {
                std::thread::park_timeout(POLL);
                if raised.is_none()
                    && let Err(e) = Python::attach(|py| py.check_signals())
                {
                    stop.store(true, Ordering::SeqCst);
                    raised = Some(e);
                }
            }
            let out = worker.join().map_err(|_| {
                pyo3::exceptions::PyRuntimeError::new_err(
                    "dtml's worker thread panicked (a bug in dtml: please report it)",
                )
            })?;
            match raised {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
    })
}

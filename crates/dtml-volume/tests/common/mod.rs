//! Shared by the tests that compare against live Python peers.

use std::path::PathBuf;
use std::process::Command;

/// The interpreter with the peers installed (`cargo xtask test` sets
/// `DTML_PYTHON`). Without it the test is skipped locally but fails in CI.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("DTML_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "DTML_PYTHON is not set: run the suite with `cargo xtask test`, which installs the Python peers"
            )
        }
        None => {
            eprintln!(
                "skipped: DTML_PYTHON not set (run `cargo xtask test` to compare against the Python peers)"
            );
            None
        }
    }
}

/// Runs a Python script with arguments; panics with its stderr on failure.
pub fn run_python(python: &PathBuf, script: &str, args: &[&std::path::Path]) -> String {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("start python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

//! Finds (or builds) the `dtml` binary and runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `dtml` binary: `DTML_BIN` (set by `cargo xtask test`), else built once.
pub fn dtml_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("DTML_BIN") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "dtml-cli", "--bin", "dtml"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building dtml failed");
        root.join("target/debug/dtml")
    })
}

/// Runs `dtml` with arguments.
pub fn dtml(args: &[&str]) -> Output {
    Command::new(dtml_bin())
        .args(args)
        .env("DTML_LOG", "warn")
        .output()
        .expect("start dtml")
}

/// Runs `dtml` and asserts success, returning stdout.
pub fn dtml_ok(args: &[&str]) -> String {
    let out = dtml(args);
    assert!(
        out.status.success(),
        "dtml {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `dtml`, asserts failure without a panic, returns stderr.
#[allow(dead_code)]
pub fn dtml_err(args: &[&str]) -> String {
    let out = dtml(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "dtml {args:?} should fail");
    assert!(!err.contains("panicked"), "dtml {args:?} panicked:\n{err}");
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Generates and prepares a tiny dataset: 6 training cases (2 labelled), 2
/// test, with `extra` flags for `dtml prepare`.
#[allow(dead_code)]
pub fn tiny_prepared(dir: &Path, extra: &[&str]) -> PathBuf {
    let data = dir.join("data");
    let out = dir.join("prepared");
    dtml_ok(&[
        "generate",
        "--out",
        s(&data),
        "--shape",
        "36,36,20",
        "--train-cases",
        "6",
        "--test-cases",
        "2",
        "--seed",
        "5",
    ]);
    let mut prepare = vec![
        "prepare",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--labelled",
        "2",
        "--patch",
        "32,32,16",
        "--margin",
        "4,4,full",
    ];
    prepare.extend_from_slice(extra);
    dtml_ok(&prepare);
    out
}

/// A fake run directory: run.json and safetensors of seeded width-2 V-Nets.
#[allow(dead_code)]
pub fn fake_run(dir: &Path, patch: dtml_volume::Xyz<usize>, width_in_json: usize) {
    use dtml_infer::run::{RUN_FORMAT, RUN_VERSION, RunInfo, StudentFile, StudentRole};
    std::fs::create_dir_all(dir).unwrap();
    let mut students = Vec::new();
    for (seed, role, file) in [
        (1, StudentRole::Region, "student_a.safetensors"),
        (2, StudentRole::Boundary, "student_b.safetensors"),
    ] {
        let net = dtml_model::VNet::new(
            dtml_model::VNetConfig {
                width: 2,
                ..Default::default()
            },
            seed,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        net.save_safetensors(&dir.join(file)).unwrap();
        students.push(StudentFile {
            role,
            file: file.into(),
        });
    }
    RunInfo {
        format: RUN_FORMAT.into(),
        version: RUN_VERSION,
        method: dtml_infer::Method::Dtml,
        network: dtml_model::VNetConfig {
            width: width_in_json,
            ..Default::default()
        },
        patch,
        foreground: vec![1],
        students,
        iteration: 100,
        sharpness: 1500.0,
        channel: None,
    }
    .write(dir)
    .unwrap();
}

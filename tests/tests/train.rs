//! `dtml train` as a user runs it: prepare -> train -> evaluate -> predict,
//! reproducibility, and a run killed with SIGKILL then resumed.

mod common;
use common::{dtml_bin, dtml_err, dtml_ok, s};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generates and prepares a tiny dataset: 6 training cases (2 labelled), 2 test.
fn tiny_prepared(dir: &Path) -> PathBuf {
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
    dtml_ok(&[
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
    ]);
    out
}

fn train_args<'a>(
    data: &'a Path,
    run: &'a Path,
    method: &'a str,
    iterations: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(run),
        "--method",
        method,
        "--iterations",
        iterations,
        "--patch",
        "32,32,16",
        "--width",
        "2",
        "--labelled-batch",
        "1",
        "--unlabelled-batch",
        "1",
        "--checkpoint-every",
        "3",
    ]
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["iteration"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_method_trains_and_its_run_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_prepared(dir.path());
    for method in ["dtml", "dtml-released", "dtc", "supervised"] {
        let run = dir.path().join(format!("run-{method}"));
        dtml_ok(&train_args(&data, &run, method, "4"));
        let log = losses(&run);
        assert_eq!(log.len(), 4, "{method}");
        assert!(
            log.iter().all(|(_, l)| l.is_finite() && *l > 0.0),
            "{method}: {log:?}"
        );
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(info["method"], method);
        let students = info["students"].as_array().unwrap().len();
        assert_eq!(students, if method.starts_with("dtml") { 2 } else { 1 });
        assert!(run.join("checkpoint/trainer.json").is_file());
    }
    let run = dir.path().join("run-dtml");
    let eval = dir.path().join("eval");
    dtml_ok(&[
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&eval),
        "--stride",
        "16,16,8",
    ]);
    assert!(eval.join("metrics.csv").is_file());
    let scans = dir.path().join("data/imagesTs");
    let pred = dir.path().join("pred");
    dtml_ok(&[
        "predict",
        "--model",
        s(&run),
        "--input",
        s(&scans),
        "--out",
        s(&pred),
        "--stride",
        "16,16,8",
    ]);
    let written = std::fs::read_dir(&pred).unwrap().count();
    assert_eq!(written, 2);

    // A finished run refuses to be overwritten, and bad flags are clear errors.
    let err = dtml_err(&train_args(&data, &run, "dtml", "4"));
    assert!(err.contains("--resume"), "{err}");
    let err = dtml_err(
        &train_args(&data, &dir.path().join("x"), "dtml", "4")[..]
            .iter()
            .map(|a| if *a == "32,32,16" { "30,32,16" } else { a })
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("multiple of 16"), "{err}");
    let err = dtml_err(&[
        "train",
        "--data",
        s(&dir.path().join("nothing")),
        "--out",
        s(&run),
    ]);
    assert!(err.contains("nothing"), "{err}");
}

#[test]
fn same_seed_same_losses_and_sigkill_then_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_prepared(dir.path());
    let whole = dir.path().join("whole");
    let n = "24";
    dtml_ok(&train_args(&data, &whole, "dtml", n));
    let reference = losses(&whole);
    assert_eq!(reference.len(), 24);

    let again = dir.path().join("again");
    dtml_ok(&train_args(&data, &again, "dtml", n));
    assert_eq!(losses(&again), reference, "same seed, same losses");

    let killed = dir.path().join("killed");
    let mut child = Command::new(dtml_bin())
        .args(train_args(&data, &killed, "dtml", n))
        .env("DTML_LOG", "warn")
        .spawn()
        .unwrap();
    let state = killed.join("checkpoint/trainer.json");
    let start = Instant::now();
    loop {
        let at = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["next_iteration"].as_u64());
        if at.is_some_and(|i| i >= 3) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = losses(&killed).len();
    assert!(before < 24, "the kill came before the end");

    let mut resume = train_args(&data, &killed, "dtml", n);
    resume.push("--resume");
    dtml_ok(&resume);
    assert_eq!(losses(&killed), reference, "resumed run continues exactly");
}

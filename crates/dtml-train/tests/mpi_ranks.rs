//! Data-parallel training over MPI (cargo feature `mpi`): the test spawns
//! `mpirun -np 2` on its own binary, whose `rank` test then trains as one
//! rank of the job. Checked: every rank ends with bit-identical weights; a
//! rank killed mid-run ends the whole job with an error (no hang); and
//! `--resume` of the killed job continues with exactly the losses of an
//! uninterrupted one. Needs Open MPI's `mpirun` (`cargo xtask test`
//! installs it where it can).

#![cfg(feature = "mpi")]

use dtml_train::collective::{Collective, MpiGroup};
use dtml_train::{TrainConfig, TrainRequest};
use dtml_volume::PreparedDataset;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ITERATIONS: usize = 12;

mod common;

fn config() -> TrainConfig {
    TrainConfig {
        threads: Some(1),
        ..common::tiny_config(ITERATIONS)
    }
}

/// One rank of the job the `mpirun_*` test starts (does nothing when run
/// by the test harness itself).
#[test]
fn rank() {
    let Some(dir) = std::env::var_os("DTML_MPI_TEST_DIR").map(PathBuf::from) else {
        return;
    };
    let group = MpiGroup::init().unwrap();
    let r = group.rank();
    // The all-reduce is a mean: rank r sends r + 1 and gets the mean of all.
    let mut probe = vec![(r + 1) as f32; 4];
    group.all_reduce_mean(&mut probe).unwrap();
    std::fs::write(dir.join(format!("mean.{r}")), format!("{:?}", probe)).unwrap();
    std::fs::write(dir.join(format!("pid.{r}")), std::process::id().to_string()).unwrap();
    let data = PreparedDataset::open(&dir.join("prepared")).unwrap();
    let run = PathBuf::from(std::env::var_os("DTML_MPI_TEST_RUN").unwrap());
    let resume = std::env::var_os("DTML_MPI_TEST_RESUME").is_some();
    // A slow rank, so the parent can kill it mid-run.
    if std::env::var_os("DTML_MPI_TEST_SLOW").is_some() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let req = TrainRequest {
        data: &data,
        run_dir: &run,
        config: config(),
        device: candle_core::Device::Cpu,
        resume,
        stop: None,
    };
    let slow = std::env::var_os("DTML_MPI_TEST_SLOW").is_some();
    let outcome = dtml_train::trainer::train_in_group(req, &group, &mut |e| {
        if slow && matches!(e, dtml_train::Event::Iteration(_)) {
            std::thread::sleep(Duration::from_millis(300));
        }
    })
    .unwrap();
    std::fs::write(
        run.join(format!("digest.{r}")),
        outcome.weights_digest.to_string(),
    )
    .unwrap();
}

/// `mpirun -np 2` of this binary's `rank` test into `run`.
fn mpirun(dir: &Path, run: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe", "--allow-run-as-root"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "rank", "--nocapture", "--test-threads", "1"])
        .env("DTML_MPI_TEST_DIR", dir)
        .env("DTML_MPI_TEST_RUN", run)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["iteration"], v["loss"])
        })
        .collect()
}

#[test]
fn mpirun_two_ranks_agree_and_a_killed_job_resumes_exactly() {
    if std::env::var_os("DTML_MPI_TEST_DIR").is_some() {
        return; // inside the job
    }
    let dir = tempfile::tempdir().unwrap();
    common::tiny_prepared(dir.path());

    // Uninterrupted: both ranks end with the same weights.
    let whole = dir.path().join("whole");
    let out = mpirun(dir.path(), &whole, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = |r: usize| std::fs::read_to_string(whole.join(format!("digest.{r}"))).unwrap();
    assert_eq!(digest(0), digest(1), "ranks hold bit-identical weights");
    for r in 0..2 {
        let mean = std::fs::read_to_string(dir.path().join(format!("mean.{r}"))).unwrap();
        assert_eq!(
            mean, "[1.5, 1.5, 1.5, 1.5]",
            "rank {r}: the mean of 1 and 2"
        );
    }
    let reference = losses(&whole);
    assert_eq!(reference.len(), ITERATIONS);

    // Killed: SIGKILL rank 1 after a few checkpoints; the job must end, with
    // an error, and not hang.
    let killed = dir.path().join("killed");
    let mut job = mpirun(dir.path(), &killed, &[("DTML_MPI_TEST_SLOW", "1")])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !killed.join("log.jsonl").is_file()
        || std::fs::read_to_string(killed.join("log.jsonl"))
            .unwrap()
            .lines()
            .count()
            < 4
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the job never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = std::fs::read_to_string(dir.path().join("pid.1")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = job.kill();
            panic!("the job hung after a rank died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a dead rank fails the job");
    assert!(losses(&killed).len() < ITERATIONS, "killed before the end");

    // Resumed by the same number of ranks: exactly the uninterrupted losses.
    let out = mpirun(dir.path(), &killed, &[("DTML_MPI_TEST_RESUME", "1")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(losses(&killed), reference, "resume continues exactly");
    assert_eq!(
        std::fs::read_to_string(killed.join("digest.0")).unwrap(),
        digest(0),
        "and ends with the same weights"
    );
}

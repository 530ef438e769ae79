//! `dtml train` as a user runs it: prepare -> train -> evaluate -> predict,
//! reproducibility, and a run killed with SIGKILL then resumed.

mod common;
use common::{dtml_bin, dtml_err, dtml_ok, s, tiny_prepared};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn train_args<'a>(
    data: &'a Path,
    run: &'a Path,
    method: &'a str,
    iterations: &'a str,
) -> Vec<&'a str> {
    // BCP pairs halves of the labelled and unlabelled patches.
    let batch = if method == "bcp" { "2" } else { "1" };
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
        batch,
        "--unlabelled-batch",
        batch,
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
    let data = tiny_prepared(dir.path(), &[]);
    // Every registered method: a new one is covered without an edit here.
    for method in dtml_train::Method::ALL.map(|m| m.name()) {
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
        assert_eq!(info["foreground"], serde_json::json!([1]));
        let students = info["students"].as_array().unwrap().len();
        // As the method declares (a teacher, CPS's second network: not exported).
        let exported = dtml_train::methods::plugin(method.parse().unwrap())
            .networks()
            .iter()
            .filter(|n| n.exported_as.is_some())
            .count();
        assert_eq!(students, exported, "{method}");
        assert_eq!(students, if method.starts_with("dtml") { 2 } else { 1 });
        assert!(run.join("checkpoint/trainer.json").is_file());
        // Every run's exported networks predict (MC-Net's carry a second
        // decoder that inference builds and does not run).
        let eval = dir.path().join(format!("eval-{method}"));
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
        assert!(eval.join("metrics.csv").is_file(), "{method}");
    }
    let run = dir.path().join("run-dtml");
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
    let masks = std::fs::read_dir(&pred)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".nii.gz")
        })
        .count();
    assert_eq!(masks, 2);
    assert!(pred.join("dtml-outputs.json").is_file());

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
    // DTML, and the mean teacher, whose teacher is not trained by SGD but
    // must come back from the checkpoint all the same.
    // CPS, whose second network is trained but not exported, MC-Net, whose
    // network has a second decoder, and SASSNet, whose discriminator and
    // its Adam moments live beside the network.
    // BCP, whose second stage restarts SGD and copies the teacher.
    for method in ["dtml", "mean-teacher", "cps", "mc-net", "sassnet", "bcp"] {
        kill_and_resume(method);
    }
}

fn kill_and_resume(method: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_prepared(dir.path(), &[]);
    let whole = dir.path().join("whole");
    let n = "24";
    dtml_ok(&train_args(&data, &whole, method, n));
    let reference = losses(&whole);
    assert_eq!(reference.len(), 24);

    let again = dir.path().join("again");
    dtml_ok(&train_args(&data, &again, method, n));
    assert_eq!(
        losses(&again),
        reference,
        "{method}: same seed, same losses"
    );

    let killed = dir.path().join("killed");
    let mut child = Command::new(dtml_bin())
        .args(train_args(&data, &killed, method, n))
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

    let mut resume = train_args(&data, &killed, method, n);
    // Resumed with every case read from the cache per patch (the first
    // part held them in memory): the budget may change, the batches not.
    resume.extend(["--resume", "--data-memory", "0"]);
    dtml_ok(&resume);
    assert_eq!(
        losses(&killed),
        reference,
        "{method}: resumed run continues exactly"
    );
}

#[test]
fn validation_keeps_the_best_students_config_file_and_nan_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("validation.list");
    std::fs::write(&list, "synth_005\n").unwrap();
    let prepared = tiny_prepared(dir.path(), &["--validation-list", s(&list)]);
    // Hyper-parameters from a TOML file, one overridden by a flag.
    let config = dir.path().join("train.toml");
    std::fs::write(
        &config,
        "method = \"dtml\"\niterations = 6\npatch = [32, 32, 16]\nwidth = 2\n\
         labelled_batch = 1\nunlabelled_batch = 1\nvalidate_every = 2\n\
         validation_stride = [16, 16, 8]\nlr = 0.5\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    dtml_ok(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&run),
        "--config",
        s(&config),
        "--lr",
        "0.02",
        "--threads",
        "1",
    ]);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoint/trainer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["config"]["lr"], 0.02, "the flag overrides the file");
    assert_eq!(state["config"]["validate_every"], 2);
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let validated: Vec<(u64, f64)> = log
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Some((v["iteration"].as_u64()?, v["validation_dice"].as_f64()?))
        })
        .collect();
    assert_eq!(
        validated.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
    let best = validated
        .iter()
        .fold(validated[0], |b, v| if v.1 > b.1 { *v } else { b });
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        info["iteration"].as_u64().unwrap(),
        best.0,
        "exported students are the best"
    );
    // The image channel the cache was prepared with travels to inference.
    assert_eq!(info["channel"], 0, "{info}");
    assert!(run.join("curves.png").is_file() && run.join("overlay.png").is_file());

    // A diverging run stops with a clear error and keeps its last good checkpoint.
    let nan = dir.path().join("nan");
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&nan),
        "--config",
        s(&config),
        "--lr",
        "1e30",
        "--validate-every",
        "0",
        "--checkpoint-every",
        "1",
    ]);
    assert!(err.contains("not finite"), "{err}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(nan.join("checkpoint/trainer.json")).unwrap(),
    )
    .unwrap();
    let kept = state["next_iteration"].as_u64().unwrap();
    assert!((1..6).contains(&kept), "{kept}");
    let unknown = dir.path().join("bad.toml");
    std::fs::write(&unknown, "iteratons = 3\n").unwrap();
    let err = dtml_err(&[
        "train",
        "--data",
        s(&prepared),
        "--out",
        s(&nan),
        "--config",
        s(&unknown),
    ]);
    assert!(
        err.contains("iteratons") && err.contains("bad.toml"),
        "{err}"
    );
}

/// The README's first command as a newcomer runs it (with fewer
/// iterations): data, cache, the DTML students and their evaluation, then
/// the supervised baseline on the same labelled cases and its evaluation,
/// and the lines that say what the numbers mean.
#[test]
fn the_demo_trains_dtml_and_its_supervised_baseline_and_puts_them_in_context() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = dtml_ok(&["train", "--out", s(&out), "--iterations", "2"]);
    for folder in ["run", "supervised"] {
        assert!(out.join(folder).join("run.json").is_file(), "{folder}");
    }
    for folder in ["evaluation", "supervised-evaluation"] {
        assert!(out.join(folder).join("metrics.json").is_file(), "{folder}");
    }
    let baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("supervised/run.json")).unwrap())
            .unwrap();
    assert_eq!(baseline["method"], "supervised", "{baseline}");
    assert_eq!(baseline["iteration"], 2, "{baseline}");
    for line in [
        "dtml: mean test Dice ",
        "labelled + ",
        "supervised baseline: mean test Dice ",
        "the paper's recipe is 6000 iterations",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
}

#[test]
fn help_shows_every_default_and_choices_are_typed() {
    let help = dtml_ok(&["train", "--help"]);
    for (flag, default) in [
        ("--iterations", "[default: 6000]"),
        ("--lr ", "[default: 0.01]"),
        ("--patch", "[default: 112,112,80]"),
        ("--sdm-loss", "[default: l1]"),
        // Each method's own: 0 for dtml (measured better), the released
        // 0.5 for the others; the consistency weight 1, or the mean teachers' 0.1.
        ("--dropout", "[default: the method's]"),
        ("--consistency", "[default: the method's]"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing:\n{help}"));
        let entry = &help[at..at + help[at..].find("\n\n").unwrap_or(help.len() - at)];
        assert!(entry.contains(default), "{flag}: {entry}");
    }
    // Every hyper-parameter that is a flag shows its default.
    let defaults = serde_json::to_value(dtml_train::TrainConfig::default()).unwrap();
    let mut flags = 0;
    for key in defaults.as_object().unwrap().keys() {
        let flag = format!("--{} <", key.replace('_', "-"));
        let Some(at) = help.find(&flag) else {
            continue;
        };
        flags += 1;
        let entry = &help[at..at + help[at..].find("\n\n").unwrap_or(help.len() - at)];
        assert!(entry.contains("[default: "), "{flag}: {entry}");
    }
    assert!(flags >= 20, "only {flags} TrainConfig keys found as flags");
    // A choice outside the enum is refused by the parser, naming the choices
    // (it used to become L1 silently past a check elsewhere).
    let err = dtml_err(&["train", "--sdm-loss", "l2"]);
    assert!(
        err.contains("l2") && err.contains("l1") && err.contains("mse"),
        "{err}"
    );
    let err = dtml_err(&["train", "--method", "fixmatch"]);
    assert!(err.contains("dtml-released"), "{err}");
    // Sizes are three values x,y,z, refused with the reason otherwise.
    let err = dtml_err(&["train", "--patch", "112,112"]);
    assert!(err.contains("x,y,z") && err.contains("2 values"), "{err}");
    let err = dtml_err(&["train", "--validation-stride", "8,a,4"]);
    assert!(err.contains("\"a\""), "{err}");
    // The TOML key takes the same names.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "sdm_loss = \"l2\"\n").unwrap();
    let err = dtml_err(&[
        "train",
        "--config",
        s(&toml),
        "--out",
        s(&dir.path().join("r")),
    ]);
    assert!(err.contains("l2") && err.contains("c.toml"), "{err}");
}

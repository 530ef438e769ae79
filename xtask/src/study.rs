//! `cargo xtask study`: the methods side by side on the built-in synthetic
//! data (LA-like hard mode by default), 20 % labelled, the same labelled
//! cases and iteration budget, several seeds, beside
//! - the all-labelled bound (supervised on every training case), so a
//!   method's share of the labelled / all-labelled gap can be read off, and
//! - the PyTorch reference (`bench/torch_reference.py`, the trainer the
//!   lockstep test holds ours to) trained on the same prepared cache and
//!   scored by the same `dtml evaluate`, so only the training
//!   implementation differs.
//!
//! Reports mean Dice +- std over seeds, the predicted / reference volume
//! ratio (under 1: masks too small) and the fraction of the gap closed.
//! Runs that already have metrics are reused, so an interrupted study
//! continues.

use crate::bench::torch_python;
use crate::{cargo, root, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of a study.
pub struct Study {
    pub out: PathBuf,
    pub iterations: usize,
    pub seeds: Vec<u64>,
    pub methods: Vec<String>,
    /// Difficulty of the synthetic data (0 to 1).
    pub difficulty: f64,
    /// Methods the PyTorch reference also trains (empty: none).
    pub reference: Vec<String>,
}

const TRAIN_CASES: usize = 20;
const TEST_CASES: usize = 10;
const PATCH: &str = "48,48,32";
const WIDTH: &str = "8";

/// What every run of the study shares, and why, printed under the table.
const DEFAULTS: &str = "Every run uses dtml's defaults, which follow measurement where it departs from the released code: \
no channel dropout for dtml, dtc and supervised (the released V-Net's 0.5 gave smaller masks and lower Dice for \
dtml and supervised on LA-like data; BENCHMARKS.md, \"Defaults on LA-like data\"; `--dropout 0.5` restores it; \
mean-teacher and ua-mt keep their released 0.5, which their teachers' perturbations rely on), labelled cases cropped to their label box \
plus 15 voxels in x and y, unlabelled and test scans to their non-zero box. The PyTorch reference trains with the same \
dropout (bench/torch_reference.py, argument DROPOUT).";

/// Mean Dice and the predicted / reference foreground volume over the cases.
struct Score {
    dice: f64,
    volume_ratio: f64,
}

fn score_of(metrics: &Path) -> Result<Score> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let voxels = |key: &str| -> f64 {
        v["cases"]
            .as_array()
            .map(|cases| cases.iter().filter_map(|c| c[key].as_f64()).sum())
            .unwrap_or(f64::NAN)
    };
    Ok(Score {
        dice: v["summary"]["dice"]["mean"].as_f64().unwrap_or(0.0),
        volume_ratio: voxels("prediction_voxels") / voxels("reference_voxels"),
    })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One row of the table: who trains what on which cache.
struct Row {
    label: String,
    method: String,
    all_labelled: bool,
    pytorch: bool,
}

/// Generates the data once and prepares the 20 %-labelled and the
/// all-labelled caches.
fn prepare(out: &Path, dtml: &Path, difficulty: f64) -> Result<()> {
    let data = out.join("data");
    if !data.join("dataset.json").is_file() {
        run(Command::new(dtml)
            .args(["generate", "--out"])
            .arg(&data)
            .args(["--train-cases", &TRAIN_CASES.to_string()])
            .args(["--test-cases", &TEST_CASES.to_string()])
            .args(["--difficulty", &difficulty.to_string()]))?;
    }
    for (dir, fraction) in [("prepared", "0.2"), ("prepared-all", "1.0")] {
        if !out.join(dir).join("manifest.json").is_file() {
            run(Command::new(dtml)
                .args(["prepare", "--data"])
                .arg(&data)
                .arg("--out")
                .arg(out.join(dir))
                .args(["--labelled-fraction", fraction])
                .args(["--patch", PATCH, "--margin", "8,8,4"]))?;
        }
    }
    Ok(())
}

pub fn study(s: &Study) -> Result<()> {
    let out = root().join(&s.out);
    run(cargo().args(["build", "--release", "-p", "dtml-cli", "--bin", "dtml"]))?;
    let dtml = root().join("target/release/dtml");
    prepare(&out, &dtml, s.difficulty)?;
    let python = if s.reference.is_empty() {
        None
    } else {
        Some(torch_python().context(
            "the PyTorch reference needs a Python with torch (DTML_TORCH_PYTHON); pass --reference '' to skip it",
        )?)
    };
    let mut rows: Vec<Row> = s
        .methods
        .iter()
        .map(|m| Row {
            label: m.clone(),
            method: m.clone(),
            all_labelled: false,
            pytorch: false,
        })
        .collect();
    rows.push(Row {
        label: "supervised, all labelled (bound)".into(),
        method: "supervised".into(),
        all_labelled: true,
        pytorch: false,
    });
    rows.extend(s.reference.iter().map(|m| Row {
        label: format!("{m} (PyTorch reference)"),
        method: m.clone(),
        all_labelled: false,
        pytorch: true,
    }));

    let mut scores: Vec<Vec<Score>> = rows.iter().map(|_| Vec::new()).collect();
    // Seed by seed, so a partial study already compares every row.
    for seed in &s.seeds {
        for (row, got) in rows.iter().zip(scores.iter_mut()) {
            let name = format!(
                "{}{}{}-seed{seed}-it{}",
                if row.pytorch { "torch-" } else { "" },
                row.method,
                if row.all_labelled { "-all" } else { "" },
                s.iterations
            );
            let prepared = out.join(if row.all_labelled {
                "prepared-all"
            } else {
                "prepared"
            });
            let run_dir = out.join("runs").join(&name);
            let eval = out.join("eval").join(&name);
            let metrics = eval.join("metrics.json");
            if !metrics.is_file() {
                if run_dir.exists() {
                    std::fs::remove_dir_all(&run_dir)?;
                }
                let start = std::time::Instant::now();
                let mut evaluate = Command::new(&dtml);
                evaluate.arg("evaluate");
                if let (true, Some(py)) = (row.pytorch, &python) {
                    run(Command::new(py)
                        .arg(root().join("bench/torch_reference.py"))
                        .arg("train")
                        .arg(&prepared)
                        .arg(&run_dir)
                        .args([&row.method, &s.iterations.to_string(), &seed.to_string()])
                        .args([WIDTH, PATCH]))?;
                    for student in ["student_a.pth", "student_b.pth"] {
                        let file = run_dir.join(student);
                        if file.is_file() {
                            evaluate.arg("--model").arg(file);
                        }
                    }
                    evaluate.args(["--patch", PATCH]);
                } else {
                    run(Command::new(&dtml)
                        .args(["train", "--data"])
                        .arg(&prepared)
                        .arg("--out")
                        .arg(&run_dir)
                        .args(["--method", &row.method, "--seed", &seed.to_string()])
                        .args(["--iterations", &s.iterations.to_string()])
                        .args(["--patch", PATCH, "--width", WIDTH]))?;
                    evaluate.arg("--model").arg(&run_dir);
                }
                eprintln!("{name}: trained in {:.0} s", start.elapsed().as_secs_f64());
                run(evaluate
                    .arg("--data")
                    .arg(&prepared)
                    .arg("--out")
                    .arg(&eval))?;
            }
            got.push(score_of(&metrics)?);
        }
    }

    let dice_of = |i: usize| -> Vec<f64> { scores[i].iter().map(|s| s.dice).collect() };
    let low = rows
        .iter()
        .position(|r| r.method == "supervised" && !r.all_labelled && !r.pytorch)
        .map(|i| mean_std(&dice_of(i)).0);
    let bound_index = rows.iter().position(|r| r.all_labelled);
    let Some(bound_index) = bound_index else {
        bail!("the study lost its bound row");
    };
    let bound = mean_std(&dice_of(bound_index)).0;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "method",
        "mean Dice +- std over seeds",
        "per seed",
        "predicted / reference volume",
        "share of the labelled -> all-labelled gap closed",
    ]);
    let mut results = serde_json::Map::new();
    for (i, row) in rows.iter().enumerate() {
        let dices = dice_of(i);
        let (m, sd) = mean_std(&dices);
        let (volume, _) = mean_std(&scores[i].iter().map(|s| s.volume_ratio).collect::<Vec<_>>());
        let closed = match low {
            Some(low) if !row.all_labelled && (bound - low).abs() > 1e-9 => {
                Some((m - low) / (bound - low))
            }
            _ => None,
        };
        let per: Vec<String> = dices.iter().map(|d| format!("{d:.4}")).collect();
        table.add_row([
            row.label.clone(),
            format!("{m:.4} +- {sd:.4}"),
            per.join(", "),
            format!("{volume:.3}"),
            closed.map_or("-".into(), |c| format!("{:.0} %", 100.0 * c)),
        ]);
        results.insert(
            row.label.clone(),
            serde_json::json!({"dice": dices, "mean": m, "std": sd, "volume_ratio": volume,
                               "gap_closed": closed, "pytorch": row.pytorch, "all_labelled": row.all_labelled}),
        );
    }
    let summary = serde_json::json!({
        "iterations": s.iterations, "seeds": s.seeds, "labelled_fraction": 0.2,
        "difficulty": s.difficulty, "train_cases": TRAIN_CASES, "test_cases": TEST_CASES,
        "patch": PATCH, "width": WIDTH, "all_labelled_bound": bound,
        "supervised_gap": low.map(|l| bound - l), "results": results,
    });
    std::fs::write(
        out.join("study.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let table = format!("{table}\n\n{DEFAULTS}\n");
    std::fs::write(out.join("study.md"), &table)?;
    print!("{table}");
    Ok(())
}

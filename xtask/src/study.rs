//! `cargo xtask study`: the methods side by side on one prepared cache,
//! the same labelled cases, iteration budget and evaluator, several seeds:
//! the built-in synthetic data (LA-like hard mode by default, 20 %
//! labelled) or the user's own cache (`--prepared`), beside
//! - the all-labelled bound (supervised on every training case; for the
//!   user's data when `--prepared-all` names that cache), so a method's
//!   share of the labelled / all-labelled gap can be read off, and
//! - the PyTorch reference (`bench/torch_reference.py`, the trainer the
//!   lockstep test holds ours to) trained on the same cache and scored by
//!   the same `dtml evaluate`, so only the training implementation differs.
//!
//! Reports mean +- std over seeds of Dice, Jaccard, HD95 and ASD, the
//! predicted / reference volume ratio (under 1: masks too small), the
//! share of the gap closed, per-case paired Dice differences against
//! supervised and against DTML (mean +- std over case x seed pairs, and
//! how many pairs the row wins), training time per run, and a picture of
//! the Dice means with their spread (`study.png`). It resumes: finished
//! runs are reused, an interrupted dtml run continues from its checkpoint
//! (`dtml train --resume`), and the table is written from whatever has
//! finished after every run.

use crate::bench::torch_python;
use crate::{cargo, root, run};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
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
    /// The user's prepared cache in place of the built-in data.
    pub prepared: Option<PathBuf>,
    /// Its all-labelled counterpart (the bound row), if any.
    pub prepared_all: Option<PathBuf>,
    /// Training patch `x,y,z` and V-Net width of every run.
    pub patch: String,
    pub width: usize,
    /// A folder (in the repository) that keeps each finished run's scores
    /// and step times, so a study continues on another machine ([`record`]).
    pub record: Option<PathBuf>,
}

/// A study's finished runs kept beside the code: `eval/<run>/metrics.json`
/// (every score the table reads) and `runs/<run>/log.jsonl` reduced to its
/// step times, a few kB a run. Runs found there are not trained again; the
/// weights are not kept (the table does not need them).
mod record {
    use super::*;

    const FILES: [(&str, &str); 2] = [("eval", "metrics.json"), ("runs", "log.jsonl")];

    /// Copies run `name` from `record` into `out` where `out` lacks it.
    pub fn restore(record: &Path, out: &Path, name: &str) -> Result<()> {
        if !record
            .join("eval")
            .join(name)
            .join("metrics.json")
            .is_file()
        {
            return Ok(());
        }
        for (folder, file) in FILES {
            let (from, to) = (
                record.join(folder).join(name).join(file),
                out.join(folder).join(name),
            );
            if from.is_file() && !to.join(file).is_file() {
                std::fs::create_dir_all(&to)?;
                std::fs::copy(&from, to.join(file))?;
            }
        }
        Ok(())
    }

    /// Keeps finished run `name` of `out` in `record`.
    pub fn keep(record: &Path, out: &Path, name: &str) -> Result<()> {
        let eval = record.join("eval").join(name);
        std::fs::create_dir_all(&eval)?;
        std::fs::copy(
            out.join("eval").join(name).join("metrics.json"),
            eval.join("metrics.json"),
        )?;
        if let Ok(log) = std::fs::read_to_string(out.join("runs").join(name).join("log.jsonl")) {
            let seconds: String = log
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| Some(serde_json::json!({"seconds": v["seconds"].as_f64()?})))
                .map(|v| format!("{v}\n"))
                .collect();
            let runs = record.join("runs").join(name);
            std::fs::create_dir_all(&runs)?;
            std::fs::write(runs.join("log.jsonl"), seconds)?;
        }
        Ok(())
    }
}

const TRAIN_CASES: usize = 20;
const TEST_CASES: usize = 10;

/// What every run of the study shares, and why, printed under the table.
const DEFAULTS: &str = "Every run uses dtml's defaults, which follow measurement where it departs from the released code: \
no channel dropout for dtml (the released V-Net's 0.5 gave lower Dice for it on LA-like and hard built-in data; \
BENCHMARKS.md, \"Defaults on LA-like data\"; `--dropout 0.5` restores it), the released 0.5 for every other \
method (supervised measured better with it on the hard data), labelled cases cropped to their label box \
plus 15 voxels in x and y, unlabelled and test scans to their non-zero box. The PyTorch reference trains with the same \
dropout (bench/torch_reference.py, argument DROPOUT).";

/// One run's scores: means over the test cases, and each case's Dice.
struct Score {
    dice: f64,
    jaccard: f64,
    hd95: f64,
    asd: f64,
    volume_ratio: f64,
    cases: BTreeMap<String, f64>,
    /// Training time, when the run recorded it.
    seconds: Option<f64>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn score_of(metrics: &Path, run_dir: &Path) -> Result<Score> {
    let v = read_json(metrics)?;
    let cases = v["cases"].as_array().cloned().unwrap_or_default();
    let voxels = |key: &str| -> f64 { cases.iter().filter_map(|c| c[key].as_f64()).sum() };
    let mean = |key: &str| v["summary"][key]["mean"].as_f64().unwrap_or(f64::NAN);
    Ok(Score {
        dice: mean("dice"),
        jaccard: mean("jaccard"),
        hd95: mean("hd95"),
        asd: mean("asd"),
        volume_ratio: voxels("prediction_voxels") / voxels("reference_voxels"),
        cases: cases
            .iter()
            .filter_map(|c| Some((c["case"].as_str()?.to_string(), c["dice"].as_f64()?)))
            .collect(),
        seconds: training_seconds(run_dir),
    })
}

/// Seconds spent training: the sum of `log.jsonl`'s step times (a resumed
/// run's parts included), or the PyTorch reference's `reference.json`.
fn training_seconds(run_dir: &Path) -> Option<f64> {
    if let Ok(v) = read_json(&run_dir.join("reference.json")) {
        return v["seconds"].as_f64();
    }
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).ok()?;
    let total: f64 = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seconds"].as_f64())
        .sum();
    (total > 0.0).then_some(total)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        f64::NAN
    };
    (mean, var.sqrt())
}

/// `mean +- std` of the finite values (the mean alone from one), with how
/// many runs had one when some did not (HD95 and ASD are undefined for a
/// run with an empty mask).
fn shown(v: &[f64], digits: usize) -> String {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let (m, s) = mean_std(&finite);
    let mut text = if finite.is_empty() {
        "-".into()
    } else if s.is_finite() {
        format!("{m:.digits$} +- {s:.digits$}")
    } else {
        format!("{m:.digits$}")
    };
    if finite.len() < v.len() {
        text += &format!(" ({} of {} runs)", finite.len(), v.len());
    }
    text
}

/// Below this labelled -> all-labelled gap in Dice, the share of it a
/// method closes is noise and is not shown.
const SMALLEST_GAP: f64 = 0.01;

/// One row of the table: who trains what on which cache.
struct Row {
    label: String,
    method: String,
    all_labelled: bool,
    pytorch: bool,
}

impl Row {
    /// The run's folder name: what it trains, and the patch and width when
    /// they are not the study's defaults (so runs of other sizes are never
    /// reused as these).
    fn run_name(&self, seed: u64, s: &Study) -> String {
        let size = if s.patch == DEFAULT_PATCH && s.width == DEFAULT_WIDTH {
            String::new()
        } else {
            format!("-p{}-w{}", s.patch.replace(',', "x"), s.width)
        };
        format!(
            "{}{}{}-seed{seed}-it{}{size}",
            if self.pytorch { "torch-" } else { "" },
            self.method,
            if self.all_labelled { "-all" } else { "" },
            s.iterations
        )
    }
}

/// The study's default patch and width (`cargo xtask study --patch
/// --width`): small enough for 2 cores.
pub const DEFAULT_PATCH: &str = "48,48,32";
pub const DEFAULT_WIDTH: usize = 8;

/// Generates the built-in data once and prepares its 20 %-labelled and
/// all-labelled caches; returns them.
fn prepare_builtin(
    out: &Path,
    dtml: &Path,
    difficulty: f64,
    patch: &str,
) -> Result<(PathBuf, PathBuf)> {
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
                .args(["--patch", patch, "--margin", "8,8,4"]))?;
        }
    }
    Ok((out.join("prepared"), out.join("prepared-all")))
}

/// Trains one run (resuming an interrupted dtml run) and evaluates it.
#[allow(clippy::too_many_arguments)] // one run's full description, used once
fn train_and_evaluate(
    row: &Row,
    s: &Study,
    seed: u64,
    dtml: &Path,
    python: Option<&Path>,
    prepared: &Path,
    run_dir: &Path,
    eval: &Path,
) -> Result<()> {
    let start = std::time::Instant::now();
    let mut evaluate = Command::new(dtml);
    evaluate.arg("evaluate");
    if row.pytorch {
        let py = python.context("the PyTorch reference needs a Python with torch")?;
        if run_dir.exists() {
            // The reference cannot resume: an unfinished one starts over.
            std::fs::remove_dir_all(run_dir)?;
        }
        run(Command::new(py)
            .arg(root().join("bench/torch_reference.py"))
            .arg("train")
            .arg(prepared)
            .arg(run_dir)
            .args([&row.method, &s.iterations.to_string(), &seed.to_string()])
            .args([&s.width.to_string(), &s.patch]))?;
        for student in ["student_a.pth", "student_b.pth"] {
            let file = run_dir.join(student);
            if file.is_file() {
                evaluate.arg("--model").arg(file);
            }
        }
        evaluate.args(["--patch", &s.patch]);
    } else {
        let mut train = Command::new(dtml);
        train
            .args(["train", "--data"])
            .arg(prepared)
            .arg("--out")
            .arg(run_dir)
            .args(["--method", &row.method, "--seed", &seed.to_string()])
            .args(["--iterations", &s.iterations.to_string()])
            .args(["--patch", &s.patch, "--width", &s.width.to_string()]);
        if run_dir.join("checkpoint").is_dir() {
            train.arg("--resume");
        }
        run(&mut train)?;
        evaluate.arg("--model").arg(run_dir);
    }
    eprintln!(
        "{}: trained in {:.0} s",
        run_dir.display(),
        start.elapsed().as_secs_f64()
    );
    run(evaluate
        .arg("--data")
        .arg(prepared)
        .arg("--out")
        .arg(eval)
        .arg("--overwrite"))
}

/// Per-case Dice differences of `scores` over `base` on the (seed, case)
/// pairs both have: `mean +- std (wins/pairs)`.
fn paired(scores: &[Option<Score>], base: &[Option<Score>]) -> String {
    let mut diffs = Vec::new();
    for (a, b) in scores.iter().zip(base) {
        if let (Some(a), Some(b)) = (a, b) {
            for (case, d) in &a.cases {
                if let Some(e) = b.cases.get(case) {
                    diffs.push(d - e);
                }
            }
        }
    }
    if diffs.is_empty() {
        return "-".into();
    }
    let wins = diffs.iter().filter(|d| **d > 0.0).count();
    format!("{} ({wins}/{})", shown(&diffs, 4), diffs.len())
}

pub fn study(s: &Study) -> Result<()> {
    let out = root().join(&s.out);
    std::fs::create_dir_all(&out)?;
    run(cargo().args(["build", "--release", "-p", "dtml-cli", "--bin", "dtml"]))?;
    let dtml = root().join("target/release/dtml");
    let (prepared, prepared_all) = match &s.prepared {
        Some(p) => (p.clone(), s.prepared_all.clone()),
        None => {
            let (p, all) = prepare_builtin(&out, &dtml, s.difficulty, &s.patch)?;
            (p, Some(all))
        }
    };
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
    if prepared_all.is_some() {
        rows.push(Row {
            label: "all labelled (bound)".into(),
            method: "supervised".into(),
            all_labelled: true,
            pytorch: false,
        });
    }
    rows.extend(s.reference.iter().map(|m| Row {
        label: format!("{m} (PyTorch reference)"),
        method: m.clone(),
        all_labelled: false,
        pytorch: true,
    }));

    let mut scores: Vec<Vec<Option<Score>>> = rows.iter().map(|_| Vec::new()).collect();
    // Seed by seed, so a partial study already compares every row; the
    // table is rewritten after every run.
    for seed in &s.seeds {
        for (i, row) in rows.iter().enumerate() {
            let name = row.run_name(*seed, s);
            let cache = match (row.all_labelled, &prepared_all) {
                (true, Some(all)) => all,
                _ => &prepared,
            };
            if let Some(r) = &s.record {
                record::restore(&root().join(r), &out, &name)?;
            }
            let run_dir = out.join("runs").join(&name);
            let eval = out.join("eval").join(&name);
            let metrics = eval.join("metrics.json");
            if !metrics.is_file() {
                train_and_evaluate(
                    row,
                    s,
                    *seed,
                    &dtml,
                    python.as_deref(),
                    cache,
                    &run_dir,
                    &eval,
                )?;
            }
            if let Some(r) = &s.record {
                record::keep(&root().join(r), &out, &name)?;
            }
            scores[i].push(Some(score_of(&metrics, &run_dir)?));
            report(s, &out, &rows, &scores)?;
        }
    }
    Ok(())
}

/// Writes `study.md`, `study.json` and `study.png` from the runs so far.
fn report(s: &Study, out: &Path, rows: &[Row], scores: &[Vec<Option<Score>>]) -> Result<()> {
    let values = |i: usize, f: &dyn Fn(&Score) -> f64| -> Vec<f64> {
        scores[i].iter().flatten().map(f).collect()
    };
    let find = |method: &str| {
        rows.iter()
            .position(|r| r.method == method && !r.all_labelled && !r.pytorch)
    };
    let (supervised, dtml) = (find("supervised"), find("dtml"));
    let low = supervised.map(|i| mean_std(&values(i, &|s| s.dice)).0);
    let bound = rows
        .iter()
        .position(|r| r.all_labelled)
        .map(|i| mean_std(&values(i, &|s| s.dice)).0);
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "method",
        "Dice",
        "Jaccard",
        "HD95 (mm)",
        "ASD (mm)",
        "Dice per seed",
        "volume",
        "gap closed",
        "paired Dice vs supervised (wins)",
        "paired Dice vs dtml (wins)",
        "train s / run",
    ]);
    let mut results = serde_json::Map::new();
    let mut bars = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let dices = values(i, &|s| s.dice);
        if dices.is_empty() {
            continue;
        }
        let (m, sd) = mean_std(&dices);
        let closed = match (low, bound) {
            (Some(low), Some(bound)) if !row.all_labelled && bound - low >= SMALLEST_GAP => {
                Some((m - low) / (bound - low) + 0.0)
            }
            _ => None,
        };
        let against = |base: Option<usize>| match base {
            Some(b) if b != i => paired(&scores[i], &scores[b]),
            _ => "-".into(),
        };
        let seconds = values(i, &|s| s.seconds.unwrap_or(f64::NAN));
        let seconds: Vec<f64> = seconds.into_iter().filter(|v| v.is_finite()).collect();
        let per: Vec<String> = dices.iter().map(|d| format!("{d:.4}")).collect();
        table.add_row([
            row.label.clone(),
            shown(&dices, 4),
            shown(&values(i, &|s| s.jaccard), 4),
            shown(&values(i, &|s| s.hd95), 2),
            shown(&values(i, &|s| s.asd), 2),
            per.join(", "),
            format!("{:.3}", mean_std(&values(i, &|s| s.volume_ratio)).0),
            closed.map_or("-".into(), |c| format!("{:.0} %", 100.0 * c)),
            against(supervised),
            against(dtml),
            shown(&seconds, 0),
        ]);
        bars.push((row.label.clone(), m, sd));
        results.insert(
            row.label.clone(),
            serde_json::json!({"dice": dices, "mean": m, "std": sd,
                "jaccard": values(i, &|s| s.jaccard), "hd95": values(i, &|s| s.hd95),
                "asd": values(i, &|s| s.asd), "seconds": seconds,
                "volume_ratio": mean_std(&values(i, &|s| s.volume_ratio)).0,
                "gap_closed": closed, "pytorch": row.pytorch, "all_labelled": row.all_labelled}),
        );
    }
    let summary = serde_json::json!({
        "iterations": s.iterations, "seeds": s.seeds,
        "data": s.prepared.as_ref().map_or_else(
            || format!("built-in, difficulty {}, {TRAIN_CASES} training (20 % labelled) and {TEST_CASES} test cases", s.difficulty),
            |p| p.display().to_string()),
        "patch": s.patch, "width": s.width, "all_labelled_bound": bound,
        "supervised_gap": low.zip(bound).map(|(l, b)| b - l), "results": results,
    });
    std::fs::write(
        out.join("study.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let table = format!(
        "{table}\n\nMean +- std over seeds of each run's mean over the test cases; paired: per-case Dice \
         differences over (seed, case) pairs, and how many the row wins.\n\n{DEFAULTS}\n"
    );
    std::fs::write(out.join("study.md"), &table)?;
    dtml_train::plot::error_bars(&bars, "mean test Dice", &out.join("study.png"))?;
    print!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(cases: &[(&str, f64)]) -> Option<Score> {
        Some(Score {
            dice: 0.0,
            jaccard: 0.0,
            hd95: 0.0,
            asd: 0.0,
            volume_ratio: 1.0,
            cases: cases.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
            seconds: None,
        })
    }

    #[test]
    fn paired_differences_use_the_cases_both_runs_have() {
        let a = [score(&[("x", 0.9), ("y", 0.5)]), score(&[("x", 0.8)])];
        let b = [
            score(&[("x", 0.7), ("y", 0.6), ("z", 0.1)]),
            score(&[("x", 0.8)]),
        ];
        // Differences 0.2, -0.1, 0.0: one win in three pairs.
        assert_eq!(paired(&a, &b), "0.0333 +- 0.1528 (1/3)");
        assert_eq!(paired(&a, &[None, None]), "-");
    }

    #[test]
    fn shown_skips_undefined_values_and_says_so() {
        assert_eq!(shown(&[1.0, 3.0], 1), "2.0 +- 1.4");
        assert_eq!(shown(&[2.0], 2), "2.00");
        assert_eq!(shown(&[2.0, f64::NAN], 2), "2.00 (1 of 2 runs)");
        assert_eq!(shown(&[], 2), "-");
    }
}

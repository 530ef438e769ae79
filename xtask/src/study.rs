//! `cargo xtask study`: the methods side by side on the synthetic data with
//! 20 % labelled: same labelled cases, same iteration budget, several seeds,
//! mean Dice +- std over seeds. Runs that already have metrics are reused,
//! so an interrupted study continues.

use crate::{cargo, prepare_with, root, run};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of a study.
pub struct Study {
    pub out: PathBuf,
    pub iterations: usize,
    pub seeds: Vec<u64>,
    pub methods: Vec<String>,
}

fn dice_of(metrics: &Path) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let s = &v["summary"];
    Ok((
        s["dice"]["mean"].as_f64().unwrap_or(0.0),
        s["hd95"]["mean"].as_f64().unwrap_or(f64::NAN),
    ))
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

pub fn study(s: &Study) -> Result<()> {
    let out = root().join(&s.out);
    let prepared = out.join("prepared");
    if !prepared.join("manifest.json").is_file() {
        prepare_with(&s.out, &["--train-cases", "20", "--test-cases", "10"])?;
    } else {
        run(cargo().args(["build", "--release", "-p", "dtml-cli", "--bin", "dtml"]))?;
    }
    let dtml = root().join("target/release/dtml");
    let mut table = String::from(
        "| method | mean Dice +- std over seeds | per seed (Dice) | mean hd95 (mm) |\n| --- | --- | --- | --- |\n",
    );
    let mut results = serde_json::Map::new();
    for method in &s.methods {
        let mut dices = Vec::new();
        let mut hds = Vec::new();
        for seed in &s.seeds {
            let name = format!("{method}-seed{seed}-it{}", s.iterations);
            let run_dir = out.join("runs").join(&name);
            let eval = out.join("eval").join(&name);
            let metrics = eval.join("metrics.json");
            if !metrics.is_file() {
                if run_dir.exists() {
                    std::fs::remove_dir_all(&run_dir)?;
                }
                let start = std::time::Instant::now();
                run(Command::new(&dtml)
                    .args(["train", "--data"])
                    .arg(&prepared)
                    .arg("--out")
                    .arg(&run_dir)
                    .args(["--method", method, "--seed", &seed.to_string()])
                    .args(["--iterations", &s.iterations.to_string()])
                    .args(["--patch", "48,48,32", "--width", "8"]))?;
                eprintln!("{name}: trained in {:.0} s", start.elapsed().as_secs_f64());
                run(Command::new(&dtml)
                    .args(["evaluate", "--model"])
                    .arg(&run_dir)
                    .arg("--data")
                    .arg(&prepared)
                    .arg("--out")
                    .arg(&eval))?;
            }
            let (dice, hd) = dice_of(&metrics)?;
            dices.push(dice);
            hds.push(hd);
        }
        let (m, sd) = mean_std(&dices);
        let (hm, _) = mean_std(&hds);
        let per: Vec<String> = dices.iter().map(|d| format!("{d:.4}")).collect();
        table += &format!(
            "| {method} | {m:.4} +- {sd:.4} | {} | {hm:.2} |\n",
            per.join(", ")
        );
        results.insert(
            method.clone(),
            serde_json::json!({"dice": dices, "hd95": hds, "mean": m, "std": sd}),
        );
    }
    let summary = serde_json::json!({
        "iterations": s.iterations, "seeds": s.seeds, "labelled_fraction": 0.2,
        "patch": [48, 48, 32], "width": 8, "results": results,
    });
    std::fs::write(
        out.join("study.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    std::fs::write(out.join("study.md"), &table)?;
    println!("{table}");
    Ok(())
}

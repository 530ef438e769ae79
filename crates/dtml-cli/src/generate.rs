//! `dtml generate`: the built-in synthetic dataset.

use anyhow::{Context, Result};
use dtml_volume::Xyz;
use dtml_volume::synthetic::{SyntheticConfig, write_dataset};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Output folder (Decathlon layout).
    #[arg(long)]
    out: PathBuf,
    /// Volume size x,y,z.
    #[arg(long)]
    shape: Option<Xyz<usize>>,
    /// Number of training cases (all labelled on disk; the split decides).
    #[arg(long)]
    train_cases: Option<usize>,
    /// Number of test cases (with labels in labelsTs).
    #[arg(long)]
    test_cases: Option<usize>,
    /// Random seed; the same seed gives the same bytes.
    #[arg(long)]
    seed: Option<u64>,
    /// How hard the task is, 0 to 1: lower contrast, intensity drift, stronger
    /// bias field and noise, more distractors, thin attached tubes.
    #[arg(long, default_value_t = 0.0)]
    difficulty: f64,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let mut config = SyntheticConfig::default();
    if let Some(s) = a.shape {
        config.shape = s;
    }
    if let Some(n) = a.train_cases {
        config.train_cases = n;
    }
    if let Some(n) = a.test_cases {
        config.test_cases = n;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    config.difficulty = a.difficulty;
    let start = std::time::Instant::now();
    write_dataset(&a.out, &config)
        .with_context(|| format!("generating into {}", a.out.display()))?;
    tracing::info!(
        "wrote {} training and {} test cases of {:?} to {} in {:.1} s",
        config.train_cases,
        config.test_cases,
        config.shape,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

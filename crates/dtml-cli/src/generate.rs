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
    /// Volume size x,y,z (16 to 512 per axis).
    #[arg(long, default_value_t = SyntheticConfig::default().shape)]
    shape: Xyz<usize>,
    /// Number of training cases (all labelled on disk; the split decides).
    #[arg(long, default_value_t = SyntheticConfig::default().train_cases)]
    train_cases: usize,
    /// Number of test cases (with labels in labelsTs).
    #[arg(long, default_value_t = SyntheticConfig::default().test_cases)]
    test_cases: usize,
    /// Random seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = SyntheticConfig::default().seed)]
    seed: u64,
    /// How hard the task is, 0 to 1: lower contrast, intensity drift, stronger
    /// bias field and noise, more distractors, thin attached tubes.
    #[arg(long, default_value_t = SyntheticConfig::default().difficulty)]
    difficulty: f64,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let config = SyntheticConfig {
        shape: a.shape,
        train_cases: a.train_cases,
        test_cases: a.test_cases,
        seed: a.seed,
        difficulty: a.difficulty,
        ..SyntheticConfig::default()
    };
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

//! The training library without the CLI: generate a tiny synthetic dataset,
//! prepare it (2 labelled cases), train the two DTML students for a few
//! iterations and read back the run the trainer exported.
//!
//! Run: `cargo run --release -p dtml-train --example train_tiny [OUT_DIR]`

use dtml_train::{Event, Method, TrainConfig, TrainRequest};
use dtml_volume::synthetic::{SyntheticConfig, write_dataset};
use dtml_volume::{Dataset, LabelledSpec, PrepareOptions, PreparedDataset, Xyz};
use std::path::PathBuf;

#[derive(clap::Parser)]
struct Args {
    /// Folder for the data and the run [default: dtml-train-tiny in the
    /// temporary folder].
    out: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = <Args as clap::Parser>::parse()
        .out
        .unwrap_or_else(|| std::env::temp_dir().join("dtml-train-tiny"));
    // A dataset of 6 training and 1 test case, 32x32x16 voxels.
    let data = out.join("data");
    let synthetic = SyntheticConfig {
        shape: Xyz::new(32, 32, 16),
        train_cases: 6,
        test_cases: 1,
        ..Default::default()
    };
    write_dataset(&data, &synthetic)?;
    // Prepared: 2 labelled, the rest unlabelled, patches of 32x32x16.
    let dataset = Dataset::open(&data, Default::default())?;
    let split = dtml_volume::dataset::split(&dataset, &LabelledSpec::Count(2), None, None)?;
    let prepared = out.join("prepared");
    let options = PrepareOptions {
        patch: Xyz::new(32, 32, 16),
        ..Default::default()
    };
    dtml_volume::prepare(
        &dataset.root,
        dataset.layout,
        &split,
        &prepared,
        &options,
        &|_| {},
    )?;
    // Train: the paper's objective at toy size.
    let config = TrainConfig {
        method: Method::Dtml,
        iterations: 4,
        patch: Xyz::new(32, 32, 16),
        width: 2,
        labelled_batch: 1,
        unlabelled_batch: 1,
        checkpoint_every: 0,
        ..Default::default()
    };
    let data = PreparedDataset::open(&prepared)?;
    let run_dir = out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    let request = TrainRequest {
        data: &data,
        run_dir: &run_dir,
        config,
        device: candle_core::Device::Cpu,
        resume: false,
        stop: None,
    };
    let outcome = dtml_train::train(request, &mut |event| {
        if let Event::Iteration(log) = event {
            println!("iteration {}: loss {:.4}", log.iteration, log.loss);
        }
    })?;
    println!(
        "exported {} student(s) of a {} run to {}",
        outcome.run.students.len(),
        outcome.run.method,
        run_dir.display()
    );
    Ok(())
}

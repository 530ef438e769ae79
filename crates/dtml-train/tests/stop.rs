//! A run asked to stop (`TrainRequest::stop`, what Ctrl-C in Python sets)
//! ends after the iteration in progress with a checkpoint there, and a
//! resume finishes with exactly the weights of a run never stopped.

use dtml_train::{Event, Method, TrainConfig, TrainError, TrainRequest};
use dtml_volume::synthetic::{SyntheticConfig, write_dataset};
use dtml_volume::{Dataset, LabelledSpec, PrepareOptions, PreparedDataset, Xyz};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

fn prepared(dir: &Path) -> PreparedDataset {
    let data = dir.join("data");
    let synthetic = SyntheticConfig {
        shape: Xyz::new(32, 32, 16),
        train_cases: 4,
        test_cases: 1,
        ..Default::default()
    };
    write_dataset(&data, &synthetic).unwrap();
    let dataset = Dataset::open(&data, Default::default()).unwrap();
    let split = dtml_volume::dataset::split(&dataset, &LabelledSpec::Count(2), None, None).unwrap();
    let out = dir.join("prepared");
    let options = PrepareOptions {
        patch: Xyz::new(32, 32, 16),
        ..Default::default()
    };
    dtml_volume::prepare(
        &dataset.root,
        dataset.layout,
        &split,
        &out,
        &options,
        &|_| {},
    )
    .unwrap();
    PreparedDataset::open(&out).unwrap()
}

fn config() -> TrainConfig {
    TrainConfig {
        method: Method::Dtml,
        iterations: 5,
        patch: Xyz::new(32, 32, 16),
        width: 2,
        labelled_batch: 1,
        unlabelled_batch: 1,
        checkpoint_every: 0,
        ..Default::default()
    }
}

#[test]
fn a_stopped_run_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path());
    let request = |run_dir, resume, stop| TrainRequest {
        data: &data,
        run_dir,
        config: config(),
        device: candle_core::Device::Cpu,
        resume,
        stop,
    };
    let whole = dir.path().join("whole");
    let want = dtml_train::train(request(&whole, false, None), &mut |_| {}).unwrap();

    let stopped = dir.path().join("stopped");
    let stop = AtomicBool::new(false);
    let mut checkpoints = Vec::new();
    let err = dtml_train::train(request(&stopped, false, Some(&stop)), &mut |e| match e {
        Event::Iteration(log) if log.iteration == 2 => stop.store(true, Ordering::SeqCst),
        Event::Checkpoint { iteration } => checkpoints.push(iteration),
        _ => {}
    })
    .unwrap_err();
    assert!(
        matches!(err, TrainError::Stopped { iteration: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("resume"), "{err}");
    assert_eq!(checkpoints, [2], "one checkpoint, where the run stopped");

    let mut first = None;
    let got = dtml_train::train(request(&stopped, true, None), &mut |e| {
        if let Event::Started { first: f, .. } = e {
            first = Some(f);
        }
    })
    .unwrap();
    assert_eq!(first, Some(2));
    assert_eq!(got.weights_digest, want.weights_digest);
    assert_eq!(got.last.unwrap().loss, want.last.unwrap().loss);
    let log = std::fs::read_to_string(stopped.join(dtml_train::log::LOG_FILE)).unwrap();
    assert_eq!(log.lines().count(), 5);
}

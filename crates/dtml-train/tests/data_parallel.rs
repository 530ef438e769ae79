//! Data-parallel training semantics (issue 15), with ranks as threads of
//! one process (`LocalGroup`): the averaged gradient is the mean of the
//! ranks' own gradients, every rank ends with bit-identical weights while
//! drawing its own batches, rank 0 alone writes, and a resume needs the
//! same number of ranks. A multi-process backend must give the same.

use candle_core::{DType, Device, Tensor, Var};
use dtml_train::collective::{Collective, LocalGroup, Solo};
use dtml_train::optim::Sgd;
use dtml_train::{TrainConfig, TrainRequest};
use dtml_volume::PreparedDataset;
use std::path::Path;

mod common;
use common::{tiny_config as config, tiny_prepared as prepared};

/// Trains `cfg` on `ranks` threads into `run`; the outcome of every rank.
fn train_ranks(
    data: &PreparedDataset,
    run: &Path,
    cfg: &TrainConfig,
    ranks: usize,
    resume: bool,
) -> Vec<dtml_train::Result<dtml_train::TrainOutcome>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(ranks)
            .into_iter()
            .map(|group| {
                s.spawn(move || {
                    let req = TrainRequest {
                        data,
                        run_dir: run,
                        config: cfg.clone(),
                        device: Device::Cpu,
                        resume,
                        stop: None,
                    };
                    dtml_train::trainer::train_in_group(req, &group, &mut |_| {})
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn the_averaged_gradient_is_the_mean_of_the_ranks_gradients() {
    let per_rank: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|group| {
                s.spawn(move || {
                    let w =
                        Var::from_tensor(&Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap())
                            .unwrap();
                    let unused = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
                    let sgd = Sgd::new(
                        vec![("w".into(), w.clone()), ("unused".into(), unused.clone())],
                        0.9,
                        0.0,
                    );
                    // Rank r's loss: (r + 1) * sum(w^2), gradient 2 (r + 1) w.
                    let scale = (group.rank() + 1) as f64;
                    let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * scale).unwrap();
                    let mut grads = loss.backward().unwrap();
                    sgd.average_gradients(&mut grads, &group).unwrap();
                    assert!(
                        grads.get(unused.as_tensor()).is_none(),
                        "no gradient stays none"
                    );
                    grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Mean of 2w and 4w is 3w on both ranks.
    for g in per_rank {
        assert_eq!(g, vec![3.0, 6.0, 9.0]);
    }
    // A group of one leaves gradients as they are.
    let w = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
    let sgd = Sgd::new(vec![("w".into(), w.clone())], 0.9, 0.0);
    let mut grads = w
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    sgd.average_gradients(&mut grads, &Solo).unwrap();
    assert_eq!(
        grads.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
        vec![2.0]
    );
}

#[test]
fn ranks_end_with_identical_weights_from_their_own_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = PreparedDataset::open(&prepared(dir.path())).unwrap();
    let run = dir.path().join("run");
    let outcomes: Vec<_> = train_ranks(&data, &run, &config(3), 2, false)
        .into_iter()
        .map(|o| o.unwrap())
        .collect();
    assert_eq!(
        outcomes[0].weights_digest, outcomes[1].weights_digest,
        "every rank holds the same weights"
    );
    let losses: Vec<f64> = outcomes
        .iter()
        .map(|o| o.last.as_ref().unwrap().loss)
        .collect();
    assert_ne!(losses[0], losses[1], "each rank trains on its own batches");
    // Rank 0 alone wrote the log (one line per iteration, not per rank).
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    // One rank is not the same job as two: a resume must match.
    let err = train_ranks(&data, &run, &config(3), 1, true)
        .pop()
        .unwrap()
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("2 rank(s)") && err.contains("this job has 1"),
        "{err}"
    );
    // The same group resumes (nothing left to do: the run is complete).
    for o in train_ranks(&data, &run, &config(3), 2, true) {
        assert_eq!(o.unwrap().weights_digest, outcomes[0].weights_digest);
    }

    // Rank 0 draws the batches a run that is not parallel draws: its first
    // loss (before any averaged update) is that run's, and the later ones
    // differ because the update is the mean over both ranks' batches.
    let solo = dir.path().join("solo");
    let alone = train_ranks(&data, &solo, &config(3), 1, false)
        .pop()
        .unwrap()
        .unwrap();
    let first_loss = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (group_log, solo_log) = (first_loss(&run), first_loss(&solo));
    assert_eq!(group_log[0], solo_log[0]);
    assert_ne!(group_log[2], solo_log[2]);
    assert_ne!(alone.weights_digest, outcomes[0].weights_digest);
}

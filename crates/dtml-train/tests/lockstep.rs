//! The whole training step in lockstep with PyTorch: 20 iterations of each
//! method from the same initial weights, on the same cases, batch plans and
//! dropout masks, in f64, against `data-fixtures/lockstep` (made by
//! `make_lockstep_fixture.py` from shared/method.md, independently of this
//! crate). Every iteration's loss and loss parts, the schedule, the final
//! weights and every BatchNorm running statistic must match. This covers
//! what the per-piece golden tests cannot: batch assembly (rot90, flip,
//! padded crop, label, SDM target, tensor layout), the objective as trained,
//! the LR steps and ramp-up, BN momentum, SGD with momentum and weight decay
//! on exactly the trained parameters, and how they work together.
//!
//! DTC is compared for its first 5 iterations only: PyTorch's own DTC run
//! is chaotic (a 1e-13 nudge of the weights grows to 1e-8 by step 6 and
//! 1e-3 by step 17), so nothing can follow it further; the fixture measures
//! that and records the count.
//!
//! The `..._is_caught` tests break one piece on purpose (an LR step, the
//! ramp-up length, the BN momentum) and require the comparison of the
//! trajectory to fail, so this test cannot pass vacuously.

use candle_core::{DType, Device, Tensor};
use dtml_model::{VNet, VNetConfig};
use dtml_train::batch::{Augmentation, PatchSource, TrainingSet, assemble};
use dtml_train::trainer::{optimizer, train_step_with_masks};
use dtml_train::{Method, TrainConfig};
use dtml_volume::PreparedCase;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Relative tolerance of losses, weights and statistics: PyTorch and dtml
/// both compute in f64; 20 SGD steps keep their differences near 1e-12.
const TOLERANCE: f64 = 1e-8;

/// DTC's final weights: after its 5 compared steps the update of a PyTorch
/// rerun nudged by 1e-13 already moves by 2e-8 (relative), so rounding-order
/// differences move it by about 1e-7; its losses still match to 1e-8.
const DTC_STATE_TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct Fixture {
    iterations: usize,
    width: usize,
    patch: [usize; 3],
    labelled_batch: usize,
    unlabelled_batch: usize,
    cases: usize,
    labelled_cases: usize,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    lr_steps: Vec<f64>,
    lr_gamma: f64,
    sharpness: f64,
    dropout: f64,
    dtc_beta: f64,
    /// Iterations compared per method: all, except where PyTorch's own run
    /// departs from a rerun nudged by 1e-13 (DTC's one-network sharp
    /// sigmoid is chaotic after a few steps).
    stable_iterations: HashMap<String, usize>,
    runs: HashMap<String, Vec<Iteration>>,
}

#[derive(Deserialize)]
struct Iteration {
    plan: Vec<PlanEntry>,
    lambda: f64,
    lr: f64,
    loss: f64,
    parts: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct PlanEntry {
    labelled: bool,
    case: usize,
    quarter_turns: usize,
    flip_axis: usize,
    origin: [i64; 3],
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/lockstep")
}

struct Golden {
    fixture: Fixture,
    tensors: HashMap<String, Tensor>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(dir().join("lockstep.json")).unwrap();
    Golden {
        fixture: serde_json::from_str(&text).unwrap(),
        tensors: candle_core::safetensors::load(dir().join("lockstep.safetensors"), &Device::Cpu)
            .unwrap(),
    }
}

impl Golden {
    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no {key}"))
    }

    /// The fixture's cases, stored (x, y, z) with z fastest, in the
    /// trainer's (Z, Y, X) layout.
    fn training_set(&self) -> TrainingSet {
        let cases: Vec<PreparedCase> = (0..self.fixture.cases)
            .map(|i| {
                let image = self.tensor(&format!("case{i}.image"));
                let label = self.tensor(&format!("case{i}.label"));
                let (nx, ny, nz) = image.dims3().unwrap();
                let zyx = |t: &Tensor| t.permute((2, 1, 0)).unwrap().flatten_all().unwrap();
                PreparedCase {
                    image: zyx(image).to_vec1::<f32>().unwrap(),
                    label: Some(zyx(label).to_vec1::<u8>().unwrap()),
                    shape: [nx, ny, nz],
                }
            })
            .collect();
        let mut labelled = cases;
        let unlabelled = labelled.split_off(self.fixture.labelled_cases);
        TrainingSet {
            labelled,
            unlabelled,
        }
    }

    fn config(&self, method: Method) -> TrainConfig {
        let f = &self.fixture;
        TrainConfig {
            method,
            iterations: f.iterations,
            labelled_batch: f.labelled_batch,
            unlabelled_batch: f.unlabelled_batch,
            patch: f.patch,
            width: f.width,
            dropout: f.dropout,
            lr: f.lr,
            momentum: f.momentum,
            weight_decay: f.weight_decay,
            lr_steps: f.lr_steps.clone(),
            lr_gamma: f.lr_gamma,
            rampup_fraction: 1.0,
            consistency: 1.0,
            sdm_weight: 1.0,
            dtc_beta: f.dtc_beta,
            sharpness: f.sharpness,
            ..TrainConfig::default()
        }
    }
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOLERANCE * want.abs().max(1e-6)
}

/// Runs `method` as the fixture did, with `cfg` and the networks' `bn_momentum`
/// (normally the fixture's and PyTorch's), and returns the first difference
/// from PyTorch: `Err("loss: ...")` for the trajectory, `Err("state: ...")`
/// for the final weights and statistics.
fn lockstep(g: &Golden, method: Method, cfg: &TrainConfig, bn_momentum: f64) -> Result<(), String> {
    let runs = &g.fixture.runs[method.name()];
    let net_cfg = VNetConfig {
        width: cfg.width,
        dropout: cfg.dropout,
        bn_momentum,
        ..VNetConfig::default()
    };
    let nets: Vec<VNet> = ["a", "b"][..method.networks()]
        .iter()
        .map(|name| {
            let net = VNet::new(net_cfg.clone(), 0, DType::F64, &Device::Cpu).unwrap();
            net.load_weights(&dir().join(format!("init_{name}.pth")))
                .unwrap();
            net
        })
        .collect();
    let refs: Vec<&VNet> = nets.iter().collect();
    let start: Vec<HashMap<String, Tensor>> =
        nets.iter().map(|n| n.state_dict().unwrap()).collect();
    let mut sgd = optimizer(cfg, &refs);
    let set = g.training_set();
    for (t, want) in runs.iter().enumerate() {
        let plan: Vec<PatchSource> = want
            .plan
            .iter()
            .map(|e| PatchSource {
                labelled: e.labelled,
                case: e.case,
                view: Augmentation {
                    quarter_turns: e.quarter_turns,
                    flip_axis: e.flip_axis,
                    origin: e.origin,
                },
            })
            .collect();
        let batch = assemble(t, cfg, &set, &plan).unwrap();
        let masks: Vec<(Tensor, Tensor)> = (0..nets.len())
            .map(|i| {
                let m = |which: &str| {
                    g.tensor(&format!("{}.{t}.dropout{i}.{which}", method.name()))
                        .clone()
                };
                (m("bottleneck"), m("last"))
            })
            .collect();
        let (loss, parts) =
            train_step_with_masks(cfg, &refs, &mut sgd, &batch, &Device::Cpu, Some(&masks))
                .unwrap();
        if !close(loss, want.loss) {
            return Err(format!(
                "loss: iteration {t}: {loss} vs PyTorch {}",
                want.loss
            ));
        }
        assert_eq!(
            parts.keys().collect::<Vec<_>>(),
            want.parts.keys().collect::<Vec<_>>(),
            "{method:?}: loss parts"
        );
        for (name, w) in &want.parts {
            if !close(parts[name], *w) {
                return Err(format!(
                    "loss: iteration {t}, {name}: {} vs PyTorch {w}",
                    parts[name]
                ));
            }
        }
    }
    let mut wrong = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let prefix = format!("{}.net{i}", method.name());
        for (name, value) in net.state_dict().unwrap() {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let value = value.to_dtype(DType::F64).unwrap();
            let checks: Vec<(String, Tensor)> = if name.contains("running_") {
                vec![(format!("{prefix}.{name}"), value)]
            } else {
                let change = (&value - &start[i][&name].to_dtype(DType::F64).unwrap()).unwrap();
                let norm = |t: &Tensor| {
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .sqrt()
                        .unwrap()
                        .reshape(1)
                        .unwrap()
                };
                vec![
                    (format!("{prefix}.norm.{name}"), norm(&value)),
                    (format!("{prefix}.change.{name}"), norm(&change)),
                ]
            };
            for (key, got) in checks {
                let got: Vec<f64> = got.flatten_all().unwrap().to_vec1().unwrap();
                let want: Vec<f64> = g.tensor(&key).flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got.len(), want.len(), "{key}: size");
                let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
                let tolerance = if method == Method::Dtc {
                    DTC_STATE_TOLERANCE
                } else {
                    TOLERANCE
                };
                if let Some((a, b)) = got
                    .iter()
                    .zip(&want)
                    .find(|(a, b)| (*a - *b).abs() > tolerance * scale)
                {
                    wrong.push(format!("{key}: {a} vs PyTorch {b}"));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        wrong.sort();
        Err(format!(
            "state: {} differ: {}",
            wrong.len(),
            wrong.join("; ")
        ))
    }
}

fn matches_pytorch(method: Method) {
    let g = golden();
    let cfg = g.config(method);
    let compared = g.fixture.runs[method.name()].len();
    assert_eq!(compared, g.fixture.stable_iterations[method.name()]);
    // Only DTC may stop early, and never before its fifth step.
    let least = if method == Method::Dtc {
        5
    } else {
        g.fixture.iterations
    };
    assert!(
        compared >= least,
        "{}: only {compared} iterations compared",
        method.name()
    );
    // The schedule itself, iteration by iteration.
    for (t, want) in g.fixture.runs[method.name()].iter().enumerate() {
        assert!(
            close(cfg.lr_at(t), want.lr),
            "lr at {t}: {} vs {}",
            cfg.lr_at(t),
            want.lr
        );
        assert!(
            close(cfg.lambda_at(t), want.lambda),
            "lambda at {t}: {} vs {}",
            cfg.lambda_at(t),
            want.lambda
        );
    }
    if let Err(e) = lockstep(&g, method, &cfg, VNetConfig::default().bn_momentum) {
        panic!("{}: {e}", method.name());
    }
}

#[test]
fn dtml_matches_pytorch() {
    matches_pytorch(Method::Dtml);
}

#[test]
fn dtml_released_matches_pytorch() {
    matches_pytorch(Method::DtmlReleased);
}

#[test]
fn dtc_matches_pytorch() {
    matches_pytorch(Method::Dtc);
}

#[test]
fn supervised_matches_pytorch() {
    matches_pytorch(Method::Supervised);
}

fn assert_caught(method: Method, cfg: TrainConfig, bn_momentum: f64, kind: &str) {
    let g = golden();
    match lockstep(&g, method, &cfg, bn_momentum) {
        Ok(()) => panic!("a deliberately wrong {kind} went unnoticed"),
        Err(e) => assert!(
            e.starts_with("loss:") || kind == "BN momentum",
            "{kind}: {e}"
        ),
    }
}

#[test]
fn a_wrong_lr_step_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Supervised);
    // The first step one iteration late: from t = 10 (0.5 x 20) instead of 9 (5/12 x 20 = 8.3).
    cfg.lr_steps[0] = 0.5;
    assert_caught(Method::Supervised, cfg, 0.1, "LR step");
}

#[test]
fn a_wrong_rampup_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Dtml);
    cfg.rampup_fraction = 0.9;
    assert_caught(Method::Dtml, cfg, 0.1, "ramp-up");
}

#[test]
fn a_wrong_bn_momentum_is_caught() {
    let g = golden();
    let cfg = g.config(Method::Supervised);
    assert_caught(Method::Supervised, cfg, 0.01, "BN momentum");
}

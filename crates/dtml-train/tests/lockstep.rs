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
use dtml_model::vnet::read_weight_file;
use dtml_model::{VNet, VNetConfig};
use dtml_train::batch::{Augmentation, PatchSource, TrainingSet, assemble};
use dtml_train::config::LrSchedule;
use dtml_train::methods::{GivenDraws, MethodState};
use dtml_train::trainer::{optimizer, train_step_with_draws};
use dtml_train::{Method, TrainConfig};
use dtml_volume::PreparedCase;
use dtml_volume::Xyz;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Relative tolerance of losses, weights and statistics: PyTorch and dtml
/// both compute in f64; 20 SGD steps keep their differences near 1e-12.
const TOLERANCE: f64 = 1e-8;

/// The final weights of DTC and BCP, whose runs are compared only for as
/// long as PyTorch's own is stable: after DTC's 5 compared steps the update
/// of a PyTorch rerun nudged by 1e-13 already moves by 2e-8 (relative),
/// after BCP's 7 by 7e-9, so rounding-order differences move them by about
/// 1e-7; their losses still match to 1e-8.
const CHAOTIC_STATE_TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct Fixture {
    iterations: usize,
    width: usize,
    patch: Xyz<usize>,
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
    ema_decay: f64,
    /// SASSNet's discriminator width (absent in fixtures made before it).
    #[serde(default)]
    discriminator_width: Option<usize>,
    /// BCP's pre-training share (absent in fixtures made before it).
    #[serde(default)]
    pretrain_fraction: Option<f64>,
    /// Iterations compared per method: all, except where PyTorch's own run
    /// departs from a rerun nudged by 1e-13 (DTC's one-network sharp
    /// sigmoid is chaotic after a few steps).
    stable_iterations: HashMap<String, usize>,
    runs: HashMap<String, Vec<Iteration>>,
    /// Trajectory mode only: PyTorch rerun from weights nudged by 1e-6.
    #[serde(default)]
    nudged: HashMap<String, Vec<Nudged>>,
}

#[derive(Deserialize)]
struct Iteration {
    plan: Vec<PlanEntry>,
    lambda: f64,
    lr: f64,
    loss: f64,
    parts: BTreeMap<String, f64>,
    /// Shapes `(N, 1, x, y, z)` of the step's input-noise draws, whose
    /// values are [`lockstep_noise`]'s.
    #[serde(default)]
    noise: Vec<Vec<usize>>,
    /// Origins (x, y, z) of the step's boxes (BCP's copy-paste box).
    #[serde(default)]
    boxes: Vec<[usize; 3]>,
    /// Trajectory mode only: norm of every state-dict tensor after the step.
    #[serde(default)]
    norms: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Nudged {
    loss: f64,
    norms: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct PlanEntry {
    labelled: bool,
    case: usize,
    quarter_turns: usize,
    flip_axis: usize,
    origin: Xyz<i64>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/lockstep")
}

struct Golden {
    dir: PathBuf,
    fixture: Fixture,
    tensors: HashMap<String, Tensor>,
}

fn golden() -> Golden {
    Golden::load(dir())
}

impl Golden {
    fn load(dir: PathBuf) -> Golden {
        let text = std::fs::read_to_string(dir.join("lockstep.json")).unwrap();
        Golden {
            fixture: serde_json::from_str(&text).unwrap(),
            tensors: candle_core::safetensors::load(dir.join("lockstep.safetensors"), &Device::Cpu)
                .unwrap(),
            dir,
        }
    }

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
                    shape: Xyz::new(nx, ny, nz),
                }
            })
            .collect();
        let mut labelled = cases;
        let unlabelled = labelled.split_off(self.fixture.labelled_cases);
        TrainingSet::in_memory(labelled, unlabelled)
    }

    fn config(&self, method: Method) -> TrainConfig {
        let f = &self.fixture;
        TrainConfig {
            method,
            iterations: f.iterations,
            // BCP's run takes twice the batch (its passes see halves).
            labelled_batch: if method == Method::Bcp {
                2 * f.labelled_batch
            } else {
                f.labelled_batch
            },
            unlabelled_batch: if method == Method::Bcp {
                2 * f.unlabelled_batch
            } else {
                f.unlabelled_batch
            },
            patch: f.patch,
            width: f.width,
            dropout: Some(f.dropout),
            lr: f.lr,
            momentum: f.momentum,
            weight_decay: f.weight_decay,
            lr_steps: f.lr_steps.clone(),
            lr_gamma: f.lr_gamma,
            rampup_fraction: 1.0,
            // Each method's own final weight (mean-teacher's is 0.1).
            consistency: None,
            sdm_weight: 1.0,
            dtc_beta: f.dtc_beta,
            ema_decay: f.ema_decay,
            discriminator_width: f.discriminator_width.unwrap_or(64),
            pretrain_fraction: f.pretrain_fraction.unwrap_or(0.0),
            sharpness: f.sharpness,
            ..TrainConfig::default()
        }
    }
}

/// `make_lockstep_fixture.py`'s `lockstep_noise`: noise draw `i` of
/// iteration `t`, splitmix64 of each element's index in C order of
/// `shape`, mapped to [-0.25, 0.25) and clamped to +-0.2, bit for bit.
fn lockstep_noise(t: usize, i: usize, shape: &[usize]) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count as u64)
        .map(|j| {
            let mut z = ((t as u64) << 40)
                .wrapping_add((i as u64) << 32)
                .wrapping_add(j)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * 2f64.powi(-53);
            ((u - 0.5) * 0.5).clamp(-0.2, 0.2)
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOLERANCE * want.abs().max(1e-6)
}

/// A replay's networks and method state, with their starting values.
struct Replayed {
    nets: Vec<VNet>,
    start: Vec<HashMap<String, Tensor>>,
    state: Option<Box<dyn MethodState>>,
    state_start: HashMap<String, Tensor>,
}

/// Replays `method` as the fixture did, in `dtype`, with `cfg` and the
/// networks' `bn_momentum`: the fixture's initial weights, cases, batch
/// plans and dropout masks. `step` sees each iteration's loss and parts
/// and may stop the replay with an error. Returns the networks and their
/// state dicts before the first step.
#[allow(clippy::type_complexity)]
fn replay(
    g: &Golden,
    method: Method,
    cfg: &TrainConfig,
    bn_momentum: f64,
    dtype: DType,
    step: &mut dyn FnMut(usize, f64, &BTreeMap<String, f64>, &[VNet]) -> Result<(), String>,
) -> Result<Replayed, String> {
    let runs = &g.fixture.runs[method.name()];
    let net_cfg = VNetConfig {
        bn_momentum,
        ..dtml_train::trainer::network_config(cfg)
    };
    let nets: Vec<VNet> = ["a", "b"][..dtml_train::methods::plugin(method).networks().len()]
        .iter()
        .map(|name| {
            let net = VNet::new(net_cfg.clone(), 0, dtype, &Device::Cpu).unwrap();
            let mut init = read_weight_file(&g.dir.join(format!("init_{name}.pth"))).unwrap();
            // MC-Net's extra decoders: those this network has.
            let own = net.state_dict().unwrap();
            init.extend(
                read_weight_file(&g.dir.join("init_extra.pth"))
                    .unwrap()
                    .into_iter()
                    .filter(|(k, _)| own.contains_key(k)),
            );
            net.load_state_dict(&init, &g.dir).unwrap();
            net
        })
        .collect();
    let refs: Vec<&VNet> = nets.iter().collect();
    let start: Vec<HashMap<String, Tensor>> =
        nets.iter().map(|n| n.state_dict().unwrap()).collect();
    let mut sgd = optimizer(cfg, &refs);
    // SASSNet's discriminator from the fixture's initial weights.
    let mut state = dtml_train::methods::plugin(method)
        .state(cfg, 0, dtype, &Device::Cpu)
        .unwrap();
    if let Some(state) = state.as_mut() {
        let mut init: HashMap<String, Tensor> = read_weight_file(&g.dir.join("init_disc.pth"))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (format!("disc.{k}"), v))
            .collect();
        init.insert(
            "adam.steps".into(),
            Tensor::new(&[0.0f64], &Device::Cpu).unwrap(),
        );
        state.restore(&init).unwrap();
    }
    let state_start = match &state {
        Some(s) => s.save().unwrap(),
        None => HashMap::new(),
    };
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
        // One pair of masks per forward pass (per network for most
        // methods; ua-mt adds its Monte-Carlo passes).
        // Each pass's masks: bottleneck, last stage, then extra decoders'.
        let masks: Vec<Vec<Tensor>> = (0..)
            .map_while(|i| {
                let m = |which: &str| {
                    g.tensors
                        .get(&format!("{}.{t}.dropout{i}.{which}", method.name()))
                        .map(|m| m.to_dtype(dtype).unwrap())
                };
                let extra = (0..).map_while(|k| m(&format!("extra{k}")));
                match (m("bottleneck"), m("last")) {
                    (Some(b), Some(l)) => Some([b, l].into_iter().chain(extra).collect()),
                    // SASSNet's discriminator pass.
                    _ => Some(
                        (0..)
                            .map_while(|k| m(&format!("disc{k}")))
                            .collect::<Vec<_>>(),
                    )
                    .filter(|v| !v.is_empty()),
                }
            })
            .collect();
        // Input noise in the order the method draws it, made (N, 1, x, y, z).
        let noise: Vec<Tensor> = want
            .noise
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                lockstep_noise(t, i, shape)
                    .permute((0, 1, 4, 3, 2))
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            })
            .collect();
        // Box origins, (x, y, z) in the fixture, (z, y, x) here.
        let boxes = want.boxes.iter().map(|b| [b[2], b[1], b[0]]).collect();
        let draws = GivenDraws {
            masks,
            noise,
            boxes,
        };
        let (loss, parts) = train_step_with_draws(
            cfg,
            &refs,
            &mut sgd,
            state.as_mut().map(|s| &mut **s as &mut dyn MethodState),
            &batch,
            &Device::Cpu,
            Some(&draws),
        )
        // A step that cannot run on PyTorch's draws (a second stage that
        // starts at another iteration needs other passes) differs too.
        .map_err(|e| format!("step: iteration {t}: {e}"))?;
        step(t, loss, &parts, &nets)?;
    }
    Ok(Replayed {
        nets,
        start,
        state,
        state_start,
    })
}

/// Runs `method` in f64 as the fixture did, with `cfg` and the networks'
/// `bn_momentum` (normally the fixture's and PyTorch's), and returns the
/// first difference from PyTorch: `Err("loss: ...")` for the trajectory,
/// `Err("state: ...")` for the final weights and statistics.
fn lockstep(g: &Golden, method: Method, cfg: &TrainConfig, bn_momentum: f64) -> Result<(), String> {
    let runs = &g.fixture.runs[method.name()];
    let Replayed {
        nets,
        start,
        state,
        state_start,
    } = replay(
        g,
        method,
        cfg,
        bn_momentum,
        DType::F64,
        &mut |t, loss, parts, _| {
            let want = &runs[t];
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
            Ok(())
        },
    )?;
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
                let tolerance = if matches!(method, Method::Dtc | Method::Bcp) {
                    CHAOTIC_STATE_TOLERANCE
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
    // SASSNet's discriminator: each weight's norm and change.
    if let Some(state) = &state {
        let norm = |t: &Tensor| -> f64 {
            t.to_dtype(DType::F64)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        for (key, value) in state.save().unwrap() {
            let Some(name) = key.strip_prefix("disc.") else {
                continue;
            };
            let change = (value.to_dtype(DType::F64).unwrap()
                - state_start[&key].to_dtype(DType::F64).unwrap())
            .unwrap();
            for (kind, got) in [("norm", norm(&value)), ("change", norm(&change))] {
                let fixture_key = format!("{}.disc.{kind}.{name}", method.name());
                let want: f64 = g
                    .tensor(&fixture_key)
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[0];
                if (got - want).abs() > TOLERANCE * want.abs().max(1e-6) {
                    wrong.push(format!("{fixture_key}: {got} vs PyTorch {want}"));
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
    // Only DTC, MC-Net+ (whose nearest-neighbour decoder and sharpened
    // targets part a PyTorch rerun nudged by 1e-13 after 13 steps) and BCP
    // (BatchNorm over two patches amplifies 1e-13 to 1e-10 two steps into
    // self-training) may stop early, and never before their fifth, tenth
    // and seventh steps (BCP's: five of pre-training, two of self-training).
    let least = match method {
        Method::Dtc => 5,
        Method::McNetPlus => 10,
        Method::Bcp => 7,
        _ => g.fixture.iterations,
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

#[test]
fn mean_teacher_matches_pytorch() {
    matches_pytorch(Method::MeanTeacher);
}

fn assert_caught(method: Method, cfg: TrainConfig, bn_momentum: f64, kind: &str) {
    let g = golden();
    match lockstep(&g, method, &cfg, bn_momentum) {
        Ok(()) => panic!("a deliberately wrong {kind} went unnoticed"),
        Err(e) => {
            // What the note of a new method quotes (`--nocapture`).
            eprintln!("{}: a wrong {kind} is caught: {e}", method.name());
            assert!(
                e.starts_with("loss:") || e.starts_with("step:") || kind == "BN momentum",
                "{kind}: {e}"
            )
        }
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
fn ua_mt_matches_pytorch() {
    matches_pytorch(Method::UaMt);
}

#[test]
fn a_wrong_ua_mt_ramp_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::UaMt);
    // The consistency ramp over 90 % of the run instead of all of it.
    cfg.rampup_fraction = 0.9;
    assert_caught(Method::UaMt, cfg, 0.1, "ramp-up");
}

#[test]
fn a_wrong_ema_decay_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::MeanTeacher);
    // The released 0.99 instead of the fixture's 0.9: the teacher differs from t = 10.
    cfg.ema_decay = 0.99;
    assert_caught(Method::MeanTeacher, cfg, 0.1, "EMA decay");
}

#[test]
fn a_wrong_mean_teacher_consistency_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::MeanTeacher);
    // DTML's weight 1 instead of the method's 0.1.
    cfg.consistency = Some(1.0);
    assert_caught(Method::MeanTeacher, cfg, 0.1, "consistency weight");
}

#[test]
fn cps_matches_pytorch() {
    matches_pytorch(Method::Cps);
}

#[test]
fn a_wrong_cps_lr_schedule_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Cps);
    // dtml's LR steps instead of the released code's poly schedule.
    cfg.lr_schedule = Some(LrSchedule::Step);
    assert_caught(Method::Cps, cfg, 0.1, "LR schedule");
}

#[test]
fn a_wrong_cps_consistency_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Cps);
    // DTML's weight 1 instead of the released 0.1.
    cfg.consistency = Some(1.0);
    assert_caught(Method::Cps, cfg, 0.1, "consistency weight");
}

#[test]
fn mc_net_matches_pytorch() {
    matches_pytorch(Method::McNet);
}

#[test]
fn mc_net_plus_matches_pytorch() {
    matches_pytorch(Method::McNetPlus);
}

#[test]
fn a_wrong_mc_net_lr_schedule_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::McNetPlus);
    // dtml's steps instead of the released constant rate.
    cfg.lr_schedule = Some(LrSchedule::Step);
    assert_caught(Method::McNetPlus, cfg, 0.1, "LR schedule");
}

#[test]
fn a_wrong_mc_net_temperature_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::McNet);
    // Softer pseudo labels than the released T = 0.1.
    cfg.temperature = 0.2;
    assert_caught(Method::McNet, cfg, 0.1, "sharpening temperature");
}

#[test]
fn sassnet_matches_pytorch() {
    matches_pytorch(Method::Sassnet);
}

#[test]
fn a_wrong_discriminator_lr_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Sassnet);
    // Ten times the released Adam rate: the discriminator, and from the
    // next step the adversarial loss, part from PyTorch's.
    cfg.discriminator_lr = 1e-3;
    assert_caught(Method::Sassnet, cfg, 0.1, "discriminator learning rate");
}

#[test]
fn a_wrong_sassnet_consistency_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Sassnet);
    // DTML's weight 1 instead of the released 0.01.
    cfg.consistency = Some(1.0);
    assert_caught(Method::Sassnet, cfg, 0.1, "adversarial weight");
}

#[test]
fn bcp_matches_pytorch() {
    matches_pytorch(Method::Bcp);
}

#[test]
fn a_wrong_bcp_unlabelled_weight_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Bcp);
    // Pseudo labels weighed as real ones.
    cfg.unlabelled_weight = 1.0;
    assert_caught(Method::Bcp, cfg, 0.1, "pseudo-label weight");
}

#[test]
fn a_wrong_bcp_pretraining_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::Bcp);
    // Self-training one step early.
    cfg.pretrain_fraction = 0.2;
    assert_caught(Method::Bcp, cfg, 0.1, "pre-training length");
}

#[test]
fn entropy_min_matches_pytorch() {
    matches_pytorch(Method::EntropyMin);
}

#[test]
fn a_wrong_entropy_min_lr_schedule_is_caught() {
    let g = golden();
    let mut cfg = g.config(Method::EntropyMin);
    // dtml's steps instead of the released poly rate.
    cfg.lr_schedule = Some(LrSchedule::Step);
    assert_caught(Method::EntropyMin, cfg, 0.1, "LR schedule");
}

#[test]
fn a_wrong_bn_momentum_is_caught() {
    let g = golden();
    let cfg = g.config(Method::Supervised);
    assert_caught(Method::Supervised, cfg, 0.01, "BN momentum");
}

/// Where dtml and PyTorch part in f32 over a longer run (a report, not part
/// of the suite): make the data with
/// `make_lockstep_fixture.py --trajectory DIR [ITERATIONS [WIDTH [METHODS]]]`,
/// then `DTML_LOCKSTEP_DIR=DIR cargo test -p dtml-train --test lockstep
/// f32_trajectory -- --ignored --nocapture`. Per method it prints, at a few
/// iterations, how far dtml is from PyTorch (loss averaged over the last 20
/// iterations, the worst weight norm, the worst BN running-statistic norm)
/// beside how far a PyTorch rerun from weights nudged by 1e-6 is: where the
/// two columns grow alike, the runs part by f32 rounding amplified by the
/// training dynamics, not by a difference in what is computed.
#[test]
#[ignore = "a report over a long f32 run; needs DTML_LOCKSTEP_DIR from make_lockstep_fixture.py --trajectory"]
fn f32_trajectory() {
    let dir = std::env::var_os("DTML_LOCKSTEP_DIR")
        .expect("DTML_LOCKSTEP_DIR: a folder written by make_lockstep_fixture.py --trajectory");
    let g = Golden::load(PathBuf::from(dir));
    for (name, runs) in &g.fixture.runs {
        let method: Method = name.parse().expect("a method name");
        let cfg = g.config(method);
        let nudged = &g.fixture.nudged[name];
        let mut ours: Vec<(f64, BTreeMap<String, f64>)> = Vec::new();
        replay(
            &g,
            method,
            &cfg,
            0.1,
            DType::F32,
            &mut |_, loss, _, nets| {
                let mut norms = BTreeMap::new();
                for (i, net) in nets.iter().enumerate() {
                    for (k, v) in net.state_dict().unwrap() {
                        if !k.ends_with("num_batches_tracked") {
                            let v = v.to_dtype(DType::F64).unwrap();
                            let n = v.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
                            norms.insert(format!("net{i}.{k}"), n.to_scalar::<f64>().unwrap());
                        }
                    }
                }
                ours.push((loss, norms));
                Ok(())
            },
        )
        .unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        let window = |f: &dyn Fn(usize) -> f64, t: usize| {
            let from = t.saturating_sub(20);
            (from..t).map(f).sum::<f64>() / (t - from) as f64
        };
        let worst = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, stats: bool| {
            b.iter()
                .filter(|(k, _)| k.contains("running_") == stats)
                .map(|(k, w)| rel(a[k], *w))
                .fold(0.0f64, f64::max)
        };
        assert!(
            rel(ours[0].0, runs[0].loss) < 1e-4,
            "{name}: the first f32 loss already differs: {} vs {}",
            ours[0].0,
            runs[0].loss
        );
        println!(
            "{name}: relative difference from PyTorch f32, dtml | PyTorch nudged by 1e-6\n\
             iteration | loss (20-iteration mean) | worst weight norm | worst BN statistic norm"
        );
        let n = runs.len();
        for t in [1, 5, 10, 20, 50, 100, 200, 300, 500, 1000] {
            if t > n {
                continue;
            }
            let torch_loss = window(&|i| runs[i].loss, t);
            println!(
                "{t:>9} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e}",
                rel(window(&|i| ours[i].0, t), torch_loss),
                rel(window(&|i| nudged[i].loss, t), torch_loss),
                worst(&ours[t - 1].1, &runs[t - 1].norms, false),
                worst(&nudged[t - 1].norms, &runs[t - 1].norms, false),
                worst(&ours[t - 1].1, &runs[t - 1].norms, true),
                worst(&nudged[t - 1].norms, &runs[t - 1].norms, true),
            );
        }
    }
}

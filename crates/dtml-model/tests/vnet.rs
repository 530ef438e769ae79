//! The V-Net against PyTorch: a width-4 network's weights and golden values
//! made by `data-fixtures/vnet/make_vnet_fixture.py`. Passing proves the
//! module tree, the parameter names, the `.pth` import with its kernel-axis
//! mapping, eval- and train-mode batch norm, the running statistics update
//! and the gradients. The fixture's input keeps every train-mode pre-ReLU
//! value at least 1.5e-5 from zero, so f32 rounding (a few 1e-6 there)
//! cannot switch a ReLU and move a gradient entry by a whole upstream value.

use candle_core::{DType, Device, Tensor};
use dtml_model::{Dropout, Init, VNet, VNetConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures/vnet")
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("vnet_w4_golden.safetensors"), &Device::Cpu)
        .unwrap()
}

/// (N, C, x, y, z) <-> (N, C, z, y, x).
fn flip(t: &Tensor) -> Tensor {
    t.permute((0, 1, 4, 3, 2)).unwrap().contiguous().unwrap()
}

/// All values of `t` as f64, in order.
fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (values(got), values(want));
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}[{i}]: {a} vs PyTorch {b} (tolerance {tol} x {scale})"
        );
    }
}

fn width4() -> VNet {
    width4_in(DType::F32)
}

fn width4_in(dtype: DType) -> VNet {
    let net = VNet::new(
        VNetConfig {
            width: 4,
            ..Default::default()
        },
        0,
        dtype,
        &Device::Cpu,
    )
    .unwrap();
    net.load_weights(&fixtures().join("vnet_w4.pth")).unwrap();
    net
}

#[test]
fn matches_pytorch_in_eval_and_train_mode_with_gradients() {
    matches_pytorch(DType::F32);
}

/// The same network in f64: PyTorch made the golden values in f64, so this
/// checks the mathematics without f32 rounding in the way.
#[test]
fn matches_pytorch_in_f64() {
    matches_pytorch(DType::F64);
}

fn matches_pytorch(dtype: DType) {
    let g = golden();
    let net = width4_in(dtype);
    let x = flip(&g["input"]).to_dtype(dtype).unwrap();
    let g: HashMap<String, Tensor> = g
        .into_iter()
        .map(|(k, v)| {
            let v = if k.starts_with("loss_r") {
                v.to_dtype(dtype).unwrap()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let eval = net.forward(&x, false, Dropout::Off).unwrap();
    assert_close(&flip(&eval.sdm), &g["eval_sdm"], 1e-4, "eval sdm");
    assert_close(&flip(&eval.seg_logits), &g["eval_seg"], 1e-4, "eval seg");
    // The untracked inference pass computes the same thing and builds no graph.
    let predicted = net.predict(&x).unwrap();
    assert!(!predicted.sdm.track_op() && !predicted.seg_logits.track_op());
    assert!(eval.seg_logits.track_op());
    assert_close(&flip(&predicted.sdm), &g["eval_sdm"], 1e-4, "predict sdm");
    assert_close(
        &flip(&predicted.seg_logits),
        &g["eval_seg"],
        1e-4,
        "predict seg",
    );

    let train = net.forward(&x, true, Dropout::Off).unwrap();
    assert_close(&flip(&train.sdm), &g["train_sdm"], 1e-4, "train sdm");
    assert_close(&flip(&train.seg_logits), &g["train_seg"], 1e-4, "train seg");
    let loss = ((&train.sdm * flip(&g["loss_r1"]))
        .unwrap()
        .sum_all()
        .unwrap()
        + (&train.seg_logits * flip(&g["loss_r2"]))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let want_loss = g["loss"].to_vec1::<f32>().unwrap()[0] as f64;
    let got_loss = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (got_loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
        "loss {got_loss} vs {want_loss}"
    );

    let grads = loss.backward().unwrap();
    let sd_names: Vec<(String, candle_core::Var)> = net.named_trainable_vars();
    assert_eq!(
        sd_names.len(),
        g.keys().filter(|k| k.starts_with("grad_norm.")).count(),
        "same parameter set as PyTorch"
    );
    for (name, var) in sd_names {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let grad = if grad.rank() == 5 {
            flip(grad)
        } else {
            grad.clone()
        };
        let flat = values(&grad);
        let norm = flat.iter().map(|v| v.powi(2)).sum::<f64>().sqrt();
        let want_norm = g[&format!("grad_norm.{name}")].to_vec1::<f32>().unwrap()[0] as f64;
        // A conv bias that feeds BatchNorm has an analytic gradient of zero;
        // both frameworks return rounding noise there, so its scale is set
        // by the same layer's weight gradient.
        let scale = match name.strip_suffix(".bias") {
            Some(layer) => g
                .get(&format!("grad_norm.{layer}.weight"))
                .map(|t| t.to_vec1::<f32>().unwrap()[0] as f64)
                .unwrap_or(0.0)
                .max(want_norm),
            None => want_norm,
        };
        let want_norm_floor = scale.max(1e-3);
        assert!(
            (norm - want_norm).abs() <= 1e-4 * want_norm_floor,
            "{name}: grad norm {norm} vs {want_norm}"
        );
        let idx: Vec<f64> = g[&format!("grad_index.{name}")].to_vec1().unwrap();
        let vals: Vec<f32> = g[&format!("grad_value.{name}")].to_vec1().unwrap();
        for (i, v) in idx.iter().zip(vals) {
            let got = flat[*i as usize];
            assert!(
                (got - v as f64).abs() <= 1e-4 * want_norm_floor,
                "{name}[{i}]: {got} vs PyTorch {v}"
            );
        }
    }
    for (k, want) in g.iter().filter(|(k, _)| k.starts_with("after_step.")) {
        let name = k.trim_start_matches("after_step.");
        let got = net.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_close(got.as_tensor(), want, 1e-4, name);
    }
    assert_eq!(net.batches_tracked(), 1);
}

#[test]
fn paper_size_has_pytorchs_parameter_count_and_names() {
    let net = VNet::new(VNetConfig::default(), 1337, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.parameter_count(), 9_448_866);
    let sd = net.state_dict().unwrap();
    for name in [
        "block_one.conv.0.weight",
        "block_one.conv.1.running_var",
        "block_one.conv.1.num_batches_tracked",
        "block_five.conv.6.weight",
        "block_five_up.conv.0.weight",
        "block_nine.conv.0.bias",
        "out_conv.weight",
        "out_conv2.bias",
    ] {
        assert!(sd.contains_key(name), "{name}");
    }
    // Transposed conv weights are (Cin, Cout, 2, 2, 2) as in PyTorch.
    assert_eq!(
        sd["block_five_up.conv.0.weight"].dims(),
        &[256, 128, 2, 2, 2]
    );
    // PyTorch's default init: |w| < 1 / sqrt(fan_in).
    let w: Vec<f32> = sd["block_two.conv.0.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let bound = 1.0 / ((32 * 27) as f32).sqrt();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound));
}

/// PyTorch's default initialisation, tensor by tensor, against the
/// statistics `data-fixtures/vnet/make_init_fixture.py` recorded from a
/// PyTorch V-Net of the paper's width: the same shapes, the same bound
/// `1 / sqrt(fan_in)` per conv kind (a transposed conv's fan-in from its
/// dim 1, as `torch.nn.init` computes it), the same spread (the standard
/// deviation of two independent uniform samples agrees within 4.5 standard
/// errors, `sd * sqrt(0.2 / n)` each), and BatchNorm's initial state
/// exactly.
#[test]
fn initialisation_matches_pytorchs_per_tensor() {
    let text = std::fs::read_to_string(fixtures().join("init_stats.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let torch = fixture["tensors"].as_object().unwrap();
    let width = fixture["width"].as_u64().unwrap() as usize;
    let net = VNet::new(
        VNetConfig {
            width,
            ..Default::default()
        },
        11,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ours = net.state_dict().unwrap();
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    let mut theirs: Vec<&String> = torch.keys().collect();
    theirs.sort();
    assert_eq!(names, theirs, "state dict names");
    let mut checked_spread = 0;
    for (name, want) in torch {
        let t = &ours[name];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}: shape");
        let v = values(t);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let max_abs = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let f = |k: &str| want[k].as_f64().unwrap();
        match want["bound"].as_f64() {
            None => {
                // BatchNorm state and its counter: constants.
                assert_eq!(
                    (mean, sd, max_abs),
                    (f("mean"), f("std"), f("max_abs")),
                    "{name}"
                );
            }
            Some(bound) => {
                assert!(
                    max_abs <= bound * (1.0 + 1e-6),
                    "{name}: |w| {max_abs} > bound {bound}"
                );
                if v.len() >= 64 {
                    // The largest of n uniform draws is within 12 / n of
                    // the bound but with probability e^-12.
                    assert!(
                        max_abs >= bound * (1.0 - 12.0 / n),
                        "{name}: |w| at most {max_abs} of {bound}"
                    );
                    let se = f("std") * (0.2 / n).sqrt();
                    assert!(
                        (sd - f("std")).abs() < 4.5 * std::f64::consts::SQRT_2 * se,
                        "{name}: standard deviation {sd} vs PyTorch {}",
                        f("std")
                    );
                    assert!(mean.abs() < 4.5 * sd / n.sqrt(), "{name}: mean {mean}");
                    checked_spread += 1;
                }
            }
        }
    }
    assert!(
        checked_spread >= 45,
        "spread checked on {checked_spread} tensors"
    );
}

/// The released cross pseudo supervision code's two re-initialisations
/// (`kaiming_normal_`, `xavier_normal_` of every `nn.Conv3d` weight)
/// against what `make_init_fixture.py` drew with PyTorch's own functions:
/// the same tensors re-drawn, each weight's spread equal to PyTorch's
/// within 4.5 standard errors (`sd / sqrt(2 n)` each) and to the scheme's,
/// its mean near 0, and everything else (transposed convolutions, biases,
/// BatchNorm) as the default initialisation leaves it.
#[test]
fn released_reinitialisations_match_pytorchs() {
    let text = std::fs::read_to_string(fixtures().join("init_stats.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let width = fixture["width"].as_u64().unwrap() as usize;
    let cfg = VNetConfig {
        width,
        ..Default::default()
    };
    let default = VNet::new(cfg.clone(), 11, DType::F32, &Device::Cpu)
        .unwrap()
        .state_dict()
        .unwrap();
    for (scheme, init) in [
        ("kaiming_normal", Init::KaimingNormal),
        ("xavier_normal", Init::XavierNormal),
    ] {
        let drawn = fixture["schemes"][scheme].as_object().unwrap();
        let ours = VNet::with_init(cfg.clone(), init, 11, DType::F32, &Device::Cpu)
            .unwrap()
            .state_dict()
            .unwrap();
        let conv_weights = ours
            .iter()
            .filter(|(name, t)| name.ends_with(".weight") && t.rank() == 5)
            .count();
        // Every conv weight but the four transposed ones.
        assert_eq!(drawn.len(), conv_weights - 4, "{scheme}: re-drawn tensors");
        for (name, t) in &ours {
            let Some(want) = drawn.get(name) else {
                // Not re-drawn: the same values as the default draws them
                // (the stream differs once a normal draw took its place,
                // so compare the kind, not the values).
                assert_eq!(t.dims(), default[name].dims(), "{scheme} {name}");
                let prefix = name.rsplit_once('.').unwrap().0;
                if ours.contains_key(&format!("{prefix}.running_mean")) {
                    // BatchNorm: its constant initial state.
                    assert_eq!(values(t), values(&default[name]), "{scheme} {name}");
                } else if t.rank() == 5 {
                    let fan_in = (t.dims()[1] * 8) as f64;
                    let max = values(t).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert!(max <= 1.0 / fan_in.sqrt() * (1.0 + 1e-6), "{scheme} {name}");
                }
                continue;
            };
            let v = values(t);
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let f = |k: &str| want[k].as_f64().unwrap();
            assert_eq!(n, f("numel"), "{scheme} {name}: size");
            let se = f("scheme_std") / (2.0 * n).sqrt();
            assert!(
                (sd - f("std")).abs() < 4.5 * std::f64::consts::SQRT_2 * se,
                "{scheme} {name}: standard deviation {sd} vs PyTorch {}",
                f("std")
            );
            assert!(
                (sd - f("scheme_std")).abs() < 4.5 * se,
                "{scheme} {name}: standard deviation {sd} vs the scheme's {}",
                f("scheme_std")
            );
            assert!(
                mean.abs() < 4.5 * sd / n.sqrt(),
                "{scheme} {name}: mean {mean}"
            );
        }
    }
}

#[test]
fn initialisation_is_deterministic_per_seed() {
    let a = VNet::new(
        VNetConfig {
            width: 2,
            ..Default::default()
        },
        5,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let b = VNet::new(
        VNetConfig {
            width: 2,
            ..Default::default()
        },
        5,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let c = VNet::new(
        VNetConfig {
            width: 2,
            ..Default::default()
        },
        6,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let w = |n: &VNet| {
        n.get("block_three.conv.3.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
}

#[test]
fn safetensors_round_trip_keeps_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let net = width4();
    let p = dir.path().join("w.safetensors");
    net.save_safetensors(&p).unwrap();
    let other = VNet::new(
        VNetConfig {
            width: 4,
            ..Default::default()
        },
        99,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    other.load_weights(&p).unwrap();
    let x = flip(&golden()["input"]);
    let a = net.forward(&x, false, Dropout::Off).unwrap().seg_logits;
    let b = other.forward(&x, false, Dropout::Off).unwrap().seg_logits;
    assert_close(&a, &b, 0.0, "reloaded");
}

#[test]
fn bad_inputs_and_weights_are_clear_errors() {
    let net = VNet::new(
        VNetConfig {
            width: 2,
            ..Default::default()
        },
        1,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::zeros((1, 1, 16, 24, 16), DType::F32, &Device::Cpu).unwrap();
    let e = net
        .forward(&x, false, Dropout::Off)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 16"), "{e}");
    let x = Tensor::zeros((1, 2, 16, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward(&x, false, Dropout::Off).is_err());
    // No samples: an error in training (one graph node) and evaluation alike.
    let x = Tensor::zeros((0, 1, 16, 16, 16), DType::F32, &Device::Cpu).unwrap();
    for train in [true, false] {
        let e = net
            .forward(&x, train, Dropout::Off)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one sample"), "{e}");
    }
    // Weights of another width.
    let e = net
        .load_weights(&fixtures().join("vnet_w4.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("vnet_w4.pth") && e.contains("shape"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let e = net.load_weights(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.pth"), "{e}");
    let e = net
        .load_weights(&dir.path().join("none.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such file"), "{e}");
    assert!(
        VNet::new(
            VNetConfig {
                dropout: 1.0,
                ..Default::default()
            },
            1,
            DType::F32,
            &Device::Cpu
        )
        .is_err()
    );
}

#[test]
fn seeded_dropout_zeroes_whole_channels() {
    use rand::SeedableRng;
    let net = VNet::new(
        VNetConfig {
            width: 2,
            ..Default::default()
        },
        1,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16, 16), &Device::Cpu).unwrap();
    let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let a = net
        .forward(&x, true, Dropout::Seeded(&mut r1))
        .unwrap()
        .seg_logits;
    let b = net
        .forward(&x, true, Dropout::Seeded(&mut r2))
        .unwrap()
        .seg_logits;
    assert_close(&a, &b, 0.0, "same seed, same masks");
    // Masks all zero leave only the head biases.
    let zero = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let zero5 = Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap();
    let out = net
        .forward(&x, true, Dropout::Masks(&[zero5.clone(), zero.clone()]))
        .unwrap()
        .seg_logits;
    let bias = net.get("out_conv2.bias").unwrap().to_vec1::<f32>().unwrap()[0];
    let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| (x - bias).abs() < 1e-6));
}

/// `--dropout 0` means no dropout at all: a seeded training pass with p = 0
/// equals the pass without dropout bit for bit (issue 21), and p = 0.5
/// does not.
#[test]
fn dropout_zero_is_no_dropout() {
    use rand::SeedableRng;
    let x = Tensor::rand(0f32, 1.0, (2, 1, 16, 16, 16), &Device::Cpu).unwrap();
    for (p, same) in [(0.0, true), (0.5, false)] {
        let config = VNetConfig {
            width: 2,
            dropout: p,
            ..Default::default()
        };
        let net = VNet::new(config, 3, DType::F32, &Device::Cpu).unwrap();
        let plain = net.forward(&x, true, Dropout::Off).unwrap().seg_logits;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let seeded = net
            .forward(&x, true, Dropout::Seeded(&mut rng))
            .unwrap()
            .seg_logits;
        let diff = (plain - seeded)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff == 0.0, same, "dropout {p}: max difference {diff}");
    }
}

/// The mean teacher's moving average, weight by weight in f64 against the
/// formula; BN running statistics stay the teacher's own.
#[test]
fn moving_average_moves_every_weight_and_no_bn_statistic() {
    let config = VNetConfig {
        width: 2,
        ..VNetConfig::default()
    };
    let make = |seed| VNet::new(config.clone(), seed, DType::F64, &Device::Cpu).unwrap();
    let (teacher, student) = (make(1), make(2));
    // Distinct running statistics, so "left alone" can be told apart.
    let x = Tensor::randn(0.0, 1.0, (2, 1, 16, 16, 16), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    student.forward(&x, true, Dropout::Off).unwrap();
    let state = |net: &VNet| -> HashMap<String, Vec<f64>> {
        net.state_dict()
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.contains("num_batches"))
            .map(|(k, v)| (k, values(&v)))
            .collect()
    };
    let before = state(&teacher);
    teacher.average_towards(&student, 0.75).unwrap();
    let mut moved = 0;
    for (name, got) in state(&teacher) {
        if name.contains("running_") {
            assert_eq!(got, before[&name], "{name} changed");
            continue;
        }
        moved += 1;
        let theirs = &state(&student)[&name];
        for ((g, t), s) in got.iter().zip(&before[&name]).zip(theirs) {
            assert!(
                (g - (0.75 * t + 0.25 * s)).abs() <= 1e-15 * (1.0 + g.abs()),
                "{name}"
            );
        }
    }
    assert!(moved > 20, "only {moved} weights");
    // alpha 0 copies the student; bad factors and architectures are errors.
    teacher.average_towards(&student, 0.0).unwrap();
    for (name, var) in student.named_trainable_vars() {
        assert_eq!(
            values(teacher.get(&name).unwrap().as_tensor()),
            values(var.as_tensor())
        );
    }
    assert!(teacher.average_towards(&student, 1.5).is_err());
    let wider = VNet::new(
        VNetConfig {
            width: 4,
            ..VNetConfig::default()
        },
        3,
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    assert!(teacher.average_towards(&wider, 0.5).is_err());
}

//! The objectives' arithmetic written out by hand from `shared/method.md`,
//! and the registry's names.

use super::*;
use crate::TrainConfig;
use candle_core::{DType, Device};

fn t(v: &[f64]) -> Tensor {
    Tensor::from_slice(v, (v.len(), 1), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The objectives' arithmetic, written out by hand from method.md on a
/// batch of 2 labelled + 2 unlabelled "voxels".
#[test]
fn objectives_combine_the_parts_as_the_spec_says() {
    let seg = [0.3, -1.2, 2.0, -0.4];
    let sdm_a = [0.002, -0.001, 0.0005, 0.003];
    let sdm_b = [-0.0004, 0.0012, -0.002, 0.0001];
    let y = [1.0, 0.0];
    let target = [-0.5, 0.25];
    let outputs = [
        VNetOutput {
            sdm: t(&sdm_a),
            seg_logits: t(&seg),
            aux_seg: vec![],
        },
        VNetOutput {
            sdm: t(&sdm_b),
            seg_logits: t(&[0.0; 4]),
            aux_seg: vec![],
        },
    ];
    let (label, sdm) = (t(&y), t(&target));
    let image = t(&[0.0; 4]);
    let targets = Targets {
        forwarded: &[],
        image: &image,
        state: None,
        label: &label,
        sdm: Some(&sdm),
        labelled: 2,
    };
    let cfg = TrainConfig::default();
    let lambda = 0.37;
    let dice = |p: &[f64]| {
        let inter: f64 = p.iter().zip(&y).map(|(a, b)| a * b).sum();
        let den: f64 = p.iter().map(|a| a * a).sum::<f64>() + y.iter().map(|a| a * a).sum::<f64>();
        1.0 - (2.0 * inter + 1e-5) / (den + 1e-5)
    };
    let p: Vec<f64> = seg.iter().map(|x| sigmoid(*x)).collect();
    let q: Vec<f64> = sdm_b.iter().map(|d| sigmoid(-1500.0 * d)).collect();
    let bce: f64 = (0..2)
        .map(|i| -(y[i] * p[i].ln() + (1.0 - y[i]) * (1.0 - p[i]).ln()))
        .sum::<f64>()
        / 2.0;
    let loss_a = 0.5 * (bce + dice(&p[..2]));
    let cons: f64 = q.iter().zip(&p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / 4.0;
    let l1: f64 = (0..2).map(|i| (sdm_b[i] - target[i]).abs()).sum::<f64>() / 2.0;
    let want_dtml = loss_a + l1 + dice(&q[..2]) + lambda * cons;
    let got = objective_of(Method::Dtml, &cfg, &outputs, &targets, lambda).unwrap();
    assert!((scalar(&got.total) - want_dtml).abs() < 1e-12);
    let want_released = loss_a + dice(&q[..2]) + 2.0 * lambda * cons;
    let got = objective_of(Method::DtmlReleased, &cfg, &outputs, &targets, lambda).unwrap();
    assert!((scalar(&got.total) - want_released).abs() < 1e-12);

    let q_a: Vec<f64> = sdm_a.iter().map(|d| sigmoid(-1500.0 * d)).collect();
    let mse: f64 = (0..2).map(|i| (sdm_a[i] - target[i]).powi(2)).sum::<f64>() / 2.0;
    let cons_a: f64 = q_a
        .iter()
        .zip(&p)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / 4.0;
    let want_dtc = dice(&p[..2]) + 0.3 * mse + lambda * cons_a;
    let got = objective_of(Method::Dtc, &cfg, &outputs[..1], &targets, lambda).unwrap();
    assert!((scalar(&got.total) - want_dtc).abs() < 1e-12);

    let got = objective_of(Method::Supervised, &cfg, &outputs[..1], &targets, lambda).unwrap();
    assert!((scalar(&got.total) - loss_a).abs() < 1e-12);

    let no_sdm = Targets {
        image: &image,
        state: None,
        sdm: None,
        ..targets
    };
    assert!(objective_of(Method::Dtml, &cfg, &outputs, &no_sdm, lambda).is_err());
}

#[test]
fn names_round_trip() {
    for m in Method::ALL {
        assert_eq!(m.name().parse::<Method>(), Ok(m));
        assert_eq!(m.to_string(), m.name());
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!("\"{}\"", m.name()));
    }
    assert!("fixmatch".parse::<Method>().is_err());
    assert_eq!("dtml-released".parse(), Ok(Method::DtmlReleased));
}

fn objective_of(
    method: Method,
    cfg: &TrainConfig,
    outputs: &[VNetOutput],
    targets: &Targets,
    lambda: f64,
) -> Result<Objective> {
    plugin(method).objective(cfg, outputs, targets, lambda, 0)
}

#[test]
fn every_method_has_its_plugin() {
    for m in Method::ALL {
        let p = plugin(m);
        assert_eq!(p.method(), m);
        assert!(!p.networks().is_empty());
        assert!(p.networks().iter().any(|n| n.exported_as.is_some()));
    }
}

/// The teacher's seeded input noise is `clamp(N(0, 0.1^2), -0.2, 0.2)`:
/// its moments and the share clamped (P(|z| > 2) = 4.55 %), over 200 000
/// draws with 5-sigma bounds; the same seed and iteration give the same
/// noise, another iteration other noise.
#[test]
fn seeded_noise_is_clamped_gaussian() {
    let like = Tensor::zeros((2, 1, 100, 100, 10), DType::F32, &Device::Cpu).unwrap();
    let draw = |t| {
        StepDraws::seeded(7, t)
            .noise_like(&like, 0.1, 0.2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let v = draw(3);
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    let clamped = v.iter().filter(|x| x.abs() >= 0.2).count() as f64 / n;
    assert!(mean.abs() < 5.0 * 0.1 / n.sqrt(), "mean {mean}");
    // The clamped normal's: 0.1 sqrt(E[min(z^2, 4)]) = 0.1 sqrt((2 Phi(2) -
    // 1) - 4 phi(2) + 4 P(|z| > 2)) = 0.1 sqrt(0.9205) = 0.09594.
    assert!((var.sqrt() - 0.09594).abs() < 0.001, "std {}", var.sqrt());
    let p = 0.0455;
    assert!(
        (clamped - p).abs() < 5.0 * (p * (1.0 - p) / n).sqrt(),
        "clamped {clamped}"
    );
    assert!(v.iter().all(|x| x.abs() <= 0.2));
    assert_eq!(draw(3), v);
    assert_ne!(draw(4), v);
}

//! The training objectives exactly as `shared/method.md` defines them, from
//! the networks' outputs on a batch to the total loss and its parts.

use crate::config::TrainConfig;
use crate::error::Result;
use crate::method::Method;
use candle_core::Tensor;
use dtml_loss::{SdmLoss, bce_with_logits, consistency, dice_loss, sdm_regression, sdm_to_mask};
use dtml_model::VNetOutput;

/// The device-side targets of a batch.
pub struct Targets<'a> {
    /// Labels of the labelled patches `(L, 1, Z, Y, X)`, 0/1 floats.
    pub label: &'a Tensor,
    /// Normalised SDM targets of the labelled patches, same shape.
    pub sdm: Option<&'a Tensor>,
    /// Number of labelled patches at the head of the batch.
    pub labelled: usize,
}

/// The objective's total and its parts (for logs).
pub struct Objective {
    pub total: Tensor,
    pub parts: Vec<(&'static str, Tensor)>,
}

fn head(t: &Tensor, n: usize) -> Result<Tensor> {
    Ok(t.narrow(0, 0, n)?)
}

fn sdm_target<'a>(t: &Targets<'a>, method: Method) -> Result<&'a Tensor> {
    t.sdm.ok_or_else(|| {
        crate::TrainError::Other(format!(
            "method {} needs SDM targets and the batch has none",
            method.name()
        ))
    })
}

/// Computes the objective of `method` from the networks' outputs on the
/// whole batch (`outputs[0]` = student A or the single network).
pub fn objective(
    method: Method,
    cfg: &TrainConfig,
    outputs: &[VNetOutput],
    targets: &Targets,
    lambda: f64,
) -> Result<Objective> {
    let l = targets.labelled;
    let y = targets.label;
    let dice_kind = cfg.dice;
    let k = cfg.sharpness;
    let region_loss = |seg: &Tensor| -> Result<Tensor> {
        let seg_l = head(seg, l)?;
        let p_l = candle_nn::ops::sigmoid(&seg_l)?;
        let bce = bce_with_logits(&seg_l, y)?;
        let dice = dice_loss(&p_l, y, dice_kind)?;
        Ok(((bce + dice)? * 0.5)?)
    };
    Ok(match method {
        Method::Dtml | Method::DtmlReleased => {
            let (a, b) = (&outputs[0], &outputs[1]);
            let p_a = candle_nn::ops::sigmoid(&a.seg_logits)?;
            let q_b = sdm_to_mask(&b.sdm, k)?;
            let loss_a = region_loss(&a.seg_logits)?;
            let dice_b = dice_loss(&head(&q_b, l)?, y, dice_kind)?;
            let cons = consistency(&q_b, &p_a)?;
            let mut parts = vec![("loss_a", loss_a.clone()), ("dice_b", dice_b.clone())];
            let (loss_b, cons_weight) = if method == Method::Dtml {
                let reg = sdm_regression(
                    &head(&b.sdm, l)?,
                    sdm_target(targets, method)?,
                    cfg.sdm_loss,
                )?;
                parts.push(("sdm_b", reg.clone()));
                (((reg * cfg.sdm_weight)? + dice_b)?, lambda)
            } else {
                (dice_b, 2.0 * lambda)
            };
            parts.push(("consistency", cons.clone()));
            let total = ((loss_a + loss_b)? + (cons * cons_weight)?)?;
            Objective { total, parts }
        }
        Method::Dtc => {
            let o = &outputs[0];
            let p = candle_nn::ops::sigmoid(&o.seg_logits)?;
            let q = sdm_to_mask(&o.sdm, k)?;
            let dice = dice_loss(&head(&p, l)?, y, dice_kind)?;
            let mse = sdm_regression(
                &head(&o.sdm, l)?,
                sdm_target(targets, method)?,
                SdmLoss::Mse,
            )?;
            let cons = consistency(&q, &p)?;
            let total = ((&dice + (&mse * cfg.dtc_beta)?)? + (&cons * lambda)?)?;
            Objective {
                total,
                parts: vec![("dice", dice), ("sdm_mse", mse), ("consistency", cons)],
            }
        }
        Method::Supervised => {
            let loss = region_loss(&outputs[0].seg_logits)?;
            Objective {
                total: loss.clone(),
                parts: vec![("loss", loss)],
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
            },
            VNetOutput {
                sdm: t(&sdm_b),
                seg_logits: t(&[0.0; 4]),
            },
        ];
        let (label, sdm) = (t(&y), t(&target));
        let targets = Targets {
            label: &label,
            sdm: Some(&sdm),
            labelled: 2,
        };
        let cfg = TrainConfig::default();
        let lambda = 0.37;
        let dice = |p: &[f64]| {
            let inter: f64 = p.iter().zip(&y).map(|(a, b)| a * b).sum();
            let den: f64 =
                p.iter().map(|a| a * a).sum::<f64>() + y.iter().map(|a| a * a).sum::<f64>();
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
        let got = objective(Method::Dtml, &cfg, &outputs, &targets, lambda).unwrap();
        assert!((scalar(&got.total) - want_dtml).abs() < 1e-12);
        let want_released = loss_a + dice(&q[..2]) + 2.0 * lambda * cons;
        let got = objective(Method::DtmlReleased, &cfg, &outputs, &targets, lambda).unwrap();
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
        let got = objective(Method::Dtc, &cfg, &outputs[..1], &targets, lambda).unwrap();
        assert!((scalar(&got.total) - want_dtc).abs() < 1e-12);

        let got = objective(Method::Supervised, &cfg, &outputs[..1], &targets, lambda).unwrap();
        assert!((scalar(&got.total) - loss_a).abs() < 1e-12);

        let no_sdm = Targets {
            sdm: None,
            ..targets
        };
        assert!(objective(Method::Dtml, &cfg, &outputs, &no_sdm, lambda).is_err());
    }

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        assert!("mean-teacher".parse::<Method>().is_err());
        assert_eq!("dtml-released".parse(), Ok(Method::DtmlReleased));
    }
}

//! Losses of DTML and its family (DTC, the supervised baseline): soft Dice,
//! binary cross-entropy on logits, SDM regression, the SDM-to-mask transform
//! `sigmoid(-k d)`, the dual-task consistency term and the sigmoid ramp-up of
//! its weight. Every loss is built from candle tensor ops, so it runs on any
//! device and dtype candle supports (tested in F32 and F64), differentiates
//! through candle's autograd, and returns a 0-d tensor. Reductions cover all
//! elements of all samples, as the reference code does; inputs may be any
//! shape, typically (N, 1, Z, Y, X), and must agree in shape.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let p = Tensor::new(&[0.9f32, 0.2, 0.7], &Device::Cpu)?;
//! let y = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu)?;
//! let loss = dtml_loss::dice_loss(&p, &y, dtml_loss::DiceVariant::Squared)?;
//! assert!((loss.to_scalar::<f32>()? - (1.0 - 3.2 / 3.34)).abs() < 1e-5);
//! # Ok::<(), dtml_loss::LossError>(())
//! ```

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};

/// The `k` of `sigmoid(-k d)`: the authors' value, "as large as possible to
/// approximate the transform" from a signed distance to a mask.
pub const SDM_SHARPNESS: f64 = 1500.0;

/// Checks a sharpness `k` of `sigmoid(-k d)`: finite and positive (at 0
/// every voxel is 0.5; below, inside and outside swap). Training and the
/// `run.json` inference reads share this rule.
pub fn check_sharpness(k: f64) -> std::result::Result<(), String> {
    if k.is_finite() && k > 0.0 {
        Ok(())
    } else {
        Err(format!("sharpness {k} must be finite and positive"))
    }
}

/// Smoothing term of the reference Dice loss (numerator and denominator).
pub const DICE_SMOOTH: f64 = 1e-5;

/// Results of this crate.
pub type Result<T> = std::result::Result<T, LossError>;

/// Why a loss could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A candle op failed (device, dtype, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Inputs that must agree in shape do not, or a mean would cover no
    /// element (it would be NaN). `a` and `b` are the two shapes involved.
    #[error("{what}: {a:?} and {b:?}")]
    Shape {
        what: &'static str,
        a: Vec<usize>,
        b: Vec<usize>,
    },
}

/// Denominator of the soft Dice loss; both exist in the DTC code family.
/// Named `squared` / `linear` in flags and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, EnumString)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DiceVariant {
    /// `sum(p^2) + sum(y^2)`: the reference `dice_loss`, used for training.
    Squared,
    /// `sum(p) + sum(y)`: the reference `dice_loss1`.
    Linear,
}

/// Kind of SDM regression loss. Named `l1` / `mse` in flags and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, EnumString)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SdmLoss {
    /// Mean absolute error: DTML's `loss_dis`.
    L1,
    /// Mean squared error: DTC's SDM loss.
    Mse,
}

fn check_same(what: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(LossError::Shape {
            what,
            a: a.dims().to_vec(),
            b: b.dims().to_vec(),
        })
    }
}

fn check_nonempty(what: &'static str, a: &Tensor) -> Result<()> {
    if a.elem_count() > 0 {
        Ok(())
    } else {
        Err(LossError::Shape {
            what,
            a: a.dims().to_vec(),
            b: a.dims().to_vec(),
        })
    }
}

/// The target in the prediction's dtype, so labels may come as u8 (the
/// reference's `target.float()`).
fn as_dtype_of(target: &Tensor, pred: &Tensor) -> Result<Tensor> {
    let dtype: DType = pred.dtype();
    if target.dtype() == dtype {
        Ok(target.clone())
    } else {
        Ok(target.to_dtype(dtype)?)
    }
}

/// Soft Dice loss over the whole batch at once (not per sample, as the
/// reference): `1 - (2 sum(p y) + 1e-5) / (den + 1e-5)`, `den` per
/// [`DiceVariant`]. `p` are probabilities, `y` the label (cast to `p`'s
/// dtype). All-zero `p` and `y` give 0.
pub fn dice_loss(p: &Tensor, y: &Tensor, variant: DiceVariant) -> Result<Tensor> {
    dice_loss_smoothed(p, y, variant, DICE_SMOOTH)
}

/// [`dice_loss`] with another smoothing term in place of 1e-5 (MC-Net's
/// released `Binary_dice_loss` adds 1e-8).
pub fn dice_loss_smoothed(
    p: &Tensor,
    y: &Tensor,
    variant: DiceVariant,
    smooth: f64,
) -> Result<Tensor> {
    check_same("dice_loss: prediction and target shapes differ", p, y)?;
    let y = as_dtype_of(y, p)?;
    let intersect = (p * &y)?.sum_all()?;
    let den = match variant {
        DiceVariant::Squared => (p.sqr()?.sum_all()? + y.sqr()?.sum_all()?)?,
        DiceVariant::Linear => (p.sum_all()? + y.sum_all()?)?,
    };
    let ratio = (intersect.affine(2.0, smooth)? / (den + smooth)?)?;
    Ok(ratio.affine(-1.0, 1.0)?)
}

/// Binary cross-entropy on logits, mean over all elements, in the stable
/// form `max(x, 0) - x y + log(1 + exp(-|x|))` (PyTorch's
/// `binary_cross_entropy_with_logits`). `|x|` is written `2 max(x, 0) - x`
/// (exact in floating point) so the gradient is `sigmoid(x) - y` at `x = 0`
/// too, whatever subgradient candle gives `relu` there.
pub fn bce_with_logits(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    check_same(
        "bce_with_logits: logits and target shapes differ",
        logits,
        y,
    )?;
    check_nonempty(
        "bce_with_logits: empty input, the mean is undefined",
        logits,
    )?;
    Ok(bce_with_logits_per_element(logits, y)?.mean_all()?)
}

/// [`bce_with_logits`] before its mean: one value per element (BCP
/// weights them by region).
pub fn bce_with_logits_per_element(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    check_same(
        "bce_with_logits: logits and target shapes differ",
        logits,
        y,
    )?;
    let y = as_dtype_of(y, logits)?;
    let pos = logits.relu()?;
    let abs = (pos.affine(2.0, 0.0)? - logits)?;
    let log_term = (abs.neg()?.exp()? + 1.0)?.log()?;
    Ok(((pos + log_term)? - (logits * &y)?)?)
}

/// Soft mask `sigmoid(-k d)` of a signed distance map `d` (the SDM head's
/// output after its tanh; negative inside). Uses candle-nn's sigmoid, which
/// has a backward (`s (1 - s)`) and evaluates `1 / (1 + exp(-x))`: for
/// `|k d|` in the thousands the exponential saturates to 0 or inf, giving
/// exactly 0 or 1 and a zero gradient, never NaN.
pub fn sdm_to_mask(d: &Tensor, k: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::sigmoid(&d.affine(-k, 0.0)?)?)
}

/// SDM regression of `d` to `target`, mean over all elements. The L1 form
/// writes `|x|` as `relu(x) + relu(-x)`, whose gradient is 0 at a tie, as
/// PyTorch's `l1_loss` (`sign(0) = 0`).
pub fn sdm_regression(d: &Tensor, target: &Tensor, kind: SdmLoss) -> Result<Tensor> {
    check_same(
        "sdm_regression: prediction and target shapes differ",
        d,
        target,
    )?;
    check_nonempty("sdm_regression: empty input, the mean is undefined", d)?;
    let target = as_dtype_of(target, d)?;
    let diff = (d - &target)?;
    let per_elem = match kind {
        SdmLoss::L1 => (diff.relu()? + diff.neg()?.relu()?)?,
        SdmLoss::Mse => diff.sqr()?,
    };
    Ok(per_elem.mean_all()?)
}

/// Dual-task consistency `mean((q - p)^2)` over all elements of all samples
/// (labelled and unlabelled). Gradient reaches both `q` and `p`: neither
/// student is a fixed target.
pub fn consistency(q: &Tensor, p: &Tensor) -> Result<Tensor> {
    check_same("consistency: the two maps' shapes differ", q, p)?;
    check_nonempty("consistency: empty input, the mean is undefined", q)?;
    Ok((q - p)?.sqr()?.mean_all()?)
}

/// Consistency weight `lambda(t) = w exp(-5 (1 - r)^2)` of the DTC code
/// family's `sigmoid_rampup`, with the ramp cut into 40 steps:
/// `r = clamp(floor(t / segment) / 40, 0, 1)`, `segment = R / 40` for
/// `R = ramp_iterations`. With the paper's `R = 6000` this is the
/// reference's `floor(t / 150) / 40`; a shorter run keeps the same shape.
/// `R = 0` means no ramp (`r = 1`, full weight from the start).
pub fn rampup_weight(iteration: usize, ramp_iterations: usize, weight: f64) -> f64 {
    let r = if ramp_iterations == 0 {
        1.0
    } else {
        let segment = ramp_iterations as f64 / 40.0;
        ((iteration as f64 / segment).floor() / 40.0).clamp(0.0, 1.0)
    };
    weight * (-5.0 * (1.0 - r) * (1.0 - r)).exp()
}

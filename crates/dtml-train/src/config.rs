//! Every training hyper-parameter in one serialisable struct: the defaults
//! are the paper's recipe, a TOML file and command-line flags override them.

use crate::error::{Result, TrainError};
use crate::method::Method;
pub use dtml_loss::{DiceVariant, SdmLoss};
use dtml_volume::Xyz;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyper-parameters of a run. Sizes are (x, y, z).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub method: Method,
    pub iterations: usize,
    /// Labelled patches per batch (the supervised method uses
    /// `labelled_batch + unlabelled_batch` labelled patches instead).
    pub labelled_batch: usize,
    pub unlabelled_batch: usize,
    pub patch: Xyz<usize>,
    /// Base width of the V-Nets (16 in the paper).
    pub width: usize,
    /// Channel-dropout probability of the V-Nets in training. 0 by
    /// default: on LA-like data the released code's 0.5 gave smaller masks
    /// and lower Dice for every method (BENCHMARKS.md, "Defaults on LA-like
    /// data"); `dtml_model::RELEASED_DROPOUT` is one flag away.
    pub dropout: f64,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// LR is multiplied by `lr_gamma` at each of these fractions of the run.
    pub lr_steps: Vec<f64>,
    pub lr_gamma: f64,
    /// Ramp-up length of the consistency weight as a fraction of the run.
    pub rampup_fraction: f64,
    /// Final consistency weight `w` of `lambda(t)`.
    pub consistency: f64,
    /// Weight of student B's SDM regression (`dtml`).
    pub sdm_weight: f64,
    /// Weight of DTC's SDM MSE (`beta` of the DTC code, 0.3).
    pub dtc_beta: f64,
    pub sdm_loss: SdmLoss,
    pub dice: DiceVariant,
    /// Sharpness `k` of `sigmoid(-k d)`.
    pub sharpness: f64,
    pub seed: u64,
    /// Write a checkpoint every this many iterations (0: only at the end).
    pub checkpoint_every: usize,
    /// Validate every this many iterations (0: never).
    pub validate_every: usize,
    /// Sliding-window strides for validation.
    pub validation_stride: Xyz<usize>,
    /// Worker threads of the CPU (all cores when unset). Not part of what
    /// is trained: results are the same for any count, and a resume may
    /// change it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Dtml,
            iterations: 6000,
            labelled_batch: 2,
            unlabelled_batch: 2,
            patch: dtml_volume::prepare::PAPER_PATCH,
            width: 16,
            dropout: 0.0,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            lr_steps: vec![5.0 / 12.0, 10.0 / 12.0],
            lr_gamma: 0.1,
            rampup_fraction: 1.0,
            consistency: 1.0,
            sdm_weight: 1.0,
            dtc_beta: 0.3,
            sdm_loss: SdmLoss::L1,
            dice: DiceVariant::Squared,
            sharpness: dtml_loss::SDM_SHARPNESS,
            seed: 1337,
            checkpoint_every: 500,
            validate_every: 0,
            validation_stride: dtml_infer::infer::PAPER_STRIDE,
            threads: None,
        }
    }
}

/// The largest `--config` file read.
const CONFIG_MAX_BYTES: u64 = 1 << 20;

impl TrainConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig> {
        let bytes = dtml_volume::confine::read_bounded(path, CONFIG_MAX_BYTES, "config file")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| TrainError::file(path, "invalid config: not UTF-8 text"))?;
        toml::from_str(&text).map_err(|e| TrainError::file(path, format!("invalid config: {e}")))
    }

    /// The demo's configuration (`dtml train` without `--data`): the
    /// paper's recipe at width 8 on 48x48x32 patches for 200 iterations,
    /// about 1.5 minutes on 2 cores (the supervised baseline another 0.7).
    pub fn demo() -> TrainConfig {
        TrainConfig {
            iterations: 200,
            patch: Xyz::new(48, 48, 32),
            width: 8,
            checkpoint_every: 50,
            ..TrainConfig::default()
        }
    }

    /// (labelled, unlabelled) patches per batch: the supervised baseline
    /// takes both counts of labelled patches.
    pub fn batch_shape(&self) -> (usize, usize) {
        if self.method.uses_unlabelled() {
            (self.labelled_batch, self.unlabelled_batch)
        } else {
            (self.labelled_batch + self.unlabelled_batch, 0)
        }
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.iterations == 0 {
            return bad("iterations must be positive".into());
        }
        if self.labelled_batch == 0 {
            return bad("labelled_batch must be positive".into());
        }
        if self.method.uses_unlabelled() && self.unlabelled_batch == 0 {
            return bad(format!(
                "method {} needs unlabelled_batch > 0",
                self.method.name()
            ));
        }
        if let Err(why) = dtml_model::vnet::check_spatial_size(&self.patch.xyz()) {
            return bad(format!("patch: {why}"));
        }
        if self.width == 0 {
            return bad("width must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("lr_gamma", self.lr_gamma),
            ("rampup_fraction", self.rampup_fraction),
            ("consistency", self.consistency),
            ("sdm_weight", self.sdm_weight),
            ("dtc_beta", self.dtc_beta),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} = {v} must be finite and >= 0"));
            }
        }
        dtml_loss::check_sharpness(self.sharpness).or_else(bad)?;
        if self.lr_steps.iter().any(|f| !(0.0..=1.0).contains(f)) {
            return bad(format!(
                "lr_steps {:?} must be fractions of the run in [0, 1]",
                self.lr_steps
            ));
        }
        if self.validation_stride.any(|s| s == 0) {
            return bad("validation_stride must be positive".into());
        }
        Ok(())
    }

    /// Learning rate of 0-based iteration `t`: the base rate times `lr_gamma`
    /// for each step fraction `f` with `t >= f * iterations` (for 6000
    /// iterations: x0.1 from 2500 and again from 5000, as the reference's
    /// `0.1 ** (t // 2500)`; for 20, from 9 and from 17).
    pub fn lr_at(&self, t: usize) -> f64 {
        let n = self.iterations as f64;
        // The tolerance absorbs the rounding of `f * n` (5/12 * 6000 is
        // 2500.0000000000005 in f64), far below one iteration.
        let passed = self
            .lr_steps
            .iter()
            .filter(|f| t as f64 >= *f * n - 1e-9 * n.max(1.0))
            .count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }

    /// Consistency weight `lambda(t)` of 0-based iteration `t`.
    pub fn lambda_at(&self, t: usize) -> f64 {
        let ramp = (self.rampup_fraction * self.iterations as f64).round() as usize;
        dtml_loss::rampup_weight(t, ramp, self.consistency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_schedule() {
        let c = TrainConfig::default();
        assert_eq!(c.lr_at(0), 0.01);
        assert_eq!(c.lr_at(2499), 0.01);
        assert!((c.lr_at(2500) - 0.001).abs() < 1e-15);
        assert!((c.lr_at(5000) - 0.0001).abs() < 1e-15);
        // A step that falls between iterations takes effect at the next one.
        let short = TrainConfig {
            iterations: 20,
            ..TrainConfig::default()
        };
        assert_eq!(short.lr_at(8), 0.01);
        assert!((short.lr_at(9) - 0.001).abs() < 1e-15);
        assert!((short.lr_at(16) - 0.001).abs() < 1e-15);
        assert!((short.lr_at(17) - 0.0001).abs() < 1e-15);
        let lam = |t: usize| (-5.0 * (1.0 - ((t / 150) as f64 / 40.0).min(1.0)).powi(2)).exp();
        for t in [0, 149, 150, 3000, 5999, 6000] {
            assert!((c.lambda_at(t) - lam(t)).abs() < 1e-12, "t = {t}");
        }
    }

    #[test]
    fn toml_overrides_some_keys_and_rejects_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "iterations = 100\nmethod = \"dtc\"\npatch = [32, 32, 16]\n",
        )
        .unwrap();
        let c = TrainConfig::from_toml_file(&p).unwrap();
        assert_eq!(c.iterations, 100);
        assert_eq!(c.method, Method::Dtc);
        assert_eq!(c.lr, 0.01);
        std::fs::write(&p, "iteratons = 100\n").unwrap();
        let e = TrainConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("iteratons"), "{e}");
        let bad = TrainConfig {
            patch: Xyz::new(30, 32, 16),
            ..TrainConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}

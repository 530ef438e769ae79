//! Every training hyper-parameter in one serialisable struct: the defaults
//! are the paper's recipe, a TOML file and command-line flags override them.

use crate::error::{Result, TrainError};
use crate::method::Method;
pub use dtml_loss::{DiceVariant, SdmLoss};
use dtml_volume::Xyz;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Declares every hyper-parameter once: its field in [`TrainConfig`] (and
/// so its TOML key and its place in `run.json`, which a resume compares),
/// its default (the paper's recipe unless measurement said otherwise), and,
/// with the `clap` feature, its `--flag` in `TrainOverrides` with the same
/// name, help text and a help heading. A new hyper-parameter is one entry
/// here; keys, flags, help and resume checks cannot drift apart. Each doc
/// is one paragraph: clap shows it as the flag's help, and
/// `document_defaults` appends the default.
/// The configuration's type of an entry: its own, or `Option` of it for
/// an entry marked `[method default]`, whose `None` means "the method's
/// own value" (the flag still parses a plain value).
macro_rules! config_type {
    ($ty:ty) => { $ty };
    ($ty:ty, method default) => { Option<$ty> };
}

macro_rules! hyper_parameters {
    ($(
        $(#[doc = $doc:literal])*
        #[flag($heading:literal $($arg:tt)*)]
        $field:ident: $ty:ty $([$($method_default:tt)+])? = $default:expr,
    )*) => {
        /// Hyper-parameters of a run. Sizes are (x, y, z).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct TrainConfig {
            $( $(#[doc = $doc])* pub $field: config_type!($ty $(, $($method_default)+)?), )*
            /// Worker threads of the CPU (all cores when unset). Not part of
            /// what is trained: results are the same for any count, and a
            /// resume may change it.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub threads: Option<usize>,
            /// MiB of training cases held in memory; cases beyond it are
            /// read from the cache patch by patch ([`crate::cases`]).
            /// Unset: half the memory available at the start. Not part of
            /// what is trained (batches are the same for any budget), and a
            /// resume may change it.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub data_memory: Option<u64>,
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig {
                    $( $field: $default, )*
                    threads: None,
                    data_memory: None,
                }
            }
        }

        /// The training flags (`dtml train --iterations 600 ...`): one
        /// optional value per hyper-parameter, each overriding the
        /// configuration it is applied to.
        #[cfg(feature = "clap")]
        #[derive(Debug, Clone, clap::Args)]
        pub struct TrainOverrides {
            $(
                $(#[doc = $doc])*
                #[arg(long, help_heading = $heading $($arg)*)]
                pub $field: Option<$ty>,
            )*
            /// Worker threads for the CPU [default: all cores].
            #[arg(long)]
            pub threads: Option<usize>,
            /// MiB of training cases kept in memory; the others are read
            /// from the cache patch by patch, with the same batches
            /// [default: half the available memory].
            #[arg(long, value_name = "MiB")]
            pub data_memory: Option<u64>,
        }

        #[cfg(feature = "clap")]
        impl TrainOverrides {
            /// Sets every hyper-parameter given as a flag.
            pub fn apply_to(&self, config: &mut TrainConfig) {
                $( if let Some(value) = &self.$field { config.$field = value.clone().into(); } )*
                if self.threads.is_some() {
                    config.threads = self.threads;
                }
                if self.data_memory.is_some() {
                    config.data_memory = self.data_memory;
                }
            }
        }
    };
}

hyper_parameters! {
    /// Objective (dtml is the paper's; the others are its baselines).
    #[flag("Method", value_enum)]
    method: Method = Method::Dtml,
    /// Training iterations.
    #[flag("Schedule")]
    iterations: usize = 6000,
    /// Labelled patches per batch (supervised: labelled + unlabelled, all labelled).
    #[flag("Schedule")]
    labelled_batch: usize = 2,
    /// Unlabelled patches per batch.
    #[flag("Schedule")]
    unlabelled_batch: usize = 2,
    /// Patch size x,y,z.
    #[flag("Schedule", help = format!("Patch size x,y,z (multiples of {})", dtml_model::vnet::SIZE_MULTIPLE))]
    patch: Xyz<usize> = dtml_volume::prepare::PAPER_PATCH,
    /// Base width of the V-Nets (channels of the first stage; 16 in the paper).
    #[flag("Model")]
    width: usize = 16,
    /// Channel-dropout probability of the V-Nets in training: 0 for dtml (measured better than the released 0.5 on LA-like and hard built-in data: BENCHMARKS.md, "Defaults on LA-like data"), the released 0.5 for every other method (supervised measured better with it on the hard data).
    #[flag("Model")]
    dropout: f64 [method default] = None,
    /// SGD learning rate.
    #[flag("Optimiser")]
    lr: f64 = 0.01,
    /// SGD momentum.
    #[flag("Optimiser")]
    momentum: f64 = 0.9,
    /// Weight decay of the trained parameters (never BN statistics).
    #[flag("Optimiser")]
    weight_decay: f64 = 1e-4,
    /// LR schedule: step (the LR steps and factor below; dtml's and the released code of DTML, DTC, UA-MT), poly (`lr (1 - t / N)^0.9`; the SSL4MIS-family code of cps) or constant (MC-Net's released code).
    #[flag("Optimiser", value_enum)]
    lr_schedule: LrSchedule [method default] = None,
    /// LR steps as fractions of the run, comma-separated: the rate is multiplied by the LR factor at each (step schedule).
    #[flag("Optimiser", value_delimiter = ',')]
    lr_steps: Vec<f64> = vec![5.0 / 12.0, 10.0 / 12.0],
    /// LR factor at each step.
    #[flag("Optimiser")]
    lr_gamma: f64 = 0.1,
    /// Ramp-up length of the consistency weight as a fraction of the run.
    #[flag("Objective")]
    rampup_fraction: f64 = 1.0,
    /// Final weight of the consistency term (w of lambda(t)): 1 for dtml, dtml-released, dtc and mc-net, 0.1 for mean-teacher, ua-mt and cps, 0.01 for sassnet's adversarial term.
    #[flag("Objective")]
    consistency: f64 [method default] = None,
    /// Decay of the mean teacher's moving average of the student's weights (mean-teacher).
    #[flag("Objective")]
    ema_decay: f64 = 0.99,
    /// Temperature T of MC-Net's sharpened pseudo labels, `p^(1/T) / (p^(1/T) + (1 - p)^(1/T))` (mc-net).
    #[flag("Objective")]
    temperature: f64 = 0.1,
    /// Weight of student B's SDM regression (dtml).
    #[flag("Objective")]
    sdm_weight: f64 = 1.0,
    /// Weight of the SDM MSE of dtc and sassnet (beta of the DTC and SASSNet code).
    #[flag("Objective")]
    dtc_beta: f64 = 0.3,
    /// Base width of SASSNet's discriminator (the released 64; channels 1, 2, 4, 8 times it) (sassnet).
    #[flag("Objective")]
    discriminator_width: usize = 64,
    /// Adam learning rate of SASSNet's discriminator (sassnet).
    #[flag("Objective")]
    discriminator_lr: f64 = 1e-4,
    /// Share of the run BCP pre-trains on labelled copy-paste before its self-training (the released 2000 of 2000 + 15000 iterations) (bcp).
    #[flag("Objective")]
    pretrain_fraction: f64 = 2000.0 / 17000.0,
    /// Side of BCP's copy-paste box as a share of the patch's, on each axis (bcp).
    #[flag("Objective")]
    mask_ratio: f64 = 2.0 / 3.0,
    /// Weight of pseudo-labelled voxels in BCP's losses, where real labels weigh 1 (bcp).
    #[flag("Objective")]
    unlabelled_weight: f64 = 0.5,
    /// SDM regression loss of the boundary student.
    #[flag("Objective", value_enum)]
    sdm_loss: SdmLoss = SdmLoss::L1,
    /// Dice denominator.
    #[flag("Objective", value_enum)]
    dice: DiceVariant = DiceVariant::Squared,
    /// k of the SDM-to-mask transform sigmoid(-k d); recorded for inference.
    #[flag("Objective")]
    sharpness: f64 = dtml_loss::SDM_SHARPNESS,
    /// Seed of every random stream (initialisation, batches, augmentation, dropout).
    #[flag("Schedule")]
    seed: u64 = 1337,
    /// Checkpoint every N iterations (0: only at the end).
    #[flag("Checkpoints and validation")]
    checkpoint_every: usize = 500,
    /// Validate on the validation cases every N iterations (0: never).
    #[flag("Checkpoints and validation")]
    validate_every: usize = 0,
    /// Sliding-window strides x,y,z of validation.
    #[flag("Checkpoints and validation")]
    validation_stride: Xyz<usize> = dtml_infer::infer::PAPER_STRIDE,
}

/// `dtml train --help` with each hyper-parameter's default appended, taken
/// from `TrainConfig::default()`: `train` is the command holding the
/// `TrainOverrides` flags.
#[cfg(feature = "clap")]
pub fn document_defaults(mut train: clap::Command) -> clap::Command {
    let Ok(serde_json::Value::Object(defaults)) = serde_json::to_value(TrainConfig::default())
    else {
        return train;
    };
    // In the command's own order: each change moves the flag to the end.
    let ids: Vec<String> = train
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let Some(value) = defaults.get(&id) else {
            continue;
        };
        let shown = match value {
            // Unset: the method's own value, which the help text gives.
            serde_json::Value::Null => "the method's".to_string(),
            serde_json::Value::Array(items) => {
                items.iter().map(shown).collect::<Vec<_>>().join(",")
            }
            other => shown(other),
        };
        train = train.mut_arg(id.as_str(), |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        });
    }
    train
}

/// A default as `--help` shows it: numbers with a long expansion (the LR
/// steps 5/12 and 10/12) to six decimals, strings without quotes.
#[cfg(feature = "clap")]
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(v) if n.is_f64() && v.to_string().len() > 8 => {
                let text = format!("{v:.6}");
                text.trim_end_matches('0').to_string()
            }
            _ => n.to_string(),
        },
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// How the learning rate falls over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Multiplied by `lr_gamma` at each of `lr_steps`.
    Step,
    /// `lr (1 - t / N)^POLY_POWER`.
    Poly,
    /// `lr` throughout.
    Constant,
}

/// Exponent of the poly schedule (the SSL4MIS-family code's 0.9).
pub const POLY_POWER: f64 = 0.9;

/// The largest `--config` file read.
const CONFIG_MAX_BYTES: u64 = 1 << 20;

/// Settings a resume may change: when snapshots are written and how the
/// machine is used, not what is trained.
pub const RESUME_MAY_CHANGE: &[&str] = &["checkpoint_every", "threads", "data_memory"];

impl TrainConfig {
    /// Bytes of training cases one of `ranks` holds in memory:
    /// `data_memory`, or its share of half the memory available now beyond
    /// what a step needs (`step_bytes`; the ranks of a data-parallel run
    /// may share this machine).
    pub fn data_memory_bytes(&self, ranks: usize, step_bytes: u64) -> u64 {
        match self.data_memory {
            Some(mib) => mib.saturating_mul(1 << 20),
            None => crate::cases::default_data_memory(step_bytes) / ranks.max(1) as u64,
        }
    }

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

    /// Refuses values that cannot train whatever the method
    /// ([`TrainConfig::validate`] adds the method's own checks).
    pub(crate) fn check_values(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.iterations == 0 {
            return bad("iterations must be positive".into());
        }
        if self.labelled_batch == 0 {
            return bad("labelled_batch must be positive".into());
        }
        if let Err(why) = dtml_model::vnet::check_spatial_size(&self.patch.xyz()) {
            return bad(format!("patch: {why}"));
        }
        if self.width == 0 {
            return bad("width must be positive".into());
        }
        if self.discriminator_width == 0 {
            return bad("discriminator_width must be positive".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature {} must be finite and > 0",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.ema_decay) {
            return bad(format!("ema_decay {} must be in [0, 1]", self.ema_decay));
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return bad(format!("dropout {p} must be in [0, 1)"));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("lr_gamma", self.lr_gamma),
            ("rampup_fraction", self.rampup_fraction),
            ("consistency", self.consistency.unwrap_or(0.0)),
            ("sdm_weight", self.sdm_weight),
            ("dtc_beta", self.dtc_beta),
            ("discriminator_lr", self.discriminator_lr),
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

    /// Learning rate of 0-based iteration `t`. Step schedule: the base
    /// rate times `lr_gamma` for each step fraction `f` with
    /// `t >= f * iterations` (for 6000 iterations: x0.1 from 2500 and again
    /// from 5000, as the reference's `0.1 ** (t // 2500)`; for 20, from 9
    /// and from 17). Poly: `lr (1 - t / N)^0.9`, the rate the released code
    /// sets after its step `t` for the next one, so step 0 runs at `lr`.
    pub fn lr_at(&self, t: usize) -> f64 {
        // A method's second stage runs the schedule over the rest of the
        // run; before it the rate is constant.
        let (t, n) = match self.plugin().restart_at(self) {
            Some(start) if t < start => return self.lr,
            Some(start) => (t - start, (self.iterations - start) as f64),
            None => (t, self.iterations as f64),
        };
        match self.lr_schedule() {
            LrSchedule::Poly => return self.lr * (1.0 - t as f64 / n).max(0.0).powf(POLY_POWER),
            LrSchedule::Constant => return self.lr,
            LrSchedule::Step => {}
        }
        // The tolerance absorbs the rounding of `f * n` (5/12 * 6000 is
        // 2500.0000000000005 in f64), far below one iteration.
        let passed = self
            .lr_steps
            .iter()
            .filter(|f| t as f64 >= *f * n - 1e-9 * n.max(1.0))
            .count();
        self.lr * self.lr_gamma.powi(passed as i32)
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

    /// The configuration survives `run.json` exactly, fractions such as
    /// BCP's 2000 / 17000 included (a resume compares the two).
    #[test]
    fn defaults_round_trip_through_json_exactly() {
        let text = serde_json::to_string(&TrainConfig::default()).unwrap();
        let back: TrainConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, TrainConfig::default());
    }

    /// Every key of the configuration is a flag of the same name, and
    /// every flag sets its key (the help test checks the defaults shown).
    #[cfg(feature = "clap")]
    #[test]
    fn every_key_is_a_flag_that_sets_it() {
        use clap::{Args, Command, FromArgMatches};
        let command = TrainOverrides::augment_args(Command::new("train"));
        let changed = [
            ("method", "dtc"),
            ("iterations", "7"),
            ("labelled_batch", "3"),
            ("unlabelled_batch", "5"),
            ("patch", "32,32,16"),
            ("width", "4"),
            ("dropout", "0.25"),
            ("lr", "0.5"),
            ("momentum", "0.5"),
            ("weight_decay", "0.5"),
            ("lr_steps", "0.5,0.75"),
            ("lr_gamma", "0.5"),
            ("rampup_fraction", "0.5"),
            ("consistency", "0.5"),
            ("ema_decay", "0.5"),
            ("sdm_weight", "0.5"),
            ("dtc_beta", "0.5"),
            ("sdm_loss", "mse"),
            ("dice", "linear"),
            ("sharpness", "50"),
            ("seed", "9"),
            ("checkpoint_every", "11"),
            ("validate_every", "13"),
            ("validation_stride", "8,8,4"),
            ("threads", "1"),
            ("lr_schedule", "poly"),
            ("temperature", "0.5"),
            ("discriminator_width", "8"),
            ("discriminator_lr", "0.5"),
            ("pretrain_fraction", "0.5"),
            ("mask_ratio", "0.5"),
            ("unlabelled_weight", "0.25"),
        ];
        let mut args = vec!["train".to_string()];
        for (key, value) in changed {
            args.push(format!("--{}", key.replace('_', "-")));
            args.push(value.into());
        }
        let matches = command.try_get_matches_from(args).unwrap();
        let flags = TrainOverrides::from_arg_matches(&matches).unwrap();
        let mut config = TrainConfig::default();
        flags.apply_to(&mut config);
        let before = serde_json::to_value(TrainConfig::default()).unwrap();
        let after = serde_json::to_value(&config).unwrap();
        let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            changed.len(),
            "a key without a flag here: {keys:?}"
        );
        for (key, _) in changed {
            assert_ne!(before.get(key), after.get(key), "--{key} did not set {key}");
        }
    }

    /// Unset, dropout and the consistency weight are each method's own;
    /// set, they are what was set, for every method.
    #[test]
    fn method_defaults_fill_what_is_unset() {
        let of = |method| TrainConfig {
            method,
            ..TrainConfig::default()
        };
        for (method, dropout, consistency) in [
            (Method::Dtml, 0.0, 1.0),
            (Method::DtmlReleased, 0.5, 1.0),
            (Method::Supervised, 0.5, 1.0),
            (Method::MeanTeacher, 0.5, 0.1),
            (Method::UaMt, 0.5, 0.1),
            (Method::Cps, 0.5, 0.1),
            (Method::McNet, 0.5, 1.0),
            (Method::McNetPlus, 0.5, 1.0),
            (Method::Sassnet, 0.5, 0.01),
            (Method::Bcp, 0.5, 1.0),
        ] {
            assert_eq!(of(method).dropout(), dropout, "{method}");
            assert_eq!(of(method).consistency(), consistency, "{method}");
            let set = TrainConfig {
                dropout: Some(0.25),
                consistency: Some(3.0),
                ..of(method)
            };
            assert_eq!((set.dropout(), set.consistency()), (0.25, 3.0));
        }
        assert!((of(Method::MeanTeacher).lambda_at(6000) - 0.1).abs() < 1e-12);
        // The LR schedule: steps, but poly for cps; set, what was set.
        let lr = |cfg: TrainConfig, t| {
            TrainConfig {
                iterations: 100,
                ..cfg
            }
            .lr_at(t)
        };
        assert_eq!(lr(of(Method::Dtml), 50), 0.001);
        assert!((lr(of(Method::Cps), 50) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert_eq!(lr(of(Method::Cps), 0), 0.01);
        let step = TrainConfig {
            lr_schedule: Some(LrSchedule::Step),
            ..of(Method::Cps)
        };
        assert_eq!(lr(step, 50), 0.001);
        assert_eq!(lr(of(Method::McNet), 99), 0.01);
        // BCP: constant while it pre-trains (12 of 100 iterations), then
        // the steps over the 88 left (x0.1 from 12 + 36.7).
        let bcp = |t| lr(of(Method::Bcp), t);
        assert_eq!(
            (bcp(0), bcp(11), bcp(12), bcp(48)),
            (0.01, 0.01, 0.01, 0.01)
        );
        assert!((bcp(49) - 0.001).abs() < 1e-15);
    }
}

//! The training methods by name (the paper's DTML, the released code's
//! variant, DTC and a supervised baseline) and what each needs of a run;
//! their losses are in `dtml_train::objective`. It lives here, below the
//! trainer, because a run directory records which method trained it.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// A training objective.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, Serialize, Deserialize, Display, EnumString,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Method {
    /// The paper: `L_A + L_B + lambda * consistency`, one backward pass;
    /// B regresses the SDM and fits `sigmoid(-k d)` to the label.
    Dtml,
    /// The released code: B without SDM regression and the consistency
    /// gradient received twice (`L_A + L_B + 2 lambda consistency`).
    DtmlReleased,
    /// DTC: one V-Net with both heads, Dice + 0.3 MSE on the SDM, and
    /// consistency between its own two heads.
    Dtc,
    /// One V-Net on labelled patches only, `0.5 (BCE + Dice)`.
    Supervised,
}

impl Method {
    /// All methods, for help texts.
    pub const ALL: [Method; 4] = [
        Method::Dtml,
        Method::DtmlReleased,
        Method::Dtc,
        Method::Supervised,
    ];

    /// The name used on the command line and in files (as `Display`
    /// writes it and `FromStr` reads it).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Number of networks trained: two students or one.
    pub fn networks(self) -> usize {
        match self {
            Method::Dtml | Method::DtmlReleased => 2,
            Method::Dtc | Method::Supervised => 1,
        }
    }

    /// Whether unlabelled patches enter the batch.
    pub fn uses_unlabelled(self) -> bool {
        self != Method::Supervised
    }

    /// Whether the labelled patches need normalised SDM targets. The
    /// released DTML code computes them and never uses them; we skip that.
    pub fn needs_sdm_target(self) -> bool {
        matches!(self, Method::Dtml | Method::Dtc)
    }
}

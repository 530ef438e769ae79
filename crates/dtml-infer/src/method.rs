//! The training methods by name (the paper's DTML, the released code's
//! variant, and the baselines it is compared with). What each trains is its
//! plug-in in `dtml_train::methods`; the name lives here, below the
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
    /// Mean teacher (Tarvainen & Valpola 2017, as UA-MT's code trains it):
    /// the student's supervised loss plus the squared difference from an
    /// EMA teacher's prediction on noisy unlabelled patches.
    MeanTeacher,
    /// UA-MT (Yu et al., MICCAI 2019): the mean teacher whose consistency
    /// counts only voxels where the teacher's Monte-Carlo predictions are
    /// certain, under a threshold that rises over the run.
    UaMt,
    /// Cross pseudo supervision (Chen et al., CVPR 2021, as SSL4MIS trains
    /// it in 3D): two differently initialised networks, each also trained
    /// on the other's hard labels of the unlabelled patches.
    Cps,
    /// MC-Net (Wu et al., MICCAI 2021): one encoder, a transposed-conv and
    /// a trilinear decoder, each fitting the other's sharpened prediction.
    McNet,
    /// MC-Net+ (Wu et al., MedIA 2022): MC-Net with a third decoder that
    /// up-samples by nearest neighbour.
    McNetPlus,
    /// SASSNet (Li et al., MICCAI 2020): the V-Net with both heads and a
    /// discriminator that pushes unlabelled patches' signed distance maps
    /// towards the labelled ones'.
    Sassnet,
    /// BCP (Bai et al., CVPR 2023): supervised copy-paste pre-training,
    /// then a mean teacher whose pseudo labels and the real ones are
    /// pasted into each other's patches both ways.
    Bcp,
    /// Entropy minimisation (Grandvalet & Bengio 2004, as SSL4MIS trains
    /// it in 3D): the supervised loss plus the mean entropy of the
    /// predictions on every patch.
    EntropyMin,
}

impl Method {
    /// All methods, for help texts.
    pub const ALL: [Method; 12] = [
        Method::Dtml,
        Method::DtmlReleased,
        Method::Dtc,
        Method::Supervised,
        Method::MeanTeacher,
        Method::UaMt,
        Method::Cps,
        Method::McNet,
        Method::McNetPlus,
        Method::Sassnet,
        Method::Bcp,
        Method::EntropyMin,
    ];

    /// The name used on the command line and in files (as `Display`
    /// writes it and `FromStr` reads it).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

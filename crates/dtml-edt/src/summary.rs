//! Per-case metrics summarised the way papers report them: mean and
//! standard deviation over cases, with empty cases counted and reported
//! rather than silently scored.
//!
//! The reference evaluation scores an empty prediction as (0, 0, 0, 0),
//! which flatters the distances; by default such a case keeps its Dice and
//! Jaccard of 0 but is left out of the distance means and counted.
//! [`EmptyScoring::Reference`] reproduces the reference's scoring.

use crate::metrics::{SegmentationMetrics, SurfaceDistances};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};

/// How cases with an empty prediction or reference enter the summary,
/// named `exclude` / `reference` in files.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum EmptyScoring {
    /// Counted; distances left out of the means (Dice/Jaccard of an empty
    /// prediction against a non-empty reference are 0 and stay in).
    #[default]
    Exclude,
    /// An empty prediction scores (0, 0, 0, 0) as in the reference script.
    Reference,
}

/// Mean and population standard deviation (numpy's default) of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    /// Cases that contributed.
    pub n: usize,
}

impl MeanStd {
    fn of(values: &[f64]) -> MeanStd {
        if values.is_empty() {
            return MeanStd {
                mean: f64::NAN,
                std: f64::NAN,
                n: 0,
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        MeanStd {
            mean,
            std: var.sqrt(),
            n: values.len(),
        }
    }
}

/// Summary over cases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub cases: usize,
    pub dice: MeanStd,
    pub jaccard: MeanStd,
    pub hd95: MeanStd,
    pub asd: MeanStd,
    pub assd: MeanStd,
    /// Over the cases that have a surface Dice (none unless asked).
    pub surface_dice: MeanStd,
    pub empty_prediction: usize,
    pub empty_reference: usize,
    pub both_empty: usize,
}

/// Summarises per-case metrics.
pub fn summarize(cases: &[SegmentationMetrics], scoring: EmptyScoring) -> Summary {
    let (mut dice, mut jaccard, mut hd95, mut asd, mut assd) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut surface_dice = vec![];
    let (mut empty_prediction, mut empty_reference, mut both_empty) = (0, 0, 0);
    for m in cases {
        match &m.distances {
            SurfaceDistances::Computed(d) => {
                hd95.push(d.hd95);
                asd.push(d.asd);
                assd.push(d.assd);
            }
            SurfaceDistances::EmptyPrediction => {
                empty_prediction += 1;
                if scoring == EmptyScoring::Reference {
                    hd95.push(0.0);
                    asd.push(0.0);
                    assd.push(0.0);
                }
            }
            SurfaceDistances::EmptyReference => empty_reference += 1,
            SurfaceDistances::BothEmpty => both_empty += 1,
        }
        if let Some(d) = m.dice {
            dice.push(d);
        }
        if let Some(j) = m.jaccard {
            jaccard.push(j);
        }
        if let Some(s) = m.surface_dice {
            surface_dice.push(s);
        }
    }
    Summary {
        cases: cases.len(),
        dice: MeanStd::of(&dice),
        jaccard: MeanStd::of(&jaccard),
        hd95: MeanStd::of(&hd95),
        asd: MeanStd::of(&asd),
        assd: MeanStd::of(&assd),
        surface_dice: MeanStd::of(&surface_dice),
        empty_prediction,
        empty_reference,
        both_empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Units, surface_metrics};

    fn cube(n: usize, lo: usize, hi: usize) -> Vec<u8> {
        let mut m = vec![0u8; n * n * n];
        for z in lo..hi {
            for y in lo..hi {
                for x in lo..hi {
                    m[(z * n + y) * n + x] = 1;
                }
            }
        }
        m
    }

    #[test]
    fn empty_predictions_are_counted_not_flattering() {
        let shape = [8, 8, 8];
        let reference = cube(8, 2, 6);
        let good =
            surface_metrics(&cube(8, 2, 6), &reference, &shape, &[1.0; 3], Units::Voxels).unwrap();
        let shifted =
            surface_metrics(&cube(8, 3, 7), &reference, &shape, &[1.0; 3], Units::Voxels).unwrap();
        let empty = surface_metrics(
            &vec![0u8; 512],
            &reference,
            &shape,
            &[1.0; 3],
            Units::Voxels,
        )
        .unwrap();
        let cases = [good, shifted, empty];
        let s = summarize(&cases, EmptyScoring::Exclude);
        assert_eq!(s.cases, 3);
        assert_eq!(s.empty_prediction, 1);
        assert_eq!(s.dice.n, 3, "the empty prediction's Dice of 0 counts");
        assert_eq!(s.hd95.n, 2, "its distances do not");
        let shifted_hd = shifted.distances.computed().unwrap().hd95;
        assert!((s.hd95.mean - shifted_hd / 2.0).abs() < 1e-12);
        let r = summarize(&cases, EmptyScoring::Reference);
        assert_eq!(r.hd95.n, 3);
        assert!((r.hd95.mean - shifted_hd / 3.0).abs() < 1e-12);
        let dice = [good.dice.unwrap(), shifted.dice.unwrap(), 0.0];
        let mean = dice.iter().sum::<f64>() / 3.0;
        assert!((s.dice.mean - mean).abs() < 1e-12);
        let std = (dice.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((s.dice.std - std).abs() < 1e-12);
    }

    #[test]
    fn no_cases_give_nan_means() {
        let s = summarize(&[], EmptyScoring::Exclude);
        assert!(s.dice.mean.is_nan() && s.dice.n == 0);
    }
}

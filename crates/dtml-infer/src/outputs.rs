//! The names of the files `predict` and `evaluate` write into an output
//! folder, defined once.

use std::path::{Path, PathBuf};

/// The predicted mask of `case`: `<case>.nii.gz` (u8, 0/1).
pub fn mask_file(out: &Path, case: &str) -> PathBuf {
    out.join(format!("{case}.nii.gz"))
}

/// An f32 map written beside a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum MapKind {
    /// `|p_A - q_B|` averaged over the windows.
    Disagreement,
    /// The averaged foreground probability.
    Probability,
}

/// `<case>_<kind>.nii.gz`.
pub fn map_file(out: &Path, case: &str, kind: MapKind) -> PathBuf {
    out.join(format!("{case}_{kind}.nii.gz"))
}

/// The stem every metrics file's name starts with.
pub const METRICS_STEM: &str = "metrics";

/// The stem of the metrics files (`.csv`, `.json`): `metrics` when they
/// cover every case, else `metrics-shard-K-of-N` for shard K of N's cases
/// (a [`crate::shard::Shard`]'s index and count: plain numbers here, so
/// the shard module may use these names without an import circle).
pub fn metrics_stem(complete: bool, shard_index: usize, shard_count: usize) -> String {
    if complete {
        METRICS_STEM.into()
    } else {
        format!("{METRICS_STEM}-shard-{shard_index}-of-{shard_count}")
    }
}

/// Whether `name` is a metrics file [`metrics_stem`] names (`.csv` or
/// `.json`).
pub fn is_metrics_file(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".csv")
        .or_else(|| name.strip_suffix(".json"))
    else {
        return false;
    };
    stem == METRICS_STEM
        || stem
            .strip_prefix(METRICS_STEM)
            .and_then(|r| r.strip_prefix("-shard-"))
            .and_then(|r| r.split_once("-of-"))
            .is_some_and(|(k, n)| k.parse::<usize>().is_ok() && n.parse::<usize>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let out = Path::new("o");
        assert_eq!(mask_file(out, "la_001"), Path::new("o/la_001.nii.gz"));
        assert_eq!(
            map_file(out, "a", MapKind::Disagreement),
            Path::new("o/a_disagreement.nii.gz")
        );
        assert_eq!(metrics_stem(false, 2, 8), "metrics-shard-2-of-8");
        assert_eq!(metrics_stem(true, 2, 8), "metrics");
        assert!(is_metrics_file("metrics.csv") && is_metrics_file("metrics-shard-2-of-8.json"));
        assert!(!is_metrics_file("metrics-mine.csv") && !is_metrics_file("metrics.txt"));
    }
}

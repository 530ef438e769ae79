//! `dtml prepare`: dataset folder in, training cache out.

use crate::args::{int_list, margin};
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use dtml_volume::dataset::{self, OpenOptions};
use dtml_volume::prepare::PAPER_PATCH;
use dtml_volume::{Dataset, LabelledSpec, PrepareOptions, Role, ScanCrop, Xyz, prepare};
use std::path::{Path, PathBuf};

/// `--margin`'s default as the flag spells it: `PrepareOptions::default()`'s
/// margin (a test holds them equal).
const MARGIN_DEFAULT: &str = "15,15,full";

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// Dataset folder: Decathlon / nnU-Net (dataset.json) or LA case folders.
    #[arg(long)]
    data: PathBuf,
    /// Output folder for the cache (safetensors per case + manifest.json).
    #[arg(long)]
    out: PathBuf,
    /// Number of labelled training cases (the first N in the dataset's order).
    #[arg(long, conflicts_with_all = ["labelled_fraction", "labelled_list"], help_heading = "Split")]
    labelled: Option<usize>,
    /// Fraction of training cases that are labelled.
    #[arg(long, conflicts_with = "labelled_list", default_value_t = LabelledSpec::PAPER_FRACTION, help_heading = "Split")]
    labelled_fraction: f64,
    /// File listing the labelled case ids, one per line.
    #[arg(long, help_heading = "Split")]
    labelled_list: Option<PathBuf>,
    /// File listing validation case ids (held out of training).
    #[arg(long, help_heading = "Split")]
    validation_list: Option<PathBuf>,
    /// File listing test case ids (instead of imagesTs / test.list).
    #[arg(long, help_heading = "Split")]
    test_list: Option<PathBuf>,
    /// Foreground label value(s), comma-separated [default: 1; 255 for LA].
    #[arg(long, value_parser = int_list, help_heading = "Labels and crop")]
    foreground: Option<::std::vec::Vec<i64>>,
    /// Patch size x,y,z: every case is padded to at least this.
    #[arg(long, default_value_t = PAPER_PATCH, help_heading = "Labels and crop")]
    patch: Xyz<usize>,
    /// Crop margin x,y,z in voxels around the content box; 'full' keeps an axis whole.
    #[arg(long, value_parser = margin, default_value = MARGIN_DEFAULT, help_heading = "Labels and crop")]
    margin: Xyz<Option<usize>>,
    /// Crop of unlabelled and test scans.
    #[arg(long, value_enum, default_value_t = PrepareOptions::default().scan_crop, help_heading = "Labels and crop")]
    scan_crop: ScanCrop,
    /// Crop every case with a label file to its label box, as the reference code does
    /// (uses labels a real unlabelled scan would not have; for comparison only).
    #[arg(long, help_heading = "Labels and crop")]
    reference_crop: bool,
    /// Image channel for multi-channel datasets.
    #[arg(long, default_value_t = 0)]
    channel: usize,
}

pub fn run(a: PrepareArgs) -> Result<()> {
    let ds = Dataset::open(&a.data, OpenOptions { channel: a.channel })?;
    let labelled = match (a.labelled, &a.labelled_list) {
        (Some(n), _) => LabelledSpec::Count(n),
        (_, Some(l)) => LabelledSpec::List(l.clone()),
        _ => LabelledSpec::Fraction(a.labelled_fraction),
    };
    let split = dataset::split(
        &ds,
        &labelled,
        a.validation_list.as_deref(),
        a.test_list.as_deref(),
    )?;
    let foreground = a
        .foreground
        .clone()
        .unwrap_or_else(|| ds.layout.default_foreground());
    if split.cases.is_empty() {
        bail!("{}: no cases found", a.data.display());
    }
    let options = PrepareOptions {
        patch: a.patch,
        margin: a.margin,
        foreground,
        scan_crop: a.scan_crop,
        reference_crop: a.reference_crop,
        channel: a.channel,
    };
    prepare_split(&ds, &split, &a.data, &a.out, &options)
}

fn prepare_split(
    ds: &Dataset,
    split: &dataset::Split,
    data: &Path,
    out: &Path,
    options: &PrepareOptions,
) -> Result<()> {
    let count = |r: Role| split.of(r).count();
    tracing::info!(
        "{:?} dataset at {}: {} labelled, {} unlabelled, {} validation, {} test",
        ds.layout,
        data.display(),
        count(Role::Labelled),
        count(Role::Unlabelled),
        count(Role::Validation),
        count(Role::Test)
    );
    let pb = bar(split.cases.len(), "preparing");
    let start = std::time::Instant::now();
    let report = prepare(&ds.root, ds.layout, split, out, options, &|_| pb.inc(1))
        .with_context(|| format!("preparing {} into {}", data.display(), out.display()))?;
    pb.finish_and_clear();
    tracing::info!(
        "prepared {} cases into {} in {:.1} s ({} of them already prepared and reused, {} warnings)",
        report.cases,
        out.display(),
        start.elapsed().as_secs_f64(),
        report.reused,
        report.warnings.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn margin_flag_default_is_the_library_default() {
        assert_eq!(
            crate::args::margin(super::MARGIN_DEFAULT).unwrap(),
            dtml_volume::PrepareOptions::default().margin
        );
    }
}

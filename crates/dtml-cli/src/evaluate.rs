//! `dtml evaluate`: predict the test cases of a prepared folder or a
//! dataset folder and score them on their original grids.

use crate::args::int_list;
use crate::model_args::{ModelArgs, describe};
use crate::progress::bar;
use crate::report::Report;
use anyhow::{Context, Result, bail};
use dtml_edt::Units;
use dtml_train::evaluate::{CaseEvaluation, evaluate_case, evaluate_files};
use dtml_volume::dataset::{OpenOptions, read_list};
use dtml_volume::prepare::MANIFEST;
use dtml_volume::{CaseFiles, Dataset, Layout, PreparedDataset, Role, Volume, VoxelData};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prepared folder (manifest.json: its test cases), or a dataset
    /// folder (Decathlon / nnU-Net with labelsTs, or LA with test.list).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: predicted masks, metrics.csv and metrics.json.
    #[arg(long)]
    out: PathBuf,
    /// Distances in voxels (as published tables) instead of mm.
    #[arg(long)]
    voxels: bool,
    /// Score an empty prediction as (0, 0, 0, 0) like the reference script
    /// (by default it is counted and left out of the distance means).
    #[arg(long)]
    reference_scoring: bool,
    /// Foreground label value(s) of a dataset folder's labels [default: the
    /// run's, else 1; 255 for LA]. A prepared folder uses its manifest's.
    #[arg(long, value_parser = int_list)]
    foreground: Option<::std::vec::Vec<i64>>,
    /// File listing the test case ids of a dataset folder (instead of
    /// imagesTs / test.list).
    #[arg(long)]
    test_list: Option<PathBuf>,
    /// Image channel of a multi-channel dataset folder.
    #[arg(long)]
    channel: Option<usize>,
}

fn write_prediction(out: &Path, e: &CaseEvaluation) -> Result<()> {
    let path = out.join(format!("{}.nii.gz", e.result.id));
    let v = Volume::new(VoxelData::U8(e.mask.clone()), e.shape, e.geometry.clone())?;
    dtml_volume::write_nifti(&path, &v).with_context(|| format!("writing {}", path.display()))
}

/// Test cases of a dataset folder that have labels.
fn dataset_cases(a: &EvaluateArgs, ds: &Dataset) -> Result<Vec<CaseFiles>> {
    let cases: Vec<CaseFiles> = match &a.test_list {
        Some(list) => read_list(list)?
            .into_iter()
            .map(|id| {
                ds.training
                    .iter()
                    .chain(&ds.test)
                    .find(|c| c.id == id)
                    .cloned()
                    .with_context(|| {
                        format!("{}: case {id:?} is not in the dataset", list.display())
                    })
            })
            .collect::<Result<_>>()?,
        None => ds.test.clone(),
    };
    let (labelled, unlabelled): (Vec<_>, Vec<_>) =
        cases.into_iter().partition(|c| c.label.is_some());
    if !unlabelled.is_empty() {
        tracing::warn!(
            "{} test case(s) without a label are not evaluated: {:?}",
            unlabelled.len(),
            unlabelled.iter().map(|c| c.id.as_str()).collect::<Vec<_>>()
        );
    }
    Ok(labelled)
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let units = if a.voxels {
        Units::Voxels
    } else {
        Units::Millimetres
    };
    let prepared = a.data.join(MANIFEST).is_file();
    if prepared && (a.foreground.is_some() || a.test_list.is_some() || a.channel.is_some()) {
        bail!(
            "{}: a prepared folder evaluates its manifest's test cases with its foreground values; --foreground, --test-list and --channel apply to dataset folders",
            a.data.display()
        );
    }
    let (loaded, opts) = a.model.load(false)?;
    let students = loaded.students();
    dtml_volume::atomic::check_writable(&a.out)
        .with_context(|| format!("--out {} is not writable", a.out.display()))?;
    let mut rows = Vec::new();
    let mut seconds = 0.0;
    let mut record = |e: CaseEvaluation, rows: &mut Vec<_>| -> Result<()> {
        write_prediction(&a.out, &e)?;
        seconds += e.result.inference_seconds;
        rows.push((e.result.id, e.result.metrics));
        Ok(())
    };
    if prepared {
        let data = PreparedDataset::open(&a.data)?;
        let all: Vec<_> = data.cases(Role::Test).collect();
        let (cases, unlabelled): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|c| c.label_source.is_some());
        if !unlabelled.is_empty() {
            tracing::warn!(
                "{} test case(s) without a label are not evaluated",
                unlabelled.len()
            );
        }
        if cases.is_empty() {
            bail!(
                "{}: no test case with a label to evaluate",
                a.data.display()
            );
        }
        let pb = bar(cases.len(), "evaluating");
        for c in cases {
            let e = evaluate_case(&students, &data, c, &opts, units)
                .with_context(|| format!("evaluating case {}", c.id))?;
            record(e, &mut rows)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
    } else {
        let ds = Dataset::open(
            &a.data,
            OpenOptions {
                channel: a.channel.unwrap_or(0),
            },
        )?;
        let cases = dataset_cases(&a, &ds)?;
        if cases.is_empty() {
            bail!(
                "{}: no test case with a label to evaluate",
                a.data.display()
            );
        }
        let foreground = a
            .foreground
            .clone()
            .or_else(|| {
                loaded
                    .run
                    .as_ref()
                    .map(|r| r.foreground.clone())
                    .filter(|f| !f.is_empty())
            })
            .unwrap_or_else(|| match ds.layout {
                Layout::La => vec![255],
                _ => vec![1],
            });
        let pb = bar(cases.len(), "evaluating");
        for c in &cases {
            let Some(label) = c.label.as_deref() else {
                continue;
            };
            let e = evaluate_files(
                &students,
                &c.id,
                &c.image,
                c.channel,
                label,
                &foreground,
                &opts,
                units,
            )
            .with_context(|| format!("evaluating case {}", c.id))?;
            record(e, &mut rows)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    let n = rows.len();
    let report = Report::new(rows, a.voxels, a.reference_scoring);
    let mut json = report.to_json();
    json["inference"] = describe(&opts);
    json["model"] = serde_json::json!(
        a.model_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    );
    json["data"] = serde_json::json!(a.data.display().to_string());
    json["inference_seconds"] = serde_json::json!(seconds);
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = a.out.join(name);
        dtml_volume::atomic::write_bytes_atomic(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))
    };
    write("metrics.csv", report.to_csv().as_bytes())?;
    write(
        "metrics.json",
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    report.print_table();
    tracing::info!(
        "{n} case(s) evaluated ({:.1} s of inference); masks, metrics.csv and metrics.json in {}",
        seconds,
        a.out.display()
    );
    Ok(())
}

impl EvaluateArgs {
    fn model_paths(&self) -> Vec<PathBuf> {
        self.model.paths().to_vec()
    }
}

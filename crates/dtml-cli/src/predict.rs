//! `dtml predict`: scans in, masks out, with the source header geometry.

use crate::masks::{case_name, volume_files};
use crate::model_args::ModelArgs;
use crate::progress::bar;
use anyhow::{Context, Result, bail};
use dtml_train::infer::{predict_volume, read_scan};
use dtml_volume::{Volume, VoxelData, write_mask, write_nifti};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A scan (NIfTI or NRRD), a folder of them, or a folder of LA case
    /// folders (`<case>/lgemri.nrrd`).
    #[arg(long)]
    input: PathBuf,
    /// Output folder: <case>.nii.gz masks (u8, 0/1) on each scan's grid and header.
    #[arg(long)]
    out: PathBuf,
    /// Also write <case>_disagreement.nii.gz: |p_A - q_B| averaged over the
    /// windows (f32; needs two students).
    #[arg(long)]
    disagreement: bool,
    /// Also write <case>_probability.nii.gz: the averaged foreground probability (f32).
    #[arg(long)]
    probability: bool,
    /// Volume of a 4D scan to segment (0-based).
    #[arg(long)]
    channel: Option<usize>,
}

/// The case name of a scan: its file name without the extension and
/// without nnU-Net's `_0000` channel suffix, so masks match label names.
fn scan_case(path: &Path) -> Option<String> {
    let name = case_name(path)?;
    Some(match name.strip_suffix("_0000") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    })
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// LA challenge case folders under `dir`: `<case>/lgemri.nrrd`, by case.
fn la_scans(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let scan = p.join("lgemri.nrrd");
        if scan.is_file()
            && let Some(name) = p.file_name()
        {
            out.push((name.to_string_lossy().into_owned(), scan));
        }
    }
    out.sort();
    Ok(out)
}

/// The scans to segment with their case names.
fn scans(input: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut listed = Vec::new();
    for s in volume_files(input)? {
        let Some(case) = scan_case(&s) else {
            bail!("{}: not a NIfTI or NRRD file name", s.display());
        };
        listed.push((case, s));
    }
    if listed.is_empty() && input.is_dir() {
        listed = la_scans(input)?;
    }
    if listed.is_empty() {
        bail!(
            "{}: no NIfTI or NRRD scans found (nor LA case folders with lgemri.nrrd)",
            input.display()
        );
    }
    let mut cases: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (case, s) in listed {
        if let Some(other) = cases.insert(case.clone(), s.clone()) {
            bail!(
                "{} and {} would both write {case}.nii.gz",
                other.display(),
                s.display()
            );
        }
    }
    Ok(cases)
}

pub fn run(a: PredictArgs) -> Result<()> {
    let cases = scans(&a.input)?;
    // Before any inference: an unwritable --out fails now, not at the end.
    dtml_volume::atomic::check_writable(&a.out)
        .with_context(|| format!("--out {} is not writable", a.out.display()))?;
    let (loaded, opts) = a.model.load(a.disagreement)?;
    let students = loaded.students();
    for (case, scan) in &cases {
        let out = a.out.join(format!("{case}.nii.gz"));
        if same_path(&out, scan) {
            bail!(
                "{}: the mask would overwrite its own scan; choose another --out",
                scan.display()
            );
        }
    }
    let pb = bar(cases.len(), "predicting");
    let start = std::time::Instant::now();
    for (case, scan) in &cases {
        let t = std::time::Instant::now();
        let (volume, image) = read_scan(scan, a.channel)?;
        let p = predict_volume(&students, &image, volume.shape, &opts)
            .with_context(|| format!("predicting {}", scan.display()))?;
        let out = a.out.join(format!("{case}.nii.gz"));
        let foreground = p.mask.iter().map(|&v| v as usize).sum::<usize>();
        write_mask(&out, p.mask, &volume).with_context(|| format!("writing {}", out.display()))?;
        let f32_map = |values: Vec<f32>, suffix: &str| -> Result<()> {
            let path = a.out.join(format!("{case}_{suffix}.nii.gz"));
            let v = Volume::new(
                VoxelData::F32(values),
                volume.shape,
                volume.geometry.clone(),
            )?;
            write_nifti(&path, &v).with_context(|| format!("writing {}", path.display()))
        };
        if let Some(d) = p.disagreement {
            f32_map(d, "disagreement")?;
        }
        if a.probability {
            f32_map(p.probability, "probability")?;
        }
        pb.suspend(|| {
            tracing::info!(
                "{case}: {:?} voxels, {foreground} foreground ({:.1} %), {:.1} s",
                volume.shape,
                100.0 * foreground as f64 / volume.len() as f64,
                t.elapsed().as_secs_f64()
            )
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    tracing::info!(
        "predicted {} scan(s) into {} in {:.1} s",
        cases.len(),
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_drop_the_channel_suffix() {
        assert_eq!(
            scan_case(Path::new("a/la_003_0000.nii.gz")).unwrap(),
            "la_003"
        );
        assert_eq!(scan_case(Path::new("a/la_003.nrrd")).unwrap(), "la_003");
        assert_eq!(
            scan_case(Path::new("a/la_003_0001.nii")).unwrap(),
            "la_003_0001"
        );
        assert_eq!(scan_case(Path::new("_0000.nii.gz")).unwrap(), "_0000");
        assert!(scan_case(Path::new("notes.txt")).is_none());
    }

    #[test]
    fn la_case_folders_are_found_and_named_by_folder() {
        let dir = tempfile::tempdir().unwrap();
        for case in ["case_b", "case_a"] {
            std::fs::create_dir_all(dir.path().join(case)).unwrap();
            std::fs::write(dir.path().join(case).join("lgemri.nrrd"), "x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let found = scans(dir.path()).unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["case_a", "case_b"]);
        assert!(found["case_a"].ends_with("case_a/lgemri.nrrd"));
        let empty = tempfile::tempdir().unwrap();
        let err = scans(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no NIfTI or NRRD scans"), "{err}");
    }
}

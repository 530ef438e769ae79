//! Cohort inference split over processes: a [`Shard`] is part `K` of `N`
//! of a sorted case list, chosen on the command line (`--shard K/N`) or by
//! a Slurm job array; a [`Record`] in the output folder says which model
//! and settings made its files, so a shard killed half-way resumes where it
//! stopped (outputs are written atomically: a file that exists is whole)
//! and files of another model are never mistaken for finished work.
//!
//! ```
//! use dtml_infer::shard::Shard;
//! let shard: Shard = "2/3".parse().unwrap();
//! let cases = ["a", "b", "c", "d", "e"];
//! assert_eq!(shard.select(cases), ["b", "e"]);
//! ```

use crate::error::{InferError, Result};
use dtml_volume::output::{self, LockMode};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Part `index` (1-based) of `count`: cases `index - 1`, `index - 1 +
/// count`, ... of the sorted list (round robin, so shards get similar
/// numbers of cases whatever the order of their sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job in one process.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// This shard's cases of `sorted`, in order.
    pub fn select<T>(&self, sorted: impl IntoIterator<Item = T>) -> Vec<T> {
        sorted
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index - 1)
            .map(|(_, t)| t)
            .collect()
    }

    /// The shard of a Slurm job-array task, if this process is one:
    /// `SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1` of
    /// `SLURM_ARRAY_TASK_COUNT`.
    pub fn from_slurm() -> Result<Option<Shard>> {
        let var = |name: &str| std::env::var(name).ok();
        // A task id alone is still an array task: running every case in
        // each of them would be the silent wrong answer.
        let Some(id) = var("SLURM_ARRAY_TASK_ID") else {
            return Ok(None);
        };
        let Some(count) = var("SLURM_ARRAY_TASK_COUNT") else {
            return Err(InferError::Config(format!(
                "SLURM_ARRAY_TASK_ID={id:?} is set but SLURM_ARRAY_TASK_COUNT is not, so this task's share of the cases is unknown (use --shard K/N)"
            )));
        };
        let min = var("SLURM_ARRAY_TASK_MIN").unwrap_or_else(|| "0".into());
        let num = |name: &str, v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                InferError::Config(format!("{name}={v:?} is not a non-negative integer"))
            })
        };
        let (id, min, count) = (
            num("SLURM_ARRAY_TASK_ID", &id)?,
            num("SLURM_ARRAY_TASK_MIN", &min)?,
            num("SLURM_ARRAY_TASK_COUNT", &count)?,
        );
        if id < min || count == 0 || id - min >= count {
            return Err(InferError::Config(format!(
                "SLURM_ARRAY_TASK_ID={id} with SLURM_ARRAY_TASK_MIN={min} and SLURM_ARRAY_TASK_COUNT={count} is not a task of a contiguous array (use --shard K/N)"
            )));
        }
        Ok(Some(Shard {
            index: id - min + 1,
            count,
        }))
    }

    /// `--shard` when given, else the Slurm array task, else the whole job.
    pub fn resolve(flag: Option<Shard>) -> Result<Shard> {
        if let Some(s) = flag {
            return Ok(s);
        }
        match Shard::from_slurm()? {
            Some(s) => {
                tracing::info!("shard {s} from the Slurm job array");
                Ok(s)
            }
            None => Ok(Shard::WHOLE),
        }
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard K/N with 1 <= K <= N (e.g. 2/8)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// File in an output folder naming what made its files.
pub const RECORD_FILE: &str = "dtml-outputs.json";

/// What made an output folder's files: the model and every setting that
/// changes them. Every shard of a job writes the same record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// `predict` or `evaluate`.
    pub command: String,
    pub model: Vec<PathBuf>,
    /// The input folder or file.
    pub input: PathBuf,
    /// Inference settings and output choices, as JSON.
    pub settings: serde_json::Value,
}

impl Record {
    /// The record of a job, its paths made absolute and resolved (symlinks
    /// followed) where they exist, so `run/`, `./run` and `/abs/run` are
    /// the same job.
    pub fn new(
        command: &str,
        model: &[PathBuf],
        input: &Path,
        settings: serde_json::Value,
    ) -> Record {
        let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        Record {
            command: command.into(),
            model: model.iter().map(|p| real(p)).collect(),
            input: real(input),
            settings,
        }
    }

    /// Claims `out` for this job's files and writes the record, holding
    /// the folder's lock until the returned [`Claim`] is dropped: the
    /// folder must be new, empty or a dtml prediction folder, apart from
    /// `inputs`. The same record lets the job keep its finished outputs
    /// (unless `overwrite`) and, for a shard, share the folder with its
    /// sibling shards; another record is refused unless `overwrite`, which
    /// removes the other job's outputs first. A job never mixes its files
    /// with a running job of other settings: that is refused at once.
    pub fn claim(
        &self,
        out: &Path,
        shard: Shard,
        overwrite: bool,
        inputs: &[&Path],
    ) -> Result<Claim> {
        let folder = output::open(out, &PREDICTIONS_KIND, inputs, "--out")?;
        dtml_volume::atomic::check_writable(out)?;
        let mode = if shard == Shard::WHOLE {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let path = out.join(RECORD_FILE);
        folder.while_claiming(|| -> Result<Claim> {
            let existing = read_record(&path)?;
            if existing.as_ref() == Some(self) {
                let mut lock = folder.lock(mode)?;
                lock.keep();
                return Ok(Claim {
                    keep: !overwrite,
                    _lock: lock,
                });
            }
            if existing.is_some() && !overwrite && !output_files(out)?.is_empty() {
                return Err(InferError::file(
                    &path,
                    "this folder holds outputs of another model, input or settings: choose another --out, or pass --overwrite to replace them",
                ));
            }
            // Alone in the folder while the record changes hands.
            let alone = folder.lock(LockMode::Exclusive)?;
            let old_outputs = output_files(out)?;
            if let Some(old) = existing.as_ref().filter(|_| !old_outputs.is_empty()) {
                tracing::warn!(
                    "{}: removing the {} output files of another {} job (--overwrite)",
                    out.display(),
                    old_outputs.len(),
                    old.command
                );
                for file in old_outputs {
                    std::fs::remove_file(&file).map_err(|e| InferError::file(&file, e))?;
                }
            }
            let text =
                serde_json::to_vec_pretty(self).map_err(|e| InferError::Other(e.to_string()))?;
            dtml_volume::atomic::write_bytes_atomic(&path, &text)?;
            let mut lock = if mode == LockMode::Exclusive {
                alone
            } else {
                drop(alone);
                folder.lock(mode)?
            };
            lock.keep();
            Ok(Claim {
                keep: false,
                _lock: lock,
            })
        })?
    }
}

/// A claimed output folder: whether its finished outputs count as done,
/// and its lock, held while the value lives.
#[derive(Debug)]
pub struct Claim {
    pub keep: bool,
    _lock: output::FolderLock,
}

/// A prediction or evaluation folder, marked by its [`RECORD_FILE`].
pub const PREDICTIONS_KIND: output::Kind = output::Kind {
    name: "prediction folder",
    records: &[RECORD_FILE],
    recognise: |p| read_record(p).is_ok_and(|r| r.is_some()),
    only: None,
};

/// The largest record read.
const RECORD_MAX_BYTES: u64 = 1 << 24;

fn read_record(path: &Path) -> Result<Option<Record>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let bytes = dtml_volume::confine::read_bounded(path, RECORD_MAX_BYTES, "output record")?;
    serde_json::from_slice::<Record>(&bytes)
        .map(Some)
        .map_err(|e| InferError::file(path, format!("not a dtml output record: {e}")))
}

/// The files a prediction or evaluation job writes (masks, maps,
/// metrics) in a folder of dtml's: what another job's `--overwrite`
/// removes before it takes the folder over.
fn output_files(out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(out).map_err(|e| InferError::file(out, e))? {
        let e = e.map_err(|e| InferError::file(out, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Masks and maps carry dtml's mark in their header; metrics files
        // have dtml's names. A user's file beside them is never taken.
        let ours = if name.ends_with(".nii.gz") {
            dtml_volume::nii::written_by_dtml(&e.path())
        } else {
            crate::outputs::is_metrics_file(&name)
        };
        if ours {
            files.push(e.path());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_case_once() {
        let cases: Vec<usize> = (0..10).collect();
        let mut seen: Vec<usize> = (1..=3)
            .flat_map(|k| Shard { index: k, count: 3 }.select(cases.clone()))
            .collect();
        seen.sort();
        assert_eq!(seen, cases);
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("3/8".parse::<Shard>().unwrap().to_string(), "3/8");
    }

    #[test]
    fn records_refuse_another_model_unless_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let r = |m: &str| Record {
            command: "predict".into(),
            model: vec![m.into()],
            input: "scans".into(),
            settings: serde_json::json!({"patch": [16, 16, 16]}),
        };
        let half = Shard { index: 1, count: 2 };
        let keep = |m: &str, shard: Shard, overwrite: bool| {
            r(m).claim(dir.path(), shard, overwrite, &[])
                .map(|c| c.keep)
        };
        assert!(
            !keep("a", half, false).unwrap(),
            "new folder: nothing to keep"
        );
        assert!(
            keep("a", half, false).unwrap(),
            "same job: keep its outputs"
        );
        let mask = dtml_volume::Volume::new(
            dtml_volume::VoxelData::U8(vec![1; 8]),
            dtml_volume::Xyz::splat(2),
            dtml_volume::Geometry::from_spacing(dtml_volume::Xyz::splat(1.0)),
        )
        .unwrap();
        dtml_volume::write_nifti(&dir.path().join("case.nii.gz"), &mask).unwrap();
        std::fs::write(dir.path().join("reference.nii.gz"), "a user's file").unwrap();
        for shard in [half, Shard::WHOLE] {
            let e = keep("b", shard, false).unwrap_err().to_string();
            assert!(
                e.contains("another model") && e.contains("--overwrite"),
                "{e}"
            );
        }
        assert!(!keep("b", half, true).unwrap(), "overwrite starts over");
        assert!(
            !dir.path().join("case.nii.gz").exists(),
            "the other job's outputs are gone"
        );
        assert!(
            dir.path().join("reference.nii.gz").exists(),
            "not the user's"
        );
        assert!(keep("b", half, false).unwrap());
        // Shards of one job share the folder; another job cannot join.
        let sibling = r("b").claim(dir.path(), half, false, &[]).unwrap();
        let e = r("c")
            .claim(dir.path(), half, true, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by another dtml process"), "{e}");
        let e = r("b")
            .claim(dir.path(), Shard::WHOLE, false, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use"), "{e}");
        let again = r("b").claim(dir.path(), Shard { index: 2, count: 2 }, false, &[]);
        assert!(again.is_ok());
        drop((sibling, again));
        // Spellings of the same paths are the same job.
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let spelled = |m: PathBuf| Record::new("predict", &[m], dir.path(), serde_json::json!({}));
        assert_eq!(
            spelled(dir.path().join("run")),
            spelled(dir.path().join(".").join("run"))
        );
    }
}

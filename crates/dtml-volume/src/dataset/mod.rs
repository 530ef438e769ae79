//! Dataset layouts on disk and how their cases split into labelled,
//! unlabelled, validation and test sets.
//!
//! Two layouts are recognised:
//! - Medical Segmentation Decathlon / nnU-Net: `dataset.json`, `imagesTr`,
//!   `labelsTr`, `imagesTs`, optional `labelsTs`. Both the MSD form (with
//!   `training` and `test` lists) and the nnU-Net v2 form (`channel_names`,
//!   `file_ending`, cases found on disk) are read; images may carry the
//!   `_0000` channel suffix on disk while `dataset.json` names them without.
//! - LA challenge: one folder per case holding `lgemri.nrrd` and
//!   `laendo.nrrd`, with optional `train.list` / `test.list`.

use crate::error::{Result, VolumeError};
use crate::files::split_extension;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

mod decathlon;
mod la;
mod split;
use decathlon::*;
use la::*;
pub use split::{LabelledSpec, Role, Split, split};

/// The on-disk layout of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Medical Segmentation Decathlon (`dataset.json` with case lists).
    Msd,
    /// nnU-Net v2 (`dataset.json` with `file_ending`, cases found on disk).
    NnUnetV2,
    /// LA challenge folders with `lgemri.nrrd` / `laendo.nrrd`.
    La,
}

impl Layout {
    /// The label value(s) that are foreground when the user names none:
    /// 255 in the LA challenge's masks, 1 elsewhere.
    pub fn default_foreground(self) -> Vec<i64> {
        match self {
            Layout::La => vec![255],
            Layout::Msd | Layout::NnUnetV2 => vec![1],
        }
    }
}

/// One case's files.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFiles {
    pub id: String,
    pub image: PathBuf,
    /// Channel of a 4D image file to read (`None` for 3D files).
    pub channel: Option<usize>,
    pub label: Option<PathBuf>,
}

/// A dataset found on disk: its training cases (with labels) and test cases
/// (labels optional), in a stable order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub layout: Layout,
    pub training: Vec<CaseFiles>,
    pub test: Vec<CaseFiles>,
    /// Label names by value, as `dataset.json` lists them (empty for LA).
    pub label_names: Vec<(i64, String)>,
}

/// Which image channel to use for multi-channel datasets.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    pub channel: usize,
}

impl Dataset {
    /// Detects the layout of `root` and lists its cases.
    pub fn open(root: &Path, options: OpenOptions) -> Result<Dataset> {
        if !root.is_dir() {
            return Err(VolumeError::dataset(root, "not a directory"));
        }
        let json = root.join("dataset.json");
        let (dataset, named_in) = if json.is_file() {
            (open_decathlon(root, &json, options)?, json)
        } else if looks_like_la(root)? {
            (open_la(root)?, root.to_path_buf())
        } else {
            return Err(VolumeError::dataset(
                root,
                "no dataset.json (Decathlon / nnU-Net layout) and no case folders with lgemri.nrrd + laendo.nrrd (LA layout)",
            ));
        };
        dataset.check_inside(root, &named_in)?;
        Ok(dataset)
    }

    /// Every case file must resolve inside the dataset folder, symlinks
    /// followed, and be a regular file ([`crate::confine`]).
    fn check_inside(&self, root: &Path, named_in: &Path) -> Result<()> {
        for case in self.training.iter().chain(&self.test) {
            let what = |role: &str| format!("{role} of case {}", case.id);
            crate::confine::inside(root, &case.image, &what("image"), named_in)?;
            if let Some(label) = &case.label {
                crate::confine::inside(root, label, &what("label"), named_in)?;
            }
        }
        Ok(())
    }

    /// A training case by id.
    pub fn training_case(&self, id: &str) -> Option<&CaseFiles> {
        self.training.iter().find(|c| c.id == id)
    }
}

/// Joins a path from `dataset.json` to the root, refusing anything that
/// could leave the dataset folder.
pub fn resolve_inside(root: &Path, rel: &str, json: &Path) -> Result<PathBuf> {
    let p = Path::new(rel);
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(VolumeError::dataset(
                    json,
                    format!("path {rel:?} is absolute; paths must stay inside the dataset folder"),
                ));
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(VolumeError::dataset(
                        json,
                        format!("path {rel:?} leaves the dataset folder"),
                    ));
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
        }
    }
    Ok(root.join(p))
}

fn case_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    split_extension(&name).0.to_string()
}

/// Reads a case list file (one id per line; blank lines and `#` comments
/// ignored; a trailing `/` or path prefix is stripped, as UA-MT lists vary).
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let bytes = crate::confine::read_bounded(path, LIST_MAX_BYTES, "case list")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| VolumeError::dataset(path, "a case list is UTF-8 text, one id per line"))?;
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.trim_end_matches('/');
        let id = l.rsplit('/').next().unwrap_or(l);
        let (id, _) = split_extension(id);
        if out.iter().any(|o| o == id) {
            return Err(VolumeError::dataset(
                path,
                format!("case {id:?} is listed twice"),
            ));
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// The largest case list read.
const LIST_MAX_BYTES: u64 = 16 << 20;

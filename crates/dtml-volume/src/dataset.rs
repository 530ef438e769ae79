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

/// Finds an image named in `dataset.json`: as written, or with the
/// nnU-Net channel suffix `_000C` before the extension.
fn find_image(path: &Path, channel: usize, json: &Path) -> Result<(PathBuf, Option<usize>)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = split_extension(&name);
    let suffixed = path.with_file_name(format!("{stem}_{channel:04}{ext}"));
    if suffixed.is_file() {
        return Ok((suffixed, None));
    }
    if path.is_file() {
        // A file named without suffix may be a 4D multi-channel MSD image.
        return Ok((path.to_path_buf(), Some(channel)));
    }
    Err(VolumeError::dataset(
        json,
        format!(
            "image {} is listed but missing (also looked for {})",
            path.display(),
            suffixed.display()
        ),
    ))
}

fn case_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    split_extension(&name).0.to_string()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| VolumeError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| VolumeError::dataset(path, format!("invalid JSON: {e}")))
}

fn parse_label_names(json: &Path, v: &Value) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    let Some(map) = v.get("labels").and_then(Value::as_object) else {
        return Ok(out);
    };
    for (k, val) in map {
        // MSD: {"0": "background"}; nnU-Net v2: {"background": 0}.
        if let Ok(num) = k.parse::<i64>() {
            out.push((num, val.as_str().unwrap_or_default().to_string()));
        } else if let Some(num) = val.as_i64() {
            out.push((num, k.clone()));
        } else {
            return Err(VolumeError::dataset(
                json,
                format!(
                    "label {k:?} maps to {val}, not an integer (region-based labels are not supported)"
                ),
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn open_decathlon(root: &Path, json: &Path, options: OpenOptions) -> Result<Dataset> {
    let v = read_json(json)?;
    let label_names = parse_label_names(json, &v)?;
    if let Some(list) = v.get("training").and_then(Value::as_array) {
        let mut training = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let field = |name: &str| -> Result<PathBuf> {
                let s = entry.get(name).and_then(Value::as_str).ok_or_else(|| {
                    VolumeError::dataset(
                        json,
                        format!("training[{i}] has no string field {name:?}"),
                    )
                })?;
                resolve_inside(root, s, json)
            };
            let image = field("image")?;
            let label = field("label")?;
            if !label.is_file() {
                return Err(VolumeError::dataset(
                    json,
                    format!("label {} is listed but missing", label.display()),
                ));
            }
            let (image_path, channel) = find_image(&image, options.channel, json)?;
            training.push(CaseFiles {
                id: case_id(&image),
                image: image_path,
                channel,
                label: Some(label),
            });
        }
        let mut test = Vec::new();
        for (i, entry) in v
            .get("test")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let s = entry
                .as_str()
                .or_else(|| entry.get("image").and_then(Value::as_str))
                .ok_or_else(|| {
                    VolumeError::dataset(
                        json,
                        format!("test[{i}] is neither a path nor an object with \"image\""),
                    )
                })?;
            let image = resolve_inside(root, s, json)?;
            let (image_path, channel) = find_image(&image, options.channel, json)?;
            let id = case_id(&image);
            let label = labels_ts(root, &id, split_extension(&image.to_string_lossy()).1);
            test.push(CaseFiles {
                id,
                image: image_path,
                channel,
                label,
            });
        }
        check_unique(json, &training, &test)?;
        return Ok(Dataset {
            root: root.to_path_buf(),
            layout: Layout::Msd,
            training,
            test,
            label_names,
        });
    }
    let ending = v
        .get("file_ending")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            VolumeError::dataset(
                json,
                "neither a \"training\" list (MSD) nor \"file_ending\" (nnU-Net v2)",
            )
        })?;
    let training = scan_nnunet(root, "imagesTr", "labelsTr", ending, options.channel, true)?;
    if let Some(n) = v.get("numTraining").and_then(Value::as_u64)
        && n as usize != training.len()
    {
        return Err(VolumeError::dataset(
            json,
            format!(
                "numTraining is {n} but imagesTr/labelsTr hold {} cases",
                training.len()
            ),
        ));
    }
    let test = scan_nnunet(root, "imagesTs", "labelsTs", ending, options.channel, false)?;
    check_unique(json, &training, &test)?;
    Ok(Dataset {
        root: root.to_path_buf(),
        layout: Layout::NnUnetV2,
        training,
        test,
        label_names,
    })
}

fn labels_ts(root: &Path, id: &str, ext: &str) -> Option<PathBuf> {
    let ext = if ext.is_empty() { ".nii.gz" } else { ext };
    let p = root.join("labelsTs").join(format!("{id}{ext}"));
    p.is_file().then_some(p)
}

fn scan_nnunet(
    root: &Path,
    images: &str,
    labels: &str,
    ending: &str,
    channel: usize,
    labels_required: bool,
) -> Result<Vec<CaseFiles>> {
    let dir = root.join(images);
    if !dir.is_dir() {
        if labels_required {
            return Err(VolumeError::dataset(
                &dir,
                "missing (nnU-Net v2 layout needs imagesTr)",
            ));
        }
        return Ok(Vec::new());
    }
    let suffix = format!("_{channel:04}{ending}");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| VolumeError::io(&dir, e))? {
        let entry = entry.map_err(|e| VolumeError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(&suffix) {
            ids.insert(id.to_string());
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let label = root.join(labels).join(format!("{id}{ending}"));
        let label = if label.is_file() {
            Some(label)
        } else if labels_required {
            return Err(VolumeError::dataset(
                &label,
                format!("label of case {id} is missing"),
            ));
        } else {
            None
        };
        out.push(CaseFiles {
            image: dir.join(format!("{id}{suffix}")),
            id,
            channel: None,
            label,
        });
    }
    Ok(out)
}

fn check_unique(json: &Path, training: &[CaseFiles], test: &[CaseFiles]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for c in training.iter().chain(test) {
        if !seen.insert(c.id.as_str()) {
            return Err(VolumeError::dataset(
                json,
                format!("case id {:?} appears twice", c.id),
            ));
        }
    }
    Ok(())
}

fn la_case(dir: &Path) -> Option<CaseFiles> {
    let image = dir.join("lgemri.nrrd");
    let label = dir.join("laendo.nrrd");
    (image.is_file() || label.is_file()).then(|| CaseFiles {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        image,
        channel: None,
        label: label.is_file().then_some(label),
    })
}

fn looks_like_la(root: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(root).map_err(|e| VolumeError::io(root, e))? {
        let entry = entry.map_err(|e| VolumeError::io(root, e))?;
        if entry.path().join("lgemri.nrrd").is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads a case list file (one id per line; blank lines and `#` comments
/// ignored; a trailing `/` or path prefix is stripped, as UA-MT lists vary).
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| VolumeError::io(path, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.trim_end_matches('/');
        let id = l.rsplit('/').next().unwrap_or(l);
        let (id, _) = split_extension(id);
        out.push(id.to_string());
    }
    Ok(out)
}

fn open_la(root: &Path) -> Result<Dataset> {
    let mut all = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| VolumeError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for dir in entries {
        if let Some(c) = la_case(&dir) {
            if !c.image.is_file() {
                return Err(VolumeError::dataset(
                    &c.image,
                    "case folder has laendo.nrrd but no lgemri.nrrd",
                ));
            }
            all.push(c);
        }
    }
    let take = |list: &Path, all: &[CaseFiles]| -> Result<Vec<CaseFiles>> {
        read_list(list)?
            .into_iter()
            .map(|id| {
                all.iter().find(|c| c.id == id).cloned().ok_or_else(|| {
                    VolumeError::dataset(
                        list,
                        format!("case {id:?} has no folder with lgemri.nrrd"),
                    )
                })
            })
            .collect()
    };
    let train_list = root.join("train.list");
    let test_list = root.join("test.list");
    let test = if test_list.is_file() {
        take(&test_list, &all)?
    } else {
        Vec::new()
    };
    let training = if train_list.is_file() {
        take(&train_list, &all)?
    } else {
        all.iter()
            .filter(|c| !test.iter().any(|t| t.id == c.id))
            .cloned()
            .collect()
    };
    for c in &training {
        if c.label.is_none() {
            return Err(VolumeError::dataset(
                &c.image,
                "training case has no laendo.nrrd label",
            ));
        }
    }
    check_unique(root, &training, &test)?;
    Ok(Dataset {
        root: root.to_path_buf(),
        layout: Layout::La,
        training,
        test,
        label_names: Vec::new(),
    })
}

/// How many (or which) training cases are labelled.
#[derive(Debug, Clone)]
pub enum LabelledSpec {
    /// The first N training cases, in the dataset's order.
    Count(usize),
    /// A fraction of the training cases (rounded to nearest, at least 1).
    Fraction(f64),
    /// Ids from a list file.
    List(PathBuf),
}

/// The role of a case in training and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Labelled,
    Unlabelled,
    Validation,
    Test,
}

/// Cases assigned to roles.
#[derive(Debug, Clone)]
pub struct Split {
    pub cases: Vec<(CaseFiles, Role)>,
}

impl Split {
    /// Cases of one role.
    pub fn of(&self, role: Role) -> impl Iterator<Item = &CaseFiles> {
        self.cases
            .iter()
            .filter(move |(_, r)| *r == role)
            .map(|(c, _)| c)
    }
}

/// Splits a dataset: validation cases (from a list) are held out of
/// training, then labelled cases are chosen, the rest of training is
/// unlabelled (their label files stay listed but are never used as
/// labels; only the reference-crop switch reads them), and the test set is the
/// dataset's own (`imagesTs` / `test.list`) or a list given here.
pub fn split(
    dataset: &Dataset,
    labelled: &LabelledSpec,
    validation_list: Option<&Path>,
    test_list: Option<&Path>,
) -> Result<Split> {
    let find_all = |list: &Path| -> Result<Vec<CaseFiles>> {
        read_list(list)?
            .into_iter()
            .map(|id| {
                dataset
                    .training
                    .iter()
                    .chain(&dataset.test)
                    .find(|c| c.id == id)
                    .cloned()
                    .ok_or_else(|| {
                        VolumeError::dataset(list, format!("case {id:?} is not in the dataset"))
                    })
            })
            .collect()
    };
    let validation = match validation_list {
        Some(l) => find_all(l)?,
        None => Vec::new(),
    };
    let test = match test_list {
        Some(l) => find_all(l)?,
        None => dataset.test.clone(),
    };
    let held_out = |c: &CaseFiles| validation.iter().chain(&test).any(|v| v.id == c.id);
    let pool: Vec<CaseFiles> = dataset
        .training
        .iter()
        .filter(|c| !held_out(c))
        .cloned()
        .collect();
    for v in &validation {
        if v.label.is_none() {
            return Err(VolumeError::dataset(
                &v.image,
                "validation case has no label",
            ));
        }
    }
    let labelled_ids: Vec<String> = match labelled {
        LabelledSpec::Count(n) => {
            if *n > pool.len() {
                return Err(VolumeError::dataset(
                    &dataset.root,
                    format!(
                        "{n} labelled cases requested but only {} training cases remain after hold-outs",
                        pool.len()
                    ),
                ));
            }
            pool.iter().take(*n).map(|c| c.id.clone()).collect()
        }
        LabelledSpec::Fraction(f) => {
            if !(*f > 0.0 && *f <= 1.0) {
                return Err(VolumeError::dataset(
                    &dataset.root,
                    format!("labelled fraction {f} must be in (0, 1]"),
                ));
            }
            let n = ((pool.len() as f64 * f).round() as usize).clamp(1, pool.len().max(1));
            pool.iter().take(n).map(|c| c.id.clone()).collect()
        }
        LabelledSpec::List(list) => {
            let ids = read_list(list)?;
            for id in &ids {
                if !pool.iter().any(|c| &c.id == id) {
                    return Err(VolumeError::dataset(
                        list,
                        format!("labelled case {id:?} is not a training case (or is held out)"),
                    ));
                }
            }
            ids
        }
    };
    if labelled_ids.is_empty() {
        return Err(VolumeError::dataset(
            &dataset.root,
            "no labelled training case",
        ));
    }
    let mut cases = Vec::new();
    for c in pool {
        if labelled_ids.contains(&c.id) {
            cases.push((c, Role::Labelled));
        } else {
            cases.push((c, Role::Unlabelled));
        }
    }
    cases.extend(validation.into_iter().map(|c| (c, Role::Validation)));
    cases.extend(test.into_iter().map(|c| (c, Role::Test)));
    Ok(Split { cases })
}

//! The LA challenge layout: a folder per case with `lgemri.nrrd` and
//! `laendo.nrrd`, optional `train.list` / `test.list`.

use super::*;

pub(super) fn la_case(dir: &Path) -> Option<CaseFiles> {
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

pub(super) fn looks_like_la(root: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(root).map_err(|e| VolumeError::io(root, e))? {
        let entry = entry.map_err(|e| VolumeError::io(root, e))?;
        if entry.path().join("lgemri.nrrd").is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn open_la(root: &Path) -> Result<Dataset> {
    let mut all = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| VolumeError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !crate::files::is_hidden(p))
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

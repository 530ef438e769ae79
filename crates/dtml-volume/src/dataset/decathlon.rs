//! The Medical Segmentation Decathlon and nnU-Net v2 layouts: `dataset.json`
//! and the `imagesTr` / `labelsTr` / `imagesTs` / `labelsTs` folders.

use super::*;

/// Finds an image named in `dataset.json`: as written, or with the
/// nnU-Net channel suffix `_000C` before the extension.
pub(super) fn find_image(
    path: &Path,
    channel: usize,
    json: &Path,
) -> Result<(PathBuf, Option<usize>)> {
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

pub(super) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| VolumeError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| VolumeError::dataset(path, format!("invalid JSON: {e}")))
}

pub(super) fn parse_label_names(json: &Path, v: &Value) -> Result<Vec<(i64, String)>> {
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

pub(super) fn open_decathlon(root: &Path, json: &Path, options: OpenOptions) -> Result<Dataset> {
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

pub(super) fn labels_ts(root: &Path, id: &str, ext: &str) -> Option<PathBuf> {
    let ext = if ext.is_empty() { ".nii.gz" } else { ext };
    let p = root.join("labelsTs").join(format!("{id}{ext}"));
    p.is_file().then_some(p)
}

pub(super) fn scan_nnunet(
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
        if crate::files::is_hidden(&entry.path()) {
            tracing::debug!("skipping hidden file {}", entry.path().display());
            continue;
        }
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

pub(super) fn check_unique(json: &Path, training: &[CaseFiles], test: &[CaseFiles]) -> Result<()> {
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

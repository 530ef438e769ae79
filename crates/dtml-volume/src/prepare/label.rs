//! Reading a label map and binarising it (the one rule for labels and
//! masks), with the grid checked against its image and dropped values
//! reported.

use super::*;

/// Reads a label map and binarises it by the foreground values; returns
/// the mask and the foreground values present.
pub fn read_label(
    path: &Path,
    foreground: &[i64],
    like: Option<(&Path, &Volume)>,
) -> Result<(Volume, Vec<u8>, BTreeSet<i64>)> {
    let label = read_volume_with(path, ReadOptions::default())?;
    if let Some((image_path, image)) = like {
        if label.shape != image.shape {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "label shape {:?} differs from image {} shape {:?}",
                    label.shape,
                    image_path.display(),
                    image.shape
                ),
            ));
        }
        if let Some(how) = label.geometry.difference(&image.geometry) {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "label affine {:?} differs from image {} affine {:?}: {how}",
                    label.geometry.affine,
                    image_path.display(),
                    image.geometry.affine
                ),
            ));
        }
    }
    let (mask, present) = binarize(path, &label, Some(foreground))?;
    Ok((label, mask, present))
}

/// The one rule that turns a label map or mask into 0/1: with `foreground`
/// values, a voxel is 1 when its value is one of them (values must be
/// integers; other non-zero values become 0 with a warning that counts
/// them); without, any non-zero voxel is 1. NaN or infinite values are
/// errors either way. Returns the mask and the foreground values present.
pub fn binarize(
    path: &Path,
    volume: &Volume,
    foreground: Option<&[i64]>,
) -> Result<(Vec<u8>, BTreeSet<i64>)> {
    let mut mask = Vec::with_capacity(volume.len());
    let mut present = BTreeSet::new();
    let mut dropped = std::collections::BTreeMap::new();
    let integer = volume.data.dtype().is_integer();
    let where_ = |i: usize| {
        let [x, y, z] = volume.shape.position(i).xyz();
        format!("({x}, {y}, {z})")
    };
    for i in 0..volume.len() {
        let v = volume.data.get_f64(i);
        if !v.is_finite() {
            return Err(VolumeError::invalid(
                path,
                format!(
                    "voxel {} holds {v}: a label or mask must be finite",
                    where_(i)
                ),
            ));
        }
        let fg = match foreground {
            None => v != 0.0,
            Some(values) => {
                if !integer && v.fract() != 0.0 {
                    return Err(VolumeError::invalid(
                        path,
                        format!(
                            "label voxel {} holds {v}: labels must be integers",
                            where_(i)
                        ),
                    ));
                }
                let v = v as i64;
                let fg = values.contains(&v);
                if fg {
                    present.insert(v);
                } else if v != 0 {
                    *dropped.entry(v).or_insert(0usize) += 1;
                }
                fg
            }
        };
        mask.push(fg as u8);
    }
    if !dropped.is_empty() {
        // Not an error (a multi-label map binarised for one structure is a
        // real use), but never silent.
        let listed: Vec<String> = dropped
            .iter()
            .map(|(v, n)| format!("{v} ({n} voxels)"))
            .collect();
        tracing::warn!(
            "{}: label values {} are not foreground {:?} and count as background",
            path.display(),
            listed.join(", "),
            foreground.unwrap_or_default()
        );
    }
    Ok((mask, present))
}

/// Up to `most` distinct non-zero values of a label map, ascending.
pub(crate) fn nonzero_values(volume: &Volume, most: usize) -> Vec<f64> {
    let mut seen: Vec<f64> = Vec::new();
    for i in 0..volume.len() {
        let v = volume.data.get_f64(i);
        if v != 0.0 && !seen.contains(&v) {
            seen.push(v);
            if seen.len() == most {
                break;
            }
        }
    }
    seen.sort_by(f64::total_cmp);
    seen
}

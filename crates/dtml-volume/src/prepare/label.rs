//! Reading a label map and binarising it by the foreground values, with
//! the grid checked against its image and dropped values reported.

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
    let mut mask = Vec::with_capacity(label.len());
    let mut present = BTreeSet::new();
    let mut dropped = std::collections::BTreeMap::new();
    let integer = label.data.dtype().is_integer();
    for i in 0..label.len() {
        let v = label.data.get_f64(i);
        if !integer && (v.fract() != 0.0 || !v.is_finite()) {
            let [nx, ny, _] = label.shape;
            return Err(VolumeError::invalid(
                path,
                format!(
                    "label voxel ({}, {}, {}) holds {v}: labels must be integers",
                    i % nx,
                    (i / nx) % ny,
                    i / (nx * ny)
                ),
            ));
        }
        let v = v as i64;
        let fg = foreground.contains(&v);
        if fg {
            present.insert(v);
        } else if v != 0 {
            *dropped.entry(v).or_insert(0usize) += 1;
        }
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
            "{}: label values {} are not foreground {foreground:?} and count as background",
            path.display(),
            listed.join(", ")
        );
    }
    Ok((label, mask, present))
}

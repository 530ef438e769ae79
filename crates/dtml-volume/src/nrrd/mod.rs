//! NRRD reading: `.nrrd` with attached data and `.nhdr` with a single
//! detached data file, as written by ITK (the LA challenge's `lgemri.nrrd`
//! and `laendo.nrrd`), teem and pynrrd.
//!
//! Supported: magics `NRRD0001`..`NRRD0005`; every NRRD spelling of the
//! 8/16/32-bit integer types, `float` and `double`; encodings `raw`,
//! `gzip` (`gz`) and `ascii` (`text`, `txt`); `endian`; `byte skip`
//! (including -1 for raw data); `line skip`; `data file` naming one file
//! relative to the header. A volume has dimension 3, or 2 (read as one
//! slice, `nz = 1`), or up to 4 when the extra axes are non-spatial with a
//! single sample (a leading `list` axis of size 1, say).
//!
//! Geometry: `space directions` and `space origin` are in the file's
//! `space` and are converted to RAS+ for the NIfTI-style affine
//! (`left-posterior-superior` negates the first two world axes,
//! `left-anterior-superior` the first; `right-anterior-superior`,
//! `3D-right-handed` and a bare `space dimension` are taken as RAS). The
//! affine's columns are the spatial axes' directions and its translation is
//! the origin. A file without a space has per-axis `spacings` (NaN, zero or
//! missing read as 1 mm), an axis-aligned affine and the origin at 0; a file
//! with a space but no `space directions` takes its axes along the space's
//! axes, scaled by `spacings`, and converted like directions. Which axes are
//! spatial comes from `space directions` (`none` marks the others), else
//! from `kinds`, else a 4D file's first axis is taken as non-spatial.
//! `.nhdr` names a header whose data are in a separate file.
//!
//! Every malformed input is a [`VolumeError`] naming the file; data lengths
//! are checked against `sizes` before any voxel buffer is allocated.

use crate::axes::Xyz;
use crate::confine;
use crate::error::{Result, VolumeError};
use crate::geometry::{Affine, Geometry, identity};
use crate::nii::decode_raw;
use crate::volume::{DataType, Volume, VoxelData};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

mod data;
mod geometry;
mod header;
use data::*;
use geometry::*;
use header::*;

const FORMAT: &str = "NRRD";

/// Deflate expands data at most about 1032:1; a `sizes` asking for more
/// bytes than a gzip stream of the given length can hold is rejected
/// before decompressing.
const MAX_GZIP_RATIO: usize = 1100;

/// Fields this reader interprets (names normalised: lower case, no spaces).
/// Other fields (`content`, `centers`, `units`, `min`, ...) are ignored.
const KNOWN_FIELDS: &[&str] = &[
    "type",
    "dimension",
    "sizes",
    "encoding",
    "endian",
    "byteskip",
    "lineskip",
    "datafile",
    "space",
    "spacedimension",
    "spacedirections",
    "spaceorigin",
    "spacings",
    "kinds",
];

fn format_err(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::format(path, FORMAT, reason)
}

fn unsupported(path: &Path, reason: impl Into<String>) -> VolumeError {
    VolumeError::unsupported(path, FORMAT, reason)
}

/// The most bytes a header may take before its blank line (ITK's are a
/// few hundred).
const HEADER_MAX: usize = 1 << 20;

/// The first `n` bytes of `path` (fewer if it is shorter).
fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let mut out = Vec::new();
    file.take(n as u64)
        .read_to_end(&mut out)
        .map_err(|e| VolumeError::io(path, e))?;
    Ok(out)
}

/// Reads an NRRD volume (see the module documentation for what is
/// supported).
pub fn read_nrrd(path: &Path) -> Result<Volume> {
    // The header is read from a bounded prefix; attached data only once the
    // header has said how much there can be.
    confine::regular_file(path, "NRRD file", path)?;
    let file_len = std::fs::metadata(path)
        .map_err(|e| VolumeError::io(path, e))?
        .len();
    let prefix = read_prefix(path, HEADER_MAX)?;
    let header = parse_header(path, &prefix)?;
    if header.data_start.is_none() && file_len > prefix.len() as u64 {
        return Err(format_err(
            path,
            format!("no blank line ends the header within its first {HEADER_MAX} bytes"),
        ));
    }
    let layout = Layout::from_header(path, &header)?;
    let bytes = match header.data_start {
        Some(start) if layout.data_file.is_none() && file_len > prefix.len() as u64 => {
            let most = (start as u64).saturating_add(layout.most_stored_bytes());
            if file_len > most {
                return Err(format_err(
                    path,
                    format!(
                        "holds {} bytes after its header, more than the {} its sizes and encoding can use (wrong sizes, or not the file meant)",
                        file_len - start as u64,
                        most - start as u64
                    ),
                ));
            }
            confine::read_bounded(path, most, "NRRD file")?
        }
        _ => prefix,
    };

    // The bytes holding the (possibly encoded) data, before line skip.
    let detached;
    let (region, data_name): (&[u8], Option<PathBuf>) = match &layout.data_file {
        Some(file) => {
            detached = confine::read_bounded(file, layout.most_stored_bytes(), "data file")
                .map_err(|e| match e {
                    VolumeError::Io { error, .. } => VolumeError::invalid(
                        path,
                        format!("cannot read its data file {}: {error}", file.display()),
                    ),
                    other => other,
                })?;
            (&detached[..], Some(file.clone()))
        }
        None => match header.data_start {
            Some(start) => (&bytes[start..], None),
            None => {
                return Err(format_err(
                    path,
                    "the header is not followed by a blank line and data, and names no `data file`",
                ));
            }
        },
    };
    let source = match &data_name {
        Some(p) => format!("data file {}", p.display()),
        None => "attached data".to_string(),
    };
    let region = skip_lines(path, region, layout.line_skip, &source)?;
    let data = decode_data(path, region, &layout, &source)?;
    debug_assert_eq!(data.len(), layout.shape.voxels());
    Ok(Volume {
        data,
        shape: layout.shape,
        geometry: Geometry::from_affine(layout.affine),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_tokens_split_entries() {
        assert_eq!(
            vector_tokens("(1, 0,0) none  (0,0, 2.5)"),
            vec!["(1,0,0)", "none", "(0,0,2.5)"]
        );
        assert_eq!(vector_tokens(""), Vec::<String>::new());
    }

    #[test]
    fn types_map_onto_dtml() {
        let p = Path::new("x.nrrd");
        assert_eq!(parse_type(p, "unsigned  char").unwrap(), DataType::U8);
        assert_eq!(parse_type(p, "short int").unwrap(), DataType::I16);
        assert_eq!(parse_type(p, "uint16_t").unwrap(), DataType::U16);
        assert!(matches!(
            parse_type(p, "int64"),
            Err(VolumeError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_type(p, "quux"),
            Err(VolumeError::Format { .. })
        ));
    }
}

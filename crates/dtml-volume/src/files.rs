//! Which file names are volumes, and the volumes of a folder: the one list
//! of extensions that reading, dataset lookup, case names and folder
//! listings share.

use crate::error::{Result, VolumeError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// NIfTI-1 names: single files, and both halves of a `.hdr` / `.img` pair.
pub const NIFTI_EXTENSIONS: [&str; 6] = [".nii.gz", ".nii", ".hdr.gz", ".hdr", ".img.gz", ".img"];
/// NRRD names: attached data, and detached headers.
pub const NRRD_EXTENSIONS: [&str; 2] = [".nrrd", ".nhdr"];

/// Whether two paths name the same file or folder: equal once resolved
/// (`run/`, `./run` and a symlink to it are one), else equal as written.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether `path` names a hidden file that is no scan: macOS's `._name`
/// resource forks and `.DS_Store`, editors' and dtml's own dot files.
/// Folder listings skip them.
pub fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether `path` names a NIfTI-1 file (either half of a pair included).
pub fn is_nifti_path(path: &Path) -> bool {
    extension_of(path, &NIFTI_EXTENSIONS).is_some()
}

/// Whether `path` names an NRRD file.
pub fn is_nrrd_path(path: &Path) -> bool {
    extension_of(path, &NRRD_EXTENSIONS).is_some()
}

fn extension_of(path: &Path, list: &[&'static str]) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    list.iter()
        .copied()
        .find(|e| name.len() > e.len() && name.ends_with(e))
}

/// `name` split into its stem and volume extension (`""` when it has none).
pub fn split_extension(name: &str) -> (&str, &str) {
    let lower = name.to_ascii_lowercase();
    NIFTI_EXTENSIONS
        .iter()
        .chain(&NRRD_EXTENSIONS)
        .find(|e| lower.len() > e.len() && lower.ends_with(*e))
        .map_or((name, ""), |e| name.split_at(name.len() - e.len()))
}

/// The case name of a volume a user would list: the file name without its
/// extension. `.img` halves of a NIfTI pair are not listed (their `.hdr`
/// is), so a pair is one case.
pub fn case_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let (stem, ext) = split_extension(&name);
    let ext = ext.to_ascii_lowercase();
    (!ext.is_empty() && !ext.starts_with(".img")).then(|| stem.to_string())
}

/// The volume files of a folder (or the file itself), sorted.
pub fn volume_files(path: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => return Ok(vec![path.to_path_buf()]),
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(VolumeError::invalid(
                path,
                "is not a regular file or folder (a FIFO, device or socket); only regular files are read",
            ));
        }
        Err(e) => return Err(VolumeError::io(path, e)),
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| VolumeError::io(path, e))? {
        let p = e.map_err(|e| VolumeError::io(path, e))?.path();
        if is_hidden(&p) {
            tracing::debug!("skipping hidden file {}", p.display());
            continue;
        }
        if p.is_file() && case_name(&p).is_some() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The case a scan belongs to: its case name without nnU-Net's `_0000`
/// channel suffix, so masks are named as the labels are.
pub fn scan_case(path: &Path) -> Option<String> {
    let name = case_name(path)?;
    Some(match name.strip_suffix("_0000") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    })
}

/// The scans `dtml predict` segments, by case: a scan, a folder of scans,
/// or a folder of LA case folders (`<case>/lgemri.nrrd`). Two scans that
/// would write the same mask are an error.
pub fn scan_cases(input: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut listed = Vec::new();
    for s in volume_files(input)? {
        let case = scan_case(&s)
            .ok_or_else(|| VolumeError::invalid(&s, "not a NIfTI or NRRD file name"))?;
        listed.push((case, s));
    }
    if listed.is_empty() && input.is_dir() {
        for e in std::fs::read_dir(input).map_err(|e| VolumeError::io(input, e))? {
            let p = e.map_err(|e| VolumeError::io(input, e))?.path();
            let scan = p.join("lgemri.nrrd");
            if scan.is_file()
                && let Some(name) = p.file_name()
            {
                listed.push((name.to_string_lossy().into_owned(), scan));
            }
        }
        listed.sort();
    }
    if listed.is_empty() {
        return Err(VolumeError::invalid(
            input,
            "no NIfTI or NRRD scans found (nor LA case folders with lgemri.nrrd)",
        ));
    }
    let mut cases: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (case, s) in listed {
        if let Some(other) = cases.insert(case.clone(), s.clone()) {
            return Err(VolumeError::invalid(
                &s,
                format!(
                    "{} and this scan would both write {case}.nii.gz",
                    other.display()
                ),
            ));
        }
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cases() {
        assert_eq!(split_extension("a.NII.GZ"), ("a", ".NII.GZ"));
        assert_eq!(split_extension("a.mha"), ("a.mha", ""));
        assert_eq!(
            case_name(Path::new("x/la_001.nrrd")).as_deref(),
            Some("la_001")
        );
        assert_eq!(case_name(Path::new("x/pair.img")), None);
        assert_eq!(case_name(Path::new("x/pair.hdr")).as_deref(), Some("pair"));
        assert_eq!(
            scan_case(Path::new("BraTS_001_0000.nii.gz")).as_deref(),
            Some("BraTS_001")
        );
        assert_eq!(
            scan_case(Path::new("_0000.nii.gz")).as_deref(),
            Some("_0000")
        );
        assert_eq!(
            scan_case(Path::new("a/la_003_0001.nii")).as_deref(),
            Some("la_003_0001")
        );
        assert!(scan_case(Path::new("notes.txt")).is_none());
        assert!(is_nifti_path(Path::new("a.img.gz")) && is_nrrd_path(Path::new("a.nhdr")));
        assert!(!is_nifti_path(Path::new(".nii")));
    }

    #[test]
    fn la_case_folders_are_found_and_named_by_folder() {
        let dir = tempfile::tempdir().unwrap();
        for case in ["case_b", "case_a"] {
            std::fs::create_dir_all(dir.path().join(case)).unwrap();
            std::fs::write(dir.path().join(case).join("lgemri.nrrd"), "x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let found = scan_cases(dir.path()).unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["case_a", "case_b"]);
        assert!(found["case_a"].ends_with("case_a/lgemri.nrrd"));
        let empty = tempfile::tempdir().unwrap();
        let err = scan_cases(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no NIfTI or NRRD scans"), "{err}");
    }
}

//! One policy for every file the tools read on a user's behalf, so a
//! hostile dataset, header or cache cannot make them read elsewhere or
//! read without end:
//!
//! - **Inside.** A path named *by a file* (an entry of `dataset.json`, an
//!   NRRD `data file:`, a case of a cache's `manifest.json`) must resolve,
//!   symlinks followed, inside the folder that file governs: the dataset
//!   folder, the header's own folder, the cache folder. Anything else is
//!   refused before it is opened, so not even its size leaks into a
//!   message. Paths the user types are theirs and are not confined.
//! - **Regular files only.** FIFOs, devices and sockets never end or never
//!   answer (`/dev/zero`, a pipe); they are refused by type.
//! - **Bounded.** Every read has a ceiling from what the header promises
//!   (callers pass it), and no volume may promise more voxels than
//!   [`max_voxels`]: by default a sixteenth of the memory available when
//!   the process started (4 bytes of f32 image plus the copies training and
//!   inference make), overridable with `DTML_MAX_VOXELS`.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("a.raw"), [0u8; 8]).unwrap();
//! let inside = dtml_volume::confine::inside(dir.path(), &dir.path().join("a.raw"), "data file", dir.path());
//! assert!(inside.is_ok());
//! let outside = dtml_volume::confine::inside(dir.path(), std::path::Path::new("/etc/hostname"), "data file", dir.path());
//! assert!(outside.is_err());
//! ```

use crate::error::{Result, VolumeError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that overrides [`max_voxels`].
pub const MAX_VOXELS_VAR: &str = "DTML_MAX_VOXELS";

/// Resolves `path` (symlinks followed) and checks it lies inside `root` and
/// is a regular file. `what` names the path's role ("data file", "image of
/// case la_001"), `named_in` the file that named it; both go into the error.
pub fn inside(root: &Path, path: &Path, what: &str, named_in: &Path) -> Result<PathBuf> {
    let root_real = root.canonicalize().map_err(|e| VolumeError::io(root, e))?;
    let real = match path.canonicalize() {
        Ok(p) => p,
        // A missing file is the caller's usual "missing" error, unless its
        // name alone already leaves the folder.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if lexically_outside(&root_real, path) {
                return Err(outside(root, path, what, named_in));
            }
            return Err(VolumeError::io(path, e));
        }
        Err(e) => return Err(VolumeError::io(path, e)),
    };
    if !real.starts_with(&root_real) {
        return Err(outside(root, path, what, named_in));
    }
    regular_file(&real, what, named_in)?;
    Ok(real)
}

/// Whether a path that does not exist already names a place outside `root`
/// by its absolute prefix or its `..` components.
fn lexically_outside(root_real: &Path, path: &Path) -> bool {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(d) => d.join(path),
            Err(_) => return true,
        }
    };
    let mut parts: Vec<std::path::Component> = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    let normal: PathBuf = parts.iter().collect();
    // The nearest existing ancestor decides (it may be a symlink).
    let mut probe = normal.as_path();
    loop {
        if let Ok(real) = probe.canonicalize() {
            return !real.starts_with(root_real);
        }
        match probe.parent() {
            Some(p) => probe = p,
            None => return true,
        }
    }
}

fn outside(root: &Path, path: &Path, what: &str, named_in: &Path) -> VolumeError {
    VolumeError::Outside {
        path: named_in.to_path_buf(),
        what: what.to_string(),
        target: path.to_path_buf(),
        root: root.to_path_buf(),
    }
}

/// Refuses anything but a regular file (after symlinks): FIFOs, devices,
/// sockets and folders.
pub fn regular_file(path: &Path, what: &str, named_in: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| VolumeError::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file (a FIFO, device or socket)"
    };
    Err(VolumeError::invalid(
        named_in,
        format!(
            "{what} {} is {kind}; only regular files are read",
            path.display()
        ),
    ))
}

/// Reads a regular file whole, refusing it unread when it holds more than
/// `max` bytes (the most its header can use), and reading no more than
/// that even if it grows meanwhile.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    regular_file(path, what, path)?;
    let file = std::fs::File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let len = file.metadata().map_err(|e| VolumeError::io(path, e))?.len();
    if len > max {
        return Err(VolumeError::invalid(
            path,
            format!(
                "{what} holds {len} bytes, more than the {max} its header can use (wrong sizes, or not the file meant)"
            ),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| VolumeError::io(path, e))?;
    if out.len() as u64 > max {
        return Err(VolumeError::invalid(
            path,
            format!("{what} grew past {max} bytes while being read"),
        ));
    }
    Ok(out)
}

/// The most voxels one volume may hold (see the module doc).
pub fn max_voxels() -> Result<usize> {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    if let Some(v) = std::env::var_os(MAX_VOXELS_VAR) {
        let text = v.to_string_lossy();
        return text
            .trim()
            .replace('_', "")
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                VolumeError::invalid(
                    MAX_VOXELS_VAR,
                    format!("{text:?} is not a positive number of voxels"),
                )
            });
    }
    Ok(*DEFAULT.get_or_init(|| {
        let avail = available_memory().unwrap_or(8 << 30);
        (avail / 16).max(1 << 26) as usize
    }))
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How far a memory estimate may exceed the available memory before work
/// is refused: the estimates are measurements at two sizes, not bounds,
/// and a job that would fit must not be turned away.
pub const MEMORY_TOLERANCE: f64 = 1.25;

/// Refuses work that needs about `bytes` of memory when the machine has
/// far less available, before anything is allocated: the one size check
/// `prepare`, `train`, `predict` and `evaluate` share. `what` says what
/// the memory is for, in words a user can act on.
pub fn check_memory(path: &Path, what: &str, bytes: f64) -> Result<()> {
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if !bytes.is_finite() || bytes > MEMORY_TOLERANCE * avail as f64 {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(VolumeError::invalid(
            path,
            format!(
                "{what} needs about {:.1} GiB but {:.1} GiB are available; lower the patch, batch or width",
                gib(bytes),
                gib(avail as f64)
            ),
        ));
    }
    Ok(())
}

/// Refuses a volume of `shape` (all its axes, any dimension) when it holds
/// more than [`max_voxels`], naming the size, before anything is allocated.
pub fn check_voxels(path: &Path, shape: &[usize], bytes_per_voxel: usize) -> Result<()> {
    let limit = max_voxels()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .unwrap_or(usize::MAX);
    if count > limit {
        let gib = count as f64 * bytes_per_voxel.max(1) as f64 / (1u64 << 30) as f64;
        return Err(VolumeError::invalid(
            path,
            format!(
                "the header promises {shape:?} = {count} voxels ({gib:.1} GiB of data), more than the limit of {limit} voxels (a sixteenth of the available memory; set {MAX_VOXELS_VAR} to change it)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dotdot_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        std::fs::write(root.join("ok"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let json = root.join("dataset.json");
        assert!(inside(&root, &root.join("ok"), "image", &json).is_ok());
        for bad in [
            root.join("link"),
            root.join("../secret"),
            root.join("../missing"),
            PathBuf::from("/etc/passwd"),
        ] {
            let e = inside(&root, &bad, "image", &json).unwrap_err().to_string();
            assert!(e.contains("outside"), "{bad:?}: {e}");
            assert!(e.contains("dataset.json"), "{e}");
        }
    }

    #[test]
    fn devices_and_folders_are_not_read() {
        let e = read_bounded(Path::new("/dev/zero"), 64, "data file").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 64, "data file").unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
    }

    #[test]
    fn reads_past_the_bound_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![0u8; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100, "data file").unwrap().len(), 100);
        let e = read_bounded(&p, 99, "data file").unwrap_err().to_string();
        assert!(e.contains("holds 100 bytes, more than the 99"), "{e}");
    }
}

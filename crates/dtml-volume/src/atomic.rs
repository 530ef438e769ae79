//! Atomic, durable file writes: a temporary file beside the target
//! (`.dtml-<pid>-<random>.tmp`, short whatever the target's name, so a
//! legal 255-byte name stays writable), flushed to disk, renamed over the
//! target, then the folder flushed, so a crash or power cut leaves the
//! old file or the new one, never neither. Temporary files of processes
//! that died are removed by [`crate::output::remove_debris`].

use crate::error::{Result, VolumeError};
use crate::output::{TEMP_PREFIX, TEMP_SUFFIX};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder a file path lives in (`.` for a bare name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A builder of this process's temporary names with the permissions of
/// an entry created the usual way (`mode` less the umask, not tempfile's
/// private 0600 / 0700: outputs are shared data).
fn builder(prefix: &str, mode: u32) -> tempfile::Builder<'_, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(TEMP_SUFFIX).rand_bytes(6);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder
}

fn prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

/// A new temporary file in `dir` named as [`crate::output`] recognises.
pub fn temporary_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    builder(&prefix(), 0o666).tempfile_in(dir)
}

/// A new temporary folder in `dir`, named as the temporary files are (a
/// checkpoint is written whole into one, then renamed).
pub fn temporary_dir_in(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    builder(&prefix(), 0o777).tempdir_in(dir)
}

/// Flushes a folder's entries (a rename into it) to disk.
pub fn sync_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `path` atomically with whatever `fill` writes.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = folder_of(path);
    std::fs::create_dir_all(&dir).map_err(|e| VolumeError::io(&dir, e))?;
    if path.file_name().is_none() {
        return Err(VolumeError::invalid(path, "not a file path"));
    }
    let result = (|| -> std::io::Result<()> {
        let tmp = temporary_in(&dir)?;
        let mut buf = std::io::BufWriter::new(tmp);
        fill(&mut buf)?;
        let tmp = buf.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        sync_folder(&dir)
    })();
    result.map_err(|e| VolumeError::io(path, e))
}

/// Writes bytes to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Creates `dir` if needed and checks a file can be written there, so a
/// long job refuses an unwritable output folder before it starts, not
/// after its work is done.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::io(dir, e))?;
    temporary_in(dir)
        .and_then(|t| t.close())
        .map_err(|e| VolumeError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_written_and_nothing_is_left_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.nii.gz", "a".repeat(248));
        let path = dir.path().join(&name);
        write_bytes_atomic(&path, b"new").unwrap();
        write_bytes_atomic(&path, b"newer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"newer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(name)]);
        // Shared data, not private temporaries: the mode a plain write gets.
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&path), mode(&plain));
        std::fs::remove_file(&plain).unwrap();
        let failed = write_atomic(&dir.path().join("b"), |_| Err(std::io::Error::other("no")));
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

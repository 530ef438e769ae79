//! Atomic file writes: write a temporary file beside the target, flush it
//! to disk, then rename, so a crash never leaves a half-written file.

use crate::error::{Result, VolumeError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `path` atomically with whatever `fill` writes.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| VolumeError::io(&dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| VolumeError::invalid(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut buf = std::io::BufWriter::new(file);
        fill(&mut buf)?;
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(VolumeError::io(path, e));
    }
    Ok(())
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
    let probe = dir.join(format!(".dtml-write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| VolumeError::io(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| VolumeError::io(&probe, e))
}

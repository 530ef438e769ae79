//! Which folders dtml may write into, and the lock that keeps two writers
//! out of one: the output policy every command follows.
//!
//! - **Owned.** An output folder is new, empty, or already dtml's output of
//!   the same kind, recognised by the record that kind writes (a cache's
//!   `manifest.json`, a run's `run.json`, a prediction folder's
//!   `dtml-outputs.json`), checked by the caller's parser. Anything else is
//!   refused before work starts, naming the folder and why.
//! - **Apart from the inputs.** An output folder may not be, contain or lie
//!   inside a folder or file the same command reads (symlinks followed).
//! - **Locked.** The command holds an advisory lock ([`std::fs::File::try_lock`],
//!   `flock` on Unix) on `<folder>/.dtml-lock` for as long as it runs; a
//!   second writer is refused at once with the holder's pid. The kernel
//!   drops the lock of a killed process, so a stale lock file never blocks.
//! - **Clean.** Temporary files are named `.dtml-<pid>-<random>.tmp` (short
//!   whatever the target's name, see [`crate::atomic`]); those of processes
//!   that are gone are removed when a folder is claimed.
//!
//! The standard library's file locks do the locking (no crate needed since
//! Rust 1.89).

use crate::error::{Result, VolumeError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a locked folder.
pub const LOCK_FILE: &str = ".dtml-lock";

/// A kind of folder dtml writes, recognised by its own records.
#[derive(Clone, Copy)]
pub struct Kind {
    /// What the folder is, for messages ("prepared cache").
    pub name: &'static str,
    /// Files (relative paths) that mark it as dtml's; any one recognised
    /// is enough (a run killed before its first export has a checkpoint
    /// but no `run.json` yet).
    pub records: &'static [&'static str],
    /// Whether a record file is one dtml wrote (the caller parses it).
    pub recognise: fn(&Path) -> bool,
    /// Top-level entries such a folder may hold besides its records, when
    /// it may hold only those (a cache); `None` lets it hold anything.
    pub only: Option<&'static [&'static str]>,
}

/// Whether a lock is held alone or with others of the same job (the shards
/// of one prediction job share their folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

/// An output folder checked by [`open`], not locked yet.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    created: bool,
}

/// A held lock on a folder; released when dropped. A folder this process
/// created and left holding only its lock is removed on drop unless
/// [`FolderLock::keep`] was called, so a command that fails early leaves no
/// empty output behind.
#[derive(Debug)]
pub struct FolderLock {
    dir: PathBuf,
    file: Option<File>,
    created: bool,
}

impl FolderLock {
    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps a folder this process created even if it ends up empty.
    pub fn keep(&mut self) {
        self.created = false;
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Cleaned while still locked, so no one locks a file being removed.
        let file = self.file.take();
        if self.created {
            let only_lock = std::fs::read_dir(&self.dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .all(|e| e.file_name() == LOCK_FILE || e.file_name() == CLAIM_FILE)
                })
                .unwrap_or(false);
            if only_lock {
                let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
                let _ = std::fs::remove_file(self.dir.join(CLAIM_FILE));
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
        drop(file);
    }
}

/// Claims `dir` as the output of a command of `kind` ([`open`]), takes its
/// lock in `mode` and removes debris of interrupted runs.
pub fn claim(
    dir: &Path,
    kind: &Kind,
    inputs: &[&Path],
    mode: LockMode,
    flag: &str,
) -> Result<FolderLock> {
    open(dir, kind, inputs, flag)?.lock(mode)
}

/// Checks `dir` may take outputs of `kind`: it stands apart from `inputs`
/// and is new, empty or that kind's own output; creates it. `flag` names
/// the option that chose it (`--out`).
pub fn open(dir: &Path, kind: &Kind, inputs: &[&Path], flag: &str) -> Result<Folder> {
    check_apart(dir, inputs, flag)?;
    let created = match std::fs::symlink_metadata(dir) {
        Ok(_) if !dir.is_dir() => {
            return Err(VolumeError::invalid(
                dir,
                format!("{flag} must be a folder, and this is a file"),
            ));
        }
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_new_dir(dir)?,
        Err(e) => return Err(VolumeError::io(dir, e)),
    };
    check_owned(dir, kind, flag)?;
    Ok(Folder {
        dir: dir.to_path_buf(),
        created,
    })
}

impl Folder {
    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the folder's lock in `mode` at once, or says who holds it;
    /// then, alone in the folder, removes debris of processes that are
    /// gone (never while sharing it: a sibling shard on another machine
    /// has no pid here).
    pub fn lock(&self, mode: LockMode) -> Result<FolderLock> {
        let file = lock_file(&self.dir, LOCK_FILE, mode)?;
        if mode == LockMode::Exclusive {
            remove_debris(&self.dir);
        }
        Ok(FolderLock {
            dir: self.dir.clone(),
            file: Some(file),
            created: self.created,
        })
    }

    /// Runs `f` while holding the folder's claim lock, waiting for it:
    /// a short critical section in which jobs sharing a folder (shards)
    /// check and write its record one at a time.
    pub fn while_claiming<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let path = self.dir.join(CLAIM_FILE);
        let file = open_lock_file(&path, true).map_err(|e| VolumeError::io(&path, e))?;
        match file.lock() {
            Ok(()) => {}
            Err(e) if locking_unsupported(&e) => warn_unlocked(&path, &e),
            Err(e) => return Err(VolumeError::io(&path, e)),
        }
        let out = f();
        drop(file);
        Ok(out)
    }
}

/// The file that serialises claims of a shared folder ([`Folder::while_claiming`]).
pub const CLAIM_FILE: &str = ".dtml-claim";

/// Creates `dir` (and its parents), reporting whether this call made it.
fn create_new_dir(dir: &Path) -> Result<bool> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| VolumeError::io(parent, e))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(VolumeError::io(dir, e)),
    }
}

/// Refuses `dir` unless it is empty (but for dtml's hidden files) or holds
/// `kind`'s record that [`Kind::recognise`] accepts, and, for kinds with a
/// fixed content, nothing else.
pub fn check_owned(dir: &Path, kind: &Kind, flag: &str) -> Result<()> {
    let mut foreign = Vec::new();
    let mut any = false;
    for e in std::fs::read_dir(dir).map_err(|e| VolumeError::io(dir, e))? {
        let name = e
            .map_err(|e| VolumeError::io(dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == LOCK_FILE || name == CLAIM_FILE || is_temporary(&name) {
            continue;
        }
        any = true;
        let top_level_record = kind.records.iter().any(|r| {
            Path::new(r)
                .components()
                .next()
                .is_some_and(|c| c.as_os_str() == name.as_str())
        });
        if !top_level_record && kind.only.is_some_and(|only| !only.contains(&name.as_str())) {
            foreign.push(name);
        }
    }
    if !any {
        return Ok(());
    }
    let recognised = kind.records.iter().any(|r| {
        let record = dir.join(r);
        record.is_file() && (kind.recognise)(&record)
    });
    if !recognised {
        return Err(VolumeError::invalid(
            dir,
            format!(
                "{flag} is not empty and is not a dtml {} (no valid {}); dtml writes only into new or empty folders or its own outputs: choose another folder",
                kind.name,
                kind.records.join(" or ")
            ),
        ));
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(VolumeError::invalid(
            dir,
            format!(
                "{flag} is a dtml {} but also holds files dtml did not write ({}); refusing to replace them: move them away or choose another folder",
                kind.name,
                foreign.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `path` resolved as far as it exists (symlinks followed), the rest
/// appended, `..` and `.` folded: where a write to it would land.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// Checks a single output file (`dtml distance --out`): apart from the
/// inputs, and if it exists, a regular file that `ours` recognises as
/// written by dtml; anything else is refused rather than replaced.
pub fn check_file(out: &Path, inputs: &[&Path], flag: &str, ours: fn(&Path) -> bool) -> Result<()> {
    check_apart(out, inputs, flag)?;
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError::io(out, e)),
        Ok(meta) if !meta.is_file() => Err(VolumeError::invalid(
            out,
            format!("{flag} exists and is not a regular file; choose a new file name"),
        )),
        Ok(_) if ours(out) => Ok(()),
        Ok(_) => Err(VolumeError::invalid(
            out,
            format!(
                "{flag} exists and dtml did not write it; dtml replaces only its own files: choose a new file name"
            ),
        )),
    }
}

/// Refuses an output `out` that is, contains or lies inside one of
/// `inputs` (files or folders), symlinks followed.
pub fn check_apart(out: &Path, inputs: &[&Path], flag: &str) -> Result<()> {
    let out_real = resolved(out);
    for input in inputs {
        let in_real = resolved(input);
        let why = if out_real == in_real {
            "is"
        } else if in_real.starts_with(&out_real) {
            "contains"
        } else if out_real.starts_with(&in_real) {
            "lies inside"
        } else {
            continue;
        };
        return Err(VolumeError::invalid(
            out,
            format!(
                "{flag} {why} the input {} (resolved: {}); dtml never writes where it reads: choose a folder outside the inputs",
                input.display(),
                in_real.display()
            ),
        ));
    }
    Ok(())
}

/// Opens `<dir>/<name>` and takes its lock in `mode` at once, or says
/// who holds it; writes this process's pid into it for that message.
fn lock_file(dir: &Path, name: &str, mode: LockMode) -> Result<File> {
    let path = dir.join(name);
    let mut file = open_lock_file(&path, true).map_err(|e| VolumeError::io(&path, e))?;
    let taken = match mode {
        LockMode::Exclusive => file.try_lock(),
        LockMode::Shared => file.try_lock_shared(),
    };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(VolumeError::invalid(
                dir,
                format!(
                    "is in use by another dtml process ({}); wait for it to finish or choose another folder",
                    holders(&path)
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) if locking_unsupported(&e) => {
            warn_unlocked(&path, &e);
            return Ok(file);
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(VolumeError::io(&path, e)),
    }
    // The one exclusive holder, or every sharer (appended).
    let me = format!("{}\n", std::process::id());
    let written = match mode {
        LockMode::Exclusive => file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(me.as_bytes())),
        LockMode::Shared => file
            .seek(std::io::SeekFrom::End(0))
            .and_then(|_| file.write_all(me.as_bytes())),
    };
    written.map_err(|e| VolumeError::io(&path, e))?;
    Ok(file)
}

/// Takes a shared lock on a folder the command only reads (a cache while
/// it trains), so a `prepare` cannot replace it meanwhile. Only folders
/// dtml writes carry a lock file; other folders (a user's dataset) are
/// read unlocked and nothing is created in them.
pub fn lock_input(dir: &Path) -> Result<Option<FolderLock>> {
    let path = dir.join(LOCK_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    // Writable where possible, so the pid can go into the file.
    let file = match open_lock_file(&path, false) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("{}: read unlocked ({e})", dir.display());
            return Ok(None);
        }
    };
    let mut file = file;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file
                .seek(std::io::SeekFrom::End(0))
                .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
            Ok(Some(FolderLock {
                dir: dir.to_path_buf(),
                file: Some(file),
                created: false,
            }))
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(VolumeError::invalid(
            dir,
            format!(
                "is in use by another dtml process ({}); wait for it to finish",
                holders(&path)
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) if locking_unsupported(&e) => {
            warn_unlocked(&path, &e);
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(VolumeError::io(&path, e)),
    }
}

/// Opens (creating it when `create`) a lock file, never through a
/// symlink: a hostile folder's `.dtml-lock -> ~/.bashrc` must not make
/// dtml truncate or append to that file.
fn open_lock_file(path: &Path, create: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(create)
        .truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("the lock file is not a regular file"));
    }
    Ok(file)
}

/// File systems without `flock` (some network and FUSE mounts) answer
/// ENOSYS, EOPNOTSUPP or ENOLCK: there dtml runs unlocked, with a warning.
fn locking_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || e.raw_os_error()
            .is_some_and(|c| c == libc::ENOLCK || c == libc::ENOSYS || c == libc::EOPNOTSUPP)
}

fn warn_unlocked(path: &Path, e: &std::io::Error) {
    tracing::warn!(
        "{}: this file system cannot lock files ({e}); going on unlocked, so do not start a second dtml on this folder meanwhile",
        path.display()
    );
}

/// "pid 123" / "pids 123, 456" of the lock file's live holders.
fn holders(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let pids: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|p| p.parse::<u32>().is_ok_and(alive))
        .collect();
    match pids.as_slice() {
        [] => "pid unknown".into(),
        [one] => format!("pid {one}"),
        many => format!("pids {}", many.join(", ")),
    }
}

/// Whether process `pid` still runs (Linux: it has a `/proc` entry;
/// elsewhere assumed).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Prefix of the temporary files [`crate::atomic`] writes.
pub(crate) const TEMP_PREFIX: &str = ".dtml-";
/// Suffix of those files.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// `.dtml-<pid>-<random>.tmp`, a temporary file of process `<pid>`.
fn is_temporary(name: &str) -> bool {
    temporary_owner(name).is_some()
}

fn temporary_owner(name: &str) -> Option<u32> {
    let inner = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    inner.split('-').next()?.parse().ok()
}

/// Removes temporary files and folders of processes that are gone.
pub fn remove_debris(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temporary_owner(&name) else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let path = e.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::debug!("removed {} left by process {pid}", path.display()),
            Err(err) => tracing::warn!("cannot remove {}: {err}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(p: &Path) -> bool {
        std::fs::read_to_string(p).is_ok_and(|t| t.trim() == "ours")
    }

    const KIND: Kind = Kind {
        name: "test output",
        records: &["record.txt"],
        recognise: parses,
        only: None,
    };
    const FIXED: Kind = Kind {
        only: Some(&["cases"]),
        ..KIND
    };

    #[test]
    fn new_empty_and_own_folders_are_claimed_foreign_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        let lock = claim(&out, &KIND, &[], LockMode::Exclusive, "--out").unwrap();
        assert!(out.join(LOCK_FILE).is_file());
        drop(lock);
        assert!(!out.exists(), "a created folder left empty is removed");

        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let e = claim(&out, &KIND, &[], LockMode::Exclusive, "--out")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a dtml test output"), "{e}");
        std::fs::write(out.join("record.txt"), "forged").unwrap();
        assert!(claim(&out, &KIND, &[], LockMode::Exclusive, "--out").is_err());
        std::fs::write(out.join("record.txt"), "ours").unwrap();
        claim(&out, &KIND, &[], LockMode::Exclusive, "--out").unwrap();
        let e = claim(&out, &FIXED, &[], LockMode::Exclusive, "--out")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notes.txt") && e.contains("did not write"),
            "{e}"
        );
        assert!(out.join("notes.txt").is_file());
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path(), &KIND, &[], LockMode::Exclusive, "--out").unwrap();
        let e = claim(dir.path(), &KIND, &[], LockMode::Exclusive, "--out")
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(lock_input(dir.path()).is_err());
        // A lock file that is a symlink is never opened through.
        let other = tempfile::tempdir().unwrap();
        let victim = other.path().join("bashrc");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, other.path().join(LOCK_FILE)).unwrap();
        assert!(claim(other.path(), &KIND, &[], LockMode::Exclusive, "--out").is_err());
        assert!(lock_input(other.path()).is_err() || lock_input(other.path()).unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        drop(held);
        let a = claim(dir.path(), &KIND, &[], LockMode::Shared, "--out").unwrap();
        let _b = claim(dir.path(), &KIND, &[], LockMode::Shared, "--out").unwrap();
        assert!(claim(dir.path(), &KIND, &[], LockMode::Exclusive, "--out").is_err());
        drop(a);
    }

    #[test]
    fn outputs_on_inputs_are_refused_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("labelsTs")).unwrap();
        std::os::unix::fs::symlink(data.join("labelsTs"), dir.path().join("link")).unwrap();
        for (out, why) in [
            (data.join("labelsTs"), "lies inside"),
            (dir.path().join("link"), "lies inside"),
            (dir.path().join("link/../.."), "contains"),
            (data.clone(), "is"),
        ] {
            let e = check_apart(&out, &[&data], "--out")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{out:?}: {e}");
        }
        check_apart(&dir.path().join("eval"), &[&data], "--out").unwrap();
    }

    #[test]
    fn debris_of_dead_processes_goes() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a user process; our own pid is alive.
        let dead = dir.path().join(".dtml-0-abc.tmp");
        let ours = dir
            .path()
            .join(format!(".dtml-{}-abc.tmp", std::process::id()));
        std::fs::write(&dead, "x").unwrap();
        std::fs::write(&ours, "x").unwrap();
        remove_debris(dir.path());
        assert!(!dead.exists() && ours.exists());
    }
}

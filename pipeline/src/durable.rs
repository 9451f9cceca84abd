//! Durable file operations, for everything that publishes files by renaming them
//! (run folders, the gate's outputs) and for the audit log:
//!
//! - `sync_tree` / `sync_dir`: files and folders reach the disk before the rename that
//!   publishes them, and the rename itself reaches it after;
//! - `Owned`: a folder owned through an exclusive `flock` on a lock file inside it, held
//!   for the owner's life. The kernel drops the lock when the owner dies however it
//!   dies, in any PID namespace, and NFS carries it between hosts: only folders whose
//!   owner is truly gone are removed (a PID in a folder name proves nothing across
//!   containers);
//! - `io_at`: an I/O error that names its path (and says so plainly on a full disk).

use crate::error::Error;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file inside an owned folder.
pub const LOCK_FILE: &str = ".lock";

/// Turn an I/O error on `path` into an error naming it (exit 1).
pub fn io_at(path: &Path, doing: &str) -> impl FnOnce(io::Error) -> Error {
    let path = path.display().to_string();
    let doing = doing.to_string();
    move |e| {
        if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
            Error::failed(format!(
                "{doing} {path}: no space left on the device (or quota exceeded); free space there and try again"
            ))
            .with_source(e)
        } else {
            Error::failed(format!("{doing} {path}: {e}")).with_source(e)
        }
    }
}

/// Where a file is staged before it is renamed into place: a hidden sibling named
/// for this process (`.<name>.tmp-<pid>`, what `hidden_siblings(path, "tmp")` finds).
pub fn staging_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write a whole file so that readers see the old one or the new one, never a part:
/// a hidden sibling, synced, renamed over it.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = staging_name(path);
    let written = File::create(&tmp)
        .and_then(|mut f| {
            io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        })
        .map_err(io_at(&tmp, "writing"));
    if let Err(e) = written
        .and_then(|_| std::fs::rename(&tmp, path).map_err(io_at(path, "renaming into place")))
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Flush a folder's entries (creations, renames, removals in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir, "syncing folder"))
}

/// Flush every file and folder under `path` (or the file `path`) to disk.
pub fn sync_tree(path: &Path) -> Result<(), Error> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_at(path, "reading folder"))? {
            sync_tree(&entry.map_err(io_at(path, "reading folder"))?.path())?;
        }
        sync_dir(path)
    } else {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io_at(path, "syncing file"))
    }
}

/// Exclusive use of a file or folder that a command replaces, for the command's life:
/// an exclusive lock on `.<name>.lock` beside it. Holding it, the command may clean
/// up what killed writers of the same target left (`hidden_siblings`).
pub struct TargetLock {
    _lock: File,
}

pub fn lock_target(target: &Path) -> Result<TargetLock, Error> {
    try_lock_target(target)?.ok_or_else(|| {
        Error::failed(format!(
            "{}: another riskstrat command is writing it now; wait for it to finish",
            target.display()
        ))
    })
}

/// [`lock_target`], or `None` while another process holds it.
pub fn try_lock_target(target: &Path) -> Result<Option<TargetLock>, Error> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let path = target.with_file_name(format!(".{name}.lock"));
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_at(&path, "creating the lock file"))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(TargetLock { _lock: lock })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(io_at(&path, "locking")(e)),
    }
}

/// Entries beside `target` named `.<name>.<tag>-...` or `.<name>.<tag>` (the hidden
/// copies a writer of `target` makes).
pub fn hidden_siblings(target: &Path, tag: &str) -> Vec<PathBuf> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.{tag}");
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == prefix || n.starts_with(&format!("{prefix}-"))
        })
        .map(|e| e.path())
        .collect()
}

/// `path` made absolute, what exists of it resolved (links, `..`) and the rest
/// normalised by its words (`..` takes back the one before, `.` is dropped), so that a
/// path not yet made compares as it will resolve once made (regression:
/// `--quarantine new/../keys` passed as not holding the keys, and replaced them).
pub fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let path = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().unwrap_or_default().join(path),
    };
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while existing.canonicalize().is_err() {
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    for c in rest.into_iter().rev() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Remove a file or a folder.
pub fn remove(p: &Path) -> io::Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// Make a file or a folder (and what it holds) its owner's only: 0600 files, 0700
/// folders. For everything that holds identifiers.
pub fn owner_only(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_at(path, "restricting the permissions of"))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path).map_err(io_at(path, "reading folder"))? {
            owner_only(&e.map_err(io_at(path, "reading folder"))?.path())?;
        }
    }
    Ok(())
}

/// Create a folder (and any missing parents) its owner's only, 0700.
pub fn create_private_dir(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_at(path, "creating folder"))?;
    owner_only(path)
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// A folder this process owns, through an exclusive lock on its lock file.
pub struct Owned {
    dir: PathBuf,
    _lock: File,
}

impl Owned {
    /// Create `dir` and own it. `Ok(None)` when the name is taken (or a cleaner took
    /// it during set-up): choose another. Data may go in only once this returns.
    pub fn create(dir: &Path) -> io::Result<Option<Self>> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e),
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            // A cleaner saw the empty folder and locked it first.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if lock.try_lock().is_err() {
            return Ok(None);
        }
        // Still the file at that path (a cleaner may have taken the folder away between
        // our create and our lock): from here no cleaner can get the lock.
        match std::fs::metadata(&lock_path) {
            Ok(m) if same_file(&m, &lock.metadata()?) => Ok(Some(Self {
                dir: dir.to_path_buf(),
                _lock: lock,
            })),
            _ => Ok(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the folder is now, after its owner renamed it.
    pub fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }
}

/// Remove `dir` if its owner is gone: only while holding its lock, after moving it
/// out of the way under a `trash` name (so a half-finished removal never looks like
/// a folder someone owns). Returns whether it was removed.
pub fn remove_if_abandoned(dir: &Path, trash: &Path) -> bool {
    let lock_path = dir.join(LOCK_FILE);
    // No lock file: an owner between creating the folder and its lock, or a killed
    // one. Creating the lock ourselves makes the owner's set-up fail (it retries).
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path);
    let Ok(lock) = lock else { return false };
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return false,
        Err(TryLockError::Error(_)) => return false,
    }
    let still = match (std::fs::metadata(&lock_path), lock.metadata()) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    };
    if !still || std::fs::rename(dir, trash).is_err() {
        return false;
    }
    drop(lock);
    let _ = std::fs::remove_dir_all(trash);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rs-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_owned_folder_is_not_removed_while_its_owner_lives() {
        let d = scratch("owned");
        let a = d.join("a");
        let owned = Owned::create(&a).unwrap().unwrap();
        std::fs::write(a.join("data"), b"x").unwrap();
        assert!(Owned::create(&a).unwrap().is_none(), "a name is taken once");
        assert!(!remove_if_abandoned(&a, &d.join("trash")));
        assert!(a.join("data").exists());
        drop(owned);
        assert!(remove_if_abandoned(&a, &d.join("trash")));
        assert!(!a.exists() && !d.join("trash").exists());
    }

    #[test]
    fn a_folder_without_a_lock_file_is_abandoned() {
        let d = scratch("nolock");
        let a = d.join("a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("data"), b"x").unwrap();
        assert!(remove_if_abandoned(&a, &d.join("trash")));
        assert!(!a.exists());
    }

    #[test]
    fn full_disk_names_the_path() {
        let e = io_at(Path::new("/x/y.parquet"), "writing")(io::Error::from(
            io::ErrorKind::StorageFull,
        ));
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.message.contains("/x/y.parquet") && e.message.contains("no space left"),
            "{}",
            e.message
        );
    }

    #[test]
    fn io_errors_keep_their_cause_for_callers_to_decide_by_kind() {
        for kind in [io::ErrorKind::StorageFull, io::ErrorKind::PermissionDenied] {
            let e = io_at(Path::new("/x"), "writing")(io::Error::from(kind));
            let cause = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .expect("the io::Error is the source");
            assert_eq!(cause.kind(), kind);
        }
    }
}

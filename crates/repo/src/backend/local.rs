//! The local-directory backend: a repository as plain files under one root directory.
//!
//! This module owns the mapping from object names to paths, and the file-system work that
//! makes [`Backend::put`] atomic and durable. It is the embedded default region, the demo's
//! storage and the reference implementation the other backends are measured against.
//!
//! # Layout
//!
//! The object `data/ab/abcd…` is the file `<root>/data/ab/abcd…`. Directories are created on
//! demand and never removed: an empty `data/ab/` costs nothing, and removing it could race a
//! concurrent `put` that has just created it.
//!
//! # Atomic, durable `put`
//!
//! A `put` writes a hidden temporary file (`.tmp-<random>`) in the destination directory,
//! `fdatasync`s it (data and length; a pack's pages then leave the page cache, see
//! `drop_cached`), `rename`s it over the final name and `fsync`s the directory (and any directory
//! it had to create, in its parent). `rename` within one directory is atomic on POSIX file
//! systems, so a reader sees the old object, or the new one, never a prefix. A crash before the
//! rename leaves only a stale temporary file, which [`LocalBackend::list`](Backend::list)
//! ignores and [`LocalBackend::clean_temp_files`] removes when repository maintenance calls it
//! (nothing removes them on its own: a `put` never cleans up after another).
//!
//! # Names
//!
//! A corrupt or malicious listing (an index naming `../../etc/passwd`) must never make lifeboat
//! read or write outside the root, so every name is checked by [`validate_object_name`] before
//! it touches the file system: no empty, absolute, `.`/`..` or empty segments, no backslash or
//! NUL, and no segment starting with the temporary-file marker. A rejected name is a permanent
//! error, never `NotFound`. What is *inside* the root is trusted: a symlink placed there by the
//! administrator (say `data` → a bigger disk) is followed by every operation, `list` included
//! (which guards against symlink loops). Unix only: durability relies on `fsync` of
//! directories.
//!
//! # Errors
//!
//! `NotFound` maps to [`BackendError::NotFound`]; permission, full disk, read-only file system
//! and invalid input are permanent (retrying cannot help); everything else is transient.
//! The root is never created implicitly (only by [`LocalBackend::create`]): if a repository's
//! disk is not mounted, writing into the empty mount point would silently fork the repository,
//! so a missing root is a permanent error for `put` and `list`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use super::{Backend, BackendError, BackendResult, ObjectInfo};

/// Prefix of the hidden temporary files a `put` writes before renaming into place.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Why an object name is unacceptable, or `Ok` when it is safe to map onto a path.
///
/// Shared by every backend that stores names as paths (and by [`super::MemoryBackend`], so that
/// fast tests reject the same names the local backend would).
pub fn validate_object_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("object name is empty");
    }
    if name.starts_with('/') {
        return Err("object name is absolute");
    }
    if name.contains('\\') {
        return Err("object name contains a backslash");
    }
    if name.contains('\0') {
        return Err("object name contains NUL");
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err("object name has an empty segment"),
            "." | ".." => return Err("object name has a '.' or '..' segment"),
            s if s.starts_with(TEMP_PREFIX) => {
                return Err("object name segment uses the reserved temporary-file prefix")
            }
            _ => {}
        }
    }
    Ok(())
}

/// A repository stored as files under `root`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: Arc<PathBuf>,
}

impl LocalBackend {
    /// A backend over an existing directory. Nothing is touched until the first operation;
    /// operations fail permanently if `root` does not exist then.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: Arc::new(root.into()),
        }
    }

    /// Create `root` (and its parents) if missing, then return a backend over it. Used by
    /// `lifeboat init`; everything else should use [`LocalBackend::new`] so that an unmounted
    /// disk is an error rather than a new, empty repository.
    pub fn create(root: impl Into<PathBuf>) -> BackendResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| map_io("create", &root.display().to_string(), e))?;
        Ok(LocalBackend::new(root))
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remove temporary files left by `put`s that crashed before their rename, if their last
    /// modification is older than `older_than` (so a `put` in progress is never disturbed).
    /// Returns how many were removed.
    pub async fn clean_temp_files(&self, older_than: Duration) -> BackendResult<usize> {
        let root = self.root.clone();
        let result = blocking("clean", "", move || {
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut removed = 0;
            // Same walk as `list`: follows symlinks, each directory once.
            let mut visited = HashSet::new();
            let mut stack = vec![root.to_path_buf()];
            if !root.is_dir() {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            while let Some(dir) = stack.pop() {
                let entries = match fs::metadata(&dir).and_then(|meta| {
                    let first_visit = visited.insert((meta.dev(), meta.ino()));
                    first_visit.then(|| fs::read_dir(&dir)).transpose()
                }) {
                    Ok(Some(entries)) => entries,
                    Ok(None) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let path = entry?.path();
                    let meta = match fs::metadata(&path) {
                        Ok(meta) => meta,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // just renamed
                        Err(e) => return Err(e),
                    };
                    let is_temp = path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
                    if meta.is_dir() {
                        stack.push(path);
                    } else if meta.is_file() && is_temp && meta.modified()? < cutoff {
                        match fs::remove_file(&path) {
                            Ok(()) => removed += 1,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await;
        match result {
            Err(BackendError::NotFound(_)) => Err(self.root_missing("clean", "")),
            other => other,
        }
    }

    /// The path of a validated object name.
    fn path_of(&self, op: &'static str, name: &str) -> BackendResult<PathBuf> {
        validate_object_name(name).map_err(|why| BackendError::permanent(op, name, why))?;
        Ok(self.root.join(name))
    }

    fn root_missing(&self, op: &'static str, name: &str) -> BackendError {
        BackendError::permanent(
            op,
            name,
            format!(
                "repository root {} does not exist (disk not mounted?)",
                self.root.display()
            ),
        )
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        let path = self.path_of("put", name)?;
        let root = self.root.clone();
        let result = blocking("put", name, move || put_file(&root, &path, &data)).await;
        match result {
            // `create_dirs` never creates the root, so NotFound means the root is missing
            // (or a directory was removed under us by something outside lifeboat).
            Err(BackendError::NotFound(_)) => Err(self.root_missing("put", name)),
            other => other,
        }
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        let path = self.path_of("get", name)?;
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(BackendError::permanent(
                    "get",
                    name,
                    format!("invalid range {}..{}", r.start, r.end),
                ));
            }
        }
        blocking("get", name, move || {
            read_file(&path, range).map_err(absent_as_not_found)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let owned = prefix.to_string();
        // `list_files` treats every missing subdirectory as "no objects"; NotFound can only mean
        // the root itself is gone, and an unmounted repository must not look empty.
        match blocking("list", prefix, move || list_files(&root, &owned)).await {
            Err(BackendError::NotFound(_)) => Err(self.root_missing("list", prefix)),
            other => other,
        }
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        let path = self.path_of("delete", name)?;
        match blocking("delete", name, move || {
            fs::remove_file(&path).map_err(absent_as_not_found)
        })
        .await
        {
            Err(BackendError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        let path = self.path_of("head", name)?;
        blocking("head", name, move || {
            let meta = fs::metadata(&path).map_err(absent_as_not_found)?;
            if meta.is_file() {
                Ok(meta.len())
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn clean_temp(&self, older_than: Duration) -> BackendResult<usize> {
        self.clean_temp_files(older_than).await
    }
}

/// Run file-system work off the async threads, mapping its error for `op` on `name`.
///
/// If the calling future is dropped the work still runs to completion; for `put` that means
/// the object appears whole or not at all, never half-written.
async fn blocking<T, F>(op: &'static str, name: &str, work: F) -> BackendResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| map_io(op, name, e)),
        Err(join) => Err(BackendError::permanent(
            op,
            name,
            format!("file-system task failed: {join}"),
        )),
    }
}

/// Classify an `io::Error` by whether retrying can help.
fn map_io(op: &'static str, name: &str, err: io::Error) -> BackendError {
    use io::ErrorKind::*;
    match err.kind() {
        NotFound => BackendError::NotFound(name.to_string()),
        // Full disk or quota, read-only mount, bad permissions, or a name that collides with a
        // directory (`put("data")` while `data/` exists): the same call will fail again.
        PermissionDenied | StorageFull | QuotaExceeded | ReadOnlyFilesystem | InvalidInput
        | InvalidFilename | FileTooLarge | NotADirectory | IsADirectory | DirectoryNotEmpty => {
            BackendError::permanent(op, name, err)
        }
        _ => BackendError::transient(op, name, err),
    }
}

/// For reads and deletes: a path that is a directory (`data`), or that runs through a file
/// (`config/x`), names no object, so it is `NotFound` rather than an I/O failure.
fn absent_as_not_found(err: io::Error) -> io::Error {
    match err.kind() {
        io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
            io::Error::from(io::ErrorKind::NotFound)
        }
        _ => err,
    }
}

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover temp file is invisible and `clean_temp_files` removes it.
            let _ = fs::remove_file(self.path);
        }
    }
}

fn put_file(root: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(root);
    create_dirs(root, dir)?;

    let suffix: u64 = rand::thread_rng().gen();
    let tmp = dir.join(format!("{TEMP_PREFIX}{suffix:016x}"));
    let mut guard = TempGuard {
        path: &tmp,
        armed: true,
    };
    let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    file.write_all(data)?;
    // The data and the length it needs to be read back; the rename and the directory sync
    // below make the name durable.
    file.sync_data()?;
    if data.len() >= DROP_CACHE_FROM {
        drop_cached(&file);
    }
    drop(file);

    fs::rename(&tmp, path)?;
    guard.armed = false;
    sync_dir(dir)
}

/// Objects at least this large (packs) leave the page cache once durable: see [`drop_cached`].
const DROP_CACHE_FROM: usize = 1 << 20;

/// Tell the kernel that the (synced, hence clean) pages of `file` will not be read soon.
/// A backup writes each pack once per region and reads none back, so keeping them cached
/// only grows the page cache: the next pack then lands in newly touched memory, which costs
/// more than memory the kernel just freed (in VMs whose free memory returns to the host,
/// much more). Advice only: failure changes nothing.
fn drop_cached(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Create `dir` and any missing ancestors below `root` (never `root` itself), making each new
/// entry durable by syncing its parent directory.
fn create_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = dir;
    while current != root && !current.is_dir() {
        missing.push(current);
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
    for new_dir in missing.into_iter().rev() {
        match fs::create_dir(new_dir) {
            Ok(()) => sync_dir(new_dir.parent().unwrap_or(root))?,
            // Another put created it concurrently; a file in the way fails when we write into it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_file(path: &Path, range: Option<Range<u64>>) -> io::Result<Bytes> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    // Objects are replaced by rename, so this open file is one complete version of the object
    // and its length cannot change under us.
    let len = meta.len();
    let (start, end) = match range {
        Some(r) => (r.start.min(len), r.end.min(len)),
        None => (0, len),
    };
    let want = usize::try_from(end - start)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large for memory"))?;
    let mut buf = vec![0u8; want];
    if want > 0 {
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
    }
    Ok(Bytes::from(buf))
}

/// Walk only the directory the prefix pins down (`data/ab/` for `data/ab/cd`), descending
/// only into subdirectories that can hold matching names.
fn list_files(root: &Path, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
    if !root.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    // No valid object name lives under an invalid directory part (`../`, `a//`), so nothing
    // matches; answering without touching the file system also keeps us inside the root.
    if !dir_part.is_empty() && validate_object_name(&dir_part[..dir_part.len() - 1]).is_err() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    // Directories already walked, by (device, inode): a symlink loop must not loop the walk.
    let mut visited = HashSet::new();
    let mut stack = vec![(root.join(dir_part), dir_part.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        match fs::metadata(&dir) {
            Ok(meta) if !visited.insert((meta.dev(), meta.ino())) => continue,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %entry.path().display(), "skipping non-UTF-8 file name in repository");
                continue;
            };
            let name = format!("{rel}{file_name}");
            if validate_object_name(&name).is_err() {
                continue; // temporary files, and anything `get` would refuse anyway
            }
            // Follow symlinks, as `get` and `put` do (see the module doc). An entry deleted
            // since `read_dir`, or a dangling link, is simply not listed.
            let meta = match fs::metadata(entry.path()) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                let sub = format!("{name}/");
                let relevant = sub.starts_with(prefix) || prefix.starts_with(&sub);
                if relevant && !visited.contains(&(meta.dev(), meta.ino())) {
                    stack.push((entry.path(), sub));
                }
            } else if meta.is_file() && name.starts_with(prefix) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                out.push(ObjectInfo {
                    name,
                    size: meta.len(),
                    modified,
                });
            }
        }
    }
    Ok(out)
}

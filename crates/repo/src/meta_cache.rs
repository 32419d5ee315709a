//! The local metadata cache: index files and manifests as stored, kept on this host so the
//! next command does not fetch them again.
//!
//! Both are immutable and named by a hash of their stored bytes (index files by BLAKE3 of
//! the whole object, manifests by the [`IdRule`](crate::id::IdRule) of their format), so a
//! cached copy is either exactly the object or detectably wrong. Layout, under the
//! directory the caller chooses (the CLI uses `<cache_dir>/<repository id>/meta`):
//!
//! ```text
//! index/<64 hex>       the sealed index file, byte for byte as fetched
//! snapshots/<64 hex>   the age-encrypted manifest, byte for byte as fetched
//! ```
//!
//! - **Verified on use**: every read checks the bytes against the name; an entry that fails
//!   (truncated, corrupt) is deleted and the object fetched again.
//! - **Never plaintext**: entries are the encrypted objects; nothing decrypted is written.
//! - **Atomic**: written to a temporary file in the same directory, then renamed.
//! - **Safe to delete**: a missing entry is fetched; the cache is only ever a shortcut.
//! - **Pruned**: after a listing that every region answered, entries the regions no longer
//!   list (a forgotten snapshot, an index file prune consolidated) are removed.
//!
//! Cache trouble (an unwritable directory, a full disk) is a warning, never an error: the
//! objects are read from the regions as if there were no cache.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::id::check_stored_id;
use crate::Id;

/// The prefixes the cache holds.
const KINDS: [&str; 2] = ["index", "snapshots"];

/// Hits, misses and dropped entries of one cache, for logs and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries that failed their hash check and were deleted.
    pub dropped: AtomicU64,
    pub pruned: AtomicU64,
}

/// A metadata cache in one directory.
#[derive(Debug)]
pub struct MetaCache {
    dir: PathBuf,
    pub stats: CacheStats,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl MetaCache {
    pub fn new(dir: PathBuf) -> MetaCache {
        MetaCache {
            dir,
            stats: CacheStats::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `name` (`index/<id>` or `snapshots/<id>`), with its id; `None` for any
    /// other name (the cache holds nothing else, and no name can reach outside it).
    fn path_of(&self, name: &str) -> Option<(PathBuf, Id)> {
        let (kind, hex) = name.split_once('/')?;
        if !KINDS.contains(&kind) {
            return None;
        }
        let id: Id = hex.parse().ok()?;
        Some((self.dir.join(kind).join(id.to_hex()), id))
    }

    /// The cached bytes of `name` when present and matching their id. A damaged entry is
    /// deleted (and `None` returned, so the caller fetches the object).
    pub fn get(&self, name: &str) -> Option<Bytes> {
        let (path, id) = self.path_of(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(entry = %path.display(), error = %e, "metadata cache entry unreadable; fetching the object");
                }
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if let Err(e) = check_stored_id(&bytes, &id, name) {
            tracing::warn!(entry = %path.display(), error = %e, "metadata cache entry damaged; deleted, fetching the object");
            let _ = fs::remove_file(&path);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(Bytes::from(bytes))
    }

    /// Keep `bytes` (already checked against `name` by the caller) for next time: temp
    /// file, then rename. Failure is a warning.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let Some((path, _)) = self.path_of(name) else {
            return;
        };
        if let Err(e) = write_atomic(&path, bytes) {
            tracing::warn!(entry = %path.display(), error = %e, "could not write the metadata cache; continuing without it");
        }
    }

    /// Remove the entries of `prefix` (`index/` or `snapshots/`) whose objects are not in
    /// `listed` (full object names): call only with a listing every region answered.
    pub fn retain_listed(&self, prefix: &str, listed: &HashSet<String>) {
        let kind = prefix.trim_end_matches('/');
        if !KINDS.contains(&kind) {
            return;
        }
        let Ok(dir) = fs::read_dir(self.dir.join(kind)) else {
            return;
        };
        for e in dir.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            // Temporary files of an interrupted write, and entries no region lists.
            let gone = file.starts_with('.') || !listed.contains(&format!("{kind}/{file}"));
            if gone && fs::remove_file(e.path()).is_ok() {
                self.stats.pruned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let Some(dir) = path.parent() else {
        return Err(std::io::Error::other("a cache entry outside any directory"));
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

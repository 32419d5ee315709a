//! The files cache: what each file looked like at the last successful backup of a plan, so
//! an unchanged file (same size, mtime, ctime, inode) is not read again.
//!
//! Stored on the backup host only (`<cache_dir>/<repository id>/<plan>.files`, mode 0600),
//! in a compact binary form that loads in one pass. It is a hint: an entry is used only when
//! every chunk it names is still in the index of every region being written, so a stale or
//! lost cache costs time, never correctness.
//!
//! One map serves both the last backup and this one: the walk marks the entries it reuses
//! as seen and overwrites those of files it read again; [`FilesCache::retain_seen`] then
//! drops the files that are gone, so a backup holds one cache, never an old and a new one.
//! The file on disk is replaced (temporary file, rename) only after the manifest commits.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_repo::Id;

const MAGIC: &[u8; 8] = b"LBFC0001";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub hash: [u8; 32],
    pub chunks: Vec<Id>,
    /// Reused or refreshed by the running backup (not stored: false when loaded).
    pub seen: bool,
}

#[derive(Debug, Default)]
pub struct FilesCache {
    pub entries: HashMap<Vec<u8>, CacheEntry>,
}

impl FilesCache {
    pub fn path(cache_dir: &Path, repo_id: &str, plan: &str) -> PathBuf {
        cache_dir.join(repo_id).join(format!("{plan}.files"))
    }

    /// Load the cache; a missing or unreadable cache is an empty one (with a warning).
    pub fn load(path: &Path) -> FilesCache {
        match Self::try_load(path) {
            Ok(c) => c,
            Err(e) => {
                if path.exists() {
                    tracing::warn!(cache = %path.display(), error = %format!("{e:#}"), "ignoring unreadable files cache; every file will be read");
                }
                FilesCache::default()
            }
        }
    }

    fn try_load(path: &Path) -> Result<FilesCache> {
        let mut r = BufReader::with_capacity(1 << 20, fs::File::open(path)?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        anyhow::ensure!(&magic == MAGIC, "not a files cache");
        let n = read_u64(&mut r)?;
        let mut entries = HashMap::with_capacity(n.min(1 << 24) as usize);
        for _ in 0..n {
            let plen = read_u32(&mut r)? as usize;
            anyhow::ensure!(plen < 1 << 16, "path too long");
            let mut p = vec![0u8; plen];
            r.read_exact(&mut p)?;
            let size = read_u64(&mut r)?;
            let mtime_ns = read_u64(&mut r)? as i64;
            let ctime_ns = read_u64(&mut r)? as i64;
            let inode = read_u64(&mut r)?;
            let mut hash = [0u8; 32];
            r.read_exact(&mut hash)?;
            let nchunks = read_u32(&mut r)? as usize;
            anyhow::ensure!(nchunks < 1 << 24, "too many chunks");
            let mut chunks = Vec::with_capacity(nchunks);
            for _ in 0..nchunks {
                let mut id = [0u8; 32];
                r.read_exact(&mut id)?;
                chunks.push(Id(id));
            }
            entries.insert(
                p,
                CacheEntry {
                    size,
                    mtime_ns,
                    ctime_ns,
                    inode,
                    hash,
                    chunks,
                    seen: false,
                },
            );
        }
        Ok(FilesCache { entries })
    }

    /// Drop every entry the running backup neither reused nor refreshed (files that are
    /// gone, or that could not be cached this time).
    pub fn retain_seen(&mut self) {
        self.entries.retain(|_, e| e.seen);
        self.entries.shrink_to_fit();
    }

    /// Write atomically (temp file + rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().context("cache path has no parent")?;
        fs::create_dir_all(dir).with_context(|| format!("create cache dir {}", dir.display()))?;
        let tmp = path.with_extension("files.tmp");
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(MAGIC)?;
        w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
        for (p, e) in &self.entries {
            w.write_all(&(p.len() as u32).to_le_bytes())?;
            w.write_all(p)?;
            for v in [e.size, e.mtime_ns as u64, e.ctime_ns as u64, e.inode] {
                w.write_all(&v.to_le_bytes())?;
            }
            w.write_all(&e.hash)?;
            w.write_all(&(e.chunks.len() as u32).to_le_bytes())?;
            for c in &e.chunks {
                w.write_all(&c.0)?;
            }
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))?;
        Ok(())
    }
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/plan.files");
        let mut c = FilesCache::default();
        c.entries.insert(
            b"a/b\xff".to_vec(),
            CacheEntry {
                size: 5,
                mtime_ns: -3,
                ctime_ns: 7,
                inode: 9,
                hash: [1; 32],
                chunks: vec![Id([2; 32])],
                seen: false,
            },
        );
        c.save(&p).unwrap();
        let back = FilesCache::load(&p);
        assert_eq!(back.entries, c.entries);
        fs::write(&p, b"garbage").unwrap();
        assert!(FilesCache::load(&p).entries.is_empty());
    }
}

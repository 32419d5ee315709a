//! The files cache: what each file looked like at the last successful backup of a plan, so
//! an unchanged file (same size, mtime, ctime, inode) is not read again.
//!
//! Stored on the backup host only (`<cache_dir>/<repository id>/<plan>.files`, mode 0600).
//! It is a hint: an entry is used only when every chunk it names is still in the index of
//! every region being written, so a stale or lost cache costs time, never correctness.
//!
//! Memory does not grow with the number of files: the cache is stored one record per
//! directory, with a table of the directories at the end of the file. A backup keeps only
//! that table of the last cache ([`OldCache`]) and reads a directory's record when the walk
//! enters it; the new cache ([`NewCache`]) is written as the walk finishes each directory,
//! to a temporary file renamed over the old one only after the manifest commits. A backup
//! thus streams old → new and holds, besides the two directory tables, only the entries
//! of the directories on the path being walked.
//!
//! Layout (`LBFC0002`, little-endian): magic, then directory records — entry count `u32`,
//! then per entry name (`u32` length + bytes), size, mtime ns, ctime ns, inode (`u64` each),
//! BLAKE3 (32 bytes), chunk count `u32` and the chunk ids — then the table: per directory
//! its path relative to the source root (`u32` length + bytes), record offset and length
//! (`u64`), and last the table's offset and directory count (`u64`) and `LBFCEND2`. A cache
//! in the earlier one-map layout (`LBFC0001`) is read once, whole, and rewritten in this one.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_repo::Id;

const MAGIC_V1: &[u8; 8] = b"LBFC0001";
const MAGIC: &[u8; 8] = b"LBFC0002";
const END: &[u8; 8] = b"LBFCEND2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub hash: [u8; 32],
    pub chunks: Vec<Id>,
}

/// One directory's entries, by file name.
pub type DirEntries = HashMap<Vec<u8>, CacheEntry>;

/// Where the cache of `plan` lives.
pub fn path(cache_dir: &Path, repo_id: &str, plan: &str) -> PathBuf {
    cache_dir.join(repo_id).join(format!("{plan}.files"))
}

/// The last backup's cache, read a directory at a time.
#[derive(Debug, Default)]
pub struct OldCache {
    file: Option<fs::File>,
    /// Directory path (relative, `""` for the root) → (record offset, length).
    dirs: HashMap<Vec<u8>, (u64, u64)>,
    /// A cache in the one-map layout, grouped by directory (read whole, once).
    v1: Option<HashMap<Vec<u8>, DirEntries>>,
    path: PathBuf,
    warned: std::cell::Cell<bool>,
}

impl OldCache {
    /// Open the cache; a missing or unreadable cache is an empty one (with a warning).
    pub fn open(path: &Path) -> OldCache {
        match Self::try_open(path) {
            Ok(c) => c,
            Err(e) => {
                if path.exists() {
                    tracing::warn!(cache = %path.display(), error = %format!("{e:#}"), "ignoring unreadable files cache; every file will be read");
                }
                OldCache::default()
            }
        }
    }

    fn try_open(path: &Path) -> Result<OldCache> {
        let mut f = fs::File::open(path)?;
        let mut magic = [0u8; 8];
        f.read_exact(&mut magic)?;
        if &magic == MAGIC_V1 {
            return Ok(OldCache {
                v1: Some(load_v1(BufReader::with_capacity(1 << 20, f))?),
                path: path.to_path_buf(),
                ..OldCache::default()
            });
        }
        anyhow::ensure!(&magic == MAGIC, "not a files cache");
        let len = f.metadata()?.len();
        anyhow::ensure!(len >= 8 + 24, "truncated");
        let mut tail = [0u8; 24];
        f.read_exact_at(&mut tail, len - 24)?;
        anyhow::ensure!(&tail[16..] == END, "truncated (no end marker)");
        let table_at = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(tail[8..16].try_into().expect("8 bytes"));
        anyhow::ensure!(table_at >= 8 && table_at <= len - 24, "bad table offset");
        f.seek(SeekFrom::Start(table_at))?;
        let mut r = BufReader::with_capacity(1 << 16, (&f).take(len - 24 - table_at));
        let mut dirs = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let p = read_bytes(&mut r)?;
            let (off, n) = (read_u64(&mut r)?, read_u64(&mut r)?);
            anyhow::ensure!(
                off >= 8 && off.checked_add(n).is_some_and(|e| e <= table_at),
                "bad directory record"
            );
            dirs.insert(p, (off, n));
        }
        Ok(OldCache {
            file: Some(f),
            dirs,
            v1: None,
            path: path.to_path_buf(),
            warned: Default::default(),
        })
    }

    /// The entries the last backup recorded for directory `rel` (relative to the source
    /// root); empty when it had none or its record cannot be read.
    pub fn dir(&self, rel: &[u8]) -> DirEntries {
        if let Some(v1) = &self.v1 {
            return v1.get(rel).cloned().unwrap_or_default();
        }
        let (Some(f), Some(&(off, n))) = (&self.file, self.dirs.get(rel)) else {
            return DirEntries::new();
        };
        let mut buf = vec![0u8; n as usize];
        match f
            .read_exact_at(&mut buf, off)
            .map_err(anyhow::Error::from)
            .and_then(|()| read_record(&mut &buf[..]))
        {
            Ok(d) => d,
            Err(e) => {
                if !self.warned.replace(true) {
                    tracing::warn!(cache = %self.path.display(), error = %format!("{e:#}"), "files cache record unreadable; those files will be read");
                }
                DirEntries::new()
            }
        }
    }

    /// Directories recorded (for tests and diagnostics).
    pub fn dir_count(&self) -> usize {
        self.v1.as_ref().map_or(self.dirs.len(), |v| v.len())
    }

    /// Files recorded, reading every record (for tests and diagnostics).
    pub fn entry_count(&self) -> usize {
        match &self.v1 {
            Some(v1) => v1.values().map(|d| d.len()).sum(),
            None => self.dirs.keys().map(|d| self.dir(d).len()).sum(),
        }
    }
}

/// The cache this backup writes, a directory at a time, into a temporary file.
pub struct NewCache {
    w: Option<BufWriter<fs::File>>,
    at: u64,
    table: Vec<(Vec<u8>, u64, u64)>,
    tmp: PathBuf,
    path: PathBuf,
    failed: bool,
}

impl NewCache {
    /// Start writing the cache that replaces the one at `path` once committed. When the
    /// temporary file cannot be created the backup goes on without writing a cache.
    pub fn create(path: &Path) -> NewCache {
        let tmp = path.with_extension("files.tmp");
        let w = (|| -> Result<BufWriter<fs::File>> {
            let dir = path.parent().context("cache path has no parent")?;
            fs::create_dir_all(dir)
                .with_context(|| format!("create cache dir {}", dir.display()))?;
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("write {}", tmp.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            w.write_all(MAGIC)?;
            Ok(w)
        })();
        let w = match w {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot write the files cache; the next backup reads every file");
                None
            }
        };
        NewCache {
            failed: w.is_none(),
            w,
            at: MAGIC.len() as u64,
            table: Vec::new(),
            tmp,
            path: path.to_path_buf(),
        }
    }

    /// Record directory `rel`'s files (name → entry). A write error stops the cache (with a
    /// warning), never the backup.
    pub fn add_dir(&mut self, rel: &[u8], entries: &[(Vec<u8>, CacheEntry)]) {
        if entries.is_empty() || self.failed {
            return;
        }
        let mut rec = Vec::with_capacity(entries.len() * 128);
        rec.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (name, e) in entries {
            put_bytes(&mut rec, name);
            put_entry(&mut rec, e);
        }
        let w = self.w.as_mut().expect("not failed");
        if let Err(e) = w.write_all(&rec) {
            self.fail(e.into());
            return;
        }
        self.table.push((rel.to_vec(), self.at, rec.len() as u64));
        self.at += rec.len() as u64;
    }

    fn fail(&mut self, e: anyhow::Error) {
        tracing::warn!(cache = %self.tmp.display(), error = %format!("{e:#}"), "cannot write the files cache; the next backup reads every file");
        self.failed = true;
        self.w = None;
        let _ = fs::remove_file(&self.tmp);
    }

    /// Write the directory table and make the file durable; [`Self::commit`] then puts it
    /// in place.
    pub fn finish(mut self) -> FinishedCache {
        if let Some(mut w) = self.w.take() {
            let r = (|| -> Result<()> {
                for (p, off, n) in &self.table {
                    let mut b = Vec::with_capacity(p.len() + 20);
                    put_bytes(&mut b, p);
                    b.extend_from_slice(&off.to_le_bytes());
                    b.extend_from_slice(&n.to_le_bytes());
                    w.write_all(&b)?;
                }
                w.write_all(&self.at.to_le_bytes())?;
                w.write_all(&(self.table.len() as u64).to_le_bytes())?;
                w.write_all(END)?;
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                Ok(())
            })();
            if let Err(e) = r {
                self.fail(e);
            }
        }
        FinishedCache {
            ready: !self.failed,
            tmp: Some(std::mem::take(&mut self.tmp)),
            path: std::mem::take(&mut self.path),
        }
    }
}

impl Drop for NewCache {
    /// A cache not finished (the backup failed) is removed: the old one stays.
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A written cache waiting for the manifest to commit; dropped without [`Self::commit`]
/// (the backup did not commit), it is removed and the old cache stays.
pub struct FinishedCache {
    ready: bool,
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl FinishedCache {
    /// Replace the old cache (rename). Call only after the snapshot committed.
    pub fn commit(mut self) -> Result<()> {
        anyhow::ensure!(self.ready, "the files cache was not written");
        let tmp = self.tmp.take().expect("not committed yet");
        fs::rename(&tmp, &self.path).with_context(|| format!("rename into {}", self.path.display()))
    }
}

impl Drop for FinishedCache {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn read_record(r: &mut impl Read) -> Result<DirEntries> {
    let n = read_u32(r)? as usize;
    let mut out = DirEntries::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let name = read_bytes(r)?;
        out.insert(name, read_entry(r)?);
    }
    Ok(out)
}

fn read_entry(r: &mut impl Read) -> Result<CacheEntry> {
    let size = read_u64(r)?;
    let mtime_ns = read_u64(r)? as i64;
    let ctime_ns = read_u64(r)? as i64;
    let inode = read_u64(r)?;
    let mut hash = [0u8; 32];
    r.read_exact(&mut hash)?;
    let nchunks = read_u32(r)? as usize;
    anyhow::ensure!(nchunks < 1 << 24, "too many chunks");
    let mut chunks = Vec::with_capacity(nchunks);
    for _ in 0..nchunks {
        let mut id = [0u8; 32];
        r.read_exact(&mut id)?;
        chunks.push(Id(id));
    }
    Ok(CacheEntry {
        size,
        mtime_ns,
        ctime_ns,
        inode,
        hash,
        chunks,
    })
}

/// The one-map layout (after its magic): entry count, then per entry the full relative
/// path and the entry; grouped here by directory.
fn load_v1(mut r: impl Read) -> Result<HashMap<Vec<u8>, DirEntries>> {
    let n = read_u64(&mut r)?;
    let mut out: HashMap<Vec<u8>, DirEntries> = HashMap::new();
    for _ in 0..n {
        let p = read_bytes(&mut r)?;
        let e = read_entry(&mut r)?;
        let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (p[..i].to_vec(), p[i + 1..].to_vec()),
            None => (Vec::new(), p),
        };
        out.entry(dir).or_default().insert(name, e);
    }
    Ok(out)
}

/// An entry after its name: the layout [`read_entry`] reads (the same in both layouts).
fn put_entry(out: &mut Vec<u8>, e: &CacheEntry) {
    for v in [e.size, e.mtime_ns as u64, e.ctime_ns as u64, e.inode] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&e.hash);
    out.extend_from_slice(&(e.chunks.len() as u32).to_le_bytes());
    for c in &e.chunks {
        out.extend_from_slice(&c.0);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn read_bytes(r: &mut impl Read) -> Result<Vec<u8>> {
    let n = read_u32(r)? as usize;
    anyhow::ensure!(n < 1 << 16, "path too long");
    let mut p = vec![0u8; n];
    r.read_exact(&mut p)?;
    Ok(p)
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

    fn entry(i: u8) -> CacheEntry {
        CacheEntry {
            size: i as u64,
            mtime_ns: -3,
            ctime_ns: 7,
            inode: 9,
            hash: [i; 32],
            chunks: vec![Id([i; 32]), Id([i + 1; 32])],
        }
    }

    #[test]
    fn directories_round_trip_and_a_failed_backup_keeps_the_old_cache() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/plan.files");
        let mut new = NewCache::create(&p);
        new.add_dir(
            b"a/b",
            &[(b"f\xff".to_vec(), entry(1)), (b"g".to_vec(), entry(2))],
        );
        new.add_dir(b"", &[(b"top".to_vec(), entry(3))]);
        new.finish().commit().unwrap();
        let old = OldCache::open(&p);
        assert_eq!(old.dir_count(), 2);
        let ab = old.dir(b"a/b");
        assert_eq!(ab.len(), 2);
        assert_eq!(ab[&b"f\xff".to_vec()], entry(1));
        assert_eq!(old.dir(b"")[&b"top".to_vec()], entry(3));
        assert!(old.dir(b"a").is_empty());

        // A backup that fails (its NewCache dropped, or finished and discarded) leaves it.
        let mut failed = NewCache::create(&p);
        failed.add_dir(b"", &[(b"other".to_vec(), entry(4))]);
        drop(failed);
        let discarded = NewCache::create(&p);
        drop(discarded.finish());
        assert!(!p.with_extension("files.tmp").exists());
        assert_eq!(OldCache::open(&p).dir(b"")[&b"top".to_vec()], entry(3));
    }

    #[test]
    fn garbage_truncation_and_the_one_map_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.files");
        let mut new = NewCache::create(&p);
        new.add_dir(b"d", &[(b"f".to_vec(), entry(1))]);
        new.finish().commit().unwrap();
        let whole = fs::read(&p).unwrap();
        // Cut anywhere: an empty cache, never a panic or a wrong entry.
        for cut in [0, 5, 8, 20, whole.len() - 9, whole.len() - 1] {
            fs::write(&p, &whole[..cut]).unwrap();
            assert!(OldCache::open(&p).dir(b"d").is_empty(), "cut at {cut}");
        }
        // A record whose bytes are damaged is skipped, the rest of the cache still works.
        let mut bad = whole.clone();
        bad[9..12].copy_from_slice(&[0xff; 3]);
        fs::write(&p, &bad).unwrap();
        assert!(OldCache::open(&p).dir(b"d").is_empty());
        fs::write(&p, b"garbage").unwrap();
        assert_eq!(OldCache::open(&p).dir_count(), 0);

        // LBFC0001: count, then full paths; read grouped by directory.
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&2u64.to_le_bytes());
        for (path, i) in [(&b"a/b/f"[..], 1u8), (&b"top"[..], 2)] {
            put_bytes(&mut v1, path);
            put_entry(&mut v1, &entry(i));
        }
        fs::write(&p, &v1).unwrap();
        let old = OldCache::open(&p);
        assert_eq!(old.dir(b"a/b")[&b"f".to_vec()], entry(1));
        assert_eq!(old.dir(b"")[&b"top".to_vec()], entry(2));
    }
}

//! Reading a file's content for the `dir` source: open it safely, find its holes, chunk
//! it, hash it (the whole file's BLAKE3 and each chunk's keyed id). Small files are read on
//! a pool of reader threads ([`ReaderPool`]) so that on a tree of many small files the
//! opens, reads and hashes of several files overlap with each other and with the walk; the
//! walk takes the results back in its own order (see `DirArchiver`), so what is stored does
//! not depend on how many threads read.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::thread::JoinHandle;

use anyhow::Result;
use crossbeam_channel::{bounded, Receiver, Sender};
use lifeboat_repo::chunker::chunk_file;
use lifeboat_repo::repo::ChunkerParams;
use lifeboat_repo::writer::{ChunkIds, HashedChunk};

/// A file read whole into memory: what the walk stores for it.
pub(super) struct FileRead {
    /// Bytes read (the data extents only, for a sparse file).
    pub len: u64,
    /// BLAKE3 of the whole logical content (holes as zeros).
    pub hash: blake3::Hash,
    pub chunks: Vec<HashedChunk>,
    /// The data extents, when the file has holes.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// Read, chunk and hash the regular file the walk saw at `abs` (`lstat` gave `m`). The file
/// must be small enough to hold in memory (the caller sends bigger ones down the streaming
/// path); an error is a source error ([`source_error`]) unless the chunker itself failed.
pub(super) fn read_file(
    abs: &Path,
    m: &fs::Metadata,
    params: &ChunkerParams,
    seed: u64,
    ids: &ChunkIds,
) -> Result<FileRead> {
    let f = open_same(abs, m)?;
    let mut chunks = Vec::new();
    let mut keep = |data: Vec<u8>| {
        chunks.push(ids.hash(data));
        Ok(())
    };
    let read_err = |e| match e {
        lifeboat_repo::RepoError::Io(io) => unreadable("read")(io),
        e => anyhow::Error::new(e),
    };
    if let Some(ext) = crate::source::sparse::data_extents(&f, m) {
        let data: u64 = ext.iter().map(|e| e.1).sum();
        let mut reader = crate::source::sparse::SparseReader::new(f, m.len(), ext);
        let (len, _) = chunk_file(&mut reader, data, params, seed, &mut keep).map_err(read_err)?;
        let (ext, hash) = reader.finish();
        return Ok(FileRead {
            len,
            hash,
            chunks,
            sparse: Some(ext),
        });
    }
    let (len, hash) = chunk_file(f, m.len(), params, seed, &mut keep).map_err(read_err)?;
    Ok(FileRead {
        len,
        hash,
        chunks,
        sparse: None,
    })
}

/// Files travel to the readers in batches of up to this many files or bytes: one hand-off
/// per file cost about as much as reading a small file (a wake-up of another thread, on a
/// busy 2-core machine often a context switch and an idle core meanwhile).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 512 << 10;

/// Where one submitted file's result will be: its batch and its place in it.
pub(super) struct Reply {
    batch: Rc<RefCell<BatchState>>,
    at: usize,
}

enum BatchState {
    /// Still being gathered by the walk.
    Gathering,
    /// With the readers; the results arrive here, all at once.
    Sent(Receiver<Vec<Result<FileRead>>>),
    /// Back: each result is taken once.
    Back(Vec<Option<Result<FileRead>>>),
}

struct Job {
    abs: PathBuf,
    m: fs::Metadata,
}

struct Batch {
    jobs: Vec<Job>,
    reply: Sender<Vec<Result<FileRead>>>,
}

/// Threads that read the files the walk hands them, a batch at a time, each batch
/// answered on its own channel. Dropping the pool closes its queue; the threads finish the
/// batch in hand and exit.
pub(super) struct ReaderPool {
    jobs: Option<Sender<Batch>>,
    threads: Vec<JoinHandle<()>>,
    gathering: Vec<Job>,
    gathering_bytes: u64,
    state: Rc<RefCell<BatchState>>,
}

impl ReaderPool {
    pub fn start(
        threads: usize,
        params: ChunkerParams,
        seed: u64,
        ids: ChunkIds,
    ) -> Result<ReaderPool> {
        // The walk bounds what is in flight; the queue only needs to keep the readers busy.
        let (tx, rx) = bounded::<Batch>(threads * 4);
        let mut handles = Vec::new();
        for i in 0..threads {
            let (rx, ids) = (rx.clone(), ids.clone());
            let h = std::thread::Builder::new()
                .name(format!("lifeboat-read-{i}"))
                .spawn(move || {
                    for batch in rx {
                        let out = (batch.jobs.iter())
                            .map(|job| {
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    read_file(&job.abs, &job.m, &params, seed, &ids)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(anyhow::anyhow!(
                                        "reader thread panicked while reading {}",
                                        job.abs.display()
                                    ))
                                })
                            })
                            .collect();
                        // The walk gave up on these files (it is failing): nothing to do.
                        let _ = batch.reply.send(out);
                    }
                })?;
            handles.push(h);
        }
        Ok(ReaderPool {
            jobs: Some(tx),
            threads: handles,
            gathering: Vec::new(),
            gathering_bytes: 0,
            state: Rc::new(RefCell::new(BatchState::Gathering)),
        })
    }

    /// Queue the file at `abs` for reading; [`take`](Self::take) its result later.
    pub fn submit(&mut self, abs: PathBuf, m: fs::Metadata) -> Result<Reply> {
        self.gathering_bytes += m.len();
        self.gathering.push(Job { abs, m });
        let reply = Reply {
            batch: self.state.clone(),
            at: self.gathering.len() - 1,
        };
        if self.gathering.len() >= BATCH_FILES || self.gathering_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(reply)
    }

    /// Hand the files gathered so far to the readers (the walk calls this before work of
    /// its own that takes long, and at the end of each directory).
    pub fn flush(&mut self) -> Result<()> {
        if self.gathering.is_empty() {
            return Ok(());
        }
        let (reply, rx) = bounded(1);
        let jobs = std::mem::take(&mut self.gathering);
        self.gathering_bytes = 0;
        let state = std::mem::replace(
            &mut self.state,
            Rc::new(RefCell::new(BatchState::Gathering)),
        );
        *state.borrow_mut() = BatchState::Sent(rx);
        self.jobs
            .as_ref()
            .expect("the pool's queue is open until drop")
            .send(Batch { jobs, reply })
            .map_err(|_| anyhow::anyhow!("the reader threads stopped"))
    }

    /// The result of a submitted file, waiting for its batch if need be.
    pub fn take(&mut self, r: Reply) -> Result<FileRead> {
        if matches!(*r.batch.borrow(), BatchState::Gathering) {
            self.flush()?;
        }
        let mut state = r.batch.borrow_mut();
        if let BatchState::Sent(rx) = &*state {
            let back = rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the reader threads stopped"))?;
            *state = BatchState::Back(back.into_iter().map(Some).collect());
        }
        match &mut *state {
            BatchState::Back(results) => results
                .get_mut(r.at)
                .and_then(Option::take)
                .unwrap_or_else(|| Err(anyhow::anyhow!("a reader's result was taken twice"))),
            _ => Err(anyhow::anyhow!("a batch of reads was never sent")),
        }
    }
}

impl Drop for ReaderPool {
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// How many reader threads a backup uses when the plan does not say: one per core, at
/// most 4 (past that the compressors, not the reads, are the limit).
pub fn default_read_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// A source-side I/O error: it costs one entry (the snapshot is partial), never the
/// backup. Repository errors are never wrapped in it, even when an I/O error caused them.
#[derive(Debug)]
pub(super) struct Unreadable {
    /// What was being done: `open`, `read`, `stat`, `read directory`, …
    doing: &'static str,
    io: std::io::Error,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.io.kind() {
            std::io::ErrorKind::NotFound => write!(f, "vanished during backup"),
            std::io::ErrorKind::PermissionDenied => write!(f, "{}: permission denied", self.doing),
            _ => write!(f, "{}: {}", self.doing, self.io),
        }
    }
}

impl std::error::Error for Unreadable {}

pub(super) fn unreadable(doing: &'static str) -> impl FnOnce(std::io::Error) -> anyhow::Error {
    move |io| anyhow::Error::new(Unreadable { doing, io })
}

/// The source-side error in `e`, if that is what it is.
pub(super) fn source_error(e: &anyhow::Error) -> Option<&Unreadable> {
    e.chain().find_map(|c| c.downcast_ref::<Unreadable>())
}

/// Open the regular file the walk saw at `abs` (`lstat` gave `m`), never following a
/// symlink and never blocking on a FIFO swapped in; an error when what is there now is
/// not that file (its device and inode differ, or it is no longer a regular file).
pub(super) fn open_same(abs: &Path, m: &fs::Metadata) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(abs)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("replaced by a symlink during backup, not followed")
            } else {
                e
            }
        })
        .map_err(unreadable("open"))?;
    let now = f.metadata().map_err(unreadable("fstat"))?;
    if !now.is_file() || now.dev() != m.dev() || now.ino() != m.ino() {
        return Err(unreadable("open")(std::io::Error::other(
            "replaced by another file during backup",
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the walk saw, then something else in its place before the read.
    fn swapped(replace: impl FnOnce(&Path)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"walked").unwrap();
        let walked = fs::symlink_metadata(&path).unwrap();
        replace(&path);
        let e = open_same(&path, &walked).expect_err("the swapped entry must not be read");
        assert!(source_error(&e).is_some(), "a source error, skipped: {e:#}");
        format!("{e:#}")
    }

    #[test]
    fn a_file_swapped_during_the_backup_is_not_followed_or_read() {
        let outside = tempfile::NamedTempFile::new().unwrap();
        fs::write(outside.path(), b"/etc/shadow, say").unwrap();
        // For a symlink: O_NOFOLLOW refuses it.
        let msg = swapped(|p| {
            fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink(outside.path(), p).unwrap();
        });
        assert!(msg.contains("replaced by a symlink"), "{msg}");
        // For another file (a rename over it): the inode differs.
        let msg = swapped(|p| {
            let other = p.with_extension("new");
            fs::write(&other, b"other").unwrap();
            fs::rename(&other, p).unwrap();
        });
        assert!(msg.contains("replaced by another file"), "{msg}");
        // For a FIFO: opened without blocking, then refused.
        let msg = swapped(|p| {
            fs::remove_file(p).unwrap();
            let st = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(st.success());
        });
        assert!(msg.contains("replaced by another file"), "{msg}");
        // Vanished.
        let msg = swapped(|p| fs::remove_file(p).unwrap());
        assert!(msg.contains("vanished"), "{msg}");
    }

    #[test]
    fn the_same_file_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"walked").unwrap();
        let walked = fs::symlink_metadata(&path).unwrap();
        assert!(open_same(&path, &walked).is_ok());
    }
}

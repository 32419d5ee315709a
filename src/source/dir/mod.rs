//! The `dir` source: walk a directory tree into the repository.
//!
//! Depth-first, entries sorted by name, so a directory's tree blob is built from its
//! children and stored after them (bottom-up). Regular files are chunked and streamed into
//! the [`BackupWriter`]; unchanged files (per the [`FilesCache`]) reuse their chunk list
//! without being read. Memory is bounded by the directory depth × entries per directory,
//! never by file sizes.
//!
//! Every attribute is recorded (format v2): owner and group by id with their names (from
//! `/etc/passwd` and `/etc/group`; other name services are not asked), extended attributes
//! (POSIX ACLs and file capabilities included), FIFOs and device nodes (with `rdev`). A
//! file with several links is read once: its other paths in the source share its chunks
//! and a `hardlink` key, and restore links them again. A file with holes is read as its
//! data extents only ([`super::sparse`]). Sockets are skipped with a note: the program that
//! listens on one recreates it.
//!
//! One bad entry does not cost the night: an entry that cannot be read (permission
//! denied, vanished between the walk and the read, an I/O error) is skipped with a warning
//! naming it and listed in [`DirArchiver::unreadable`]; the snapshot is committed and
//! marked partial. Only the source root itself failing fails the backup. Files are opened
//! with `O_NOFOLLOW | O_NONBLOCK` and their `fstat` compared with the walk's `lstat`, so
//! a file swapped for a symlink (or a FIFO, or another file) during the backup is skipped,
//! never followed.
//!
//! Files up to the largest chunk size are read on reader threads ([`read`]): the walk
//! queues them and goes on, even past the end of their directory (whose tree then waits
//! in its parent, [`pending`]), and takes the results back oldest first when more than
//! [`IN_FLIGHT_BYTES`] or [`IN_FLIGHT_FILES`] are waiting, or when a directory that holds
//! them is finished. What is stored is the same with one reader or several; only the time
//! differs.
//! Bigger files stream through the walking thread, a chunk at a time.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_repo::chunker::chunk_file;
use lifeboat_repo::pack::BlobKind;
use lifeboat_repo::repo::ChunkerParams;
use lifeboat_repo::snapshot::Stats;
use lifeboat_repo::tree::{Node, NodeKind};
use lifeboat_repo::writer::BackupWriter;
use lifeboat_repo::{Id, RepoError};

use super::cache::{CacheEntry, DirEntries, NewCache, OldCache};

mod excludes;
mod pending;
mod read;

pub use excludes::Excludes;
pub use read::default_read_threads;
use read::{open_same, source_error, unreadable, FileRead, ReaderPool, Reply};

/// Bytes of files read ahead of the walk and not yet stored, at most (plus one file).
pub const IN_FLIGHT_BYTES: u64 = 16 << 20;
/// Files read ahead of the walk and not yet stored, at most.
pub const IN_FLIGHT_FILES: usize = 8192;
/// Entries held by listed directories still waiting for reads, at most (plus one
/// directory's): past it the oldest are finished. Without it, a day-2 backup with one
/// changed file in each of many large directories would hold every entry of the tree.
pub const HELD_ENTRIES: usize = 16_384;

pub struct DirSource {
    pub root: PathBuf,
    pub excludes: Excludes,
    pub one_file_system: bool,
}

/// Walks a tree into a writer, reading the last backup's files cache a directory at a time
/// and writing the new one as each directory is finished (see [`super::cache`]; call
/// `new_cache.finish()` when the walk is done and commit it after the manifest).
pub struct DirArchiver<'a> {
    pub writer: &'a mut BackupWriter,
    pub params: ChunkerParams,
    pub seed: u64,
    pub old_cache: OldCache,
    pub new_cache: NewCache,
    pub stats: Stats,
    pub warnings: Vec<String>,
    /// Entries skipped because they could not be read, as `path: why` (also in `warnings`).
    pub unreadable: Vec<String>,
    root_dev: u64,
    /// Threads reading files: 1 reads on the walking thread (no pool).
    pub read_threads: usize,
    /// Files with more than one link already stored, by `(device, inode)`.
    links: HashMap<(u64, u64), Node>,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    pool: Option<ReaderPool>,
    /// The directories being walked, outermost first: their entries so far.
    levels: Vec<Level>,
    in_flight_bytes: u64,
    in_flight_files: usize,
    /// Entries of the listed directories waiting in their parents ([`HELD_ENTRIES`]).
    held: usize,
}

/// One directory being walked: its entries in name order, some still being read, and its
/// files' entries in the last and the new files cache.
#[derive(Default)]
struct Level {
    slots: Vec<Slot>,
    /// Slots before this are not pending.
    next_pending: usize,
    /// Relative to the source root.
    rel: Vec<u8>,
    old: DirEntries,
    new: Vec<(Vec<u8>, CacheEntry)>,
}

// Nearly every slot is `Ready`: boxing the node would cost an allocation per entry.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Ready(Node),
    Pending(Box<Pending>),
    /// A subdirectory whose listing is done but some of whose files are still being read:
    /// its tree is stored when they are taken back (see [`pending`]).
    Dir(Box<Deferred>),
    /// Could not be read: skipped.
    Gone,
}

/// A listed subdirectory waiting for its files: its node in the parent and its entries.
struct Deferred {
    node: Node,
    level: Level,
}

/// What walking a directory gave: its tree, or its entries still waiting for reads.
enum Listed {
    Done(Id),
    Deferred(Box<Level>),
}

/// A file queued on the reader threads: its node so far and what storing it needs.
struct Pending {
    node: Node,
    abs: PathBuf,
    name: Vec<u8>,
    m: fs::Metadata,
    reply: Reply,
}

/// `id → name` from a passwd/group style file (`name:x:id:…`), first entry winning.
fn id_names(path: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let mut f = line.split(':');
        if let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) {
            if let Ok(id) = id.parse() {
                out.entry(id).or_insert_with(|| name.to_string());
            }
        }
    }
    out
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn ctime_ns(m: &fs::Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

fn node_from(name: &std::ffi::OsStr, kind: NodeKind, m: &fs::Metadata) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = m.mode() & 0o7777;
    n.mtime_ns = mtime_ns(m);
    n.uid = m.uid();
    n.gid = m.gid();
    n
}

impl<'a> DirArchiver<'a> {
    pub fn new(
        writer: &'a mut BackupWriter,
        params: ChunkerParams,
        seed: u64,
        old_cache: OldCache,
        new_cache: NewCache,
    ) -> Self {
        DirArchiver {
            writer,
            params,
            seed,
            old_cache,
            new_cache,
            stats: Stats::default(),
            warnings: Vec::new(),
            unreadable: Vec::new(),
            root_dev: 0,
            read_threads: default_read_threads(),
            links: HashMap::new(),
            users: id_names("/etc/passwd"),
            groups: id_names("/etc/group"),
            pool: None,
            levels: Vec::new(),
            in_flight_bytes: 0,
            in_flight_files: 0,
            held: 0,
        }
    }

    /// Archive the whole source; returns the root tree id.
    pub fn run(&mut self, src: &DirSource) -> Result<Id> {
        let m = fs::metadata(&src.root)
            .with_context(|| format!("source directory {}", src.root.display()))?;
        anyhow::ensure!(
            m.is_dir(),
            "source {} is not a directory",
            src.root.display()
        );
        self.root_dev = m.dev();
        if self.read_threads > 1 {
            let ids = self.writer.chunk_ids();
            self.pool = Some(ReaderPool::start(
                self.read_threads,
                self.params,
                self.seed,
                ids,
            )?);
        }
        let root = self
            .dir(src, &src.root, Path::new(""))
            .and_then(|l| match l {
                Listed::Done(id) => Ok(id),
                Listed::Deferred(mut level) => {
                    self.resolve_all(&mut level)?;
                    self.finish_level(*level)
                }
            });
        // On an error the queued reads are dropped with the pool; its threads stop.
        self.pool = None;
        root
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
        self.stats.skipped += 1;
    }

    /// Skip an entry that could not be read: a warning, and the snapshot is partial.
    fn unreadable(&mut self, path: &Path, e: &anyhow::Error) {
        let why = source_error(e).map_or_else(|| format!("{e:#}"), |u| u.to_string());
        let entry = format!("{}: {why}", path.display());
        self.warn(format!("{entry}; skipped, the snapshot is partial"));
        self.unreadable.push(entry);
    }

    /// Owner names and extended attributes of the entry at `abs` (which `n` describes).
    /// Attributes that cannot be read cost a warning, never the entry.
    fn attributes(&mut self, n: &mut Node, abs: &Path) {
        n.user = self.users.get(&n.uid).cloned();
        n.group = self.groups.get(&n.gid).cloned();
        match lifeboat_repo::attrs::read_xattrs(abs) {
            Ok((x, odd)) => {
                n.xattrs = x;
                if !odd.is_empty() {
                    self.warnings.push(format!(
                        "{}: extended attributes with names that are not UTF-8 not stored: {odd:?}",
                        abs.display()
                    ));
                }
            }
            Err(e) => self.warnings.push(format!(
                "{}: extended attributes not readable ({e}); stored without them",
                abs.display()
            )),
        }
    }

    /// The names in directory `abs`, sorted.
    fn names(abs: &Path) -> Result<Vec<OsString>> {
        let mut names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(abs).map_err(unreadable("read directory"))? {
            names.push(e.map_err(unreadable("read directory"))?.file_name());
        }
        Ok(names)
    }

    fn dir(&mut self, src: &DirSource, abs: &Path, rel: &Path) -> Result<Listed> {
        let mut names = match Self::names(abs) {
            Ok(names) => names,
            // The root failing is the whole source failing; a subdirectory is one entry.
            Err(e) if !rel.as_os_str().is_empty() => {
                self.unreadable(abs, &e);
                Vec::new()
            }
            Err(e) => return Err(e).with_context(|| format!("source directory {}", abs.display())),
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let rel_bytes = rel.as_os_str().as_bytes().to_vec();
        self.levels.push(Level {
            old: self.old_cache.dir(&rel_bytes),
            rel: rel_bytes,
            ..Level::default()
        });
        for name in names {
            let child = abs.join(&name);
            let child_rel = rel.join(&name);
            let m = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.unreadable(&child, &unreadable("stat")(e));
                    continue;
                }
            };
            let ft = m.file_type();
            if src.excludes.is_excluded(&child_rel, &name, ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                if src.one_file_system && m.dev() != self.root_dev {
                    continue;
                }
                let listed = self.dir(src, &child, &child_rel)?;
                let mut n = node_from(&name, NodeKind::Dir, &m);
                self.attributes(&mut n, &child);
                match listed {
                    Listed::Done(sub) => {
                        n.subtree = Some(sub);
                        self.push(n);
                    }
                    Listed::Deferred(level) => {
                        self.held += level.slots.len();
                        let parent = self.levels.last_mut().expect("inside a directory");
                        parent.slots.push(Slot::Dir(Box::new(Deferred {
                            node: n,
                            level: *level,
                        })));
                        self.make_room(0)?;
                    }
                }
                self.stats.dirs += 1;
            } else if ft.is_file() {
                match self.file(&child, &name, &m) {
                    Ok(Some(mut n)) => {
                        self.attributes(&mut n, &child);
                        self.push(n)
                    }
                    // Queued on the readers, attributes read already.
                    Ok(None) => {}
                    // A source-side I/O problem costs this file; a repository error
                    // (a region failing, cancellation) is the backup's.
                    Err(e) if source_error(&e).is_some() => self.unreadable(&child, &e),
                    Err(e) => return Err(e),
                }
            } else if ft.is_symlink() {
                let target = match fs::read_link(&child) {
                    Ok(t) => t,
                    Err(e) => {
                        self.unreadable(&child, &unreadable("read link")(e));
                        continue;
                    }
                };
                let mut n = node_from(&name, NodeKind::Symlink, &m);
                n.set_target(target.as_os_str());
                self.attributes(&mut n, &child);
                self.push(n);
                self.stats.symlinks += 1;
            } else if let Some(kind) = special_kind(&ft) {
                let mut n = node_from(&name, kind, &m);
                if kind != NodeKind::Fifo {
                    n.rdev = Some(m.rdev());
                }
                self.attributes(&mut n, &child);
                self.push(n);
            } else {
                self.warn(format!(
                    "{}: a socket; skipped (the program listening on it recreates it)",
                    child.display()
                ));
            }
        }
        // The walk goes on while this directory's files are still being read: its tree is
        // stored when they are taken back (oldest first, see `make_room`), so the readers
        // are not left idle at the end of every directory.
        if let Some(pool) = self.pool.as_mut() {
            pool.flush()?;
        }
        let mut level = self.levels.pop().expect("this directory's level");
        if level.waiting() {
            level.old = DirEntries::new();
            return Ok(Listed::Deferred(Box::new(level)));
        }
        Ok(Listed::Done(self.finish_level(level)?))
    }

    /// An entry of the directory being walked, complete.
    fn push(&mut self, n: Node) {
        let level = self.levels.last_mut().expect("inside a directory");
        level.slots.push(Slot::Ready(n));
    }

    /// Make room for one more file in flight: store the oldest pending files (the
    /// outermost directories' come first: they were queued before the walk went deeper).
    fn make_room(&mut self, bytes: u64) -> Result<()> {
        let mut depth = 0;
        while self.in_flight_files > 0
            && depth < self.levels.len()
            && (self.in_flight_files >= IN_FLIGHT_FILES
                || self.in_flight_bytes + bytes > IN_FLIGHT_BYTES
                || self.held > HELD_ENTRIES)
        {
            if !self.resolve_next(depth)? {
                depth += 1;
            }
        }
        Ok(())
    }

    /// The node of the regular file at `abs`, or `None` when it was queued on the readers
    /// (its node, attributes included, is then stored when it is taken back).
    fn file(
        &mut self,
        abs: &Path,
        name: &std::ffi::OsStr,
        m: &fs::Metadata,
    ) -> Result<Option<Node>> {
        let key = name.as_bytes().to_vec();
        let mut node = node_from(name, NodeKind::File, m);
        let (size, mtime, ino) = (m.len(), mtime_ns(m), m.ino());
        let progress = self.writer.progress().clone();
        let link = (m.nlink() > 1).then_some((m.dev(), ino));
        node.hardlink = link;
        // Another path of a file already stored: the same content, read once.
        if let Some(first) = link.and_then(|l| self.links.get(&l)) {
            if first.size == size && first.mtime_ns == mtime {
                node.size = size;
                node.hash = first.hash.clone();
                node.chunks = first.chunks.clone();
                node.sparse = first.sparse.clone();
                self.stats.files += 1;
                self.stats.bytes += size;
                progress.add_done(size);
                progress.add_file();
                return Ok(Some(node));
            }
        }
        if self.cached(&key, &mut node, m) {
            if let Some(l) = link {
                self.links.insert(l, node.clone());
            }
            return Ok(Some(node));
        }
        let small = size <= self.params.max as u64;
        // A file with several links is stored at once: its other paths need its node.
        if small && link.is_none() && self.pool.is_some() {
            self.make_room(size)?;
            self.attributes(&mut node, abs);
            let pool = self.pool.as_mut().expect("checked above");
            let reply = pool.submit(abs.to_path_buf(), m.clone())?;
            self.in_flight_bytes += size;
            self.in_flight_files += 1;
            let level = self.levels.last_mut().expect("inside a directory");
            level.slots.push(Slot::Pending(Box::new(Pending {
                node,
                abs: abs.to_path_buf(),
                name: key,
                m: m.clone(),
                reply,
            })));
            return Ok(None);
        }
        let node = if small {
            let ids = self.writer.chunk_ids();
            let read = read::read_file(abs, m, &self.params, self.seed, &ids)?;
            self.store_read(node, m, read)?
        } else {
            // The readers work on what is gathered while this file streams here.
            if let Some(pool) = self.pool.as_mut() {
                pool.flush()?;
            }
            self.stream_file(abs, node, m)?
        };
        let (node, cached) = node;
        if let Some(c) = cached {
            let level = self.levels.last_mut().expect("inside a directory");
            level.new.push((key, c));
        }
        if let Some(l) = link {
            self.links.insert(l, node.clone());
        }
        Ok(Some(node))
    }

    /// Fill `node` from the files cache when the file is unchanged since the last backup
    /// and every chunk is still stored (the entry then goes into the new cache); `true` then.
    fn cached(&mut self, name: &[u8], node: &mut Node, m: &fs::Metadata) -> bool {
        let (size, mtime, ctime, ino) = (m.len(), mtime_ns(m), ctime_ns(m), m.ino());
        let level = self.levels.last_mut().expect("inside a directory");
        let Some(c) = level.old.remove(name) else {
            return false;
        };
        if c.size != size
            || c.mtime_ns != mtime
            || c.ctime_ns != ctime
            || c.inode != ino
            || !c.chunks.iter().all(|id| self.writer.is_known(id))
        {
            return false;
        }
        node.size = size;
        node.hash = Some(hex::encode(c.hash));
        node.chunks = c.chunks.clone();
        level.new.push((name.to_vec(), c));
        self.stats.files += 1;
        self.stats.bytes += size;
        let progress = self.writer.progress();
        progress.add_done(size);
        progress.add_file();
        true
    }

    /// Store a file read whole (on a reader thread or here); its node, and its files-cache
    /// entry when it can be cached.
    fn store_read(
        &mut self,
        mut node: Node,
        m: &fs::Metadata,
        read: FileRead,
    ) -> Result<(Node, Option<CacheEntry>)> {
        let FileRead {
            len,
            hash,
            chunks,
            sparse,
        } = read;
        let size = m.len();
        let progress = self.writer.progress().clone();
        let mut ids = Vec::with_capacity(chunks.len());
        for c in chunks {
            progress.add_done(c.len() as u64);
            ids.push(self.writer.add_hashed(BlobKind::Data, c)?);
        }
        node.hash = Some(hash.to_hex().to_string());
        self.stats.files += 1;
        self.stats.bytes_read += len;
        progress.add_file();
        if let Some(ext) = sparse {
            // Holes count as done: they were never read. Not kept in the files cache (its
            // entries have no extents), so it is read again next time.
            progress.add_done(size.saturating_sub(len));
            node.size = size;
            node.chunks = ids;
            node.sparse = Some(ext);
            self.stats.bytes += size;
            return Ok((node, None));
        }
        node.size = len;
        node.chunks = ids.clone();
        self.stats.bytes += len;
        let entry = cache_entry(m, len, hash, ids);
        Ok((node, entry))
    }

    /// Stream a file too big to hold whole through the chunker into the writer.
    fn stream_file(
        &mut self,
        abs: &Path,
        mut node: Node,
        m: &fs::Metadata,
    ) -> Result<(Node, Option<CacheEntry>)> {
        let f = open_same(abs, m)?;
        if let Some(ext) = super::sparse::data_extents(&f, m) {
            return Ok((self.sparse_file(f, node, m, ext)?, None));
        }
        let (len, hash, chunks) = self.store(f, m.len())?;
        node.size = len;
        node.hash = Some(hash.to_hex().to_string());
        node.chunks = chunks.clone();
        self.stats.files += 1;
        self.stats.bytes += len;
        self.stats.bytes_read += len;
        self.writer.progress().add_file();
        let entry = cache_entry(m, len, hash, chunks);
        Ok((node, entry))
    }

    /// Chunk what `reader` yields into the writer: its length, BLAKE3 and chunk ids.
    fn store(
        &mut self,
        reader: impl std::io::Read,
        size_hint: u64,
    ) -> Result<(u64, blake3::Hash, Vec<Id>)> {
        let progress = self.writer.progress().clone();
        let mut chunks = Vec::new();
        let writer = &mut *self.writer;
        // A repository error (kept aside) fails the backup; a read error costs this file.
        let mut repo_error = None;
        let (len, hash) = chunk_file(reader, size_hint, &self.params, self.seed, |data| {
            progress.add_done(data.len() as u64);
            match writer.add(BlobKind::Data, data) {
                Ok(id) => chunks.push(id),
                Err(e) => {
                    repo_error = Some(e);
                    return Err(RepoError::Cancelled);
                }
            }
            Ok(())
        })
        .map_err(|e| match (repo_error.take(), e) {
            (Some(e), _) => anyhow::Error::new(e),
            (None, RepoError::Io(io)) => unreadable("read")(io),
            (None, e) => anyhow::Error::new(e),
        })?;
        Ok((len, hash, chunks))
    }

    /// Store a file with holes as its data extents. Not kept in the files cache (its entries
    /// have no extents), so it is read again next time; only its data is read.
    fn sparse_file(
        &mut self,
        f: fs::File,
        mut node: Node,
        m: &fs::Metadata,
        ext: Vec<(u64, u64)>,
    ) -> Result<Node> {
        let size = m.len();
        let data: u64 = ext.iter().map(|e| e.1).sum();
        let progress = self.writer.progress().clone();
        let mut reader = super::sparse::SparseReader::new(f, size, ext);
        let (len, _, chunks) = self.store(&mut reader, data)?;
        let (ext, hash) = reader.finish();
        // Holes count as done: they were never read.
        progress.add_done(size.saturating_sub(len));
        node.size = size;
        node.hash = Some(hash.to_hex().to_string());
        node.chunks = chunks;
        node.sparse = Some(ext);
        self.stats.files += 1;
        self.stats.bytes += size;
        self.stats.bytes_read += len;
        progress.add_file();
        Ok(node)
    }
}

/// The files-cache entry of a file read as `len` bytes: only what was read consistently is
/// cached (a file that changed while being read is read again next time).
fn cache_entry(
    m: &fs::Metadata,
    len: u64,
    hash: blake3::Hash,
    chunks: Vec<Id>,
) -> Option<CacheEntry> {
    (len == m.len()).then(|| CacheEntry {
        size: m.len(),
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        inode: m.ino(),
        hash: *hash.as_bytes(),
        chunks,
    })
}

/// The node kind of a FIFO or device node; `None` for a socket.
fn special_kind(ft: &fs::FileType) -> Option<NodeKind> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        Some(NodeKind::Fifo)
    } else if ft.is_char_device() {
        Some(NodeKind::Chardev)
    } else if ft.is_block_device() {
        Some(NodeKind::Blockdev)
    } else {
        None
    }
}

/// Count the bytes a backup of `src` will cover (same excludes), so progress can show an
/// ETA. Cheap: a walk with `lstat` only. Errors are skipped; this is only an estimate.
pub fn estimate(
    src: &DirSource,
    progress: &lifeboat_repo::Progress,
    cancel: &lifeboat_repo::Cancel,
) {
    let mut stack = vec![(src.root.clone(), PathBuf::new())];
    while let Some((abs, rel)) = stack.pop() {
        if cancel.is_cancelled() {
            return;
        }
        let Ok(rd) = fs::read_dir(&abs) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let Ok(m) = e.metadata() else { continue };
            let child_rel = rel.join(&name);
            if src.excludes.is_excluded(&child_rel, &name, m.is_dir()) {
                continue;
            }
            if m.is_dir() {
                stack.push((abs.join(&name), child_rel));
            } else if m.is_file() {
                progress.add_total(m.len());
            }
        }
    }
}

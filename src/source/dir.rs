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

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use lifeboat_repo::chunker::chunk_file;
use lifeboat_repo::pack::BlobKind;
use lifeboat_repo::repo::ChunkerParams;
use lifeboat_repo::snapshot::Stats;
use lifeboat_repo::tree::{Node, NodeKind, Tree};
use lifeboat_repo::writer::BackupWriter;
use lifeboat_repo::{Id, RepoError};

use super::cache::{CacheEntry, FilesCache};

/// Exclude rules, gitignore-like: a pattern without `/` matches a name at any depth; with
/// `/` it matches the path relative to the source root; a trailing `/` matches directories only.
#[derive(Debug)]
pub struct Excludes {
    any: GlobSet,
    dirs_only: GlobSet,
    anchored: GlobSet,
    anchored_dirs: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut sets = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        for p in patterns {
            let dir_only = p.ends_with('/');
            let core = p.trim_end_matches('/');
            let anchored = core.contains('/');
            let core = core.trim_start_matches('/');
            let glob = GlobBuilder::new(core)
                .literal_separator(anchored)
                .build()
                .with_context(|| format!("exclude pattern {p:?} is not a valid glob"))?;
            sets[(anchored as usize) * 2 + dir_only as usize].add(glob);
        }
        let [a, b, c, d] = sets;
        Ok(Excludes {
            any: a.build()?,
            dirs_only: b.build()?,
            anchored: c.build()?,
            anchored_dirs: d.build()?,
        })
    }

    pub fn is_excluded(&self, rel: &Path, name: &std::ffi::OsStr, is_dir: bool) -> bool {
        self.any.is_match(name)
            || self.anchored.is_match(rel)
            || (is_dir && (self.dirs_only.is_match(name) || self.anchored_dirs.is_match(rel)))
    }
}

pub struct DirSource {
    pub root: PathBuf,
    pub excludes: Excludes,
    pub one_file_system: bool,
}

/// Walks a tree into a writer, consulting and refreshing the files cache in place (see
/// [`FilesCache::retain_seen`] for what to call when the walk is done).
pub struct DirArchiver<'a> {
    pub writer: &'a mut BackupWriter,
    pub params: ChunkerParams,
    pub seed: u64,
    pub cache: FilesCache,
    pub stats: Stats,
    pub warnings: Vec<String>,
    /// Entries skipped because they could not be read, as `path: why` (also in `warnings`).
    pub unreadable: Vec<String>,
    root_dev: u64,
    /// Files with more than one link already stored, by `(device, inode)`.
    links: HashMap<(u64, u64), Node>,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
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
        cache: FilesCache,
    ) -> Self {
        DirArchiver {
            writer,
            params,
            seed,
            cache,
            stats: Stats::default(),
            warnings: Vec::new(),
            unreadable: Vec::new(),
            root_dev: 0,
            links: HashMap::new(),
            users: id_names("/etc/passwd"),
            groups: id_names("/etc/group"),
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
        self.dir(src, &src.root, Path::new(""))
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

    fn dir(&mut self, src: &DirSource, abs: &Path, rel: &Path) -> Result<Id> {
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
        let mut tree = Tree::default();
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
                let sub = self.dir(src, &child, &child_rel)?;
                let mut n = node_from(&name, NodeKind::Dir, &m);
                n.subtree = Some(sub);
                self.attributes(&mut n, &child);
                tree.nodes.push(n);
                self.stats.dirs += 1;
            } else if ft.is_file() {
                match self.file(&child, &child_rel, &name, &m) {
                    Ok(mut n) => {
                        self.attributes(&mut n, &child);
                        tree.nodes.push(n)
                    }
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
                tree.nodes.push(n);
                self.stats.symlinks += 1;
            } else if let Some(kind) = special_kind(&ft) {
                let mut n = node_from(&name, kind, &m);
                if kind != NodeKind::Fifo {
                    n.rdev = Some(m.rdev());
                }
                self.attributes(&mut n, &child);
                tree.nodes.push(n);
            } else {
                self.warn(format!(
                    "{}: a socket; skipped (the program listening on it recreates it)",
                    child.display()
                ));
            }
        }
        Ok(self.writer.add_tree(&mut tree)?)
    }

    fn file(
        &mut self,
        abs: &Path,
        rel: &Path,
        name: &std::ffi::OsStr,
        m: &fs::Metadata,
    ) -> Result<Node> {
        let key = rel.as_os_str().as_bytes().to_vec();
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
                return Ok(node);
            }
        }
        let node = self.file_content(abs, key, node, m)?;
        if let Some(l) = link {
            self.links.insert(l, node.clone());
        }
        Ok(node)
    }

    /// Read (or find in the files cache) the content of the file at `abs`.
    fn file_content(
        &mut self,
        abs: &Path,
        key: Vec<u8>,
        mut node: Node,
        m: &fs::Metadata,
    ) -> Result<Node> {
        let (size, mtime, ctime, ino) = (m.len(), mtime_ns(m), ctime_ns(m), m.ino());
        let progress = self.writer.progress().clone();
        if let Some(c) = self.cache.entries.get_mut(&key) {
            if c.size == size
                && c.mtime_ns == mtime
                && c.ctime_ns == ctime
                && c.inode == ino
                && c.chunks.iter().all(|id| self.writer.is_known(id))
            {
                node.size = size;
                node.hash = Some(hex::encode(c.hash));
                node.chunks = c.chunks.clone();
                c.seen = true;
                self.stats.files += 1;
                self.stats.bytes += size;
                progress.add_done(size);
                progress.add_file();
                return Ok(node);
            }
        }
        let f = open_same(abs, m)?;
        if let Some(ext) = super::sparse::data_extents(&f, m) {
            return self.sparse_file(f, node, m, ext);
        }
        let (len, hash, chunks) = self.store(f, size)?;
        node.size = len;
        node.hash = Some(hash.to_hex().to_string());
        node.chunks = chunks.clone();
        self.stats.files += 1;
        self.stats.bytes += len;
        self.stats.bytes_read += len;
        progress.add_file();
        // Only cache what we read consistently: a file that changed while being read gets
        // re-read next time.
        if len == size {
            self.cache.entries.insert(
                key,
                CacheEntry {
                    size,
                    mtime_ns: mtime,
                    ctime_ns: ctime,
                    inode: ino,
                    hash: *hash.as_bytes(),
                    chunks,
                    seen: true,
                },
            );
        }
        Ok(node)
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

/// A source-side I/O error: it costs one entry (the snapshot is partial), never the
/// backup. Repository errors are never wrapped in it, even when an I/O error caused them.
#[derive(Debug)]
struct Unreadable {
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

fn unreadable(doing: &'static str) -> impl FnOnce(std::io::Error) -> anyhow::Error {
    move |io| anyhow::Error::new(Unreadable { doing, io })
}

/// The source-side error in `e`, if that is what it is.
fn source_error(e: &anyhow::Error) -> Option<&Unreadable> {
    e.chain().find_map(|c| c.downcast_ref::<Unreadable>())
}

/// Open the regular file the walk saw at `abs` (`lstat` gave `m`), never following a
/// symlink and never blocking on a FIFO swapped in; an error when what is there now is
/// not that file (its device and inode differ, or it is no longer a regular file).
fn open_same(abs: &Path, m: &fs::Metadata) -> Result<fs::File> {
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

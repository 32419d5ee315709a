//! The `dir` source: walk a directory tree into the repository.
//!
//! Depth-first, entries sorted by name, so a directory's tree blob is built from its
//! children and stored after them (bottom-up). Regular files are chunked and streamed into
//! the [`BackupWriter`]; unchanged files (per the [`FilesCache`]) reuse their chunk list
//! without being read. Memory is bounded by the directory depth × entries per directory,
//! never by file sizes. Sockets, FIFOs and device nodes are skipped with a warning.

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

/// Walks a tree into a writer, consulting and refreshing the files cache.
pub struct DirArchiver<'a> {
    pub writer: &'a mut BackupWriter,
    pub params: ChunkerParams,
    pub seed: u64,
    pub old_cache: &'a FilesCache,
    pub new_cache: FilesCache,
    pub stats: Stats,
    pub warnings: Vec<String>,
    root_dev: u64,
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
        old_cache: &'a FilesCache,
    ) -> Self {
        DirArchiver {
            writer,
            params,
            seed,
            old_cache,
            new_cache: FilesCache::default(),
            stats: Stats::default(),
            warnings: Vec::new(),
            root_dev: 0,
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

    fn dir(&mut self, src: &DirSource, abs: &Path, rel: &Path) -> Result<Id> {
        let mut names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(abs).with_context(|| format!("read directory {}", abs.display()))? {
            let e = e.with_context(|| format!("read directory {}", abs.display()))?;
            names.push(e.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut tree = Tree::default();
        for name in names {
            let child = abs.join(&name);
            let child_rel = rel.join(&name);
            let m = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warn(format!(
                        "{}: vanished during backup, skipped",
                        child.display()
                    ));
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("stat {}", child.display())),
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
                tree.nodes.push(n);
                self.stats.dirs += 1;
            } else if ft.is_file() {
                match self.file(&child, &child_rel, &name, &m) {
                    Ok(n) => tree.nodes.push(n),
                    Err(e) if is_not_found(&e) => self.warn(format!(
                        "{}: vanished during backup, skipped",
                        child.display()
                    )),
                    Err(e) => return Err(e),
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&child)
                    .with_context(|| format!("read link {}", child.display()))?;
                let mut n = node_from(&name, NodeKind::Symlink, &m);
                n.set_target(target.as_os_str());
                tree.nodes.push(n);
                self.stats.symlinks += 1;
            } else {
                self.warn(format!(
                    "{}: not a regular file, directory or symlink; skipped",
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
        let (size, mtime, ctime, ino) = (m.len(), mtime_ns(m), ctime_ns(m), m.ino());
        let progress = self.writer.progress().clone();
        if let Some(c) = self.old_cache.entries.get(&key) {
            if c.size == size
                && c.mtime_ns == mtime
                && c.ctime_ns == ctime
                && c.inode == ino
                && c.chunks.iter().all(|id| self.writer.is_known(id))
            {
                node.size = size;
                node.hash = Some(hex::encode(c.hash));
                node.chunks = c.chunks.clone();
                self.new_cache.entries.insert(key, c.clone());
                self.stats.files += 1;
                self.stats.bytes += size;
                progress.add_done(size);
                progress.add_file();
                return Ok(node);
            }
        }
        let f = fs::File::open(abs).with_context(|| format!("open {}", abs.display()))?;
        let mut chunks = Vec::new();
        let writer = &mut *self.writer;
        let (len, hash) = chunk_file(f, size, &self.params, self.seed, |data| {
            progress.add_done(data.len() as u64);
            chunks.push(writer.add(BlobKind::Data, data)?);
            Ok(())
        })
        .map_err(|e| match e {
            RepoError::Io(io) => anyhow::Error::new(io).context(format!("read {}", abs.display())),
            e => anyhow::Error::new(e),
        })?;
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
            self.new_cache.entries.insert(
                key,
                CacheEntry {
                    size,
                    mtime_ns: mtime,
                    ctime_ns: ctime,
                    inode: ino,
                    hash: *hash.as_bytes(),
                    chunks,
                },
            );
        }
        Ok(node)
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
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

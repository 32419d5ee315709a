//! Restoring a snapshot's tree into a directory, proven as it goes, in bounded batches.
//!
//! 1. Check every name first, keeping nothing: each is one safe path component, unique in
//!    its directory ([`Tree::parse`]), so a crafted tree is refused before anything is made.
//!    Then walk the trees depth first from the root (or down the `--include` path).
//!    Directories are made as they are met; files, symlinks and special files go into a
//!    batch of at most [`DEFAULT_BATCH_ENTRIES`] entries (or [`BATCH_CHUNKS`] chunks), so
//!    memory does not grow with the number of files.
//! 2. Per batch ([`fill`]): create the files, empty and of the right size, never through a
//!    symlink (`O_CREAT|O_EXCL`, which does not follow links, then `O_NOFOLLOW`; an existing
//!    symlink where a directory belongs is replaced only when overwriting was asked for).
//! 3. Fetch each pack the batch needs once (preferred region first, per-object fallback, a
//!    chunk's other packs when one is bad everywhere), verify every chunk (age
//!    authentication, keyed hash, length), write it at its offsets and hash it on the way.
//!    A pack whose chunks are needed by two batches is fetched by each: with the walk in the
//!    snapshot's order (the order backup wrote the packs in), that is a pack at each batch
//!    boundary, and at most once per batch for data deduplicated from far away.
//! 4. Compare every file's BLAKE3 with the manifest's; then set owners (as root), modes and
//!    times through the open file descriptor (`fchown`, `fchmod`, `futimens`: a symlink
//!    swapped in meanwhile cannot redirect them), and only then rename the file to its name.
//!    Until that rename a file is `.lifeboat-partial-…`, so a restore that fails (disk full,
//!    cancelled, a corrupt pack) leaves nothing that looks complete; the partial files of
//!    the batch are removed on the way out. A directory gets its metadata once everything
//!    under it is written, deepest first, so read-only ones can still be filled and their
//!    times stay as restored.
//!
//! Format v2 attributes ([`crate::attrs`]): a hardlink group's first file is written and
//! its other paths are hard-linked to that file (only ever to a file this restore made and
//! renamed into place, its inode checked; the groups met so far are the only per-file
//! state kept across batches); a sparse file gets its size with
//! `ftruncate` and only its data extents are written, so its holes stay holes; extended
//! attributes (ACLs, capabilities) are set through the descriptor; FIFOs and device nodes
//! are made with `mknod` (device nodes need root, else they are skipped and counted).
//!
//! Every I/O error names the path it concerns.

mod fill;
pub mod memtrace;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::attrs::{self, Apply, Handle, Skipped};
use crate::error::{RepoError, Result};
use crate::progress::{Cancel, Progress};
use crate::reader::BlobReader;
use crate::tree::{Node, NodeKind, Tree};
use crate::Id;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only this path of the snapshot (relative, `/`-separated), kept at its place.
    pub include: Option<PathBuf>,
    /// Allow a non-empty target; existing entries with the same names are replaced.
    pub overwrite: bool,
    /// Drop setuid and setgid bits from restored modes.
    pub no_setuid: bool,
    /// Do not set owners and groups (as root they are otherwise restored by id).
    pub no_owner: bool,
    /// Do not restore extended attributes (ACLs and file capabilities included).
    pub no_xattrs: bool,
    /// Entries per batch; 0 is [`DEFAULT_BATCH_ENTRIES`]. Small values are for tests and
    /// the bench (many batches from a small tree).
    pub batch_entries: usize,
    /// The bytes the whole restore will write, when known (the manifest's statistics, for a
    /// restore without `include`): the progress total starts there instead of growing batch
    /// by batch, so an ETA means the whole restore.
    pub expected_bytes: Option<u64>,
}

impl RestoreOptions {
    fn apply(&self) -> Apply {
        Apply {
            no_owner: self.no_owner,
            no_setuid: self.no_setuid,
            no_xattrs: self.no_xattrs,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub packs: u64,
    pub verified_files: u64,
    /// Files restored as hard links to another restored file (also counted in `files`).
    pub hardlinks: u64,
    /// FIFOs and device nodes made.
    pub specials: u64,
    /// What this user or the target filesystem could not take.
    pub skipped: Skipped,
    /// One line per kind of thing skipped (see [`Skipped::warnings`]).
    pub warnings: Vec<String>,
}

/// Where a file's data goes: the chunks' bytes, back to back, are its data extents
/// `(data offset, file offset, length)`; `None` for a dense file (data offset = file offset).
type Extents = Option<Vec<(u64, u64, u64)>>;

fn extents(node: &Node) -> Extents {
    let mut data = 0u64;
    node.sparse.as_ref().map(|ext| {
        ext.iter()
            .map(|&(off, len)| {
                let e = (data, off, len);
                data += len;
                e
            })
            .collect()
    })
}

/// Write `raw`, which starts at data offset `at`, into its places in `file`.
fn write_data(file: &File, ext: &Extents, raw: &[u8], at: u64) -> std::io::Result<()> {
    let Some(ext) = ext else {
        return file.write_all_at(raw, at);
    };
    let (mut rest, mut at) = (raw, at);
    let mut i = ext.partition_point(|&(d, _, len)| d + len <= at);
    while !rest.is_empty() {
        let Some(&(d, off, len)) = ext.get(i) else {
            return Err(std::io::Error::other(
                "chunks hold more data than the sparse extents",
            ));
        };
        let n = (len - (at - d)).min(rest.len() as u64) as usize;
        file.write_all_at(&rest[..n], off + (at - d))?;
        rest = &rest[n..];
        at += n as u64;
        i += 1;
    }
    Ok(())
}

fn include_components(include: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut out = Vec::new();
    for c in include.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(RepoError::Invalid(format!(
                    "--include {}: use a path inside the snapshot, without '..'",
                    include.display()
                )))
            }
        }
    }
    Ok(out)
}

/// An I/O error that names what was being done and to which path.
fn at<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RepoError + 'a {
    move |e| {
        RepoError::Io(std::io::Error::new(
            e.kind(),
            format!("{what} {}: {e}", path.display()),
        ))
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(at("read directory", p)(e)),
    }
}

/// Make `path` a real directory, never following or keeping a symlink there.
fn make_dir(path: &Path, overwrite: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) if overwrite => {
            fs::remove_file(path).map_err(at("remove", path))?;
            fs::create_dir(path).map_err(at("create directory", path))
        }
        Ok(_) => Err(RepoError::Invalid(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(at("create directory", path))
        }
        Err(e) => Err(at("inspect", path)(e)),
    }
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(at("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(at("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at("inspect", path)(e)),
    }
}

/// Open the partial file `path` (never through a symlink); errors name `shown`.
pub(crate) fn open_for_write(path: &Path, shown: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(at("open", shown))
}

/// Entries (files, symlinks, special files, finished directories) per batch unless
/// [`RestoreOptions::batch_entries`] says otherwise.
pub const DEFAULT_BATCH_ENTRIES: usize = 8192;
/// Chunk references per batch at most (a batch of few, large files).
const BATCH_CHUNKS: usize = 65_536;

/// A tree node and where it goes, relative to the target.
struct Placed {
    path: PathBuf,
    node: Node,
}

/// A directory being walked: its entries not yet visited.
struct Frame {
    path: PathBuf,
    depth: usize,
    entries: std::vec::IntoIter<Node>,
    /// `None` for the target itself and the parents of an `--include` path's top.
    node: Option<Node>,
}

/// Restore `root` into `target`. Needs the identity.
///
/// The tree is walked depth first in the snapshot's order; directories are made as they are
/// met, and entries go into batches of [`DEFAULT_BATCH_ENTRIES`] (see [`fill`]). A
/// directory's metadata is applied once its whole subtree is written (after the batch
/// holding its last entry), so deeper directories come first and read-only ones can still be
/// filled. Memory is one batch, the directories on the path being walked (with their tree
/// blobs) and the hardlinked inodes met so far — not the number of files.
pub async fn restore_tree(
    reader: Arc<BlobReader>,
    root: Id,
    target: &Path,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreReport> {
    reader.repo().identity("restore")?;
    if !opts.overwrite && !is_empty_dir(target)? {
        return Err(RepoError::Invalid(format!(
            "restore target {} is not empty; choose an empty or new directory, or pass --overwrite to replace what is there",
            target.display()
        )));
    }
    if let Ok(m) = fs::symlink_metadata(target) {
        if !m.is_dir() {
            return Err(RepoError::Invalid(format!(
                "restore target {} is not a directory",
                target.display()
            )));
        }
    }
    let include = match &opts.include {
        Some(p) => include_components(p)?,
        None => Vec::new(),
    };
    fs::create_dir_all(target).map_err(at("create directory", target))?;
    if let Some(n) = opts.expected_bytes {
        progress.add_total(n);
    }
    let limit = match opts.batch_entries {
        0 => DEFAULT_BATCH_ENTRIES,
        n => n,
    };
    let read_tree = |id: Id, dir: PathBuf| {
        let reader = reader.clone();
        async move {
            let bytes = reader.read(&id).await?;
            let tree = Tree::parse(&bytes, &format!("tree {} ({})", id.short(), dir.display()))?;
            Ok::<_, RepoError>(tree.nodes.into_iter())
        }
    };
    let trace = memtrace::MemTrace::from_env();
    // Peak since the process started: the index, the manifest, the key.
    trace.end(
        "index load (process start)",
        reader.index().heap_bytes() as u64,
    );
    trace.start();
    // Every name is checked before anything is written: a crafted tree is refused whole.
    check_names(&reader, root, &include).await?;
    trace.end("name check (tree packs)", reader.cached().0 as u64);
    trace.start();
    let mut stack = vec![Frame {
        entries: read_tree(root, PathBuf::new()).await?,
        path: PathBuf::new(),
        depth: 0,
        node: None,
    }];
    let ctx = fill::Ctx {
        reader: &reader,
        target,
        opts,
        progress: &progress,
        cancel: &cancel,
        trace: &trace,
    };
    let mut report = RestoreReport::default();
    let mut skipped = Skipped::default();
    let mut links = fill::Links::new();
    let mut batch = fill::Batch::default();
    // Directories whose subtree is all in batches, deepest first: their metadata is set
    // once those batches are written.
    let mut finished: Vec<Placed> = Vec::new();
    let mut matched = false;
    while let Some(top) = stack.last_mut() {
        cancel.check()?;
        let Some(node) = top.entries.next() else {
            let done = stack.pop().expect("a frame is on the stack");
            if let Some(node) = done.node {
                finished.push(Placed {
                    path: done.path,
                    node,
                });
            }
            continue;
        };
        let name = node.safe_name()?;
        let depth = top.depth;
        if include.get(depth).is_some_and(|want| &name != want) {
            continue;
        }
        let path = top.path.join(&name);
        let leaf = depth + 1 >= include.len();
        matched |= leaf || node.kind == NodeKind::Dir;
        match node.kind {
            NodeKind::Dir => {
                make_dir(&target.join(&path), opts.overwrite)?;
                let sub = node.subtree.expect("checked by Tree::parse");
                stack.push(Frame {
                    entries: read_tree(sub, path.clone()).await?,
                    path,
                    depth: depth + 1,
                    node: Some(node),
                });
            }
            NodeKind::File if leaf => {
                batch.chunks += node.chunks.len();
                batch.files.push(Placed { path, node });
            }
            NodeKind::Symlink if leaf => batch.symlinks.push(Placed { path, node }),
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev if leaf => {
                batch.specials.push(Placed { path, node })
            }
            _ => {}
        }
        if batch.entries() + finished.len() >= limit || batch.chunks >= BATCH_CHUNKS {
            let full = std::mem::take(&mut batch);
            if trace.on() {
                let held = reader.cached().0 + full.held_bytes() + stack_bytes(&stack);
                trace.end("walk: trees, batch nodes", held as u64);
            }
            fill::restore_batch(&ctx, full, &mut links, &mut report, &mut skipped).await?;
            finish_dirs(target, &mut finished, opts, &mut report, &mut skipped)?;
            trace.start();
        }
    }
    if !matched && !include.is_empty() {
        return Err(RepoError::Invalid(format!(
            "--include {}: no such path in the snapshot",
            opts.include
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )));
    }
    if trace.on() {
        let held = reader.cached().0 + batch.held_bytes();
        trace.end("walk: trees, batch nodes", held as u64);
    }
    fill::restore_batch(&ctx, batch, &mut links, &mut report, &mut skipped).await?;
    finish_dirs(target, &mut finished, opts, &mut report, &mut skipped)?;
    trace.report();
    if opts.no_owner {
        skipped.owners = 0;
    }
    report.warnings = skipped.warnings();
    report.skipped = skipped;
    Ok(report)
}

/// Bytes the walk's stack holds in nodes not yet visited (for [`memtrace`]).
fn stack_bytes(stack: &[Frame]) -> usize {
    stack
        .iter()
        .map(|f| {
            f.entries
                .as_slice()
                .iter()
                .map(fill::node_bytes)
                .sum::<usize>()
        })
        .sum()
}

/// Walk the trees to restore (as the restore will) and check every name, keeping nothing:
/// a name that is not one safe path component, or twice in a directory, refuses the restore
/// before it makes anything. Costs a second read of the tree blobs (their packs are few and
/// cached by the reader), not memory.
async fn check_names(reader: &BlobReader, root: Id, include: &[std::ffi::OsString]) -> Result<()> {
    let mut stack = vec![(root, PathBuf::new(), 0usize)];
    while let Some((id, dir, depth)) = stack.pop() {
        let bytes = reader.read(&id).await?;
        let tree = Tree::parse(&bytes, &format!("tree {} ({})", id.short(), dir.display()))?;
        for node in tree.nodes {
            let name = node.safe_name()?;
            if include.get(depth).is_some_and(|want| &name != want) {
                continue;
            }
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                stack.push((sub, dir.join(&name), depth + 1));
            }
        }
    }
    Ok(())
}

/// Apply the metadata of directories whose contents are all written, in the order they
/// finished (deepest first).
fn finish_dirs(
    target: &Path,
    finished: &mut Vec<Placed>,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
    skipped: &mut Skipped,
) -> Result<()> {
    for d in finished.drain(..) {
        let path = target.join(&d.path);
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(at("open directory", &path))?;
        attrs::apply(&Handle::Fd(&dir), &d.node, opts.apply(), skipped)
            .map_err(at("set metadata of", &path))?;
        report.dirs += 1;
    }
    Ok(())
}

/// BLAKE3 of a file, reading through `buf` (reused across files: allocating and zeroing a
/// fresh buffer per file cost a sixth of a many-small-files restore).
pub(crate) fn hash_file(path: &Path, buf: &mut [u8]) -> Result<String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut h = blake3::Hasher::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

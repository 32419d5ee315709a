//! Restoring a snapshot's tree into a directory, proven as it goes.
//!
//! 1. Read every tree blob under the root (or under `--include`), checking each name is one
//!    safe path component and unique in its directory ([`Tree::parse`]).
//! 2. Create directories and empty files of the right size. Never through a symlink: files
//!    are created with `O_CREAT|O_EXCL` (which does not follow links) and opened for writing
//!    with `O_NOFOLLOW`; an existing symlink where a directory belongs is replaced only when
//!    overwriting was asked for, never followed.
//! 3. Fetch each needed pack once (preferred region first, per-object fallback), verify every
//!    chunk (age authentication, keyed hash, length) and write it at its offsets.
//! 4. Re-read every file and compare its BLAKE3 with the manifest's; then set owners (as
//!    root), modes and times through the open file descriptor (`fchown`, `fchmod`,
//!    `futimens`: a symlink swapped in meanwhile cannot redirect them), and only then rename
//!    the file to its name. Until that rename a file is `.lifeboat-partial-…`, so a restore
//!    that fails (disk full, cancelled, a corrupt pack) leaves nothing that looks complete;
//!    the partial files it made are removed on the way out. Directories come last, deepest
//!    first, so read-only ones can still be filled and their times stay as restored.
//!
//! Format v2 attributes ([`crate::attrs`]): a hardlink group's first file is written and
//! its other paths are hard-linked to that file (only ever to a file this restore made,
//! inside the target, before it is renamed into place); a sparse file gets its size with
//! `ftruncate` and only its data extents are written, so its holes stay holes; extended
//! attributes (ACLs, capabilities) are set through the descriptor; FIFOs and device nodes
//! are made with `mknod` (device nodes need root, else they are skipped and counted).
//!
//! Every I/O error names the path it concerns.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::attrs::{self, Apply, Handle, Skipped};
use crate::error::{RepoError, Result};
use crate::pack::PackEntry;
use crate::progress::{Cancel, Progress};
use crate::reader::{fetch_pack, BlobReader};
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

/// One chunk to write: where it is in its pack, which file (index into
/// [`Layout::files`]) and at which offset.
type ChunkWrite = (PackEntry, usize, u64);

/// A tree node and where it goes, relative to the target.
struct Placed {
    path: PathBuf,
    node: Node,
}

/// What a restore creates, by kind: the snapshot's tree flattened under the target.
#[derive(Default)]
struct Layout {
    dirs: Vec<Placed>,
    files: Vec<Placed>,
    symlinks: Vec<Placed>,
    /// FIFOs and device nodes.
    specials: Vec<Placed>,
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

/// Collect the nodes to restore under `dir` (a path relative to the target).
async fn collect_layout(
    reader: &BlobReader,
    tree_id: Id,
    dir: PathBuf,
    include: &[std::ffi::OsString],
    layout: &mut Layout,
) -> Result<()> {
    let mut stack = vec![(tree_id, dir, 0usize)];
    while let Some((id, dir, depth)) = stack.pop() {
        let bytes = reader.read(&id).await?;
        let tree = Tree::parse(&bytes, &format!("tree {} ({})", id.short(), dir.display()))?;
        for node in tree.nodes {
            let name = node.safe_name()?;
            if let Some(want) = include.get(depth) {
                if &name != want {
                    continue;
                }
            }
            let path = dir.join(&name);
            match node.kind {
                NodeKind::Dir => {
                    let sub = node.subtree.expect("checked by Tree::parse");
                    stack.push((sub, path.clone(), depth + 1));
                    layout.dirs.push(Placed { path, node });
                }
                NodeKind::File if depth + 1 >= include.len() => {
                    layout.files.push(Placed { path, node })
                }
                NodeKind::Symlink if depth + 1 >= include.len() => {
                    layout.symlinks.push(Placed { path, node })
                }
                NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev
                    if depth + 1 >= include.len() =>
                {
                    layout.specials.push(Placed { path, node })
                }
                _ => {}
            }
        }
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

/// The files a restore is still writing, under names that do not look finished
/// (`.lifeboat-partial-<run>-<n>` beside their final name). Dropping it removes those that
/// were not renamed into place, so a failed or cancelled restore leaves none behind.
struct PartialFiles(Arc<Vec<PathBuf>>);

impl PartialFiles {
    fn beside(finals: &[PathBuf]) -> PartialFiles {
        let run = format!("{:08x}", rand::random::<u32>());
        PartialFiles(Arc::new(
            finals
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.parent()
                        .unwrap_or(Path::new("."))
                        .join(format!(".lifeboat-partial-{run}-{i}"))
                })
                .collect(),
        ))
    }
}

impl Drop for PartialFiles {
    fn drop(&mut self) {
        for p in self.0.iter() {
            // Renamed into place already, or never created: nothing to do.
            let _ = fs::remove_file(p);
        }
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

/// Fill `writes` from the other locations of their chunks, avoiding pack `bad`.
async fn from_other_packs(
    reader: &BlobReader,
    bad: Id,
    writes: &[ChunkWrite],
    (paths, finals, exts): (&[PathBuf], &[PathBuf], &[Extents]),
    progress: &Progress,
) -> Result<()> {
    for (entry, fi, offset) in writes {
        let raw = reader.read_avoiding(&entry.id, Some(bad)).await?;
        let file = open_for_write(&paths[*fi], &finals[*fi])?;
        write_data(&file, &exts[*fi], &raw, *offset).map_err(at("write", &finals[*fi]))?;
        progress.add_done(raw.len() as u64);
    }
    Ok(())
}

/// Open the partial file `path` (never through a symlink); errors name `shown`.
fn open_for_write(path: &Path, shown: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(at("open", shown))
}

/// Restore `root` into `target`. Needs the identity.
pub async fn restore_tree(
    reader: Arc<BlobReader>,
    root: Id,
    target: &Path,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreReport> {
    let repo = reader.repo().clone();
    repo.identity("restore")?;
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
    fs::create_dir_all(target).map_err(at("create directory", target))?;
    let include = match &opts.include {
        Some(p) => include_components(p)?,
        None => Vec::new(),
    };
    let mut layout = Layout::default();
    collect_layout(&reader, root, PathBuf::new(), &include, &mut layout).await?;
    // The tree packs' plaintext is not needed while data is written: free it now.
    reader.clear_cache();
    if !include.is_empty()
        && layout.dirs.is_empty()
        && layout.files.is_empty()
        && layout.symlinks.is_empty()
        && layout.specials.is_empty()
    {
        return Err(RepoError::Invalid(format!(
            "--include {}: no such path in the snapshot",
            opts.include
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )));
    }
    // Parents of an --include path that are not restored themselves.
    for i in 1..include.len() {
        let p: PathBuf = include[..i].iter().collect();
        make_dir(&target.join(p), opts.overwrite)?;
    }
    layout.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for d in &layout.dirs {
        make_dir(&target.join(&d.path), opts.overwrite)?;
    }

    // Files: create under partial names, size, and group every chunk by its pack.
    let finals: Arc<Vec<PathBuf>> =
        Arc::new(layout.files.iter().map(|f| target.join(&f.path)).collect());
    let partial = PartialFiles::beside(&finals);
    let paths = partial.0.clone();
    let links = hardlink_groups(&layout.files)?;
    let exts: Arc<Vec<Extents>> = Arc::new(layout.files.iter().map(|f| extents(&f.node)).collect());
    let mut by_pack: HashMap<Id, Vec<ChunkWrite>> = HashMap::new();
    let mut total = 0u64;
    for (fi, f) in layout.files.iter().enumerate() {
        cancel.check()?;
        if links.member[fi] {
            continue; // linked to its group's first file once that is complete
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&paths[fi])
            .map_err(at("create", &finals[fi]))?;
        file.set_len(f.node.size)
            .map_err(at("allocate", &finals[fi]))?;
        let mut offset = 0u64;
        for c in &f.node.chunks {
            let (pack, entry) = reader.index().get(c).ok_or_else(|| {
                RepoError::Corrupt(format!(
                    "{}: chunk {} is in no region's index (run `lifeboat verify`)",
                    f.path.display(),
                    c.short()
                ))
            })?;
            by_pack.entry(pack).or_default().push((entry, fi, offset));
            offset += entry.raw_length as u64;
        }
        let data = f.node.check_sparse()?;
        if offset != data {
            return Err(RepoError::Corrupt(format!(
                "{}: chunks add up to {offset} bytes, manifest says {data}",
                f.path.display(),
            )));
        }
        total += f.node.size;
    }
    progress.add_total(total);

    let names: Arc<Vec<PathBuf>> = Arc::new(layout.files.iter().map(|f| f.path.clone()).collect());
    let chunk_key = *repo.secrets().chunk_key();
    let workers = crate::worker_threads();
    let mut packs: Vec<(Id, Vec<ChunkWrite>)> = by_pack.into_iter().collect();
    packs.sort_by_key(|(id, _)| *id);
    let n_packs = packs.len() as u64;
    let mut queue = packs.into_iter();
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < workers {
            let Some((pack_id, writes)) = queue.next() else {
                break;
            };
            let (repo, reader, paths, finals, exts, names, progress, cancel) = (
                repo.clone(),
                reader.clone(),
                paths.clone(),
                finals.clone(),
                exts.clone(),
                names.clone(),
                progress.clone(),
                cancel.clone(),
            );
            set.spawn(async move {
                cancel.check()?;
                // A pack bad in every region: its chunks may be stored in other packs too.
                // Otherwise it is reported with the files it would have filled.
                let pack = match fetch_pack(&repo, pack_id).await {
                    Ok(p) => p,
                    Err(e) => {
                        return from_other_packs(
                            &reader,
                            pack_id,
                            &writes,
                            (&paths, &finals, &exts),
                            &progress,
                        )
                        .await
                        .map_err(|_| name_files(e, &writes, &names))
                    }
                };
                progress.add_transferred(pack.plain.len() as u64);
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let mut open: Option<(usize, File)> = None;
                    for (entry, fi, offset) in writes {
                        let raw = pack.blob(&chunk_key, &entry).map_err(|e| match e {
                            RepoError::Corrupt(m) => {
                                RepoError::Corrupt(format!("{}: {m}", names[fi].display()))
                            }
                            other => other,
                        })?;
                        if open.as_ref().is_none_or(|(i, _)| *i != fi) {
                            open = Some((fi, open_for_write(&paths[fi], &finals[fi])?));
                        }
                        let (_, file) = open.as_ref().expect("just opened");
                        write_data(file, &exts[fi], &raw, offset)
                            .map_err(at("write", &finals[fi]))?;
                        progress.add_done(raw.len() as u64);
                    }
                    Ok(())
                })
                .await
                .map_err(|e| RepoError::Invalid(format!("restore task: {e}")))?
            });
        }
        match set.join_next().await {
            Some(r) => r.map_err(|e| RepoError::Invalid(format!("restore task: {e}")))??,
            None => break,
        }
    }

    // Prove every file, then apply metadata (directories deepest first).
    let mut report = RestoreReport {
        packs: n_packs,
        ..Default::default()
    };
    let mut hash_buf = vec![0u8; 1 << 20];
    let mut skipped = Skipped::default();
    for (fi, f) in layout.files.iter().enumerate() {
        cancel.check()?;
        if links.member[fi] {
            continue;
        }
        let got = hash_file(&paths[fi], &mut hash_buf).map_err(|e| match e {
            RepoError::Io(io) => at("read back", &finals[fi])(io),
            other => other,
        })?;
        if f.node.hash.as_deref() != Some(got.as_str()) {
            return Err(RepoError::Corrupt(format!(
                "{}: restored content hash {got} differs from the snapshot's {}",
                f.path.display(),
                f.node.hash.as_deref().unwrap_or("(none)")
            )));
        }
        report.verified_files += 1;
        report.files += 1;
        report.bytes += f.node.size;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&paths[fi])
            .map_err(at("open", &finals[fi]))?;
        attrs::apply(&Handle::Fd(&file), &f.node, opts.apply(), &mut skipped)
            .map_err(at("set metadata of", &finals[fi]))?;
        // The group's other paths: links to this very file (its inode checked), each renamed
        // into place like the file itself.
        let ino = file.metadata().map_err(at("inspect", &finals[fi]))?.ino();
        for &mi in links.of.get(&fi).map(Vec::as_slice).unwrap_or_default() {
            fs::hard_link(&paths[fi], &paths[mi]).map_err(at("hard-link", &finals[mi]))?;
            let m = fs::symlink_metadata(&paths[mi]).map_err(at("inspect", &finals[mi]))?;
            if !m.is_file() || m.ino() != ino {
                return Err(RepoError::Invalid(format!(
                    "{}: replaced during the restore; not linked",
                    finals[mi].display()
                )));
            }
            if opts.overwrite {
                remove_existing(&finals[mi])?;
            }
            fs::rename(&paths[mi], &finals[mi]).map_err(at("rename into place", &finals[mi]))?;
            report.files += 1;
            report.verified_files += 1;
            report.hardlinks += 1;
            report.bytes += layout.files[mi].node.size;
            progress.add_file();
        }
        drop(file);
        if opts.overwrite {
            remove_existing(&finals[fi])?;
        }
        // Only now does the file get its name: it is complete, verified, with its metadata.
        fs::rename(&paths[fi], &finals[fi]).map_err(at("rename into place", &finals[fi]))?;
        progress.add_file();
    }
    for s in &layout.symlinks {
        let path = target.join(&s.path);
        if opts.overwrite {
            remove_existing(&path)?;
        }
        let t = s.node.target_bytes()?;
        std::os::unix::fs::symlink(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&t),
            &path,
        )
        .map_err(at("create symlink", &path))?;
        // A symlink has no descriptor to set these through; lchown, lsetxattr and lutimes
        // never follow it.
        attrs::apply(&Handle::Symlink(&path), &s.node, opts.apply(), &mut skipped)
            .map_err(at("set metadata of", &path))?;
        report.symlinks += 1;
    }
    for s in &layout.specials {
        cancel.check()?;
        let path = target.join(&s.path);
        if opts.overwrite {
            remove_existing(&path)?;
        }
        if attrs::make_special(&path, &s.node, opts.apply(), &mut skipped)
            .map_err(at("create", &path))?
        {
            report.specials += 1;
        }
    }
    for d in layout.dirs.iter().rev() {
        let path = target.join(&d.path);
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(at("open directory", &path))?;
        attrs::apply(&Handle::Fd(&dir), &d.node, opts.apply(), &mut skipped)
            .map_err(at("set metadata of", &path))?;
        report.dirs += 1;
    }
    if opts.no_owner {
        skipped.owners = 0;
    }
    report.warnings = skipped.warnings();
    report.skipped = skipped;
    Ok(report)
}

/// `e`, when it says data is corrupt, with the files that needed the pack's chunks.
fn name_files(e: RepoError, writes: &[ChunkWrite], names: &[PathBuf]) -> RepoError {
    let RepoError::Corrupt(m) = e else {
        return e;
    };
    let mut files: Vec<usize> = writes.iter().map(|(_, fi, _)| *fi).collect();
    files.dedup();
    let shown: Vec<String> = files
        .iter()
        .take(5)
        .map(|&fi| names[fi].display().to_string())
        .collect();
    let more = match files.len().saturating_sub(shown.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    RepoError::Corrupt(format!("files {}{more}: {m}", shown.join(", ")))
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

/// Hardlink groups among the files to restore: the first file of each group (in restore
/// order) is written, the others (`member`) are linked to it (`of`: first → the others).
struct Links {
    member: Vec<bool>,
    of: HashMap<usize, Vec<usize>>,
}

/// Group files by their `hardlink` key. Files of one group must agree on content, else the
/// tree is corrupt: a link must not stand in for different data.
fn hardlink_groups(files: &[Placed]) -> Result<Links> {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    let mut links = Links {
        member: vec![false; files.len()],
        of: HashMap::new(),
    };
    for (fi, f) in files.iter().enumerate() {
        let Some(key) = f.node.hardlink else { continue };
        match first.get(&key) {
            None => {
                first.insert(key, fi);
            }
            Some(&head) => {
                let h = &files[head].node;
                if h.hash != f.node.hash || h.size != f.node.size {
                    return Err(RepoError::Corrupt(format!(
                        "{} and {} are one hardlinked file in the snapshot but their contents differ",
                        files[head].path.display(),
                        f.path.display()
                    )));
                }
                links.member[fi] = true;
                links.of.entry(head).or_default().push(fi);
            }
        }
    }
    Ok(links)
}

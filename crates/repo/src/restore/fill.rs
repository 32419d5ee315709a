//! One batch of a restore: its files created under partial names, every chunk they need
//! fetched pack by pack (each pack once per batch, a few in flight), written at its offsets
//! and hashed as it is written, then each file proven against the manifest's BLAKE3, given
//! its metadata and renamed into place; then its hardlink members, symlinks and special
//! files.
//!
//! Hashing while writing needs the data in file order, but a file's chunks arrive in the
//! order their packs do. Chunks that arrive early wait in a per-file buffer until the bytes
//! before them are hashed; the buffers of a batch share one budget ([`PENDING_BUDGET`]), and
//! a file whose early chunks would exceed it (or a sparse file) is instead read back once
//! it is complete — the one re-read that remains.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    at, extents, hash_file, open_for_write, remove_existing, write_data, Extents, Placed,
    RestoreOptions, RestoreReport,
};
use crate::attrs::{self, Handle, Skipped};
use crate::error::{RepoError, Result};
use crate::pack::PackEntry;
use crate::progress::{Cancel, Progress};
use crate::reader::{fetch_stream, BlobReader};
use crate::Id;

/// Bytes of early chunks a batch may hold while waiting to be hashed in order.
pub(super) const PENDING_BUDGET: usize = 64 << 20;

/// One chunk to write: where it is in its pack, which file of the batch and at which
/// data offset.
type ChunkWrite = (PackEntry, usize, u64);

/// What a batch restores; entries are relative to the target.
#[derive(Default)]
pub(super) struct Batch {
    pub files: Vec<Placed>,
    pub symlinks: Vec<Placed>,
    pub specials: Vec<Placed>,
    /// Chunk references of `files`, to bound a batch by chunks as well as by entries.
    pub chunks: usize,
}

impl Batch {
    pub fn entries(&self) -> usize {
        self.files.len() + self.symlinks.len() + self.specials.len()
    }

    /// About what the batch's nodes and paths hold on the heap (for [`super::memtrace`]).
    pub fn held_bytes(&self) -> usize {
        [&self.files, &self.symlinks, &self.specials]
            .iter()
            .flat_map(|v| v.iter())
            .map(|p| std::mem::size_of::<Placed>() + p.path.as_os_str().len() + node_bytes(&p.node))
            .sum()
    }
}

/// About what one tree node holds on the heap beyond its own size (strings, chunk ids).
pub(super) fn node_bytes(n: &crate::tree::Node) -> usize {
    let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    std::mem::size_of::<crate::tree::Node>()
        + s(&n.name)
        + s(&n.name_hex)
        + s(&n.hash)
        + s(&n.target)
        + s(&n.user)
        + s(&n.group)
        + n.chunks.len() * std::mem::size_of::<Id>()
}

/// A restored hardlink group's first file: later paths of the group are linked to it.
pub(super) struct LinkHead {
    path: PathBuf,
    ino: u64,
    hash: Option<String>,
    size: u64,
}

/// Hardlink groups met so far (`[device, inode]` at backup → the file restored for it):
/// the only per-file state a restore keeps across batches.
pub(super) type Links = HashMap<(u64, u64), LinkHead>;

/// What every batch of one restore shares.
pub(super) struct Ctx<'a> {
    pub reader: &'a Arc<BlobReader>,
    pub target: &'a Path,
    pub opts: &'a RestoreOptions,
    pub progress: &'a Arc<Progress>,
    pub cancel: &'a Cancel,
    pub trace: &'a super::memtrace::MemTrace,
}

/// The in-order hash of one file being written. The hasher (≈ 2 KB) exists only while the
/// file is partly hashed: a one-chunk file is hashed in one call, and a finished file keeps
/// only its 32-byte hash, so a batch of 8192 small files does not hold 8192 hashers.
struct Hashing {
    hasher: Option<Box<blake3::Hasher>>,
    /// The hash, once all `len` bytes went through in order.
    done: Option<blake3::Hash>,
    /// The file's data length (its size, for a dense file).
    len: u64,
    /// Data offset up to which the content is hashed.
    next: u64,
    /// Chunks that arrived before the bytes ahead of them, by data offset.
    early: BTreeMap<u64, Vec<u8>>,
    /// Give up hashing in order: read the file back when it is complete.
    reread: bool,
}

impl Hashing {
    fn new(len: u64, reread: bool) -> Hashing {
        Hashing {
            hasher: None,
            done: if len == 0 && !reread {
                Some(blake3::hash(&[]))
            } else {
                None
            },
            len,
            next: 0,
            early: BTreeMap::new(),
            reread,
        }
    }

    /// Take `raw` at data offset `at` (copying it only when it arrives early).
    fn feed(&mut self, at: u64, raw: &[u8], budget: &AtomicUsize) {
        if self.reread {
            return;
        }
        if at != self.next {
            if budget.fetch_add(raw.len(), Ordering::Relaxed) + raw.len() > PENDING_BUDGET {
                budget.fetch_sub(raw.len(), Ordering::Relaxed);
                self.give_up(budget);
            } else {
                self.early.insert(at, raw.to_vec());
            }
            return;
        }
        self.update(raw);
        while let Some(buf) = self.early.remove(&self.next) {
            budget.fetch_sub(buf.len(), Ordering::Relaxed);
            self.update(&buf);
        }
    }

    fn update(&mut self, raw: &[u8]) {
        let end = self.next + raw.len() as u64;
        if self.next == 0 && end == self.len {
            self.done = Some(blake3::hash(raw));
        } else {
            let h = self
                .hasher
                .get_or_insert_with(|| Box::new(blake3::Hasher::new()));
            h.update(raw);
            if end == self.len {
                self.done = Some(h.finalize());
                self.hasher = None;
            }
        }
        self.next = end;
    }

    fn give_up(&mut self, budget: &AtomicUsize) {
        let held: usize = self.early.values().map(Vec::len).sum();
        budget.fetch_sub(held, Ordering::Relaxed);
        self.early.clear();
        self.hasher = None;
        self.reread = true;
    }

    /// The file's hash when it was hashed whole and in order; `None`: read it back.
    fn result(&self) -> Option<String> {
        match (
            &self.done,
            self.reread,
            self.next == self.len,
            self.early.is_empty(),
        ) {
            (Some(h), false, true, true) => Some(h.to_hex().to_string()),
            _ => None,
        }
    }
}

/// The files of a batch as the writing tasks see them.
struct Files {
    partial: Vec<PathBuf>,
    finals: Vec<PathBuf>,
    names: Vec<PathBuf>,
    exts: Vec<Extents>,
    hashing: Vec<Mutex<Hashing>>,
    budget: AtomicUsize,
}

impl Files {
    /// Write one chunk's bytes and hash them.
    fn deliver(&self, file: &File, fi: usize, at: u64, raw: &[u8]) -> Result<()> {
        write_data(file, &self.exts[fi], raw, at).map_err(super::at("write", &self.finals[fi]))?;
        self.hashing[fi]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .feed(at, raw, &self.budget);
        Ok(())
    }
}

/// The files a batch is still writing, under names that do not look finished
/// (`.lifeboat-partial-<run>-<n>` beside their final name). Dropping it removes those that
/// were not renamed into place, so a failed or cancelled restore leaves none behind.
struct PartialFiles(Vec<PathBuf>);

impl PartialFiles {
    fn beside(finals: &[PathBuf]) -> PartialFiles {
        let run = format!("{:08x}", rand::random::<u32>());
        PartialFiles(
            finals
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.parent()
                        .unwrap_or(Path::new("."))
                        .join(format!(".lifeboat-partial-{run}-{i}"))
                })
                .collect(),
        )
    }
}

impl Drop for PartialFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            // Renamed into place already, or never created: nothing to do.
            let _ = fs::remove_file(p);
        }
    }
}

/// Restore one batch.
pub(super) async fn restore_batch(
    ctx: &Ctx<'_>,
    batch: Batch,
    links: &mut Links,
    report: &mut RestoreReport,
    skipped: &mut Skipped,
) -> Result<()> {
    let Batch {
        files,
        symlinks,
        specials,
        ..
    } = batch;
    ctx.trace.start();
    let finals: Vec<PathBuf> = files.iter().map(|f| ctx.target.join(&f.path)).collect();
    let guard = PartialFiles::beside(&finals);
    // Members of a hardlink group whose first file is restored (earlier, or in this batch).
    let mut member: Vec<Option<(u64, u64)>> = vec![None; files.len()];
    let mut heads: HashMap<(u64, u64), usize> = HashMap::new();
    for (fi, f) in files.iter().enumerate() {
        let Some(key) = f.node.hardlink else { continue };
        let head = match (links.get(&key), heads.get(&key)) {
            (Some(h), _) => Some((h.path.clone(), h.hash.clone(), h.size)),
            (None, Some(&hi)) => Some((
                finals[hi].clone(),
                files[hi].node.hash.clone(),
                files[hi].node.size,
            )),
            (None, None) => None,
        };
        match head {
            None => {
                heads.insert(key, fi);
            }
            Some((path, hash, size)) => {
                if hash != f.node.hash || size != f.node.size {
                    return Err(RepoError::Corrupt(format!(
                        "{} and {} are one hardlinked file in the snapshot but their contents differ",
                        path.strip_prefix(ctx.target).unwrap_or(&path).display(),
                        f.path.display()
                    )));
                }
                member[fi] = Some(key);
            }
        }
    }

    // Create and size every file, and group its chunks by pack, packs in order of first
    // use so each file's chunks mostly arrive in order.
    let reader = ctx.reader;
    let mut pack_of: HashMap<Id, usize> = HashMap::new();
    let mut packs: Vec<(Id, Vec<ChunkWrite>)> = Vec::new();
    let mut total = 0u64;
    for (fi, f) in files.iter().enumerate() {
        ctx.cancel.check()?;
        if member[fi].is_some() {
            continue; // linked to its group's first file once that is complete
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&guard.0[fi])
            .map_err(at("create", &finals[fi]))?;
        file.set_len(f.node.size)
            .map_err(at("allocate", &finals[fi]))?;
        let mut offset = 0u64;
        for c in &f.node.chunks {
            let (pack, entry) = plan_chunk(reader, c, &f.path).await?;
            let pi = *pack_of.entry(pack).or_insert_with(|| {
                packs.push((pack, Vec::new()));
                packs.len() - 1
            });
            packs[pi].1.push((entry, fi, offset));
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
    if ctx.opts.expected_bytes.is_none() {
        ctx.progress.add_total(total);
    }
    drop(pack_of);
    let shared = Arc::new(Files {
        hashing: files
            .iter()
            .map(|f| {
                let len = f.node.check_sparse().unwrap_or(f.node.size);
                Mutex::new(Hashing::new(len, f.node.sparse.is_some()))
            })
            .collect(),
        exts: files.iter().map(|f| extents(&f.node)).collect(),
        names: files.iter().map(|f| f.path.clone()).collect(),
        partial: guard.0.clone(),
        finals,
        budget: AtomicUsize::new(0),
    });
    report.packs += packs.len() as u64;
    if ctx.trace.on() {
        let plan: usize = packs
            .iter()
            .map(|(_, w)| w.capacity() * std::mem::size_of::<ChunkWrite>())
            .sum();
        let hashing = files.len() * std::mem::size_of::<Mutex<Hashing>>();
        ctx.trace
            .end("batch: create files, plan", (plan + hashing) as u64);
        ctx.trace.start();
    }
    let in_flight = fill(ctx, packs, &shared).await?;
    ctx.trace
        .end("batch: fill (packs in flight)", in_flight as u64);
    ctx.trace.start();

    // Prove every written file, apply its metadata, give it its name.
    let mut hash_buf: Option<Vec<u8>> = None;
    for (fi, f) in files.iter().enumerate() {
        ctx.cancel.check()?;
        if member[fi].is_some() {
            continue;
        }
        let (partial, fin) = (&shared.partial[fi], &shared.finals[fi]);
        let h = std::mem::replace(
            &mut *shared.hashing[fi].lock().unwrap_or_else(|p| p.into_inner()),
            Hashing::new(0, true),
        );
        let got = match h.result() {
            Some(hash) => hash,
            None => {
                let buf = hash_buf.get_or_insert_with(|| vec![0u8; 1 << 20]);
                hash_file(partial, buf).map_err(|e| match e {
                    RepoError::Io(io) => at("read back", fin)(io),
                    other => other,
                })?
            }
        };
        if f.node.hash.as_deref() != Some(got.as_str()) {
            return Err(RepoError::Corrupt(format!(
                "{}: restored content hash {got} differs from the snapshot's {}",
                f.path.display(),
                f.node.hash.as_deref().unwrap_or("(none)")
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(partial)
            .map_err(at("open", fin))?;
        attrs::apply(&Handle::Fd(&file), &f.node, ctx.opts.apply(), skipped)
            .map_err(at("set metadata of", fin))?;
        let ino = file.metadata().map_err(at("inspect", fin))?.ino();
        drop(file);
        if ctx.opts.overwrite {
            remove_existing(fin)?;
        }
        // Only now does the file get its name: it is complete, verified, with its metadata.
        fs::rename(partial, fin).map_err(at("rename into place", fin))?;
        if let Some(key) = f.node.hardlink {
            links.insert(
                key,
                LinkHead {
                    path: fin.clone(),
                    ino,
                    hash: f.node.hash.clone(),
                    size: f.node.size,
                },
            );
        }
        report.verified_files += 1;
        report.files += 1;
        report.bytes += f.node.size;
        ctx.progress.add_file();
    }
    // A group's other paths: links to the restored first file (its inode checked), each
    // made under a partial name and renamed into place like the file itself.
    for (fi, f) in files.iter().enumerate() {
        let Some(key) = member[fi] else { continue };
        let head = links
            .get(&key)
            .expect("the group's first file was restored");
        let (partial, fin) = (&shared.partial[fi], &shared.finals[fi]);
        fs::hard_link(&head.path, partial).map_err(at("hard-link", fin))?;
        let m = fs::symlink_metadata(partial).map_err(at("inspect", fin))?;
        if !m.is_file() || m.ino() != head.ino {
            return Err(RepoError::Invalid(format!(
                "{}: replaced during the restore; not linked",
                head.path.display()
            )));
        }
        if ctx.opts.overwrite {
            remove_existing(fin)?;
        }
        fs::rename(partial, fin).map_err(at("rename into place", fin))?;
        report.files += 1;
        report.verified_files += 1;
        report.hardlinks += 1;
        report.bytes += f.node.size;
        ctx.progress.add_file();
    }
    drop(guard);
    for s in &symlinks {
        let path = ctx.target.join(&s.path);
        if ctx.opts.overwrite {
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
        attrs::apply(&Handle::Symlink(&path), &s.node, ctx.opts.apply(), skipped)
            .map_err(at("set metadata of", &path))?;
        report.symlinks += 1;
    }
    ctx.trace.end("batch: verify, rename, links", 0);
    for s in &specials {
        ctx.cancel.check()?;
        let path = ctx.target.join(&s.path);
        if ctx.opts.overwrite {
            remove_existing(&path)?;
        }
        if attrs::make_special(&path, &s.node, ctx.opts.apply(), skipped)
            .map_err(at("create", &path))?
        {
            report.specials += 1;
        }
    }
    Ok(())
}

/// Where to read chunk `c` of file `path` from: its best location, whose raw length places
/// the file's later chunks. When its candidates disagree on that length (another chunk shares
/// its key in the compact index, see [`crate::index_lookup`]), the chunk is read once here
/// to find the location that holds it.
async fn plan_chunk(reader: &BlobReader, c: &Id, path: &Path) -> Result<(Id, PackEntry)> {
    let candidates = reader.index().candidates(c, None);
    match candidates.split_first() {
        None => Err(RepoError::Corrupt(format!(
            "{}: chunk {} is in no region's index (run `lifeboat verify`)",
            path.display(),
            c.short()
        ))),
        Some(((pack, entry, _), rest))
            if rest
                .iter()
                .all(|(_, e, _)| e.raw_length == entry.raw_length) =>
        {
            Ok((*pack, *entry))
        }
        Some(_) => reader.locate(c).await.map_err(|e| match e {
            RepoError::Corrupt(m) => RepoError::Corrupt(format!("{}: {m}", path.display())),
            other => other,
        }),
    }
}

/// Fetch each pack of `packs` (a few in flight), verify its chunks and write them. Returns
/// the most stored bytes of packs that were held at once.
async fn fill(
    ctx: &Ctx<'_>,
    packs: Vec<(Id, Vec<ChunkWrite>)>,
    files: &Arc<Files>,
) -> Result<usize> {
    let held = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let repo = ctx.reader.repo().clone();
    let chunk_key = *repo.secrets().chunk_key();
    let workers = crate::worker_threads();
    let mut queue = packs.into_iter();
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < workers {
            let Some((pack_id, writes)) = queue.next() else {
                break;
            };
            let (repo, reader, files, progress, cancel, held) = (
                repo.clone(),
                ctx.reader.clone(),
                files.clone(),
                ctx.progress.clone(),
                ctx.cancel.clone(),
                held.clone(),
            );
            set.spawn(async move {
                cancel.check()?;
                // A pack bad in every region: its chunks may be stored in other packs too.
                // Otherwise it is reported with the files it would have filled.
                let mut pack = match fetch_stream(&repo, pack_id).await {
                    Ok(p) => p,
                    Err(e) => {
                        return from_other_packs(&reader, pack_id, &writes, &files, &progress)
                            .await
                            .map_err(|_| name_files(e, &writes, &files.names))
                    }
                };
                progress.add_transferred(pack.stored_len as u64);
                let now = held.0.fetch_add(pack.stored_len, Ordering::Relaxed) + pack.stored_len;
                held.1.fetch_max(now, Ordering::Relaxed);
                let (blocking_files, blocking_progress) = (files.clone(), progress.clone());
                let failed = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
                    let (files, progress) = (blocking_files, blocking_progress);
                    let mut open: Option<(usize, File)> = None;
                    let mut writes = writes;
                    // Blobs that did not verify here: read from their other locations below.
                    let mut failed = Vec::new();
                    // In pack order, each age chunk is decrypted once (stable: a chunk
                    // two files share keeps their order).
                    writes.sort_by_key(|(entry, _, _)| entry.offset);
                    for (entry, fi, offset) in writes {
                        let raw = match pack.blob(&chunk_key, &entry) {
                            Ok(raw) => raw,
                            Err(e) => {
                                failed.push(((entry, fi, offset), e));
                                continue;
                            }
                        };
                        if open.as_ref().is_none_or(|(i, _)| *i != fi) {
                            let f = open_for_write(&files.partial[fi], &files.finals[fi])?;
                            open = Some((fi, f));
                        }
                        let (_, file) = open.as_ref().expect("just opened");
                        files.deliver(file, fi, offset, &raw)?;
                        progress.add_done(raw.len() as u64);
                    }
                    held.0.fetch_sub(pack.stored_len, Ordering::Relaxed);
                    Ok(failed)
                })
                .await
                .map_err(|e| RepoError::Invalid(format!("restore task: {e}")))??;
                // A blob that is not the wanted chunk at this place (another chunk sharing
                // its key in the compact index, or a bad entry): its other locations.
                for ((entry, fi, offset), e) in failed {
                    let here = |p: &Id, c: &PackEntry| {
                        *p == pack_id && c.offset == entry.offset && c.length == entry.length
                    };
                    let raw = match reader.read_except(&entry.id, here).await {
                        Ok((raw, _, _)) if raw.len() as u64 == u64::from(entry.raw_length) => raw,
                        _ => {
                            return Err(match e {
                                RepoError::Corrupt(m) => RepoError::Corrupt(format!(
                                    "{}: {m}",
                                    files.names[fi].display()
                                )),
                                other => other,
                            })
                        }
                    };
                    let file = open_for_write(&files.partial[fi], &files.finals[fi])?;
                    files.deliver(&file, fi, offset, &raw)?;
                    progress.add_done(raw.len() as u64);
                }
                Ok(())
            });
        }
        match set.join_next().await {
            Some(r) => r.map_err(|e| RepoError::Invalid(format!("restore task: {e}")))??,
            None => break,
        }
    }
    Ok(held.1.load(Ordering::Relaxed))
}

/// Fill `writes` from the other locations of their chunks, avoiding pack `bad`.
async fn from_other_packs(
    reader: &BlobReader,
    bad: Id,
    writes: &[ChunkWrite],
    files: &Files,
    progress: &Progress,
) -> Result<()> {
    for (entry, fi, offset) in writes {
        let raw = reader.read_avoiding(&entry.id, Some(bad)).await?;
        let file = open_for_write(&files.partial[*fi], &files.finals[*fi])?;
        files.deliver(&file, *fi, *offset, &raw)?;
        progress.add_done(raw.len() as u64);
    }
    Ok(())
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

//! The backup pipeline: chunks in, packs out to every region, then index, then manifest.
//!
//! ```text
//! caller thread ──chunks──▶ compressors (N threads) ──blobs──▶ packer thread
//!   (hashing, dedup)           (zstd)                          (age stream, 16 MiB)
//!        ──pack──▶ uploader task: put to every healthy region ──▶ index file every K packs
//! finish(): drain, final index, then the manifest per healthy region (the commit).
//! ```
//!
//! New chunks travel in batches (up to 1 MiB or 64 chunks), so a tree of small files costs
//! one hand-off per batch, not per file. Every channel is bounded, so memory is bounded by
//! the queue depths × batch/pack sizes and never by the size of the data. A region whose put fails (after the retry wrapper gave up)
//! is dropped from the rest of the backup: it gets no further index or manifest, so it stays
//! a valid repository without this snapshot, and the snapshot is *degraded*. A target region
//! whose `index/` could not be listed when the index was loaded is treated the same way from
//! the start: nothing is known to be stored there, and re-uploading everything is no cure
//! for a transient listing error.
//!
//! Trees and data never share a pack (format v2's pack types): the packer keeps a tree pack
//! and a data pack open, so restore planning and tree checks fetch metadata packs only.
//!
//! Each chunk goes only to the target regions that lack it (healing after a degraded
//! backup): the packer keeps one open pack per set of destination regions (normally one),
//! and each pack and its index file are put only to the regions of its set.
//!
//! A thread that panics is a fatal pipeline error (caught where it happens and again when
//! the thread is joined): the backup fails and no manifest is written.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use tokio::runtime::Handle;

use crate::error::{RepoError, Result};
use crate::id::IdRule;
use crate::keys::chunk_id;
use crate::pack::{
    compress, BlobKind, Codec, Compressors, FinishedPack, PackEntry, PackWriter, SealedBlob,
};
use crate::progress::{Cancel, Progress};
use crate::regions::RegionSet;
use crate::repo::{pack_name, Repository};
use crate::snapshot::{Manifest, Stats};
use crate::tree::Tree;
use crate::{index, Id, Index};

/// Packs uploaded between two index files: bounds what a crash makes the next run re-upload.
pub const INDEX_EVERY_PACKS: usize = 4;
/// Packs being uploaded at once.
const PACKS_IN_FLIGHT: usize = 3;
/// New chunks travel to the compressors in batches of up to this many bytes (or
/// [`BATCH_CHUNKS`] chunks): one channel hand-off per small file cost more than hashing it
/// (a tree of small files is one chunk per file), and on a busy machine each hand-off can
/// wait for the other thread to be scheduled. A chunk this large goes alone, as before.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_CHUNKS: usize = 64;

/// A new chunk on its way to the compressors, with the regions it must be stored in.
struct ChunkToStore {
    id: Id,
    kind: BlobKind,
    data: Vec<u8>,
    regions: RegionSet,
    codec: Codec,
}

/// Computes chunk ids (keyed BLAKE3) with a writer's key, on any thread. The key is not
/// printable.
#[derive(Clone)]
pub struct ChunkIds {
    key: [u8; 32],
}

impl std::fmt::Debug for ChunkIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkIds(<key>)")
    }
}

impl ChunkIds {
    /// The chunk and its id; the only way to make a [`HashedChunk`], so an id handed to
    /// [`BackupWriter::add_hashed`] is always the hash of its data.
    pub fn hash(&self, data: Vec<u8>) -> HashedChunk {
        HashedChunk {
            id: chunk_id(&self.key, &data),
            data,
        }
    }
}

/// A chunk with its id, made by [`ChunkIds::hash`].
#[derive(Debug)]
pub struct HashedChunk {
    id: Id,
    data: Vec<u8>,
}

impl HashedChunk {
    pub fn id(&self) -> Id {
        self.id
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A pipeline stage, for [`BackupWriter::inject_panic`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    None = 0,
    Compressor = 1,
    Packer = 2,
    Uploader = 3,
}

/// The pipeline's shared record: per-region failures, the first fatal error and counters.
#[derive(Debug, Default, Clone)]
struct PipelineState {
    /// `Some(error)` once a region has failed.
    failed: Vec<Option<String>>,
    /// First fatal pipeline error (a thread died).
    fatal: Option<String>,
    packs: u64,
    stored_bytes: u64,
}

/// The result of a committed backup.
#[derive(Debug)]
pub struct BackupOutcome {
    pub snapshot: Id,
    pub manifest: Manifest,
    /// Regions holding the complete snapshot.
    pub complete: Vec<String>,
    /// Regions that failed during the backup, with the error.
    pub failed: Vec<(String, String)>,
}

impl BackupOutcome {
    pub fn is_degraded(&self) -> bool {
        !self.failed.is_empty()
    }
}

/// Writes one snapshot. Call [`add`](Self::add) from a blocking thread, then
/// [`finish`](Self::finish) or [`abort`](Self::abort).
pub struct BackupWriter {
    repo: Arc<Repository>,
    index: Arc<Index>,
    /// Target regions this backup can write to (the targets minus unlisted ones).
    write_to: RegionSet,
    chunk_key: [u8; 32],
    seen: HashSet<Id>,
    compress_tx: Option<Sender<Vec<ChunkToStore>>>,
    /// New chunks not yet handed to the compressors, and their bytes.
    batch: Vec<ChunkToStore>,
    batch_bytes: usize,
    threads: Vec<JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Mutex<PipelineState>>,
    handle: Handle,
    cancel: Cancel,
    progress: Arc<Progress>,
    panic_at: Arc<AtomicU8>,
    /// How new chunks are stored: the repository's zstd level unless the plan chose.
    codec: Codec,
    pub stats: Stats,
}

impl BackupWriter {
    /// Start the pipeline for a backup of `plan` writing to the regions at `targets`
    /// (indices into `repo.regions`).
    pub fn start(
        repo: Arc<Repository>,
        index: Arc<Index>,
        plan: &str,
        targets: &[usize],
        handle: Handle,
        cancel: Cancel,
        progress: Arc<Progress>,
    ) -> Result<BackupWriter> {
        if targets.is_empty() {
            return Err(RepoError::Invalid("no region to write to".into()));
        }
        let mut failed = vec![Some(NOT_A_TARGET.to_string()); repo.regions.len()];
        for &t in targets {
            failed[t] = None;
        }
        for (i, why) in index.unlisted() {
            if failed[*i].is_none() {
                tracing::error!(region = %repo.regions[*i].name, error = %why, "index/ could not be listed; the region is down for this backup");
                failed[*i] = Some(format!("index/ could not be listed: {why}"));
            }
        }
        let write_to = RegionSet::of((0..failed.len()).filter(|&i| failed[i].is_none()));
        if write_to.is_empty() {
            return Err(RepoError::Unavailable(format!(
                "no target region can be written: {}",
                describe_failures(&repo, &failed)
            )));
        }
        let panic_at = Arc::new(AtomicU8::new(Stage::None as u8));
        let shared = Arc::new(Mutex::new(PipelineState {
            failed,
            ..Default::default()
        }));
        let workers = crate::worker_threads();
        let (compress_tx, compress_rx) = bounded::<Vec<ChunkToStore>>(workers * 2);
        let (blob_tx, blob_rx) = bounded::<Vec<(RegionSet, SealedBlob)>>(workers * 2);
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<(RegionSet, FinishedPack)>(1);
        let mut threads = Vec::new();
        for n in 0..workers {
            let rx = compress_rx.clone();
            let tx = blob_tx.clone();
            let (sh, pa) = (shared.clone(), panic_at.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lifeboat-zstd-{n}"))
                    .spawn(move || {
                        guarded(&sh.clone(), "compressor", || compress_loop(rx, tx, sh, pa))
                    })?,
            );
        }
        drop(blob_tx);
        let recipients: Vec<age::x25519::Recipient> =
            repo.recipients().into_iter().cloned().collect();
        let pack_size = repo.config.pack_size as u64;
        let rule = repo.id_rule();
        let (sh, pa) = (shared.clone(), panic_at.clone());
        threads.push(
            std::thread::Builder::new()
                .name("lifeboat-pack".into())
                .spawn(move || {
                    guarded(&sh.clone(), "packer", || {
                        pack_loop(blob_rx, pack_tx, recipients, pack_size, rule, sh, pa)
                    })
                })?,
        );
        let upload = handle.spawn(upload_loop(
            repo.clone(),
            plan.to_string(),
            pack_rx,
            shared.clone(),
            progress.clone(),
            panic_at.clone(),
        ));
        // The uploader's panic becomes the pipeline's fatal error like a thread's.
        let sh = shared.clone();
        let uploader = handle.spawn(async move {
            if let Err(e) = upload.await {
                let why = match e.try_into_panic() {
                    Ok(p) => format!("uploader panicked: {}", panic_message(&*p)),
                    Err(e) => format!("uploader task: {e}"),
                };
                set_fatal(&sh, why);
            }
        });
        let codec = Codec::Zstd(repo.config.zstd_level);
        Ok(BackupWriter {
            codec,
            chunk_key: *repo.secrets().chunk_key(),
            repo,
            index,
            write_to,
            seen: HashSet::new(),
            compress_tx: Some(compress_tx),
            batch: Vec::new(),
            batch_bytes: 0,
            threads,
            uploader: Some(uploader),
            shared,
            handle,
            cancel,
            progress,
            panic_at,
            stats: Stats::default(),
        })
    }

    /// Store this backup's new chunks with `codec` (a plan's `compression`) instead of the
    /// repository's zstd level.
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// Test hook: make the given pipeline stage panic on its next item, to prove that a
    /// panicked thread fails the backup instead of losing data silently.
    #[doc(hidden)]
    pub fn inject_panic(&self, stage: Stage) {
        self.panic_at.store(stage as u8, Ordering::SeqCst);
    }

    /// The chunk id of `data` (keyed hash).
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        chunk_id(&self.chunk_key, data)
    }

    /// Is this chunk already stored in every target region (or queued in this backup)?
    pub fn is_known(&self, id: &Id) -> bool {
        self.seen.contains(id) || self.index.has_in_all(id, self.write_to)
    }

    /// A handle that computes this repository's chunk ids on other threads (the source's
    /// readers), so the caller thread only deduplicates and hands chunks on.
    pub fn chunk_ids(&self) -> ChunkIds {
        ChunkIds {
            key: self.chunk_key,
        }
    }

    /// Add a chunk; returns its id. Known chunks are not stored again.
    pub fn add(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<Id> {
        let id = self.chunk_id(&data);
        self.add_with_id(kind, id, data)
    }

    /// Add a chunk whose id a [`ChunkIds`] of this writer computed (on another thread).
    pub fn add_hashed(&mut self, kind: BlobKind, chunk: HashedChunk) -> Result<Id> {
        self.add_with_id(kind, chunk.id, chunk.data)
    }

    fn add_with_id(&mut self, kind: BlobKind, id: Id, data: Vec<u8>) -> Result<Id> {
        self.cancel.check()?;
        if self.seen.contains(&id) {
            return Ok(id);
        }
        // Only the target regions that lack it: a chunk a degraded backup left in one region
        // is not stored there again.
        let regions = self.write_to.minus(self.index.regions_of(&id));
        if regions.is_empty() {
            return Ok(id);
        }
        self.seen.insert(id);
        self.stats.new_chunks += 1;
        self.stats.new_bytes += data.len() as u64;
        self.batch_bytes += data.len();
        self.batch.push(ChunkToStore {
            id,
            kind,
            data,
            regions,
            codec: self.codec,
        });
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
            self.send_batch()?;
        }
        Ok(id)
    }

    /// Hand the pending batch of new chunks to the compressors.
    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let tx = self.compress_tx.as_ref().ok_or(RepoError::Cancelled)?;
        if tx.send(batch).is_err() {
            // A stage stopped: wait for all of them so the error says why.
            let _ = self.drain();
            return Err(self.pipeline_error());
        }
        Ok(())
    }

    /// Serialize and store a tree; returns its id.
    pub fn add_tree(&mut self, tree: &mut Tree) -> Result<Id> {
        let bytes = tree.to_bytes()?;
        self.add(BlobKind::Tree, bytes)
    }

    fn pipeline_error(&self) -> RepoError {
        let sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &sh.fatal {
            Some(e) => RepoError::Invalid(format!("backup pipeline failed: {e}")),
            None => RepoError::Invalid(format!(
                "every region failed: {}",
                describe_failures(&self.repo, &sh.failed)
            )),
        }
    }

    /// Drain the pipeline: every queued chunk is packed, uploaded and indexed.
    fn drain(&mut self) -> Result<PipelineState> {
        if let Some(tx) = self.compress_tx.take() {
            let batch = std::mem::take(&mut self.batch);
            // A send fails only when the compressors stopped, which the joins below report.
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
        }
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("pipeline").to_string();
            if let Err(p) = t.join() {
                set_fatal(
                    &self.shared,
                    format!("thread {name} panicked: {}", panic_message(&p)),
                );
            }
        }
        if let Some(u) = self.uploader.take() {
            self.handle
                .block_on(u)
                .map_err(|e| RepoError::Invalid(format!("uploader task: {e}")))?;
        }
        // The pipeline's buffers are not needed after it (a daemon runs on for hours).
        crate::buffers::clear();
        let sh = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(e) = &sh.fatal {
            return Err(RepoError::Invalid(format!("backup pipeline failed: {e}")));
        }
        Ok(sh)
    }

    /// Stop without committing. Packs already uploaded stay indexed so the next backup
    /// reuses them; no manifest is written, so no partial snapshot is visible.
    pub fn abort(mut self) {
        let _ = self.drain();
    }

    /// Upload everything, then commit the manifest in every region that got every pack and
    /// index file. Blocks; call from a blocking thread.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<BackupOutcome> {
        let sh = self.drain()?;
        self.cancel.check()?;
        let healthy: Vec<usize> = (0..self.repo.regions.len())
            .filter(|&i| sh.failed[i].is_none())
            .collect();
        if healthy.is_empty() {
            return Err(RepoError::Invalid(format!(
                "every region failed: {}",
                describe_failures(&self.repo, &sh.failed)
            )));
        }
        self.stats.packs = sh.packs;
        self.stats.stored_bytes = sh.stored_bytes;
        manifest.stats.new_bytes = self.stats.new_bytes;
        manifest.stats.new_chunks = self.stats.new_chunks;
        manifest.stats.packs = sh.packs;
        manifest.stats.stored_bytes = sh.stored_bytes;
        manifest.committed_ns = crate::clock::now_nanos();
        let sealed = self.repo.seal_manifest(&manifest)?;
        let id = self.repo.id_rule().id_of(&sealed)?;
        let name = format!("snapshots/{id}");
        let mut failed: Vec<(String, String)> = (0..self.repo.regions.len())
            .filter_map(|i| match &sh.failed[i] {
                Some(e) if e != NOT_A_TARGET => {
                    Some((self.repo.regions[i].name.clone(), e.clone()))
                }
                _ => None,
            })
            .collect();
        let mut complete = Vec::new();
        let repo = self.repo.clone();
        let results = self.handle.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            let mut tasks = std::collections::HashMap::new();
            for &i in &healthy {
                let b = repo.regions[i].backend.clone();
                let (n, s) = (name.clone(), sealed.clone());
                tasks.insert(set.spawn(async move { b.put(&n, s).await }).id(), i);
            }
            // A put that panicked commits nothing in its region; the others still count.
            let mut out = Vec::new();
            while let Some(r) = set.join_next_with_id().await {
                out.push(match r {
                    Ok((id, res)) => (tasks[&id], res.map_err(|e| e.to_string())),
                    Err(e) => (tasks[&e.id()], Err(format!("manifest put: {e}"))),
                });
            }
            out
        });
        for (i, r) in results {
            match r {
                Ok(()) => complete.push(i),
                Err(e) => failed.push((self.repo.regions[i].name.clone(), e)),
            }
        }
        if complete.is_empty() {
            return Err(RepoError::Invalid(format!(
                "could not commit the snapshot manifest in any region: {}",
                failed
                    .iter()
                    .map(|(r, e)| format!("{r}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        complete.sort();
        if let Some(c) = self.repo.meta_cache() {
            c.put(&name, &sealed);
        }
        Ok(BackupOutcome {
            snapshot: id,
            manifest,
            complete: complete
                .iter()
                .map(|&i| self.repo.regions[i].name.clone())
                .collect(),
            failed,
        })
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

impl Drop for BackupWriter {
    fn drop(&mut self) {
        // Closing the channels lets every thread and the uploader wind down on their own.
        self.compress_tx = None;
    }
}

fn describe_failures(repo: &Repository, failed: &[Option<String>]) -> String {
    failed
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| format!("{}: {e}", repo.regions[i].name)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a region that this backup does not write to counts as "failed" in the state.
const NOT_A_TARGET: &str = "not a target of this backup";

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Run a pipeline thread's body; a panic becomes the pipeline's fatal error at once, so the
/// producer stops and nothing is committed.
fn guarded(shared: &Mutex<PipelineState>, what: &str, body: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(body)) {
        tracing::error!(stage = what, "backup pipeline thread panicked");
        set_fatal(shared, format!("{what} panicked: {}", panic_message(&*p)));
    }
}

fn maybe_panic(panic_at: &AtomicU8, stage: Stage) {
    if panic_at.load(Ordering::Relaxed) == stage as u8 {
        panic!("injected panic in the {stage:?} stage");
    }
}

fn set_fatal(shared: &Mutex<PipelineState>, e: impl ToString) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    sh.fatal.get_or_insert(e.to_string());
}

fn compress_loop(
    rx: Receiver<Vec<ChunkToStore>>,
    tx: Sender<Vec<(RegionSet, SealedBlob)>>,
    shared: Arc<Mutex<PipelineState>>,
    panic_at: Arc<AtomicU8>,
) {
    let mut z = match Compressors::new() {
        Ok(z) => z,
        Err(e) => return set_fatal(&shared, e),
    };
    for batch in rx {
        let mut sealed = Vec::with_capacity(batch.len());
        for job in batch {
            maybe_panic(&panic_at, Stage::Compressor);
            let raw_length = job.data.len() as u32;
            match compress(&mut z, job.codec, job.data) {
                Ok((compression, payload)) => sealed.push((
                    job.regions,
                    SealedBlob {
                        id: job.id,
                        kind: job.kind,
                        compression,
                        raw_length,
                        payload,
                    },
                )),
                Err(e) => return set_fatal(&shared, e),
            }
        }
        if tx.send(sealed).is_err() {
            return;
        }
    }
}

fn pack_loop(
    rx: Receiver<Vec<(RegionSet, SealedBlob)>>,
    tx: tokio::sync::mpsc::Sender<(RegionSet, FinishedPack)>,
    recipients: Vec<age::x25519::Recipient>,
    pack_size: u64,
    rule: IdRule,
    shared: Arc<Mutex<PipelineState>>,
    panic_at: Arc<AtomicU8>,
) {
    let rcpts: Vec<&age::x25519::Recipient> = recipients.iter().collect();
    let capacity = pack_size as usize + pack_size as usize / 64;
    // One open pack per set of destination regions; normally there is only one.
    // Format v2 keeps trees apart from data: the key includes the blob kind.
    let mut open: BTreeMap<(u8, RegionSet), PackWriter> = BTreeMap::new();
    let result = (|| -> Result<()> {
        for (regions, blob) in rx.into_iter().flatten() {
            maybe_panic(&panic_at, Stage::Packer);
            let key = (blob.kind as u8, regions);
            let w = match open.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(PackWriter::new(&rcpts, capacity, rule)?)
                }
            };
            w.add(&blob)?;
            crate::buffers::give(blob.payload);
            if w.len() >= pack_size {
                let pack = open.remove(&key).expect("present").finish()?;
                if tx.blocking_send((regions, pack)).is_err() {
                    return Ok(());
                }
            }
        }
        for ((_, regions), w) in std::mem::take(&mut open) {
            if !w.is_empty() && tx.blocking_send((regions, w.finish()?)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        set_fatal(&shared, e);
    }
}

fn healthy(shared: &Mutex<PipelineState>) -> RegionSet {
    let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    RegionSet::of((0..sh.failed.len()).filter(|&i| sh.failed[i].is_none()))
}

fn mark_failed(shared: &Mutex<PipelineState>, repo: &Repository, region: usize, e: String) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    if sh.failed[region].is_none() {
        tracing::error!(region = %repo.regions[region].name, error = %e, "region failed during backup; continuing with the others");
        sh.failed[region] = Some(e);
    }
}

/// Put one object to the healthy regions of `regions` concurrently; regions that fail are
/// marked.
async fn put_to(
    repo: &Arc<Repository>,
    shared: &Arc<Mutex<PipelineState>>,
    regions: RegionSet,
    name: String,
    bytes: Bytes,
) {
    let mut set = tokio::task::JoinSet::new();
    for i in healthy(shared).intersection(regions).iter() {
        let b = repo.regions[i].backend.clone();
        let (n, data) = (name.clone(), bytes.clone());
        set.spawn(async move { (i, b.put(&n, data).await) });
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) => mark_failed(shared, repo, i, format!("put {name}: {e}")),
            Err(e) => set_fatal(shared, format!("upload task: {e}")),
        }
    }
}

async fn upload_loop(
    repo: Arc<Repository>,
    plan: String,
    mut rx: tokio::sync::mpsc::Receiver<(RegionSet, FinishedPack)>,
    shared: Arc<Mutex<PipelineState>>,
    progress: Arc<Progress>,
    panic_at: Arc<AtomicU8>,
) {
    let index_key = *repo.secrets().index_key();
    // Uploaded packs not yet named by an index file, per destination set.
    let mut pending: BTreeMap<RegionSet, Vec<(Id, Vec<PackEntry>)>> = BTreeMap::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut closed = false;
    loop {
        // Keep up to PACKS_IN_FLIGHT uploads going; collect finished ones for the index.
        tokio::select! {
            pack = rx.recv(), if !closed && in_flight.len() < PACKS_IN_FLIGHT => match pack {
                Some((regions, pack)) => {
                    maybe_panic(&panic_at, Stage::Uploader);
                    let (repo, shared, progress) = (repo.clone(), shared.clone(), progress.clone());
                    in_flight.spawn(async move {
                        let len = pack.bytes.len() as u64;
                        put_to(&repo, &shared, regions, pack_name(&pack.id), pack.bytes.clone()).await;
                        progress.add_transferred(len);
                        // Every put is done: the pack's buffer serves the next pack.
                        if let Ok(b) = pack.bytes.try_into_mut() {
                            crate::buffers::give(b.into());
                        }
                        (regions, pack.id, pack.entries, len)
                    });
                }
                None => closed = true,
            },
            done = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Some(Ok((regions, id, entries, len))) => {
                        {
                            let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                            sh.packs += 1;
                            sh.stored_bytes += len;
                        }
                        let group = pending.entry(regions).or_default();
                        group.push((id, entries));
                        if group.len() >= INDEX_EVERY_PACKS {
                            let packs = std::mem::take(group);
                            write_index(&repo, &shared, &index_key, &plan, regions, packs).await;
                        }
                    }
                    Some(Err(e)) => set_fatal(&shared, format!("upload task: {e}")),
                    None => {}
                }
            },
            else => break,
        }
        if healthy(&shared).is_empty() {
            // Nothing left to write to: stop consuming so the producers see the failure.
            rx.close();
            while in_flight.join_next().await.is_some() {}
            return;
        }
    }
    for (regions, packs) in pending {
        if !packs.is_empty() {
            write_index(&repo, &shared, &index_key, &plan, regions, packs).await;
        }
    }
}

async fn write_index(
    repo: &Arc<Repository>,
    shared: &Arc<Mutex<PipelineState>>,
    key: &[u8; 32],
    plan: &str,
    regions: RegionSet,
    packs: Vec<(Id, Vec<PackEntry>)>,
) {
    match index::encode(key, repo.index_signing(), plan, &packs) {
        Ok(sealed) => {
            let name = format!("index/{}", Id::of_stored(&sealed));
            let sealed = Bytes::from(sealed);
            put_to(repo, shared, regions, name.clone(), sealed.clone()).await;
            // The next backup's index load reads it from here (used only once listed).
            if let Some(c) = repo.meta_cache() {
                c.put(&name, &sealed);
            }
        }
        Err(e) => set_fatal(shared, e),
    }
}

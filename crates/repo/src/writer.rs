//! The backup pipeline: chunks in, packs out to every region, then index, then manifest.
//!
//! ```text
//! caller thread ──(id, chunk)──▶ compressors (N threads) ──blob──▶ packer thread
//!   (hashing, dedup)                (zstd)                         (age stream, 16 MiB)
//!        ──pack──▶ uploader task: put to every healthy region ──▶ index file every K packs
//! finish(): drain, final index, then the manifest per healthy region (the commit).
//! ```
//!
//! Every channel is bounded, so memory is bounded by the queue depths × chunk/pack sizes and
//! never by the size of the data. A region whose put fails (after the retry wrapper gave up)
//! is dropped from the rest of the backup: it gets no further index or manifest, so it stays
//! a valid repository without this snapshot, and the snapshot is *degraded*.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use tokio::runtime::Handle;

use crate::error::{RepoError, Result};
use crate::keys::{age_encrypt, chunk_id};
use crate::pack::{compress, BlobKind, FinishedPack, PackEntry, PackWriter, SealedBlob};
use crate::progress::{Cancel, Progress};
use crate::repo::{pack_name, Repository};
use crate::snapshot::{Manifest, Stats};
use crate::tree::Tree;
use crate::{index, Id, Index};

/// Packs uploaded between two index files: bounds what a crash makes the next run re-upload.
pub const INDEX_EVERY_PACKS: usize = 4;
/// Packs being uploaded at once.
const PACKS_IN_FLIGHT: usize = 3;

struct Job {
    id: Id,
    kind: BlobKind,
    data: Vec<u8>,
}

/// Per-region outcome of the upload side.
#[derive(Debug, Default, Clone)]
struct Shared {
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
    mask: u64,
    chunk_key: [u8; 32],
    seen: HashSet<Id>,
    compress_tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
    handle: Handle,
    cancel: Cancel,
    progress: Arc<Progress>,
    pub stats: Stats,
}

impl BackupWriter {
    /// Start the pipeline writing to the regions at `targets` (indices into `repo.regions`).
    pub fn start(
        repo: Arc<Repository>,
        index: Arc<Index>,
        targets: &[usize],
        handle: Handle,
        cancel: Cancel,
        progress: Arc<Progress>,
    ) -> Result<BackupWriter> {
        if targets.is_empty() {
            return Err(RepoError::Invalid("no region to write to".into()));
        }
        let mask = targets.iter().fold(0u64, |m, &i| m | (1 << i));
        let mut failed = vec![Some("not a target of this backup".to_string()); repo.regions.len()];
        for &t in targets {
            failed[t] = None;
        }
        let shared = Arc::new(Mutex::new(Shared {
            failed,
            ..Default::default()
        }));
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let (compress_tx, compress_rx) = bounded::<Job>(workers * 2);
        let (blob_tx, blob_rx) = bounded::<SealedBlob>(workers * 2);
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
        let level = repo.config.zstd_level;
        let mut threads = Vec::new();
        for n in 0..workers {
            let rx = compress_rx.clone();
            let tx = blob_tx.clone();
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("lifeboat-zstd-{n}"))
                    .spawn(move || compress_loop(rx, tx, level, sh))?,
            );
        }
        drop(blob_tx);
        let recipients: Vec<age::x25519::Recipient> =
            repo.recipients().into_iter().cloned().collect();
        let pack_size = repo.config.pack_size as u64;
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("lifeboat-pack".into())
                .spawn(move || pack_loop(blob_rx, pack_tx, recipients, pack_size, sh))?,
        );
        let uploader = handle.spawn(upload_loop(
            repo.clone(),
            pack_rx,
            shared.clone(),
            progress.clone(),
        ));
        Ok(BackupWriter {
            chunk_key: *repo.writer().chunk_key(),
            repo,
            index,
            mask,
            seen: HashSet::new(),
            compress_tx: Some(compress_tx),
            threads,
            uploader: Some(uploader),
            shared,
            handle,
            cancel,
            progress,
            stats: Stats::default(),
        })
    }

    /// The chunk id of `data` (keyed hash).
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        chunk_id(&self.chunk_key, data)
    }

    /// Is this chunk already stored in every target region (or queued in this backup)?
    pub fn is_known(&self, id: &Id) -> bool {
        self.seen.contains(id) || self.index.has_in_all(id, self.mask)
    }

    /// Add a chunk; returns its id. Known chunks are not stored again.
    pub fn add(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<Id> {
        self.cancel.check()?;
        let id = self.chunk_id(&data);
        if self.is_known(&id) {
            return Ok(id);
        }
        self.seen.insert(id);
        self.stats.new_chunks += 1;
        self.stats.new_bytes += data.len() as u64;
        let tx = self.compress_tx.as_ref().ok_or(RepoError::Cancelled)?;
        if tx.send(Job { id, kind, data }).is_err() {
            return Err(self.pipeline_error());
        }
        Ok(id)
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
    fn drain(&mut self) -> Result<Shared> {
        self.compress_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(u) = self.uploader.take() {
            self.handle
                .block_on(u)
                .map_err(|e| RepoError::Invalid(format!("uploader task: {e}")))?;
        }
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
        let plain = serde_json::to_vec(&manifest).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let writer_rcpt = self.repo.writer().recipient();
        let mut rcpts = self.repo.recipients();
        rcpts.push(&writer_rcpt);
        let sealed = Bytes::from(age_encrypt(&rcpts, &plain)?);
        let id = Id::of_stored(&sealed);
        let name = format!("snapshots/{id}");
        let mut failed: Vec<(String, String)> = (0..self.repo.regions.len())
            .filter_map(|i| match &sh.failed[i] {
                Some(e) if self.mask & (1 << i) != 0 => {
                    Some((self.repo.regions[i].name.clone(), e.clone()))
                }
                _ => None,
            })
            .collect();
        let mut complete = Vec::new();
        let repo = self.repo.clone();
        let results = self.handle.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for &i in &healthy {
                let b = repo.regions[i].backend.clone();
                let (n, s) = (name.clone(), sealed.clone());
                set.spawn(async move { (i, b.put(&n, s).await) });
            }
            set.join_all().await
        });
        for (i, r) in results {
            match r {
                Ok(()) => complete.push(i),
                Err(e) => failed.push((self.repo.regions[i].name.clone(), e.to_string())),
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

fn set_fatal(shared: &Mutex<Shared>, e: impl ToString) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    sh.fatal.get_or_insert(e.to_string());
}

fn compress_loop(
    rx: Receiver<Job>,
    tx: Sender<SealedBlob>,
    level: i32,
    shared: Arc<Mutex<Shared>>,
) {
    let mut z = match zstd::bulk::Compressor::new(level) {
        Ok(z) => z,
        Err(e) => return set_fatal(&shared, e),
    };
    for job in rx {
        let raw_length = job.data.len() as u32;
        match compress(&mut z, &job.data) {
            Ok((compression, payload)) => {
                let blob = SealedBlob {
                    id: job.id,
                    kind: job.kind,
                    compression,
                    raw_length,
                    payload,
                };
                if tx.send(blob).is_err() {
                    return;
                }
            }
            Err(e) => return set_fatal(&shared, e),
        }
    }
}

fn pack_loop(
    rx: Receiver<SealedBlob>,
    tx: tokio::sync::mpsc::Sender<FinishedPack>,
    recipients: Vec<age::x25519::Recipient>,
    pack_size: u64,
    shared: Arc<Mutex<Shared>>,
) {
    let rcpts: Vec<&age::x25519::Recipient> = recipients.iter().collect();
    let capacity = pack_size as usize + pack_size as usize / 64;
    let mut current: Option<PackWriter> = None;
    let result = (|| -> Result<()> {
        for blob in rx {
            let w = match current.as_mut() {
                Some(w) => w,
                None => current.insert(PackWriter::new(&rcpts, capacity)?),
            };
            w.add(&blob)?;
            if w.len() >= pack_size {
                let pack = current.take().expect("present").finish()?;
                if tx.blocking_send(pack).is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(w) = current.take().filter(|w| !w.is_empty()) {
            let _ = tx.blocking_send(w.finish()?);
        }
        Ok(())
    })();
    if let Err(e) = result {
        set_fatal(&shared, e);
    }
}

fn healthy(shared: &Mutex<Shared>) -> Vec<usize> {
    let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    (0..sh.failed.len())
        .filter(|&i| sh.failed[i].is_none())
        .collect()
}

fn mark_failed(shared: &Mutex<Shared>, repo: &Repository, region: usize, e: String) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    if sh.failed[region].is_none() {
        tracing::error!(region = %repo.regions[region].name, error = %e, "region failed during backup; continuing with the others");
        sh.failed[region] = Some(e);
    }
}

/// Put one object to every healthy region concurrently; regions that fail are marked.
async fn put_everywhere(
    repo: &Arc<Repository>,
    shared: &Arc<Mutex<Shared>>,
    name: String,
    bytes: Bytes,
) {
    let mut set = tokio::task::JoinSet::new();
    for i in healthy(shared) {
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
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Progress>,
) {
    let index_key = *repo.writer().index_key();
    let mut pending: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut closed = false;
    loop {
        // Keep up to PACKS_IN_FLIGHT uploads going; collect finished ones for the index.
        tokio::select! {
            pack = rx.recv(), if !closed && in_flight.len() < PACKS_IN_FLIGHT => match pack {
                Some(pack) => {
                    let (repo, shared, progress) = (repo.clone(), shared.clone(), progress.clone());
                    in_flight.spawn(async move {
                        let len = pack.bytes.len() as u64;
                        put_everywhere(&repo, &shared, pack_name(&pack.id), pack.bytes.clone()).await;
                        progress.add_transferred(len);
                        (pack.id, pack.entries, len)
                    });
                }
                None => closed = true,
            },
            done = in_flight.join_next(), if !in_flight.is_empty() => {
                match done {
                    Some(Ok((id, entries, len))) => {
                        let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                        sh.packs += 1;
                        sh.stored_bytes += len;
                        drop(sh);
                        pending.push((id, entries));
                    }
                    Some(Err(e)) => set_fatal(&shared, format!("upload task: {e}")),
                    None => {}
                }
                if pending.len() >= INDEX_EVERY_PACKS {
                    write_index(&repo, &shared, &index_key, std::mem::take(&mut pending)).await;
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
    if !pending.is_empty() {
        write_index(&repo, &shared, &index_key, pending).await;
    }
}

async fn write_index(
    repo: &Arc<Repository>,
    shared: &Arc<Mutex<Shared>>,
    key: &[u8; 32],
    packs: Vec<(Id, Vec<PackEntry>)>,
) {
    match index::encode(key, &packs) {
        Ok(sealed) => {
            let id = Id::of_stored(&sealed);
            put_everywhere(repo, shared, format!("index/{id}"), Bytes::from(sealed)).await;
        }
        Err(e) => set_fatal(shared, e),
    }
}

//! Prune: remove what no snapshot needs, without ever blocking a backup.
//!
//! Deletion has two phases separated by a grace period (rustic's and Kopia's answer to
//! restic's exclusive prune lock). Per region:
//!
//! 1. **Mark.** Every blob reachable from a surviving manifest is *needed*. Each needed blob
//!    gets a *home* pack (unmarked packs first). A pack that is home to nothing — or a pack
//!    not named by any index file and older than the grace period — is unreferenced and gets a
//!    marker `marks/<pack id>` (JSON with the time). Packs mostly unused (more than
//!    `max_unused` of their bytes), or holding an erased chunk, are *repacked*: their needed
//!    blobs are copied into new packs (packs, then their index file), and the old pack
//!    becomes unreferenced.
//! 2. **Delete**, on a later run: a marked pack whose marker is older than the grace period
//!    and that is *still* unreferenced by the manifests listed now is deleted; a marked pack
//!    that is needed again loses its marker. Index files are consolidated first (new files
//!    without the deleted packs are written, then the old ones deleted), then the packs, then
//!    the markers: the reverse of the write order, so a crash anywhere leaves a valid region
//!    and the next prune finishes the job.
//!
//! Backups leave marked packs out of their dedup index (see
//! [`Repository::load_index_excluding`]), so only a backup that loaded its index before the
//! mark and commits after the delete could reference a deleted pack: the grace period (24 h by
//! default) must exceed the longest backup (the daemon times backups out after 6 h).
//!
//! Object Lock: an object whose retain-until lies in the future is never deleted; it is
//! reported with its date and stays marked for a later run. Packs (and manifests) still
//! needed get their retention extended when less than half the lock period remains.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, DynBackend};
use crate::error::{RepoError, Result};
use crate::index;
use crate::lock::MaintenanceLock;
use crate::pack::{OpenPack, PackEntry, PackWriter, SealedBlob};
use crate::progress::Cancel;
use crate::reader::BlobReader;
use crate::repo::{pack_name, Repository};
use crate::tree::{NodeKind, Tree};
use crate::Id;

use crate::lock::mark_id;
pub use crate::lock::{marked_packs, MARK_PREFIX};
/// The plan recorded in index files prune writes (consolidated or repacked): several plans'
/// packs, written by no backup.
pub const PRUNE_PLAN: &str = "lifeboat-prune";
/// Packs named by one consolidated index file.
const PACKS_PER_INDEX: usize = 4096;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Seconds between marking and deleting.
    pub grace: i64,
    /// Repack a pack when more than this fraction (0..=1) of its bytes is unused.
    pub max_unused: f64,
    pub dry_run: bool,
    /// Epoch seconds (injected in tests).
    pub now: i64,
    /// Who holds the maintenance lock, for others' messages.
    pub holder: String,
}

/// An object prune wanted to delete but Object Lock keeps until `retain_until`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Locked {
    pub object: String,
    pub retain_until: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionPrune {
    pub packs: u64,
    pub index_files: u64,
    pub marked: u64,
    pub unmarked: u64,
    /// Marked packs whose grace period has not passed yet.
    pub waiting: u64,
    pub repacked: u64,
    pub new_packs: u64,
    pub deleted_packs: u64,
    pub deleted_index_files: u64,
    pub written_index_files: u64,
    pub deleted_markers: u64,
    pub bytes_freed: u64,
    pub temp_files_removed: u64,
    pub retention_extended: u64,
    pub locked: Vec<Locked>,
}

impl RegionPrune {
    pub fn objects_deleted(&self) -> u64 {
        self.deleted_packs + self.deleted_index_files + self.temp_files_removed
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub regions: BTreeMap<String, RegionPrune>,
    /// Regions left alone, and why (unavailable, unlisted).
    pub skipped: Vec<(String, String)>,
    /// Erased chunks still stored in some region (waiting for the grace period or a lock).
    pub erased_chunks_remaining: u64,
}

impl PruneReport {
    pub fn bytes_freed(&self) -> u64 {
        self.regions.values().map(|r| r.bytes_freed).sum()
    }
    pub fn objects_deleted(&self) -> u64 {
        self.regions.values().map(|r| r.objects_deleted()).sum()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    marked_at: i64,
}

fn pack_id(name: &str) -> Option<Id> {
    name.strip_prefix("data/")?;
    Id::from_object_name(name).ok()
}

/// Every blob (tree and data) reachable from `roots`.
pub async fn reachable(
    repo: &Arc<Repository>,
    roots: impl IntoIterator<Item = Id>,
    cancel: &Cancel,
) -> Result<HashSet<Id>> {
    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index);
    let mut needed = HashSet::new();
    let mut stack: Vec<Id> = roots.into_iter().collect();
    while let Some(t) = stack.pop() {
        cancel.check()?;
        if !needed.insert(t) {
            continue;
        }
        let tree = Tree::parse(&reader.read(&t).await?, &format!("tree {}", t.short()))?;
        for n in tree.nodes {
            match n.kind {
                NodeKind::Dir => stack.extend(n.subtree),
                NodeKind::File => needed.extend(n.chunks),
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
            }
        }
    }
    Ok(needed)
}

/// Run prune over every available region. Takes the maintenance lock unless `dry_run`.
pub async fn prune(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    cancel: &Cancel,
) -> Result<PruneReport> {
    repo.identity("prune")?;
    if !opts.dry_run {
        // Consolidated index files are signed like a backup's.
        repo.check_can_sign("prune")?;
    }
    let lock = if opts.dry_run {
        None
    } else {
        Some(MaintenanceLock::acquire(repo, &opts.holder, "prune").await?)
    };
    let result = prune_locked(repo, opts, cancel).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn prune_locked(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    cancel: &Cancel,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let erased = crate::erase::erased_chunks(repo).await?;
    let (snapshots, failed) = repo.list_snapshots_detailed().await?;
    // A sealed root (no details key here) must stop prune, never count as "nothing needed".
    let roots = snapshots
        .iter()
        .map(|s| s.manifest.tree_root())
        .collect::<Result<Vec<_>>>()?;
    let needed = reachable(repo, roots, cancel).await?;
    let failed_names: HashSet<String> = failed.iter().map(|(r, _)| r.clone()).collect();
    // Repacked packs, reused for every region that repacks the same blobs: a chunk must live
    // in the same pack in every region (the index keeps one location per chunk).
    let mut repacked = RepackCache::new();
    report.skipped.extend(failed);
    // List every region first: each needed chunk gets one preferred home across regions
    // (the pack in most regions, unmarked first), so that regions keep the same pack for a
    // chunk — the index keeps one location per chunk, and a restore falling back to another
    // region must find that pack there too.
    let mut listings: HashMap<usize, Listing> = HashMap::new();
    for (i, region) in repo.regions.iter().enumerate() {
        if repo.is_available(i) && !failed_names.contains(&region.name) {
            let l = list_region(repo, &region.backend, &region.name, opts.now)
                .await
                .map_err(|e| maintainer_hint(e, &region.name))?;
            listings.insert(i, l);
        }
    }
    let global = preferred_homes(&listings, &needed);
    for (i, region) in repo.regions.iter().enumerate() {
        if !repo.is_available(i) {
            report.skipped.push((
                region.name.clone(),
                format!("unavailable: {:?}", repo.states[i]),
            ));
            continue;
        }
        if failed_names.contains(&region.name) {
            continue;
        }
        let manifests: Vec<String> = snapshots
            .iter()
            .filter(|s| s.regions.contains(&region.name))
            .map(|s| format!("snapshots/{}", s.id))
            .collect();
        let mut rp = RegionPrune::default();
        let mut ctx = RegionCtx {
            repo,
            backend: region.backend.clone(),
            opts,
            needed: &needed,
            erased: &erased,
            report: &mut rp,
            cancel,
            repacked: &mut repacked,
        };
        let Some(listing) = listings.remove(&i) else {
            continue;
        };
        let remaining = ctx
            .run(listing, &global, &manifests)
            .await
            .map_err(|e| maintainer_hint(e, &region.name))?;
        report.erased_chunks_remaining += remaining;
        report.regions.insert(region.name.clone(), rp);
    }
    Ok(report)
}

/// An access-denied delete means writer credentials: say which role prune needs.
fn maintainer_hint(e: RepoError, region: &str) -> RepoError {
    match &e {
        RepoError::Backend(BackendError::Permanent { op, message, .. })
            if (op.contains("delete") || op.contains("retention"))
                && (message.contains("AccessDenied") || message.contains("Access Denied") || message.contains("403")) =>
        {
            RepoError::Invalid(format!(
                "region {region}: {e}: prune deletes objects, which the writer role may not do; run prune with the maintainer role's credentials (terraform output maintainer_role_arn, see docs/retention.md)"
            ))
        }
        _ => e,
    }
}

async fn list_region(repo: &Repository, b: &DynBackend, region: &str, now: i64) -> Result<Listing> {
    let key = *repo.secrets().index_key();
    // Index before data: a pack indexed between the two listings is merely young.
    let mut index_files = BTreeMap::new();
    let mut revoked = HashSet::new();
    for o in b.list("index/").await? {
        let bytes = b.get(&o.name, None).await?;
        let file = index::open_file(&key, repo.trust(), &o.name, region, &bytes)?;
        if matches!(file.verdict, crate::sign::Verdict::Revoked(_)) {
            revoked.insert(o.name.clone());
        }
        index_files.insert(o.name.clone(), file.packs);
    }
    let mut packs = HashMap::new();
    for o in b.list("data/").await? {
        if let Some(id) = pack_id(&o.name) {
            packs.insert(id, (o.size, o.modified));
        }
    }
    let mut marks = HashMap::new();
    for o in b.list(MARK_PREFIX).await? {
        let Some(id) = mark_id(&o.name) else { continue };
        let at = match b.get(&o.name, None).await {
            Ok(bytes) => serde_json::from_slice::<Marker>(&bytes)
                .map(|m| m.marked_at)
                .ok()
                .or(o.modified)
                .unwrap_or(now),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        marks.insert(id, at);
    }
    Ok(Listing {
        index_files,
        revoked,
        packs,
        marks,
    })
}

/// Chunk → the pack that should hold it everywhere: present in the most regions, unmarked
/// before marked, then by id.
fn preferred_homes(listings: &HashMap<usize, Listing>, needed: &HashSet<Id>) -> HashMap<Id, Id> {
    let mut packs: HashMap<Id, (u32, bool, &Vec<PackEntry>)> = HashMap::new();
    for l in listings.values() {
        let mut here: HashSet<Id> = HashSet::new();
        for files in l.index_files.values() {
            for (p, e) in files {
                if l.packs.contains_key(p) && here.insert(*p) {
                    let slot = packs.entry(*p).or_insert((0, false, e));
                    slot.0 += 1;
                    slot.1 |= l.marks.contains_key(p);
                }
            }
        }
    }
    let mut order: Vec<_> = packs.iter().collect();
    order.sort_by_key(|(p, (n, marked, _))| (std::cmp::Reverse(*n), *marked, **p));
    let mut home = HashMap::new();
    for (p, (_, _, entries)) in order {
        for e in entries.iter() {
            if needed.contains(&e.id) {
                home.entry(e.id).or_insert(*p);
            }
        }
    }
    home
}

/// (old pack, chunk) moved, in order → the packs written for them.
type RepackCache = HashMap<Vec<(Id, Id)>, Vec<crate::pack::FinishedPack>>;

struct RegionCtx<'a> {
    repo: &'a Arc<Repository>,
    backend: DynBackend,
    opts: &'a PruneOptions,
    needed: &'a HashSet<Id>,
    erased: &'a HashSet<Id>,
    report: &'a mut RegionPrune,
    cancel: &'a Cancel,
    repacked: &'a mut RepackCache,
}

struct Listing {
    /// Index file name → packs it names.
    index_files: BTreeMap<String, Vec<(Id, Vec<PackEntry>)>>,
    /// Index files signed by a revoked writer: never rewritten (a consolidated file would
    /// carry their entries under an honest signature), and their packs never deleted
    /// (honest snapshots may have deduplicated against them before the revocation).
    revoked: HashSet<String>,
    /// Pack id → (size, modified).
    packs: HashMap<Id, (u64, Option<i64>)>,
    /// Pack id → marked at.
    marks: HashMap<Id, i64>,
}

impl RegionCtx<'_> {
    /// Returns how many erased chunks are still stored here.
    async fn run(
        &mut self,
        mut l: Listing,
        global: &HashMap<Id, Id>,
        manifests: &[String],
    ) -> Result<u64> {
        let now = self.opts.now;
        let grace = self.opts.grace;
        self.report.packs = l.packs.len() as u64;
        self.report.index_files = l.index_files.len() as u64;
        // Every indexed pack's entries (first index file wins) and the files naming it.
        let mut entries: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        let mut named_by: HashMap<Id, Vec<String>> = HashMap::new();
        for (name, packs) in &l.index_files {
            for (p, e) in packs {
                entries.entry(*p).or_insert_with(|| e.clone());
                named_by.entry(*p).or_default().push(name.clone());
            }
        }
        // Homes: unmarked packs first, so a marked pack stays unreferenced when a copy of
        // its blobs exists elsewhere; packs missing from data/ cannot be homes.
        let mut order: Vec<Id> = entries
            .keys()
            .filter(|p| l.packs.contains_key(p))
            .copied()
            .collect();
        order.sort_by_key(|p| (l.marks.contains_key(p), *p));
        let present: HashSet<Id> = order.iter().copied().collect();
        let mut home: HashMap<Id, Id> = global
            .iter()
            .filter(|(_, p)| present.contains(p))
            .map(|(c, p)| (*c, *p))
            .collect();
        for p in &order {
            for e in &entries[p] {
                if self.needed.contains(&e.id) {
                    home.entry(e.id).or_insert(*p);
                }
            }
        }
        let live = |p: &Id, home: &HashMap<Id, Id>| -> (u64, u64) {
            let (mut live, mut total) = (0u64, 0u64);
            for e in &entries[p] {
                total += e.length as u64;
                if home.get(&e.id) == Some(p) {
                    live += e.length as u64;
                }
            }
            (live, total)
        };
        // Repack mostly-unused packs, and any pack that still holds an erased chunk.
        let mut repack: Vec<Id> = Vec::new();
        for p in &order {
            if l.marks.contains_key(p) {
                continue;
            }
            let (lv, total) = live(p, &home);
            if lv == 0 {
                continue;
            }
            let unused = (total - lv) as f64 / total.max(1) as f64;
            let holds_erased = entries[p]
                .iter()
                .any(|e| self.erased.contains(&e.id) && home.get(&e.id) != Some(p));
            if unused > self.opts.max_unused || holds_erased {
                repack.push(*p);
            }
        }
        if !repack.is_empty() {
            self.report.repacked = repack.len() as u64;
            if !self.opts.dry_run {
                let moved = self.repack(&repack, &entries, &home).await?;
                for (chunk, new_pack) in moved {
                    home.insert(chunk, new_pack);
                }
            } else {
                for p in &repack {
                    home.retain(|_, h| h != p);
                }
            }
        }
        // Unreferenced: indexed packs home to nothing, and old packs no index names.
        let mut unreferenced: HashSet<Id> = HashSet::new();
        for p in &order {
            if live(p, &home).0 == 0 {
                unreferenced.insert(*p);
            }
        }
        for (p, (_, modified)) in &l.packs {
            if !entries.contains_key(p) && modified.is_some_and(|m| m <= now - grace) {
                unreferenced.insert(*p);
            }
        }
        // Phase 1: mark; un-mark what is needed again; collect what may go now.
        let mut candidates: Vec<Id> = Vec::new();
        for p in &unreferenced {
            match l.marks.get(p) {
                None => {
                    self.report.marked += 1;
                    if !self.opts.dry_run {
                        let body = serde_json::to_vec(&Marker { marked_at: now })
                            .map_err(|e| RepoError::Invalid(e.to_string()))?;
                        self.backend
                            .put(&format!("{MARK_PREFIX}{p}"), Bytes::from(body))
                            .await?;
                    }
                }
                Some(&at) if at <= now - grace => candidates.push(*p),
                Some(_) => self.report.waiting += 1,
            }
        }
        let stale: Vec<Id> = l
            .marks
            .keys()
            .filter(|p| !unreferenced.contains(p))
            .copied()
            .collect();
        for p in stale {
            if l.packs.contains_key(&p) {
                self.report.unmarked += 1;
            }
            self.report.deleted_markers += 1;
            if !self.opts.dry_run {
                self.backend.delete(&format!("{MARK_PREFIX}{p}")).await?;
            }
            l.marks.remove(&p);
        }
        // Object Lock: neither a locked pack nor a pack named by a locked index file goes.
        let mut locked_index: HashSet<String> = l.revoked.clone();
        for name in l.index_files.keys() {
            if let Some(until) = self.locked_until(name).await? {
                locked_index.insert(name.clone());
                self.report.locked.push(Locked {
                    object: name.clone(),
                    retain_until: until,
                });
            }
        }
        let mut delete: Vec<Id> = Vec::new();
        for p in candidates {
            if let Some(until) = self.locked_until(&pack_name(&p)).await? {
                self.report.locked.push(Locked {
                    object: pack_name(&p),
                    retain_until: until,
                });
                continue;
            }
            if named_by
                .get(&p)
                .is_some_and(|files| files.iter().any(|f| locked_index.contains(f)))
            {
                self.report.waiting += 1;
                continue;
            }
            delete.push(p);
        }
        // Phase 2, in reverse write order: index files, then packs, then markers.
        let delete_set: HashSet<Id> = delete.iter().copied().collect();
        let rewrite: Vec<String> = l
            .index_files
            .keys()
            .filter(|n| !locked_index.contains(*n))
            .cloned()
            .collect();
        if !delete.is_empty() || rewrite.len() > 1 {
            self.consolidate(&l, &rewrite, &locked_index, &delete_set)
                .await?;
        }
        for p in &delete {
            self.cancel.check()?;
            let size = l.packs.get(p).map_or(0, |(s, _)| *s);
            self.report.deleted_packs += 1;
            self.report.bytes_freed += size;
            if !self.opts.dry_run {
                self.backend.delete(&pack_name(p)).await?;
            }
        }
        for p in &delete {
            self.report.deleted_markers += 1;
            if !self.opts.dry_run {
                self.backend.delete(&format!("{MARK_PREFIX}{p}")).await?;
            }
        }
        if !self.opts.dry_run {
            self.report.temp_files_removed = self
                .backend
                .clean_temp(std::time::Duration::from_secs(grace.max(0) as u64))
                .await? as u64;
            self.extend_retention(&order, &home, &entries, manifests)
                .await?;
        }
        // Erased chunks still stored in a pack that is not yet deleted.
        let home = &home;
        let remaining = entries
            .iter()
            .filter(|(p, _)| !delete_set.contains(p) && l.packs.contains_key(p))
            .flat_map(|(p, es)| es.iter().filter(move |e| home.get(&e.id) != Some(p)))
            .filter(|e| self.erased.contains(&e.id))
            .count() as u64;
        Ok(remaining)
    }

    /// `Some(retain-until)` when Object Lock still protects `name`.
    async fn locked_until(&self, name: &str) -> Result<Option<i64>> {
        if self.backend.object_lock_period().is_none() {
            return Ok(None);
        }
        match self.backend.retain_until(name).await {
            Ok(Some(until)) if until > self.opts.now => Ok(Some(until)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Copy the needed blobs of `packs` into new packs (then one index file naming them) in
    /// this region. Returns chunk → new pack.
    async fn repack(
        &mut self,
        packs: &[Id],
        entries: &HashMap<Id, Vec<PackEntry>>,
        home: &HashMap<Id, Id>,
    ) -> Result<Vec<(Id, Id)>> {
        let mut key: Vec<(Id, Id)> = Vec::new();
        let mut seen: HashSet<Id> = HashSet::new();
        for p in packs {
            for e in &entries[p] {
                if home.get(&e.id) == Some(p) && seen.insert(e.id) {
                    key.push((*p, e.id));
                }
            }
        }
        if let Some(done) = self.repacked.get(&key).cloned() {
            return self.store_repacked(done).await;
        }
        let identity = self.repo.identity("prune (repack)")?.keys().to_vec();
        let recipients: Vec<age::x25519::Recipient> =
            self.repo.recipients().into_iter().cloned().collect();
        let pack_size = self.repo.config.pack_size as u64;
        let mut finished: Vec<crate::pack::FinishedPack> = Vec::new();
        // One open pack per blob kind: trees stay apart from data (format v2).
        let mut writers: BTreeMap<u8, PackWriter> = BTreeMap::new();
        let rule = self.repo.id_rule();
        let mut seen: HashSet<Id> = HashSet::new();
        for p in packs {
            self.cancel.check()?;
            let name = pack_name(p);
            let bytes = self.backend.get(&name, None).await?;
            let (id, ident) = (*p, identity.clone());
            let open = tokio::task::spawn_blocking(move || OpenPack::open(&ident, id, &bytes))
                .await
                .map_err(|e| RepoError::Invalid(format!("repack task: {e}")))??;
            for e in &entries[p] {
                if home.get(&e.id) != Some(p) || !seen.insert(e.id) {
                    continue;
                }
                let rcpts: Vec<&age::x25519::Recipient> = recipients.iter().collect();
                let w = match writers.entry(e.kind as u8) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(PackWriter::new(&rcpts, pack_size as usize, rule)?)
                    }
                };
                w.add(&SealedBlob {
                    id: e.id,
                    kind: e.kind,
                    compression: e.compression,
                    raw_length: e.raw_length,
                    payload: open.stored(e)?.to_vec(),
                })?;
                if w.len() >= pack_size {
                    let full = writers.remove(&(e.kind as u8)).expect("present");
                    finished.push(full.finish()?);
                }
            }
        }
        for w in std::mem::take(&mut writers).into_values() {
            if !w.is_empty() {
                finished.push(w.finish()?);
            }
        }
        self.repacked.insert(key, finished.clone());
        self.store_repacked(finished).await
    }

    /// Upload repacked packs to this region, then one index file naming them.
    async fn store_repacked(
        &mut self,
        finished: Vec<crate::pack::FinishedPack>,
    ) -> Result<Vec<(Id, Id)>> {
        let mut moved = Vec::new();
        let mut named = Vec::new();
        for pack in finished {
            self.backend
                .put(&pack_name(&pack.id), pack.bytes.clone())
                .await?;
            self.report.new_packs += 1;
            moved.extend(pack.entries.iter().map(|e| (e.id, pack.id)));
            named.push((pack.id, pack.entries));
        }
        if !named.is_empty() {
            let sealed = index::encode(
                self.repo.secrets().index_key(),
                self.repo.index_signing(),
                PRUNE_PLAN,
                &named,
            )?;
            let id = Id::of_stored(&sealed);
            self.backend
                .put(&format!("index/{id}"), Bytes::from(sealed))
                .await?;
            self.report.written_index_files += 1;
        }
        Ok(moved)
    }

    /// Replace the index files in `rewrite` with new ones naming the same packs minus
    /// `delete` (and minus packs a locked index file still names): written first, then the
    /// old files deleted.
    async fn consolidate(
        &mut self,
        l: &Listing,
        rewrite: &[String],
        locked_index: &HashSet<String>,
        delete: &HashSet<Id>,
    ) -> Result<()> {
        let kept_elsewhere: HashSet<Id> = l
            .index_files
            .iter()
            .filter(|(n, _)| locked_index.contains(*n))
            .flat_map(|(_, packs)| packs.iter().map(|(p, _)| *p))
            .collect();
        let mut packs: BTreeMap<Id, Vec<PackEntry>> = BTreeMap::new();
        for name in rewrite {
            for (p, e) in &l.index_files[name] {
                if !delete.contains(p) && !kept_elsewhere.contains(p) {
                    packs.entry(*p).or_insert_with(|| e.clone());
                }
            }
        }
        let all: Vec<(Id, Vec<PackEntry>)> = packs.into_iter().collect();
        let mut written = HashSet::new();
        for chunk in all.chunks(PACKS_PER_INDEX) {
            let sealed = index::encode(
                self.repo.secrets().index_key(),
                self.repo.index_signing(),
                PRUNE_PLAN,
                chunk,
            )?;
            let name = format!("index/{}", Id::of_stored(&sealed));
            self.report.written_index_files += 1;
            if !self.opts.dry_run {
                self.backend.put(&name, Bytes::from(sealed)).await?;
            }
            written.insert(name);
        }
        for name in rewrite {
            if written.contains(name) {
                continue;
            }
            self.report.deleted_index_files += 1;
            if !self.opts.dry_run {
                self.backend.delete(name).await?;
            }
        }
        Ok(())
    }

    /// Keep what is still needed locked for a full period when less than half of it remains.
    async fn extend_retention(
        &mut self,
        order: &[Id],
        home: &HashMap<Id, Id>,
        entries: &HashMap<Id, Vec<PackEntry>>,
        manifests: &[String],
    ) -> Result<()> {
        let Some(period) = self.backend.object_lock_period() else {
            return Ok(());
        };
        let now = self.opts.now;
        let live: Vec<String> = order
            .iter()
            .filter(|p| entries[*p].iter().any(|e| home.get(&e.id) == Some(*p)))
            .map(pack_name)
            .chain(manifests.iter().cloned())
            .collect();
        for name in live {
            let until = match self.backend.retain_until(&name).await {
                Ok(u) => u.unwrap_or(0),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if until < now + period / 2
                && self.backend.extend_retention(&name, now + period).await?
            {
                self.report.retention_extended += 1;
            }
        }
        Ok(())
    }
}

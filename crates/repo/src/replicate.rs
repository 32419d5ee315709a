//! `replicate`: copy to every region whatever it is missing, until each holds every snapshot.
//!
//! A region misses objects after a backup that ran while it was down (a *degraded* snapshot),
//! after an interrupted backup, or when it is new. Replication works on object names alone, so
//! it needs no key and runs on any host that can read one region and write the other:
//!
//! 1. List every region, each in the reverse of the write order — `snapshots/`, then
//!    `index/`, then `data/` — so that a backup running meanwhile cannot make an index file
//!    (or a manifest) appear without the packs it needs: a pack is stored before any index
//!    file naming it, so it is in the later `data/` listing. The union of the names is what
//!    each region should hold; the `keys/` objects and `config` come first for a region that
//!    has no repository yet (`config` must then name the same repository everywhere).
//! 2. With the metadata keys ([`ReplicateOptions::keys`]), read every index file and
//!    manifest the regions do not all hold: a plan's snapshots and index files are copied
//!    only into the regions the plan stores in ([`ReplicateOptions::plan_regions`], data
//!    residency), a pack only into a region that holds or gets an index file naming it, and
//!    an index file only once every pack it names is present in the target (its listing or
//!    copied in this run). Without the key, plans cannot be told apart: every object is
//!    copied everywhere and the write order alone keeps regions valid.
//! 3. Copy into each region in the write order — packs, then index files, then snapshot
//!    manifests — so that at every instant each region is a valid repository on its own: an
//!    index file is copied only once every pack is in place, a manifest only once every index
//!    file is, and nothing of a later kind after any copy into that region failed.
//! 4. Verify every object copied: its bytes, as read from the source, must hash to the content
//!    id in its name ([`crate::id::check_stored_id`]; a bad copy is skipped for another region's), and after
//!    the put the target must report the same size. An object present in the target with a
//!    different size than in the source is damaged and copied again.
//!
//! Nothing is ever deleted. Running it again copies only what is still missing, so it is
//! idempotent and resumes after an interruption (each put is atomic, so no half object is
//! left behind).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::backend::ObjectInfo;
use crate::error::{RepoError, Result};
use crate::keys::age_decrypt;
use crate::progress::{Cancel, Progress};
use crate::regions::check_region_count;
use crate::repo::{pack_name, parse_config, Region, CONFIG_OBJECT};
use crate::secrets::MetadataKeys;
use crate::snapshot::Manifest;
use crate::verify::{plan_allows, PlanRegions};
use crate::{index, Id};

/// What replication may know and must respect.
#[derive(Default)]
pub struct ReplicateOptions<'a> {
    /// The repository's metadata keys (from an open repository): let replication read index
    /// files and manifests (never pack data).
    pub keys: Option<MetadataKeys<'a>>,
    /// Plan name → the regions it stores in; a plan not named may be stored everywhere.
    /// Any restriction needs [`keys`](Self::keys).
    pub plan_regions: PlanRegions,
}

/// Objects copied at once into one region (each up to a pack, ~16 MiB, in memory).
pub const COPIES_IN_FLIGHT: usize = 4;

/// The kinds of objects, in the order they are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Key,
    Config,
    Pack,
    Index,
    Snapshot,
}

impl ObjectKind {
    fn of(name: &str) -> Option<ObjectKind> {
        match name {
            CONFIG_OBJECT => Some(ObjectKind::Config),
            _ if name.starts_with("keys/") => Some(ObjectKind::Key),
            _ if name.starts_with("data/") => Some(ObjectKind::Pack),
            _ if name.starts_with("index/") => Some(ObjectKind::Index),
            _ if name.starts_with("snapshots/") => Some(ObjectKind::Snapshot),
            _ => None,
        }
    }

    /// Content-addressed kinds are named by the BLAKE3 of their stored bytes.
    fn content_id(self, name: &str) -> Option<Id> {
        match self {
            ObjectKind::Pack | ObjectKind::Index | ObjectKind::Snapshot => {
                Id::from_object_name(name).ok()
            }
            ObjectKind::Key | ObjectKind::Config => None,
        }
    }
}

/// One object copied (or not), for progress output.
#[derive(Debug, Clone)]
pub struct CopyEvent {
    pub region: String,
    pub object: String,
    pub kind: ObjectKind,
    pub bytes: u64,
    /// Where it was read from.
    pub source: String,
    /// `None` when copied and verified, else why it was not.
    pub error: Option<String>,
}

/// What replication did to one region.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionReport {
    /// Objects the region lacked (or held damaged) when replication started.
    pub missing: u64,
    /// Copied and verified, by kind.
    pub copied: BTreeMap<String, u64>,
    pub bytes: u64,
    /// Objects present with the wrong size and copied again.
    pub repaired: u64,
    pub failed: u64,
    /// Holds every snapshot (and so, by the write order, everything they need) afterwards.
    pub complete: bool,
    pub snapshots: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicateReport {
    pub regions: BTreeMap<String, RegionReport>,
    /// Snapshots known in any region.
    pub snapshots: u64,
    pub problems: Vec<String>,
}

impl ReplicateReport {
    /// Every reachable region holds every snapshot, and nothing failed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.regions.values().all(|r| r.complete)
    }

    pub fn copied_total(&self) -> u64 {
        self.regions
            .values()
            .map(|r| r.copied.values().sum::<u64>())
            .sum()
    }
}

/// What one region holds: name → size.
type Listing = BTreeMap<String, u64>;
/// Objects to copy into one region: kind, name, expected size.
type Work = Vec<(ObjectKind, String, u64)>;

async fn list_region(region: &Region) -> Result<Listing> {
    let mut out = Listing::new();
    // Reverse write order: see the module documentation.
    for prefix in ["snapshots/", "index/", "data/"] {
        for ObjectInfo { name, size, .. } in region.backend.list(prefix).await? {
            if ObjectKind::of(&name).is_some() {
                out.insert(name, size);
            }
        }
    }
    for ObjectInfo { name, size, .. } in region.backend.list("keys/").await? {
        out.insert(name, size);
    }
    for name in [CONFIG_OBJECT] {
        match region.backend.head(name).await {
            Ok(size) => {
                out.insert(name.to_string(), size);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Copy into every region what it lacks (and may hold, by `opts`). Regions that cannot be
/// listed are reported as problems and neither read nor written; at least two regions must
/// answer.
pub async fn replicate(
    regions: &[Region],
    opts: &ReplicateOptions<'_>,
    progress: Arc<Progress>,
    cancel: Cancel,
    on_copy: &(dyn Fn(&CopyEvent) + Send + Sync),
) -> Result<ReplicateReport> {
    check_region_count(regions.len())?;
    if opts.keys.is_none() && !opts.plan_regions.is_empty() {
        return Err(RepoError::NeedIdentity(
            "replicating a repository whose plans store in different regions needs the writer key (keys.writer_key_file) or the identity, to tell the plans' objects apart; replicate".into(),
        ));
    }
    let mut report = ReplicateReport::default();
    let mut listings: Vec<Option<Listing>> = Vec::new();
    for r in regions {
        match list_region(r).await {
            Ok(l) => listings.push(Some(l)),
            Err(e) => {
                report
                    .problems
                    .push(format!("region {} is unreachable: {e}", r.name));
                listings.push(None);
            }
        }
    }
    let usable: Vec<usize> = (0..regions.len())
        .filter(|&i| listings[i].is_some())
        .collect();
    if usable.len() < 2 {
        return Err(RepoError::Invalid(format!(
            "replicate needs at least two reachable regions: {}",
            if report.problems.is_empty() {
                "only one region is configured".to_string()
            } else {
                report.problems.join("; ")
            }
        )));
    }
    check_same_repository(regions, &listings).await?;

    // Everything any region holds, with the size the holders agree on (the largest count).
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut sizes: BTreeMap<&str, BTreeMap<u64, usize>> = BTreeMap::new();
        for l in listings.iter().flatten() {
            for (name, size) in l {
                *sizes.entry(name).or_default().entry(*size).or_default() += 1;
            }
        }
        for (name, counts) in sizes {
            let size = counts
                .iter()
                .max_by_key(|(size, n)| (**n, **size))
                .map(|(s, _)| *s)
                .unwrap_or(0);
            wanted.insert(name.to_string(), size);
        }
    }
    report.snapshots = wanted
        .keys()
        .filter(|n| ObjectKind::of(n) == Some(ObjectKind::Snapshot))
        .count() as u64;

    let contents = match opts.keys {
        Some(w) => Some(read_contents(regions, &listings, &wanted, w).await),
        None => None,
    };

    // The work per region, in write order.
    let mut plans: Vec<(usize, Work)> = Vec::new();
    for &t in &usable {
        let have = listings[t].as_ref().expect("usable");
        let rname = &regions[t].name;
        let mut todo: Work = Vec::new();
        let mut rr = RegionReport::default();
        // With the key: which index files and packs belong in this region.
        let allowed = contents
            .as_ref()
            .map(|c| c.allowed_in(rname, have, &opts.plan_regions));
        for (name, &size) in &wanted {
            let kind = ObjectKind::of(name).expect("listed kinds only");
            if let (Some(c), Some(a)) = (&contents, &allowed) {
                let belongs = match kind {
                    ObjectKind::Snapshot => c
                        .snapshot_plan
                        .get(name)
                        .is_none_or(|p| plan_allows(&opts.plan_regions, p, rname)),
                    ObjectKind::Index => a.index.contains(name),
                    ObjectKind::Pack => a.packs.contains(name),
                    ObjectKind::Key | ObjectKind::Config => true,
                };
                if !belongs {
                    continue;
                }
            }
            match have.get(name) {
                None => todo.push((kind, name.clone(), size)),
                Some(&s) if s != size && kind.content_id(name).is_some() => {
                    rr.repaired += 1;
                    todo.push((kind, name.clone(), size));
                }
                Some(_) => {}
            }
        }
        todo.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        rr.missing = todo.len() as u64;
        progress.add_total(todo.iter().map(|(_, _, s)| *s).sum());
        report.regions.insert(regions[t].name.clone(), rr);
        plans.push((t, todo));
    }

    for (t, todo) in plans {
        let mut region_failed = false;
        // Packs the target holds: listed before, or copied in this run.
        let mut present: BTreeSet<String> = listings[t]
            .as_ref()
            .map(|l| {
                l.keys()
                    .filter(|n| n.starts_with("data/"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut kinds = todo.into_iter().peekable();
        // One kind at a time: every pack before any index file, every index file before any
        // manifest.
        while let Some(kind) = kinds.peek().map(|(k, _, _)| *k) {
            let batch: Vec<(ObjectKind, String, u64)> =
                std::iter::from_fn(|| kinds.next_if(|(k, _, _)| *k == kind)).collect();
            if region_failed {
                // An index file naming a pack the region lacks would make later backups skip
                // chunks they believe stored there; a manifest would be a snapshot without its
                // data. So nothing of a later kind is copied after a failure.
                let rr = report.regions.get_mut(&regions[t].name).expect("present");
                rr.failed += batch.len() as u64;
                report.problems.push(format!(
                    "region {}: {} {} not copied because earlier copies failed; run `lifeboat replicate` again",
                    regions[t].name,
                    batch.len(),
                    match kind {
                        ObjectKind::Index => "index file(s)",
                        ObjectKind::Snapshot => "snapshot manifest(s)",
                        _ => "object(s)",
                    }
                ));
                continue;
            }
            let batch = match (&contents, kind) {
                (Some(c), ObjectKind::Index) => {
                    let (ready, blocked) = c.packs_present(batch, &regions[t], &present).await;
                    for (name, why) in blocked {
                        region_failed = true;
                        report
                            .regions
                            .get_mut(&regions[t].name)
                            .expect("present")
                            .failed += 1;
                        report.problems.push(format!(
                            "region {}: {name} not copied: {why}",
                            regions[t].name
                        ));
                    }
                    ready
                }
                _ => batch,
            };
            let results =
                copy_batch(regions, &listings, t, batch, &progress, &cancel, on_copy).await?;
            for ev in results.iter().filter(|e| e.error.is_none()) {
                present.insert(ev.object.clone());
            }
            let rr = report.regions.get_mut(&regions[t].name).expect("present");
            for ev in results {
                match &ev.error {
                    None => {
                        *rr.copied
                            .entry(format!("{:?}", ev.kind).to_lowercase())
                            .or_default() += 1;
                        rr.bytes += ev.bytes;
                    }
                    Some(e) => {
                        region_failed = true;
                        rr.failed += 1;
                        report
                            .problems
                            .push(format!("region {}: {}: {e}", regions[t].name, ev.object));
                    }
                }
            }
        }
    }

    // Afterwards: which regions hold every snapshot?
    for &t in &usable {
        let have = regions[t].backend.list("snapshots/").await;
        let rr = report.regions.get_mut(&regions[t].name).expect("present");
        match have {
            Ok(list) => {
                let names: BTreeSet<String> = list.into_iter().map(|o| o.name).collect();
                rr.snapshots = names.len() as u64;
                rr.complete = wanted
                    .keys()
                    .filter(|n| ObjectKind::of(n) == Some(ObjectKind::Snapshot))
                    .filter(|n| {
                        contents.as_ref().is_none_or(|c| {
                            c.snapshot_plan.get(*n).is_none_or(|p| {
                                plan_allows(&opts.plan_regions, p, &regions[t].name)
                            })
                        })
                    })
                    .all(|n| names.contains(n));
            }
            Err(e) => {
                report.problems.push(format!(
                    "region {}: listing snapshots after copying: {e}",
                    regions[t].name
                ));
            }
        }
    }
    Ok(report)
}

/// Every region holding a `config` must hold the same repository.
async fn check_same_repository(regions: &[Region], listings: &[Option<Listing>]) -> Result<()> {
    let mut seen: Option<(String, String)> = None;
    for (i, r) in regions.iter().enumerate() {
        let has_config = listings[i]
            .as_ref()
            .is_some_and(|l| l.contains_key(CONFIG_OBJECT));
        if !has_config {
            continue;
        }
        let bytes = r.backend.get(CONFIG_OBJECT, None).await?;
        let cfg = parse_config(&bytes, &r.name)?;
        match &seen {
            Some((region, id)) if *id != cfg.id => {
                return Err(RepoError::Invalid(format!(
                    "region {} holds repository {} but region {region} holds {id}: refusing to mix two repositories",
                    r.name, cfg.id
                )))
            }
            Some(_) => {}
            None => seen = Some((r.name.clone(), cfg.id)),
        }
    }
    if seen.is_none() {
        return Err(RepoError::Invalid(
            "no region holds a repository (run `lifeboat init`)".into(),
        ));
    }
    Ok(())
}

/// Copy a batch of same-kind objects into region `t`, [`COPIES_IN_FLIGHT`] at a time.
async fn copy_batch(
    regions: &[Region],
    listings: &[Option<Listing>],
    t: usize,
    batch: Work,
    progress: &Arc<Progress>,
    cancel: &Cancel,
    on_copy: &(dyn Fn(&CopyEvent) + Send + Sync),
) -> Result<Vec<CopyEvent>> {
    let mut out = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let mut queue = batch.into_iter();
    loop {
        while set.len() < COPIES_IN_FLIGHT {
            let Some((kind, name, size)) = queue.next() else {
                break;
            };
            cancel.check()?;
            // Sources: every other region that lists the object with the wanted size first.
            let mut sources: Vec<usize> = (0..regions.len())
                .filter(|&s| s != t)
                .filter(|&s| listings[s].as_ref().is_some_and(|l| l.contains_key(&name)))
                .collect();
            sources
                .sort_by_key(|&s| listings[s].as_ref().and_then(|l| l.get(&name)) != Some(&size));
            let sources: Vec<Region> = sources.into_iter().map(|s| regions[s].clone()).collect();
            let target = regions[t].clone();
            let progress = progress.clone();
            set.spawn(async move { copy_one(&sources, &target, kind, &name, &progress).await });
        }
        match set.join_next().await {
            Some(Ok(ev)) => {
                on_copy(&ev);
                out.push(ev);
            }
            Some(Err(e)) => return Err(RepoError::Invalid(format!("copy task: {e}"))),
            None => break,
        }
    }
    Ok(out)
}

async fn copy_one(
    sources: &[Region],
    target: &Region,
    kind: ObjectKind,
    name: &str,
    progress: &Progress,
) -> CopyEvent {
    let mut errors = Vec::new();
    for source in sources {
        match read_verified(source, kind, name).await {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                progress.add_transferred(len);
                let error = write_verified(target, name, bytes).await.err();
                if error.is_none() {
                    progress.add_done(len);
                }
                return CopyEvent {
                    region: target.name.clone(),
                    object: name.to_string(),
                    kind,
                    bytes: len,
                    source: source.name.clone(),
                    error,
                };
            }
            Err(e) => errors.push(format!("{}: {e}", source.name)),
        }
    }
    CopyEvent {
        region: target.name.clone(),
        object: name.to_string(),
        kind,
        bytes: 0,
        source: String::new(),
        error: Some(format!("no good copy to read ({})", errors.join("; "))),
    }
}

/// Read `name` from `source` and check it is what its name says.
async fn read_verified(source: &Region, kind: ObjectKind, name: &str) -> Result<Bytes> {
    let bytes = source.backend.get(name, None).await?;
    match kind.content_id(name) {
        Some(id) => crate::repo::check_stored_id(&bytes, &id, name)?,
        None if kind == ObjectKind::Config => {
            parse_config(&bytes, &source.name)?;
        }
        None => {
            if !bytes.starts_with(b"age-encryption.org/") {
                return Err(RepoError::Corrupt(format!("{name}: not an age file")));
            }
        }
    }
    Ok(bytes)
}

/// Put and check the target now holds an object of the same size.
async fn write_verified(target: &Region, name: &str, bytes: Bytes) -> Result<(), String> {
    let len = bytes.len() as u64;
    target
        .backend
        .put(name, bytes)
        .await
        .map_err(|e| format!("put: {e}"))?;
    match target.backend.head(name).await {
        Ok(size) if size == len => Ok(()),
        Ok(size) => Err(format!(
            "after the put the region reports {size} bytes, expected {len}"
        )),
        Err(e) => Err(format!("head after put: {e}")),
    }
}

/// What the index files and manifests say, read with the writer key.
struct Contents {
    /// Index file → (its plan, the pack objects it names).
    index: BTreeMap<String, (Option<String>, Vec<String>)>,
    /// Snapshot object → its plan, for every manifest that could be read.
    snapshot_plan: HashMap<String, String>,
}

/// Index files and packs that belong in one region.
struct Allowed {
    index: BTreeSet<String>,
    packs: BTreeSet<String>,
}

impl Contents {
    /// Index files of plans stored in `region` (or of no known plan), and the packs named by
    /// those or by index files the region already holds.
    fn allowed_in(&self, region: &str, have: &Listing, plans: &PlanRegions) -> Allowed {
        let mut out = Allowed {
            index: BTreeSet::new(),
            packs: BTreeSet::new(),
        };
        for (name, (plan, packs)) in &self.index {
            let held = have.contains_key(name);
            if held
                || plan
                    .as_deref()
                    .is_none_or(|p| plan_allows(plans, p, region))
            {
                if !held {
                    out.index.insert(name.clone());
                }
                out.packs.extend(packs.iter().cloned());
            }
        }
        out
    }

    /// Split an index batch into the files whose packs are all in `target` (by `present`,
    /// else a `head`) and the others, with why.
    async fn packs_present(
        &self,
        batch: Work,
        target: &Region,
        present: &BTreeSet<String>,
    ) -> (Work, Vec<(String, String)>) {
        let mut ready = Vec::new();
        let mut blocked = Vec::new();
        'files: for item in batch {
            let Some((_, packs)) = self.index.get(&item.1) else {
                blocked.push((
                    item.1.clone(),
                    "it could not be read from any region".into(),
                ));
                continue;
            };
            for p in packs {
                if present.contains(p) {
                    continue;
                }
                if target.backend.head(p).await.is_err() {
                    blocked.push((
                        item.1.clone(),
                        format!("{p}, which it names, is not in the region"),
                    ));
                    continue 'files;
                }
            }
            ready.push(item);
        }
        (ready, blocked)
    }
}

/// Read (from any holder) every index file and every manifest some region lacks.
async fn read_contents(
    regions: &[Region],
    listings: &[Option<Listing>],
    wanted: &BTreeMap<String, u64>,
    keys: MetadataKeys<'_>,
) -> Contents {
    let mut c = Contents {
        index: BTreeMap::new(),
        snapshot_plan: HashMap::new(),
    };
    let everywhere = |name: &str| listings.iter().flatten().all(|l| l.contains_key(name));
    for name in wanted.keys() {
        let kind = ObjectKind::of(name);
        if kind == Some(ObjectKind::Snapshot) && everywhere(name) {
            continue;
        }
        if !matches!(kind, Some(ObjectKind::Index | ObjectKind::Snapshot)) {
            continue;
        }
        for (i, r) in regions.iter().enumerate() {
            if !listings[i].as_ref().is_some_and(|l| l.contains_key(name)) {
                continue;
            }
            let Ok(bytes) = r.backend.get(name, None).await else {
                continue;
            };
            if kind == Some(ObjectKind::Index) {
                // An index file this host does not trust is not spread to other regions.
                if let Ok(f) =
                    index::open_file(keys.secrets.index_key(), keys.trust, name, &r.name, &bytes)
                {
                    let packs = f.packs.iter().map(|(p, _)| pack_name(p)).collect();
                    c.index.insert(name.clone(), (f.plan, packs));
                    break;
                }
            } else if let Ok(plain) = age_decrypt(keys.age_keys, &bytes, name) {
                if let Some(m) = trusted_manifest(keys.trust, &plain, name, &r.name) {
                    c.snapshot_plan.insert(name.clone(), m.plan);
                    break;
                }
            }
        }
    }
    c
}

/// A manifest's plaintext parsed, when its signature is one this host trusts.
fn trusted_manifest(
    trust: &crate::sign::Trust,
    plain: &[u8],
    name: &str,
    region: &str,
) -> Option<Manifest> {
    let (signed, json) = crate::sign::open_manifest_plain(plain, name).ok()?;
    let verdict = trust
        .judge(
            crate::sign::SignedKind::Manifest,
            name,
            region,
            signed.as_ref().map(|(w, s)| (w.as_str(), s)),
            json,
        )
        .ok()?;
    if matches!(verdict, crate::sign::Verdict::Revoked(_)) {
        return None;
    }
    // Only the plan is needed here: sealed details stay sealed.
    crate::details::decode(json, None, name).ok()
}

//! `verify`: is every region a complete, intact repository?
//!
//! Without reading data (any host): every index file and manifest in each region is intact
//! (its stored bytes hash to its name, it authenticates), every pack an index names exists
//! in that region with a plausible size, and every region holds every snapshot. With the
//! identity, also: every tree of every snapshot is readable and every chunk it references
//! is indexed in each region holding the snapshot. With `read_data`: download packs (all,
//! or a random percentage) from each region separately, a few at a time — no fallback,
//! since the point is to find the bad copy — and check hash, authentication, table, every
//! chunk's keyed hash, and every index entry naming the pack against its table
//! ([`crate::verify_data`]).
//!
//! Each region is listed in the reverse of the write order — `snapshots/`, then `index/`,
//! then `data/` — so a backup running meanwhile cannot make a pack look missing: anything an
//! index file listed earlier names was stored before that index file, so it is in the later
//! `data/` listing. A snapshot is expected only in the regions its plan stores in
//! ([`VerifyOptions::plan_regions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::progress::{Cancel, Progress};
use crate::reader::BlobReader;
use crate::regions::RegionSet;
use crate::repo::{pack_name, Repository};
use crate::tree::{NodeKind, Tree};
use crate::{index, verify_data, Id, Index};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Read this percentage (0–100] of packs in every region; `None` reads no data.
    pub read_data_percent: Option<f64>,
    /// Plan name → the regions its snapshots are stored in. A plan not named here is
    /// expected in every region.
    pub plan_regions: PlanRegions,
}

/// Plan name → the names of the regions the plan stores in (its `regions` in the config).
pub type PlanRegions = BTreeMap<String, BTreeSet<String>>;

/// May `plan` be stored in `region` by `plans`?
pub fn plan_allows(plans: &PlanRegions, plan: &str, region: &str) -> bool {
    plans.get(plan).is_none_or(|r| r.contains(region))
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub region: String,
    pub object: String,
    pub message: String,
    /// The region (or object) could not be read at all — an outage, a timeout, a refused
    /// request — so nothing is known to be damaged; a later run may find it intact.
    pub unreachable: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionSummary {
    pub packs: u64,
    pub index_files: u64,
    pub snapshots: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub regions: BTreeMap<String, RegionSummary>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    pub trees_checked: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Some problem is damage (missing, failing its hash or authentication), not only an
    /// unreachable region.
    pub fn damaged(&self) -> bool {
        self.problems.iter().any(|p| !p.unreachable)
    }

    fn push(&mut self, region: &str, object: &str, message: String, unreachable: bool) {
        self.problems.push(Problem {
            region: region.into(),
            object: object.into(),
            message,
            unreachable,
        });
    }

    fn problem(&mut self, region: &str, object: &str, message: impl Into<String>) {
        self.push(region, object, message.into(), false);
    }

    fn unreachable(&mut self, region: &str, object: &str, message: impl Into<String>) {
        self.push(region, object, message.into(), true);
    }

    /// A problem from an error, classified: an outage is not damage.
    fn problem_from(&mut self, region: &str, object: &str, e: &RepoError) {
        self.push(region, object, e.to_string(), is_outage(e));
    }
}

pub async fn verify(
    repo: &Arc<Repository>,
    opts: &VerifyOptions,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<VerifyReport> {
    if opts.read_data_percent.is_some() {
        repo.identity("verify --read-data")?;
    }
    let mut report = VerifyReport::default();
    let key = *repo.secrets().index_key();
    // A region that cannot be listed is reported below, region by region.
    let all_snapshots: HashSet<String> = repo
        .list_everywhere("snapshots/")
        .await?
        .0
        .into_iter()
        .flat_map(|(_, objects)| objects.into_iter().map(|o| o.name))
        .collect();
    // Snapshot object → its plan (`None` when no copy could be read), learnt on the way.
    let mut plans: HashMap<String, Option<String>> = HashMap::new();
    for (i, region) in repo.regions.iter().enumerate() {
        let rname = region.name.clone();
        if !repo.is_available(i) {
            report.unreachable(
                &rname,
                "-",
                format!("region unreachable: {:?}", repo.states[i]),
            );
            continue;
        }
        let b = &region.backend;
        let mut summary = RegionSummary::default();
        // Reverse write order: see the module documentation.
        let listings = async {
            let snapshots = b.list("snapshots/").await?;
            let index_files = b.list("index/").await?;
            Ok::<_, RepoError>((snapshots, index_files, b.list("data/").await?))
        };
        let (snapshot_objects, index_files, data) = match listings.await {
            Ok(l) => l,
            Err(e) => {
                let outage = is_outage(&e);
                report.push(&rname, "-", format!("cannot list the region: {e}"), outage);
                continue;
            }
        };
        let data: BTreeMap<String, u64> = data.into_iter().map(|o| (o.name, o.size)).collect();
        summary.packs = data.len() as u64;
        // What every index file says about each pack, for `--read-data` to check it against.
        let mut named = verify_data::Named::new();
        for o in index_files {
            cancel.check()?;
            summary.index_files += 1;
            let res = async {
                let bytes = b.get(&o.name, None).await?;
                index::open_file(&key, repo.trust(), &o.name, &rname, &bytes)
            }
            .await;
            match res {
                Ok(file) => {
                    let from: Arc<str> = o.name.as_str().into();
                    for (pack, entries) in file.packs {
                        let name = pack_name(&pack);
                        match data.get(&name) {
                            None => report.problem(
                                &rname,
                                &name,
                                format!("pack named by {} is missing", o.name),
                            ),
                            Some(&size) => {
                                let plain: u64 = entries.iter().map(|e| e.length as u64).sum();
                                if size < plain {
                                    report.problem(&rname, &name, format!("pack is {size} bytes, smaller than its {plain} bytes of chunks"));
                                }
                            }
                        }
                        if opts.read_data_percent.is_some() {
                            named.entry(pack).or_default().push((from.clone(), entries));
                        }
                    }
                }
                Err(e) => report.problem_from(&rname, &o.name, &e),
            }
        }
        let snaps: HashSet<String> = snapshot_objects.into_iter().map(|o| o.name).collect();
        summary.snapshots = snaps.len() as u64;
        let mut missing: Vec<&String> = all_snapshots.difference(&snaps).collect();
        missing.sort();
        for s in missing {
            let plan = match plans.get(s) {
                Some(p) => p.clone(),
                None => {
                    let p = snapshot_plan(repo, s).await;
                    plans.insert(s.clone(), p.clone());
                    p
                }
            };
            if plan
                .as_deref()
                .is_some_and(|p| !plan_allows(&opts.plan_regions, p, &rname))
            {
                continue;
            }
            report.problem(
                &rname,
                s,
                "snapshot missing in this region (run `lifeboat replicate`)",
            );
        }
        let mut present: Vec<&String> = snaps.iter().collect();
        present.sort();
        for s in present {
            let res = async {
                let bytes = b.get(s, None).await?;
                crate::repo::check_stored_id(&bytes, &Id::from_object_name(s)?, s)?;
                repo.decrypt_manifest(&bytes, s, &rname)
            }
            .await;
            match res {
                Ok(m) => {
                    if !plan_allows(&opts.plan_regions, &m.plan, &rname) {
                        report.warnings.push(format!(
                            "{rname}: {s} of plan {} is stored here, but the plan's regions do not include {rname}",
                            m.plan
                        ));
                    }
                    plans.insert(s.clone(), Some(m.plan));
                }
                Err(e) => report.problem_from(&rname, s, &e),
            }
        }
        if let Some(pct) = opts.read_data_percent {
            let identity = repo.identity("verify --read-data")?.keys().to_vec();
            let chunk_key = *repo.secrets().chunk_key();
            let mut names: Vec<&String> = data.keys().collect();
            if pct < 100.0 {
                use rand::seq::SliceRandom;
                names.shuffle(&mut rand::thread_rng());
                let n = ((names.len() as f64) * pct / 100.0).ceil() as usize;
                names.truncate(n.max(1).min(names.len()));
            }
            let names: Vec<String> = names.into_iter().cloned().collect();
            let named = Arc::new(named);
            let (rn, summary) = (&rname, &mut summary);
            let report = &mut report;
            verify_data::read_packs(
                b,
                names,
                &named,
                verify_data::Keys {
                    identity,
                    chunk_key,
                },
                (&progress, &cancel),
                |name, outcome| match outcome {
                    verify_data::PackOutcome::Intact { bytes, indexed } => {
                        summary.packs_read += 1;
                        summary.bytes_read += bytes;
                        if !indexed {
                            report.warnings.push(format!("{rn}: {name} is not named by any index file (left by an interrupted backup; prune removes it)"));
                        }
                    }
                    verify_data::PackOutcome::Failed { bytes, errors } => {
                        if bytes > 0 {
                            summary.packs_read += 1;
                            summary.bytes_read += bytes;
                        }
                        for e in &errors {
                            report.problem_from(rn, name, e);
                        }
                    }
                },
            )
            .await?;
        }
        report.regions.insert(rname, summary);
    }
    if repo.has_identity() {
        check_trees(repo, &mut report, &cancel).await?;
    } else {
        report
            .warnings
            .push("no identity on this host: snapshot trees were not checked".into());
    }
    let log = repo.read_log.lock().unwrap_or_else(|p| p.into_inner());
    for d in &log.demoted {
        report.warnings.push(format!(
            "region {} was demoted after repeated failures ({}); trees were read from the other regions",
            d.region, d.error
        ));
    }
    drop(log);
    Ok(report)
}

/// Walk every snapshot's trees; every referenced chunk must be indexed in each region that
/// holds the snapshot.
async fn check_trees(
    repo: &Arc<Repository>,
    report: &mut VerifyReport,
    cancel: &Cancel,
) -> Result<()> {
    // Snapshots before the index: every index file a listed snapshot needs was written
    // before its manifest, so it is in the index loaded afterwards.
    let snapshots = repo.list_snapshots().await?;
    let index = Arc::new(repo.load_index().await?);
    let reader = BlobReader::new(repo.clone(), index.clone());
    let mut seen_trees: HashSet<Id> = HashSet::new();
    for snap in snapshots {
        let mask = RegionSet::of(snap.regions.iter().filter_map(|r| repo.region_index(r)));
        let sname = format!("snapshots/{}", snap.id);
        let mut stack = vec![snap.manifest.tree_root()?];
        while let Some(t) = stack.pop() {
            cancel.check()?;
            if !seen_trees.insert(t) {
                continue;
            }
            check_chunk(repo, &index, &t, mask, &sname, report);
            let tree = match reader
                .read(&t)
                .await
                .and_then(|b| Tree::parse(&b, &format!("tree {}", t.short())))
            {
                Ok(tree) => tree,
                Err(e) => {
                    report.problem("-", &sname, format!("tree {}: {e}", t.short()));
                    continue;
                }
            };
            report.trees_checked += 1;
            for n in &tree.nodes {
                match n.kind {
                    NodeKind::Dir => stack.extend(n.subtree),
                    NodeKind::File => {
                        for c in &n.chunks {
                            check_chunk(repo, &index, c, mask, &sname, report);
                        }
                    }
                    NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_chunk(
    repo: &Repository,
    index: &Index,
    id: &Id,
    mask: RegionSet,
    snap: &str,
    report: &mut VerifyReport,
) {
    if index.has_in_all(id, mask) {
        return;
    }
    let have = index.regions_of(id);
    for (i, r) in repo.regions.iter().enumerate() {
        if mask.contains(i) && !have.contains(i) {
            report.problem(
                &r.name,
                snap,
                format!("chunk {} is not indexed in this region", id.short()),
            );
        }
    }
}

/// Did the region fail to answer (rather than answer with something missing or damaged)?
fn is_outage(e: &RepoError) -> bool {
    matches!(e, RepoError::Unavailable(_))
        || matches!(e, RepoError::Backend(b) if !b.is_not_found())
}

/// The plan of the snapshot object `name`, read from any region; `None` when unreadable.
async fn snapshot_plan(repo: &Repository, name: &str) -> Option<String> {
    let id = Id::from_object_name(name).ok()?;
    let (bytes, from) = repo
        .get_checked(name, |b| crate::repo::check_stored_id(b, &id, name))
        .await
        .ok()?;
    repo.decrypt_manifest(&bytes, name, &repo.regions[from].name)
        .ok()
        .map(|m| m.plan)
}

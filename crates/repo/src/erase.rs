//! Erasure on request: rewrite every snapshot of a plan without the paths matching some
//! patterns, forget the old manifests, and leave a receipt that prune uses to remove the
//! bytes from every pack (repacking shared packs).
//!
//! Trees are decoded, filtered and re-encoded with the [`Tree`] types, so node fields this
//! module does not know about survive the rewrite untouched. New trees go through the normal
//! [`BackupWriter`] (packs, index, then the new manifest), and only then is the old manifest
//! deleted: a crash leaves the old snapshot, the new one, or both — never neither.
//!
//! The receipt (`receipts/<BLAKE3 of the stored bytes>`, JSON in an age file to the
//! recipients: it names the erased paths) records what was removed, from which snapshots,
//! which chunks prune must purge, and what Object Lock still holds, with the dates. On a
//! versioned bucket a delete only hides an object behind a delete marker (the maintainer
//! role has no `s3:DeleteObjectVersion`): the receipt says, per region, that erased bytes
//! stay in noncurrent versions and until when the bucket's lifecycle keeps them.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::AfterDelete;
use crate::error::{RepoError, Result};
use crate::keys::{age_decrypt, age_encrypt, chunk_id};
use crate::lock::MaintenanceLock;
use crate::pack::BlobKind;
use crate::progress::{Cancel, Progress};
use crate::reader::BlobReader;
use crate::repo::{pack_name, Repository};
use crate::tree::{NodeKind, Tree};
use crate::writer::BackupWriter;
use crate::Id;

pub const RECEIPT_VERSION: u32 = 1;
pub const RECEIPT_PREFIX: &str = "receipts/";

/// Chunk ids that erasure receipts ask prune to remove from every pack.
pub async fn erased_chunks(repo: &Repository) -> Result<HashSet<Id>> {
    let mut names = HashSet::new();
    for (_, objects) in repo.list_everywhere(RECEIPT_PREFIX).await?.0 {
        names.extend(objects.into_iter().map(|o| o.name));
    }
    let mut out = HashSet::new();
    for name in names {
        let (bytes, _) = repo.get_checked(&name, |_| Ok(())).await?;
        out.extend(Receipt::open(repo, &bytes, &name)?.chunks);
    }
    Ok(out)
}

/// One snapshot rewritten.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rewritten {
    pub old_snapshot: Id,
    pub new_snapshot: Id,
    pub time: i64,
    /// Paths removed, relative to the backed-up root.
    pub removed: Vec<String>,
    pub bytes: u64,
}

/// The erasure receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub version: u32,
    pub created: i64,
    pub plan: String,
    pub patterns: Vec<String>,
    pub reason: String,
    pub holder: String,
    pub snapshots: Vec<Rewritten>,
    /// Objects Object Lock keeps for now: old manifests and packs holding erased data.
    pub waiting: Vec<LockedIn>,
    /// Chunk ids of the removed files, which prune purges from every pack.
    pub chunks: Vec<Id>,
    /// Regions (versioned buckets) where deleted objects stay as noncurrent versions.
    #[serde(default)]
    pub noncurrent: Vec<Lingering>,
}

/// Erased bytes that outlive prune's delete in a region: noncurrent versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lingering {
    pub region: String,
    /// Days after prune's delete until the bucket's lifecycle removes a noncurrent version;
    /// `None`: no rule found, so they stay until someone removes them by version id.
    pub noncurrent_days: Option<u32>,
    /// The earliest time (epoch seconds) every erased byte can be gone from the region: the
    /// later of the grace period's end and the region's latest retain-until in `waiting`
    /// (when prune can delete), plus `noncurrent_days`, provided prune runs then.
    pub gone_by: Option<i64>,
    /// The same in words, for the person reading the receipt.
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedIn {
    pub region: String,
    pub object: String,
    pub retain_until: i64,
}

impl Receipt {
    pub fn open(repo: &Repository, bytes: &[u8], what: &str) -> Result<Receipt> {
        let plain = age_decrypt(repo.identity(what)?.keys(), bytes, what)?;
        serde_json::from_slice(&plain).map_err(|e| RepoError::Corrupt(format!("{what}: {e}")))
    }
}

/// Does `pattern` select `path` (or a directory above it)? Both are relative, `/`-separated;
/// each pattern component may use `*` (any run within a component) and `?` (one character).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .trim_matches('/')
        .split('/')
        .filter(|c| !c.is_empty())
        .collect();
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    !pat.is_empty()
        && pat.len() <= comps.len()
        && pat
            .iter()
            .zip(&comps)
            .all(|(p, c)| glob(p.as_bytes(), c.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[derive(Default)]
struct Rewrite {
    /// New tree blobs, children before parents.
    trees: Vec<Vec<u8>>,
    removed: Vec<String>,
    removed_files: u64,
    bytes: u64,
    chunks: BTreeSet<Id>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Rewrite tree `id` (at `prefix`) without matching paths; returns the new id (the same id
/// when nothing matched).
fn rewrite_tree<'a>(
    reader: &'a BlobReader,
    chunk_key: &'a [u8; 32],
    id: Id,
    prefix: String,
    patterns: &'a [String],
    out: &'a mut Rewrite,
) -> BoxFut<'a, Id> {
    Box::pin(async move {
        let mut tree = Tree::parse(&reader.read(&id).await?, &format!("tree {}", id.short()))?;
        let mut changed = false;
        let mut kept = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            let name = String::from_utf8_lossy(&node.name_bytes()?).into_owned();
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if patterns.iter().any(|p| matches(p, &path)) {
                changed = true;
                collect(reader, &node, &path, out).await?;
                continue;
            }
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                let new = rewrite_tree(reader, chunk_key, sub, path, patterns, out).await?;
                if new != sub {
                    node.subtree = Some(new);
                    changed = true;
                }
            }
            kept.push(node);
        }
        if !changed {
            return Ok(id);
        }
        tree.nodes = kept;
        let bytes = tree.to_bytes()?;
        let new = chunk_id(chunk_key, &bytes);
        out.trees.push(bytes);
        Ok(new)
    })
}

/// Record a removed node and everything below it.
fn collect<'a>(
    reader: &'a BlobReader,
    node: &'a crate::tree::Node,
    path: &'a str,
    out: &'a mut Rewrite,
) -> BoxFut<'a, ()> {
    Box::pin(async move {
        out.removed.push(path.to_string());
        match node.kind {
            NodeKind::File => {
                out.removed_files += 1;
                out.bytes += node.size;
                out.chunks.extend(node.chunks.iter().copied());
            }
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    let tree = Tree::parse(&reader.read(&sub).await?, "tree")?;
                    for n in &tree.nodes {
                        let name = String::from_utf8_lossy(&n.name_bytes()?).into_owned();
                        collect(reader, n, &format!("{path}/{name}"), out).await?;
                    }
                }
            }
            NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
        }
        Ok(())
    })
}

/// What to erase, and how.
#[derive(Debug, Clone, Copy)]
pub struct Erasure<'a> {
    pub plan: &'a str,
    pub patterns: &'a [String],
    pub reason: &'a str,
    /// Who holds the maintenance lock, for others' messages.
    pub holder: &'a str,
    /// Prune's grace period (seconds), for the receipt's dates.
    pub grace: i64,
    pub dry_run: bool,
}

/// Erase `patterns` from every snapshot of `plan`. Takes the maintenance lock. With
/// `dry_run`, nothing is written and the receipt says what would be removed.
pub async fn erase(repo: &Arc<Repository>, e: &Erasure<'_>, cancel: &Cancel) -> Result<Receipt> {
    let Erasure {
        plan,
        patterns,
        reason,
        holder,
        grace,
        dry_run,
    } = *e;
    repo.identity("forget --path")?;
    if patterns.is_empty() || patterns.iter().any(|p| p.trim_matches('/').is_empty()) {
        return Err(RepoError::Invalid(
            "forget --path needs a non-empty path pattern relative to the backed-up directory"
                .into(),
        ));
    }
    let lock = if dry_run {
        None
    } else {
        Some(MaintenanceLock::acquire(repo, holder, "erasure").await?)
    };
    let result = erase_locked(repo, plan, patterns, reason, holder, dry_run, cancel).await;
    let result = match result {
        Ok(mut receipt) => match lingering(repo, &receipt, grace).await {
            Ok(l) => {
                receipt.noncurrent = l;
                seal(repo, &receipt, dry_run).await.map(|()| receipt)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn erase_locked(
    repo: &Arc<Repository>,
    plan: &str,
    patterns: &[String],
    reason: &str,
    holder: &str,
    dry_run: bool,
    cancel: &Cancel,
) -> Result<Receipt> {
    let now = crate::clock::now_secs();
    let marked = crate::lock::marked_packs(repo).await?;
    let full = Arc::new(repo.load_index().await?);
    let for_backup = Arc::new(repo.load_index_excluding(&marked).await?);
    let reader = BlobReader::new(repo.clone(), full.clone());
    let chunk_key = *repo.secrets().chunk_key();
    let mut receipt = Receipt {
        version: RECEIPT_VERSION,
        created: now,
        plan: plan.to_string(),
        patterns: patterns.to_vec(),
        reason: reason.to_string(),
        holder: holder.to_string(),
        snapshots: Vec::new(),
        waiting: Vec::new(),
        chunks: Vec::new(),
        noncurrent: Vec::new(),
    };
    let mut all_chunks: BTreeSet<Id> = BTreeSet::new();
    let snapshots: Vec<_> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|s| s.manifest.plan == plan)
        .collect();
    for snap in snapshots {
        cancel.check()?;
        let mut rw = Rewrite::default();
        let root = rewrite_tree(
            &reader,
            &chunk_key,
            snap.manifest.tree_root()?,
            String::new(),
            patterns,
            &mut rw,
        )
        .await?;
        if root == snap.manifest.root {
            continue;
        }
        all_chunks.extend(rw.chunks.iter().copied());
        let mut manifest = snap.manifest.clone();
        manifest.root = root;
        manifest.stats.files = manifest.stats.files.saturating_sub(rw.removed_files);
        manifest.stats.bytes = manifest.stats.bytes.saturating_sub(rw.bytes);
        let targets: Vec<usize> = snap
            .regions
            .iter()
            .filter_map(|r| repo.region_index(r))
            .filter(|&i| repo.is_available(i))
            .collect();
        let new_snapshot = if dry_run {
            snap.id
        } else {
            let (repo2, index2, cancel2) = (repo.clone(), for_backup.clone(), cancel.clone());
            let trees = std::mem::take(&mut rw.trees);
            let handle = tokio::runtime::Handle::current();
            let targets2 = targets.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let plan = manifest.plan.clone();
                let mut w = BackupWriter::start(
                    repo2,
                    index2,
                    &plan,
                    &targets2,
                    handle,
                    cancel2,
                    Arc::new(Progress::default()),
                )?;
                for t in trees {
                    w.add(BlobKind::Tree, t)?;
                }
                w.finish(manifest)
            })
            .await
            .map_err(|e| RepoError::Invalid(format!("rewrite task: {e}")))??;
            // The new manifest is committed; only now does the old one go.
            let name = format!("snapshots/{}", snap.id);
            for &i in &targets {
                let b = &repo.regions[i].backend;
                if let Some(until) = locked_until(b, &name, now).await? {
                    receipt.waiting.push(LockedIn {
                        region: repo.regions[i].name.clone(),
                        object: name.clone(),
                        retain_until: until,
                    });
                    continue;
                }
                b.delete(&name).await?;
            }
            outcome.snapshot
        };
        receipt.snapshots.push(Rewritten {
            old_snapshot: snap.id,
            new_snapshot,
            time: snap.manifest.time,
            removed: rw.removed,
            bytes: rw.bytes,
        });
    }
    // Packs holding erased chunks that Object Lock keeps for now.
    let packs: HashSet<Id> = all_chunks
        .iter()
        .filter_map(|c| full.get(c).map(|(p, _)| p))
        .collect();
    for (i, region) in repo.regions.iter().enumerate() {
        if !repo.is_available(i) || region.backend.object_lock_period().is_none() {
            continue;
        }
        for p in &packs {
            if let Some(until) = locked_until(&region.backend, &pack_name(p), now).await? {
                receipt.waiting.push(LockedIn {
                    region: region.name.clone(),
                    object: pack_name(p),
                    retain_until: until,
                });
            }
        }
    }
    receipt.chunks = all_chunks.into_iter().collect();
    Ok(receipt)
}

/// Store the receipt in every available region (not for a dry run or when nothing matched).
async fn seal(repo: &Repository, receipt: &Receipt, dry_run: bool) -> Result<()> {
    if dry_run || receipt.snapshots.is_empty() {
        return Ok(());
    }
    let plain = serde_json::to_vec(receipt).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let sealed = Bytes::from(age_encrypt(&repo.recipients(), &plain)?);
    let name = format!("{RECEIPT_PREFIX}{}", repo.id_rule().id_of(&sealed)?);
    for i in repo.read_order() {
        repo.regions[i].backend.put(&name, sealed.clone()).await?;
    }
    Ok(())
}

/// Per available region whose deletes leave noncurrent versions: how long erased bytes
/// stay after prune (see [`Lingering`]).
async fn lingering(repo: &Repository, receipt: &Receipt, grace: i64) -> Result<Vec<Lingering>> {
    const DAY: i64 = 86_400;
    let mut out = Vec::new();
    for (i, region) in repo.regions.iter().enumerate() {
        if !repo.is_available(i) {
            continue;
        }
        let deletable = receipt
            .waiting
            .iter()
            .filter(|w| w.region == region.name)
            .map(|w| w.retain_until)
            .fold(receipt.created + grace, i64::max);
        let (days, gone_by, note) = match region.backend.after_delete().await? {
            AfterDelete::Gone => continue,
            AfterDelete::Unknown(why) => (None, None, why),
            AfterDelete::Noncurrent { days, note } => {
                let gone_by = days.map(|d| deletable + i64::from(d) * DAY);
                let when = match gone_by {
                    Some(t) => format!(
                        "; erased bytes can be gone from this region by {} UTC at the earliest (prune deletes from {} UTC, once the grace period and any Object Lock retention have passed), provided prune runs then",
                        crate::retention::utc_text(t),
                        crate::retention::utc_text(deletable)
                    ),
                    None => String::new(),
                };
                (days, gone_by, format!("{note}{when}"))
            }
        };
        out.push(Lingering {
            region: region.name.clone(),
            noncurrent_days: days,
            gone_by,
            note,
        });
    }
    Ok(out)
}

async fn locked_until(b: &crate::backend::DynBackend, name: &str, now: i64) -> Result<Option<i64>> {
    if b.object_lock_period().is_none() {
        return Ok(None);
    }
    match b.retain_until(name).await {
        Ok(Some(u)) if u > now => Ok(Some(u)),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_select_paths_and_everything_below() {
        assert!(matches("customers/42.txt", "customers/42.txt"));
        assert!(matches("/customers/", "customers/42.txt"));
        assert!(matches("customers/*.txt", "customers/42.txt"));
        assert!(matches("*/4?.txt", "customers/42.txt"));
        assert!(!matches("customers/4", "customers/42.txt"));
        assert!(!matches("customers/42.txt/x", "customers/42.txt"));
        assert!(!matches("other", "customers/42.txt"));
        assert!(!matches("", "customers/42.txt"));
    }
}

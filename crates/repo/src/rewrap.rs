//! `keys rewrap`: older recipient epochs' objects get a header for the current epoch's
//! recipients, in place, keeping their file key and payload (so their ids and names), and
//! the census `keys list` shows of which epoch each object still is.
//!
//! Rewrapped: packs (`data/`), manifests (`snapshots/`), drill reports (`drills/`), audit
//! checkpoints (`audit/`) and erasure receipts (`receipts/`), each to the current epoch's
//! recipients plus, for the types that have it today (manifests, drill reports, audit
//! checkpoints), the writer recipient. Not rewrapped: `keys/secrets-NNNN.age` and
//! `keys/details-NNNN.age` (every epoch's object holds the same key material and `keys
//! rotate` already wrote the current epoch's; see
//! docs/FORMAT.md), index files and `config` (not age files).
//!
//! An object's epoch is the epoch of the identity that unwraps one of its stanzas, read
//! from its first [`PROBE`] bytes (one ranged read): objects already at the current epoch
//! are skipped, so a run interrupted at any point finishes when run again. Per object: the
//! old header's MAC is checked under the unwrapped file key, the new file is decrypted whole
//! with the current epoch's identity alone, put under the same name (local regions: temp
//! file and rename; S3: a put of the same key), read back, compared and decrypted again; a
//! read-back that does not match is replaced by the old bytes. In a bucket with Object Lock
//! the put creates a new version and the previous one (old header) stays until its
//! retain-until, which the report lists. Content-addressed objects whose name hashes the
//! whole file (written by format v1) cannot keep their name with a new header: they are
//! listed and left alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use age::x25519;
use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::age_header::{self, HeaderError};
use crate::backend::DynBackend;
use crate::error::{RepoError, Result};
use crate::keys::age_decrypt;
use crate::lock::MaintenanceLock;
use crate::{Cancel, Id, Progress, Repository};

/// Bytes read to find an object's header (a header with a few X25519 stanzas is ~300).
pub const PROBE: u64 = 4096;
/// Objects handled at once per run.
const IN_FLIGHT: usize = 8;

/// An object type rewrap handles: its prefix, whether its header also wraps the file key
/// to the writer recipient, whether its name is the id of its payload.
struct Kind {
    prefix: &'static str,
    writer: bool,
    content_addressed: bool,
}

static KINDS: [Kind; 5] = [
    Kind {
        prefix: "data/",
        writer: false,
        content_addressed: true,
    },
    Kind {
        prefix: "snapshots/",
        writer: true,
        content_addressed: true,
    },
    Kind {
        prefix: crate::erase::RECEIPT_PREFIX,
        writer: false,
        content_addressed: true,
    },
    Kind {
        prefix: crate::drills::PREFIX,
        writer: true,
        content_addressed: false,
    },
    Kind {
        prefix: crate::audit::PREFIX,
        writer: true,
        content_addressed: false,
    },
];

/// The host's identities, each with the epoch whose recipients name it.
fn epoch_keys(repo: &Repository, what: &str) -> Result<Vec<(u32, x25519::Identity)>> {
    let identity = repo.identity(what)?;
    let epochs = crate::epochs::list(repo, 0).epochs;
    Ok(identity
        .keys()
        .iter()
        .filter_map(|k| {
            let public = k.to_public().to_string();
            epochs
                .iter()
                .find(|e| e.recipients.contains(&public))
                .map(|e| (e.epoch, k.clone()))
        })
        .collect())
}

/// The object's header (from a ranged read, or the whole object when the header is longer).
async fn head_of(b: &DynBackend, name: &str) -> Result<(Bytes, age_header::Header)> {
    let probe = b.get(name, Some(0..PROBE)).await?;
    match age_header::parse(&probe) {
        Ok(h) => Ok((probe, h)),
        Err(HeaderError::Truncated) if probe.len() as u64 >= PROBE => {
            let whole = b.get(name, None).await?;
            let h = age_header::parse(&whole).map_err(|e| header_error(name, e))?;
            Ok((whole, h))
        }
        Err(e) => Err(header_error(name, e)),
    }
}

fn header_error(name: &str, e: HeaderError) -> RepoError {
    RepoError::Corrupt(match e {
        HeaderError::Truncated => format!("{name}: the object ends inside its age header"),
        HeaderError::Invalid(m) => format!("{name}: {m}"),
    })
}

/// The epoch of the first of `keys` that unwraps a stanza, with the file key.
fn epoch_of(
    h: &age_header::Header,
    keys: &[(u32, x25519::Identity)],
) -> Option<Result<(u32, age_core::format::FileKey)>> {
    keys.iter().find_map(|(epoch, k)| {
        age_header::unwrap_file_key(&h.stanzas, k).map(|r| r.map(|fk| (*epoch, fk)))
    })
}

/// One region's objects by epoch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionCensus {
    pub region: String,
    /// Objects per epoch (every epoch of the repository appears, with 0 when none).
    pub per_epoch: BTreeMap<u32, u64>,
    /// Objects no identity of this host opens (an epoch whose identity is not here).
    pub unknown: u64,
    /// The region could not be listed or read, and why (its counts are then incomplete).
    pub error: Option<String>,
}

/// Count every age object of every available region by the epoch that opens it.
pub async fn census(repo: &Repository) -> Result<Vec<RegionCensus>> {
    let keys = Arc::new(epoch_keys(repo, "tell which epoch each object is of")?);
    let mut out = Vec::new();
    for (i, r) in repo.regions.iter().enumerate() {
        let mut c = RegionCensus {
            region: r.name.clone(),
            per_epoch: crate::epochs::list(repo, 0)
                .epochs
                .iter()
                .map(|e| (e.epoch, 0))
                .collect(),
            ..Default::default()
        };
        if !repo.is_available(i) {
            c.error = Some("unavailable".into());
            out.push(c);
            continue;
        }
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        for k in &KINDS {
            match r.backend.list(k.prefix).await {
                Ok(l) => names.extend(l.into_iter().map(|o| o.name)),
                Err(e) => c.error = Some(e.to_string()),
            }
        }
        let mut pending = names.into_iter();
        loop {
            while tasks.len() < IN_FLIGHT * 2 {
                let Some(name) = pending.next() else { break };
                let (b, keys) = (r.backend.clone(), keys.clone());
                tasks.spawn(async move {
                    let (_, h) = head_of(&b, &name).await?;
                    Ok::<_, RepoError>(epoch_of(&h, &keys).and_then(|r| r.ok()).map(|e| e.0))
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            match done.map_err(|e| RepoError::Invalid(format!("task: {e}")))? {
                Ok(Some(epoch)) => *c.per_epoch.entry(epoch).or_default() += 1,
                Ok(None) => c.unknown += 1,
                // Deleted by a prune since the listing: not an object any more.
                Err(RepoError::Backend(e)) if e.is_not_found() => {}
                Err(e) => {
                    c.unknown += 1;
                    c.error.get_or_insert(e.to_string());
                }
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// What to rewrap.
#[derive(Debug, Clone)]
pub struct RewrapOptions {
    /// Only objects of this epoch (`None`: every epoch older than the current one).
    pub epoch: Option<u32>,
    /// Who holds the maintenance lock (host and process), for `locks/` objects.
    pub holder: String,
    pub now: i64,
}

/// An object whose previous version Object Lock keeps until `retain_until`.
#[derive(Debug, Clone, Serialize)]
pub struct LockedObject {
    pub region: String,
    pub object: String,
    pub retain_until: i64,
}

/// An object left as it was, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectProblem {
    pub region: String,
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionRewrap {
    pub region: String,
    pub rewrapped: u64,
    pub skipped: u64,
    /// The region did not answer when the repository was opened, or could not be listed.
    pub unavailable: Option<String>,
}

/// What a rewrap did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewrapReport {
    pub repository: String,
    /// The epoch objects were rewrapped to.
    pub epoch: u32,
    /// Objects given a current-epoch header, in all regions.
    pub rewrapped: u64,
    /// Objects already at the current epoch (or, with `--epoch`, of another epoch).
    pub skipped: u64,
    /// Rewrapped objects whose previous version (old header) Object Lock retains.
    pub locked: Vec<LockedObject>,
    /// Objects that cannot keep their name with a new header (format v1 names).
    pub kept: Vec<ObjectProblem>,
    /// Objects that could not be rewrapped and are unchanged.
    pub failed: Vec<ObjectProblem>,
    pub regions: Vec<RegionRewrap>,
}

impl RewrapReport {
    /// Every region answered and every object of the selected epochs is rewrapped (or kept).
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.regions.iter().all(|r| r.unavailable.is_none())
    }
}

/// What one region's objects are rewrapped with.
struct Job {
    backend: DynBackend,
    keys: Arc<Vec<(u32, x25519::Identity)>>,
    current: u32,
    current_identity: x25519::Identity,
    recipients: Vec<x25519::Recipient>,
    writer: x25519::Recipient,
    /// Manifests are also wrapped to every active writer (so each one lists snapshots).
    writers: Vec<x25519::Recipient>,
    only: Option<u32>,
    now: i64,
    progress: Arc<Progress>,
}

enum Outcome {
    Skipped,
    Rewrapped { locked_until: Option<i64> },
    Kept(String),
    Failed(String),
}

impl Job {
    async fn one(&self, kind: &Kind, name: &str) -> Result<Outcome> {
        let (_, probe) = head_of(&self.backend, name).await?;
        let epoch = match epoch_of(&probe, &self.keys) {
            None => {
                return Ok(Outcome::Failed(
                    "no identity of this host opens it (add the key line of its epoch to the identity file)".into(),
                ))
            }
            Some(r) => r?.0,
        };
        if epoch == self.current || self.only.is_some_and(|e| e != epoch) {
            return Ok(Outcome::Skipped);
        }
        let old = self.backend.get(name, None).await?;
        let h = age_header::parse(&old).map_err(|e| header_error(name, e))?;
        let Some(Ok((_, file_key))) = epoch_of(&h, &self.keys) else {
            return Ok(Outcome::Failed(
                "its header changed while being read".into(),
            ));
        };
        if !h.verify_mac(&old, &file_key) {
            return Ok(Outcome::Failed(
                "its age header MAC does not verify (damaged or forged header): left as is".into(),
            ));
        }
        let payload = &old[h.len..];
        if kind.content_addressed {
            let id = Id::from_object_name(name)?;
            if Id::of_stored(payload) != id {
                return Ok(if Id::of_stored(&old) == id {
                    Outcome::Kept("written by format v1: its name hashes the whole file, so a new header would not match it".into())
                } else {
                    Outcome::Failed(
                        "stored bytes do not match their id (damaged): left as is".into(),
                    )
                });
            }
        }
        let mut to: Vec<&x25519::Recipient> = self.recipients.iter().collect();
        if kind.prefix == "snapshots/" {
            to.push(&self.writer);
            to.extend(self.writers.iter());
        } else if kind.writer {
            to.push(&self.writer);
        }
        let mut new = age_header::write(&file_key, &to)?;
        new.extend_from_slice(payload);
        let new = Bytes::from(new);
        let opens = |bytes: &[u8]| {
            age_decrypt(std::slice::from_ref(&self.current_identity), bytes, name).is_ok()
        };
        if !opens(&new) {
            return Ok(Outcome::Failed(
                "the rewrapped file did not decrypt with the current identity: left as is".into(),
            ));
        }
        let locked_until = if self.backend.object_lock_period().is_some() {
            match self.backend.retain_until(name).await {
                Ok(Some(u)) if u > self.now => Some(u),
                Ok(_) => None,
                Err(e) if e.is_not_found() => return Ok(Outcome::Skipped),
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        self.backend.put(name, new.clone()).await?;
        let back = self.backend.get(name, None).await;
        if !back.as_ref().is_ok_and(|b| *b == new && opens(b)) {
            // Never leave an object unreadable: put the old bytes back.
            self.backend.put(name, old).await?;
            return Ok(Outcome::Failed(
                "the rewrapped object did not read back as written: the old one was put back"
                    .into(),
            ));
        }
        tracing::debug!(object = name, from = epoch, to = self.current, "rewrapped");
        Ok(Outcome::Rewrapped { locked_until })
    }
}

/// Rewrap every object of the selected older epochs, in every available region, to the
/// current epoch. Needs the identity of the current epoch (to check each result) and of the
/// epochs being rewrapped. Holds the maintenance lock, so no prune deletes (and this put
/// back) an object meanwhile.
pub async fn rewrap(
    repo: &Repository,
    opts: &RewrapOptions,
    progress: Arc<Progress>,
    cancel: &Cancel,
) -> Result<RewrapReport> {
    let current = repo.config.current_epoch();
    if repo.config.epochs.len() < 2 {
        return Err(RepoError::Invalid(format!(
            "repository {} has one recipient epoch: there is nothing older to rewrap (`lifeboat keys rotate` starts a new one)",
            repo.config.id
        )));
    }
    if let Some(e) = opts.epoch {
        if e >= current || !repo.config.epochs.iter().any(|x| x.epoch == e) {
            return Err(RepoError::Invalid(format!(
                "--epoch {e}: not an older epoch of repository {} (epochs {}, current {current})",
                repo.config.id,
                repo.config
                    .epochs
                    .iter()
                    .map(|x| x.epoch.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let keys = epoch_keys(repo, "rewrap older objects")?;
    let current_identity = keys
        .iter()
        .find(|(e, _)| *e == current)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| {
            RepoError::Key(format!(
                "keys rewrap checks every rewrapped object with the identity of the current epoch {current}, which the identity file does not hold: add its key line (keep the older epochs' lines too)"
            ))
        })?;
    let recipients: Vec<x25519::Recipient> = repo.recipients().into_iter().cloned().collect();
    let lock = MaintenanceLock::acquire(repo, &opts.holder, "rewrap").await?;
    let keys = Arc::new(keys);
    let mut report = RewrapReport {
        repository: repo.config.id.clone(),
        epoch: current,
        ..Default::default()
    };
    let result = async {
        for (i, r) in repo.regions.iter().enumerate() {
            let mut rr = RegionRewrap {
                region: r.name.clone(),
                ..Default::default()
            };
            if !repo.is_available(i) {
                rr.unavailable = Some("did not answer when the repository was opened".into());
                report.regions.push(rr);
                continue;
            }
            let job = Arc::new(Job {
                backend: r.backend.clone(),
                keys: keys.clone(),
                current,
                current_identity: current_identity.clone(),
                recipients: recipients.clone(),
                writer: repo.writer_recipient().clone(),
                writers: repo.active_writer_recipients(),
                only: opts.epoch,
                now: opts.now,
                progress: progress.clone(),
            });
            let mut objects = Vec::new();
            for (k, kind) in KINDS.iter().enumerate() {
                match r.backend.list(kind.prefix).await {
                    Ok(l) => {
                        for o in l {
                            progress.add_total(o.size);
                            objects.push((k, o.name, o.size));
                        }
                    }
                    Err(e) => rr.unavailable = Some(format!("list {}: {e}", kind.prefix)),
                }
            }
            run_region(&job, &r.name, objects, &mut rr, &mut report, cancel).await?;
            tracing::info!(region = %r.name, rewrapped = rr.rewrapped, skipped = rr.skipped, "region rewrapped");
            report.regions.push(rr);
        }
        Ok::<_, RepoError>(())
    }
    .await;
    lock.release().await;
    result?;
    report.rewrapped = report.regions.iter().map(|r| r.rewrapped).sum();
    report.skipped = report.regions.iter().map(|r| r.skipped).sum();
    Ok(report)
}

async fn run_region(
    job: &Arc<Job>,
    region: &str,
    objects: Vec<(usize, String, u64)>,
    rr: &mut RegionRewrap,
    report: &mut RewrapReport,
    cancel: &Cancel,
) -> Result<()> {
    let mut tasks = JoinSet::new();
    let mut pending = objects.into_iter();
    loop {
        while tasks.len() < IN_FLIGHT && !cancel.is_cancelled() {
            let Some((k, name, size)) = pending.next() else {
                break;
            };
            let job = job.clone();
            tasks.spawn(async move {
                let out = job.one(&KINDS[k], &name).await;
                job.progress.add_done(size);
                job.progress.add_file();
                (name, out)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (name, out) = done.map_err(|e| RepoError::Invalid(format!("task: {e}")))?;
        let problem = |reason: String| ObjectProblem {
            region: region.to_string(),
            object: name.clone(),
            reason,
        };
        match out {
            Ok(Outcome::Skipped) => rr.skipped += 1,
            Ok(Outcome::Rewrapped { locked_until }) => {
                rr.rewrapped += 1;
                if let Some(until) = locked_until {
                    report.locked.push(LockedObject {
                        region: region.to_string(),
                        object: name.clone(),
                        retain_until: until,
                    });
                }
            }
            // Deleted by a prune that ran before the lock was taken: nothing to do.
            Err(RepoError::Backend(e)) if e.is_not_found() => rr.skipped += 1,
            Ok(Outcome::Kept(reason)) => report.kept.push(problem(reason)),
            Ok(Outcome::Failed(reason)) => report.failed.push(problem(reason)),
            Err(e) => report.failed.push(problem(e.to_string())),
        }
    }
    cancel.check()
}

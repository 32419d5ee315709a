//! Opening and creating a repository across regions, and reading from it with per-object
//! fallback between regions.
//!
//! Reads go to the preferred region first. A per-operation circuit breaker demotes a region
//! after [`BREAKER_FAILURES`] reads in a row failed there (timeouts, outages, refused
//! requests; not missing or damaged objects, which say nothing about the region): for the
//! rest of the repository's life (one restore, one verify) it is tried last, so reads go to
//! the other region at once instead of each waiting out the region's timeout. Demotions are
//! in [`ReadLog::demoted`] for the command's summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, DynBackend};
pub use crate::chunker::ChunkerParams;
use crate::error::{RepoError, Result};
pub use crate::id::check_stored_id;
use crate::keys::{age_decrypt, age_encrypt, parse_recipient, Identity, Keyring, WriterKey};
use crate::regions::{check_region_count, RegionSet};
use crate::snapshot::{Manifest, SnapshotEntry};
use crate::{index, Id, Index};

/// Failed reads in a row after which a region is demoted for the rest of the operation.
pub const BREAKER_FAILURES: u32 = 2;

pub const FORMAT_NAME: &str = "lifeboat-repository";
pub const FORMAT_VERSION: u32 = 1;
pub const CONFIG_OBJECT: &str = "config";
pub const WRITER_KEY_OBJECT: &str = "keys/writer.age";

/// A named backend holding one copy of the repository.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub backend: DynBackend,
}

/// The plaintext `config` object. Holds no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: i64,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
    pub recipients: Vec<String>,
    pub writer_recipient: String,
}

/// Choices fixed at `init`.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

/// How a region answered when the repository was opened.
#[derive(Debug, Clone)]
pub enum RegionState {
    Ok,
    Unavailable(String),
}

/// One object read from a region other than the preferred one, and why.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub object: String,
    pub failed_region: String,
    pub error: String,
    pub used_region: String,
}

/// A region the circuit breaker demoted, and the last error that did it.
#[derive(Debug, Clone)]
pub struct Demotion {
    pub region: String,
    pub error: String,
}

/// Which regions served reads: counts per region, every fallback and every demotion.
#[derive(Debug, Default)]
pub struct ReadLog {
    pub per_region: BTreeMap<String, u64>,
    pub fallbacks: Vec<Fallback>,
    pub demoted: Vec<Demotion>,
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    pub config: RepoConfig,
    pub regions: Vec<Region>,
    pub states: Vec<RegionState>,
    recipients: Vec<age::x25519::Recipient>,
    writer: WriterKey,
    identity: Option<Identity>,
    preferred: usize,
    pub read_log: Mutex<ReadLog>,
    /// Per region: reads in a row that failed there (the circuit breaker's count).
    failures: Vec<AtomicU32>,
}

/// Create the repository in every region that lacks one. Regions that already hold this
/// repository are left untouched; a region holding a different repository is an error.
pub async fn init(
    regions: &[Region],
    keys: &Keyring,
    opts: InitOptions,
) -> Result<(RepoConfig, Vec<String>)> {
    let writer = keys
        .writer
        .as_ref()
        .ok_or_else(|| RepoError::Key("init needs the writer key".into()))?;
    if keys.recipients.is_empty() {
        return Err(RepoError::Key("init needs at least one recipient".into()));
    }
    let mut existing: Option<RepoConfig> = None;
    let mut missing = Vec::new();
    for r in regions {
        match r.backend.get(CONFIG_OBJECT, None).await {
            Ok(b) => {
                let cfg = parse_config(&b, &r.name)?;
                if let Some(e) = &existing {
                    if e.id != cfg.id {
                        return Err(RepoError::Invalid(format!(
                            "region {} holds repository {} but another region holds {}; refusing to mix them",
                            r.name, cfg.id, e.id
                        )));
                    }
                }
                existing = Some(cfg);
            }
            Err(BackendError::NotFound(_)) => missing.push(r),
            Err(e) => return Err(RepoError::Invalid(format!("region {}: {e}", r.name))),
        }
    }
    let recipient_strings: Vec<String> = keys.recipients.iter().map(|r| r.to_string()).collect();
    let config = match existing {
        Some(cfg) => {
            if missing.is_empty() {
                return Err(RepoError::Invalid(format!(
                    "every region already holds repository {}; refusing to overwrite it",
                    cfg.id
                )));
            }
            check_keys(&cfg, &keys.recipients, writer)?;
            cfg
        }
        None => RepoConfig {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: crate::clock::now_secs(),
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            zstd_level: opts.zstd_level,
            recipients: recipient_strings,
            writer_recipient: writer.recipient().to_string(),
        },
    };
    let rcpts: Vec<&age::x25519::Recipient> = keys.recipients.iter().collect();
    let writer_age = Bytes::from(age_encrypt(&rcpts, writer.to_file_text().as_bytes())?);
    let config_bytes = Bytes::from(
        serde_json::to_vec_pretty(&config).map_err(|e| RepoError::Invalid(e.to_string()))?,
    );
    let mut created = Vec::new();
    for r in missing {
        // The config object is written last: its presence means "initialized".
        r.backend.put(WRITER_KEY_OBJECT, writer_age.clone()).await?;
        r.backend.put(CONFIG_OBJECT, config_bytes.clone()).await?;
        created.push(r.name.clone());
    }
    Ok((config, created))
}

pub(crate) fn parse_config(bytes: &[u8], region: &str) -> Result<RepoConfig> {
    let cfg: RepoConfig = serde_json::from_slice(bytes)
        .map_err(|e| RepoError::Corrupt(format!("region {region}: config object: {e}")))?;
    if cfg.format != FORMAT_NAME {
        return Err(RepoError::Invalid(format!(
            "region {region}: not a lifeboat repository"
        )));
    }
    if cfg.version != FORMAT_VERSION {
        return Err(RepoError::Invalid(format!(
            "region {region}: repository format version {} is not supported by this lifeboat (supports {FORMAT_VERSION})",
            cfg.version
        )));
    }
    crate::chunker::validate(&cfg.chunker)
        .map_err(|e| RepoError::Corrupt(format!("region {region}: config object: {e}")))?;
    if !(1 << 20..=1 << 28).contains(&cfg.pack_size) || !(1..=19).contains(&cfg.zstd_level) {
        return Err(RepoError::Corrupt(format!(
            "region {region}: config object: pack_size {} or zstd_level {} out of range",
            cfg.pack_size, cfg.zstd_level
        )));
    }
    Ok(cfg)
}

fn check_keys(
    cfg: &RepoConfig,
    recipients: &[age::x25519::Recipient],
    writer: &WriterKey,
) -> Result<()> {
    if !recipients.is_empty() {
        let mut mine: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        let mut theirs = cfg.recipients.clone();
        mine.sort();
        theirs.sort();
        if mine != theirs {
            return Err(RepoError::WrongKey(format!(
                "keys.recipients in lifeboat.toml differ from repository {}'s recipients ({}); fix the config rather than encrypting to keys the repository does not know",
                cfg.id,
                cfg.recipients.join(", ")
            )));
        }
    }
    if writer.recipient().to_string() != cfg.writer_recipient {
        return Err(RepoError::WrongKey(format!(
            "the writer key does not belong to repository {} (its writer is {})",
            cfg.id, cfg.writer_recipient
        )));
    }
    Ok(())
}

impl Repository {
    /// Open the repository in `regions`; `preferred` names the region reads try first.
    /// Unreachable regions are recorded in `states`; at least one must answer.
    pub async fn open(
        regions: Vec<Region>,
        keys: Keyring,
        preferred: Option<&str>,
    ) -> Result<Repository> {
        check_region_count(regions.len())?;
        let mut futs = Vec::new();
        for r in &regions {
            let b = r.backend.clone();
            futs.push(tokio::spawn(
                async move { b.get(CONFIG_OBJECT, None).await },
            ));
        }
        let mut states = Vec::new();
        let mut config: Option<RepoConfig> = None;
        let mut problems = Vec::new();
        for (r, f) in regions.iter().zip(futs) {
            let res = f
                .await
                .map_err(|e| RepoError::Invalid(format!("task: {e}")))?;
            match res {
                Ok(b) => {
                    let cfg = parse_config(&b, &r.name)?;
                    if let Some(c) = &config {
                        if c.id != cfg.id {
                            return Err(RepoError::Invalid(format!(
                                "region {} holds repository {}, others hold {}: the regions in lifeboat.toml point at different repositories",
                                r.name, cfg.id, c.id
                            )));
                        }
                    }
                    config = Some(cfg);
                    states.push(RegionState::Ok);
                }
                Err(BackendError::NotFound(_)) => {
                    let m = "no repository here (run `lifeboat init`)".to_string();
                    problems.push(format!("{}: {m}", r.name));
                    states.push(RegionState::Unavailable(m));
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", r.name));
                    states.push(RegionState::Unavailable(e.to_string()));
                }
            }
        }
        let config = config.ok_or_else(|| {
            RepoError::Invalid(format!(
                "no region could be opened: {}",
                problems.join("; ")
            ))
        })?;
        let preferred = match preferred {
            Some(p) => regions.iter().position(|r| r.name == p).ok_or_else(|| {
                RepoError::Invalid(format!(
                    "unknown region {p:?}; configured regions: {}",
                    regions
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => 0,
        };
        let Keyring {
            recipients,
            writer,
            identity,
        } = keys;
        let mut repo = Repository {
            config,
            regions,
            states,
            recipients,
            writer: WriterKey::generate(), // replaced below
            identity,
            preferred,
            read_log: Mutex::new(ReadLog::default()),
            failures: Vec::new(),
        };
        repo.failures = repo.regions.iter().map(|_| AtomicU32::new(0)).collect();
        if let Some(id) = &repo.identity {
            let r = id.recipient().to_string();
            if !repo.config.recipients.contains(&r) {
                return Err(RepoError::WrongKey(format!(
                    "the identity (public key {r}) is not a recipient of repository {}: it cannot decrypt this repository's data",
                    repo.config.id
                )));
            }
        }
        repo.writer = match writer {
            Some(w) => w,
            None => {
                let identity = repo.identity.as_ref().ok_or_else(|| {
                    RepoError::NeedIdentity("opening the repository without a writer key".into())
                })?;
                let (b, _) = repo.get_checked(WRITER_KEY_OBJECT, |_| Ok(())).await?;
                let text = age_decrypt(identity.inner(), &b, WRITER_KEY_OBJECT)?;
                let text = String::from_utf8(text)
                    .map_err(|_| RepoError::Corrupt("keys/writer.age: not text".into()))?;
                WriterKey::parse(&text)?
            }
        };
        let recipients = std::mem::take(&mut repo.recipients);
        check_keys(&repo.config, &recipients, &repo.writer)?;
        repo.recipients = if recipients.is_empty() {
            repo.config
                .recipients
                .iter()
                .map(|s| parse_recipient(s))
                .collect::<Result<_>>()?
        } else {
            recipients
        };
        Ok(repo)
    }

    pub fn writer(&self) -> &WriterKey {
        &self.writer
    }

    pub fn recipients(&self) -> Vec<&age::x25519::Recipient> {
        self.recipients.iter().collect()
    }

    /// The identity, or a `NeedIdentity` error naming `what` needed it.
    pub fn identity(&self, what: &str) -> Result<&Identity> {
        self.identity
            .as_ref()
            .ok_or_else(|| RepoError::NeedIdentity(what.to_string()))
    }

    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    pub fn is_available(&self, region: usize) -> bool {
        matches!(self.states[region], RegionState::Ok)
    }

    /// Indices of regions that opened, the preferred one first and regions the circuit
    /// breaker demoted last.
    pub fn read_order(&self) -> Vec<usize> {
        let mut order = vec![self.preferred];
        order.extend((0..self.regions.len()).filter(|&i| i != self.preferred));
        order.retain(|&i| self.is_available(i));
        order.sort_by_key(|&i| self.is_demoted(i));
        order
    }

    /// Has the circuit breaker demoted this region for the rest of the operation?
    pub fn is_demoted(&self, region: usize) -> bool {
        self.failures
            .get(region)
            .is_some_and(|f| f.load(Ordering::Relaxed) >= BREAKER_FAILURES)
    }

    /// Count a read of `region` for the circuit breaker: `Some(error)` when the region
    /// failed to answer, `None` when it answered (even "not found" or a damaged copy).
    fn record_read(&self, region: usize, failure: Option<&BackendError>) {
        let Some(count) = self.failures.get(region) else {
            return;
        };
        match failure {
            None => {
                if count.load(Ordering::Relaxed) < BREAKER_FAILURES {
                    count.store(0, Ordering::Relaxed);
                }
            }
            Some(e) => {
                if count.fetch_add(1, Ordering::Relaxed) + 1 == BREAKER_FAILURES {
                    let name = self.regions[region].name.clone();
                    tracing::warn!(region = %name, error = %e, "region demoted for the rest of this operation: reads go to the other regions first");
                    let mut log = self.read_log.lock().unwrap_or_else(|p| p.into_inner());
                    log.demoted.push(Demotion {
                        region: name,
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    /// Read `name`, preferred region first, falling back per object to the others when the
    /// object is missing, unreadable or fails `check`. Fallbacks are logged and recorded.
    pub async fn get_checked(
        &self,
        name: &str,
        check: impl Fn(&Bytes) -> Result<()>,
    ) -> Result<(Bytes, usize)> {
        let mut errors: Vec<(usize, RepoError)> = Vec::new();
        for i in self.read_order() {
            let res = match self.regions[i].backend.get(name, None).await {
                Ok(b) => {
                    self.record_read(i, None);
                    check(&b).map(|_| b)
                }
                Err(e) => {
                    self.record_read(i, Some(&e).filter(|e| !e.is_not_found()));
                    Err(e.into())
                }
            };
            match res {
                Ok(b) => {
                    let mut log = self.read_log.lock().unwrap_or_else(|p| p.into_inner());
                    *log.per_region
                        .entry(self.regions[i].name.clone())
                        .or_default() += 1;
                    for (failed, error) in &errors {
                        tracing::warn!(object = name, failed_region = %self.regions[*failed].name, used_region = %self.regions[i].name, %error, "read fell back to another region");
                        log.fallbacks.push(Fallback {
                            object: name.to_string(),
                            failed_region: self.regions[*failed].name.clone(),
                            error: error.to_string(),
                            used_region: self.regions[i].name.clone(),
                        });
                    }
                    return Ok((b, i));
                }
                Err(e) => errors.push((i, e)),
            }
        }
        Err(no_good_copy(name, &self.regions, errors))
    }

    /// List `prefix` in every available region. A region whose listing fails is left out
    /// (and named in the second result) as long as one region answers: one region failing
    /// must not stop a restore or a backup that the other region can serve.
    pub async fn list_everywhere(
        &self,
        prefix: &str,
    ) -> Result<(
        Vec<(usize, Vec<crate::backend::ObjectInfo>)>,
        Vec<(String, String)>,
    )> {
        let mut listed = Vec::new();
        let mut failed = Vec::new();
        // Concurrently: a frozen region costs one timeout, not one per region.
        let mut set = tokio::task::JoinSet::new();
        for (pos, i) in self.read_order().into_iter().enumerate() {
            let (b, p) = (self.regions[i].backend.clone(), prefix.to_string());
            set.spawn(async move { (pos, i, b.list(&p).await) });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.map_err(|e| RepoError::Invalid(format!("list task: {e}")))?);
        }
        results.sort_by_key(|(pos, _, _)| *pos);
        for (_, i, res) in results {
            self.record_read(i, res.as_ref().err());
            match res {
                Ok(objects) => listed.push((i, objects)),
                Err(e) => {
                    tracing::warn!(region = %self.regions[i].name, prefix, error = %e, "listing failed; using the other regions");
                    failed.push((self.regions[i].name.clone(), e.to_string()));
                }
            }
        }
        if listed.is_empty() {
            let detail: Vec<String> = failed.iter().map(|(r, e)| format!("{r}: {e}")).collect();
            return Err(RepoError::Invalid(format!(
                "no region could list {prefix}: {}",
                detail.join("; ")
            )));
        }
        Ok((listed, failed))
    }

    /// Load every index file of every available region that can be listed. A region that
    /// cannot be listed contributes nothing, so nothing counts as stored there; it is named
    /// in [`Index::unlisted`] so that a backup treats it as down instead of re-uploading
    /// everything to it.
    pub async fn load_index(&self) -> Result<Index> {
        let mut names: BTreeMap<String, RegionSet> = BTreeMap::new();
        let (listed, failed) = self.list_everywhere("index/").await?;
        for (i, objects) in listed {
            for o in objects {
                names.entry(o.name).or_default().insert(i);
            }
        }
        let mut index = Index::new();
        for (region, why) in failed {
            if let Some(i) = self.region_index(&region) {
                index.mark_unlisted(i, why);
            }
        }
        let key = *self.writer.index_key();
        for (name, regions) in names {
            let (bytes, _) = self
                .get_checked(&name, |b| {
                    check_stored_id(b, &Id::from_object_name(&name)?, &name)
                })
                .await?;
            let file = index::open_file(&key, &name, &bytes)?;
            for region in regions.iter() {
                for (pack, entries) in &file.packs {
                    index.add_pack(*pack, entries, region);
                }
            }
        }
        Ok(index)
    }

    /// Decrypt a manifest with whatever key this host has (identity or writer).
    pub fn decrypt_manifest(&self, bytes: &[u8], what: &str) -> Result<Manifest> {
        let ident = match &self.identity {
            Some(i) => i.inner(),
            None => self.writer.as_identity(),
        };
        let plain = age_decrypt(ident, bytes, what)?;
        serde_json::from_slice(&plain).map_err(|e| RepoError::Corrupt(format!("{what}: {e}")))
    }

    /// Every snapshot in any available region, oldest first, with the regions holding it.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        Ok(self.list_snapshots_detailed().await?.0)
    }

    /// Like [`list_snapshots`](Self::list_snapshots), and also the regions whose listing
    /// failed (their `regions` membership is unknown, not "absent").
    pub async fn list_snapshots_detailed(
        &self,
    ) -> Result<(Vec<SnapshotEntry>, Vec<(String, String)>)> {
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let (listed, failed) = self.list_everywhere("snapshots/").await?;
        for (i, objects) in listed {
            for o in objects {
                names
                    .entry(o.name)
                    .or_default()
                    .push(self.regions[i].name.clone());
            }
        }
        let mut out = Vec::new();
        for (name, mut regions) in names {
            let id = Id::from_object_name(&name)?;
            let (bytes, _) = self
                .get_checked(&name, |b| check_stored_id(b, &id, &name))
                .await?;
            let manifest = self.decrypt_manifest(&bytes, &name)?;
            regions.sort_by_key(|r| self.region_index(r));
            out.push(SnapshotEntry {
                id,
                manifest,
                regions,
            });
        }
        out.sort_by_key(|s| {
            (
                s.manifest.time,
                s.manifest.committed_ns,
                s.manifest.end_time,
            )
        });
        Ok((out, failed))
    }

    /// Find a snapshot by full id, unique id prefix, or `latest` (of `plan` when given).
    pub async fn find_snapshot(&self, spec: &str, plan: Option<&str>) -> Result<SnapshotEntry> {
        let all = self.list_snapshots().await?;
        let mut matching: Vec<SnapshotEntry> = all
            .into_iter()
            .filter(|s| plan.is_none_or(|p| s.manifest.plan == p))
            .collect();
        if spec == "latest" {
            return matching.pop().ok_or_else(|| {
                RepoError::Invalid(match plan {
                    Some(p) => format!("plan {p} has no snapshots yet (run `lifeboat backup {p}`)"),
                    None => "the repository has no snapshots yet".into(),
                })
            });
        }
        let hits: Vec<SnapshotEntry> = matching
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(spec))
            .collect();
        match hits.len() {
            1 => Ok(hits.into_iter().next().expect("one")),
            0 => Err(RepoError::Invalid(format!(
                "no snapshot {spec:?}{} (list them with `lifeboat snapshots`)",
                plan.map(|p| format!(" in plan {p}")).unwrap_or_default()
            ))),
            n => Err(RepoError::Invalid(format!(
                "snapshot prefix {spec:?} matches {n} snapshots; give more digits"
            ))),
        }
    }

    pub fn manifest_regions(&self, s: &SnapshotEntry) -> HashMap<String, bool> {
        self.regions
            .iter()
            .map(|r| (r.name.clone(), s.regions.contains(&r.name)))
            .collect()
    }
}

/// The error for an object no region could serve, classified by what went wrong where:
/// missing everywhere is `NotFound`; any region that did not answer makes it `Unavailable`
/// (an outage is not damage, and another try may succeed); otherwise a copy failed its hash
/// or authentication, and that is `Corrupt`.
fn no_good_copy(name: &str, regions: &[Region], errors: Vec<(usize, RepoError)>) -> RepoError {
    if !errors.is_empty()
        && errors
            .iter()
            .all(|(_, e)| matches!(e, RepoError::Backend(b) if b.is_not_found()))
    {
        return RepoError::Backend(BackendError::NotFound(name.to_string()));
    }
    let detail = errors
        .iter()
        .map(|(i, e)| format!("{}: {e}", regions[*i].name))
        .collect::<Vec<_>>()
        .join("; ");
    let unreachable = errors.iter().any(|(_, e)| {
        matches!(e, RepoError::Backend(b) if !b.is_not_found())
            || matches!(e, RepoError::Unavailable(_))
    });
    if unreachable {
        RepoError::Unavailable(format!("{name}: no region could serve it ({detail})"))
    } else {
        RepoError::Corrupt(format!("{name}: no region has a good copy ({detail})"))
    }
}

/// Object name of a pack.
pub fn pack_name(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

pub type SharedRepo = Arc<Repository>;

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

use crate::backend::BackendError;
pub use crate::chunker::ChunkerParams;
use crate::error::{RepoError, Result};
pub use crate::id::check_stored_id;
use crate::index::IndexSigning;
pub use crate::init::{init, InitOptions};
use crate::keys::{age_decrypt, age_encrypt, Identity, Keyring, WriterKey};
use crate::meta_cache::MetaCache;
use crate::regions::check_region_count;
pub(crate) use crate::repo_config::parse_config;
pub use crate::repo_config::{
    Region, RepoConfig, CONFIG_OBJECT, FORMAT_NAME, FORMAT_V1, FORMAT_VERSION, WRITER_KEY_OBJECT,
};
use crate::secrets::{MetadataKeys, RepoSecrets};
use crate::sign::{
    open_manifest_plain, seal_manifest_plain, Pins, SignedKind, Signer, Trust, Verdict,
};
use crate::snapshot::{Manifest, SnapshotEntry};
use crate::{Id, Index};

/// Failed reads in a row after which a region is demoted for the rest of the operation.
pub const BREAKER_FAILURES: u32 = 2;

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
    keys: crate::unlock::Unlocked,
    preferred: usize,
    pub read_log: Mutex<ReadLog>,
    /// Per region: reads in a row that failed there (the circuit breaker's count).
    failures: Vec<AtomicU32>,
    /// Snapshots the last listing left out as signed by a revoked writer (id, writer,
    /// region): naming one is refused rather than "not found".
    pub(crate) revoked: Mutex<Vec<(Id, String, String)>>,
    /// Where index files and manifests are kept between commands, if anywhere.
    meta_cache: Option<MetaCache>,
}

impl Repository {
    /// Open the repository in `regions`; `preferred` names the region reads try first.
    /// Unreachable regions are recorded in `states`; at least one must answer.
    pub async fn open(
        regions: Vec<Region>,
        keys: Keyring,
        preferred: Option<&str>,
    ) -> Result<Repository> {
        Self::open_pinned(regions, keys, preferred, &Pins::default()).await
    }

    /// [`open`](Self::open) on a host with `pins` (`lifeboat.toml`): a region whose `config`
    /// names another repository id is refused, and so is everything `crate::sign` says this
    /// host must not trust. An unpinned host is warned once per process, with the lines to pin.
    pub async fn open_pinned(
        regions: Vec<Region>,
        keys: Keyring,
        preferred: Option<&str>,
        pins: &Pins,
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
                    if let Some(pin) = pins.repository_id.as_ref().filter(|p| **p != cfg.id) {
                        return Err(RepoError::Untrusted(format!(
                            "config in region {}: repository {}, but lifeboat.toml pins repository_id = {pin:?}: a substituted config, or a region pointing at another repository",
                            r.name, cfg.id
                        )));
                    }
                    if let Some(c) = &config {
                        if c.id != cfg.id {
                            return Err(RepoError::Invalid(format!(
                                "region {} holds repository {}, others hold {}: the regions in lifeboat.toml point at different repositories",
                                r.name, cfg.id, c.id
                            )));
                        }
                    }
                    // An upgrade interrupted between regions' config flips: the newer
                    // format wins (its key objects are already in every region).
                    if config.as_ref().is_none_or(|c| cfg.version > c.version) {
                        config = Some(cfg);
                    }
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
        let order = read_order_of(preferred, &states);
        let unlocked = crate::unlock::unlock(&config, &regions, &order, keys, pins).await?;
        if !pins.is_pinned() {
            warn_unpinned(&config, &unlocked.secrets);
        }
        let failures = regions.iter().map(|_| AtomicU32::new(0)).collect();
        Ok(Repository {
            config,
            regions,
            states,
            keys: unlocked,
            preferred,
            read_log: Mutex::new(ReadLog::default()),
            failures,
            revoked: Mutex::new(Vec::new()),
            meta_cache: None,
        })
    }

    /// Keep index files and manifests in `dir` between commands (see [`crate::meta_cache`]).
    pub fn set_meta_cache(&mut self, dir: std::path::PathBuf) {
        self.meta_cache = Some(MetaCache::new(dir));
    }

    /// The metadata cache, when one was set.
    pub fn meta_cache(&self) -> Option<&MetaCache> {
        self.meta_cache.as_ref()
    }

    /// The writer key, when this host holds one (backup hosts; v1 restore hosts read it
    /// from `keys/writer.age`).
    pub fn writer(&self) -> Option<&WriterKey> {
        self.keys.writer.as_ref()
    }

    /// The `lifeboat.toml` lines that pin this repository as it is now.
    pub fn pin_lines(&self) -> String {
        crate::sign::pin_lines(
            &self.config.id,
            &self.secrets().fingerprint(),
            &self.config.writers,
        )
    }

    /// Which writers this host trusts, and its signer.
    pub fn trust(&self) -> &Trust {
        &self.keys.trust
    }

    /// How index files written here are signed.
    pub fn index_signing(&self) -> IndexSigning<'_> {
        IndexSigning {
            signer: self.signer_for_writes(),
            repo_id: &self.config.id,
        }
    }

    /// This host's signer when it may sign (never in a v1 repository, whose layout has no
    /// signatures).
    fn signer_for_writes(&self) -> Option<&Signer> {
        self.keys.trust.signer()
    }

    /// Refuse to write a manifest or index file this host cannot sign where signatures are
    /// expected (a restore host without a writer key, in a repository with writers).
    pub fn check_can_sign(&self, what: &str) -> Result<()> {
        if self.config.version >= 2
            && self.keys.trust.wants_signatures()
            && self.signer_for_writes().is_none()
        {
            return Err(RepoError::Key(format!(
                "{what} writes objects that writers sign, and this host holds no trusted writer key: set keys.writer_key_file to a writer of this repository (`lifeboat keys add-writer NAME` makes one for this host; pin it in [keys.writers])"
            )));
        }
        Ok(())
    }

    /// The recipients a manifest is encrypted to: the current epoch's, the repository's
    /// writer recipient and every active writer's (so each writer lists snapshots).
    pub fn manifest_recipients(&self) -> Vec<&age::x25519::Recipient> {
        let mut r = self.recipients();
        r.push(&self.keys.writer_recipient);
        r.extend(self.keys.writer_recipients.iter());
        r
    }

    /// The age recipients of the repository's active writers other than the shared writer
    /// recipient.
    pub fn active_writer_recipients(&self) -> Vec<age::x25519::Recipient> {
        self.keys.writer_recipients.clone()
    }

    /// Seal a manifest: JSON with its details sealed to the details key
    /// ([`crate::details::encode`]), signed by this host's writer (see `crate::sign`), in one
    /// age file to [`manifest_recipients`](Self::manifest_recipients). Returns the bytes.
    pub fn seal_manifest(&self, manifest: &Manifest) -> Result<Bytes> {
        self.check_can_sign("writing a snapshot manifest")?;
        let json = crate::details::encode(manifest, self.keys.details_recipient.as_ref())?;
        let plain = seal_manifest_plain(self.signer_for_writes(), &self.config.id, &json);
        Ok(Bytes::from(age_encrypt(
            &self.manifest_recipients(),
            &plain,
        )?))
    }

    /// The writer's public key: manifests are also encrypted to it.
    pub fn writer_recipient(&self) -> &age::x25519::Recipient {
        &self.keys.writer_recipient
    }

    /// The chunk-id key, index key and chunker seed.
    pub fn secrets(&self) -> &RepoSecrets {
        &self.keys.secrets
    }

    /// What metadata (index files, manifests) is read with on this host.
    pub fn metadata_keys(&self) -> MetadataKeys<'_> {
        MetadataKeys {
            secrets: &self.keys.secrets,
            age_keys: &self.keys.read_keys,
            trust: &self.keys.trust,
        }
    }

    /// The rule new content-addressed age objects' ids (packs, manifests, receipts) follow
    /// in this repository's format version.
    pub fn id_rule(&self) -> crate::id::IdRule {
        if self.config.version >= 2 {
            crate::id::IdRule::AgePayload
        } else {
            crate::id::IdRule::WholeObject
        }
    }

    /// The current recipient epoch's recipients: new packs and manifests go to them.
    pub fn recipients(&self) -> Vec<&age::x25519::Recipient> {
        self.keys.recipients.iter().collect()
    }

    /// The identity, or a `NeedIdentity` error naming `what` needed it.
    pub fn identity(&self, what: &str) -> Result<&Identity> {
        self.keys
            .identity
            .as_ref()
            .ok_or_else(|| RepoError::NeedIdentity(what.to_string()))
    }

    /// Does this repository seal manifest details (it has a details key)? `false`: made
    /// before the details key; `lifeboat upgrade` adds one.
    pub fn seals_details(&self) -> bool {
        self.keys.details_recipient.is_some()
    }

    /// The details key, when this host's identity opened it.
    pub fn details_key(&self) -> Option<&crate::details::DetailsKey> {
        self.keys.details.as_ref()
    }

    pub fn has_identity(&self) -> bool {
        self.keys.identity.is_some()
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
        self.load_index_with(&std::collections::HashSet::new(), false)
            .await
    }

    /// [`load_index`](Self::load_index) without the packs in `skip`: a backup leaves out
    /// packs prune has marked for deletion, so it never makes them needed again.
    ///
    /// It also leaves out index files signed by a revoked writer: their entries may claim
    /// chunks that were never stored, so a backup stores those chunks again. (Readers keep
    /// them: a chunk found through them is verified against its id anyway.)
    pub async fn load_index_excluding(
        &self,
        skip: &std::collections::HashSet<Id>,
    ) -> Result<Index> {
        self.load_index_with(skip, true).await
    }

    async fn load_index_with(
        &self,
        skip: &std::collections::HashSet<Id>,
        for_dedup: bool,
    ) -> Result<Index> {
        // Prune consolidates index files (writes the new one, then deletes the old ones): a
        // file listed a moment ago may be gone. Its packs are in a newer file, so list again.
        let mut attempt = 0;
        loop {
            match self.load_index_once(skip, for_dedup).await {
                Err(RepoError::Backend(BackendError::NotFound(name))) if attempt < 5 => {
                    tracing::debug!(object = %name, "index file removed while loading (prune); listing again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Decrypt a manifest (read from `region`) with whatever key this host has (identity or
    /// writer) and judge its signature; one signed by a revoked writer is refused too.
    pub fn decrypt_manifest(&self, bytes: &[u8], what: &str, region: &str) -> Result<Manifest> {
        match self.judge_manifest(bytes, what, region)? {
            (_, Verdict::Revoked(w)) => Err(revoked_manifest(what, region, &w)),
            (m, _) => Ok(m),
        }
    }

    /// Decrypt and parse a manifest and judge its signature ([`Trust::judge`]).
    pub(crate) fn judge_manifest(
        &self,
        bytes: &[u8],
        what: &str,
        region: &str,
    ) -> Result<(Manifest, Verdict)> {
        let plain = age_decrypt(&self.keys.read_keys, bytes, what)?;
        let (signed, json) = open_manifest_plain(&plain, what)?;
        let verdict = self.trust().judge(
            SignedKind::Manifest,
            what,
            region,
            signed.as_ref().map(|(w, s)| (w.as_str(), s)),
            json,
        )?;
        // Details are opened only after the signature passed: a swapped-in blob never is.
        let m = crate::details::decode(json, self.keys.details.as_ref(), what)?;
        Ok((m, verdict))
    }

    /// Every snapshot in any available region, oldest first, with the regions holding it.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        Ok(self.list_snapshots_detailed().await?.0)
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
        if hits.is_empty() {
            let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((id, w, region)) = revoked
                .iter()
                .find(|(id, _, _)| id.to_hex().starts_with(spec))
            {
                return Err(revoked_manifest(&format!("snapshots/{id}"), region, w));
            }
        }
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

fn revoked_manifest(what: &str, region: &str, writer: &str) -> RepoError {
    RepoError::Untrusted(format!(
        "{what} in region {region}: signed by writer {writer}, which has been revoked; refusing it (restore an older snapshot of another writer, or forget it)"
    ))
}

static UNPINNED_WARNED: std::sync::Once = std::sync::Once::new();

/// Warn, once per process, that this host pins nothing, with the lines that would pin it.
fn warn_unpinned(config: &RepoConfig, secrets: &RepoSecrets) {
    UNPINNED_WARNED.call_once(|| {
        tracing::warn!(
            repository = %config.id,
            "repository not pinned: this host trusts whatever the bucket says it is; paste these lines into lifeboat.toml:\n{}",
            crate::sign::pin_lines(&config.id, &secrets.fingerprint(), &config.writers)
        );
    });
}

/// No "repository not pinned" warning in this process: for a command that prints the pin
/// lines itself (`init`).
pub fn quiet_unpinned_warning() {
    UNPINNED_WARNED.call_once(|| {});
}

/// Regions that answered at open, `preferred` first.
fn read_order_of(preferred: usize, states: &[RegionState]) -> Vec<usize> {
    std::iter::once(preferred)
        .chain((0..states.len()).filter(|&i| i != preferred))
        .filter(|&i| matches!(states.get(i), Some(RegionState::Ok)))
        .collect()
}

/// Object name of a pack.
pub fn pack_name(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

pub type SharedRepo = Arc<Repository>;

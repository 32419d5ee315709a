//! The engine: the operations the CLI (and later the daemon and drills) run, each a library
//! call over a loaded [`Config`]. Thin orchestration: open the repository with this host's
//! keys, run the repository engine, report what happened.

use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_repo::keys::{parse_recipient, Identity, Keyring, WriterKey};
use lifeboat_repo::Repository;

use crate::config::Config;
use crate::storage::RegionFaults;

pub mod audit;
pub mod backup;
pub mod kinds;
pub mod record;
pub mod restore;
pub mod restore_test;
pub mod retention;
pub mod scratch;
pub mod stream;
pub mod sync;

pub use backup::{backup, BackupReport};
pub use restore::{restore, RestoreRequest, RestoreResult};
pub use restore_test::{restore_tests, RestoreTestOutcome, RestoreTestRequest};
pub use stream::{restore_stream, StreamRestoreRequest, StreamTarget};
pub use sync::{sync, SyncReport};

/// What the engine needs from the key configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNeed {
    /// Add snapshots: recipients + writer key.
    Write,
    /// Read data: the identity is required.
    Read,
    /// Use the identity when configured (list, verify).
    Any,
}

/// Plan name → its regions, for every plan that does not store in every region: what
/// `verify` and `replicate` must respect (data residency).
pub fn plan_regions(config: &Config) -> lifeboat_repo::verify::PlanRegions {
    config
        .plans
        .iter()
        .filter(|p| config.regions.iter().any(|r| !p.regions.contains(&r.name)))
        .map(|p| (p.name.clone(), p.regions.iter().cloned().collect()))
        .collect()
}

/// Load this host's keys as the configuration references them. A restore host may hold
/// only the identity: recipients then come from the repository's `config` and the
/// repository secrets from its `keys/` objects, opened with the identity (format v1: the
/// writer key decrypted from `keys/writer.age`).
pub fn keyring(config: &Config, need: KeyNeed) -> Result<Keyring> {
    if need == KeyNeed::Write && config.keys.recipients.is_empty() {
        return Err(crate::config::ConfigError::Invalid {
            file: config.path.clone(),
            at: None,
            key: "keys.recipients".to_string(),
            problem: "none configured: backups and init encrypt to them: set `recipients = [\"age1…\"]` or `recipients_file = \"PATH\"` in [keys] (a restore host needs only identity_file)".to_string(),
        }
        .into());
    }
    let recipients = config
        .keys
        .recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()
        .context("keys.recipients")?;
    let identity = match &config.keys.identity {
        None => None,
        Some(reference) => {
            let s = config.keys.load_identity()?;
            Some(
                Identity::parse(s.expose())
                    .with_context(|| format!("keys.identity ({})", reference.describe()))?,
            )
        }
    };
    if need == KeyNeed::Read && identity.is_none() {
        return Err(lifeboat_repo::RepoError::NeedIdentity("this command".into()).into());
    }
    let restore_host = identity.is_some() && need != KeyNeed::Write;
    let writer = match config.keys.load_writer_key() {
        Ok(s) => Some(WriterKey::parse(s.expose()).with_context(|| {
            let at = config.keys.writer_key.as_ref().map(|r| r.describe());
            format!("keys.writer_key ({})", at.unwrap_or_default())
        })?),
        // A restore host may hold only the identity (or a writer key file that is not
        // installed there): the repository secrets are then opened with the identity.
        Err(e) if restore_host => {
            tracing::debug!("writer key not loaded ({e}); reading it from the repository");
            None
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Keyring {
        recipients,
        writer,
        identity,
    })
}

/// Open the repository in every configured region.
pub async fn open(
    config: &Config,
    need: KeyNeed,
    preferred: Option<&str>,
) -> Result<Arc<Repository>> {
    open_with(config, need, preferred, &RegionFaults::none()).await
}

/// [`open`] with regions failing on purpose (a drill's simulated outage).
pub async fn open_with(
    config: &Config,
    need: KeyNeed,
    preferred: Option<&str>,
    faults: &RegionFaults,
) -> Result<Arc<Repository>> {
    let keys = keyring(config, need)?;
    let regions = crate::storage::regions_with(config, faults)?;
    let preferred = preferred.or_else(|| Some(config.preferred_region().name.as_str()));
    let mut repo = Repository::open(regions, keys, preferred).await?;
    // Index files and manifests are immutable: keep them for the next command.
    let meta = config.cache_dir.join(&repo.config.id).join("meta");
    repo.set_meta_cache(meta);
    tracing::info!(repository = %repo.config.id, preferred, "repository opened");
    Ok(Arc::new(repo))
}

/// The snapshot `spec` (id, prefix or `latest`) of `plan`. A plan need not be declared in
/// the config (a restore host knows plans from the manifests); when nothing matches a plan
/// the config does not declare, the error lists the plans the repository holds.
pub async fn find_plan_snapshot(
    config: &Config,
    repo: &Repository,
    plan: &str,
    spec: &str,
) -> Result<lifeboat_repo::snapshot::SnapshotEntry> {
    match repo.find_snapshot(spec, Some(plan)).await {
        Ok(found) => Ok(found),
        Err(e) if config.plan(plan).is_err() => {
            let mut plans: Vec<String> = repo
                .list_snapshots()
                .await?
                .into_iter()
                .map(|s| s.manifest.plan)
                .collect();
            plans.sort();
            plans.dedup();
            if plans.iter().any(|p| p == plan) {
                return Err(e.into());
            }
            anyhow::bail!(
                "no plan {plan:?} in the repository ({}) nor in {}",
                if plans.is_empty() {
                    "it holds no snapshots yet".to_string()
                } else {
                    format!("its plans: {}", plans.join(", "))
                },
                config.path.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// The source kind (`dir`, `postgres`, `command`) of `plan`: from the config when it declares
/// the plan, else from the manifest of the snapshot `spec` in the repository.
pub async fn plan_kind(
    config: &Config,
    plan: &str,
    spec: &str,
    from: Option<&str>,
) -> Result<String> {
    if let Ok(declared) = config.plan(plan) {
        return Ok(declared.source.kind().to_string());
    }
    let repo = open(config, KeyNeed::Read, from).await?;
    let snapshot = find_plan_snapshot(config, &repo, plan, spec).await?;
    Ok(snapshot.manifest.source.kind)
}

//! The engine: the operations the CLI (and later the daemon and drills) run, each a library
//! call over a loaded [`Config`]. Thin orchestration: open the repository with this host's
//! keys, run the repository engine, report what happened.

use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_repo::keys::{parse_recipient, Identity, Keyring, WriterKey};
use lifeboat_repo::Repository;

use crate::config::Config;
use crate::storage::RegionFaults;

pub mod backup;
pub mod kinds;
pub mod record;
pub mod restore;
pub mod restore_test;
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

/// Load this host's keys as the configuration references them.
pub fn keyring(config: &Config, need: KeyNeed) -> Result<Keyring> {
    let recipients = config
        .keys
        .recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()
        .context("keys.recipients")?;
    let identity = match (&config.keys.identity, need) {
        (None, KeyNeed::Read) => None,
        (None, _) => None,
        (Some(_), _) => {
            let s = config.keys.load_identity()?;
            Some(Identity::parse(s.expose()).with_context(|| {
                format!(
                    "keys.identity ({})",
                    config
                        .keys
                        .identity
                        .as_ref()
                        .map(|r| r.describe())
                        .unwrap_or_default()
                )
            })?)
        }
    };
    let writer =
        match config.keys.load_writer_key() {
            Ok(s) => Some(WriterKey::parse(s.expose()).with_context(|| {
                format!("keys.writer_key ({})", config.keys.writer_key.describe())
            })?),
            // A restore host may hold only the identity: the writer key is then read from the
            // repository (keys/writer.age).
            Err(e) if identity.is_some() && need != KeyNeed::Write => {
                tracing::debug!("writer key not loaded ({e}); deriving it from the repository");
                None
            }
            Err(e) => return Err(e.into()),
        };
    if need == KeyNeed::Read && identity.is_none() {
        return Err(lifeboat_repo::RepoError::NeedIdentity("this command".into()).into());
    }
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
    Ok(Arc::new(Repository::open(regions, keys, preferred).await?))
}

//! `lifeboat upgrade`: convert a format v1 repository to v2 in place, in every region.
//!
//! Nothing but key objects and `config` is written, and nothing is re-uploaded: v1 chunk
//! ids, index files and packs were made with the secrets derived from the writer key, so the
//! upgrade wraps *those* secrets ([`crate::keys::WriterKey::v1_secrets`]) as the repository
//! secrets of recipient epoch 1, and deduplication continues across the upgrade. v1 packs
//! (mixed, whole-object ids) stay readable as they are.
//!
//! Write order, so that a crash at any point leaves a valid repository:
//!
//! 1. `keys/secrets-0001.age` into every region, each read back and opened with the writer
//!    key before going on. A v1 lifeboat ignores it: the repository is still v1.
//! 2. `config` with `version: 2` and the epoch list, region by region. Until a region's config
//!    flips, that region is a v1 repository; after, a v2 one whose key object is in place.
//!    Regions flipped and not flipped hold the same data and secrets, so an interrupted
//!    upgrade is read as v2 (the newer format wins at open) and running `upgrade` again
//!    finishes it. `keys/writer.age` is left in place (v2 does not read it).
//!
//! Every region must answer: a region left at v1 would stay so silently.

use bytes::Bytes;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::keys::{parse_recipient, Keyring};
use crate::repo::{parse_config, Region, RepoConfig, CONFIG_OBJECT, FORMAT_V1, FORMAT_VERSION};
use crate::secrets::{secrets_object, Epoch, RepoSecrets};
use crate::unlock::unlock;

/// What an upgrade did, per region.
#[derive(Debug, Default, Serialize)]
pub struct UpgradeReport {
    pub repository: String,
    /// Regions whose key object was written (or found, already good).
    pub keys_written: Vec<String>,
    /// Regions whose config was flipped to v2 in this run.
    pub flipped: Vec<String>,
    /// Regions that were v2 already.
    pub already: Vec<String>,
}

/// How far to go (tests stop between the steps to prove each intermediate state valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Write and check the key objects only.
    KeysOnly,
    /// Everything.
    Complete,
}

/// Upgrade the repository in `regions` (all of its regions) to format v2.
pub async fn upgrade(
    regions: &[Region],
    keys: Keyring,
    until: UpgradeStep,
) -> Result<UpgradeReport> {
    let mut configs: Vec<RepoConfig> = Vec::new();
    for r in regions {
        let bytes = r.backend.get(CONFIG_OBJECT, None).await.map_err(|e| {
            RepoError::Unavailable(format!(
                "region {}: config: {e}; upgrade needs every region of the repository (a region left at v1 would stay so)",
                r.name
            ))
        })?;
        configs.push(parse_config(&bytes, &r.name)?);
    }
    let Some(first) = configs.first() else {
        return Err(RepoError::Invalid("no region to upgrade".into()));
    };
    if let Some(c) = configs.iter().find(|c| c.id != first.id) {
        return Err(RepoError::Invalid(format!(
            "the regions hold different repositories ({} and {}); refusing to upgrade",
            first.id, c.id
        )));
    }
    let mut report = UpgradeReport {
        repository: first.id.clone(),
        ..Default::default()
    };
    let Some(v1) = configs.iter().find(|c| c.version == FORMAT_V1).cloned() else {
        report.already = regions.iter().map(|r| r.name.clone()).collect();
        return Ok(report);
    };
    let order: Vec<usize> = (0..regions.len()).collect();
    let unlocked = unlock(&v1, regions, &order, keys, &crate::sign::Pins::default()).await?;
    let writer = unlocked.writer.as_ref().ok_or_else(|| {
        RepoError::Key(
            "upgrade needs the writer key (or the identity, to read keys/writer.age)".into(),
        )
    })?;
    let secrets = writer.v1_secrets();
    let mut to: Vec<age::x25519::Recipient> = v1
        .recipients
        .iter()
        .map(|s| parse_recipient(s))
        .collect::<Result<_>>()?;
    to.push(writer.recipient());
    let to_refs: Vec<&age::x25519::Recipient> = to.iter().collect();
    let name = secrets_object(1);
    let sealed = Bytes::from(secrets.seal(&v1.id, 1, &to_refs)?);

    // Step 1: the key object everywhere, checked.
    for r in regions {
        let good = |b: &[u8]| {
            RepoSecrets::unseal(b, writer.keys(), &v1.id, 1).is_ok_and(|s| s.same_as(&secrets))
        };
        let present = match r.backend.get(&name, None).await {
            Ok(b) => good(&b),
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        if !present {
            r.backend.put(&name, sealed.clone()).await?;
            let back = r.backend.get(&name, None).await?;
            if !good(&back) {
                return Err(RepoError::Corrupt(format!(
                    "region {}: {name} does not read back as written; config left at v1",
                    r.name
                )));
            }
        }
        report.keys_written.push(r.name.clone());
    }
    if until == UpgradeStep::KeysOnly {
        return Ok(report);
    }

    // Step 2: flip config, region by region.
    let v2 = RepoConfig {
        version: FORMAT_VERSION,
        epochs: vec![Epoch {
            epoch: 1,
            created: v1.created,
            recipients: v1.recipients.clone(),
        }],
        // The v1 writer key becomes writer `default`: from now on it signs.
        writers: vec![crate::sign::WriterEntry::of(
            crate::sign::DEFAULT_WRITER,
            writer,
            v1.created,
        )],
        ..v1.clone()
    };
    let bytes =
        Bytes::from(serde_json::to_vec_pretty(&v2).map_err(|e| RepoError::Invalid(e.to_string()))?);
    for (r, c) in regions.iter().zip(&configs) {
        if c.version == FORMAT_VERSION {
            report.already.push(r.name.clone());
            continue;
        }
        r.backend.put(CONFIG_OBJECT, bytes.clone()).await?;
        report.flipped.push(r.name.clone());
    }
    Ok(report)
}

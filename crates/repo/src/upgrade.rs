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
//!
//! A v2 repository without a details key (made before it, or just flipped from v1) then
//! gets one ([`crate::details`]; needs the identity, as only restore hosts may ever hold
//! the details key). Write order, each object read back before going on:
//!
//! 3. `keys/details-NNNN.age` for every epoch, to that epoch's recipients. Nothing refers
//!    to them yet: a crash here leaves unused objects (the next run overwrites them).
//! 4. The current epoch's `keys/secrets-NNNN.age` carrying the details recipient, then the
//!    older epochs', then every active writer's `keys/writer-NAME.age`. From the first put,
//!    hosts that read it seal new manifests' details; the others still write them in the
//!    clear, as before: both are valid. A run after a crash finds the recipient in the
//!    current epoch's object (read first) and finishes with *that* key, never a new one.
//! 5. `config` with `details_recipient`, region by region (informational: `status`).
//!
//! The secrets fingerprint covers the details recipient, so it changes at step 4: the
//! report carries the new `repository_secrets` pin line for every host's `lifeboat.toml`.
//! Manifests written before are not rewritten: their details stay readable by writers
//! (re-sealing one would change its payload, hence its id, which the catalog, drill reports
//! and receipts name).

use bytes::Bytes;
use serde::Serialize;

use crate::details::{details_object, DetailsKey};
use crate::error::{RepoError, Result};
use crate::keys::{parse_recipient, Keyring};
use crate::repo::{parse_config, Region, RepoConfig, CONFIG_OBJECT, FORMAT_V1, FORMAT_VERSION};
use crate::secrets::{secrets_object, writer_object, Epoch, RepoSecrets};
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
    /// The details key this run added (or finished adding), by recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_key_added: Option<String>,
    /// Why no details key was added, when the repository still has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_note: Option<String>,
    /// The `lifeboat.toml` lines to pin the repository with, when its fingerprint changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_lines: Option<String>,
}

/// How far to go (tests stop between the steps to prove each intermediate state valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Write and check the key objects only.
    KeysOnly,
    /// Flip to v2 but add no details key (how a v2 repository made before it looks).
    Format,
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
    let order: Vec<usize> = (0..regions.len()).collect();
    let Some(v1) = configs.iter().find(|c| c.version == FORMAT_V1).cloned() else {
        report.already = regions.iter().map(|r| r.name.clone()).collect();
        if until == UpgradeStep::Complete {
            add_details_key(regions, &order, &configs, keys, &mut report).await?;
        }
        return Ok(report);
    };
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
    let mut flipped = Vec::new();
    for (r, c) in regions.iter().zip(&configs) {
        if c.version == FORMAT_VERSION {
            report.already.push(r.name.clone());
            flipped.push(c.clone());
            continue;
        }
        r.backend.put(CONFIG_OBJECT, bytes.clone()).await?;
        report.flipped.push(r.name.clone());
        flipped.push(v2.clone());
    }
    if until == UpgradeStep::Complete {
        let keys = Keyring {
            recipients: Vec::new(),
            writer: unlocked.writer,
            identity: unlocked.identity,
        };
        add_details_key(regions, &order, &flipped, keys, &mut report).await?;
    }
    Ok(report)
}

/// Steps 3 to 5 (see the module documentation) on a v2 repository whose `configs` (one per
/// region) lack the details key; nothing when every region's config has it.
async fn add_details_key(
    regions: &[Region],
    order: &[usize],
    configs: &[RepoConfig],
    keys: Keyring,
    report: &mut UpgradeReport,
) -> Result<()> {
    if configs.iter().all(|c| c.details_recipient.is_some()) {
        return Ok(());
    }
    if keys.identity.is_none() {
        report.details_note = Some(
            "no details key added: that needs the identity (run `lifeboat upgrade` again where the identity is); until then manifest details stay readable by writers".into(),
        );
        return Ok(());
    }
    // The newest config (a rotation may have reached only some regions: refuse that mix).
    let config = configs
        .iter()
        .max_by_key(|c| c.current_epoch())
        .cloned()
        .ok_or_else(|| RepoError::Invalid("no region to upgrade".into()))?;
    if configs.iter().any(|c| c.epochs != config.epochs) {
        return Err(RepoError::Invalid(
            "the regions' configs name different recipient epochs (an interrupted `keys rotate`? run it again first)".into(),
        ));
    }
    let unlocked = unlock(&config, regions, order, keys, &crate::sign::Pins::default()).await?;
    let key = match (unlocked.secrets.details_recipient(), unlocked.details) {
        (None, _) => DetailsKey::generate(),
        (Some(_), Some(k)) => k,
        (Some(r), None) => {
            return Err(RepoError::Key(format!(
                "the repository secrets already name details key {r} (an interrupted upgrade), but no keys/details-NNNN.age opens with this identity: run upgrade with the identity of the current epoch"
            )))
        }
    };
    let recipient = key.recipient();
    let secrets = unlocked.secrets.clone().with_details_recipient(&recipient);
    let id = config.id.clone();
    let parse = |v: &[String]| -> Result<Vec<age::x25519::Recipient>> {
        v.iter().map(|s| parse_recipient(s)).collect()
    };
    // Step 3: the details key, one copy per epoch to that epoch's recipients.
    for e in &config.epochs {
        let to = parse(&e.recipients)?;
        let bytes = Bytes::from(key.seal(&id, e.epoch, &to.iter().collect::<Vec<_>>())?);
        put_checked(regions, &details_object(e.epoch), &bytes).await?;
    }
    // Step 4: secrets objects, the current epoch's first; then the writers' own copies.
    let writer_rcpt = parse_recipient(&config.writer_recipient)?;
    for e in config.epochs.iter().rev() {
        let mut to = parse(&e.recipients)?;
        to.push(writer_rcpt.clone());
        let bytes = Bytes::from(secrets.seal(&id, e.epoch, &to.iter().collect::<Vec<_>>())?);
        put_checked(regions, &secrets_object(e.epoch), &bytes).await?;
    }
    let current = parse(&config.recipients)?;
    for w in config
        .writers
        .iter()
        .filter(|w| w.revoked.is_none() && w.recipient != config.writer_recipient)
    {
        let mut to = current.clone();
        to.push(parse_recipient(&w.recipient)?);
        let bytes =
            Bytes::from(secrets.seal_for_writer(&id, &w.name, &to.iter().collect::<Vec<_>>())?);
        put_checked(regions, &writer_object(&w.name), &bytes).await?;
    }
    // Step 5: config names it.
    for (r, c) in regions.iter().zip(configs) {
        let named = RepoConfig {
            details_recipient: Some(recipient.to_string()),
            ..c.clone()
        };
        let bytes = Bytes::from(
            serde_json::to_vec_pretty(&named).map_err(|e| RepoError::Invalid(e.to_string()))?,
        );
        r.backend.put(CONFIG_OBJECT, bytes).await?;
    }
    report.details_key_added = Some(recipient.to_string());
    report.pin_lines = Some(crate::sign::pin_lines(
        &id,
        &secrets.fingerprint(),
        &config.writers,
    ));
    Ok(())
}

/// Put `name` into every region and read each copy back.
async fn put_checked(regions: &[Region], name: &str, bytes: &Bytes) -> Result<()> {
    for r in regions {
        r.backend.put(name, bytes.clone()).await?;
        if r.backend.get(name, None).await? != *bytes {
            return Err(RepoError::Corrupt(format!(
                "region {}: {name} does not read back as written; upgrade stopped (run it again)",
                r.name
            )));
        }
    }
    Ok(())
}

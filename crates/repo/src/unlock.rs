//! Unlocking a repository at open: which writer key, which recipients, which repository
//! secrets this host works with, checked against the repository's `config`.
//!
//! * v1: the writer key comes from the host (backup hosts) or from `keys/writer.age`
//!   decrypted with the identity (restore hosts); the secrets are derived from it.
//! * v2: the secrets come from `keys/secrets-NNNN.age`, newest epoch first, opened with any
//!   key the host holds (identities of any epoch, or the writer key); no writer key is needed
//!   to read. New objects go to the current epoch's recipients from `config`; a host whose
//!   `keys.recipients` still name an older epoch is told to update them, and writes to the
//!   current epoch anyway (a rotation must not need every backup host edited first).
//!   A writer added by `keys add-writer` opens its own `keys/writer-NAME.age` instead.
//! * Pins (`lifeboat.toml`): the secrets must match the pinned fingerprint, and the host's
//!   [`Trust`] (which writers' signatures it accepts, and whether it signs) is fixed here.

use age::x25519;
use bytes::Bytes;

use crate::backend::BackendError;
use crate::details::{details_object, DetailsKey};
use crate::error::{RepoError, Result};
use crate::keys::{age_decrypt, parse_recipient, Identity, Keyring, WriterKey};
use crate::repo_config::{Region, RepoConfig, FORMAT_V1, WRITER_KEY_OBJECT};
use crate::secrets::{secrets_object, writer_object, RepoSecrets};
use crate::sign::{Pins, Trust};

/// The keys an open repository works with.
pub(crate) struct Unlocked {
    /// The current epoch's recipients.
    pub recipients: Vec<x25519::Recipient>,
    pub writer: Option<WriterKey>,
    pub writer_recipient: x25519::Recipient,
    pub identity: Option<Identity>,
    pub secrets: RepoSecrets,
    /// Every age key this host holds (identities, then the writer key): manifests, drill
    /// reports and secrets objects are opened with them.
    pub read_keys: Vec<x25519::Identity>,
    /// Which writers this host trusts, and its own signer.
    pub trust: Trust,
    /// Recipients of the writers `config` lists as active (manifests are encrypted to them).
    pub writer_recipients: Vec<x25519::Recipient>,
    /// The details key's recipient (from the secrets): new manifests seal their details to
    /// it. `None`: a repository made before the details key.
    pub details_recipient: Option<x25519::Recipient>,
    /// The details key, on a host whose identity opens a `keys/details-NNNN.age`.
    pub details: Option<DetailsKey>,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("recipients", &self.recipients.len())
            .field("writer", &self.writer)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Read `name` from the first region in `order` that has it and whose copy `check` accepts.
pub(crate) async fn read_any<T>(
    regions: &[Region],
    order: &[usize],
    name: &str,
    check: impl Fn(&Bytes) -> Result<T>,
) -> Result<T> {
    let mut errors = Vec::new();
    for &i in order {
        let res = match regions[i].backend.get(name, None).await {
            Ok(b) => check(&b),
            Err(e) => Err(e.into()),
        };
        match res {
            Ok(v) => return Ok(v),
            // A key that opens nothing is the answer, not a damaged copy.
            Err(e @ RepoError::WrongKey(_)) => return Err(e),
            // A substituted object is refused where it was found, not passed over.
            Err(RepoError::Untrusted(m)) => {
                return Err(RepoError::Untrusted(format!(
                    "{m} (read from region {})",
                    regions[i].name
                )))
            }
            Err(e) => errors.push(format!("{}: {e}", regions[i].name)),
        }
    }
    if errors.iter().all(|e| e.contains("not found")) {
        return Err(RepoError::Backend(BackendError::NotFound(name.to_string())));
    }
    Err(RepoError::Corrupt(format!(
        "{name}: no region has a good copy ({})",
        errors.join("; ")
    )))
}

/// Check the host's keys against `config` and unwrap the repository secrets.
pub(crate) async fn unlock(
    config: &RepoConfig,
    regions: &[Region],
    order: &[usize],
    keys: Keyring,
    pins: &Pins,
) -> Result<Unlocked> {
    let Keyring {
        recipients,
        writer,
        identity,
    } = keys;
    let all_recipients: Vec<&String> = if config.version == FORMAT_V1 {
        config.recipients.iter().collect()
    } else {
        config.epochs.iter().flat_map(|e| &e.recipients).collect()
    };
    if let Some(id) = &identity {
        let mine: Vec<String> = id.recipients().iter().map(|r| r.to_string()).collect();
        if !mine.iter().any(|r| all_recipients.contains(&r)) {
            return Err(RepoError::WrongKey(format!(
                "the identity (public key {}) is not a recipient of repository {}: it cannot decrypt this repository's data",
                mine.join(", "),
                config.id
            )));
        }
    }
    if let Some(w) = &writer {
        check_writer(config, w)?;
    }
    let writer_recipient = parse_recipient(&config.writer_recipient)?;
    let (writer, secrets) = if config.version == FORMAT_V1 {
        let writer = match writer {
            Some(w) => w,
            None => {
                let id = identity.as_ref().ok_or_else(|| {
                    RepoError::NeedIdentity("opening the repository without a writer key".into())
                })?;
                let w = read_any(regions, order, WRITER_KEY_OBJECT, |b| {
                    let text = age_decrypt(id.keys(), b, WRITER_KEY_OBJECT)?;
                    let text = String::from_utf8(text)
                        .map_err(|_| RepoError::Corrupt("keys/writer.age: not text".into()))?;
                    WriterKey::parse(&text)
                })
                .await?;
                check_writer(config, &w)?;
                w
            }
        };
        let secrets = writer.v1_secrets();
        (Some(writer), secrets)
    } else {
        let age_keys = host_keys(identity.as_ref(), writer.as_ref());
        if age_keys.is_empty() {
            return Err(RepoError::NeedIdentity(
                "opening the repository without a writer key".into(),
            ));
        }
        let secrets = match unwrap_secrets(config, regions, order, &age_keys, pins).await {
            Err(RepoError::WrongKey(m)) => match writer.as_ref().and_then(|w| {
                let mine = w.recipient().to_string();
                config.writers.iter().find(|e| e.recipient == mine)
            }) {
                Some(entry) if entry.revoked.is_some() => {
                    return Err(RepoError::Untrusted(format!(
                        "this host's writer key is writer {} of repository {}, which has been revoked: it may not write (install a new writer from `lifeboat keys add-writer`)",
                        entry.name, config.id
                    )))
                }
                // A writer added by `keys add-writer`: its own copy of the secrets.
                Some(entry) => {
                    let name = writer_object(&entry.name);
                    let w = writer.as_ref().expect("matched above");
                    read_any(regions, order, &name, |b| {
                        let s = RepoSecrets::unseal_writer(b, w.keys(), &config.id, &entry.name)?;
                        check_fingerprint(&s, pins, &name)?;
                        Ok(s)
                    })
                    .await?
                }
                None => return Err(RepoError::WrongKey(m)),
            },
            other => other?,
        };
        (writer, secrets)
    };
    let trust = Trust::new(
        &config.id,
        pins,
        &config.writers,
        writer.as_ref().filter(|_| config.version != FORMAT_V1),
    )?;
    let writer_recipients = config
        .writers
        .iter()
        .filter(|w| w.revoked.is_none() && w.recipient != config.writer_recipient)
        .map(|w| parse_recipient(&w.recipient))
        .collect::<Result<_>>()?;
    let recipients = choose_recipients(config, recipients)?;
    let read_keys = host_keys(identity.as_ref(), writer.as_ref());
    let details_recipient = secrets
        .details_recipient()
        .map(parse_recipient)
        .transpose()?;
    if let (Some(named), Some(held)) = (&config.details_recipient, secrets.details_recipient()) {
        if named != held {
            return Err(RepoError::Untrusted(format!(
                "config names details key {named}, but the repository secrets hold {held}: a substituted config"
            )));
        }
    }
    let details = match (&identity, secrets.details_recipient()) {
        (Some(id), Some(expected)) => {
            open_details_key(config, regions, order, id.keys(), expected).await?
        }
        _ => None,
    };
    Ok(Unlocked {
        details_recipient,
        details,
        recipients,
        writer,
        writer_recipient,
        identity,
        secrets,
        read_keys,
        trust,
        writer_recipients,
    })
}

/// Every age key of the host, identities first.
fn host_keys(identity: Option<&Identity>, writer: Option<&WriterKey>) -> Vec<x25519::Identity> {
    identity
        .map(|i| i.keys().to_vec())
        .unwrap_or_default()
        .into_iter()
        .chain(writer.map(|w| w.keys().to_vec()).unwrap_or_default())
        .collect()
}

pub(crate) fn check_writer(config: &RepoConfig, writer: &WriterKey) -> Result<()> {
    let mine = writer.recipient().to_string();
    if mine != config.writer_recipient && !config.writers.iter().any(|w| w.recipient == mine) {
        return Err(RepoError::WrongKey(format!(
            "the writer key does not belong to repository {} (its writer is {})",
            config.id, config.writer_recipient
        )));
    }
    Ok(())
}

/// Open the newest epoch's secrets object any of `keys` can open.
pub(crate) async fn unwrap_secrets(
    config: &RepoConfig,
    regions: &[Region],
    order: &[usize],
    keys: &[x25519::Identity],
    pins: &Pins,
) -> Result<RepoSecrets> {
    let mut tried = Vec::new();
    for e in config.epochs.iter().rev() {
        let name = secrets_object(e.epoch);
        match read_any(regions, order, &name, |b| {
            let s = RepoSecrets::unseal(b, keys, &config.id, e.epoch)?;
            check_fingerprint(&s, pins, &name)?;
            Ok(s)
        })
        .await
        {
            Ok(s) => return Ok(s),
            Err(RepoError::WrongKey(_)) => tried.push(name),
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::WrongKey(format!(
        "none of this host's keys (identity or writer key) opens repository {}'s secrets ({}): they belong to another repository, or to an epoch whose identity this host lacks",
        config.id,
        tried.join(", ")
    )))
}

/// The details key from the newest epoch's `keys/details-NNNN.age` that `keys` (the host's
/// identities) open. `None` when none does (an identity of an epoch whose copy is missing):
/// manifests then read as sealed, with a warning.
async fn open_details_key(
    config: &RepoConfig,
    regions: &[Region],
    order: &[usize],
    keys: &[x25519::Identity],
    expected: &str,
) -> Result<Option<DetailsKey>> {
    for e in config.epochs.iter().rev() {
        let name = details_object(e.epoch);
        match read_any(regions, order, &name, |b| {
            DetailsKey::unseal(b, keys, &config.id, e.epoch, expected)
        })
        .await
        {
            Ok(k) => return Ok(Some(k)),
            Err(RepoError::WrongKey(_)) => {}
            Err(RepoError::Backend(BackendError::NotFound(_))) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(
        repository = %config.id,
        "no keys/details-NNNN.age opens with this host's identity: snapshot details (root, location, probes) stay sealed here; run `lifeboat keys list` where the current identity is"
    );
    Ok(None)
}

/// Pinned secrets: `name` must hold exactly them.
fn check_fingerprint(s: &RepoSecrets, pins: &Pins, name: &str) -> Result<()> {
    match &pins.secrets {
        Some(pin) if *pin != s.fingerprint() => Err(RepoError::Untrusted(format!(
            "{name}: its repository secrets are not the ones lifeboat.toml pins (keys.repository_secrets = {pin:?}): a substituted key object"
        ))),
        _ => Ok(()),
    }
}

/// The recipients new objects go to: the repository's current epoch. The host's configured
/// recipients must be that epoch's (v1: exactly the repository's), or an older epoch's
/// (then a warning says to update them).
fn choose_recipients(
    config: &RepoConfig,
    mine: Vec<x25519::Recipient>,
) -> Result<Vec<x25519::Recipient>> {
    let current: Vec<x25519::Recipient> = config
        .recipients
        .iter()
        .map(|s| parse_recipient(s))
        .collect::<Result<_>>()?;
    if mine.is_empty() {
        return Ok(current);
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let mine_s = sorted(&mine.iter().map(|r| r.to_string()).collect::<Vec<_>>());
    if mine_s == sorted(&config.recipients) {
        return Ok(mine);
    }
    if let Some(old) = config
        .epochs
        .iter()
        .find(|e| sorted(&e.recipients) == mine_s)
    {
        tracing::warn!(
            repository = %config.id,
            configured_epoch = old.epoch,
            current_epoch = config.current_epoch(),
            "keys.recipients in lifeboat.toml name an older recipient epoch; new objects go to the current epoch's recipients: update keys.recipients to {}",
            config.recipients.join(", ")
        );
        return Ok(current);
    }
    Err(RepoError::WrongKey(format!(
        "keys.recipients in lifeboat.toml differ from repository {}'s recipients ({}); fix the config rather than encrypting to keys the repository does not know",
        config.id,
        config.recipients.join(", ")
    )))
}

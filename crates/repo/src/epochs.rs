//! Recipient epochs: `keys rotate` starts a new one; `keys list` reports them.
//!
//! A rotation never touches data: the repository secrets stay the same (so chunk ids do), a
//! new `keys/secrets-NNNN.age` wraps them to the new recipients and the writer, a new
//! `keys/details-NNNN.age` wraps the (unchanged) details key to the new recipients only, and
//! `config` gains the epoch. A repository with a details key rotates only where the details
//! key opens (the identity): without it the new epoch's identity could never read the
//! details of any snapshot, so a host without the identity is refused (`NeedIdentity`). Write order per region, as at `init`: the key object first (read back and
//! compared before going on), then `config` in every region. A crash before the config puts
//! leaves an unused key object (the next rotation overwrites it); one between two regions'
//! config puts leaves regions at epochs N and N+1, both valid (objects written meanwhile go to
//! whichever epoch that region's config names; old identities keep reading everything).

use bytes::Bytes;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::repo::{Repository, CONFIG_OBJECT, FORMAT_V1};
use crate::secrets::{secrets_object, Epoch, RepoSecrets};

/// What a rotation did.
#[derive(Debug, Serialize)]
pub struct RotateReport {
    pub repository: String,
    pub epoch: u32,
    pub recipients: Vec<String>,
    pub regions: Vec<String>,
}

/// Start recipient epoch N+1 with `recipients` in every region of `repo`.
pub async fn rotate(
    repo: &Repository,
    recipients: &[age::x25519::Recipient],
    now: i64,
) -> Result<RotateReport> {
    if repo.config.version == FORMAT_V1 {
        return Err(RepoError::Invalid(format!(
            "repository {} is format v1, whose keys cannot rotate: run `lifeboat upgrade` first",
            repo.config.id
        )));
    }
    if recipients.is_empty() {
        return Err(RepoError::Key(
            "a rotation needs at least one recipient".into(),
        ));
    }
    if let Some(i) = (0..repo.regions.len()).find(|&i| !repo.is_available(i)) {
        return Err(RepoError::Unavailable(format!(
            "region {} did not answer: a rotation needs every region (one left at the old epoch would keep encrypting to the old keys)",
            repo.regions[i].name
        )));
    }
    let details = match (repo.seals_details(), repo.details_key()) {
        (false, _) => None,
        (true, Some(k)) => Some(k),
        (true, None) => {
            return Err(RepoError::NeedIdentity(
                "keys rotate (the new epoch gets a copy of the details key, which only the current identity opens; run it where the identity is)".into(),
            ))
        }
    };
    let id = repo.config.id.clone();
    let epoch = repo.config.current_epoch() + 1;
    if let Some(k) = details {
        let name = crate::details::details_object(epoch);
        let sealed = Bytes::from(k.seal(&id, epoch, &recipients.iter().collect::<Vec<_>>())?);
        for r in &repo.regions {
            r.backend.put(&name, sealed.clone()).await?;
            if r.backend.get(&name, None).await? != sealed {
                return Err(RepoError::Corrupt(format!(
                    "region {}: {name} does not read back as written; config left at epoch {}",
                    r.name,
                    epoch - 1
                )));
            }
        }
    }
    let mut to: Vec<&age::x25519::Recipient> = recipients.iter().collect();
    to.push(repo.writer_recipient());
    let sealed = Bytes::from(repo.secrets().seal(&id, epoch, &to)?);
    let name = secrets_object(epoch);
    for r in &repo.regions {
        r.backend.put(&name, sealed.clone()).await?;
        let back = r.backend.get(&name, None).await?;
        let ok = back == sealed
            && repo.writer().is_none_or(|w| {
                RepoSecrets::unseal(&back, w.keys(), &id, epoch)
                    .is_ok_and(|s| s.same_as(repo.secrets()))
            });
        if !ok {
            return Err(RepoError::Corrupt(format!(
                "region {}: {name} does not read back as written; config left at epoch {}",
                r.name,
                epoch - 1
            )));
        }
    }
    let strings: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let mut config = repo.config.clone();
    config.epochs.push(Epoch {
        epoch,
        created: now,
        recipients: strings.clone(),
    });
    config.recipients = strings.clone();
    let bytes = Bytes::from(
        serde_json::to_vec_pretty(&config).map_err(|e| RepoError::Invalid(e.to_string()))?,
    );
    for r in &repo.regions {
        r.backend.put(CONFIG_OBJECT, bytes.clone()).await?;
    }
    Ok(RotateReport {
        repository: id,
        epoch,
        recipients: strings,
        regions: repo.regions.iter().map(|r| r.name.clone()).collect(),
    })
}

/// One epoch as `keys list` shows it.
#[derive(Debug, Serialize)]
pub struct EpochInfo {
    pub epoch: u32,
    pub created: i64,
    pub age_days: i64,
    pub current: bool,
    pub recipients: Vec<String>,
}

/// The repository's keys: epochs (v1: one implicit epoch since the repository's creation)
/// and the writer.
#[derive(Debug, Serialize)]
pub struct KeyList {
    pub repository: String,
    pub format: u32,
    pub writer_recipient: String,
    pub epochs: Vec<EpochInfo>,
    /// The details key ([`crate::details`]): its recipient, or `None` in a repository made
    /// before it (then `details_note` says what to do).
    pub details_recipient: Option<String>,
    /// Whether this host's identity opened the details key.
    pub details_readable_here: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_note: Option<String>,
}

/// What `keys list` and `status` say of a v2 repository without a details key.
pub const NO_DETAILS_KEY: &str =
    "manifest details readable by writers: run `lifeboat upgrade` to add a details key";

pub fn list(repo: &Repository, now: i64) -> KeyList {
    let c = &repo.config;
    let epochs: Vec<Epoch> = if c.epochs.is_empty() {
        vec![Epoch {
            epoch: 1,
            created: c.created,
            recipients: c.recipients.clone(),
        }]
    } else {
        c.epochs.clone()
    };
    let current = epochs.last().map_or(1, |e| e.epoch);
    KeyList {
        repository: c.id.clone(),
        format: c.version,
        writer_recipient: c.writer_recipient.clone(),
        details_recipient: repo.secrets().details_recipient().map(str::to_string),
        details_readable_here: repo.details_key().is_some(),
        details_note: (c.version >= 2 && !repo.seals_details()).then(|| NO_DETAILS_KEY.into()),
        epochs: epochs
            .into_iter()
            .map(|e| EpochInfo {
                age_days: (now - e.created).max(0) / 86_400,
                current: e.epoch == current,
                epoch: e.epoch,
                created: e.created,
                recipients: e.recipients,
            })
            .collect(),
    }
}

/// The plaintext `config` object from whichever region answers first (no keys needed):
/// what `status` reads the key age from. `Ok(None)`: no region holds a repository yet.
pub async fn read_config(regions: &[crate::Region]) -> Result<Option<crate::RepoConfig>> {
    let mut tasks = tokio::task::JoinSet::new();
    for r in regions {
        let r = r.clone();
        tasks.spawn(async move {
            let got = r.backend.get(CONFIG_OBJECT, None).await;
            (r.name, got)
        });
    }
    let mut problems = Vec::new();
    let mut missing = 0;
    while let Some(done) = tasks.join_next().await {
        let (name, got) = done.map_err(|e| RepoError::Invalid(format!("task: {e}")))?;
        match got {
            Ok(bytes) => return crate::repo::parse_config(&bytes, &name).map(Some),
            Err(e) if e.is_not_found() => missing += 1,
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if missing == regions.len() {
        return Ok(None);
    }
    Err(RepoError::Unavailable(format!(
        "no region returned the repository's config ({})",
        problems.join("; ")
    )))
}

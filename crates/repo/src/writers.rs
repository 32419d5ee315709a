//! `keys add-writer` and `keys revoke-writer`: the writers (backup hosts) of a repository.
//!
//! A writer is one age X25519 key (the writer key file a backup host holds, as before) from
//! which its Ed25519 signing key is derived ([`crate::sign`]). Adding writer `NAME` (where
//! the identity is) generates that key, stores the repository secrets wrapped to it (and the
//! recipients) as `keys/writer-NAME.age` in every region, each read back and opened with the
//! new key, and **then** lists the writer in `config` in every region (config last, as at
//! `init`): a crash before the config puts leaves an unused key object. Revoking marks the
//! writer revoked in `config` everywhere, then deletes its key object. From then on nothing
//! it signed is trusted: its snapshots are refused, and its index files no longer count for
//! deduplication (honest writers store those chunks again).

use bytes::Bytes;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::keys::WriterKey;
use crate::repo::{RepoConfig, Repository, CONFIG_OBJECT, FORMAT_V1};
use crate::secrets::{writer_object, RepoSecrets};
use crate::sign::{check_writer_name, pin_lines, WriterEntry};

/// What `keys add-writer` did. `key` is the new writer's secret: install it on the host.
#[derive(Debug)]
pub struct AddedWriter {
    pub key: WriterKey,
    pub report: WriterReport,
}

/// What changed, and the lines every host's `lifeboat.toml` should pin now.
#[derive(Debug, Serialize)]
pub struct WriterReport {
    pub repository: String,
    pub writer: WriterEntry,
    pub regions: Vec<String>,
    pub pin_lines: String,
}

fn check_admin(repo: &Repository, what: &str) -> Result<()> {
    repo.identity(what)?;
    if repo.config.version == FORMAT_V1 {
        return Err(RepoError::Invalid(format!(
            "repository {} is format v1, which has one shared writer: run `lifeboat upgrade` first",
            repo.config.id
        )));
    }
    if let Some(i) = (0..repo.regions.len()).find(|&i| !repo.is_available(i)) {
        return Err(RepoError::Unavailable(format!(
            "region {} did not answer: {what} needs every region (one left behind would keep the old list of writers)",
            repo.regions[i].name
        )));
    }
    Ok(())
}

async fn put_config(repo: &Repository, config: &RepoConfig) -> Result<()> {
    let bytes = Bytes::from(
        serde_json::to_vec_pretty(config).map_err(|e| RepoError::Invalid(e.to_string()))?,
    );
    for r in &repo.regions {
        r.backend.put(CONFIG_OBJECT, bytes.clone()).await?;
    }
    Ok(())
}

fn report(repo: &Repository, config: &RepoConfig, writer: WriterEntry) -> WriterReport {
    WriterReport {
        repository: config.id.clone(),
        writer,
        regions: repo.regions.iter().map(|r| r.name.clone()).collect(),
        pin_lines: pin_lines(&config.id, &repo.secrets().fingerprint(), &config.writers),
    }
}

/// Add writer `name` to every region of `repo` (opened with the identity).
pub async fn add_writer(repo: &Repository, name: &str, now: i64) -> Result<AddedWriter> {
    check_admin(repo, "keys add-writer")?;
    check_writer_name(name)?;
    if let Some(w) = repo.config.writers.iter().find(|w| w.name == name) {
        return Err(RepoError::Invalid(format!(
            "repository {} already has a writer named {name}{}; choose another name",
            repo.config.id,
            if w.revoked.is_some() {
                " (revoked)"
            } else {
                ""
            }
        )));
    }
    let mut config = repo.config.clone();
    if config.writers.is_empty() {
        // A repository made before writers signed: its writer key becomes `default`.
        let w = repo.writer().ok_or_else(|| {
            RepoError::Key(format!(
                "repository {} lists no writers yet: run `keys add-writer` once on a host holding both the identity and the repository's writer key, so that key becomes writer default",
                config.id
            ))
        })?;
        config
            .writers
            .push(WriterEntry::of(crate::sign::DEFAULT_WRITER, w, now));
    }
    let key = WriterKey::generate();
    let entry = WriterEntry::of(name, &key, now);
    let object = writer_object(name);
    let mine = key.recipient();
    let mut to = repo.recipients();
    to.push(&mine);
    let sealed = Bytes::from(repo.secrets().seal_for_writer(&config.id, name, &to)?);
    for r in &repo.regions {
        r.backend.put(&object, sealed.clone()).await?;
        let back = r.backend.get(&object, None).await?;
        let ok = RepoSecrets::unseal_writer(&back, key.keys(), &config.id, name)
            .is_ok_and(|s| s.same_as(repo.secrets()));
        if !ok {
            return Err(RepoError::Corrupt(format!(
                "region {}: {object} does not read back as written; the writer was not added",
                r.name
            )));
        }
    }
    config.writers.push(entry.clone());
    put_config(repo, &config).await?;
    Ok(AddedWriter {
        key,
        report: report(repo, &config, entry),
    })
}

/// Revoke writer `name` in every region of `repo` (opened with the identity).
pub async fn revoke_writer(repo: &Repository, name: &str, now: i64) -> Result<WriterReport> {
    check_admin(repo, "keys revoke-writer")?;
    let mut config = repo.config.clone();
    let Some(w) = config.writers.iter_mut().find(|w| w.name == name) else {
        return Err(RepoError::Invalid(format!(
            "repository {} has no writer {name:?} (its writers: {})",
            config.id,
            repo.config
                .writers
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if w.revoked.is_some() {
        return Err(RepoError::Invalid(format!(
            "writer {name} of repository {} is already revoked",
            config.id
        )));
    }
    w.revoked = Some(now);
    let entry = w.clone();
    put_config(repo, &config).await?;
    let object = writer_object(name);
    for r in &repo.regions {
        match r.backend.delete(&object).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            // The revocation holds (config says so); the object only lets it read secrets
            // it already knew.
            Err(e) => {
                tracing::warn!(region = %r.name, object, error = %e, "could not delete the revoked writer's key object")
            }
        }
    }
    Ok(report(repo, &config, entry))
}

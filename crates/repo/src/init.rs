//! `init`: create the repository (format v2) in every region that lacks one.
//!
//! A new repository draws its secrets at random ([`RepoSecrets::generate`]) and stores them
//! as `keys/secrets-0001.age` (recipient epoch 1), encrypted to the recipients and the
//! writer's recipient, and a details key ([`crate::details`]) as `keys/details-0001.age`,
//! encrypted to the recipients only. Per region the key objects are written first and
//! `config` last: its
//! presence means "initialized". A region added to an existing repository gets the existing
//! key objects copied byte for byte (v1: `keys/writer.age` written anew), then `config`.

use bytes::Bytes;

use crate::backend::BackendError;
use crate::chunker::ChunkerParams;
use crate::details::DetailsKey;
use crate::error::{RepoError, Result};
use crate::keys::{age_encrypt, Keyring};
use crate::repo_config::{
    parse_config, Region, RepoConfig, CONFIG_OBJECT, FORMAT_NAME, FORMAT_V1, FORMAT_VERSION,
    WRITER_KEY_OBJECT,
};
use crate::secrets::{secrets_object, Epoch, RepoSecrets};
use crate::sign::{WriterEntry, DEFAULT_WRITER};
use crate::unlock::{check_writer, read_any};

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
            zstd_level: 2,
        }
    }
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
    let mut holders = Vec::new();
    let mut missing = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        match r.backend.get(CONFIG_OBJECT, None).await {
            Ok(b) => {
                let cfg = parse_config(&b, &r.name)?;
                if let Some(e) = &existing {
                    if e.id != cfg.id || e.version != cfg.version {
                        return Err(RepoError::Invalid(format!(
                            "region {} holds repository {} (format v{}) but another region holds {} (format v{}); refusing to mix them (an interrupted `lifeboat upgrade`? run it again)",
                            r.name, cfg.id, cfg.version, e.id, e.version
                        )));
                    }
                }
                existing = Some(cfg);
                holders.push(i);
            }
            Err(BackendError::NotFound(_)) => missing.push(r),
            Err(e) => return Err(RepoError::Invalid(format!("region {}: {e}", r.name))),
        }
    }
    let recipient_strings: Vec<String> = keys.recipients.iter().map(|r| r.to_string()).collect();
    // The key objects every missing region gets, by name.
    let mut key_objects: Vec<(String, Bytes)> = Vec::new();
    let rcpts: Vec<&age::x25519::Recipient> = keys.recipients.iter().collect();
    let config = match existing {
        Some(cfg) => {
            if missing.is_empty() {
                return Err(RepoError::Invalid(format!(
                    "every region already holds repository {}; refusing to overwrite it",
                    cfg.id
                )));
            }
            check_writer(&cfg, writer)?;
            let mut mine = recipient_strings.clone();
            let mut theirs = cfg.recipients.clone();
            mine.sort();
            theirs.sort();
            if mine != theirs {
                return Err(RepoError::WrongKey(format!(
                    "keys.recipients in lifeboat.toml differ from repository {}'s current recipients ({}); fix the config before adding a region",
                    cfg.id,
                    cfg.recipients.join(", ")
                )));
            }
            if cfg.version == FORMAT_V1 {
                let text = writer.to_file_text();
                key_objects.push((
                    WRITER_KEY_OBJECT.into(),
                    Bytes::from(age_encrypt(&rcpts, text.as_bytes())?),
                ));
            } else {
                for e in &cfg.epochs {
                    let name = secrets_object(e.epoch);
                    let bytes = read_any(regions, &holders, &name, |b| {
                        // Only copy what the writer key can open: a damaged copy would
                        // make the new region useless.
                        RepoSecrets::unseal(b, writer.keys(), &cfg.id, e.epoch)?;
                        Ok(b.clone())
                    })
                    .await?;
                    key_objects.push((name, bytes));
                    // Its details key copy (only the recipients open it: copied as is).
                    let name = crate::details::details_object(e.epoch);
                    match read_any(regions, &holders, &name, |b| Ok(b.clone())).await {
                        Ok(bytes) => key_objects.push((name, bytes)),
                        Err(RepoError::Backend(BackendError::NotFound(_))) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Each added writer's own copy (only that writer opens it: copied as is).
                for w in cfg.writers.iter().filter(|w| w.revoked.is_none()) {
                    let name = crate::secrets::writer_object(&w.name);
                    match read_any(regions, &holders, &name, |b| Ok(b.clone())).await {
                        Ok(bytes) => key_objects.push((name, bytes)),
                        Err(RepoError::Backend(BackendError::NotFound(_))) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            cfg
        }
        None => {
            let id = hex::encode(rand::random::<[u8; 16]>());
            let created = crate::clock::now_secs();
            // The audit key a writer host derives on its own (before init, regions down).
            let audit_key = crate::keys::chain_key_from(writer.v1_secrets().index_key());
            let details = DetailsKey::generate();
            let secrets =
                RepoSecrets::generate(audit_key).with_details_recipient(&details.recipient());
            let writer_rcpt = writer.recipient();
            let mut to = rcpts.clone();
            to.push(&writer_rcpt);
            key_objects.push((
                crate::details::details_object(1),
                Bytes::from(details.seal(&id, 1, &rcpts)?),
            ));
            key_objects.push((secrets_object(1), Bytes::from(secrets.seal(&id, 1, &to)?)));
            RepoConfig {
                format: FORMAT_NAME.into(),
                version: FORMAT_VERSION,
                id,
                created,
                chunker: opts.chunker,
                pack_size: opts.pack_size,
                zstd_level: opts.zstd_level,
                recipients: recipient_strings.clone(),
                writer_recipient: writer_rcpt.to_string(),
                epochs: vec![Epoch {
                    epoch: 1,
                    created,
                    recipients: recipient_strings,
                }],
                // The key init runs with is writer `default` (`keys add-writer` adds others).
                writers: vec![WriterEntry::of(DEFAULT_WRITER, writer, created)],
                details_recipient: Some(details.recipient().to_string()),
            }
        }
    };
    let config_bytes = Bytes::from(
        serde_json::to_vec_pretty(&config).map_err(|e| RepoError::Invalid(e.to_string()))?,
    );
    let mut created = Vec::new();
    for r in missing {
        // The config object is written last: its presence means "initialized".
        for (name, bytes) in &key_objects {
            r.backend.put(name, bytes.clone()).await?;
        }
        r.backend.put(CONFIG_OBJECT, config_bytes.clone()).await?;
        created.push(r.name.clone());
    }
    Ok((config, created))
}

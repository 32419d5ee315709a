//! Repository secrets: the chunk-id key, the index key and the chunker seed, and the
//! `keys/secrets-NNNN.age` objects that hold them.
//!
//! Format v2 draws the three at random at `init` and never changes them: a chunk's id
//! depends only on its content and the chunk-id key, so changing recipients or writers
//! (rotation) never changes a chunk id and deduplication survives it. Each recipient epoch
//! has one secrets object, a standard age file encrypted to that epoch's recipients and to
//! the writer's recipient, so both a restore host (identity) and a backup host (writer key)
//! unwrap the same secrets. Format v1 derived them from the writer key instead
//! ([`crate::keys::WriterKey::v1_secrets`]); `upgrade` wraps those derived values, so an
//! upgraded repository keeps its chunk ids.
//!
//! The secrets are zeroized on drop and never printed.

use std::fmt;

use age::x25519;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{RepoError, Result};
use crate::keys::{age_decrypt, chain_key_from, seal_json, WriterKey};

/// `format` of a secrets object's plaintext.
pub const SECRETS_FORMAT: &str = "lifeboat-secrets";

/// Object name of epoch `epoch`'s secrets.
pub fn secrets_object(epoch: u32) -> String {
    format!("keys/secrets-{epoch:04}.age")
}

/// Object name of writer `name`'s own copy of the secrets (writers added by
/// `keys add-writer`): wrapped to that writer's recipient and the recipients.
pub fn writer_object(name: &str) -> String {
    format!("keys/writer-{name}.age")
}

/// The three repository secrets.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RepoSecrets {
    chunk_key: [u8; 32],
    index_key: [u8; 32],
    chunker_seed: u64,
    /// The audit chain's MAC key ([`crate::audit`]): derived from the writer key when the
    /// repository is created (so a writer host computes it before `init` and with every
    /// region down), carried here for hosts that hold only the identity.
    audit_key: [u8; 32],
    /// The details key's recipient ([`crate::details`]): manifests' details are sealed to
    /// it. `None` in a repository made before the details key (until `upgrade`). Public,
    /// but covered by the fingerprint, so a pinned host seals only to the real one.
    details_recipient: Option<String>,
}

impl fmt::Debug for RepoSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepoSecrets(<redacted>)")
    }
}

/// A secrets object's plaintext (JSON). Its hex strings are wiped when it is dropped.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    format: String,
    repository: String,
    epoch: u32,
    chunk_id_key: String,
    index_key: String,
    chunker_seed: String,
    audit_chain_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details_recipient: Option<String>,
    /// Set in a writer's object (`keys/writer-NAME.age`, epoch 0): whose it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
}

impl Drop for SecretsFile {
    fn drop(&mut self) {
        self.chunk_id_key.zeroize();
        self.index_key.zeroize();
        self.chunker_seed.zeroize();
        self.audit_chain_key.zeroize();
    }
}

impl RepoSecrets {
    /// Fresh random secrets for a new v2 repository (the audit key is given: see the field).
    pub fn generate(audit_key: [u8; 32]) -> RepoSecrets {
        RepoSecrets {
            chunk_key: rand::random(),
            index_key: rand::random(),
            chunker_seed: rand::random(),
            audit_key,
            details_recipient: None,
        }
    }

    pub(crate) fn from_parts(
        chunk_key: [u8; 32],
        index_key: [u8; 32],
        seed: u64,
        audit_key: [u8; 32],
    ) -> Self {
        RepoSecrets {
            chunk_key,
            index_key,
            chunker_seed: seed,
            audit_key,
            details_recipient: None,
        }
    }

    /// The same secrets carrying the details key's recipient.
    pub fn with_details_recipient(mut self, recipient: &age::x25519::Recipient) -> Self {
        self.details_recipient = Some(recipient.to_string());
        self
    }

    /// The details key's recipient, when the repository has a details key.
    pub fn details_recipient(&self) -> Option<&str> {
        self.details_recipient.as_deref()
    }

    /// The audit chain's MAC key.
    pub fn audit_key(&self) -> &[u8; 32] {
        &self.audit_key
    }

    /// Keyed BLAKE3 key of chunk ids.
    pub fn chunk_key(&self) -> &[u8; 32] {
        &self.chunk_key
    }

    /// ChaCha20-Poly1305 key of index files.
    pub fn index_key(&self) -> &[u8; 32] {
        &self.index_key
    }

    /// The chunker's gear seed.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The secrets object of `epoch` of repository `repo_id`, encrypted to `recipients`.
    pub fn seal(
        &self,
        repo_id: &str,
        epoch: u32,
        recipients: &[&x25519::Recipient],
    ) -> Result<Vec<u8>> {
        self.seal_as(repo_id, epoch, None, recipients)
    }

    /// Writer `name`'s object ([`writer_object`]), encrypted to `recipients`.
    pub fn seal_for_writer(
        &self,
        repo_id: &str,
        name: &str,
        recipients: &[&x25519::Recipient],
    ) -> Result<Vec<u8>> {
        self.seal_as(repo_id, 0, Some(name), recipients)
    }

    fn seal_as(
        &self,
        repo_id: &str,
        epoch: u32,
        writer: Option<&str>,
        recipients: &[&x25519::Recipient],
    ) -> Result<Vec<u8>> {
        let file = SecretsFile {
            writer: writer.map(str::to_string),
            format: SECRETS_FORMAT.into(),
            repository: repo_id.into(),
            epoch,
            chunk_id_key: hex::encode(self.chunk_key),
            index_key: hex::encode(self.index_key),
            chunker_seed: hex::encode(self.chunker_seed.to_le_bytes()),
            audit_chain_key: hex::encode(self.audit_key),
            details_recipient: self.details_recipient.clone(),
        };
        seal_json(recipients, &file)
    }

    /// Open a secrets object with any of `keys`, checking that it belongs to `repo_id` and
    /// `epoch`. A key that is no recipient is `WrongKey`; one that belongs elsewhere (another
    /// repository or epoch: substituted) is `Untrusted`; anything malformed is `Corrupt`.
    pub fn unseal(
        bytes: &[u8],
        keys: &[x25519::Identity],
        repo_id: &str,
        epoch: u32,
    ) -> Result<RepoSecrets> {
        Self::unseal_as(bytes, keys, repo_id, epoch, None)
    }

    /// Open writer `name`'s object ([`writer_object`]).
    pub fn unseal_writer(
        bytes: &[u8],
        keys: &[x25519::Identity],
        repo_id: &str,
        name: &str,
    ) -> Result<RepoSecrets> {
        Self::unseal_as(bytes, keys, repo_id, 0, Some(name))
    }

    fn unseal_as(
        bytes: &[u8],
        keys: &[x25519::Identity],
        repo_id: &str,
        epoch: u32,
        writer: Option<&str>,
    ) -> Result<RepoSecrets> {
        let what = match writer {
            Some(n) => writer_object(n),
            None => secrets_object(epoch),
        };
        let plain = Zeroizing::new(age_decrypt(keys, bytes, &what)?);
        let file: SecretsFile = serde_json::from_slice(&plain)
            .map_err(|_| RepoError::Corrupt(format!("{what}: not a lifeboat secrets object")))?;
        if file.format != SECRETS_FORMAT {
            return Err(RepoError::Corrupt(format!(
                "{what}: not a lifeboat secrets object"
            )));
        }
        if file.repository != repo_id || file.epoch != epoch || file.writer.as_deref() != writer {
            return Err(RepoError::Untrusted(format!(
                "{what}: belongs to repository {} epoch {}{}, not {repo_id} epoch {epoch}: a substituted key object",
                file.repository,
                file.epoch,
                file.writer.as_deref().map(|w| format!(" writer {w}")).unwrap_or_default()
            )));
        }
        let bad = || RepoError::Corrupt(format!("{what}: malformed key material"));
        let mut chunk_key = [0u8; 32];
        let mut index_key = [0u8; 32];
        let mut seed = [0u8; 8];
        let mut audit_key = [0u8; 32];
        hex::decode_to_slice(&file.audit_chain_key, &mut audit_key).map_err(|_| bad())?;
        hex::decode_to_slice(&file.chunk_id_key, &mut chunk_key).map_err(|_| bad())?;
        hex::decode_to_slice(&file.index_key, &mut index_key).map_err(|_| bad())?;
        hex::decode_to_slice(&file.chunker_seed, &mut seed).map_err(|_| bad())?;
        let mut out =
            RepoSecrets::from_parts(chunk_key, index_key, u64::from_le_bytes(seed), audit_key);
        if let Some(r) = &file.details_recipient {
            let r = crate::keys::parse_recipient(r).map_err(|_| bad())?;
            out = out.with_details_recipient(&r);
        }
        audit_key.zeroize();
        chunk_key.zeroize();
        index_key.zeroize();
        seed.zeroize();
        Ok(out)
    }

    /// The fingerprint that pins these secrets (`[keys] repository_secrets`): BLAKE3
    /// `derive_key("lifeboat v2 secrets fingerprint", chunk-id key || index key || chunker
    /// seed (u64 LE) || audit chain key [|| details recipient as text])`, as
    /// `blake3:<64 hex>`. One-way: it reveals nothing. The details recipient is appended
    /// only when there is one, so a repository made before the details key keeps its pin
    /// until `upgrade` adds the key (which prints the new pin).
    pub fn fingerprint(&self) -> String {
        let mut buf = Zeroizing::new(Vec::with_capacity(170));
        buf.extend_from_slice(&self.chunk_key);
        buf.extend_from_slice(&self.index_key);
        buf.extend_from_slice(&self.chunker_seed.to_le_bytes());
        buf.extend_from_slice(&self.audit_key);
        if let Some(r) = &self.details_recipient {
            buf.extend_from_slice(r.as_bytes());
        }
        let h = blake3::derive_key("lifeboat v2 secrets fingerprint", &buf);
        format!("blake3:{}", hex::encode(h))
    }

    /// Same secrets? (upgrade and rotation check what they wrote before relying on it; the
    /// details recipient is not a secret and is not compared)
    pub fn same_as(&self, other: &RepoSecrets) -> bool {
        self.chunk_key == other.chunk_key
            && self.index_key == other.index_key
            && self.chunker_seed == other.chunker_seed
            && self.audit_key == other.audit_key
    }
}

/// One recipient epoch of a v2 repository (in `config`; public keys only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epoch {
    pub epoch: u32,
    /// Unix seconds.
    pub created: i64,
    pub recipients: Vec<String>,
}

/// The keys a host reads metadata with (index files, manifests): the repository secrets
/// and the age keys this host holds (identities first, then the writer key).
#[derive(Clone, Copy)]
pub struct MetadataKeys<'a> {
    pub secrets: &'a RepoSecrets,
    pub age_keys: &'a [x25519::Identity],
    /// Which writers' signatures this host accepts.
    pub trust: &'a crate::sign::Trust,
}

impl fmt::Debug for MetadataKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetadataKeys(<redacted>)")
    }
}

impl WriterKey {
    /// Format v1's repository secrets, derived from this key's text. Only for v1 repositories
    /// (and `upgrade`, which keeps them so that chunk ids stay the same).
    pub fn v1_secrets(&self) -> RepoSecrets {
        let (chunk_key, index_key, seed) = self.v1_derivation();
        let audit_key = chain_key_from(&index_key);
        RepoSecrets::from_parts(chunk_key, index_key, seed, audit_key)
    }
}

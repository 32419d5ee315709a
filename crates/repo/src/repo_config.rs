//! The repository's `config` object and its region handle: format name and versions, the
//! well-known object names, and parsing a `config` with its checks. Below `repo`, `init` and
//! `unlock`, which all need it (re-exported from `repo`).

use serde::{Deserialize, Serialize};

use crate::backend::DynBackend;
use crate::chunker::ChunkerParams;
use crate::error::{RepoError, Result};
use crate::secrets::Epoch;
use crate::sign::WriterEntry;

pub const FORMAT_NAME: &str = "lifeboat-repository";
/// The format this lifeboat writes. It reads [`FORMAT_V1`] too (see `docs/FORMAT.md`).
pub const FORMAT_VERSION: u32 = 2;
/// The first format: secrets derived from the writer key, mixed packs.
pub const FORMAT_V1: u32 = 1;
pub const CONFIG_OBJECT: &str = "config";
/// Format v1's copy of the writer key, encrypted to the recipients (v2 neither writes nor
/// reads it; an upgraded repository keeps it).
pub const WRITER_KEY_OBJECT: &str = "keys/writer.age";

/// A named backend holding one copy of the repository.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub backend: DynBackend,
}

/// The plaintext `config` object. Holds no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: i64,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
    /// The current epoch's recipients (v2: the same as the last of `epochs`).
    pub recipients: Vec<String>,
    pub writer_recipient: String,
    /// v2: every recipient epoch, oldest first; the last is current. Absent in v1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<Epoch>,
    /// v2: the writers (backup hosts) that sign manifests and index files, revoked ones
    /// included. Absent in v1 and in v2 repositories made before writers signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<WriterEntry>,
    /// v2: the details key's recipient ([`crate::details`]), for `status` and `keys list`
    /// to read without keys. Informational: writers seal to the one in the (pinned) secrets,
    /// and a host refuses a config that names another. Absent before the details key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_recipient: Option<String>,
}

impl RepoConfig {
    /// The current recipient epoch (v1 repositories have only epoch 1, implicitly).
    pub fn current_epoch(&self) -> u32 {
        self.epochs.last().map_or(1, |e| e.epoch)
    }

    /// When the current recipient epoch started (epoch seconds; v1: the repository's
    /// creation): what the yearly key-rotation objective measures from.
    pub fn current_epoch_created(&self) -> i64 {
        self.epochs.last().map_or(self.created, |e| e.created)
    }
}

pub(crate) fn parse_config(bytes: &[u8], region: &str) -> Result<RepoConfig> {
    let cfg: RepoConfig = serde_json::from_slice(bytes)
        .map_err(|e| RepoError::Corrupt(format!("region {region}: config object: {e}")))?;
    if cfg.format != FORMAT_NAME {
        return Err(RepoError::Invalid(format!(
            "region {region}: not a lifeboat repository"
        )));
    }
    if !(FORMAT_V1..=FORMAT_VERSION).contains(&cfg.version) {
        return Err(RepoError::Invalid(format!(
            "region {region}: repository format version {} is not supported by this lifeboat (supports {FORMAT_V1} to {FORMAT_VERSION})",
            cfg.version
        )));
    }
    let epochs_ok = if cfg.version == FORMAT_V1 {
        cfg.epochs.is_empty()
    } else {
        cfg.epochs
            .last()
            .is_some_and(|e| e.recipients == cfg.recipients)
            && cfg.epochs.windows(2).all(|w| w[0].epoch < w[1].epoch)
    };
    if !epochs_ok {
        return Err(RepoError::Corrupt(format!(
            "region {region}: config object: recipient epochs do not match the format version or the current recipients"
        )));
    }
    crate::chunker::validate(&cfg.chunker)
        .map_err(|e| RepoError::Corrupt(format!("region {region}: config object: {e}")))?;
    if !(1 << 20..=1 << 28).contains(&cfg.pack_size) || !(1..=19).contains(&cfg.zstd_level) {
        return Err(RepoError::Corrupt(format!(
            "region {region}: config object: pack_size {} or zstd_level {} out of range",
            cfg.pack_size, cfg.zstd_level
        )));
    }
    Ok(cfg)
}

//! Snapshot manifests: what was backed up, when, from where, and the root tree.
//!
//! A manifest is JSON in one age file encrypted to the repository's recipients *and* the
//! writer's recipient (backup hosts may list snapshots; they cannot read trees). Its object
//! name is `snapshots/<BLAKE3 of the stored bytes>`. A manifest is written only after every
//! pack and index file it depends on is stored in that region: its presence is the commit.

use serde::{Deserialize, Serialize};

use crate::Id;

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub plan: String,
    pub host: String,
    /// Start of the backup, seconds since the Unix epoch (UTC).
    pub time: i64,
    /// End of the backup.
    pub end_time: i64,
    /// When the manifest was sealed, nanoseconds since the epoch (set by the writer at
    /// commit): orders snapshots taken within the same second. 0 in older manifests.
    #[serde(default)]
    pub committed_ns: i64,
    pub source: SourceInfo,
    /// The root tree blob.
    pub root: Id,
    pub stats: Stats,
    /// Facts recorded at backup time that a restore test compares against (row counts,
    /// SQL probe results). Empty for directories: their tree holds content hashes.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub probes: serde_json::Map<String, serde_json::Value>,
    /// Entries of the source the backup could not read and skipped, each as `path: why`
    /// (permission denied, vanished, an I/O error). Non-empty: the snapshot is **partial**,
    /// everything else in it is complete. Absent in older manifests and complete snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

impl Manifest {
    /// The backup skipped entries it could not read ([`Manifest::unreadable`]).
    pub fn is_partial(&self) -> bool {
        !self.unreadable.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: String,
    pub location: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Logical bytes of file content in the snapshot.
    pub bytes: u64,
    /// Bytes read from the source (unchanged files skipped via the files cache are not read).
    pub bytes_read: u64,
    /// Raw bytes of chunks that were new to the repository.
    pub new_bytes: u64,
    /// Stored (compressed) bytes of new chunks, i.e. what was uploaded per region.
    pub stored_bytes: u64,
    pub new_chunks: u64,
    pub packs: u64,
    #[serde(default)]
    pub skipped: u64,
}

/// A manifest as listed: its id plus the regions holding it.
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    pub id: Id,
    pub manifest: Manifest,
    /// Region names where the manifest is present.
    pub regions: Vec<String>,
}

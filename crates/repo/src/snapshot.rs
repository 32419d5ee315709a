//! Snapshot manifests: what was backed up, when, from where, and the root tree.
//!
//! A manifest is JSON in one age file encrypted to the repository's recipients *and* the
//! writers' recipients (backup hosts may list snapshots; they cannot read trees). Its root,
//! source location, probes and unreadable paths are sealed inside it to the details key
//! ([`crate::details`]), so a writer sees only what scheduling needs. Its object name is
//! `snapshots/<id>` ([`crate::id::IdRule`]). A manifest is written only after every pack and
//! index file it depends on is stored in that region: its presence is the commit.

use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::Id;

pub const MANIFEST_VERSION: u32 = 1;
/// What a sealed manifest's location (and each unreadable entry) reads on a host without
/// the details key.
pub const SEALED: &str = "(sealed)";

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
    /// The root tree blob. Meaningless (zero) when [`sealed`](Self::sealed): read it
    /// through [`tree_root`](Manifest::tree_root).
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
    /// Opened on a host without the details key ([`crate::details`]): `root`, `probes`,
    /// `source.location` and the text of `unreadable` are placeholders ([`SEALED`]); only
    /// the number of unreadable entries is real. Never stored.
    #[serde(skip)]
    pub sealed: bool,
    /// Set when this host holds the details key and the signed manifest's details still do
    /// not open (sealed to another key, damaged): the manifest stays listed, sealed, and
    /// [`tree_root`](Self::tree_root) fails with this as `Corrupt`. Never stored.
    #[serde(skip)]
    pub details_error: Option<String>,
}

impl Manifest {
    /// The backup skipped entries it could not read ([`Manifest::unreadable`]).
    pub fn is_partial(&self) -> bool {
        !self.unreadable.is_empty()
    }

    /// The root tree, or `NeedIdentity` when the details are sealed on this host.
    pub fn tree_root(&self) -> Result<Id> {
        if let Some(e) = &self.details_error {
            return Err(RepoError::Corrupt(e.clone()));
        }
        if self.sealed {
            return Err(RepoError::NeedIdentity(format!(
                "reading snapshot of plan {} (its root tree is sealed to the recipients)",
                self.plan
            )));
        }
        Ok(self.root)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_without_the_partial_list_still_parse_and_a_list_marks_partial() {
        let old = serde_json::json!({
            "version": 1, "plan": "p", "host": "h", "time": 1, "end_time": 2,
            "source": {"kind": "dir", "location": "/srv"},
            "root": Id::of_stored(b"root").to_hex(),
            "stats": {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "bytes_read": 0,
                      "new_bytes": 0, "stored_bytes": 0, "new_chunks": 0, "packs": 0}
        });
        let mut m: Manifest = serde_json::from_value(old).unwrap();
        assert!(!m.is_partial());
        assert!(!serde_json::to_string(&m).unwrap().contains("unreadable"));
        m.unreadable.push("/srv/x: permission denied".into());
        let back: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert!(back.is_partial());
        assert_eq!(back, m);
    }
}

//! `verify --read-data`: download packs of one region, a few at a time, and prove each.
//!
//! Each pack is fetched from the region being verified only (no fallback: the point is to
//! find the bad copy), [`PACKS_IN_FLIGHT`] at once so the round trips overlap with the
//! decryption of the packs already here. A pack must match its name (hash), authenticate,
//! carry a well-formed table, and every chunk in that table must decompress to its keyed
//! hash and length. Then every index entry that names the pack — in every index file of the
//! region — must be in that table with the same offset, length, raw length, kind and
//! compression: an index that points a restore at the wrong bytes is damage even when the
//! pack itself is intact. Memory is bounded by the packs in flight (each ciphertext and
//! plaintext), not by the region's size.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::DynBackend;
use crate::error::{RepoError, Result};
use crate::pack::{OpenPack, PackEntry};
use crate::progress::{Cancel, Progress};
use crate::Id;

/// Packs downloaded and checked at once per region.
pub const PACKS_IN_FLIGHT: usize = 4;

/// The index entries naming each pack, with the index file each group came from.
pub type Named = HashMap<Id, Vec<(Arc<str>, Vec<PackEntry>)>>;

/// What reading one pack found.
pub enum PackOutcome {
    /// Intact; `indexed` is false when no index file names it.
    Intact { bytes: u64, indexed: bool },
    /// Could not be read, or is damaged; the problems, each with the object it concerns.
    Failed { bytes: u64, errors: Vec<RepoError> },
}

/// The keys reading packs needs.
pub struct Keys {
    pub identity: Vec<age::x25519::Identity>,
    pub chunk_key: [u8; 32],
}

/// Read and check `names` (objects under `data/`) from `backend`, at most
/// [`PACKS_IN_FLIGHT`] at a time; `done` gets each pack's name and outcome as it completes.
pub async fn read_packs(
    backend: &DynBackend,
    names: Vec<String>,
    named: &Arc<Named>,
    keys: Keys,
    (progress, cancel): (&Progress, &Cancel),
    mut done: impl FnMut(&str, PackOutcome),
) -> Result<()> {
    let (identity, chunk_key) = (Arc::new(keys.identity), keys.chunk_key);
    let mut queue = names.into_iter();
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.len() < PACKS_IN_FLIGHT {
            cancel.check()?;
            let Some(name) = queue.next() else { break };
            let (b, named, identity) = (backend.clone(), named.clone(), identity.clone());
            set.spawn(async move {
                let outcome = read_one(&b, &name, &named, identity, chunk_key).await;
                (name, outcome)
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (name, outcome) =
            joined.map_err(|e| RepoError::Invalid(format!("verify task: {e}")))?;
        let bytes = match &outcome {
            PackOutcome::Intact { bytes, .. } | PackOutcome::Failed { bytes, .. } => *bytes,
        };
        progress.add_transferred(bytes);
        done(&name, outcome);
    }
    Ok(())
}

async fn read_one(
    b: &DynBackend,
    name: &str,
    named: &Named,
    identity: Arc<Vec<age::x25519::Identity>>,
    chunk_key: [u8; 32],
) -> PackOutcome {
    let failed = |bytes, e| PackOutcome::Failed {
        bytes,
        errors: vec![e],
    };
    let id = match Id::from_object_name(name) {
        Ok(id) => id,
        Err(_) => {
            return failed(
                0,
                RepoError::Corrupt("unexpected object name under data/".into()),
            )
        }
    };
    let bytes = match b.get(name, None).await {
        Ok(bytes) => bytes,
        Err(e) => return failed(0, e.into()),
    };
    let len = bytes.len() as u64;
    let indexed: Vec<(Arc<str>, Vec<PackEntry>)> = named.get(&id).cloned().unwrap_or_default();
    let is_indexed = !indexed.is_empty();
    let checked = tokio::task::spawn_blocking(move || -> Result<Vec<RepoError>> {
        let pack = OpenPack::open(&identity, id, &bytes)?;
        drop(bytes);
        for e in &pack.entries {
            pack.blob(&chunk_key, e)?;
        }
        Ok(check_index_entries(&pack, &indexed))
    })
    .await;
    match checked {
        Ok(Ok(errors)) if errors.is_empty() => PackOutcome::Intact {
            bytes: len,
            indexed: is_indexed,
        },
        Ok(Ok(errors)) => PackOutcome::Failed { bytes: len, errors },
        Ok(Err(e)) => failed(len, e),
        Err(e) => failed(len, RepoError::Invalid(format!("verify task: {e}"))),
    }
}

/// Every index entry naming `pack` must be one of the pack's own table entries.
fn check_index_entries(pack: &OpenPack, indexed: &[(Arc<str>, Vec<PackEntry>)]) -> Vec<RepoError> {
    let table: HashMap<Id, Vec<&PackEntry>> =
        pack.entries.iter().fold(HashMap::new(), |mut m, e| {
            m.entry(e.id).or_default().push(e);
            m
        });
    let mut errors = Vec::new();
    for (file, entries) in indexed {
        for e in entries {
            let own = table.get(&e.id).map(Vec::as_slice).unwrap_or_default();
            if own.contains(&e) {
                continue;
            }
            let what = match own.first() {
                None => "the pack's table has no such chunk".to_string(),
                Some(t) => format!(
                    "the pack's table has it at offset {} length {} (raw {})",
                    t.offset, t.length, t.raw_length
                ),
            };
            errors.push(RepoError::Corrupt(format!(
                "pack {}: {file} says chunk {} is at offset {} length {} (raw {}), but {what}",
                pack.id.short(),
                e.id.short(),
                e.offset,
                e.length,
                e.raw_length
            )));
        }
    }
    errors
}

//! Reading blobs back: find a chunk's pack in the index, fetch the pack (preferred region
//! first, falling back per object when missing or corrupt), decrypt it and verify every blob.
//! A chunk stored in several packs falls back to its other packs when one is bad everywhere.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::{RepoError, Result};
use crate::pack::OpenPack;
use crate::repo::{check_stored_id, pack_name, Repository};
use crate::{Id, Index};

/// Fetch and open one pack. Needs the identity.
pub async fn fetch_pack(repo: &Arc<Repository>, id: Id) -> Result<Arc<OpenPack>> {
    let name = pack_name(&id);
    let identity = repo.identity("reading backup data")?.keys().to_vec();
    let (bytes, _) = repo
        .get_checked(&name, |b| check_stored_id(b, &id, &name))
        .await?;
    let pack = tokio::task::spawn_blocking(move || OpenPack::open(&identity, id, &bytes))
        .await
        .map_err(|e| RepoError::Invalid(format!("decrypt task: {e}")))??;
    Ok(Arc::new(pack))
}

/// Reads individual blobs (trees, small files) through a small cache of open packs.
pub struct BlobReader {
    repo: Arc<Repository>,
    index: Arc<Index>,
    cache: Mutex<VecDeque<Arc<OpenPack>>>,
    capacity: usize,
}

impl BlobReader {
    pub fn new(repo: Arc<Repository>, index: Arc<Index>) -> BlobReader {
        BlobReader {
            repo,
            index,
            cache: Mutex::new(VecDeque::new()),
            capacity: 4,
        }
    }

    /// Read and verify one blob from its best location, falling back to its other
    /// locations (other packs) when that pack cannot be read from any region.
    pub async fn read(&self, id: &Id) -> Result<Vec<u8>> {
        self.read_avoiding(id, None).await
    }

    /// [`read`](Self::read), never from pack `avoid` (one that already failed).
    pub async fn read_avoiding(&self, id: &Id, avoid: Option<Id>) -> Result<Vec<u8>> {
        let preferred = self.repo.read_order().first().copied();
        let locations = self.index.locations(id, preferred);
        let mut last: Option<RepoError> = None;
        for (pack_id, entry, _) in locations.into_iter().filter(|(p, _, _)| Some(*p) != avoid) {
            match self.read_at(pack_id, &entry).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    tracing::warn!(chunk = %id.short(), pack = %pack_id.short(), error = %e, "chunk unreadable in this pack; trying its other locations");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RepoError::Corrupt(format!(
                "chunk {} is not in the index of any region (run `lifeboat verify`)",
                id.short()
            ))
        }))
    }

    async fn read_at(&self, pack_id: Id, entry: &crate::pack::PackEntry) -> Result<Vec<u8>> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.iter().find(|p| p.id == pack_id).cloned()
        };
        let pack = match cached {
            Some(p) => p,
            None => {
                let p = fetch_pack(&self.repo, pack_id).await?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= self.capacity {
                    cache.pop_front();
                }
                cache.push_back(p.clone());
                p
            }
        };
        pack.blob(self.repo.secrets().chunk_key(), entry)
    }

    /// Drop every cached pack (their plaintext can be 16 MiB each).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }
}

//! Reading blobs back: find a chunk's pack in the index, fetch the pack (preferred region
//! first, falling back per object when missing or corrupt), decrypt it and verify every blob.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::{RepoError, Result};
use crate::pack::OpenPack;
use crate::repo::{check_stored_id, pack_name, Repository};
use crate::{Id, Index};

/// Fetch and open one pack. Needs the identity.
pub async fn fetch_pack(repo: &Arc<Repository>, id: Id) -> Result<Arc<OpenPack>> {
    let name = pack_name(&id);
    let identity = repo.identity("reading backup data")?.inner().clone();
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

    pub async fn read(&self, id: &Id) -> Result<Vec<u8>> {
        let (pack_id, entry) = self.index.get(id).ok_or_else(|| {
            RepoError::Corrupt(format!(
                "chunk {} is not in the index of any region (run `lifeboat verify`)",
                id.short()
            ))
        })?;
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
        pack.blob(self.repo.writer().chunk_key(), &entry)
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

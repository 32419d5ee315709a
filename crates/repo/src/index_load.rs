//! Loading a repository's metadata: every index file into the in-memory [`Index`], every
//! manifest into a [`SnapshotEntry`]. Objects are fetched [`FETCHES_IN_FLIGHT`] at a time
//! (each through [`Repository::get_checked`], so per-object fallback between regions and the
//! circuit breaker apply) and kept in the local [`MetaCache`](crate::meta_cache::MetaCache)
//! when the repository has one; results are consumed in name order, so the index is the
//! same whatever order the fetches finish in.
//!
//! Listing is unchanged: each prefix is listed in every available region; a region whose
//! listing fails is recorded (in [`Index::unlisted`], or the second result of
//! [`Repository::list_snapshots_detailed`]) and the others are used. The cache is pruned to
//! what the regions list only when every region answered.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use crate::backend::BackendError;
use crate::error::{RepoError, Result};
use crate::id::check_stored_id;
use crate::regions::RegionSet;
use crate::repo::Repository;
use crate::snapshot::SnapshotEntry;
use crate::{index, Id, Index};

/// Metadata objects fetched at once (reads go to the preferred region first, so this is
/// also the number in flight against one region).
pub const FETCHES_IN_FLIGHT: usize = 16;

// These live here, not in repo.rs, so that `repo` does not import this module (which
// imports `repo`): the crate's modules form no circle.
impl Repository {
    pub(crate) async fn load_index_once(&self, skip: &HashSet<Id>) -> Result<Index> {
        load_index(self, skip).await
    }

    /// Like [`list_snapshots`](Self::list_snapshots), and also the regions whose listing
    /// failed (their `regions` membership is unknown, not "absent").
    pub async fn list_snapshots_detailed(
        &self,
    ) -> Result<(Vec<SnapshotEntry>, Vec<(String, String)>)> {
        list_snapshots(self).await
    }

    /// A content-addressed metadata object (`index/<id>`, `snapshots/<id>`): from the local
    /// cache when it holds a good copy, else from the regions (then cached). The flag says
    /// whether the bytes came from the cache.
    pub async fn get_metadata(&self, name: &str) -> Result<(Bytes, bool)> {
        if let Some(bytes) = self.meta_cache().and_then(|c| c.get(name)) {
            return Ok((bytes, true));
        }
        Ok((self.fetch_metadata(name).await?, false))
    }

    /// Fetch a metadata object from the regions (never the cache) and cache it.
    async fn fetch_metadata(&self, name: &str) -> Result<Bytes> {
        let id = Id::from_object_name(name)?;
        let (bytes, _) = self
            .get_checked(name, |b| check_stored_id(b, &id, name))
            .await?;
        if let Some(c) = self.meta_cache() {
            c.put(name, &bytes);
        }
        Ok(bytes)
    }
}

/// Load every index file the available regions list (see [`Repository::load_index`]),
/// leaving out the packs in `skip`.
pub(crate) async fn load_index(repo: &Repository, skip: &HashSet<Id>) -> Result<Index> {
    let mut names: BTreeMap<String, RegionSet> = BTreeMap::new();
    let (listed, failed) = repo.list_everywhere("index/").await?;
    for (i, objects) in listed {
        for o in objects {
            names.entry(o.name).or_default().insert(i);
        }
    }
    let mut index = Index::new();
    for (region, why) in &failed {
        if let Some(i) = repo.region_index(region) {
            index.mark_unlisted(i, why.clone());
        }
    }
    if let (Some(c), true) = (repo.meta_cache(), failed.is_empty()) {
        c.retain_listed("index/", &names.keys().cloned().collect());
    }
    let key = *repo.secrets().index_key();
    let mut files = stream::iter(names)
        .map(|(name, regions)| async move {
            let (bytes, _) = repo.get_metadata(&name).await?;
            let file = index::open_file(&key, &name, &bytes)?;
            Ok::<_, RepoError>((file, regions))
        })
        .buffered(FETCHES_IN_FLIGHT);
    while let Some(next) = files.next().await {
        let (file, regions) = next?;
        for region in regions.iter() {
            for (pack, entries) in file.packs.iter().filter(|(p, _)| !skip.contains(p)) {
                index.add_pack(*pack, entries, region)?;
            }
        }
    }
    index.compact();
    Ok(index)
}

/// Every snapshot the available regions list, oldest first, and the regions whose listing
/// failed (see [`Repository::list_snapshots_detailed`]).
pub(crate) async fn list_snapshots(
    repo: &Repository,
) -> Result<(Vec<SnapshotEntry>, Vec<(String, String)>)> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (listed, failed) = repo.list_everywhere("snapshots/").await?;
    for (i, objects) in listed {
        for o in objects {
            names
                .entry(o.name)
                .or_default()
                .push(repo.regions[i].name.clone());
        }
    }
    if let (Some(c), true) = (repo.meta_cache(), failed.is_empty()) {
        c.retain_listed("snapshots/", &names.keys().cloned().collect());
    }
    let mut manifests = stream::iter(names)
        .map(|(name, regions)| async move {
            let id = Id::from_object_name(&name)?;
            let (bytes, cached) = match repo.get_metadata(&name).await {
                Ok(got) => got,
                // Forgotten between the listing and the read: it is simply not a snapshot.
                Err(RepoError::Backend(BackendError::NotFound(_))) => return Ok(None),
                Err(e) => return Err(e),
            };
            let manifest = match repo.decrypt_manifest(&bytes, &name) {
                Ok(m) => m,
                // A cached copy whose header `keys rewrap` has since replaced (same name,
                // new recipients): the stored object is what this host can read.
                Err(e) if cached => {
                    tracing::debug!(object = %name, error = %e, "cached manifest not readable with this host's keys; fetching it again");
                    repo.decrypt_manifest(&repo.fetch_metadata(&name).await?, &name)?
                }
                Err(e) => return Err(e),
            };
            Ok(Some((id, manifest, regions)))
        })
        .buffered(FETCHES_IN_FLIGHT);
    let mut out = Vec::new();
    while let Some(next) = manifests.next().await {
        let Some((id, manifest, mut regions)) = next? else {
            continue;
        };
        regions.sort_by_key(|r| repo.region_index(r));
        out.push(SnapshotEntry {
            id,
            manifest,
            regions,
        });
    }
    out.sort_by_key(|s| {
        (
            s.manifest.time,
            s.manifest.committed_ns,
            s.manifest.end_time,
        )
    });
    Ok((out, failed))
}

//! Loading a repository's metadata: every index file into the in-memory [`Index`] (or, for
//! a restore, the compact [`LookupIndex`], built straight from the files), every manifest
//! into a [`SnapshotEntry`]. Objects are fetched [`FETCHES_IN_FLIGHT`] at a time
//! (each through [`Repository::get_checked`], so per-object fallback between regions and the
//! circuit breaker apply) and kept in the local [`MetaCache`](crate::meta_cache::MetaCache)
//! when the repository has one; results are consumed in name order, so the index is the
//! same whatever order the fetches finish in. The fetches only fetch: each file is opened,
//! judged and parsed by the consumer, one at a time, and dropped once its packs are added,
//! so at most one parsed file is held beside the index being built.
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
use crate::index_lookup::{LookupBuilder, LookupIndex};
use crate::pack::PackEntry;
use crate::regions::RegionSet;
use crate::repo::Repository;
use crate::sign::Verdict;
use crate::snapshot::SnapshotEntry;
use crate::{index, Id, Index};

/// Metadata objects fetched at once (reads go to the preferred region first, so this is
/// also the number in flight against one region).
pub const FETCHES_IN_FLIGHT: usize = 16;

// These live here, not in repo.rs, so that `repo` does not import this module (which
// imports `repo`): the crate's modules form no circle.
impl Repository {
    pub(crate) async fn load_index_once(
        &self,
        skip: &HashSet<Id>,
        for_dedup: bool,
    ) -> Result<Index> {
        let mut index = Index::new();
        load_into(self, skip, for_dedup, &mut index).await?;
        index.compact();
        Ok(index)
    }

    /// The restore's compact index ([`LookupIndex`]) of every index file the available
    /// regions list, revoked writers' files included (readers verify every chunk). Built
    /// straight from the files; a file removed while loading (prune) starts it again, as
    /// [`load_index`](Self::load_index) does.
    pub async fn load_lookup_index(&self) -> Result<LookupIndex> {
        let mut attempt = 0;
        loop {
            let mut builder = LookupBuilder::new();
            match load_into(self, &HashSet::new(), false, &mut builder).await {
                Err(RepoError::Backend(BackendError::NotFound(name))) if attempt < 5 => {
                    tracing::debug!(object = %name, "index file removed while loading (prune); listing again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(builder.finish()),
            }
        }
    }

    /// Like [`list_snapshots`](Self::list_snapshots), and also the regions whose listing
    /// failed (their `regions` membership is unknown, not "absent").
    pub async fn list_snapshots_detailed(
        &self,
    ) -> Result<(Vec<SnapshotEntry>, Vec<(String, String)>)> {
        list_snapshots(self).await
    }

    /// A content-addressed metadata object (`index/<id>`, `snapshots/<id>`): from the local
    /// cache when it holds a good copy, else from the regions (then cached). The second
    /// result is the region it came from (`None`: the cache).
    pub async fn get_metadata(&self, name: &str) -> Result<(Bytes, Option<usize>)> {
        if let Some(bytes) = self.meta_cache().and_then(|c| c.get(name)) {
            return Ok((bytes, None));
        }
        let (bytes, from) = self.fetch_metadata(name).await?;
        Ok((bytes, Some(from)))
    }

    /// Fetch a metadata object from the regions (never the cache) and cache it.
    async fn fetch_metadata(&self, name: &str) -> Result<(Bytes, usize)> {
        let id = Id::from_object_name(name)?;
        let (bytes, from) = self
            .get_checked(name, |b| check_stored_id(b, &id, name))
            .await?;
        if let Some(c) = self.meta_cache() {
            c.put(name, &bytes);
        }
        Ok((bytes, from))
    }

    /// Where a metadata object was read, for messages: a region, or the local cache.
    fn source_name(&self, from: Option<usize>) -> String {
        match from {
            Some(i) => self.regions[i].name.clone(),
            None => "(this host's metadata cache)".to_string(),
        }
    }
}

/// What index files load into: the full [`Index`] or the restore's [`LookupBuilder`].
pub(crate) trait IndexSink {
    fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) -> Result<()>;
    fn mark_unlisted(&mut self, region: usize, why: String);
}

impl IndexSink for Index {
    fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) -> Result<()> {
        Index::add_pack(self, pack, entries, region)
    }
    fn mark_unlisted(&mut self, region: usize, why: String) {
        Index::mark_unlisted(self, region, why)
    }
}

impl IndexSink for LookupBuilder {
    fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) -> Result<()> {
        LookupBuilder::add_pack(self, pack, entries, region)
    }
    /// A restore reads what is listed; nothing is written to an unlisted region.
    fn mark_unlisted(&mut self, _: usize, _: String) {}
}

/// Load every index file the available regions list (see [`Repository::load_index`]) into
/// `sink`, leaving out the packs in `skip`, and for deduplication (`for_dedup`) the index
/// files of revoked writers. Each file goes through the codec, [`index::open_file`], which
/// judges its signature.
pub(crate) async fn load_into(
    repo: &Repository,
    skip: &HashSet<Id>,
    for_dedup: bool,
    sink: &mut impl IndexSink,
) -> Result<()> {
    let mut names: BTreeMap<String, RegionSet> = BTreeMap::new();
    let (listed, failed) = repo.list_everywhere("index/").await?;
    for (i, objects) in listed {
        for o in objects {
            names.entry(o.name).or_default().insert(i);
        }
    }
    for (region, why) in &failed {
        if let Some(i) = repo.region_index(region) {
            sink.mark_unlisted(i, why.clone());
        }
    }
    if let (Some(c), true) = (repo.meta_cache(), failed.is_empty()) {
        c.retain_listed("index/", &names.keys().cloned().collect());
    }
    let key = *repo.secrets().index_key();
    let mut fetched = stream::iter(names)
        .map(|(name, regions)| async move {
            let (bytes, from) = repo.get_metadata(&name).await?;
            Ok::<_, RepoError>((name, bytes, from, regions))
        })
        .buffered(FETCHES_IN_FLIGHT);
    let mut revoked: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(next) = fetched.next().await {
        let (name, bytes, from, regions) = next?;
        let file =
            match index::open_file(&key, repo.trust(), &name, &repo.source_name(from), &bytes) {
                // Refused from the cache: judge the stored copy, so the refusal names its region.
                Err(RepoError::Untrusted(_)) if from.is_none() => {
                    let (bytes, from) = repo.fetch_metadata(&name).await?;
                    index::open_file(&key, repo.trust(), &name, &repo.regions[from].name, &bytes)?
                }
                other => other?,
            };
        drop(bytes);
        if let Verdict::Revoked(w) = &file.verdict {
            *revoked.entry(w.clone()).or_default() += 1;
            if for_dedup {
                continue;
            }
        }
        for region in regions.iter() {
            for (pack, entries) in file.packs.iter().filter(|(p, _)| !skip.contains(p)) {
                sink.add_pack(*pack, entries, region)?;
            }
        }
    }
    if for_dedup {
        for (w, n) in revoked {
            tracing::warn!(writer = %w, index_files = n, "index files signed by a revoked writer are not trusted for deduplication: their chunks are stored again");
        }
    }
    Ok(())
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
            let (bytes, from) = match repo.get_metadata(&name).await {
                Ok(got) => got,
                // Forgotten between the listing and the read: it is simply not a snapshot.
                Err(RepoError::Backend(BackendError::NotFound(_))) => return Ok(None),
                Err(e) => return Err(e),
            };
            let judged = match repo.judge_manifest(&bytes, &name, &repo.source_name(from)) {
                // A cached copy whose header `keys rewrap` has since replaced (same name,
                // new recipients): the stored object is what this host can read.
                // (A refused cached copy is judged again as stored, to name its region.)
                Err(e) if from.is_none() => {
                    tracing::debug!(object = %name, error = %e, "cached manifest not readable with this host's keys; fetching it again");
                    let (bytes, from) = repo.fetch_metadata(&name).await?;
                    repo.judge_manifest(&bytes, &name, &repo.source_name(Some(from)))
                }
                other => other,
            };
            let (manifest, verdict) = match judged {
                Ok(j) => j,
                // A writer added after this manifest was written cannot open it (it was not
                // a recipient then): not this host's to list.
                Err(RepoError::WrongKey(_)) if !repo.has_identity() => {
                    tracing::debug!(object = %name, "manifest not readable with this writer key (written before this writer was added)");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if let Verdict::Revoked(w) = verdict {
                return Ok(Some(Err((id, w, repo.source_name(from)))));
            }
            Ok(Some(Ok((id, manifest, regions))))
        })
        .buffered(FETCHES_IN_FLIGHT);
    let mut out = Vec::new();
    let mut revoked = Vec::new();
    while let Some(next) = manifests.next().await {
        let (id, manifest, mut regions) = match next? {
            None => continue,
            Some(Err(r)) => {
                revoked.push(r);
                continue;
            }
            Some(Ok(m)) => m,
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
    if !revoked.is_empty() {
        let writers: std::collections::BTreeSet<&str> =
            revoked.iter().map(|(_, w, _)| w.as_str()).collect();
        tracing::warn!(
            snapshots = revoked.len(),
            writers = %writers.into_iter().collect::<Vec<_>>().join(", "),
            "snapshots signed by a revoked writer are not trusted: left out (restoring one is refused)"
        );
    }
    *repo.revoked.lock().unwrap_or_else(|p| p.into_inner()) = revoked;
    Ok((out, failed))
}

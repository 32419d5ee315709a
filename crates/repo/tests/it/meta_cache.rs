//! Index files and manifests fetched concurrently and kept in the local metadata cache
//! (issue #13 point 2): the cache serves verified copies of the stored bytes, a damaged
//! entry is dropped and fetched again, the cache can be deleted, and it follows what the
//! regions list.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_repo::backend::fault::Op;
use lifeboat_repo::backend::{Backend, BackendResult, DynBackend, ObjectInfo};
use lifeboat_repo::index_load::FETCHES_IN_FLIGHT;
use lifeboat_repo::{Id, Index, Region, Repository};

use crate::fixture::{backup, files_tree, random_bytes, Chunking, TestRepo};

/// Several snapshots, each with its own index file.
async fn repo_with_snapshots(t: &TestRepo, n: u64) {
    let repo = t.open().await;
    for s in 0..n {
        let files = vec![(format!("f{s}"), random_bytes(s + 1, 40_000))];
        backup(&repo, &[0, 1], files_tree(files, Chunking::of(&repo)))
            .await
            .expect("backup");
    }
}

async fn open_cached(t: &TestRepo, dir: &Path) -> Repository {
    let mut repo = Repository::open(t.regions(), t.keyring(), None)
        .await
        .expect("open");
    repo.set_meta_cache(dir.to_path_buf());
    repo
}

/// Every chunk's locations, comparable between two loads.
fn contents(index: &Index) -> BTreeMap<Id, Vec<(Id, u32, u32)>> {
    index
        .chunks()
        .map(|(id, _)| {
            let locs = index
                .locations(&id, None)
                .into_iter()
                .map(|(p, e, _)| (p, e.offset, e.length))
                .collect();
            (id, locs)
        })
        .collect()
}

fn entries(dir: &Path, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(kind))
        .map(|d| {
            d.flatten()
                .map(|e| format!("{kind}/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn gets(t: &TestRepo) -> u64 {
    t.faults.iter().map(|f| f.calls(Op::Get)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_cache_serves_verified_stored_bytes_and_refetches_damage() {
    let t = TestRepo::new(2).await;
    repo_with_snapshots(&t, 3).await;
    let uncached = t.open().await;
    let want = contents(&uncached.load_index().await.unwrap());
    let want_snaps: Vec<Id> = uncached
        .list_snapshots()
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(want_snaps.len(), 3);

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("meta");
    let repo = open_cached(&t, &cache).await;
    assert_eq!(contents(&repo.load_index().await.unwrap()), want);
    repo.list_snapshots().await.unwrap();
    // The cache holds exactly the listed objects, byte for byte as stored (never plaintext).
    let mut listed = t.names(0, "index/");
    listed.sort();
    assert_eq!(entries(&cache, "index"), listed);
    assert_eq!(entries(&cache, "snapshots").len(), 3);
    for name in entries(&cache, "index")
        .into_iter()
        .chain(entries(&cache, "snapshots"))
    {
        let cached = std::fs::read(cache.join(&name)).unwrap();
        assert_eq!(
            cached,
            t.stores[0].raw(&name).unwrap().to_vec(),
            "{name} is cached as stored"
        );
    }

    // A second process with the same cache reads no index file or manifest from a region.
    let before = gets(&t);
    let again = open_cached(&t, &cache).await;
    let opened = gets(&t) - before;
    assert_eq!(contents(&again.load_index().await.unwrap()), want);
    let snaps = again.list_snapshots().await.unwrap();
    assert_eq!(snaps.iter().map(|s| s.id).collect::<Vec<_>>(), want_snaps);
    assert_eq!(gets(&t) - before, opened, "everything came from the cache");
    let stats = &again.meta_cache().unwrap().stats;
    assert_eq!(
        stats.hits.load(Ordering::Relaxed),
        (listed.len() + 3) as u64
    );

    // Damage: one entry truncated, one with a flipped byte, one replaced by another's bytes.
    let idx = entries(&cache, "index");
    let snap = entries(&cache, "snapshots");
    let p = cache.join(&idx[0]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let p = cache.join(&snap[0]);
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    std::fs::copy(cache.join(&snap[2]), cache.join(&snap[1])).unwrap();
    let damaged = open_cached(&t, &cache).await;
    assert_eq!(contents(&damaged.load_index().await.unwrap()), want);
    let snaps = damaged.list_snapshots().await.unwrap();
    assert_eq!(snaps.iter().map(|s| s.id).collect::<Vec<_>>(), want_snaps);
    let stats = &damaged.meta_cache().unwrap().stats;
    assert_eq!(
        stats.dropped.load(Ordering::Relaxed),
        3,
        "every damaged entry"
    );
    for name in [&idx[0], &snap[0], &snap[1]] {
        assert_eq!(
            std::fs::read(cache.join(name)).unwrap(),
            t.stores[0].raw(name).unwrap().to_vec(),
            "{name} fetched again and re-cached"
        );
    }

    // Safe to delete: the whole cache gone, everything is fetched and cached again.
    std::fs::remove_dir_all(&cache).unwrap();
    let fresh = open_cached(&t, &cache).await;
    assert_eq!(contents(&fresh.load_index().await.unwrap()), want);
    assert_eq!(fresh.list_snapshots().await.unwrap().len(), 3);
    assert_eq!(entries(&cache, "index"), listed);

    // Pruned to what every region lists: a forgotten snapshot leaves the cache too.
    for s in &t.stores {
        s.delete(&snap[0]).await.unwrap();
    }
    let after = open_cached(&t, &cache).await;
    assert_eq!(after.list_snapshots().await.unwrap().len(), 2);
    assert!(!entries(&cache, "snapshots").contains(&snap[0]));
    assert_eq!(entries(&cache, "snapshots").len(), 2);

    // A backup through a cached repository leaves its own index files and manifest there.
    let writer = Arc::new(open_cached(&t, &cache).await);
    let files = vec![("new".to_string(), random_bytes(99, 40_000))];
    let out = backup(&writer, &[0, 1], files_tree(files, Chunking::of(&writer)))
        .await
        .unwrap();
    let mut listed = t.names(0, "index/");
    listed.sort();
    assert_eq!(entries(&cache, "index"), listed);
    assert!(entries(&cache, "snapshots").contains(&format!("snapshots/{}", out.snapshot)));
}

/// A backend that counts the gets in flight at once, each taking a little while.
#[derive(Debug)]
struct InFlight {
    inner: DynBackend,
    now: AtomicUsize,
    max: Arc<AtomicUsize>,
}

#[async_trait]
impl Backend for InFlight {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        self.inner.put(name, data).await
    }
    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = self.inner.get(name, range).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        got
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.inner.delete(name).await
    }
    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.inner.head(name).await
    }
    fn describe(&self) -> String {
        "in-flight counter".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_files_and_manifests_are_fetched_concurrently_and_bounded() {
    let t = TestRepo::new(2).await;
    let snapshots = FETCHES_IN_FLIGHT as u64 + 4;
    repo_with_snapshots(&t, snapshots).await;
    let max = Arc::new(AtomicUsize::new(0));
    let regions: Vec<Region> = t
        .regions()
        .into_iter()
        .map(|r| Region {
            name: r.name,
            backend: Arc::new(InFlight {
                inner: r.backend,
                now: AtomicUsize::new(0),
                max: max.clone(),
            }) as DynBackend,
        })
        .collect();
    let repo = Repository::open(regions, t.keyring(), None).await.unwrap();
    for what in ["index", "manifests"] {
        max.store(0, Ordering::SeqCst);
        if what == "index" {
            let index = repo.load_index().await.unwrap();
            assert!(index.chunk_count() as u64 >= snapshots);
        } else {
            assert_eq!(repo.list_snapshots().await.unwrap().len() as u64, snapshots);
        }
        let seen = max.load(Ordering::SeqCst);
        assert!(
            seen > 1 && seen <= FETCHES_IN_FLIGHT,
            "{what}: {seen} gets in flight at most"
        );
    }
}

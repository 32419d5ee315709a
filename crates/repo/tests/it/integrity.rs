//! Nothing lost across regions (issue #10): every location of a chunk in the index, healing
//! only the regions that lack a chunk, a region whose `index/` cannot be listed is down for
//! the backup, replicate and verify racing a backup, plans kept out of regions they do not
//! store in, outages that are not "corrupt", and panicked pipeline threads.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_repo::backend::fault::Op;
use lifeboat_repo::backend::{Backend, BackendResult, DynBackend, Fault, ObjectInfo};
use lifeboat_repo::chunker::chunk_stream;
use lifeboat_repo::pack::BlobKind;
use lifeboat_repo::replicate::{replicate, ReplicateOptions};
use lifeboat_repo::verify::{verify, PlanRegions, VerifyOptions, VerifyReport};
use lifeboat_repo::writer::Stage;
use lifeboat_repo::{Cancel, Progress, Region, RepoError, Repository};

use crate::fixture::{backup, files_tree, random_bytes, restore, Chunking, TestRepo};

/// About 3 MiB of incompressible files: three or four 1 MiB packs.
fn source(seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|i| (format!("file-{i}"), random_bytes(seed * 10 + i, 1 << 20)))
        .collect()
}

async fn verify_with(repo: &Arc<Repository>, plan_regions: PlanRegions) -> VerifyReport {
    verify_reading(repo, plan_regions, Some(100.0)).await
}

async fn verify_reading(
    repo: &Arc<Repository>,
    plan_regions: PlanRegions,
    read_data_percent: Option<f64>,
) -> VerifyReport {
    verify(
        repo,
        &VerifyOptions {
            read_data_percent,
            plan_regions,
        },
        Arc::new(Progress::default()),
        Cancel::new(),
    )
    .await
    .expect("verify runs")
}

#[tokio::test]
async fn degraded_then_healthy_backup_heals_only_the_missing_region_and_restores_around_a_bad_pack()
{
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    t.faults[1].inject(Fault::Down);
    let first = backup(&repo, &[0, 1], files_tree(source(1), c))
        .await
        .expect("degraded backup commits");
    assert!(first.is_degraded(), "{:?}", first.failed);
    let degraded_packs = t.names(0, "data/");
    assert!(degraded_packs.len() >= 3, "{degraded_packs:?}");
    assert!(t.names(1, "data/").is_empty());

    t.clear_faults();
    let repo = t.open().await;
    let second = backup(&repo, &[0, 1], files_tree(source(1), c))
        .await
        .expect("healthy backup");
    assert!(!second.is_degraded(), "{:?}", second.failed);
    assert_eq!(
        t.names(0, "data/"),
        degraded_packs,
        "no chunk is uploaded again to the region that already holds it"
    );
    assert!(
        !t.names(1, "data/").is_empty(),
        "the region that missed the first backup gets the chunks"
    );
    assert_eq!(
        second.manifest.stats.new_chunks,
        first.manifest.stats.new_chunks
    );

    let index = repo.load_index().await.expect("index");
    assert!(index.multi_location_count() > 0);
    let report = verify_with(&repo, PlanRegions::new()).await;
    // The first snapshot is still only in r0 (replicate was not run): that is the only
    // problem there may be.
    let other: Vec<_> = report
        .problems
        .iter()
        .filter(|p| !p.message.contains("snapshot missing"))
        .collect();
    assert!(other.is_empty(), "{other:?}");

    // Every degraded pack damaged in r0: the second snapshot restores from r1's packs.
    for p in &degraded_packs {
        t.faults[0].inject(Fault::CorruptGets { prefix: p.clone() });
    }
    let dir = tempfile::tempdir().unwrap();
    restore(&repo, second.manifest.root, dir.path(), false)
        .await
        .expect("restore falls back to the chunks' other packs");
    for (name, data) in source(1) {
        assert!(std::fs::read(dir.path().join(name)).unwrap() == data);
    }
}

#[tokio::test]
async fn a_failed_index_listing_makes_the_region_down_for_the_backup() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    backup(&repo, &[0, 1], files_tree(source(2), c))
        .await
        .expect("first backup");
    let before = (t.names(0, "data/"), t.names(1, "data/"));
    t.faults[1].inject(Fault::FailNext {
        op: Some(Op::List),
        count: 1,
        permanent: false,
    });
    let out = backup(&repo, &[0, 1], files_tree(source(2), c))
        .await
        .expect("backup commits where it can");
    assert!(out.is_degraded(), "the unlisted region is named as failed");
    assert_eq!(out.complete, vec!["r0".to_string()]);
    assert!(
        out.failed[0].0 == "r1" && out.failed[0].1.contains("index/"),
        "{:?}",
        out.failed
    );
    assert_eq!(
        (t.names(0, "data/"), t.names(1, "data/")),
        before,
        "nothing is uploaded again to either region"
    );
}

/// A backend whose listings take `delay` before they look: a slow listing widens the gap
/// between replicate's listings, the window a concurrent backup must not slip through.
#[derive(Debug)]
struct SlowList(DynBackend, Duration);

#[async_trait]
impl Backend for SlowList {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        self.0.put(name, data).await
    }
    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        self.0.get(name, range).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        tokio::time::sleep(self.1).await;
        self.0.list(prefix).await
    }
    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.0.delete(name).await
    }
    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.0.head(name).await
    }
    fn describe(&self) -> String {
        "slow-list".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_racing_backups_never_copies_an_index_without_its_packs() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    for f in &t.faults {
        f.inject(Fault::Delay(Duration::from_millis(2)));
    }
    let mut slow = t.regions();
    slow[0].backend = Arc::new(SlowList(slow[0].backend.clone(), Duration::from_millis(40)));
    let slow_repo = Arc::new(
        Repository::open(slow.clone(), t.keyring(), None)
            .await
            .expect("open"),
    );
    const ROUNDS: u64 = 16;
    for i in 0..ROUNDS {
        // A backup to r0 only (r1 "down" for it) while replicate copies r0 into r1.
        let files: Vec<(String, Vec<u8>)> = vec![(format!("f{i}"), random_bytes(500 + i, 300_000))];
        let b = {
            let repo = repo.clone();
            tokio::spawn(async move { backup(&repo, &[0], files_tree(files, c)).await })
        };
        // And verify, through the slow listings, at the same time.
        let v = {
            let repo = slow_repo.clone();
            tokio::spawn(async move { verify_reading(&repo, PlanRegions::new(), None).await })
        };
        tokio::time::sleep(Duration::from_millis(i * 11 % 60)).await;
        let opts = ReplicateOptions {
            keys: (i % 2 == 0).then(|| repo.metadata_keys()),
            ..Default::default()
        };
        replicate(
            &slow,
            &opts,
            Arc::new(Progress::default()),
            Cancel::new(),
            &|_| {},
        )
        .await
        .expect("replicate");
        b.await.unwrap().expect("backup");
        let during: Vec<_> = v
            .await
            .unwrap()
            .problems
            .into_iter()
            .filter(|p| !p.message.contains("snapshot missing"))
            .collect();
        assert!(during.is_empty(), "verify during round {i}: {during:?}");
        // Every index file replicate put in r1 names only packs r1 holds.
        let report = verify_reading(&repo, PlanRegions::new(), None).await;
        let bad: Vec<_> = report
            .problems
            .iter()
            .filter(|p| !p.message.contains("snapshot missing"))
            .collect();
        assert!(bad.is_empty(), "round {i}: {bad:?}");
    }
    t.clear_faults();
    replicate(
        &t.regions(),
        &Default::default(),
        Arc::new(Progress::default()),
        Cancel::new(),
        &|_| {},
    )
    .await
    .expect("final replicate");
    let report = verify_with(&repo, PlanRegions::new()).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.regions["r1"].snapshots, ROUNDS);
}

#[tokio::test]
async fn a_plan_kept_in_one_region_is_never_copied_to_the_other() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    backup(&repo, &[0], files_tree(source(3), c))
        .await
        .expect("backup of a one-region plan");
    let plans: PlanRegions = BTreeMap::from([("test".to_string(), ["r0".to_string()].into())]);
    let report = replicate(
        &t.regions(),
        &ReplicateOptions {
            keys: Some(repo.metadata_keys()),
            plan_regions: plans.clone(),
        },
        Arc::new(Progress::default()),
        Cancel::new(),
        &|_| {},
    )
    .await
    .expect("replicate");
    assert!(report.ok(), "{report:?}");
    for prefix in ["snapshots/", "index/", "data/"] {
        assert!(t.names(1, prefix).is_empty(), "{prefix} copied into r1");
    }
    let v = verify_with(&repo, plans.clone()).await;
    assert!(
        v.ok(),
        "not reported missing where the plan does not store: {:?}",
        v.problems
    );

    // Without the writer key, replicate cannot tell the plans apart and refuses.
    let err = replicate(
        &t.regions(),
        &ReplicateOptions {
            keys: None,
            plan_regions: plans,
        },
        Arc::new(Progress::default()),
        Cancel::new(),
        &|_| {},
    )
    .await
    .expect_err("needs the key");
    assert!(err.to_string().contains("writer key"), "{err}");
}

#[tokio::test]
async fn an_outage_is_unavailable_and_a_bad_copy_is_corrupt() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let out = backup(&repo, &[0, 1], files_tree(source(4), c))
        .await
        .expect("backup");
    let index = repo.load_index().await.expect("index");
    let reader = lifeboat_repo::reader::BlobReader::new(repo.clone(), Arc::new(index));

    for f in &t.faults {
        f.inject(Fault::Down);
    }
    let err = reader.read(&out.manifest.root).await.expect_err("down");
    assert!(
        matches!(err, RepoError::Unavailable(_)),
        "an outage is not corruption: {err}"
    );
    assert!(
        err.to_string().contains("r0") && err.to_string().contains("r1"),
        "{err}"
    );

    t.clear_faults();
    let repo = t.open().await;
    let reader = lifeboat_repo::reader::BlobReader::new(
        repo.clone(),
        Arc::new(repo.load_index().await.unwrap()),
    );
    for f in &t.faults {
        f.inject(Fault::CorruptGets {
            prefix: "data/".into(),
        });
    }
    let err = reader.read(&out.manifest.root).await.expect_err("corrupt");
    assert!(matches!(err, RepoError::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn a_region_failing_repeatedly_is_demoted_for_the_rest_of_the_operation() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let out = backup(&repo, &[0, 1], files_tree(source(5), c))
        .await
        .expect("backup");
    let repo = t.open().await;
    let calls = |i: usize| t.faults[i].calls(Op::Get) + t.faults[i].calls(Op::List);
    let before = calls(0);
    t.faults[0].inject(Fault::Down);
    let dir = tempfile::tempdir().unwrap();
    restore(&repo, out.manifest.root, dir.path(), false)
        .await
        .expect("restore from r1");
    assert!(repo.is_demoted(0));
    let log = repo.read_log.lock().unwrap();
    assert_eq!(log.demoted.len(), 1);
    assert_eq!(log.demoted[0].region, "r0");
    // Reads stopped going to r0 after the breaker opened: a few failures, not one per object.
    let gets = calls(0) - before;
    assert!(
        gets <= lifeboat_repo::repo::BREAKER_FAILURES as u64 + 1,
        "{gets} calls to the demoted region"
    );
    assert!(log.per_region["r1"] >= 4);
}

/// A backend that panics on every put under `data/`.
#[derive(Debug)]
struct PanicOnPut(DynBackend);

#[async_trait]
impl Backend for PanicOnPut {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        if name.starts_with("data/") {
            panic!("injected panic on put {name}");
        }
        self.0.put(name, data).await
    }
    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        self.0.get(name, range).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.0.delete(name).await
    }
    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.0.head(name).await
    }
    fn describe(&self) -> String {
        "panic-on-put".into()
    }
}

#[tokio::test]
async fn a_panicked_pipeline_thread_fails_the_backup_before_any_manifest() {
    for stage in [Stage::Compressor, Stage::Packer, Stage::Uploader] {
        let t = TestRepo::new(2).await;
        let repo = t.open().await;
        let c = Chunking::of(&repo);
        let files = source(6);
        let res = backup(&repo, &[0, 1], move |w| {
            w.inject_panic(stage);
            for (_, data) in &files {
                chunk_stream(&data[..], &c.params, c.seed, |chunk| {
                    w.add(BlobKind::Data, chunk).map(|_| ())
                })?;
            }
            w.add(BlobKind::Tree, b"not reached when a stage died".to_vec())
        })
        .await;
        let err = res.expect_err("a panicked thread fails the backup");
        assert!(err.to_string().contains("panicked"), "{stage:?}: {err}");
        for i in 0..2 {
            assert!(
                t.names(i, "snapshots/").is_empty(),
                "{stage:?}: manifest in r{i}"
            );
        }
    }

    // A backend that panics inside put: the same.
    let t = TestRepo::new(1).await;
    let regions = vec![Region {
        name: "r0".into(),
        backend: Arc::new(PanicOnPut(Arc::new(t.faults[0].clone()))),
    }];
    let repo = Arc::new(
        Repository::open(regions, t.keyring(), None)
            .await
            .expect("open"),
    );
    let c = Chunking::of(&repo);
    let err = backup(&repo, &[0], files_tree(source(7), c))
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("panic"), "{err}");
    assert!(t.names(0, "snapshots/").is_empty());
}

/// `verify --read-data` checks every index entry against the pack's own table: an index
/// file that puts a chunk at the wrong offset, or gives it the wrong length, is damage (the
/// CLI exits 4 on damage) named by pack and chunk, though the pack itself is intact.
#[tokio::test]
async fn read_data_finds_an_index_entry_whose_offset_or_length_is_not_the_packs() {
    use lifeboat_repo::{index, repo::pack_name, Id};
    for field in ["offset", "length"] {
        let t = TestRepo::new(1).await;
        let repo = t.open().await;
        let c = Chunking::of(&repo);
        backup(&repo, &[0], files_tree(source(7), c))
            .await
            .expect("backup");
        let clean = verify_with(&repo, PlanRegions::new()).await;
        assert!(clean.ok(), "{:?}", clean.problems);
        assert!(clean.regions["r0"].packs_read >= 3, "{:?}", clean.regions);

        // Rewrite one index file with one entry moved (sealed with the real key, so only the
        // comparison with the pack's table can catch it).
        let b = repo.regions[0].backend.clone();
        let key = *repo.secrets().index_key();
        let name = t.names(0, "index/").remove(0);
        let sealed = b.get(&name, None).await.expect("index file");
        let mut file = index::open_file(&key, &name, &sealed).expect("opens");
        let (pack, entries) = file
            .packs
            .iter_mut()
            .find(|(_, e)| !e.is_empty())
            .expect("a pack with chunks");
        let e = &mut entries[0];
        match field {
            "offset" => e.offset += 1,
            _ => e.length -= 1,
        }
        let (pack, chunk) = (*pack, e.id);
        let said = format!("is at offset {} length {}", e.offset, e.length);
        let plan = file.plan.clone().unwrap_or_else(|| "test".into());
        let resealed = index::encode(&key, &plan, &file.packs).expect("encode");
        let new_name = format!("index/{}", Id::of_stored(&resealed));
        b.put(&new_name, Bytes::from(resealed)).await.expect("put");
        b.delete(&name).await.expect("delete");

        let repo = t.open().await;
        let report = verify_with(&repo, PlanRegions::new()).await;
        assert!(report.damaged(), "{field}: {:?}", report.problems);
        let p = report
            .problems
            .iter()
            .find(|p| p.message.contains(&format!("chunk {}", chunk.short())))
            .unwrap_or_else(|| {
                panic!("{field}: no problem names the chunk: {:?}", report.problems)
            });
        assert_eq!(p.object, pack_name(&pack), "{p:?}");
        assert!(
            p.message.contains(&format!("pack {}", pack.short()))
                && p.message.contains(&new_name)
                && p.message.contains(&said),
            "{p:?}"
        );
        assert!(!p.unreachable);
    }
}

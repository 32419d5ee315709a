//! The backup pipeline under faults (DESIGN.md, principles 2 and 5, and the write order):
//! a region down for a whole backup or dying in the middle of one gives a *degraded*
//! snapshot that is complete elsewhere, while the failed region stays a valid repository
//! without it; a crash after the index but before the manifest shows no snapshot, and the
//! next backup reuses every pack already indexed.

use std::sync::Arc;

use lifeboat_repo::backend::fault::Op;
use lifeboat_repo::backend::Fault;
use lifeboat_repo::verify::{verify, VerifyOptions};
use lifeboat_repo::{Cancel, Progress, Repository};

use crate::fixture::{
    backup, backup_with_index, files_tree, random_bytes, restore, Chunking, TestRepo,
};

/// About 6 MiB of incompressible files: six 1 MiB packs, two index files.
fn source() -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|i| (format!("file-{i}"), random_bytes(100 + i, 2 << 20)))
        .collect()
}

fn source_bytes(files: &[(String, Vec<u8>)]) -> u64 {
    files.iter().map(|(_, d)| d.len() as u64).sum()
}

async fn verify_report(repo: &Arc<Repository>) -> lifeboat_repo::verify::VerifyReport {
    verify(
        repo,
        &VerifyOptions {
            read_data_percent: Some(100.0),
            ..Default::default()
        },
        Arc::new(Progress::default()),
        Cancel::new(),
    )
    .await
    .expect("verify runs")
}

/// Restore `root` and compare each file with the source.
async fn assert_restores(
    repo: &Arc<Repository>,
    root: lifeboat_repo::Id,
    files: &[(String, Vec<u8>)],
) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    restore(repo, root, &target, false).await.expect("restore");
    for (name, data) in files {
        assert!(
            std::fs::read(target.join(name)).unwrap() == *data,
            "{name} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_down_for_the_whole_backup_gives_a_degraded_snapshot() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let index = Arc::new(repo.load_index().await.unwrap());
    // The outage starts once the backup is under way (a region down at open time is
    // simply not a target).
    t.faults[1].inject(Fault::Down);
    let files = source();
    let c = Chunking::of(&repo);
    let out = backup_with_index(&repo, index, &[0, 1], files_tree(files.clone(), c))
        .await
        .expect("the backup completes in the region that is up");
    assert!(out.is_degraded());
    assert_eq!(out.complete, ["r0"]);
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert_eq!(out.failed[0].0, "r1");
    assert!(out.failed[0].1.contains("down"), "{:?}", out.failed);
    assert_eq!(t.names(0, "snapshots/").len(), 1);
    assert!(
        t.names(1, "snapshots/").is_empty(),
        "no manifest in the failed region"
    );
    assert!(t.names(1, "index/").is_empty());

    // Back up: the snapshot is listed as held by r0 only, r1 lacks it (and nothing else).
    t.clear_faults();
    let repo = t.open().await;
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].regions, ["r0"]);
    let report = verify_report(&repo).await;
    assert!(!report.problems.is_empty());
    for p in &report.problems {
        assert_eq!(p.region, "r1", "{report:?}");
        assert!(p.message.contains("snapshot missing"), "{report:?}");
    }
    assert_restores(&repo, snaps[0].manifest.root, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_dying_mid_backup_keeps_it_a_valid_repository() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    // r1 stores two packs, then every later pack upload fails.
    t.faults[1].inject(Fault::FailPutsMatching {
        prefix: "data/".into(),
        after: 2,
    });
    let files = source();
    let out = backup(
        &repo,
        &[0, 1],
        files_tree(files.clone(), Chunking::of(&repo)),
    )
    .await
    .expect("completes in r0");
    assert!(out.is_degraded());
    assert_eq!(out.complete, ["r0"]);
    assert_eq!(out.failed[0].0, "r1");
    assert!(t.names(1, "snapshots/").is_empty());
    assert!(
        t.names(1, "data/").len() >= 2,
        "r1 got packs before failing"
    );
    assert!(t.names(0, "data/").len() > t.names(1, "data/").len());

    // r1 is still a consistent repository: every index file it holds names packs it holds,
    // and every pack it has reads back intact. Its only problem is the missing snapshot.
    t.clear_faults();
    let repo = t.open().await;
    let report = verify_report(&repo).await;
    assert!(!report.problems.is_empty());
    for p in &report.problems {
        assert_eq!(p.region, "r1", "{report:?}");
        assert!(p.message.contains("snapshot missing"), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_index_and_manifest_shows_nothing_and_packs_are_reused() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    for f in &t.faults {
        f.inject(Fault::FailPutsMatching {
            prefix: "snapshots/".into(),
            after: 0,
        });
    }
    let files = source();
    let total = source_bytes(&files);
    let err = backup(
        &repo,
        &[0, 1],
        files_tree(files.clone(), Chunking::of(&repo)),
    )
    .await
    .expect_err("no manifest could be written");
    assert!(err.to_string().contains("manifest"), "{err}");
    for i in 0..2 {
        assert!(t.names(i, "snapshots/").is_empty(), "r{i}");
        assert!(
            !t.names(i, "index/").is_empty(),
            "r{i}: index written before the manifest"
        );
        assert!(t.names(i, "data/").len() >= 6, "r{i}: packs written first");
    }

    t.clear_faults();
    let repo = t.open().await;
    assert!(
        repo.list_snapshots().await.unwrap().is_empty(),
        "no partial snapshot"
    );
    let packs_before = t.names(0, "data/").len();

    let out = backup(
        &repo,
        &[0, 1],
        files_tree(files.clone(), Chunking::of(&repo)),
    )
    .await
    .expect("the next backup commits");
    assert!(!out.is_degraded());
    let stats = &out.manifest.stats;
    assert!(
        stats.stored_bytes < total / 100 && stats.new_bytes < total / 100,
        "the indexed packs are reused: {stats:?} for {total} B of data"
    );
    assert!(
        t.names(0, "data/").len() <= packs_before + 1,
        "at most a tree pack added"
    );
    for i in 0..2 {
        assert_eq!(t.names(i, "snapshots/").len(), 1, "r{i}");
    }
    assert_restores(&repo, out.manifest.root, &files).await;
    assert!(verify_report(&repo).await.ok());
}

/// Reads fall back per object to another region on error (DESIGN.md, regions); listing a
/// region is a read too. Here r0 answers `get` but every `list` fails — a role missing
/// `s3:ListBucket`, or an outage that starts after the repository was opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_failure_in_one_region_falls_back_to_the_other() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let files = source();
    let out = backup(
        &repo,
        &[0, 1],
        files_tree(files.clone(), Chunking::of(&repo)),
    )
    .await
    .unwrap();

    let repo = t.open().await;
    t.faults[0].inject(Fault::FailNext {
        op: Some(Op::List),
        count: u32::MAX,
        permanent: true,
    });
    let snaps = repo
        .list_snapshots()
        .await
        .expect("snapshots listed from r1");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, out.snapshot);
    assert_restores(&repo, snaps[0].manifest.root, &files).await;
    // verify names the region it cannot list instead of failing outright.
    let report = verify_report(&repo).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.region == "r0" && p.message.contains("cannot list")),
        "{:?}",
        report.problems
    );
}

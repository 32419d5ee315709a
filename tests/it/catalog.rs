//! The catalog on SQLite and on a real PostgreSQL (started by `pg`): the same tests, the
//! same migrations.

use lifeboat::catalog::audit::{verify, AuditEntry};
use lifeboat::catalog::evidence::{Drill, RestoreTest};
use lifeboat::catalog::{Catalog, Phase, RunEnd, RunKind};
use lifeboat_repo::snapshot::{Manifest, SourceInfo, Stats, MANIFEST_VERSION};

use crate::pg;

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/sub/dir/catalog.db", dir.path().display())
}

fn manifest(plan: &str, time: i64) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        plan: plan.into(),
        host: "h".into(),
        time,
        end_time: time + 5,
        committed_ns: 0,
        source: SourceInfo {
            kind: "dir".into(),
            location: "/srv".into(),
        },
        root: lifeboat_repo::Id::of_stored(b"root"),
        stats: Stats {
            files: 3,
            bytes: 1000,
            ..Default::default()
        },
        probes: Default::default(),
        unreadable: vec![],
        sealed: false,
        details_error: None,
    }
}

async fn exercise(url: &str) {
    let c = Catalog::open(url).await.expect("open");
    // Migrations are idempotent: a second open is fine.
    let c2 = Catalog::open(url).await.expect("reopen");

    // Runs.
    let id = c
        .begin_run(RunKind::Backup, Some("app"), Some(1_000))
        .await
        .unwrap();
    let mut end = RunEnd {
        bytes: 42,
        snapshot: Some("abc".into()),
        attempts: 2,
        ..Default::default()
    };
    end.regions.insert("west".into(), "ok".into());
    end.regions.insert("east".into(), "timeout".into());
    end.phase = Some(Phase::Degraded);
    c.end_run(&id, &end).await.unwrap();
    let runs = c2
        .runs(Some("app"), Some(RunKind::Backup), 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].phase, Phase::Degraded);
    assert_eq!(runs[0].bytes, 42);
    assert_eq!(runs[0].attempts, 2);
    assert_eq!(runs[0].scheduled_for, Some(1_000));
    assert_eq!(
        runs[0].regions.get("east").map(String::as_str),
        Some("timeout")
    );
    assert!(c.runs(Some("other"), None, 10).await.unwrap().is_empty());

    // Snapshots per region.
    c.put_snapshot("s1", &manifest("app", 100), "west", true)
        .await
        .unwrap();
    c.put_snapshot("s1", &manifest("app", 100), "east", false)
        .await
        .unwrap();
    c.put_snapshot("s2", &manifest("app", 200), "west", true)
        .await
        .unwrap();
    c.put_snapshot("s2", &manifest("app", 200), "east", true)
        .await
        .unwrap();
    c.put_snapshot("s1", &manifest("app", 100), "east", true)
        .await
        .unwrap();
    c.mark_verified("s2", "east", 300).await.unwrap();
    let snaps = c.snapshots(Some("app")).await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0].id, "s1");
    assert_eq!(
        snaps[0].present,
        vec!["east".to_string(), "west".to_string()]
    );
    assert_eq!(snaps[1].verified, vec!["east".to_string()]);
    assert_eq!(snaps[1].bytes, 1000);

    // Leases: one holder at a time; an expired lease is taken over.
    assert!(c.acquire_lease("app", "a", 10, 20).await.unwrap());
    assert!(!c2.acquire_lease("app", "b", 15, 25).await.unwrap());
    assert!(
        c.acquire_lease("app", "a", 15, 30).await.unwrap(),
        "holder renews"
    );
    assert!(
        c2.acquire_lease("app", "b", 31, 40).await.unwrap(),
        "expired: taken over"
    );
    c2.release_lease("app", "b").await.unwrap();
    assert!(c.acquire_lease("app", "a", 32, 40).await.unwrap());

    // Occurrences are claimed once.
    assert!(c.claim_occurrence("app", 500, "r1", "a").await.unwrap());
    assert!(!c2.claim_occurrence("app", 500, "r2", "b").await.unwrap());
    assert!(c2.claim_occurrence("app", 600, "r3", "b").await.unwrap());
    assert_eq!(c.last_occurrence("app").await.unwrap(), Some(600));
    assert_eq!(c.last_occurrence("none").await.unwrap(), None);

    // Evidence.
    let (none, _) = c.last_restore_tests("app").await.unwrap();
    assert!(none.is_none());
    for (at, passed) in [(10, true), (20, false)] {
        c.record_restore_test(&RestoreTest {
            id: String::new(),
            plan: "app".into(),
            snapshot: "s1".into(),
            region: "east".into(),
            started_at: at,
            duration_ms: 1500,
            bytes: 1000,
            passed,
            detail: None,
        })
        .await
        .unwrap();
    }
    let (last, passed) = c.last_restore_tests("app").await.unwrap();
    assert_eq!(last.unwrap().started_at, 20);
    assert_eq!(passed.unwrap().started_at, 10);
    c.record_drill(&Drill {
        id: String::new(),
        runbook: "region-loss".into(),
        plan: None,
        started_at: 50,
        ended_at: Some(60),
        passed: true,
    })
    .await
    .unwrap();
    assert_eq!(
        c.last_passed_drill("app").await.unwrap().unwrap().ended_at,
        Some(60)
    );

    // Audit chain.
    for i in 0..3 {
        c.audit(AuditEntry {
            command: format!("backup app #{i}"),
            target: Some("app".into()),
            outcome: "ok".into(),
            detail: None,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let events = c2.audit_events(None).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(verify(&events, None).is_empty());
    assert!(!events[0].os_user.is_empty());
    // Modified entry.
    sqlx::query("UPDATE audit_events SET outcome = 'failed' WHERE seq = 2")
        .execute(c.pool())
        .await
        .unwrap();
    let problems = verify(&c.audit_events(None).await.unwrap(), None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].seq, 2);
    // Deleted entry.
    sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(c.pool())
        .await
        .unwrap();
    let problems = verify(&c.audit_events(None).await.unwrap(), None);
    assert!(
        problems
            .iter()
            .any(|p| p.seq == 3 && p.message.contains("missing")),
        "{problems:?}"
    );

    // A writer host records sealed details as "(sealed)"; a restore host's sync fills in the
    // location, and a later writer sync does not seal it again.
    let mut sealed = manifest("ledger", 5);
    sealed.source.location = lifeboat_repo::snapshot::SEALED.into();
    sealed.sealed = true;
    let mut open = sealed.clone();
    open.source.location = "postgres://db/orders".into();
    open.sealed = false;
    for m in [&sealed, &open, &sealed] {
        c.put_snapshot("sealed1", m, "west", true).await.unwrap();
    }
    let rows = c.snapshots(Some("ledger")).await.unwrap();
    assert_eq!(rows[0].source, "dir:postgres://db/orders", "{:?}", rows[0]);
}

#[tokio::test]
async fn catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    exercise(&url).await;
    assert!(
        dir.path().join("sub/dir/catalog.db").exists(),
        "created on first use"
    );
}

#[tokio::test]
async fn catalog_on_postgres() {
    exercise(&pg::database()).await;
}

/// Many processes' worth of pools racing: each occurrence is claimed exactly once, each
/// lease has one holder, and concurrent audit appends keep one unbroken chain.
async fn race(url: &str) {
    let mut catalogs = Vec::new();
    for _ in 0..4 {
        catalogs.push(Catalog::open(url).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, c) in catalogs.iter().cycle().take(16).enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let claimed = c
                .claim_occurrence("app", 777, &format!("r{i}"), &format!("h{i}"))
                .await
                .unwrap();
            let leased = c
                .acquire_lease("app", &format!("h{i}"), 0, 100)
                .await
                .unwrap();
            c.audit(AuditEntry {
                command: format!("task {i}"),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap();
            (claimed, leased)
        }));
    }
    let mut claims = 0;
    let mut leases = 0;
    for t in tasks {
        let (c, l) = t.await.unwrap();
        claims += usize::from(c);
        leases += usize::from(l);
    }
    assert_eq!(claims, 1, "one claim wins");
    assert_eq!(leases, 1, "one lease holder");
    let events = catalogs[0].audit_events(None).await.unwrap();
    assert_eq!(events.len(), 16);
    assert!(verify(&events, None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_on_postgres() {
    race(&pg::database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    race(&sqlite_url(&dir)).await;
}

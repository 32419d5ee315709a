//! Unit tests of the rds orchestration against the scripted fake: waits through
//! `creating`/`copying`, copies that fail or time out, instances that never come up,
//! cancellation during a wait, quotas, retention and leftover scratch instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::Cancel;

use super::fake::Fake;
use super::wait::Waiter;
use super::*;
use lifeboat_repo::retention::Policy;

use crate::config::{
    InstanceSettings, Objectives, PlanConfig, RdsCopy, RdsSource, Retention, SourceConfig,
};

const WEST: &str = "us-west-2";
const EAST: &str = "us-east-2";

fn plan(retention: Retention) -> PlanConfig {
    let src = RdsSource {
        instance: "app-db".into(),
        region: WEST.into(),
        copy_to: vec![RdsCopy {
            region: EAST.into(),
            kms_key_id: "arn:aws:kms:us-east-2:123456789012:key/k".into(),
        }],
        restore: InstanceSettings {
            instance_class: Some("db.t4g.micro".into()),
            ..InstanceSettings::default()
        },
        tags: BTreeMap::new(),
        endpoint: None,
        probe_url: None,
        password: None,
        probes: Vec::new(),
        timeout: Duration::from_millis(400),
        poll_interval: Duration::from_millis(5),
    };
    PlanConfig {
        name: "app".into(),
        schedule: None,
        zone: None,
        regions: src.regions(),
        source: SourceConfig::Rds(Box::new(src)),
        objectives: Objectives::default(),
        retention,
        verify_schedule: None,
        prune_schedule: None,
        compression: None,
    }
}

fn waiter(timeout_ms: u64) -> Waiter {
    Waiter {
        poll: Duration::from_millis(5),
        timeout: Duration::from_millis(timeout_ms),
        cancel: Cancel::new(),
        report: None,
    }
}

fn managed(region: &str, id: &str, status: &str) -> Snapshot {
    Snapshot {
        id: id.into(),
        arn: format!("arn:aws:rds:{region}:1:snapshot:{id}"),
        region: region.into(),
        instance: "app-db".into(),
        status: status.into(),
        percent: None,
        created: None,
        kind: "manual".into(),
        tags: snapshot_tags("app", "r0", &BTreeMap::new()),
    }
}

#[tokio::test]
async fn backup_waits_through_creating_and_copying() {
    let fake = Arc::new(Fake::new());
    fake.snapshots_go(WEST, &["creating", "creating", "available"]);
    fake.snapshots_go(EAST, &["pending", "copying", "copying", "available"]);
    let r = backup(
        fake.clone(),
        &plan(Retention::default()),
        "run1",
        &waiter(2000),
        None,
    )
    .await
    .unwrap();
    assert!(!r.is_degraded(), "{:?}", r.regions);
    assert_eq!(r.regions.len(), 2);
    let calls = fake.calls();
    assert!(
        calls[0].starts_with("create_snapshot us-west-2 lifeboat-app-"),
        "{calls:?}"
    );
    // The copy runs in the destination and names the source by ARN.
    assert!(
        calls[1].starts_with("copy_snapshot us-east-2 lifeboat-app-")
            && calls[1].contains("arn:aws:rds:us-west-2:"),
        "{calls:?}"
    );
    let ids = fake.snapshot_ids(EAST);
    assert_eq!(ids, vec![r.snapshot.clone()]);
}

#[tokio::test]
async fn refused_copy_makes_the_run_degraded_with_the_reason() {
    let fake = Arc::new(Fake::new());
    fake.refuse_copies_into(EAST, "KMSKeyNotAccessibleFault: key disabled");
    let r = backup(
        fake.clone(),
        &plan(Retention::default()),
        "run1",
        &waiter(2000),
        None,
    )
    .await
    .unwrap();
    assert!(r.is_degraded());
    assert!(r.regions[WEST].is_available());
    let east = &r.regions[EAST];
    assert_eq!(east.state, "failed");
    assert!(
        east.detail
            .as_deref()
            .unwrap()
            .contains("KMSKeyNotAccessibleFault"),
        "{east:?}"
    );
}

#[tokio::test]
async fn a_copy_that_fails_in_aws_is_failed_not_waited_for() {
    let fake = Arc::new(Fake::new());
    fake.snapshots_go(EAST, &["copying", "failed"]);
    let r = backup(
        fake,
        &plan(Retention::default()),
        "run1",
        &waiter(5000),
        None,
    )
    .await
    .unwrap();
    assert!(r.is_degraded());
    assert!(
        r.regions[EAST]
            .detail
            .as_deref()
            .unwrap()
            .contains("RDS reports it failed"),
        "{:?}",
        r.regions
    );
    assert!(
        r.duration < Duration::from_secs(2),
        "a failed copy ends the wait at once"
    );
}

#[tokio::test]
async fn a_copy_that_never_finishes_times_out_degraded() {
    let fake = Arc::new(Fake::new());
    fake.snapshots_go(EAST, &["copying"]);
    let r = backup(
        fake,
        &plan(Retention::default()),
        "run1",
        &waiter(150),
        None,
    )
    .await
    .unwrap();
    assert!(r.is_degraded());
    let detail = r.regions[EAST].detail.clone().unwrap();
    assert!(
        detail.contains("still copying") && detail.contains("timeout"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_source_snapshot_that_never_becomes_available_fails_the_run() {
    let fake = Arc::new(Fake::new());
    fake.snapshots_go(WEST, &["creating"]);
    let e = backup(
        fake.clone(),
        &plan(Retention::default()),
        "run1",
        &waiter(100),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.chain()
            .any(|c| c.downcast_ref::<super::wait::TimedOut>().is_some()),
        "{e:#}"
    );
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("copy_snapshot")),
        "no copy of an unfinished snapshot"
    );
}

#[tokio::test]
async fn quotas_are_named_before_calling_aws() {
    let fake = Arc::new(Fake::new());
    for i in 0..MANUAL_SNAPSHOT_QUOTA {
        fake.add_snapshot(managed(WEST, &format!("other-{i}"), "available"));
    }
    let e = backup(
        fake.clone(),
        &plan(Retention::default()),
        "run1",
        &waiter(100),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("AWS allows 100 per region"),
        "{e:#}"
    );
    assert!(fake.calls().is_empty());

    let fake = Arc::new(Fake::new());
    for i in 0..COPIES_IN_FLIGHT_QUOTA {
        fake.add_snapshot(managed(EAST, &format!("copy-{i}"), "copying"));
    }
    let r = backup(
        fake.clone(),
        &plan(Retention::default()),
        "run1",
        &waiter(500),
        None,
    )
    .await
    .unwrap();
    assert!(
        r.regions[EAST]
            .detail
            .as_deref()
            .unwrap()
            .contains("AWS allows 20 at once"),
        "{:?}",
        r.regions
    );
    assert!(!fake.calls().iter().any(|c| c.starts_with("copy_snapshot")));
}

#[tokio::test]
async fn retention_deletes_only_old_tagged_complete_snapshots() {
    let fake = Arc::new(Fake::new());
    for day in 1..=4 {
        let id = format!("lifeboat-app-2026110{day}-030000");
        fake.add_snapshot(managed(WEST, &id, "available"));
        fake.add_snapshot(managed(EAST, &id, "available"));
    }
    // Not lifeboat's: same name shape, no tags.
    let mut foreign = managed(WEST, "lifeboat-app-20261001-030000", "available");
    foreign.tags.clear();
    fake.add_snapshot(foreign);
    // Another plan's.
    let mut other = managed(WEST, "lifeboat-other-20261001-030000", "available");
    other.tags.insert(TAG_PLAN.into(), "other".into());
    fake.add_snapshot(other);
    // Still copying into the east: its west source must stay too.
    fake.add_snapshot(managed(EAST, "lifeboat-app-20261020-030000", "copying"));
    fake.add_snapshot(managed(WEST, "lifeboat-app-20261020-030000", "available"));
    let p = plan(Retention {
        policy: Policy {
            keep_last: Some(2),
            ..Default::default()
        },
        grace: None,
    });
    let (gone, problems) = retention::apply(fake.as_ref(), &p, None).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut gone: Vec<String> = gone
        .iter()
        .map(|e| format!("{}/{}", e.region, e.snapshot))
        .collect();
    gone.sort();
    assert_eq!(
        gone,
        vec![
            "us-east-2/lifeboat-app-20261101-030000",
            "us-east-2/lifeboat-app-20261102-030000",
            "us-west-2/lifeboat-app-20261101-030000",
            "us-west-2/lifeboat-app-20261102-030000"
        ]
    );
    let west = fake.snapshot_ids(WEST);
    assert!(
        west.contains(&"lifeboat-app-20261001-030000".to_string()),
        "untagged kept"
    );
    assert!(
        west.contains(&"lifeboat-other-20261001-030000".to_string()),
        "other plan kept"
    );
    assert!(
        west.contains(&"lifeboat-app-20261020-030000".to_string()),
        "source of a running copy kept"
    );
    assert!(
        fake.snapshot_ids(EAST)
            .contains(&"lifeboat-app-20261020-030000".to_string()),
        "in-progress copy kept"
    );
}

#[test]
fn keep_policy_daily_and_last() {
    let items: Vec<(String, i64)> = [
        (1, 0),
        (2, 3600),
        (3, 86_400),
        (4, 2 * 86_400 + 10),
        (5, 2 * 86_400 + 20),
    ]
    .iter()
    .map(|(i, t)| (format!("s{i}"), 1_700_006_400 + t))
    .collect();
    let daily = retention::keep(
        &Policy {
            keep_daily: Some(2),
            ..Default::default()
        },
        &items,
    );
    let mut d: Vec<_> = daily.into_iter().collect();
    d.sort();
    assert_eq!(d, vec!["s3", "s5"]);
    let last = retention::keep(
        &Policy {
            keep_last: Some(1),
            keep_daily: Some(1),
            ..Default::default()
        },
        &items,
    );
    assert_eq!(last.len(), 1);
    assert!(
        retention::keep(&Policy::default(), &items).len() == 5,
        "no rule keeps all"
    );
}

#[tokio::test]
async fn restore_test_passes_and_deletes_the_scratch_instance() {
    let fake = Arc::new(Fake::new());
    fake.add_snapshot(managed(WEST, "lifeboat-app-20261101-030000", "available"));
    fake.instances_go(&["creating", "backing-up", "available"]);
    let o = restore::restore_test(
        fake.clone(),
        &plan(Retention::default()),
        None,
        "latest",
        "r1",
        &waiter(2000),
    )
    .await
    .unwrap();
    assert!(o.passed, "{o:?}");
    assert_eq!(o.snapshot, "lifeboat-app-20261101-030000");
    assert!(
        fake.instance_ids(WEST).is_empty(),
        "scratch instance deleted"
    );
    assert!(fake
        .calls()
        .iter()
        .any(|c| c.starts_with("restore_instance us-west-2 lifeboat-drill-app-")));
}

#[tokio::test]
async fn an_instance_that_never_becomes_available_fails_the_test_and_is_deleted() {
    let fake = Arc::new(Fake::new());
    fake.add_snapshot(managed(WEST, "lifeboat-app-20261101-030000", "available"));
    fake.instances_go(&["creating"]);
    let o = restore::restore_test(
        fake.clone(),
        &plan(Retention::default()),
        None,
        "latest",
        "r1",
        &waiter(100),
    )
    .await
    .unwrap();
    assert!(!o.passed);
    assert!(o.differences[0].contains("still creating"), "{o:?}");
    assert!(
        fake.instance_ids(WEST).is_empty(),
        "deleted after the timeout"
    );

    fake.instances_go(&["creating", "incompatible-parameters"]);
    let o = restore::restore_test(
        fake.clone(),
        &plan(Retention::default()),
        None,
        "latest",
        "r2",
        &waiter(5000),
    )
    .await
    .unwrap();
    assert!(
        !o.passed && o.differences[0].contains("incompatible-parameters"),
        "{o:?}"
    );
    assert!(fake.instance_ids(WEST).is_empty());
}

#[tokio::test]
async fn cancellation_during_the_wait_still_deletes_the_instance() {
    let fake = Arc::new(Fake::new());
    fake.add_snapshot(managed(WEST, "lifeboat-app-20261101-030000", "available"));
    fake.instances_go(&["creating"]);
    let w = waiter(60_000);
    let cancel = w.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(80)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let e = restore::restore_test(
        fake.clone(),
        &plan(Retention::default()),
        None,
        "latest",
        "r1",
        &w,
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        crate::outcome::code_for(&e),
        crate::outcome::INTERRUPTED,
        "{e:#}"
    );
    assert!(
        fake.instance_ids(WEST).is_empty(),
        "deleted although interrupted"
    );
    assert!(fake
        .calls()
        .iter()
        .any(|c| c.starts_with("delete_instance")));
}

#[tokio::test]
async fn leftovers_of_a_killed_run_are_removed_by_the_next_and_nothing_else() {
    let fake = Arc::new(Fake::new());
    fake.add_snapshot(managed(WEST, "lifeboat-app-20261101-030000", "available"));
    let leftover = Instance {
        id: "lifeboat-drill-app-20261101-040000".into(),
        status: "available".into(),
        address: None,
        port: None,
        tags: scratch_tags("app", "old", &BTreeMap::new()),
    };
    fake.add_instance(EAST, leftover.clone());
    // Same name shape but not tagged as scratch: a real database, never touched.
    fake.add_instance(
        EAST,
        Instance {
            id: "lifeboat-drill-app-prod".into(),
            tags: BTreeMap::new(),
            ..leftover
        },
    );
    let o = restore::restore_test(
        fake.clone(),
        &plan(Retention::default()),
        None,
        "latest",
        "r1",
        &waiter(2000),
    )
    .await
    .unwrap();
    assert!(
        o.passed
            && o.checked
                .contains("removed leftovers: us-east-2/lifeboat-drill-app-20261101-040000"),
        "{o:?}"
    );
    assert_eq!(
        fake.instance_ids(EAST),
        vec!["lifeboat-drill-app-prod".to_string()]
    );
}

#[test]
fn probe_url_takes_the_instance_endpoint_when_it_names_no_host() {
    let inst = Instance {
        id: "x".into(),
        status: "available".into(),
        address: Some("db.example".into()),
        port: Some(5433),
        tags: BTreeMap::new(),
    };
    assert_eq!(
        restore::probe_url_for("postgres://probe@/app", &inst).unwrap(),
        "postgres://probe@db.example:5433/app"
    );
    assert_eq!(
        restore::probe_url_for("postgres://probe@127.0.0.1:6000/app", &inst).unwrap(),
        "postgres://probe@127.0.0.1:6000/app"
    );
}

#[test]
fn names_fit_rds_identifiers() {
    let t = 1_764_620_000;
    let s = snapshot_name("app-db", t);
    assert!(
        s.starts_with("lifeboat-app-db-") && !s.contains("--") && s.len() == 31,
        "{s}"
    );
    assert_eq!(catalog::time_of("app-db", &s), Some(t));
    let i = scratch_name(&"a".repeat(30), t);
    assert!(
        crate::config::valid_identifier(&i),
        "{i} must be a valid instance identifier"
    );
}

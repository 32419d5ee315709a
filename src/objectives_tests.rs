use std::time::Duration;

use super::*;
use crate::config::{Objectives, Retention, SourceConfig};

const H: i64 = 3600;
const D: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

fn plan() -> PlanConfig {
    PlanConfig {
        name: "app".into(),
        schedule: Some("0 3 * * *".into()),
        zone: None,
        regions: vec!["west".into(), "east".into()],
        source: SourceConfig::Dir {
            path: "/srv".into(),
            exclude: vec![],
            one_file_system: false,
            read_threads: None,
        },
        objectives: Objectives::default(),
        retention: Retention::default(),
        verify_schedule: None,
        prune_schedule: None,
        compression: None,
    }
}

fn snap(id: &str, time: i64, present: &[&str], bytes: i64) -> SnapshotRow {
    SnapshotRow {
        id: id.into(),
        plan: "app".into(),
        time,
        end_time: time + 60,
        committed_ns: 0,
        host: "h".into(),
        source: "dir:/srv".into(),
        files: 1,
        bytes,
        stored_bytes: bytes,
        present: present.iter().map(|s| s.to_string()).collect(),
        missing: vec![],
        verified: vec![],
        partial: false,
        first_seen: None,
    }
}

fn test(duration_s: i64, bytes: i64, passed: bool) -> RestoreTest {
    RestoreTest {
        id: "t".into(),
        plan: "app".into(),
        snapshot: "s".into(),
        region: "east".into(),
        started_at: NOW - D,
        duration_ms: duration_s * 1000,
        bytes,
        passed,
        detail: None,
    }
}

fn drill_at(at: i64) -> Drill {
    Drill {
        id: "d".into(),
        runbook: "r".into(),
        plan: None,
        started_at: at,
        ended_at: Some(at),
        passed: true,
    }
}

fn healthy() -> PlanFacts {
    PlanFacts {
        snapshots: vec![snap("a", NOW - 2 * H, &["west", "east"], 1000)],
        last_restore_test: Some(test(600, 1000, true)),
        last_passed_restore_test: Some(test(600, 1000, true)),
        last_drill: Some(drill_at(NOW - 100 * D)),
        ..Default::default()
    }
}

#[test]
fn healthy_plan_is_ok() {
    let s = evaluate(&plan(), &healthy(), NOW);
    assert_eq!(s.level, Level::Ok, "{s:#?}");
    assert_eq!(s.rpo.age_seconds, Some(2 * H));
    assert_eq!(s.rto.projected_seconds, Some(600.0));
    assert!(s.regions.iter().all(|r| r.health == "ok"));
}

#[test]
fn rpo_counts_only_snapshots_complete_in_every_region() {
    let mut f = healthy();
    f.snapshots = vec![
        snap("old", NOW - 30 * H, &["west", "east"], 1000),
        snap("new", NOW - H, &["west"], 1000),
    ];
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.level, Level::Breach);
    assert_eq!(s.rpo.snapshot.as_deref(), Some("old"));
    assert_eq!(s.rpo.age_seconds, Some(30 * H));
    assert_eq!(s.regions[1].health, "degraded");
    // Within the RPO, a degraded newer snapshot is a warning.
    f.snapshots[0].time = NOW - 10 * H;
    assert_eq!(evaluate(&plan(), &f, NOW).rpo.level, Level::Warning);
    // No snapshot at all is a breach.
    f.snapshots.clear();
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.level, Level::Breach);
    assert_eq!(s.rpo.age_seconds, None);
}

#[test]
fn a_snapshot_dated_in_the_future_does_not_count_and_is_flagged() {
    let mut f = healthy();
    f.snapshots = vec![
        snap("old", NOW - 30 * H, &["west", "east"], 1000),
        snap("future", NOW + 3 * H, &["west", "east"], 1000),
    ];
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.snapshot.as_deref(), Some("old"), "{:?}", s.rpo);
    assert_eq!(s.rpo.level, Level::Breach);
    let note = s.rpo.note.unwrap();
    assert!(
        note.contains("snapshot future is dated 3h 0m in the future"),
        "{note}"
    );
    // Within the allowed skew it is believed.
    f.snapshots[1].time = NOW + CLOCK_SKEW;
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.snapshot.as_deref(), Some("future"));
    assert_eq!(s.rpo.level, Level::Ok, "{:?}", s.rpo);
    assert_eq!(s.rpo.age_seconds, Some(0));
    // Only a future snapshot: a warning on top of the breach, never "fresh".
    f.snapshots = vec![snap("future", NOW + 3 * H, &["west", "east"], 1000)];
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.level, Level::Breach);
    assert_eq!(s.rpo.age_seconds, None);
}

#[test]
fn rpo_age_uses_the_catalogs_first_sight_when_earlier() {
    let mut f = healthy();
    // The manifest says one hour ago; the catalog saw it 30 hours ago (a fast clock that
    // stays within the skew, or a manifest re-dated later).
    let mut s1 = snap("s1", NOW - H, &["west", "east"], 1000);
    s1.first_seen = Some(NOW - 30 * H);
    f.snapshots = vec![s1];
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.age_seconds, Some(30 * H));
    assert_eq!(s.rpo.level, Level::Breach);
    // Seen after its own time (the usual case: the catalog records it at commit): the
    // manifest's time counts.
    f.snapshots[0].first_seen = Some(NOW - H + 5);
    assert_eq!(evaluate(&plan(), &f, NOW).rpo.age_seconds, Some(H));
}

#[test]
fn a_partial_newest_snapshot_is_a_warning() {
    let mut f = healthy();
    f.snapshots.last_mut().unwrap().partial = true;
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rpo.level, Level::Warning);
    assert!(s.rpo.note.unwrap().contains("partial"));
}

#[test]
fn rto_projects_restore_time_at_current_size() {
    let mut f = healthy();
    // The data tripled since the test: 600 s becomes 1800 s, still under 2 h.
    f.snapshots[0].bytes = 3000;
    assert_eq!(
        evaluate(&plan(), &f, NOW).rto.projected_seconds,
        Some(1800.0)
    );
    assert_eq!(evaluate(&plan(), &f, NOW).rto.level, Level::Ok);
    // 13x: 7800 s > 7200 s.
    f.snapshots[0].bytes = 13_000;
    assert_eq!(evaluate(&plan(), &f, NOW).rto.level, Level::Breach);
    // 10x: 6000 s, over 80 % of the RTO.
    f.snapshots[0].bytes = 10_000;
    assert_eq!(evaluate(&plan(), &f, NOW).rto.level, Level::Warning);
    // No test: a warning that says so.
    f.last_restore_test = None;
    f.last_passed_restore_test = None;
    let s = evaluate(&plan(), &f, NOW);
    assert_eq!(s.rto.level, Level::Warning);
    assert!(s.rto.note.unwrap().contains("no restore test yet"));
}

#[test]
fn drill_cadence() {
    let mut f = healthy();
    f.last_drill = Some(drill_at(NOW - 366 * D));
    assert_eq!(evaluate(&plan(), &f, NOW).drill.level, Level::Breach);
    f.last_drill = Some(drill_at(NOW - 340 * D));
    assert_eq!(evaluate(&plan(), &f, NOW).drill.level, Level::Warning);
    f.last_drill = None;
    assert_eq!(evaluate(&plan(), &f, NOW).drill.level, Level::Warning);
    f.snapshots
        .insert(0, snap("first", NOW - 400 * D, &["west", "east"], 1));
    assert_eq!(evaluate(&plan(), &f, NOW).drill.level, Level::Breach);
}

#[test]
fn objectives_come_from_the_plan() {
    let mut p = plan();
    p.objectives.rpo = Duration::from_secs(3600);
    let s = evaluate(&p, &healthy(), NOW);
    assert_eq!(s.rpo.level, Level::Breach);
    assert_eq!(s.level, Level::Breach);
}

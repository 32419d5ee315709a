//! Recovery objectives: whether each plan keeps its promise (RPO, RTO, drill cadence), as a
//! pure function of what the catalog knows ([`PlanFacts`]) and the time, so every rule is
//! tested with made-up facts and a fixed clock.
//!
//! - **RPO age** = now − start time of the newest snapshot present in *every* region of the
//!   plan. Breach: older than the RPO, or no such snapshot. Warning: a newer snapshot is
//!   degraded or partial, or the last backup failed.
//! - **Clocks lie**: a snapshot dated more than [`CLOCK_SKEW`] in the future (a backup host
//!   whose clock runs fast, or a forged manifest) is never the newest for RPO and makes
//!   the plan a warning; a snapshot's time counts as the earlier of its manifest's time and
//!   when this catalog first saw it, so a fast clock cannot make old data look fresh.
//! - **RTO** = the newest passed restore test's duration, projected to the current size at
//!   that test's throughput. Breach: projection over the RTO. Warning: no restore test yet,
//!   the newest test failed, or the projection is over 80 % of the RTO.
//! - **Drill** = days since the newest passed drill. Breach: older than `drill_every`, or no
//!   drill although the plan's first snapshot is older than that. Warning: no drill yet, or
//!   one due within 30 days.
//! - **Key age** ([`key_age`]): per repository, not per plan: the current recipient epoch's
//!   age against the yearly rotation.

use serde::Serialize;

pub mod key_age;

use crate::catalog::evidence::{Drill, DrillSummary, RestoreTest};
use crate::catalog::{Catalog, Phase, RunKind, RunRecord, SnapshotRow};
use crate::config::{Config, PlanConfig};

const DRILL_WARN_AHEAD: i64 = 30 * 86_400;
/// How far in the future a manifest may be dated before it is not believed (seconds).
pub const CLOCK_SKEW: i64 = 300;

/// Why a snapshot dated `time` is not believed at `now`, or `None` when it is.
pub fn future_dated(time: i64, now: i64) -> Option<String> {
    (time > now + CLOCK_SKEW).then(|| {
        format!(
            "dated {} in the future (more than the {} allowed for clock skew): the backup host's clock is wrong, or the manifest is not genuine",
            human(time - now),
            human(CLOCK_SKEW)
        )
    })
}

/// `verify`'s warnings for manifests dated in the future, one per snapshot, naming it and
/// its regions.
pub fn future_warnings(
    snapshots: &[lifeboat_repo::snapshot::SnapshotEntry],
    now: i64,
) -> Vec<String> {
    snapshots
        .iter()
        .filter_map(|s| {
            future_dated(s.manifest.time, now).map(|why| {
                format!(
                    "snapshot {} of plan {} (host {}, in {}) is {why}; status does not count it for the RPO",
                    s.id.short(),
                    s.manifest.plan,
                    s.manifest.host,
                    s.regions.join(", ")
                )
            })
        })
        .collect()
}

/// The time a snapshot counts as taken: its manifest's, or when the catalog first saw it
/// if that is earlier.
pub fn trusted_time(s: &SnapshotRow) -> i64 {
    s.first_seen.map_or(s.time, |seen| seen.min(s.time))
}
const RTO_WARN_FRACTION: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Breach,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Breach => "breach",
        }
    }
}

/// What the catalog knows about one plan.
#[derive(Debug, Clone, Default)]
pub struct PlanFacts {
    /// The plan's snapshots, oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// The newest finished backup run.
    pub last_backup: Option<RunRecord>,
    /// The newest restore test, and the newest passed one.
    pub last_restore_test: Option<RestoreTest>,
    pub last_passed_restore_test: Option<RestoreTest>,
    pub last_drill: Option<Drill>,
    /// The newest drill covering the plan, whatever its result.
    pub newest_drill: Option<DrillSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RpoStatus {
    pub level: Level,
    pub target_seconds: u64,
    /// `None`: no snapshot is complete in every region.
    pub age_seconds: Option<i64>,
    pub snapshot: Option<String>,
    pub snapshot_time: Option<i64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RtoStatus {
    pub level: Level,
    pub target_seconds: u64,
    pub last_test_at: Option<i64>,
    pub last_test_seconds: Option<f64>,
    pub last_test_passed: Option<bool>,
    /// The restore time at the current size, at the last passed test's throughput.
    pub projected_seconds: Option<f64>,
    pub current_bytes: Option<i64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillStatus {
    pub level: Level,
    pub every_seconds: u64,
    pub last_at: Option<i64>,
    pub age_seconds: Option<i64>,
    pub note: Option<String>,
    /// The newest drill covering the plan (id, dates, result, achieved RTO), passed or not.
    pub last: Option<DrillSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionHealth {
    pub region: String,
    /// `ok`, `degraded` (lacks the newest snapshot) or `failing` (the last backup failed
    /// there).
    pub health: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStatus {
    pub plan: String,
    pub level: Level,
    pub rpo: RpoStatus,
    pub rto: RtoStatus,
    pub drill: DrillStatus,
    pub regions: Vec<RegionHealth>,
    pub last_backup: Option<LastBackup>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub phase: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

/// Read a plan's facts from the catalog.
pub async fn facts(catalog: &Catalog, plan: &str) -> anyhow::Result<PlanFacts> {
    let (last_restore_test, last_passed_restore_test) = catalog.last_restore_tests(plan).await?;
    Ok(PlanFacts {
        snapshots: catalog.snapshots(Some(plan)).await?,
        last_backup: catalog
            .last_run(
                plan,
                RunKind::Backup,
                &[Phase::Succeeded, Phase::Degraded, Phase::Failed],
            )
            .await?,
        last_restore_test,
        last_passed_restore_test,
        last_drill: catalog.last_passed_drill(plan).await?,
        newest_drill: catalog.last_drill(plan).await?,
    })
}

/// Every plan's status at `now`, in config order.
pub async fn status(
    config: &Config,
    catalog: &Catalog,
    now: i64,
) -> anyhow::Result<Vec<PlanStatus>> {
    let mut out = Vec::new();
    for plan in &config.plans {
        out.push(evaluate(plan, &facts(catalog, &plan.name).await?, now));
    }
    Ok(out)
}

pub fn evaluate(plan: &PlanConfig, facts: &PlanFacts, now: i64) -> PlanStatus {
    let rpo = rpo(plan, facts, now);
    let rto = rto(plan, facts);
    let drill = drill(plan, facts, now);
    let regions = regions(plan, facts);
    let level = rpo.level.max(rto.level).max(drill.level);
    PlanStatus {
        plan: plan.name.clone(),
        level,
        rpo,
        rto,
        drill,
        regions,
        last_backup: facts.last_backup.as_ref().map(|r| LastBackup {
            phase: r.phase.as_str().into(),
            started_at: r.started_at,
            ended_at: r.ended_at,
            error: r.error.clone(),
        }),
    }
}

fn rpo(plan: &PlanConfig, facts: &PlanFacts, now: i64) -> RpoStatus {
    let target = plan.objectives.rpo.as_secs();
    let believed = |s: &&SnapshotRow| future_dated(s.time, now).is_none();
    let complete = facts
        .snapshots
        .iter()
        .filter(believed)
        .filter(|s| s.complete_in(&plan.regions))
        .max_by_key(|s| (trusted_time(s), s.committed_ns));
    let newest = facts.snapshots.iter().rev().find(believed);
    let mut level = Level::Ok;
    let mut notes = Vec::new();
    for s in facts.snapshots.iter().filter(|s| !believed(s)) {
        level = Level::Warning;
        if let Some(why) = future_dated(s.time, now) {
            notes.push(format!(
                "snapshot {} is {why}; it does not count",
                short(&s.id)
            ));
        }
    }
    let age = complete.map(|s| (now - trusted_time(s)).max(0));
    match age {
        None => {
            level = Level::Breach;
            notes.push(if newest.is_some() {
                "no snapshot is complete in every region".to_string()
            } else {
                "no snapshot yet".to_string()
            });
        }
        Some(age) if age as u64 > target => {
            level = Level::Breach;
            notes.push(format!(
                "newest complete snapshot is {} old (RPO {})",
                human(age),
                human(target as i64)
            ));
        }
        Some(_) => {}
    }
    if let (Some(newest), Some(complete)) = (newest, complete) {
        if newest.id != complete.id {
            level = level.max(Level::Warning);
            notes.push("a newer snapshot is degraded (not in every region)".into());
        }
    }
    if let Some(partial) = newest.filter(|s| s.partial) {
        level = level.max(Level::Warning);
        notes.push(format!(
            "the newest snapshot {} is partial: some entries could not be read (`lifeboat snapshots --json` lists them)",
            short(&partial.id)
        ));
    }
    if let Some(run) = &facts.last_backup {
        if run.phase == Phase::Failed {
            level = level.max(Level::Warning);
            notes.push(format!(
                "last backup failed: {}",
                run.error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    RpoStatus {
        level,
        target_seconds: target,
        age_seconds: age,
        snapshot: complete.map(|s| s.id.clone()),
        snapshot_time: complete.map(trusted_time),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

fn rto(plan: &PlanConfig, facts: &PlanFacts) -> RtoStatus {
    let target = plan.objectives.rto.as_secs();
    let current_bytes = facts.snapshots.last().map(|s| s.bytes);
    let mut st = RtoStatus {
        level: Level::Ok,
        target_seconds: target,
        last_test_at: facts.last_restore_test.as_ref().map(|t| t.started_at),
        last_test_seconds: facts
            .last_restore_test
            .as_ref()
            .map(|t| t.duration_ms as f64 / 1000.0),
        last_test_passed: facts.last_restore_test.as_ref().map(|t| t.passed),
        projected_seconds: None,
        current_bytes,
        note: None,
    };
    let Some(passed) = &facts.last_passed_restore_test else {
        st.level = Level::Warning;
        st.note = Some("no restore test yet (run `lifeboat verify --restore`)".into());
        return st;
    };
    let secs = (passed.duration_ms as f64 / 1000.0).max(0.001);
    let projected = match current_bytes {
        Some(now_bytes) if passed.bytes > 0 => secs * now_bytes as f64 / passed.bytes as f64,
        _ => secs,
    };
    st.projected_seconds = Some(projected);
    if projected > target as f64 {
        st.level = Level::Breach;
        st.note = Some(format!(
            "projected restore {} exceeds RTO {}",
            human(projected as i64),
            human(target as i64)
        ));
    } else if projected > target as f64 * RTO_WARN_FRACTION {
        st.level = Level::Warning;
        st.note = Some(format!(
            "projected restore {} is over 80% of RTO {}",
            human(projected as i64),
            human(target as i64)
        ));
    }
    if facts.last_restore_test.as_ref().is_some_and(|t| !t.passed) {
        st.level = st.level.max(Level::Warning);
        st.note = Some("the newest restore test failed".into());
    }
    st
}

fn drill(plan: &PlanConfig, facts: &PlanFacts, now: i64) -> DrillStatus {
    let every = plan.objectives.drill_every.as_secs();
    let mut st = DrillStatus {
        level: Level::Ok,
        every_seconds: every,
        last_at: None,
        age_seconds: None,
        note: None,
        last: facts.newest_drill.clone(),
    };
    match &facts.last_drill {
        Some(d) => {
            let at = d.ended_at.unwrap_or(d.started_at);
            let age = (now - at).max(0);
            st.last_at = Some(at);
            st.age_seconds = Some(age);
            if age as u64 > every {
                st.level = Level::Breach;
                st.note = Some(format!("drill overdue: last passed {} ago", human(age)));
            } else if age + DRILL_WARN_AHEAD > every as i64 {
                st.level = Level::Warning;
                st.note = Some("drill due within 30 days".into());
            }
        }
        None => {
            let first = facts.snapshots.first().map(|s| s.time);
            if first.is_some_and(|f| (now - f) as u64 > every) {
                st.level = Level::Breach;
                st.note = Some("drill overdue: none passed since the first snapshot".into());
            } else {
                st.level = Level::Warning;
                st.note = Some(
                    "no DR drill recorded yet (run one: `lifeboat drill run runbooks/region-outage.toml`)".into(),
                );
            }
        }
    }
    if let Some(newest) = facts.newest_drill.as_ref().filter(|d| d.result != "passed") {
        let newer = facts
            .last_drill
            .as_ref()
            .is_none_or(|p| newest.started_at >= p.started_at);
        if newer {
            st.level = st.level.max(Level::Warning);
            st.note = Some(format!(
                "the newest drill {} {} (see `lifeboat drill report {}`)",
                newest.id, newest.result, newest.id
            ));
        }
    }
    st
}

fn regions(plan: &PlanConfig, facts: &PlanFacts) -> Vec<RegionHealth> {
    let newest = facts.snapshots.last();
    plan.regions
        .iter()
        .map(|region| {
            let failed = facts.last_backup.as_ref().and_then(|r| {
                r.regions
                    .get(region)
                    .filter(|outcome| outcome.as_str() != "ok")
            });
            let (health, detail) = if let Some(err) = failed {
                ("failing", Some(format!("last backup failed here: {err}")))
            } else if newest.is_some_and(|s| !s.present.contains(region)) {
                ("degraded", Some("lacks the newest snapshot".to_string()))
            } else if newest.is_none() {
                ("ok", Some("no snapshot yet".to_string()))
            } else {
                ("ok", None)
            };
            RegionHealth {
                region: region.clone(),
                health: health.into(),
                detail,
            }
        })
        .collect()
}

/// The first 8 characters of an id, as the CLI shows ids.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// "3d 4h", "25m", "12s".
pub fn human(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[path = "objectives_tests.rs"]
mod tests;

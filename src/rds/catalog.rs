//! RDS snapshots in the catalog: rows of the same `snapshots` table as repository
//! snapshots (id = the DB snapshot identifier, region = the AWS region, present = available
//! there), with a `state` (`creating`, `copying`, `failed`) and its `detail`, so `status`,
//! alerts and metrics treat an rds plan like every other. `catalog sync` rebuilds them from
//! `DescribeDBSnapshots`, keeping only snapshots tagged for the plan.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{source_of, Rds, Snapshot, SNAPSHOT_PREFIX};
use crate::catalog::{get_opt_str, get_str, Catalog};
use crate::config::{Config, PlanConfig, RdsSource};
use crate::host::now_secs as now;

/// A snapshot's state in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionState {
    /// `available`, `creating`, `copying` (or another RDS status), `failed`.
    pub state: String,
    pub detail: Option<String>,
}

impl RegionState {
    pub fn available() -> RegionState {
        RegionState {
            state: "available".into(),
            detail: None,
        }
    }
    pub fn pending(status: &str) -> RegionState {
        RegionState {
            state: status.into(),
            detail: None,
        }
    }
    pub fn failed(why: &str) -> RegionState {
        RegionState {
            state: "failed".into(),
            detail: Some(why.into()),
        }
    }
    pub fn is_available(&self) -> bool {
        self.state == "available"
    }

    /// From an RDS status.
    pub fn of_status(status: &str) -> RegionState {
        match status {
            "available" => RegionState::available(),
            "failed" | "error" | "incompatible-restore" | "incompatible-parameters" => {
                RegionState::failed(&format!("RDS reports it {status}"))
            }
            other => RegionState::pending(other),
        }
    }
}

/// What every row of one rds snapshot shares.
pub struct Row {
    plan: String,
    id: String,
    time: i64,
    source: String,
}

/// The `source` column of an rds snapshot: `rds:<instance>@<region>`.
pub fn source_column(src: &RdsSource) -> String {
    format!("rds:{}@{}", src.instance, src.region)
}

/// Is this catalog row an rds snapshot (not a repository one)?
pub fn is_rds_row(source: &str) -> bool {
    source.starts_with("rds:")
}

impl Row {
    pub fn new(plan: &str, id: &str, time: i64, src: &RdsSource) -> Row {
        Row {
            plan: plan.into(),
            id: id.into(),
            time,
            source: source_column(src),
        }
    }

    /// Insert or update the row of `region`.
    pub async fn put(&self, catalog: &Catalog, region: &str, state: &RegionState) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (id, region, plan, time, end_time, host, source, files, bytes, \
             stored_bytes, present, seen_at, committed_ns, state, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0, $8, $9, $10, $11, $12) \
             ON CONFLICT (id, region) DO UPDATE SET present = excluded.present, seen_at = excluded.seen_at, \
             state = excluded.state, detail = excluded.detail",
        )
        .bind(self.id.clone())
        .bind(region.to_string())
        .bind(self.plan.clone())
        .bind(self.time)
        .bind(self.time)
        .bind("rds".to_string())
        .bind(self.source.clone())
        .bind(i64::from(state.is_available()))
        .bind(now())
        .bind(self.time.saturating_mul(1_000_000_000))
        .bind(state.state.clone())
        .bind(state.detail.clone())
        .execute(catalog.pool())
        .await
        .context("catalog: record rds snapshot")?;
        Ok(())
    }
}

/// Per snapshot id and region, the state rows of `plan` carry (rds rows only).
pub async fn states(
    catalog: &Catalog,
    plan: &str,
) -> Result<BTreeMap<(String, String), RegionState>> {
    let rows = sqlx::query(
        "SELECT id, region, state, detail FROM snapshots WHERE plan = $1 AND state IS NOT NULL",
    )
    .bind(plan.to_string())
    .fetch_all(catalog.pool())
    .await
    .context("catalog: rds snapshot states")?;
    let mut out = BTreeMap::new();
    for row in &rows {
        out.insert(
            (get_str(row, "id")?, get_str(row, "region")?),
            RegionState {
                state: get_opt_str(row, "state")?.unwrap_or_default(),
                detail: get_opt_str(row, "detail")?,
            },
        );
    }
    Ok(out)
}

/// Forget the row of one snapshot in one region (after retention deleted it).
pub async fn forget(catalog: &Catalog, id: &str, region: &str) -> Result<()> {
    sqlx::query("DELETE FROM snapshots WHERE id = $1 AND region = $2 AND state IS NOT NULL")
        .bind(id.to_string())
        .bind(region.to_string())
        .execute(catalog.pool())
        .await
        .context("catalog: forget rds snapshot")?;
    Ok(())
}

/// The time a lifeboat snapshot was taken, from its name (`lifeboat-<plan>-YYYYMMDD-HHMMSS`):
/// a copy's own creation time is when it was copied.
pub fn time_of(plan: &str, id: &str) -> Option<i64> {
    let stamp = id
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_prefix(plan)?
        .strip_prefix('-')?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").ok()?;
    Some(t.and_utc().timestamp())
}

/// The plan's snapshots in one region: managed by lifeboat and tagged for the plan.
pub fn of_plan<'a>(plan: &'a str, list: &'a [Snapshot]) -> impl Iterator<Item = &'a Snapshot> + 'a {
    list.iter()
        .filter(move |s| s.managed() && s.plan() == Some(plan))
}

/// What `catalog sync` did for rds plans.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RdsSyncReport {
    pub snapshots: usize,
    /// `plan/region` pairs listed.
    pub listed: Vec<String>,
    pub unreachable: Vec<(String, String)>,
}

/// Rebuild the rows of every rds plan from `DescribeDBSnapshots` in each of its regions.
/// A region that cannot be listed keeps its rows and is reported.
pub async fn sync(
    config: &Config,
    catalog: &Catalog,
    client: &dyn Fn(&RdsSource) -> std::sync::Arc<dyn Rds>,
) -> Result<RdsSyncReport> {
    let mut report = RdsSyncReport::default();
    for plan in config.plans.iter().filter(|p| p.source.as_rds().is_some()) {
        sync_plan(
            plan,
            catalog,
            client(source_of(plan)?).as_ref(),
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

async fn sync_plan(
    plan: &PlanConfig,
    catalog: &Catalog,
    rds: &dyn Rds,
    report: &mut RdsSyncReport,
) -> Result<()> {
    let src = source_of(plan)?;
    let started = now();
    let mut ids = std::collections::BTreeSet::new();
    for region in &plan.regions {
        let list = match rds.list_snapshots(region).await {
            Ok(l) => l,
            Err(e) => {
                report
                    .unreachable
                    .push((format!("{}/{region}", plan.name), format!("{e:#}")));
                continue;
            }
        };
        for s in of_plan(&plan.name, &list) {
            let time = time_of(&plan.name, &s.id).or(s.created).unwrap_or_default();
            Row::new(&plan.name, &s.id, time, src)
                .put(catalog, region, &RegionState::of_status(&s.status))
                .await?;
            ids.insert(s.id.clone());
        }
        // Rows of snapshots no longer in the region go (written before this sync began).
        sqlx::query("DELETE FROM snapshots WHERE plan = $1 AND region = $2 AND state IS NOT NULL AND seen_at < $3")
            .bind(plan.name.clone())
            .bind(region.clone())
            .bind(started)
            .execute(catalog.pool())
            .await
            .context("catalog: drop vanished rds snapshots")?;
        report.listed.push(format!("{}/{region}", plan.name));
    }
    // A region that lacks a snapshot others hold gets a `missing` row, so the snapshot
    // shows as not complete rather than not counted at all.
    for id in &ids {
        let time = time_of(&plan.name, id).unwrap_or_default();
        for region in &plan.regions {
            if !report.listed.contains(&format!("{}/{region}", plan.name)) {
                continue;
            }
            let exists: Option<String> =
                sqlx::query_scalar("SELECT state FROM snapshots WHERE id = $1 AND region = $2")
                    .bind(id.clone())
                    .bind(region.clone())
                    .fetch_optional(catalog.pool())
                    .await
                    .context("catalog: rds row")?
                    .flatten();
            if exists.is_none() {
                Row::new(&plan.name, id, time, src)
                    .put(catalog, region, &RegionState::failed("not in this region"))
                    .await?;
            }
        }
    }
    report.snapshots += ids.len();
    Ok(())
}

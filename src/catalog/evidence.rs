//! Evidence that restores work: restore tests (filled by `verify --restore`) and DR drills
//! (filled by `drill run`). Status reads the newest of each.

use anyhow::{Context, Result};
use serde::Serialize;

use super::{get_i64, get_opt_i64, get_opt_str, get_str, Catalog};
use crate::host::new_id;

/// SQL: the drill row covers plan `$1` — named in its `drill_plans`, or its `plan` column,
/// or (rows from before drill_plans existed) every plan.
const COVERS: &str = "(plan = $1 \
     OR EXISTS (SELECT 1 FROM drill_plans p WHERE p.drill_id = drills.id AND p.plan = $1) \
     OR (plan IS NULL AND NOT EXISTS (SELECT 1 FROM drill_plans p WHERE p.drill_id = drills.id)))";

/// A finished drill run as `drill run` records it (and `catalog sync` restores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillRecord {
    pub id: String,
    /// The runbook's id.
    pub runbook: String,
    pub runbook_path: String,
    pub started_at: i64,
    pub ended_at: i64,
    /// `passed`, `failed` or `interrupted`.
    pub result: String,
    pub rto_achieved_ms: Option<i64>,
    pub rpo_achieved_s: Option<i64>,
    /// The plans covered, with what the drill achieved for each.
    pub plans: Vec<DrillPlanResult>,
    /// The report, as JSON (docs/runbooks.md, "Report schema").
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillPlanResult {
    pub plan: String,
    pub rto_achieved_ms: Option<i64>,
    pub rpo_achieved_s: Option<i64>,
}

/// What status and `drill list` show of one drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillSummary {
    pub id: String,
    pub runbook: String,
    pub runbook_path: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// `passed`, `failed`, `interrupted` (older rows: `passed`/`failed` from their flag).
    pub result: String,
    pub rto_achieved_ms: Option<i64>,
    pub rpo_achieved_s: Option<i64>,
}

const SUMMARY_COLUMNS: &str =
    "id, runbook, runbook_path, started_at, ended_at, passed, result, rto_achieved_ms, rpo_achieved_s";

fn summary(row: &sqlx::any::AnyRow) -> Result<DrillSummary> {
    let passed = get_i64(row, "passed")? != 0;
    let result = get_str(row, "result")?;
    Ok(DrillSummary {
        id: get_str(row, "id")?,
        runbook: get_str(row, "runbook")?,
        runbook_path: get_str(row, "runbook_path")?,
        started_at: get_i64(row, "started_at")?,
        ended_at: get_opt_i64(row, "ended_at")?,
        result: if result.is_empty() {
            if passed { "passed" } else { "failed" }.to_string()
        } else {
            result
        },
        rto_achieved_ms: get_opt_i64(row, "rto_achieved_ms")?,
        rpo_achieved_s: get_opt_i64(row, "rpo_achieved_s")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreTest {
    pub id: String,
    pub plan: String,
    pub snapshot: String,
    pub region: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub passed: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drill {
    pub id: String,
    pub runbook: String,
    /// `None`: the drill covered every plan.
    pub plan: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub passed: bool,
}

impl Catalog {
    pub async fn record_restore_test(&self, t: &RestoreTest) -> Result<String> {
        let id = if t.id.is_empty() {
            new_id()
        } else {
            t.id.clone()
        };
        sqlx::query(
            "INSERT INTO restore_tests (id, plan, snapshot, region, started_at, duration_ms, bytes, \
             passed, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.clone())
        .bind(t.plan.clone())
        .bind(t.snapshot.clone())
        .bind(t.region.clone())
        .bind(t.started_at)
        .bind(t.duration_ms)
        .bind(t.bytes)
        .bind(i64::from(t.passed))
        .bind(t.detail.clone())
        .execute(self.pool())
        .await
        .context("catalog: record restore test")?;
        Ok(id)
    }

    /// The newest restore test of `plan` (passed or not) and the newest passed one.
    pub async fn last_restore_tests(
        &self,
        plan: &str,
    ) -> Result<(Option<RestoreTest>, Option<RestoreTest>)> {
        let rows = sqlx::query(
            "SELECT id, plan, snapshot, region, started_at, duration_ms, bytes, passed, detail \
             FROM restore_tests WHERE plan = $1 ORDER BY started_at DESC, id DESC LIMIT 100",
        )
        .bind(plan.to_string())
        .fetch_all(self.pool())
        .await
        .context("catalog: restore tests")?;
        let tests = rows
            .iter()
            .map(|row| {
                Ok(RestoreTest {
                    id: get_str(row, "id")?,
                    plan: get_str(row, "plan")?,
                    snapshot: get_str(row, "snapshot")?,
                    region: get_str(row, "region")?,
                    started_at: get_i64(row, "started_at")?,
                    duration_ms: get_i64(row, "duration_ms")?,
                    bytes: get_i64(row, "bytes")?,
                    passed: get_i64(row, "passed")? != 0,
                    detail: get_opt_str(row, "detail")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let passed = tests.iter().find(|t| t.passed).cloned();
        Ok((tests.into_iter().next(), passed))
    }

    pub async fn record_drill(&self, d: &Drill) -> Result<String> {
        let id = if d.id.is_empty() {
            new_id()
        } else {
            d.id.clone()
        };
        sqlx::query(
            "INSERT INTO drills (id, runbook, plan, started_at, ended_at, passed) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.clone())
        .bind(d.runbook.clone())
        .bind(d.plan.clone())
        .bind(d.started_at)
        .bind(d.ended_at)
        .bind(i64::from(d.passed))
        .execute(self.pool())
        .await
        .context("catalog: record drill")?;
        Ok(id)
    }

    /// The newest passed drill covering `plan` (a drill of that plan or of every plan).
    pub async fn last_passed_drill(&self, plan: &str) -> Result<Option<Drill>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, runbook, plan, started_at, ended_at, passed FROM drills \
             WHERE passed = 1 AND {COVERS} ORDER BY started_at DESC, id DESC LIMIT 1"
        )))
        .bind(plan.to_string())
        .fetch_optional(self.pool())
        .await
        .context("catalog: drills")?;
        row.map(|row| {
            Ok(Drill {
                id: get_str(&row, "id")?,
                runbook: get_str(&row, "runbook")?,
                plan: get_opt_str(&row, "plan")?,
                started_at: get_i64(&row, "started_at")?,
                ended_at: get_opt_i64(&row, "ended_at")?,
                passed: true,
            })
        })
        .transpose()
    }

    /// Record a drill run and the plans it covered. An id already recorded is left as it is
    /// (`catalog sync` may bring back a drill this catalog knows); returns whether it was new.
    pub async fn record_drill_run(&self, d: &DrillRecord) -> Result<bool> {
        if self.drill_report(&d.id).await?.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO drills (id, runbook, plan, started_at, ended_at, passed, rto_achieved_ms, \
             rpo_achieved_s, report, result, runbook_path) \
             VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(d.id.clone())
        .bind(d.runbook.clone())
        .bind(d.started_at)
        .bind(d.ended_at)
        .bind(i64::from(d.result == "passed"))
        .bind(d.rto_achieved_ms)
        .bind(d.rpo_achieved_s)
        .bind(d.report.clone())
        .bind(d.result.clone())
        .bind(d.runbook_path.clone())
        .execute(self.pool())
        .await
        .context("catalog: record drill")?;
        for p in &d.plans {
            sqlx::query(
                "INSERT INTO drill_plans (drill_id, plan, rto_achieved_ms, rpo_achieved_s) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(d.id.clone())
            .bind(p.plan.clone())
            .bind(p.rto_achieved_ms)
            .bind(p.rpo_achieved_s)
            .execute(self.pool())
            .await
            .context("catalog: record drill plans")?;
        }
        Ok(true)
    }

    /// The newest drill covering `plan`, whatever its result, with the RTO it achieved for
    /// that plan.
    pub async fn last_drill(&self, plan: &str) -> Result<Option<DrillSummary>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM drills WHERE {COVERS} \
             ORDER BY started_at DESC, id DESC LIMIT 1"
        )))
        .bind(plan.to_string())
        .fetch_optional(self.pool())
        .await
        .context("catalog: drills")?;
        let Some(row) = row else { return Ok(None) };
        let mut s = summary(&row)?;
        let per_plan = sqlx::query(
            "SELECT rto_achieved_ms, rpo_achieved_s FROM drill_plans WHERE drill_id = $1 AND plan = $2",
        )
        .bind(s.id.clone())
        .bind(plan.to_string())
        .fetch_optional(self.pool())
        .await
        .context("catalog: drill plans")?;
        if let Some(p) = per_plan {
            s.rto_achieved_ms = get_opt_i64(&p, "rto_achieved_ms")?.or(s.rto_achieved_ms);
            s.rpo_achieved_s = get_opt_i64(&p, "rpo_achieved_s")?.or(s.rpo_achieved_s);
        }
        Ok(Some(s))
    }

    /// Drills, newest first: of one runbook id, or all.
    pub async fn drills(&self, runbook: Option<&str>) -> Result<Vec<DrillSummary>> {
        let rows = match runbook {
            Some(r) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {SUMMARY_COLUMNS} FROM drills WHERE runbook = $1 \
                 ORDER BY started_at DESC, id DESC"
                )))
                .bind(r.to_string())
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {SUMMARY_COLUMNS} FROM drills ORDER BY started_at DESC, id DESC"
                )))
                .fetch_all(self.pool())
                .await
            }
        }
        .context("catalog: drills")?;
        rows.iter().map(summary).collect()
    }

    /// The JSON report of drill `id`, if the catalog has the drill (`Some("")` for a row
    /// without a report).
    pub async fn drill_report(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT report FROM drills WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await
            .context("catalog: drill report")?;
        row.map(|r| Ok(get_opt_str(&r, "report")?.unwrap_or_default()))
            .transpose()
    }
}

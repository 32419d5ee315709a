//! Evidence that restores work: restore tests (filled by `verify --restore`) and DR drills
//! (filled by `drill run`). Status reads the newest of each.

use anyhow::{Context, Result};
use serde::Serialize;

use super::{get_i64, get_opt_i64, get_opt_str, get_str, Catalog};
use crate::host::new_id;

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
        let row = sqlx::query(
            "SELECT id, runbook, plan, started_at, ended_at, passed FROM drills \
             WHERE passed = 1 AND (plan IS NULL OR plan = $1) ORDER BY started_at DESC LIMIT 1",
        )
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
}

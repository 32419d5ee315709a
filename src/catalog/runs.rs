//! Run history: every backup, restore, replicate, verify, prune or drill lifeboat ran, with
//! its phase, timing, bytes, per-region outcome and error.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_opt_str, get_str, Catalog};
use crate::host::{new_id, now_secs};

/// What a run did. Drills are not runs: they have their own table and report objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Backup,
    Restore,
    Replicate,
    Verify,
    Forget,
    Prune,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Restore => "restore",
            RunKind::Replicate => "replicate",
            RunKind::Verify => "verify",
            RunKind::Forget => "forget",
            RunKind::Prune => "prune",
        }
    }
}

/// Where a run is. `Running` rows whose process died stay `running`; readers treat a
/// running row older than its lease as abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Succeeded,
    /// Committed, but not in every region of the plan.
    Degraded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Degraded => "degraded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Phase {
        match s {
            "running" => Phase::Running,
            "succeeded" => Phase::Succeeded,
            "degraded" => Phase::Degraded,
            "cancelled" => Phase::Cancelled,
            _ => Phase::Failed,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    pub phase: Option<Phase>,
    pub bytes: u64,
    pub snapshot: Option<String>,
    /// Region name → "ok" or that region's error.
    pub regions: BTreeMap<String, String>,
    pub error: Option<String>,
    pub attempts: u32,
}

/// A row of `runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub kind: String,
    pub plan: Option<String>,
    pub phase: Phase,
    pub scheduled_for: Option<i64>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub bytes: i64,
    pub snapshot: Option<String>,
    pub regions: BTreeMap<String, String>,
    pub error: Option<String>,
    pub host: String,
    pub attempts: i64,
}

fn record(row: &AnyRow) -> Result<RunRecord> {
    let regions = get_str(row, "regions")?;
    Ok(RunRecord {
        id: get_str(row, "id")?,
        kind: get_str(row, "kind")?,
        plan: get_opt_str(row, "plan")?,
        phase: Phase::parse(&get_str(row, "phase")?),
        scheduled_for: get_opt_i64(row, "scheduled_for")?,
        started_at: get_i64(row, "started_at")?,
        ended_at: get_opt_i64(row, "ended_at")?,
        duration_ms: get_opt_i64(row, "duration_ms")?,
        bytes: get_i64(row, "bytes")?,
        snapshot: get_opt_str(row, "snapshot")?,
        regions: serde_json::from_str(&regions).unwrap_or_default(),
        error: get_opt_str(row, "error")?,
        host: get_str(row, "host")?,
        attempts: get_i64(row, "attempts")?,
    })
}

impl Catalog {
    /// Record the start of a run; returns its id.
    pub async fn begin_run(
        &self,
        kind: RunKind,
        plan: Option<&str>,
        scheduled_for: Option<i64>,
    ) -> Result<String> {
        let id = new_id();
        self.begin_run_with_id(&id, kind, plan, scheduled_for)
            .await?;
        Ok(id)
    }

    /// [`Catalog::begin_run`] with an id the caller made (and perhaps claimed with).
    pub async fn begin_run_with_id(
        &self,
        id: &str,
        kind: RunKind,
        plan: Option<&str>,
        scheduled_for: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, kind, plan, phase, scheduled_for, started_at, host) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(kind.as_str())
        .bind(plan.map(str::to_string))
        .bind(scheduled_for)
        .bind(now_secs())
        .bind(crate::host::hostname())
        .execute(self.pool())
        .await
        .context("catalog: record run start")?;
        Ok(())
    }

    /// Record how run `id` ended.
    pub async fn end_run(&self, id: &str, end: &RunEnd) -> Result<()> {
        let ended = now_secs();
        let started: i64 = sqlx::query("SELECT started_at FROM runs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(self.pool())
            .await
            .map(|row| get_i64(&row, "started_at"))
            .context("catalog: find run")??;
        let phase = end.phase.unwrap_or(if end.error.is_some() {
            Phase::Failed
        } else {
            Phase::Succeeded
        });
        sqlx::query(
            "UPDATE runs SET phase = $1, ended_at = $2, duration_ms = $3, bytes = $4, snapshot = $5, \
             regions = $6, error = $7, attempts = $8 WHERE id = $9",
        )
        .bind(phase.as_str())
        .bind(ended)
        .bind((ended - started).max(0) * 1000)
        .bind(end.bytes as i64)
        .bind(end.snapshot.clone())
        .bind(serde_json::to_string(&end.regions)?)
        .bind(end.error.clone())
        .bind(i64::from(end.attempts.max(1)))
        .bind(id.to_string())
        .execute(self.pool())
        .await
        .context("catalog: record run end")?;
        Ok(())
    }

    /// Set a precise duration (the clock above has second resolution).
    pub async fn set_run_duration(&self, id: &str, duration_ms: i64) -> Result<()> {
        sqlx::query("UPDATE runs SET duration_ms = $1 WHERE id = $2")
            .bind(duration_ms)
            .bind(id.to_string())
            .execute(self.pool())
            .await
            .context("catalog: record run duration")?;
        Ok(())
    }

    /// Runs, newest first; `plan` and `kind` filter when given.
    pub async fn runs(
        &self,
        plan: Option<&str>,
        kind: Option<RunKind>,
        limit: i64,
    ) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, plan, phase, scheduled_for, started_at, ended_at, duration_ms, bytes, \
             snapshot, regions, error, host, attempts FROM runs \
             WHERE ($1 = '' OR plan = $1) AND ($2 = '' OR kind = $2) \
             ORDER BY started_at DESC, id DESC LIMIT $3",
        )
        .bind(plan.unwrap_or_default().to_string())
        .bind(kind.map(RunKind::as_str).unwrap_or_default())
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("catalog: list runs")?;
        rows.iter().map(record).collect()
    }

    /// The newest finished run of `kind` for `plan` whose phase is one of `phases`.
    pub async fn last_run(
        &self,
        plan: &str,
        kind: RunKind,
        phases: &[Phase],
    ) -> Result<Option<RunRecord>> {
        // Few runs per plan per day: filter the phase here rather than build SQL lists.
        let runs = self.runs(Some(plan), Some(kind), 200).await?;
        Ok(runs.into_iter().find(|r| phases.contains(&r.phase)))
    }
}

//! Scheduled drills: with `--runbooks DIR`, the daemon (and `run-due`) runs every runbook
//! without an `approve` step when its frequency falls due — claimed once per occurrence in
//! the catalog's `occurrences` table (key `drill#<runbook>`), a missed one caught up once,
//! like plans — and raises the `drill_overdue` alert for due runbooks that have a gate, since
//! only a person can approve them. A runbook that no longer parses is logged and skipped.

use std::path::Path;

use anyhow::Result;
use lifeboat_repo::Cancel;

use super::alerts::Condition;
use super::{Executor, PlanRun};
use crate::drill::{occurrence_key, DueDrill};

impl Executor {
    /// Due runbooks of `--runbooks` (none without it).
    pub async fn due_drills(&self, now: i64) -> Result<Vec<DueDrill>> {
        let Some(dir) = &self.options.runbooks else {
            return Ok(Vec::new());
        };
        let books: Vec<_> = crate::drill::load_dir(Path::new(dir), &self.config)
            .into_iter()
            .filter_map(|r| match r {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!(error = %e, "runbook skipped");
                    None
                }
            })
            .collect();
        crate::drill::due(&self.catalog, &books, now).await
    }

    /// Run one due, ungated drill: claim the occurrence, run it to the end (cleanup
    /// included), store its report. `outcome` is `passed`, `failed`, `interrupted` or
    /// `skipped` (another process ran this occurrence).
    pub async fn run_drill(&self, due: &DueDrill, cancel: &Cancel) -> Result<PlanRun> {
        let key = occurrence_key(&due.runbook.id);
        let mut result = PlanRun {
            plan: key.clone(),
            scheduled_for: due.scheduled_for,
            outcome: "skipped".into(),
            run_id: None,
            snapshot: None,
            attempts: 0,
            error: None,
        };
        let claim = crate::catalog::new_id();
        if !self
            .catalog
            .claim_occurrence(&key, due.scheduled_for, &claim, &self.holder)
            .await?
        {
            result.error = Some("this occurrence was already run".into());
            return Ok(result);
        }
        let options = crate::drill::run::RunOptions {
            approver: Some(format!("daemon@{}", crate::engine::hostname())),
            ..Default::default()
        };
        let report =
            crate::drill::execute(&self.config, &self.catalog, &due.runbook, options, cancel)
                .await?;
        if report.result == "passed" {
            tracing::info!(drill = %report.id, runbook = %due.runbook.id, "scheduled drill passed");
        } else {
            tracing::error!(drill = %report.id, runbook = %due.runbook.id, result = %report.result, deviations = ?report.deviations, "scheduled drill did not pass");
            result.error = Some(report.deviations.join("; "));
        }
        result.run_id = Some(report.id.clone());
        result.attempts = 1;
        result.outcome = report.result.clone();
        Ok(result)
    }
}

/// The `drill_overdue` alert of due runbooks that need a person at their gate.
pub fn gated_conditions(due: &[DueDrill]) -> Vec<Condition> {
    due.iter()
        .filter(|d| d.gated)
        .map(|d| Condition {
            key: format!("{}/drill_overdue", occurrence_key(&d.runbook.id)),
            plan: d.runbook.plans.join(","),
            kind: "drill_overdue".into(),
            message: format!(
                "runbook {} is due and has an approval gate: run `lifeboat drill run {}` with an approver",
                d.runbook.id,
                d.runbook.path.display()
            ),
        })
        .collect()
}

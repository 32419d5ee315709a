//! Scheduled drills, as the daemon sees them: something that knows which runbooks are due
//! ([`Drills`], implemented above the daemon by `drill::Scheduled` and handed in by the CLI
//! for `--runbooks DIR`), and the executor's part — claim each occurrence once in the
//! catalog's `occurrences` table (key `drill#<runbook>`), run the ungated ones, and raise the
//! `drill_overdue` alert for due runbooks with an approval gate, which only a person can run.
//! A missed occurrence is caught up once, like a plan's.

use std::path::PathBuf;

use anyhow::Result;
use async_trait::async_trait;
use lifeboat_repo::Cancel;

use super::alerts::Condition;
use super::{Executor, PlanRun};

/// A runbook due now.
#[derive(Debug, Clone)]
pub struct DueDrill {
    pub runbook: String,
    pub path: PathBuf,
    pub plans: Vec<String>,
    /// It has an `approve` step: alert, do not run.
    pub gated: bool,
    /// The occurrence: when it fell due (now for a runbook never run).
    pub scheduled_for: i64,
}

impl DueDrill {
    /// The occurrence key (no plan name has a `#`).
    pub fn key(&self) -> String {
        format!("drill#{}", self.runbook)
    }
}

/// How a drill ended.
#[derive(Debug, Clone)]
pub struct DrillEnd {
    pub id: String,
    /// `passed`, `failed` or `interrupted`.
    pub result: String,
    pub deviations: Vec<String>,
}

#[async_trait]
pub trait Drills: Send + Sync {
    /// Runbooks due at `now`.
    async fn due(&self, now: i64) -> Result<Vec<DueDrill>>;
    /// Run one to the end (cleanup included) and store its report.
    async fn run(&self, due: &DueDrill, cancel: &Cancel) -> Result<DrillEnd>;
}

impl Executor {
    /// Due runbooks (none when no runbooks were given).
    pub async fn due_drills(&self, now: i64) -> Result<Vec<DueDrill>> {
        match &self.drills {
            Some(d) => d.due(now).await,
            None => Ok(Vec::new()),
        }
    }

    /// Run one due, ungated drill after claiming its occurrence. `outcome` is the drill's
    /// result, or `skipped` when another process ran this occurrence.
    pub async fn run_drill(&self, due: &DueDrill, cancel: &Cancel) -> Result<PlanRun> {
        let key = due.key();
        let mut result = PlanRun::skipped(&key, due.scheduled_for);
        let Some(drills) = &self.drills else {
            return Ok(result);
        };
        if self
            .claim(&key, due.scheduled_for, &mut result)
            .await?
            .is_none()
        {
            return Ok(result);
        }
        let end = drills.run(due, cancel).await?;
        if end.result == "passed" {
            tracing::info!(drill = %end.id, runbook = %due.runbook, "scheduled drill passed");
        } else {
            tracing::error!(drill = %end.id, runbook = %due.runbook, result = %end.result, deviations = ?end.deviations, "scheduled drill did not pass");
            result.error = Some(end.deviations.join("; "));
        }
        result.run_id = Some(end.id);
        result.attempts = 1;
        result.outcome = end.result;
        Ok(result)
    }
}

/// The `drill_overdue` alert of due runbooks that need a person at their gate.
pub fn gated_conditions(due: &[DueDrill]) -> Vec<Condition> {
    due.iter()
        .filter(|d| d.gated)
        .map(|d| Condition {
            key: format!("{}/drill_overdue", d.key()),
            plan: d.plans.join(","),
            kind: "drill_overdue".into(),
            message: format!(
                "runbook {} is due and has an approval gate: run `lifeboat drill run {}` with an approver",
                d.runbook,
                d.path.display()
            ),
        })
        .collect()
}

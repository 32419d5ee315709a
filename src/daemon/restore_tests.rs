//! Scheduled restore tests: a plan's `verify_schedule` makes the daemon (and `run-due`) run
//! `verify --restore` for it. Like backups, each occurrence is claimed once in the catalog's
//! `occurrences` table (under the key `<plan>#restore-test`, which no plan name can be, as
//! names have no `#`), a missed occurrence is caught up once, and the result is recorded in
//! `restore_tests`, where `status` reads it.

use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_repo::{Cancel, Progress};

use super::{due, Due, Executor, PlanRun, Schedule};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::restore_test::{record, restore_test, RestoreTestRequest};

/// The occurrence key of a plan's restore tests.
pub fn occurrence_key(plan: &str) -> String {
    format!("{plan}#restore-test")
}

/// Plans whose restore test is due at `now`. "Last" is the newest claimed occurrence or the
/// start of the newest restore test, whichever is later.
pub async fn due_restore_tests(config: &Config, catalog: &Catalog, now: i64) -> Result<Vec<Due>> {
    let mut out = Vec::new();
    for plan in &config.plans {
        let Some(expr) = &plan.verify_schedule else {
            continue;
        };
        let schedule = Schedule::parse(expr, plan.zone.as_deref())
            .with_context(|| format!("plan {}: verify_schedule", plan.name))?;
        let claimed = catalog.last_occurrence(&occurrence_key(&plan.name)).await?;
        let tested = catalog
            .last_restore_tests(&plan.name)
            .await?
            .0
            .map(|t| t.started_at);
        if let Some(at) = due(&schedule, claimed.max(tested), now) {
            out.push(Due {
                plan: plan.name.clone(),
                scheduled_for: at,
            });
        }
    }
    Ok(out)
}

impl Executor {
    /// Run one due restore test: claim the occurrence, test the plan's newest snapshot,
    /// record the outcome. `outcome` of the returned run is `passed`, `failed` or `skipped`.
    pub async fn run_restore_test(&self, due: &Due, cancel: &Cancel) -> Result<PlanRun> {
        let key = occurrence_key(&due.plan);
        let mut result = PlanRun::skipped(&key, due.scheduled_for);
        let Some(run_id) = self.claim(&key, due.scheduled_for, &mut result).await? else {
            return Ok(result);
        };
        let plan = self.config.plan(&due.plan)?.clone();
        let req = RestoreTestRequest {
            plan: Some(plan.name.clone()),
            snapshot: None,
            from: None,
            scratch: None,
        };
        // In use: forget leaves the plan's snapshots alone until the test ends.
        let in_use = self
            .catalog
            .use_plans(
                std::slice::from_ref(&plan.name),
                &format!("restore test {run_id}"),
            )
            .await?;
        let outcome = restore_test(
            &self.config,
            &plan,
            &req,
            Arc::new(Progress::default()),
            cancel.clone(),
        )
        .await;
        in_use.release().await;
        let outcome = outcome?;
        record(&self.catalog, &outcome).await?;
        if outcome.passed {
            tracing::info!(plan = %plan.name, snapshot = %outcome.snapshot, duration_ms = outcome.duration_ms, "scheduled restore test passed");
        } else {
            tracing::error!(plan = %plan.name, snapshot = %outcome.snapshot, differences = ?outcome.differences, "scheduled restore test FAILED");
        }
        result.run_id = Some(run_id);
        result.attempts = 1;
        result.outcome = if outcome.passed { "passed" } else { "failed" }.into();
        result.snapshot = Some(outcome.snapshot.clone()).filter(|s| !s.is_empty());
        if !outcome.passed {
            result.error = Some(outcome.differences.join("; "));
        }
        Ok(result)
    }
}

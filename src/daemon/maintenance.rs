//! Scheduled forget + prune: a plan's `prune_schedule` makes the daemon (and `run-due`) apply
//! the plan's retention policy and then prune the repository. Like restore tests, each
//! occurrence is claimed once (key `<plan>#prune`), a missed one is caught up once, and both
//! steps are recorded as runs (kinds `forget` and `prune`) with bytes freed, objects deleted
//! and duration, in the catalog and the metrics. A failed step raises a `prune_failed` alert.
//! Two prunes never overlap: the repository's maintenance lock refuses the second.

use std::time::Instant;

use anyhow::{Context, Result};
use lifeboat_repo::Cancel;

use super::alerts::Condition;
use super::{due, Due, Executor, PlanRun, Schedule};
use crate::catalog::{Catalog, Phase, RunEnd, RunKind};
use crate::config::{Config, PlanConfig};
use crate::engine::{self, retention, KeyNeed};

/// Repack threshold of scheduled prunes (restic's and rustic's default).
const MAX_UNUSED: f64 = 0.05;

pub fn occurrence_key(plan: &str) -> String {
    format!("{plan}#prune")
}

/// The most snapshots `plan`'s schedule (plus manual backups) can produce in the runaway
/// guard's window: twice the scheduled occurrences, plus ten. `None` without a schedule.
pub fn runaway_limit(plan: &PlanConfig, now: i64) -> Result<Option<usize>> {
    let Some(expr) = &plan.schedule else {
        return Ok(None);
    };
    let schedule = Schedule::parse(expr, plan.zone.as_deref())?;
    let mut n = 0usize;
    let mut t = now - retention::RUNAWAY_WINDOW;
    while let Some(next) = schedule.next_after(t).filter(|&x| x <= now) {
        n += 1;
        t = next;
        if n > 100_000 {
            break;
        }
    }
    Ok(Some(2 * n + 10))
}

/// Plans whose forget + prune is due at `now`.
pub async fn due_maintenance(config: &Config, catalog: &Catalog, now: i64) -> Result<Vec<Due>> {
    let mut out = Vec::new();
    for plan in &config.plans {
        let Some(expr) = &plan.prune_schedule else {
            continue;
        };
        let schedule = Schedule::parse(expr, plan.zone.as_deref())
            .with_context(|| format!("plan {}: prune_schedule", plan.name))?;
        let claimed = catalog.last_occurrence(&occurrence_key(&plan.name)).await?;
        if let Some(at) = due(&schedule, claimed, now) {
            out.push(Due {
                plan: plan.name.clone(),
                scheduled_for: at,
            });
        }
    }
    Ok(out)
}

/// A `prune_failed` condition for each plan whose last scheduled forget or prune failed.
pub async fn conditions(config: &Config, catalog: &Catalog) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    for plan in config.plans.iter().filter(|p| p.prune_schedule.is_some()) {
        for kind in [RunKind::Forget, RunKind::Prune] {
            let last = catalog.runs(Some(&plan.name), Some(kind), 1).await?;
            if let Some(run) = last.first().filter(|r| r.phase == Phase::Failed) {
                out.push(Condition {
                    key: format!("{}/prune_failed", plan.name),
                    plan: plan.name.clone(),
                    kind: "prune_failed".into(),
                    message: format!(
                        "scheduled {} failed: {}",
                        kind.as_str(),
                        run.error.as_deref().unwrap_or("unknown error")
                    ),
                });
                break;
            }
        }
    }
    Ok(out)
}

impl Executor {
    /// Run one due forget + prune for a plan. `outcome`: `succeeded`, `failed`, `skipped`.
    pub async fn run_maintenance(&self, due: &Due, cancel: &Cancel) -> Result<PlanRun> {
        let key = occurrence_key(&due.plan);
        let mut result = PlanRun {
            plan: key.clone(),
            scheduled_for: due.scheduled_for,
            outcome: "skipped".into(),
            run_id: None,
            snapshot: None,
            attempts: 0,
            error: None,
        };
        let run_id = crate::host::new_id();
        if !self
            .catalog
            .claim_occurrence(&key, due.scheduled_for, &run_id, &self.holder)
            .await?
        {
            result.error = Some("this occurrence was already run".into());
            return Ok(result);
        }
        let started = Instant::now();
        let plan = self.config.plan(&due.plan)?.clone();
        let outcome = self.forget_and_prune(&plan, &run_id, cancel).await;
        let secs = started.elapsed().as_secs_f64();
        result.run_id = Some(run_id);
        result.attempts = 1;
        match outcome {
            Ok(freed) => {
                self.metrics.record_prune(Some(freed), secs);
                tracing::info!(plan = %plan.name, bytes_freed = freed.0, objects_deleted = freed.1, seconds = secs, "scheduled forget + prune done");
                result.outcome = "succeeded".into();
            }
            Err(e) => {
                self.metrics.record_prune(None, secs);
                tracing::error!(plan = %plan.name, error = %format!("{e:#}"), "scheduled forget + prune FAILED");
                result.outcome = "failed".into();
                result.error = Some(format!("{e:#}"));
            }
        }
        Ok(result)
    }

    /// Forget (recorded as run `forget_id`), then prune (its own run). Returns (bytes
    /// freed, objects deleted).
    async fn forget_and_prune(
        &self,
        plan: &PlanConfig,
        forget_id: &str,
        cancel: &Cancel,
    ) -> Result<(u64, u64)> {
        let c = &self.catalog;
        c.begin_run_with_id(forget_id, RunKind::Forget, Some(&plan.name), None)
            .await?;
        let forgot = async {
            let repo = engine::open(&self.config, KeyNeed::Read, None).await?;
            let now = lifeboat_repo::clock::now_secs();
            let req = retention::ForgetRequest {
                plan: Some(plan.name.clone()),
                keep: None,
                dry_run: false,
            };
            let report = retention::forget(&self.config, &repo, Some(c), &req, now, &|p| {
                runaway_limit(p, now)
            })
            .await?;
            if let Some(why) = report.plans.iter().find_map(|p| p.refused.clone()) {
                anyhow::bail!("forget refused: {why}");
            }
            Ok(repo)
        }
        .await;
        c.end_run(
            forget_id,
            &RunEnd {
                error: forgot.as_ref().err().map(|e| format!("{e:#}")),
                attempts: 1,
                ..Default::default()
            },
        )
        .await?;
        let repo = forgot?;
        let prune_id = c.begin_run(RunKind::Prune, Some(&plan.name), None).await?;
        let pruned = retention::prune(&self.config, &repo, None, MAX_UNUSED, false, cancel).await;
        let end = match &pruned {
            Ok(r) => RunEnd {
                bytes: r.bytes_freed(),
                regions: r
                    .regions
                    .iter()
                    .map(|(n, p)| {
                        (
                            n.clone(),
                            format!("{} objects deleted", p.objects_deleted()),
                        )
                    })
                    .collect(),
                attempts: 1,
                ..Default::default()
            },
            Err(e) => RunEnd {
                error: Some(format!("{e:#}")),
                attempts: 1,
                ..Default::default()
            },
        };
        c.end_run(&prune_id, &end).await?;
        let r = pruned?;
        Ok((r.bytes_freed(), r.objects_deleted()))
    }
}

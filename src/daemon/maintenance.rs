//! Scheduled forget + prune: a plan's `prune_schedule` makes the daemon (and `run-due`) apply
//! the plan's retention policy and then prune the repository. Like restore tests, each
//! occurrence is claimed once (key `<plan>#prune`), a missed one is caught up once, and both
//! steps are recorded as runs (kinds `forget` and `prune`) with bytes freed, objects deleted
//! and duration, in the catalog and the metrics. A failed step raises a `prune_failed` alert.
//!
//! Never beside a backup of the repository (every plan of the config shares it): the run
//! holds every plan's lease, so scheduled backups here or in another daemon sharing the
//! catalog wait for it, and it waits (skipped, its occurrence left unclaimed, so a later
//! tick runs it) while any backup runs, a restore test or drill uses the plan, or another
//! process holds the maintenance lock. Prune itself would be safe beside a backup (its
//! grace period); this keeps their I/O apart and the order of events in the catalog plain.
//! Two prunes never overlap: the lock refuses the second.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use lifeboat_repo::{Cancel, Repository};

use super::alerts::Condition;
use super::{due, Due, Executor, PlanRun, Schedule};
use crate::catalog::{Catalog, Phase, RunKind};
use crate::config::{Config, PlanConfig};
use crate::engine::{self, record, retention, KeyNeed};

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
        // A schedule this dense (sub-minute) needs no finer guard, and counting a week of
        // every-second occurrences would take seconds.
        if n >= 10_000 {
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
    /// Run one due forget + prune for a plan. `outcome`: `succeeded`, `failed`, `skipped`
    /// (a backup or another maintenance is running: due again at the next look).
    pub async fn run_maintenance(&self, due: &Due, cancel: &Cancel) -> Result<PlanRun> {
        let key = occurrence_key(&due.plan);
        let mut result = PlanRun::skipped(&key, due.scheduled_for);
        let plans: Vec<String> = self.config.plans.iter().map(|p| p.name.clone()).collect();
        let leases = match self.take_leases(&plans).await? {
            Ok(l) => l,
            Err(plan) => {
                result.error = Some(format!(
                    "a run of plan {plan} holds its lease; forget + prune waits for it"
                ));
                return Ok(result);
            }
        };
        let res = self.maintenance_leased(due, &key, result, cancel).await;
        self.release_leases(leases).await?;
        res
    }

    async fn maintenance_leased(
        &self,
        due: &Due,
        key: &str,
        mut result: PlanRun,
        cancel: &Cancel,
    ) -> Result<PlanRun> {
        if let Some(busy) = self.backup_running().await? {
            result.error = Some(format!("{busy}; forget + prune waits for it"));
            return Ok(result);
        }
        let users = self
            .catalog
            .plan_users(&due.plan, crate::host::now_secs())
            .await?;
        if let Some(user) = users.first() {
            result.error = Some(format!(
                "{user} is using the plan's snapshots; forget + prune waits for it"
            ));
            return Ok(result);
        }
        let repo = engine::open(&self.config, KeyNeed::Read, None).await;
        if let Ok(r) = &repo {
            if let Some(l) = lifeboat_repo::lock::current(r).await? {
                result.error = Some(format!(
                    "the repository is locked for maintenance by {} ({}); forget + prune waits for it",
                    l.holder, l.operation
                ));
                return Ok(result);
            }
        }
        let Some(run_id) = self.claim(key, due.scheduled_for, &mut result).await? else {
            return Ok(result);
        };
        let started = Instant::now();
        let plan = self.config.plan(&due.plan)?.clone();
        let outcome = self.forget_and_prune(&plan, repo, &run_id, cancel).await;
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

    /// A backup (of any plan: they share the repository) recorded as running and started
    /// within the backup timeout (an older `running` row belongs to a process that died).
    async fn backup_running(&self) -> Result<Option<String>> {
        let since = crate::host::now_secs() - self.options.timeout.as_secs() as i64;
        let runs = self.catalog.runs(None, Some(RunKind::Backup), 50).await?;
        Ok(runs
            .iter()
            .find(|r| r.phase == Phase::Running && r.started_at > since)
            .map(|r| {
                format!(
                    "a backup of plan {} is running (run {})",
                    r.plan.as_deref().unwrap_or("?"),
                    r.id
                )
            }))
    }

    /// Forget (recorded as run `forget_id`), then prune (its own run). Returns (bytes
    /// freed, objects deleted).
    async fn forget_and_prune(
        &self,
        plan: &PlanConfig,
        repo: Result<Arc<Repository>>,
        forget_id: &str,
        cancel: &Cancel,
    ) -> Result<(u64, u64)> {
        let c = &self.catalog;
        c.begin_run_with_id(forget_id, RunKind::Forget, Some(&plan.name), None)
            .await?;
        let now = lifeboat_repo::clock::now_secs();
        let forgot = async {
            let req = retention::ForgetRequest {
                plan: Some(plan.name.clone()),
                keep: None,
                dry_run: false,
            };
            retention::forget(
                &self.config,
                repo.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
                Some(c),
                &req,
                now,
                &|p| runaway_limit(p, now),
            )
            .await
        }
        .await;
        c.end_run(forget_id, &record::forget_end(&forgot)).await?;
        if let Some(why) = forgot?.plans.iter().find_map(|p| p.refused.clone()) {
            anyhow::bail!("forget refused: {why}");
        }
        let repo = repo?;
        let prune_id = c.begin_run(RunKind::Prune, Some(&plan.name), None).await?;
        let pruned = retention::prune(&self.config, &repo, None, MAX_UNUSED, false, cancel).await;
        c.end_run(&prune_id, &record::prune_end(&pruned)).await?;
        let r = pruned?;
        Ok((r.bytes_freed(), r.objects_deleted()))
    }
}

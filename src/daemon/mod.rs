//! Unattended operation: deciding what is due ([`schedule`]), running it ([`Executor`]) with
//! retries, a per-run timeout, a lease so one run per plan happens at a time (also across
//! processes sharing a catalog), and a claim so each schedule occurrence runs once.
//!
//! After a degraded backup, [`heal`] copies what a region missed once it answers again
//! (with backoff). The scheduler only decides; the executor runs. `run-due` calls
//! [`Executor::run_due`] once; the daemon loop ([`run_daemon`] in `daemon::runner`) calls it on every tick and
//! serves metrics. Cancellation (SIGTERM) stops a running backup at the next chunk; the
//! backup commits nothing, so no partial snapshot is ever visible, and the run is recorded
//! as `cancelled`. A run that panics is a failed attempt, recorded like any other, and
//! its plan is scheduled again.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_repo::{Cancel, Progress};
use serde::Serialize;

use crate::catalog::{self, Catalog, Phase, RunKind};
use crate::config::Config;

pub mod alerts;
pub mod drills;
pub mod heal;
pub mod maintenance;
pub mod metrics;
pub mod restore_tests;
pub mod runner;
pub mod schedule;

pub use runner::run_daemon;
pub use schedule::{due, next_run, Schedule};

/// How the executor runs a plan.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Further tries after a failed attempt.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Longest one attempt may take before it is cancelled.
    pub timeout: Duration,
    /// Lease length; renewed every third of it while the run lives.
    pub lease: Duration,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            retries: 2,
            backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(6 * 3600),
            lease: Duration::from_secs(120),
        }
    }
}

/// What happened to one due plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRun {
    pub plan: String,
    pub scheduled_for: i64,
    /// `succeeded`, `degraded`, `failed`, `cancelled`, or `skipped` (another run holds the
    /// plan, or another process already ran this occurrence).
    pub outcome: String,
    pub run_id: Option<String>,
    pub snapshot: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// A plan due now, for the occurrence `scheduled_for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub plan: String,
    pub scheduled_for: i64,
}

/// The plans due at `now`. A plan's "last" is its newest claimed occurrence or the start of
/// its newest successful backup, whichever is later.
pub async fn due_plans(config: &Config, catalog: &Catalog, now: i64) -> Result<Vec<Due>> {
    let mut out = Vec::new();
    for plan in &config.plans {
        let Some(expr) = &plan.schedule else {
            continue;
        };
        // One plan's bad schedule must not stop the others (`daemon` and `run-due` refuse
        // to start with one; see `check_schedules`).
        let schedule = match Schedule::parse(expr, plan.zone.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(plan = %plan.name, error = %format!("{e:#}"), "plan skipped");
                continue;
            }
        };
        let last = last_for(catalog, &plan.name).await?;
        if let Some(at) = due(&schedule, last, now) {
            out.push(Due {
                plan: plan.name.clone(),
                scheduled_for: at,
            });
        }
    }
    Ok(out)
}

/// Parse every plan's `schedule` and `verify_schedule` (with its zone); the error names
/// the plan and the key.
pub fn check_schedules(config: &Config) -> Result<()> {
    for plan in &config.plans {
        for (key, expr) in [
            ("schedule", &plan.schedule),
            ("verify_schedule", &plan.verify_schedule),
            ("prune_schedule", &plan.prune_schedule),
        ] {
            if let Some(expr) = expr {
                Schedule::parse(expr, plan.zone.as_deref())
                    .with_context(|| format!("plan {}: {key}", plan.name))?;
            }
        }
    }
    Ok(())
}

async fn last_for(catalog: &Catalog, plan: &str) -> Result<Option<i64>> {
    let claimed = catalog.last_occurrence(plan).await?;
    let succeeded = catalog
        .last_run(plan, RunKind::Backup, &[Phase::Succeeded, Phase::Degraded])
        .await?
        .map(|r| r.started_at);
    Ok(claimed.max(succeeded))
}

/// Runs due plans; shared by `run-due` and the daemon.
#[derive(Clone)]
pub struct Executor {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    /// This process, as lease holder.
    pub holder: String,
    pub options: ExecOptions,
    pub metrics: Arc<metrics::Metrics>,
    /// Scheduled drills (`--runbooks`): due ungated ones run, gated ones raise an alert.
    pub drills: Option<Arc<dyn drills::Drills>>,
}

impl Executor {
    pub fn new(config: Arc<Config>, catalog: Catalog, options: ExecOptions) -> Executor {
        Executor {
            config,
            catalog,
            holder: catalog::holder_name(),
            options,
            metrics: Arc::new(metrics::Metrics::default()),
            drills: None,
        }
    }

    /// This executor, also running the drills `drills` finds due.
    pub fn with_drills(mut self, drills: Arc<dyn drills::Drills>) -> Executor {
        self.drills = Some(drills);
        self
    }

    /// Run every plan due at `now`, one after another.
    pub async fn run_due(&self, now: i64, cancel: &Cancel) -> Result<Vec<PlanRun>> {
        let mut out = Vec::new();
        for d in due_plans(&self.config, &self.catalog, now).await? {
            if cancel.is_cancelled() {
                break;
            }
            out.push(self.run_plan(&d, cancel).await?);
        }
        for d in restore_tests::due_restore_tests(&self.config, &self.catalog, now).await? {
            if cancel.is_cancelled() {
                break;
            }
            out.push(self.run_restore_test(&d, cancel).await?);
        }
        for d in maintenance::due_maintenance(&self.config, &self.catalog, now).await? {
            if cancel.is_cancelled() {
                break;
            }
            out.push(self.run_maintenance(&d, cancel).await?);
        }
        for d in self.due_drills(now).await? {
            if cancel.is_cancelled() {
                break;
            }
            if !d.gated {
                out.push(self.run_drill(&d, cancel).await?);
            }
        }
        self.heal(cancel).await;
        Ok(out)
    }

    /// Copy what regions missed (after a degraded backup), if the backoff allows it now.
    /// Best effort: a failure is logged and recorded, and retried later.
    pub async fn heal(&self, cancel: &Cancel) {
        let res =
            heal::heal_if_needed(&self.config, &self.catalog, self.options.backoff, cancel).await;
        if let Err(e) = res {
            tracing::warn!(error = %format!("{e:#}"), "healing failed; will retry with backoff");
        }
    }

    /// Run one due occurrence: take the plan's lease, claim the occurrence, back up with
    /// retries, record everything, give the lease back.
    pub async fn run_plan(&self, due: &Due, cancel: &Cancel) -> Result<PlanRun> {
        let mut result = PlanRun {
            plan: due.plan.clone(),
            scheduled_for: due.scheduled_for,
            outcome: "skipped".into(),
            run_id: None,
            snapshot: None,
            attempts: 0,
            error: None,
        };
        let lease = self.options.lease.as_secs().max(3) as i64;
        let now = crate::host::now_secs();
        if !self
            .catalog
            .acquire_lease(&due.plan, &self.holder, now, now + lease)
            .await?
        {
            tracing::info!(plan = %due.plan, "plan is running elsewhere; skipped");
            result.error = Some("another run holds the plan".into());
            return Ok(result);
        }
        let run_id = crate::host::new_id();
        let claimed = self
            .catalog
            .claim_occurrence(&due.plan, due.scheduled_for, &run_id, &self.holder)
            .await;
        if !matches!(claimed, Ok(true)) {
            self.catalog.release_lease(&due.plan, &self.holder).await?;
            claimed?;
            tracing::info!(plan = %due.plan, scheduled_for = due.scheduled_for, "occurrence already run; skipped");
            result.error = Some("this occurrence was already run".into());
            return Ok(result);
        }
        let heartbeat = self.heartbeat(&due.plan, lease);
        let outcome = self.run_claimed(due, &run_id, cancel).await;
        heartbeat.abort();
        self.catalog.release_lease(&due.plan, &self.holder).await?;
        let (phase, attempts, report) = outcome?;
        result.run_id = Some(run_id);
        result.attempts = attempts;
        result.outcome = phase.as_str().into();
        match &report {
            Ok(r) => result.snapshot = Some(r.snapshot_name()),
            Err(e) => result.error = Some(format!("{e:#}")),
        }
        self.metrics.record_run(&due.plan, phase, &report);
        Ok(result)
    }

    fn heartbeat(&self, plan: &str, lease: i64) -> tokio::task::JoinHandle<()> {
        let catalog = self.catalog.clone();
        let (plan, holder) = (plan.to_string(), self.holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs((lease / 3).max(1) as u64)).await;
                let now = crate::host::now_secs();
                match catalog
                    .acquire_lease(&plan, &holder, now, now + lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(plan = %plan, "lost the plan lease to another process")
                    }
                    Err(e) => {
                        tracing::warn!(plan = %plan, error = %format!("{e:#}"), "could not renew the plan lease")
                    }
                }
            }
        })
    }

    async fn run_claimed(
        &self,
        due: &Due,
        run_id: &str,
        cancel: &Cancel,
    ) -> Result<(Phase, u32, Result<crate::engine::BackupReport>)> {
        self.catalog
            .begin_run_with_id(
                run_id,
                RunKind::Backup,
                Some(&due.plan),
                Some(due.scheduled_for),
            )
            .await?;
        let mut attempts = 0;
        let report = loop {
            attempts += 1;
            let res = self.attempt_guarded(&due.plan, cancel).await;
            let Err(e) = &res else { break res };
            let code = crate::outcome::code_for(e);
            let permanent = matches!(
                code,
                crate::outcome::USAGE | crate::outcome::KEYS | crate::outcome::INTERRUPTED
            );
            if cancel.is_cancelled() || permanent || attempts > self.options.retries {
                break res;
            }
            let wait = self.options.backoff * 2u32.saturating_pow(attempts - 1);
            tracing::warn!(plan = %due.plan, attempt = attempts, error = %format!("{e:#}"), retry_in = ?wait, "backup failed; retrying");
            if sleep_or_cancel(wait, cancel).await {
                break res;
            }
        };
        crate::engine::record::backup(&self.catalog, run_id, &report, attempts).await?;
        let phase = match &report {
            Ok(r) if r.is_degraded() || r.is_partial() => Phase::Degraded,
            Ok(_) => Phase::Succeeded,
            Err(e) => crate::engine::record::error_phase(e),
        };
        match &report {
            Ok(r) => {
                tracing::info!(plan = %due.plan, snapshot = %r.snapshot_name(), phase = phase.as_str(), "scheduled backup done")
            }
            Err(e) => {
                tracing::error!(plan = %due.plan, error = %format!("{e:#}"), phase = phase.as_str(), "scheduled backup failed")
            }
        }
        let entry = catalog::audit::AuditEntry {
            command: format!("scheduled backup {}", due.plan),
            target: Some(due.plan.clone()),
            outcome: phase.as_str().into(),
            detail: report.as_ref().err().map(|e| format!("{e:#}")),
            ..Default::default()
        };
        if let Err(e) = self.catalog.audit(entry).await {
            tracing::error!(error = %format!("{e:#}"), "could not append to the audit trail");
        }
        Ok((phase, attempts, report))
    }

    /// [`Executor::attempt`] in a task of its own, so that a panic in it is a failed
    /// attempt (recorded, retried, the lease released) rather than a run left `running`.
    async fn attempt_guarded(
        &self,
        plan: &str,
        cancel: &Cancel,
    ) -> Result<crate::engine::BackupReport> {
        let (exec, name, cancel) = (self.clone(), plan.to_string(), cancel.clone());
        match tokio::spawn(async move { exec.attempt(&name, &cancel).await }).await {
            Ok(res) => res,
            Err(e) if e.is_panic() => Err(anyhow::anyhow!(
                "backup of plan {plan} panicked: {} (a bug in lifeboat: please report it)",
                panic_message(e.into_panic())
            )),
            Err(e) => Err(anyhow::anyhow!("backup of plan {plan} was aborted: {e}")),
        }
    }

    /// One backup attempt, cancelled when `cancel` fires or the timeout passes.
    async fn attempt(&self, plan: &str, cancel: &Cancel) -> Result<crate::engine::BackupReport> {
        // A child: a stop request reaches the attempt, the timeout stops only the attempt.
        let run_cancel = cancel.child();
        let watcher = {
            let inner = run_cancel.clone();
            let timeout = self.options.timeout;
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {
                        inner.cancel();
                        true
                    }
                    _ = inner.cancelled() => false,
                }
            })
        };
        fault_panic(plan);
        let res = crate::engine::backup(
            &self.config,
            plan,
            Arc::new(Progress::default()),
            run_cancel.clone(),
        )
        .await;
        let timed_out = watcher.is_finished() && !cancel.is_cancelled();
        watcher.abort();
        match res {
            // A fresh error: the chain's `Cancelled` would make it look like a stop request.
            Err(e) if timed_out => Err(anyhow::anyhow!(
                "backup timed out after {} (stopped: {e})",
                humantime::format_duration(self.options.timeout)
            )),
            other => other,
        }
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(no message)".into()),
    }
}

/// Test builds only: panic once, in the run of `plan`, when the file named by
/// `LIFEBOAT_TEST_PANIC_ONCE` exists (it is removed first), to prove a panicked run is
/// recorded and rescheduled. Compiled out of release builds.
fn fault_panic(plan: &str) {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("LIFEBOAT_TEST_PANIC_ONCE") {
        if std::fs::remove_file(&path).is_ok() {
            panic!("injected panic in the run of plan {plan} (LIFEBOAT_TEST_PANIC_ONCE)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = plan;
}

/// Sleep `d`, or less if `cancel` fires; true when cancelled.
pub async fn sleep_or_cancel(d: Duration, cancel: &Cancel) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => cancel.is_cancelled(),
        _ = cancel.cancelled() => true,
    }
}

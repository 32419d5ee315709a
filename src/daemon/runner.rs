//! The daemon loop: every tick, refresh the objectives status (metrics, alerts), heal
//! regions that missed a snapshot (see [`super::heal`]) and start each due plan that is
//! not already running here; on cancellation (SIGTERM), stop
//! starting runs, let running backups stop at their next chunk (committing nothing), record
//! them as cancelled and return.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use lifeboat_repo::Cancel;
use tokio::task::JoinSet;

use super::alerts::{conditions, key_conditions, Alerter};
use super::{due_plans, metrics, Executor, PlanRun};

pub struct DaemonOptions {
    /// Longest sleep between two looks at the schedule.
    pub tick: Duration,
    /// Where to serve /metrics and /healthz (None: not served).
    pub listen: Option<std::net::SocketAddr>,
    pub alerter: Option<Alerter>,
    /// Rebuild the catalog's snapshot rows from the regions this often (None: never), so a
    /// region losing snapshots out of band shows in `status`, metrics and alerts.
    pub sync_every: Option<Duration>,
}

/// Run until `cancel` fires; returns the runs it finished.
pub async fn run_daemon(
    exec: Executor,
    opts: DaemonOptions,
    cancel: Cancel,
) -> Result<Vec<PlanRun>> {
    let metrics_task = match opts.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("metrics: listen on {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
            Some(tokio::spawn(metrics::serve(
                listener,
                exec.metrics.clone(),
                (opts.tick * 3).max(Duration::from_secs(60)),
            )))
        }
        None => None,
    };
    let mut running: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<(String, Result<PlanRun>)> = JoinSet::new();
    // Which plan (or restore-test key) each task runs, for a task that panics.
    let mut keys: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut finished = Vec::new();
    tracing::info!(holder = %exec.holder, plans = exec.config.plans.len(), "daemon started");
    let mut sync_task: Option<tokio::task::JoinHandle<()>> = None;
    // Healing runs beside backups, one at a time.
    let mut heal_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_sync: Option<std::time::Instant> = None;
    while !cancel.is_cancelled() {
        let now = crate::host::now_secs();
        if let Some(every) = opts.sync_every {
            let idle = sync_task.as_ref().is_none_or(|t| t.is_finished());
            if idle && last_sync.is_none_or(|t| t.elapsed() >= every) {
                last_sync = Some(std::time::Instant::now());
                let (config, catalog) = (exec.config.clone(), exec.catalog.clone());
                sync_task = Some(tokio::spawn(async move {
                    match crate::engine::sync(&config, &catalog, None).await {
                        Ok(r) => tracing::info!(
                            snapshots = r.snapshots,
                            "catalog synced from the regions"
                        ),
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "catalog sync failed"),
                    }
                }));
            }
        }
        if heal_task.as_ref().is_none_or(|t| t.is_finished()) {
            let (exec, cancel) = (exec.clone(), cancel.clone());
            heal_task = Some(tokio::spawn(async move { exec.heal(&cancel).await }));
        }
        let due_drills = exec.due_drills(now).await.unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "drill schedule check failed");
            Vec::new()
        });
        match exec.metrics.refresh(&exec.config, &exec.catalog, now).await {
            Ok(statuses) => {
                if let Some(alerter) = &opts.alerter {
                    let mut current = conditions(&statuses);
                    current.extend(key_conditions(exec.metrics.key_age().as_ref()));
                    match super::maintenance::conditions(&exec.config, &exec.catalog).await {
                        Ok(more) => current.extend(more),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "alerts: prune runs unreadable")
                        }
                    }
                    current.extend(super::drills::gated_conditions(&due_drills));
                    if let Err(e) = alerter.reconcile(&current, now).await {
                        tracing::error!(error = %format!("{e:#}"), "alerts: reconcile failed");
                    }
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "status refresh failed"),
        }
        // Forget + prune never runs beside a backup of the repository (see
        // `daemon::maintenance`): while one of ours runs, due backups wait for the next look.
        let maintenance_key = super::maintenance::occurrence_key("");
        let maintaining = running.iter().any(|k| k.ends_with(&maintenance_key));
        match due_plans(&exec.config, &exec.catalog, now).await {
            Ok(due) if maintaining => {
                tracing::debug!(due = due.len(), "backups wait for forget + prune");
            }
            Ok(due) => {
                for d in due {
                    if !running.insert(d.plan.clone()) {
                        continue;
                    }
                    let (exec, cancel) = (exec.clone(), cancel.clone());
                    let key = d.plan.clone();
                    let task = tasks.spawn(async move {
                        let r = exec.run_plan(&d, &cancel).await;
                        (d.plan, r)
                    });
                    keys.insert(task.id(), key);
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "schedule check failed"),
        }
        // Restore tests (`verify_schedule`) run beside backups, one per plan at a time.
        match super::restore_tests::due_restore_tests(&exec.config, &exec.catalog, now).await {
            Ok(due) => {
                for d in due {
                    let key = super::restore_tests::occurrence_key(&d.plan);
                    if !running.insert(key.clone()) {
                        continue;
                    }
                    let (exec, cancel) = (exec.clone(), cancel.clone());
                    let task_key = key.clone();
                    let task = tasks
                        .spawn(async move { (task_key, exec.run_restore_test(&d, &cancel).await) });
                    keys.insert(task.id(), key);
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "restore test schedule check failed")
            }
        }
        // Drills without a gate run beside the rest, one per runbook at a time.
        for d in due_drills.into_iter().filter(|d| !d.gated) {
            let key = d.key();
            if !running.insert(key.clone()) {
                continue;
            }
            let (exec, cancel) = (exec.clone(), cancel.clone());
            let task_key = key.clone();
            let task = tasks.spawn(async move { (task_key, exec.run_drill(&d, &cancel).await) });
            keys.insert(task.id(), key);
        }
        // Forget + prune (`prune_schedule`), one per plan at a time; the maintenance lock
        // keeps two prunes of the repository apart.
        let backing_up = running.iter().any(|k| !k.contains('#'));
        match super::maintenance::due_maintenance(&exec.config, &exec.catalog, now).await {
            Ok(due) if backing_up => {
                tracing::debug!(
                    due = due.len(),
                    "forget + prune waits for the running backups"
                );
            }
            Ok(due) => {
                for d in due {
                    let key = super::maintenance::occurrence_key(&d.plan);
                    if !running.insert(key.clone()) {
                        continue;
                    }
                    let (exec, cancel) = (exec.clone(), cancel.clone());
                    let task_key = key.clone();
                    let task = tasks
                        .spawn(async move { (task_key, exec.run_maintenance(&d, &cancel).await) });
                    keys.insert(task.id(), key);
                }
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "prune schedule check failed"),
        }
        // Sleep until the tick ends or a run finishes (its plan may be due again). A run that
        // was skipped (its plan busy elsewhere) is due again at once: wait for the tick.
        let sleep = super::sleep_or_cancel(opts.tick, &cancel);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    if collect(joined, &mut keys, &mut running, &mut finished) {
                        break;
                    }
                }
            }
        }
    }
    tracing::warn!(
        running = tasks.len(),
        "stopping: waiting for running backups to stop"
    );
    while let Some(joined) = tasks.join_next_with_id().await {
        let _ = collect(joined, &mut keys, &mut running, &mut finished);
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    // Replication writes each object whole and verified, in dependency order: stopping it
    // leaves nothing half-written.
    if let Some(t) = heal_task {
        let _ = t.await;
    }
    // A sync only reads the regions; the next one redoes an interrupted one.
    if let Some(t) = sync_task {
        t.abort();
    }
    tracing::info!("daemon stopped");
    Ok(finished)
}

/// A finished task: its plan may run again. A task that panicked outside the run (the
/// run itself catches its panics) is logged and its plan freed all the same. True when the
/// run did something (not skipped), so the loop should look at the schedule again now.
fn collect(
    joined: std::result::Result<
        (tokio::task::Id, (String, Result<PlanRun>)),
        tokio::task::JoinError,
    >,
    keys: &mut HashMap<tokio::task::Id, String>,
    running: &mut HashSet<String>,
    finished: &mut Vec<PlanRun>,
) -> bool {
    match joined {
        Ok((id, (plan, result))) => {
            keys.remove(&id);
            running.remove(&plan);
            match result {
                Ok(run) => {
                    let worked = run.outcome != "skipped";
                    finished.push(run);
                    worked
                }
                Err(e) => {
                    tracing::error!(plan = %plan, error = %format!("{e:#}"), "run failed to start or record");
                    false
                }
            }
        }
        Err(e) => {
            let plan = keys.remove(&e.id()).unwrap_or_default();
            running.remove(&plan);
            tracing::error!(plan = %plan, error = %e, "run task panicked; the plan will be scheduled again");
            false
        }
    }
}

/// Run an alerter once against the current status (for `run-due`, which has no loop).
pub async fn alert_once(exec: &Executor, alerter: &Alerter) -> Result<()> {
    let now = crate::host::now_secs();
    let statuses = exec
        .metrics
        .refresh(&exec.config, &exec.catalog, now)
        .await?;
    let mut current = conditions(&statuses);
    current.extend(key_conditions(exec.metrics.key_age().as_ref()));
    current.extend(super::maintenance::conditions(&exec.config, &exec.catalog).await?);
    current.extend(super::drills::gated_conditions(
        &exec.due_drills(now).await?,
    ));
    alerter.reconcile(&current, now).await?;
    Ok(())
}

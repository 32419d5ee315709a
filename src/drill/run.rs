//! Running a drill: the step graph, the guard, interruption and the cleanup that always runs.
//!
//! Steps start as soon as every step in their `after` is done (so independent steps run in
//! parallel, on a tokio `JoinSet`); each attempt runs under the step's timeout, failed
//! attempts are retried `retries` times 1 s apart. A failed step with `on_failure = "abort"`,
//! the `max_duration` guard or an interruption (SIGTERM/SIGINT) cancels the running steps
//! and starts no others. Then, whatever happened, the `[[cleanup]]` steps run and every
//! thing the drill created (scratch directories and databases, a simulated outage) is
//! removed in reverse order of creation, each removal recorded in the ledger. Only then is
//! the report assembled and stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use lifeboat_repo::Cancel;
use tokio::task::JoinSet;

use super::report::{Approval, LedgerEntry, PlanRpo, StepRecord, Throughput};
use super::runbook::{OnFailure, Runbook, Step};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::scratch::ScratchServer;
use crate::storage::RegionFaults;

/// How `drill run` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Approve every gate (needs `approver`).
    pub approve_all: bool,
    /// Approve these gates (needs `approver`).
    pub approve: Vec<String>,
    pub approver: Option<String>,
    /// Ask on the terminal at gates not approved by flag.
    pub interactive: bool,
    /// Print a line per step on stderr.
    pub progress: bool,
}

/// Something the drill created, and how to remove it.
#[derive(Debug, Clone)]
pub enum Undo {
    RemoveDir(PathBuf),
    DropDatabase {
        plan: String,
        admin_url: String,
        name: String,
    },
    /// Roles created on a scratch server for a restore (registered before its database).
    DropRoles {
        plan: String,
        admin_url: String,
        roles: Vec<String>,
    },
    ClearFault(String),
}

/// A restore step's result for one plan, for the verify and sql steps that follow.
#[derive(Debug, Clone)]
pub struct Restored {
    pub kind: String,
    pub snapshot: String,
    pub snapshot_time: i64,
    pub manifest: lifeboat_repo::snapshot::Manifest,
    /// Where the data is: a directory, a database URL (no password), or none (a stream fed to
    /// the verify command).
    pub dir: Option<PathBuf>,
    pub database: Option<String>,
    pub bytes: u64,
    pub files: u64,
    pub restore_ms: i64,
    pub current_bytes: u64,
}

/// The drill's shared, mutable state.
#[derive(Default)]
pub struct State {
    /// `step.field` → value.
    pub outputs: BTreeMap<String, String>,
    pub faults: RegionFaults,
    pub t0_ms: Option<i64>,
    pub ledger: Vec<(LedgerEntry, Undo)>,
    /// (restore step, plan) → what it restored.
    pub restored: BTreeMap<(String, String), Restored>,
    pub approvals: Vec<Approval>,
    pub rpo: Option<Vec<PlanRpo>>,
    /// plan → when its data was last proven usable (end of its restore/verify/sql step).
    pub plan_ready_ms: BTreeMap<String, i64>,
    pub throughput: BTreeMap<String, Throughput>,
}

/// One drill in progress.
pub struct Drill {
    pub id: String,
    pub config: Config,
    pub catalog: Catalog,
    pub book: Runbook,
    pub options: RunOptions,
    /// The drill's own scratch directory (`${drill.scratch}`), under the cache directory.
    pub scratch: PathBuf,
    pub state: Mutex<State>,
}

impl Drill {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record something created, to be removed by cleanup.
    pub fn created(&self, what: String, by: &str, undo: Undo) {
        self.lock().ledger.push((
            LedgerEntry {
                what,
                created_by: by.to_string(),
                created_ms: now_ms(),
                removed: false,
                removed_ms: None,
                error: None,
            },
            undo,
        ));
    }

    pub fn faults(&self) -> RegionFaults {
        self.lock().faults.clone()
    }

    pub fn set_outputs(&self, step: &str, outputs: &BTreeMap<String, String>) {
        let mut st = self.lock();
        for (k, v) in outputs {
            st.outputs.insert(format!("{step}.{k}"), v.clone());
        }
    }

    pub fn interpolate(&self, text: &str) -> Result<String> {
        let outputs = self.lock().outputs.clone();
        super::compare::interpolate(text, &outputs).map_err(anyhow::Error::msg)
    }
}

pub fn now_ms() -> i64 {
    crate::host::now_millis()
}

/// How the steps ended, for the report.
pub struct Ran {
    pub records: Vec<StepRecord>,
    pub deviations: Vec<String>,
    pub interrupted: bool,
    pub failed: bool,
}

/// Run the steps, then the cleanup. Never returns early: cleanup always runs.
pub async fn run_steps(drill: &Arc<Drill>, interrupt: &Cancel) -> Ran {
    let steps = drill.book.steps.clone();
    let mut records: BTreeMap<String, StepRecord> = BTreeMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut started_ids: BTreeSet<String> = BTreeSet::new();
    let mut deviations = Vec::new();
    let mut running: BTreeMap<String, Cancel> = BTreeMap::new();
    let mut set: JoinSet<StepRecord> = JoinSet::new();
    let (mut stopping, mut interrupted, mut failed) = (false, false, false);
    let deadline = tokio::time::Instant::now() + drill.book.max_duration;
    loop {
        if !stopping {
            for s in &steps {
                if started_ids.contains(&s.id) || !s.after.iter().all(|a| done.contains(a)) {
                    continue;
                }
                started_ids.insert(s.id.clone());
                let cancel = Cancel::new();
                running.insert(s.id.clone(), cancel.clone());
                let (d, s) = (drill.clone(), s.clone());
                if d.options.progress {
                    eprintln!("drill: step {} ({}) started", s.id, s.kind.name());
                }
                set.spawn(async move { attempt_step(&d, &s, &cancel, "step").await });
            }
        }
        if set.is_empty() {
            break;
        }
        let mut stop_reason = None;
        tokio::select! {
            joined = set.join_next() => {
                let rec = match joined {
                    Some(Ok(rec)) => rec,
                    Some(Err(e)) => StepRecord { result: "failed".into(), error: Some(format!("step task: {e}")), ..Default::default() },
                    None => continue,
                };
                running.remove(&rec.id);
                if drill.options.progress {
                    eprintln!("drill: step {} {} in {}{}", rec.id, rec.result, super::report::dur(rec.duration_ms.unwrap_or(0)), rec.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default());
                }
                let step = steps.iter().find(|s| s.id == rec.id);
                if rec.attempts > 1 {
                    deviations.push(format!("step {} needed {} attempts", rec.id, rec.attempts));
                }
                if rec.result != "passed" {
                    let continue_ = step.is_some_and(|s| s.on_failure == OnFailure::Continue);
                    deviations.push(format!(
                        "step {} {}{}{}",
                        rec.id,
                        rec.result.replace('_', " "),
                        rec.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                        if continue_ { " (on_failure = continue)" } else { "" }
                    ));
                    if !continue_ && rec.result != "cancelled" {
                        failed = true;
                        stop_reason = Some(format!("step {} {}: drill aborted", rec.id, rec.result.replace('_', " ")));
                    }
                }
                done.insert(rec.id.clone());
                records.insert(rec.id.clone(), rec);
            }
            _ = tokio::time::sleep_until(deadline), if !stopping => {
                failed = true;
                stop_reason = Some(format!("guard tripped: max_duration {} reached", humantime::format_duration(drill.book.max_duration)));
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if !stopping => {
                if interrupt.is_cancelled() {
                    interrupted = true;
                    stop_reason = Some("interrupted (signal): steps cancelled, cleanup runs".into());
                }
            }
        }
        if let Some(reason) = stop_reason {
            if !stopping {
                stopping = true;
                if drill.options.progress {
                    eprintln!("drill: {reason}");
                }
                deviations.push(reason);
                // Every step kind stops on its cancel (a child process is killed), so the
                // loop below only waits for them to return.
                for c in running.values() {
                    c.cancel();
                }
            }
        }
    }
    for s in &steps {
        if !records.contains_key(&s.id) {
            deviations.push(format!("step {} skipped (not reached)", s.id));
            records.insert(
                s.id.clone(),
                StepRecord {
                    id: s.id.clone(),
                    kind: s.kind.name().into(),
                    after: s.after.clone(),
                    result: "skipped".into(),
                    phase: "step".into(),
                    ..Default::default()
                },
            );
        }
    }
    // Records in file order.
    let mut ordered: Vec<StepRecord> = steps.iter().filter_map(|s| records.remove(&s.id)).collect();
    let (cleanup_records, cleanup_deviations) = cleanup(drill).await;
    ordered.extend(cleanup_records);
    deviations.extend(cleanup_deviations);
    Ran {
        records: ordered,
        deviations,
        interrupted,
        failed,
    }
}

/// Run one step with its retries and timeout.
pub async fn attempt_step(
    drill: &Arc<Drill>,
    step: &Step,
    cancel: &Cancel,
    phase: &str,
) -> StepRecord {
    let mut rec = StepRecord {
        id: step.id.clone(),
        kind: step.kind.name().into(),
        after: step.after.clone(),
        started_ms: Some(now_ms()),
        phase: phase.into(),
        ..Default::default()
    };
    loop {
        rec.attempts += 1;
        let res =
            tokio::time::timeout(step.timeout, super::steps::execute(drill, step, cancel)).await;
        match res {
            Ok(Ok(outputs)) => {
                drill.set_outputs(&step.id, &outputs);
                rec.outputs = outputs;
                rec.result = "passed".into();
                rec.error = None;
                break;
            }
            Ok(Err(e)) if cancel.is_cancelled() => {
                rec.result = "cancelled".into();
                rec.error = Some(format!("{e:#}"));
                break;
            }
            Ok(Err(e)) => {
                rec.result = "failed".into();
                rec.error = Some(format!("{e:#}"));
            }
            Err(_) => {
                cancel.cancel();
                rec.result = "timed_out".into();
                rec.error = Some(format!(
                    "no result within its timeout of {}",
                    humantime::format_duration(step.timeout)
                ));
                break;
            }
        }
        if rec.attempts > step.retries || cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let end = now_ms();
    rec.ended_ms = Some(end);
    rec.duration_ms = rec.started_ms.map(|s| end - s);
    rec
}

/// The `[[cleanup]]` steps in file order, then every created thing removed, newest first.
async fn cleanup(drill: &Arc<Drill>) -> (Vec<StepRecord>, Vec<String>) {
    let mut records = Vec::new();
    let mut deviations = Vec::new();
    for step in &drill.book.cleanup {
        let rec = attempt_step(drill, step, &Cancel::new(), "cleanup").await;
        if rec.result != "passed" {
            deviations.push(format!(
                "cleanup step {} {}{}",
                rec.id,
                rec.result,
                rec.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        records.push(rec);
    }
    let entries: Vec<(usize, Undo)> = {
        let st = drill.lock();
        st.ledger
            .iter()
            .enumerate()
            .map(|(i, (_, u))| (i, u.clone()))
            .rev()
            .collect()
    };
    for (i, undo) in entries {
        let res = remove(drill, &undo).await;
        let mut st = drill.lock();
        let entry = &mut st.ledger[i].0;
        entry.removed_ms = Some(now_ms());
        match res {
            Ok(()) => entry.removed = true,
            Err(e) => {
                let text = format!("{e:#}");
                tracing::error!(what = %entry.what, error = %text, "drill cleanup: could not remove; remove it by hand");
                deviations.push(format!("cleanup could not remove {}: {text}", entry.what));
                entry.error = Some(text);
            }
        }
    }
    if drill.options.progress {
        let st = drill.lock();
        eprintln!(
            "drill: cleanup done: {}/{} created things removed",
            st.ledger.iter().filter(|(e, _)| e.removed).count(),
            st.ledger.len()
        );
    }
    (records, deviations)
}

async fn remove(drill: &Drill, undo: &Undo) -> Result<()> {
    match undo {
        Undo::RemoveDir(path) => match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::anyhow!("remove {}: {e}", path.display())),
        },
        Undo::DropDatabase {
            plan,
            admin_url,
            name,
        } => drop_database(&drill.config, plan, admin_url, name).await,
        Undo::DropRoles {
            plan,
            admin_url,
            roles,
        } => drop_roles(&drill.config, plan, admin_url, roles).await,
        Undo::ClearFault(region) => {
            drill.lock().faults.down.remove(region);
            Ok(())
        }
    }
}

/// Drop a drill's scratch database (a cleanup step of the ledger).
pub async fn drop_database(config: &Config, plan: &str, admin_url: &str, name: &str) -> Result<()> {
    ScratchServer::at(config.plan(plan)?, admin_url.to_string())?
        .drop_database(name)
        .await
}

/// Drop the roles a drill created on a scratch server (after its databases).
pub async fn drop_roles(
    config: &Config,
    plan: &str,
    admin_url: &str,
    roles: &[String],
) -> Result<()> {
    ScratchServer::at(config.plan(plan)?, admin_url.to_string())?
        .drop_roles(roles)
        .await
}

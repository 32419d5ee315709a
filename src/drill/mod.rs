//! DR drills from versioned runbooks: parse a runbook ([`runbook`]), show what it would do
//! ([`plan`]), run it ([`run`]: steps, guard, cleanup that always runs), and leave evidence
//! ([`report`], [`html`]) in the catalog and as `drills/<id>` objects in every region.
//!
//! The drill sits above the engine (it restores through `engine` and `storage` with the
//! drill's region faults) and the daemon (whose schedule rules, webhook client and executor
//! it uses: [`Scheduled`] is what the daemon runs due drills through), below the CLI.

pub mod compare;
pub mod html;
mod rds;
pub mod report;
pub mod restore;
pub mod run;
pub mod runbook;
mod schedule;
pub mod steps;

pub use schedule::Scheduled;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use lifeboat_repo::Cancel;
use serde::Serialize;

use self::report::{PlanRto, Report, Rto, RunbookInfo};
use self::run::{now_ms, Drill, RunOptions, State};
use self::runbook::{Runbook, StepKind};
use crate::catalog::audit::AuditEntry;
use crate::catalog::evidence::{DrillPlanResult, DrillRecord};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{open, KeyNeed};

/// The total RTO target: the runbook's, else the smallest of its plans' own.
pub fn total_rto_target_ms(config: &Config, book: &Runbook) -> i64 {
    match book.rto {
        Some(d) => d.as_millis() as i64,
        None => book
            .plans
            .iter()
            .filter_map(|p| config.plan(p).ok())
            .map(|p| p.objectives.rto.as_millis() as i64)
            .min()
            .unwrap_or(2 * 3600 * 1000),
    }
}

/// The commit of the git work tree holding `path`, and whether the file differs from it.
fn git_commit(path: &Path) -> (Option<String>, Option<bool>) {
    let Some(dir) = path.parent() else {
        return (None, None);
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty()) else {
        return (None, None);
    };
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--", &file]).map(|s| !s.is_empty());
    (Some(commit), dirty)
}

/// Run `book` to the end (cleanup included), store the evidence, and return the report.
/// Errors are only what prevents a drill from starting or its evidence from being stored.
pub async fn execute(
    config: &Config,
    catalog: &Catalog,
    book: &Runbook,
    options: RunOptions,
    interrupt: &Cancel,
) -> Result<Report> {
    if let Some(a) = &options.approver {
        anyhow::ensure!(!a.trim().is_empty(), "--approver: give a name");
    }
    anyhow::ensure!(
        !book.plans.is_empty(),
        "runbook {} covers no plan of {} (its `plans` match none): nothing to drill",
        book.id,
        config.path.display()
    );
    // Fail before anything is created when this host cannot decrypt.
    open(config, KeyNeed::Read, None).await?;
    let id = format!("{}-{}", book.id, &crate::host::new_id()[..16]);
    let scratch = config.cache_dir.join("drills").join(&id);
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let operator = options
        .approver
        .clone()
        .unwrap_or_else(crate::catalog::audit::os_user);
    audit(
        catalog,
        &format!("drill start {} ({})", id, book.path.display()),
        "started",
        None,
    )
    .await;
    let drill = Arc::new(Drill {
        id: id.clone(),
        config: config.clone(),
        catalog: catalog.clone(),
        book: book.clone(),
        options,
        scratch: scratch.clone(),
        state: Mutex::new(State::default()),
    });
    {
        let mut st = drill.lock();
        st.outputs.insert("drill.id".into(), id.clone());
        st.outputs
            .insert("drill.scratch".into(), scratch.display().to_string());
        st.outputs
            .insert("drill.runbook".into(), book.path.display().to_string());
        st.outputs.insert(
            "drill.lifeboat".into(),
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "lifeboat".into()),
        );
    }
    drill.created(
        format!("drill scratch directory {}", scratch.display()),
        "drill",
        run::Undo::RemoveDir(scratch.clone()),
    );
    let started_ms = now_ms();
    let ran = run::run_steps(&drill, interrupt).await;
    let ended_ms = now_ms();
    let report = assemble(&drill, ran, started_ms, ended_ms, &operator).await;
    for a in &report.approvals {
        audit(
            catalog,
            &format!("drill approve {} step {}", report.id, a.step),
            &format!("approved by {}", a.approver),
            None,
        )
        .await;
    }
    store(config, catalog, &report).await?;
    audit(
        catalog,
        &format!("drill end {} ({})", report.id, book.path.display()),
        &report.result,
        Some(report.summary()),
    )
    .await;
    Ok(report)
}

async fn audit(catalog: &Catalog, command: &str, outcome: &str, detail: Option<String>) {
    let entry = AuditEntry {
        command: command.to_string(),
        target: None,
        outcome: outcome.to_string(),
        detail,
        ..Default::default()
    };
    if let Err(e) = catalog.audit(entry).await {
        tracing::warn!(error = %format!("{e:#}"), "could not append to the audit trail");
    }
}

async fn assemble(
    drill: &Arc<Drill>,
    ran: run::Ran,
    started_ms: i64,
    ended_ms: i64,
    operator: &str,
) -> Report {
    let book = &drill.book;
    let mut deviations = ran.deviations;
    // RPO: measured by an `assert rpo` step, else now (best effort).
    let rpo_measured = drill.lock().rpo.clone();
    let rpo = match rpo_measured {
        Some(r) => r,
        None => match restore::rpo(drill, &[]).await {
            Ok(r) => r,
            Err(e) => {
                deviations.push(format!("RPO not measured: {e:#}"));
                Vec::new()
            }
        },
    };
    let st = drill.lock();
    let t0 = st.t0_ms;
    let usable = st.plan_ready_ms.values().max().copied();
    let total_target = total_rto_target_ms(&drill.config, book);
    let plans_rto: Vec<PlanRto> = book
        .plans
        .iter()
        .map(|p| {
            let target = book
                .rto
                .or_else(|| drill.config.plan(p).ok().map(|c| c.objectives.rto))
                .map(|d| d.as_millis() as i64)
                .unwrap_or(total_target);
            let achieved = match (t0, st.plan_ready_ms.get(p)) {
                (Some(t0), Some(r)) => Some(r - t0),
                _ => None,
            };
            PlanRto {
                plan: p.clone(),
                target_ms: target,
                achieved_ms: achieved,
                margin_ms: achieved.map(|a| target - a),
                met: achieved.map(|a| a <= target),
            }
        })
        .collect();
    let achieved = match (t0, usable) {
        (Some(t0), Some(u)) => Some(u - t0),
        _ => None,
    };
    let result = if ran.interrupted {
        "interrupted"
    } else if ran.failed
        || ran.records.iter().any(|r| {
            r.phase == "step" && r.result != "passed" && {
                book.steps
                    .iter()
                    .find(|s| s.id == r.id)
                    .is_some_and(|s| s.on_failure == runbook::OnFailure::Abort)
            }
        })
    {
        "failed"
    } else {
        "passed"
    };
    let (git_commit, git_dirty) = git_commit(&book.path);
    Report {
        schema: report::SCHEMA,
        id: drill.id.clone(),
        result: result.into(),
        runbook: RunbookInfo {
            id: book.id.clone(),
            version: book.version,
            path: book.path.display().to_string(),
            sha256: book.sha256.clone(),
            git_commit,
            git_dirty,
            owner: book.owner.clone(),
            scenario: book.scenario.clone(),
            frequency: book.frequency.describe(),
            controls: book.controls.clone(),
        },
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        host: crate::host::hostname(),
        operator: operator.into(),
        started_ms,
        ended_ms,
        t0_ms: t0,
        usable_ms: usable,
        simulated_down: book
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Declare { region_down } => region_down.clone(),
                _ => None,
            })
            .collect(),
        plans: book.plans.clone(),
        regions: book.regions.clone(),
        approvals: st.approvals.clone(),
        steps: ran.records,
        rto: Rto {
            target_ms: total_target,
            achieved_ms: achieved,
            margin_ms: achieved.map(|a| total_target - a),
            met: achieved.map(|a| a <= total_target),
            plans: plans_rto,
        },
        rpo,
        throughput: st.throughput.values().cloned().collect(),
        deviations,
        cleanup: st.ledger.iter().map(|(e, _)| e.clone()).collect(),
        next_due_ms: if result == "passed" {
            book.frequency.next_after(ended_ms / 1000).map(|s| s * 1000)
        } else {
            Some(ended_ms)
        },
    }
}

/// The catalog row of a report.
pub fn record_of(report: &Report) -> DrillRecord {
    DrillRecord {
        id: report.id.clone(),
        runbook: report.runbook.id.clone(),
        runbook_path: report.runbook.path.clone(),
        started_at: report.started_ms / 1000,
        ended_at: report.ended_ms / 1000,
        result: report.result.clone(),
        rto_achieved_ms: report.rto.achieved_ms,
        rpo_achieved_s: report.rpo.iter().filter_map(|p| p.achieved_s).max(),
        plans: report
            .plans
            .iter()
            .map(|p| DrillPlanResult {
                plan: p.clone(),
                rto_achieved_ms: report
                    .rto
                    .plans
                    .iter()
                    .find(|r| &r.plan == p)
                    .and_then(|r| r.achieved_ms),
                rpo_achieved_s: report
                    .rpo
                    .iter()
                    .find(|r| &r.plan == p)
                    .and_then(|r| r.achieved_s),
            })
            .collect(),
        report: report.to_json(),
    }
}

/// Record the report in the catalog and write it to every region (`drills/<id>`). A region
/// that cannot take it is a warning: the catalog and the other regions hold it.
pub async fn store(config: &Config, catalog: &Catalog, report: &Report) -> Result<Vec<String>> {
    catalog.record_drill_run(&record_of(report)).await?;
    let repo = open(config, KeyNeed::Any, None).await?;
    match repo
        .put_drill_report(&report.id, report.to_json().as_bytes())
        .await
    {
        Ok(w) => {
            for (r, e) in &w.failed {
                tracing::warn!(region = %r, error = %e, "drill report not written to this region");
            }
            Ok(w.written)
        }
        Err(e) => {
            tracing::warn!(error = %e, "drill report written to the catalog only");
            Ok(Vec::new())
        }
    }
}

/// The dry run of `drill plan`: what the drill would do, changing nothing.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub runbook: String,
    pub version: i64,
    pub plans: Vec<String>,
    pub regions: Vec<String>,
    pub rto_target_ms: i64,
    pub steps: Vec<PlannedStep>,
    pub cleanup: Vec<String>,
    /// Problems found resolving snapshots (the drill would fail on them).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub kind: String,
    pub after: Vec<String>,
    /// Steps with the same wave may run at the same time.
    pub wave: usize,
    pub does: String,
    pub creates: Vec<String>,
}

pub async fn plan(config: &Config, catalog: &Catalog, book: &Runbook) -> Result<DryRun> {
    let mut problems = Vec::new();
    let repo = match open(config, KeyNeed::Any, None).await {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(format!("repository: {e:#}"));
            None
        }
    };
    let snapshots = match &repo {
        Some(r) => r.list_snapshots().await.unwrap_or_else(|e| {
            problems.push(format!("list snapshots: {e}"));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut waves: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..book.steps.len() {
        for s in &book.steps {
            let w = s
                .after
                .iter()
                .map(|a| waves.get(a).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            waves.insert(s.id.clone(), w);
        }
    }
    let mut steps = Vec::new();
    for s in &book.steps {
        let (does, creates) = match &s.kind {
            StepKind::Declare { region_down } => (
                format!(
                    "start the disaster clock{}",
                    region_down
                        .as_ref()
                        .map(|r| format!("; region {r} fails in-process for the rest of the drill"))
                        .unwrap_or_default()
                ),
                region_down
                    .iter()
                    .map(|r| format!("simulated outage of {r}"))
                    .collect(),
            ),
            StepKind::Restore {
                plans,
                snapshot,
                region,
                into,
                bare_host,
            } => {
                let mut what = Vec::new();
                let mut creates = Vec::new();
                for p in plans {
                    let newest = snapshots.iter().rev().find(|e| &e.manifest.plan == p);
                    let chosen = match snapshot {
                        runbook::Selector::Latest => newest.map(|e| e.id.short()),
                        runbook::Selector::Id(id) => snapshots
                            .iter()
                            .find(|e| {
                                &e.manifest.plan == p && e.id.to_hex().starts_with(id.as_str())
                            })
                            .map(|e| e.id.short()),
                        runbook::Selector::LatestVerified => catalog
                            .last_restore_tests(p)
                            .await
                            .ok()
                            .and_then(|(_, t)| t)
                            .map(|t| t.snapshot[..t.snapshot.len().min(12)].to_string()),
                    };
                    match &chosen {
                        Some(id) => what.push(format!("{p} snapshot {id}")),
                        None => problems.push(format!(
                            "step {}: plan {p}: no snapshot matches {snapshot:?}",
                            s.id
                        )),
                    }
                    let kind = config.plan(p).map(|c| c.source.kind()).unwrap_or("?");
                    creates.push(match (into, kind) {
                        (runbook::Target::Named(t), _) => format!("{p}: restored data in {t}"),
                        (_, "postgres") => format!("{p}: scratch database lifeboat_drill_…"),
                        _ => format!(
                            "{p}: scratch directory under {}",
                            config.cache_dir.join("drills").display()
                        ),
                    });
                }
                (
                    format!(
                        "restore {} from {}{}",
                        what.join(", "),
                        region
                            .clone()
                            .unwrap_or_else(|| config.preferred_region().name.clone()),
                        if *bare_host {
                            " by a bare-host lifeboat process (identity + regions only)"
                        } else {
                            ""
                        }
                    ),
                    creates,
                )
            }
            StepKind::RdsRestore {
                plans,
                snapshot,
                region,
            } => (
                format!(
                    "restore RDS snapshot {snapshot} of {} in {} into a scratch instance, wait, probe, delete it",
                    plans.join(", "),
                    region.as_deref().unwrap_or("each plan's source region")
                ),
                plans
                    .iter()
                    .map(|p| format!("{p}: scratch instance lifeboat-drill-{p}-… (deleted by the step)"))
                    .collect(),
            ),
            StepKind::Verify { on } => (
                format!("compare what {on} restored with the backup's record"),
                vec![],
            ),
            StepKind::Sql {
                on, query, expect, ..
            } => (
                format!("on {on}'s database: {query} expect {expect}"),
                vec![],
            ),
            StepKind::Command {
                run, expect_exit, ..
            } => (format!("run {run:?}, expect exit {expect_exit}"), vec![]),
            StepKind::Approve { prompt } => (format!("gate: {prompt}"), vec![]),
            StepKind::Assert { rto, rpo, that, .. } => (
                format!(
                    "assert{}{}{}",
                    if *rto { " RTO" } else { "" },
                    if *rpo { " RPO" } else { "" },
                    if that.is_empty() {
                        String::new()
                    } else {
                        format!(" {that:?}")
                    }
                ),
                vec![],
            ),
            StepKind::Wait { duration } => (
                format!("wait {}", humantime::format_duration(*duration)),
                vec![],
            ),
            StepKind::Notify { message } => (format!("notify the webhooks: {message}"), vec![]),
        };
        steps.push(PlannedStep {
            id: s.id.clone(),
            kind: s.kind.name().into(),
            after: s.after.clone(),
            wave: waves.get(&s.id).copied().unwrap_or(0),
            does,
            creates,
        });
    }
    Ok(DryRun {
        runbook: book.id.clone(),
        version: book.version,
        plans: book.plans.clone(),
        regions: book.regions.clone(),
        rto_target_ms: total_rto_target_ms(config, book),
        steps,
        cleanup: book
            .cleanup
            .iter()
            .map(|s| format!("{} ({})", s.id, s.kind.name()))
            .collect(),
        problems,
    })
}

/// Every `*.toml` in `dir`, resolved against `config`, in name order; errors per file.
pub fn load_dir(
    dir: &Path,
    config: &Config,
) -> Vec<std::result::Result<Runbook, crate::config::ConfigError>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths.iter().map(|p| runbook::load(p, config)).collect()
}

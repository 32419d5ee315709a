//! Restore tests (`verify --restore`): restore a snapshot into scratch space, compare it with
//! what was recorded at backup time, time it, and never touch the production target.
//!
//! Each kind's test lives with the kind (`engine::kinds`):
//!
//! - `dir`: into a new temporary directory under the cache directory (or `--scratch`);
//!   `restore_tree` compares every file's BLAKE3 with the manifest; then the file count.
//! - `postgres`: into a scratch database created for the test (`lifeboat_verify_…`) on the
//!   plan's `scratch_url` server, which is not the source's (the source's only with
//!   `allow_scratch_on_source = true`; none: a config error), with the snapshot's missing
//!   roles created `NOLOGIN` first; row counts of every table and the plan's SQL probes
//!   (queries from lifeboat.toml, never from the manifest) are compared with the results
//!   recorded at backup; the scratch database and roles are dropped whatever happened.
//! - `command`: the stream is verified (every chunk and the whole BLAKE3) while it feeds the
//!   plan's `verify_command`, run with `LIFEBOAT_SCRATCH_DIR` set to a temporary directory;
//!   without one, the verified stream is the whole test.
//!
//! The duration is what a real disaster-recovery restore pays: opening the repository,
//! listing the snapshots and loading the index (timed as phases of their own, in
//! `phases_ms`), then the restore. Setting up scratch space (a scratch database and its
//! roles), comparing and cleaning up are not part of an RTO and are not timed. A difference
//! of any kind fails the test. The outcome carries every difference found.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use lifeboat_repo::{Cancel, Id, Progress, RepoError};
use serde::Serialize;

use crate::catalog::evidence::RestoreTest;
use crate::catalog::Catalog;
use crate::config::{Config, PlanConfig};
use crate::engine::kinds::{shape, Shape, TestCx};
use crate::engine::{open, KeyNeed};

#[derive(Debug, Clone)]
pub struct RestoreTestRequest {
    /// One plan, or every plan.
    pub plan: Option<String>,
    /// Snapshot id, prefix or `latest` (needs `plan`); default: each plan's newest.
    pub snapshot: Option<String>,
    /// Region to read first.
    pub from: Option<String>,
    /// Parent directory of scratch directories (default: the cache directory).
    pub scratch: Option<PathBuf>,
}

/// The result of one plan's restore test.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestOutcome {
    pub plan: String,
    pub kind: String,
    /// Hex id; empty when the plan has no snapshot.
    pub snapshot: String,
    pub region: String,
    pub started_at: i64,
    /// The RTO this test measured: the sum of `phases_ms`.
    pub duration_ms: i64,
    /// Milliseconds per timed phase: `list` (open the repository, list the snapshots),
    /// `index` (load the index), `restore`; `open` when the first two are one step.
    pub phases_ms: BTreeMap<String, i64>,
    pub bytes: u64,
    /// Bytes per second of the restore.
    pub throughput: f64,
    pub passed: bool,
    /// Every difference found (file, table, probe), or why the restore failed.
    pub differences: Vec<String>,
    /// What was compared.
    pub checked: String,
    /// Said to the operator without failing the test (a superuser scratch role, a probe
    /// with no recorded result).
    pub warnings: Vec<String>,
}

impl RestoreTestOutcome {
    /// The catalog row: `detail` is this outcome as JSON.
    pub fn to_record(&self) -> RestoreTest {
        RestoreTest {
            id: String::new(),
            plan: self.plan.clone(),
            snapshot: self.snapshot.clone(),
            region: self.region.clone(),
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            bytes: self.bytes as i64,
            passed: self.passed,
            detail: serde_json::to_string(&serde_json::json!({
                "kind": self.kind,
                "throughput_bytes_per_second": self.throughput,
                "phases_ms": self.phases_ms,
                "checked": self.checked,
                "differences": self.differences,
                "warnings": self.warnings,
            }))
            .ok(),
        }
    }
}

/// Record an outcome in the catalog's `restore_tests` (what `status` reads).
pub async fn record(catalog: &Catalog, outcome: &RestoreTestOutcome) -> Result<()> {
    catalog.record_restore_test(&outcome.to_record()).await?;
    // An RDS snapshot is verified by a restore that came up (repository snapshots by `verify`).
    if outcome.kind == "rds" && outcome.passed {
        catalog
            .mark_verified(&outcome.snapshot, &outcome.region, outcome.started_at)
            .await?;
    }
    Ok(())
}

/// Run the restore tests asked for, one plan after another. A failed test is an outcome,
/// not an error; errors are what stops every test (bad request, missing identity).
pub async fn restore_tests(
    config: &Config,
    req: &RestoreTestRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<Vec<RestoreTestOutcome>> {
    let plans: Vec<PlanConfig> = match &req.plan {
        Some(p) => vec![config.plan(p)?.clone()],
        None => config.plans.clone(),
    };
    anyhow::ensure!(
        req.snapshot.is_none() || req.plan.is_some(),
        "--snapshot needs --plan (a snapshot belongs to one plan)"
    );
    // A postgres plan without an allowed scratch server is a config error (exit 2) for
    // the whole command, before anything is restored.
    for plan in &plans {
        if plan.source.kind() == "postgres" {
            config.scratch_admin_url(plan)?;
        }
    }
    // rds plans restore from RDS snapshots in AWS regions: no repository, no identity.
    let all_rds = plans.iter().all(|p| p.source.as_rds().is_some());
    if !all_rds {
        if let Some(from) = &req.from {
            config.region(from)?;
        }
        // Fail early, once, when this host cannot decrypt.
        open(config, KeyNeed::Read, req.from.as_deref()).await?;
    }
    let mut out = Vec::new();
    for plan in &plans {
        cancel.check()?;
        out.push(restore_test(config, plan, req, progress.clone(), cancel.clone()).await?);
    }
    Ok(out)
}

/// One plan's restore test.
pub async fn restore_test(
    config: &Config,
    plan: &PlanConfig,
    req: &RestoreTestRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreTestOutcome> {
    let region = req
        .from
        .clone()
        .unwrap_or_else(|| config.preferred_region().name.clone());
    let mut outcome = RestoreTestOutcome {
        plan: plan.name.clone(),
        kind: plan.source.kind().to_string(),
        snapshot: String::new(),
        region,
        started_at: crate::host::now_secs(),
        duration_ms: 0,
        phases_ms: BTreeMap::new(),
        bytes: 0,
        throughput: 0.0,
        passed: false,
        differences: Vec::new(),
        checked: String::new(),
        warnings: Vec::new(),
    };
    let spec = req.snapshot.clone().unwrap_or_else(|| "latest".into());
    let scratch = req
        .scratch
        .clone()
        .unwrap_or_else(|| config.cache_dir.join("restore-tests"));
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let cx = TestCx {
        config,
        plan,
        snapshot: &spec,
        from: req.from.as_deref(),
        scratch: &scratch,
        progress: &progress,
        cancel: &cancel,
    };
    let run = match shape(&plan.source) {
        Shape::Repository(kind) => kind.restore_test(&cx, &mut outcome).await,
        Shape::External(kind) => kind.restore_test(&cx, &mut outcome).await,
    };
    if let Err(e) = run {
        if cancel.is_cancelled() {
            return Err(e);
        }
        outcome.differences.push(format!("{e:#}"));
    }
    outcome.passed = outcome.differences.is_empty();
    let secs = outcome.duration_ms as f64 / 1000.0;
    if secs > 0.0 {
        outcome.throughput = outcome.bytes as f64 / secs;
    }
    Ok(outcome)
}

/// Times a restore test's phases: each [`phase`](Self::phase) ends the phase started at the
/// previous mark, records it in the outcome and makes the duration their sum.
pub(crate) struct RtoTimer {
    mark: Instant,
}

impl RtoTimer {
    pub(crate) fn start() -> RtoTimer {
        RtoTimer {
            mark: Instant::now(),
        }
    }

    /// End the phase `name`.
    pub(crate) fn phase(&mut self, outcome: &mut RestoreTestOutcome, name: &str) {
        let now = Instant::now();
        let ms = now.duration_since(self.mark).as_millis() as i64;
        *outcome.phases_ms.entry(name.to_string()).or_default() += ms;
        outcome.duration_ms = outcome.phases_ms.values().sum::<i64>().max(1);
        self.mark = now;
    }

    /// Leave out the time since the last mark (scratch set-up is not part of an RTO).
    pub(crate) fn skip(&mut self) {
        self.mark = Instant::now();
    }
}

/// A restore error, phrased as the difference it is.
pub(crate) fn explain(e: RepoError, snapshot: &Id) -> anyhow::Error {
    match e {
        RepoError::Corrupt(m) => anyhow::anyhow!("snapshot {} is corrupt: {m}", snapshot.short()),
        other => {
            anyhow::Error::new(other).context(format!("restore snapshot {}", snapshot.short()))
        }
    }
}

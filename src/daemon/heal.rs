//! Healing: after a degraded backup, copy what a region missed as soon as it answers again,
//! without an operator running `lifeboat replicate`.
//!
//! The catalog says when healing is needed: a snapshot recorded as missing from a region of
//! its plan (a degraded backup records that, and so does a sync that finds a region lacking
//! one). `run-due` tries once after its backups; the daemon tries on its ticks. Failed
//! attempts back off — the executor's `backoff`, doubled after each consecutive failed or
//! incomplete heal, at most [`MAX_BACKOFF`] — counted from the catalog's `replicate` runs,
//! so the pace holds across `run-due` invocations and daemon restarts. The copy itself is
//! the repository's [`replicate`](lifeboat_repo::replicate::replicate) (verify each object,
//! then write in dependency order), recorded as a `replicate` run; the catalog's snapshot
//! rows are refreshed from the regions after anything was copied, so the RPO counts the
//! healed snapshot at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use lifeboat_repo::replicate::{replicate, CopyEvent, ReplicateOptions, ReplicateReport};
use lifeboat_repo::{Cancel, Progress};

use crate::catalog::{Catalog, Phase, RunEnd, RunKind};
use crate::config::Config;

/// The longest wait between two heal attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Regions that lack a snapshot of a plan that stores there, as `(plan, region)` pairs.
pub async fn needed(config: &Config, catalog: &Catalog) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for plan in &config.plans {
        for s in catalog.snapshots(Some(&plan.name)).await? {
            for region in plan.regions.iter().filter(|r| !s.present.contains(r)) {
                let pair = (plan.name.clone(), region.clone());
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
    }
    Ok(out)
}

/// When the next heal may start (epoch seconds): now unless recent heals failed.
pub async fn next_attempt(catalog: &Catalog, backoff: Duration) -> Result<i64> {
    let runs = catalog.runs(None, Some(RunKind::Replicate), 32).await?;
    let failed: Vec<_> = runs
        .iter()
        .take_while(|r| matches!(r.phase, Phase::Failed | Phase::Degraded))
        .collect();
    let Some(last) = failed.first() else {
        return Ok(i64::MIN);
    };
    let shift = u32::try_from(failed.len() - 1).unwrap_or(u32::MAX).min(16);
    let wait = backoff
        .saturating_mul(1u32 << shift)
        .min(MAX_BACKOFF)
        .as_secs()
        .max(1);
    let ended = last.ended_at.unwrap_or(last.started_at);
    Ok(ended.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)))
}

/// Copy to every region what it lacks, recorded as a `replicate` run in `catalog` (when
/// given). Used by `lifeboat replicate` and by healing.
pub async fn replicate_recorded(
    config: &Config,
    catalog: Option<&Catalog>,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<ReplicateReport> {
    let regions = crate::storage::regions(config)?;
    // The repository's metadata keys (unwrapped with the writer key or the identity) let
    // replicate check index files and keep each plan's objects in the plan's regions; they
    // are needed when plans store in different regions.
    let plan_regions = crate::engine::plan_regions(config);
    let keys = crate::engine::keyring(config, crate::engine::KeyNeed::Any).ok();
    let have_keys = keys
        .as_ref()
        .is_some_and(|k| k.writer.is_some() || k.identity.is_some());
    let repo = if have_keys || !plan_regions.is_empty() {
        match crate::engine::open(config, crate::engine::KeyNeed::Any, None).await {
            Ok(r) => Some(r),
            Err(e) if plan_regions.is_empty() => {
                tracing::warn!(error = %format!("{e:#}"), "repository not opened; replicating by object names alone");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let opts = ReplicateOptions {
        keys: repo.as_ref().map(|r| r.metadata_keys()),
        plan_regions,
    };
    let on_copy = |e: &CopyEvent| match &e.error {
        None => {
            tracing::info!(region = %e.region, object = %e.object, from = %e.source, bytes = e.bytes, "copied and verified")
        }
        Some(err) => {
            tracing::warn!(region = %e.region, object = %e.object, error = %err, "not copied")
        }
    };
    let run = match catalog {
        Some(c) => c
            .begin_run(RunKind::Replicate, None, None)
            .await
            .map_err(
                |e| tracing::warn!(error = %format!("{e:#}"), "catalog: could not record the run"),
            )
            .ok(),
        None => None,
    };
    let res = replicate(&regions, &opts, progress, cancel, &on_copy).await;
    if let (Some(catalog), Some(run)) = (catalog, &run) {
        record(config, catalog, run, &res).await;
    }
    Ok(res?)
}

/// Heal if the catalog says a region lacks a snapshot and the backoff allows it now.
/// `None` when there was nothing to do (or not yet); the report otherwise.
pub async fn heal_if_needed(
    config: &Config,
    catalog: &Catalog,
    backoff: Duration,
    cancel: &Cancel,
) -> Result<Option<ReplicateReport>> {
    let needed = needed(config, catalog).await?;
    if needed.is_empty() || cancel.is_cancelled() {
        return Ok(None);
    }
    let now = crate::host::now_secs();
    let next = next_attempt(catalog, backoff).await?;
    if now < next {
        tracing::debug!(
            retry_in_seconds = next - now,
            "healing: waiting after a failed attempt"
        );
        return Ok(None);
    }
    let what: Vec<String> = needed.iter().map(|(p, r)| format!("{p} in {r}")).collect();
    tracing::info!(missing = %what.join(", "), "healing: copying what regions missed");
    let report = replicate_recorded(
        config,
        Some(catalog),
        Arc::new(Progress::default()),
        cancel.clone(),
    )
    .await?;
    if report.ok() && report.copied_total() == 0 {
        // Nothing was missing after all (healed out of band): correct the catalog, or it
        // would ask for healing again on every tick.
        crate::engine::sync(config, catalog, None).await?;
    }
    if report.ok() {
        tracing::info!(
            copied = report.copied_total(),
            "healing: every region holds every snapshot"
        );
    } else {
        tracing::warn!(problems = %report.problems.join("; "), "healing incomplete; will retry with backoff");
    }
    Ok(Some(report))
}

/// Record the run, and when objects were copied, refresh the catalog's snapshot cache from
/// the regions, so the RPO (read from the catalog) counts the healed snapshots at once.
/// Best effort, like every catalog write: the object store is the source of truth.
async fn record(
    config: &Config,
    catalog: &Catalog,
    run: &str,
    res: &lifeboat_repo::Result<ReplicateReport>,
) {
    let end = match res {
        Ok(report) => RunEnd {
            phase: Some(if report.ok() {
                Phase::Succeeded
            } else {
                Phase::Degraded
            }),
            bytes: report.regions.values().map(|r| r.bytes).sum(),
            regions: report
                .regions
                .iter()
                .map(|(name, r)| {
                    let state = if r.complete { "ok" } else { "incomplete" };
                    (name.clone(), state.to_string())
                })
                .collect(),
            error: (!report.problems.is_empty()).then(|| report.problems.join("; ")),
            attempts: 1,
            ..Default::default()
        },
        Err(e) => RunEnd {
            phase: Some(Phase::Failed),
            error: Some(e.to_string()),
            attempts: 1,
            ..Default::default()
        },
    };
    if let Err(e) = catalog.end_run(run, &end).await {
        tracing::warn!(error = %format!("{e:#}"), "catalog: could not record the run");
    }
    if res.as_ref().is_ok_and(|r| r.copied_total() > 0) {
        if let Err(e) = crate::engine::sync(config, catalog, None).await {
            tracing::warn!(error = %format!("{e:#}"), "catalog: could not refresh the snapshot cache after replicate (run `lifeboat catalog sync`)");
        }
    }
}

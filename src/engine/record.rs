//! Turning engine results into catalog rows: a backup's run row and its snapshot rows (one
//! per region of the plan, present or not), a restore's run row, the ends of forget and
//! prune runs.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::catalog::{Catalog, Phase, RunEnd};
use crate::engine::retention::ForgetReport;
use crate::engine::{BackupReport, RestoreResult};

/// The phase an error ends a run in.
pub fn error_phase(e: &anyhow::Error) -> Phase {
    if crate::outcome::code_for(e) == crate::outcome::INTERRUPTED {
        Phase::Cancelled
    } else {
        Phase::Failed
    }
}

/// Record a finished backup (run `run_id`, `attempts` tries) and the regions holding its
/// snapshot.
pub async fn backup(
    catalog: &Catalog,
    run_id: &str,
    result: &Result<BackupReport>,
    attempts: u32,
) -> Result<()> {
    let end = match result {
        Ok(r) => {
            let mut regions = BTreeMap::new();
            for name in &r.outcome.complete {
                regions.insert(name.clone(), "ok".to_string());
            }
            for (name, e) in r.unavailable.iter().chain(&r.outcome.failed) {
                regions.insert(name.clone(), e.clone());
            }
            let id = r.snapshot_name();
            // An rds plan's rows (with their copying/failed states) were written by crate::rds.
            for (name, outcome) in regions.iter().filter(|_| r.rds.is_none()) {
                catalog
                    .put_snapshot(&id, &r.outcome.manifest, name, outcome == "ok")
                    .await?;
            }
            RunEnd {
                phase: Some(if r.is_degraded() || r.is_partial() {
                    Phase::Degraded
                } else {
                    Phase::Succeeded
                }),
                bytes: r.outcome.manifest.stats.bytes,
                snapshot: Some(id),
                regions,
                error: None,
                attempts,
            }
        }
        Err(e) => RunEnd {
            phase: Some(error_phase(e)),
            error: Some(format!("{e:#}")),
            attempts,
            ..Default::default()
        },
    };
    catalog.end_run(run_id, &end).await?;
    if let Ok(r) = result {
        catalog
            .set_run_duration(run_id, r.duration.as_millis() as i64)
            .await?;
    }
    Ok(())
}

/// Record a finished restore.
pub async fn restore(
    catalog: &Catalog,
    run_id: &str,
    result: &Result<RestoreResult>,
) -> Result<()> {
    let end = match result {
        Ok(r) => RunEnd {
            phase: Some(Phase::Succeeded),
            bytes: r.report.bytes,
            snapshot: Some(r.snapshot.id.to_hex()),
            regions: r
                .per_region
                .iter()
                .map(|(k, v)| (k.clone(), format!("ok ({v} objects read)")))
                .collect(),
            error: None,
            attempts: 1,
        },
        Err(e) => RunEnd {
            phase: Some(error_phase(e)),
            error: Some(format!("{e:#}")),
            attempts: 1,
            ..Default::default()
        },
    };
    catalog.end_run(run_id, &end).await?;
    if let Ok(r) = result {
        catalog
            .set_run_duration(run_id, r.duration.as_millis() as i64)
            .await?;
    }
    Ok(())
}

/// A run that ended with `e` after `attempts` tries.
pub fn failed(e: &anyhow::Error, attempts: u32) -> RunEnd {
    RunEnd {
        phase: Some(error_phase(e)),
        error: Some(format!("{e:#}")),
        attempts,
        ..Default::default()
    }
}

/// The end of a `forget` run: failed, with the reason, when a safety rule refused a plan.
pub fn forget_end(result: &Result<ForgetReport>) -> RunEnd {
    match result {
        Ok(r) => RunEnd {
            phase: Some(if r.refused() {
                Phase::Failed
            } else {
                Phase::Succeeded
            }),
            error: r.plans.iter().find_map(|p| p.refused.clone()),
            attempts: 1,
            ..Default::default()
        },
        Err(e) => failed(e, 1),
    }
}

/// The end of a `prune` run: bytes freed, and objects deleted in each region.
pub fn prune_end(result: &Result<lifeboat_repo::prune::PruneReport>) -> RunEnd {
    match result {
        Ok(r) => RunEnd {
            phase: Some(Phase::Succeeded),
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
        Err(e) => failed(e, 1),
    }
}

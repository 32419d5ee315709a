//! An rds plan's backup: `CreateDBSnapshot` in the instance's region, wait until it is
//! `available`, then `CopyDBSnapshot` from each `copy_to` region (the source named by ARN,
//! the destination's `KmsKeyId`; no presigned URL outside GovCloud), all copies at once,
//! each waited for on its own; then retention per region.
//!
//! The snapshot counts toward the RPO only when it is available in every region: the
//! catalog rows say `creating`/`copying` until then, and a copy that fails, times out or
//! hits an AWS quota leaves its region `failed` with the reason and the run degraded.
//! A snapshot that never becomes available in the source region fails the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::catalog::{self as rows, RegionState};
use super::retention::{self, Expired};
use super::wait::{snapshot_available, Waiter};
use super::{
    snapshot_name, snapshot_tags, source_of, Rds, COPIES_IN_FLIGHT_QUOTA, MANUAL_SNAPSHOT_QUOTA,
};
use crate::catalog::Catalog;
use crate::config::PlanConfig;

/// What one rds backup did.
#[derive(Debug, Clone, Serialize)]
pub struct RdsBackupReport {
    pub plan: String,
    /// The snapshot identifier, the same in every region.
    pub snapshot: String,
    pub time: i64,
    /// Per region (source first): `available`, or `failed` with the reason.
    pub regions: BTreeMap<String, RegionState>,
    /// Snapshots retention deleted.
    pub expired: Vec<Expired>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub duration: Duration,
}

impl RdsBackupReport {
    /// Not available in every region of the plan.
    pub fn is_degraded(&self) -> bool {
        self.regions.values().any(|s| !s.is_available())
    }
}

/// In-flight snapshot states (what counts toward the copy quota).
fn in_flight(status: &str) -> bool {
    matches!(status, "creating" | "copying" | "pending")
}

/// Refuse before calling AWS when the region is at a quota, with the limit named.
async fn check_quotas(rds: &dyn Rds, region: &str, copying_into: bool) -> Result<()> {
    let list = rds.list_snapshots(region).await?;
    let manual = list.len();
    anyhow::ensure!(
        manual < MANUAL_SNAPSHOT_QUOTA,
        "{region} holds {manual} manual snapshots: AWS allows {MANUAL_SNAPSHOT_QUOTA} per region; lower the plan's keep_* retention or delete snapshots lifeboat does not manage"
    );
    if copying_into {
        let copies = list.iter().filter(|s| in_flight(&s.status)).count();
        anyhow::ensure!(
            copies < COPIES_IN_FLIGHT_QUOTA,
            "{copies} snapshot copies are already in progress into {region}: AWS allows {COPIES_IN_FLIGHT_QUOTA} at once; this copy was not started (the next run tries again)"
        );
    }
    Ok(())
}

/// Back up `plan` (an rds plan) as run `run`, recording region states in `catalog` as they
/// change (best effort: a catalog problem is a warning, never a failed backup).
pub async fn backup(
    rds: Arc<dyn Rds>,
    plan: &PlanConfig,
    run: &str,
    waiter: &Waiter,
    catalog: Option<&Catalog>,
) -> Result<RdsBackupReport> {
    let started = Instant::now();
    let src = source_of(plan)?.clone();
    let time = crate::host::now_secs();
    let id = snapshot_name(&plan.name, time);
    let tags = snapshot_tags(&plan.name, run, &src.tags);
    let row = rows::Row::new(&plan.name, &id, time, &src);
    let mut warnings = Vec::new();
    let note = |w: &mut Vec<String>, r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(error = %format!("{e:#}"), "catalog: could not record an rds snapshot state");
            w.push(format!("catalog: {e:#}"));
        }
    };

    check_quotas(rds.as_ref(), &src.region, false)
        .await
        .with_context(|| format!("plan {}", plan.name))?;
    waiter.cancel.check()?;
    let created = rds
        .create_snapshot(&src.region, &src.instance, &id, &tags)
        .await
        .with_context(|| format!("plan {}: snapshot of instance {}", plan.name, src.instance))?;
    if let Some(c) = catalog {
        note(
            &mut warnings,
            row.put(c, &src.region, &RegionState::pending("creating"))
                .await,
        );
    }
    let source = match snapshot_available(rds.as_ref(), &src.region, &id, waiter).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(c) = catalog {
                note(
                    &mut warnings,
                    row.put(c, &src.region, &RegionState::failed(&format!("{e:#}")))
                        .await,
                );
            }
            return Err(e.context(format!("plan {}", plan.name)));
        }
    };
    let arn = if source.arn.is_empty() {
        created.arn
    } else {
        source.arn
    };
    let mut regions = BTreeMap::new();
    regions.insert(src.region.clone(), RegionState::available());
    if let Some(c) = catalog {
        note(
            &mut warnings,
            row.put(c, &src.region, &RegionState::available()).await,
        );
    }

    // Every copy at once: they run in their own regions; each is waited for on its own.
    let mut copies = tokio::task::JoinSet::new();
    for copy in &src.copy_to {
        let (rds, waiter, arn, id, tags, copy) = (
            rds.clone(),
            waiter.clone(),
            arn.clone(),
            id.clone(),
            tags.clone(),
            copy.clone(),
        );
        copies.spawn(async move {
            let res: Result<()> = async {
                check_quotas(rds.as_ref(), &copy.region, true).await?;
                waiter.cancel.check()?;
                rds.copy_snapshot(&copy.region, &arn, &id, &copy.kms_key_id, &tags)
                    .await?;
                Ok(())
            }
            .await;
            (copy.region, res)
        });
    }
    let mut started_copies = Vec::new();
    while let Some(joined) = copies.join_next().await {
        let (region, res) = joined.context("copy task")?;
        match res {
            Ok(()) => {
                if let Some(c) = catalog {
                    note(
                        &mut warnings,
                        row.put(c, &region, &RegionState::pending("copying")).await,
                    );
                }
                started_copies.push(region);
            }
            Err(e) => {
                let state = RegionState::failed(&format!("{e:#}"));
                if let Some(c) = catalog {
                    note(&mut warnings, row.put(c, &region, &state).await);
                }
                regions.insert(region, state);
            }
        }
    }
    let mut waits = tokio::task::JoinSet::new();
    for region in started_copies {
        let (rds, waiter, id) = (rds.clone(), waiter.clone(), id.clone());
        waits.spawn(async move {
            let res = snapshot_available(rds.as_ref(), &region, &id, &waiter).await;
            (region, res)
        });
    }
    let mut cancelled = None;
    while let Some(joined) = waits.join_next().await {
        let (region, res) = joined.context("copy wait task")?;
        let state = match res {
            Ok(_) => RegionState::available(),
            Err(e) => {
                if crate::outcome::code_for(&e) == crate::outcome::INTERRUPTED {
                    cancelled = Some(e);
                    // The copy goes on in AWS; the next sync or run sees how it ended.
                    RegionState::pending("copying (lifeboat stopped waiting)")
                } else {
                    RegionState::failed(&format!("{e:#}"))
                }
            }
        };
        if let Some(c) = catalog {
            note(&mut warnings, row.put(c, &region, &state).await);
        }
        regions.insert(region, state);
    }
    if let Some(e) = cancelled {
        return Err(e);
    }

    let mut expired = Vec::new();
    if plan.retention != Default::default() {
        match retention::apply(rds.as_ref(), plan, catalog).await {
            Ok((gone, problems)) => {
                expired = gone;
                warnings.extend(problems);
            }
            Err(e) => warnings.push(format!("retention: {e:#}")),
        }
    }
    Ok(RdsBackupReport {
        plan: plan.name.clone(),
        snapshot: id,
        time,
        regions,
        expired,
        warnings,
        duration: started.elapsed(),
    })
}

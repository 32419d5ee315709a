//! Retention of an rds plan's snapshots: the plan's `keep_*` policy, applied per region to
//! the manual snapshots lifeboat created (named `lifeboat-…`, tagged `lifeboat:managed` and
//! the plan). A snapshot without those tags is never deleted, nor the newest available one,
//! nor one still being created or copied, nor a source snapshot whose copy elsewhere is not
//! yet available (deleting it can fail the copy).
//!
//! [`keep`] is the policy: a pure function over snapshot times, restic-like — `keep_last`
//! the N newest; `keep_daily`/`weekly`/`monthly`/`yearly` the newest of each of the N most
//! recent days/ISO weeks/months/years that have a snapshot. It lives here until the
//! repository's retention function (crates/repo `retention`) exists in main to share.

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use chrono::{DateTime, Datelike};
use serde::Serialize;

use super::catalog::{forget, of_plan, time_of};
use super::{source_of, Rds};
use crate::catalog::Catalog;
use lifeboat_repo::retention::Policy;

use crate::config::PlanConfig;

/// One snapshot retention deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expired {
    pub snapshot: String,
    pub region: String,
}

/// A snapshot time's day, ISO week, month or year.
type Bucket = fn(i64) -> i64;

/// Which of `items` (id, epoch seconds) the policy keeps. Every rule off keeps all.
pub fn keep(policy: &Policy, items: &[(String, i64)]) -> HashSet<String> {
    if policy.is_empty() {
        return items.iter().map(|(id, _)| id.clone()).collect();
    }
    let mut sorted: Vec<&(String, i64)> = items.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut kept = HashSet::new();
    if let Some(n) = policy.keep_last {
        kept.extend(sorted.iter().take(n as usize).map(|(id, _)| id.clone()));
    }
    let buckets: [(Option<u32>, Bucket); 4] = [
        (policy.keep_daily, |t| t.div_euclid(86_400)),
        (policy.keep_weekly, |t| {
            let d = DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .iso_week();
            i64::from(d.year()) * 100 + i64::from(d.week())
        }),
        (policy.keep_monthly, |t| {
            let d = DateTime::from_timestamp(t, 0).unwrap_or_default();
            i64::from(d.year()) * 100 + i64::from(d.month())
        }),
        (policy.keep_yearly, |t| {
            i64::from(DateTime::from_timestamp(t, 0).unwrap_or_default().year())
        }),
    ];
    for (n, bucket) in buckets {
        let Some(n) = n else { continue };
        let mut seen = BTreeSet::new();
        for (id, t) in &sorted {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(bucket(*t)) {
                kept.insert(id.clone());
            }
        }
    }
    kept
}

/// Apply the plan's retention in each of its regions. Returns what was deleted and the
/// problems met (a region that could not be listed, a delete that failed).
pub async fn apply(
    rds: &dyn Rds,
    plan: &PlanConfig,
    catalog: Option<&Catalog>,
) -> Result<(Vec<Expired>, Vec<String>)> {
    let src = source_of(plan)?;
    let mut listed = Vec::new();
    let mut problems = Vec::new();
    for region in &plan.regions {
        match rds.list_snapshots(region).await {
            Ok(list) => listed.push((region.clone(), list)),
            Err(e) => problems.push(format!("retention skipped {region}: {e:#}")),
        }
    }
    // A source snapshot whose copy is still running must stay.
    let copying: HashSet<String> = listed
        .iter()
        .filter(|(r, _)| r != &src.region)
        .flat_map(|(_, list)| {
            of_plan(&plan.name, list)
                .filter(|s| s.status != "available")
                .map(|s| s.id.clone())
        })
        .collect();
    let mut expired = Vec::new();
    for (region, list) in &listed {
        let available: Vec<(String, i64)> = of_plan(&plan.name, list)
            .filter(|s| s.status == "available")
            .map(|s| {
                (
                    s.id.clone(),
                    time_of(&plan.name, &s.id).or(s.created).unwrap_or_default(),
                )
            })
            .collect();
        let mut kept = keep(&plan.retention.policy, &available);
        if let Some(newest) = available.iter().max_by_key(|(id, t)| (*t, id.clone())) {
            kept.insert(newest.0.clone());
        }
        for (id, _) in &available {
            if kept.contains(id) || (region == &src.region && copying.contains(id)) {
                continue;
            }
            match rds.delete_snapshot(region, id).await {
                Ok(()) => {
                    tracing::info!(snapshot = %id, region = %region, "retention: deleted rds snapshot");
                    if let Some(c) = catalog {
                        if let Err(e) = forget(c, id, region).await {
                            problems.push(format!("catalog: {e:#}"));
                        }
                    }
                    expired.push(Expired {
                        snapshot: id.clone(),
                        region: region.clone(),
                    });
                }
                Err(e) => problems.push(format!("retention: {e:#}")),
            }
        }
    }
    Ok((expired, problems))
}

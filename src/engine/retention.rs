//! Forget, prune and erasure over a config: each plan's policy evaluated in the plan's zone
//! (by `lifeboat_repo::retention`), the safety rules lifeboat adds, and the deletion of
//! forgotten manifests in every region. Prune and erasure themselves live in the repository
//! crate (`prune`, `erase`); this module supplies the config (grace, zones) and the catalog
//! facts (drills and restore tests in progress).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use lifeboat_repo::retention::{self, Candidate, Civil, Policy};
use lifeboat_repo::{Cancel, Repository};
use serde::Serialize;

use crate::catalog::{Catalog, Phase, RunKind};
use crate::config::{Config, PlanConfig};

/// Default time between prune's mark and delete.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The runaway guard looks at this window.
pub const RUNAWAY_WINDOW: i64 = 7 * 86_400;
/// Snapshots dated later than now + this are treated as forged.
const FUTURE_SLACK: i64 = 3600;

/// Civil time in `zone` (UTC when `None`).
pub fn calendar_for(zone: Option<&str>) -> Result<impl Fn(i64) -> Civil> {
    let tz: Tz = match zone {
        None => Tz::UTC,
        Some(z) => z
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown time zone {z:?}"))?,
    };
    Ok(move |t: i64| {
        let dt = tz
            .timestamp_opt(t, 0)
            .single()
            .unwrap_or_else(|| tz.timestamp_opt(0, 0).single().expect("epoch"));
        let week = dt.iso_week();
        Civil {
            year: dt.year(),
            month: dt.month(),
            day: dt.day(),
            hour: dt.hour(),
            iso_year: week.year(),
            iso_week: week.week(),
        }
    })
}

/// The grace period: `--grace`, else the longest a plan's config asks for, else 24 h.
pub fn grace(config: &Config, flag: Option<Duration>) -> Duration {
    flag.unwrap_or_else(|| {
        config
            .plans
            .iter()
            .filter_map(|p| p.retention.grace)
            .max()
            .unwrap_or(DEFAULT_GRACE)
    })
}

#[derive(Debug, Clone)]
pub struct ForgetRequest {
    pub plan: Option<String>,
    /// `--keep-*` flags: replace every plan's configured policy.
    pub keep: Option<Policy>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotVerdict {
    pub id: String,
    pub time: i64,
    pub regions: Vec<String>,
    /// Why it is kept (empty when forgotten).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PlanForget {
    pub plan: String,
    pub kept: Vec<SnapshotVerdict>,
    pub forgotten: Vec<SnapshotVerdict>,
    /// Set when a safety rule refused to forget anything in this plan.
    pub refused: Option<String>,
    /// Manifests Object Lock keeps for now: (region, object, retain-until).
    pub locked: Vec<(String, String, i64)>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub plans: Vec<PlanForget>,
}

impl ForgetReport {
    pub fn refused(&self) -> bool {
        self.plans.iter().any(|p| p.refused.is_some())
    }
    pub fn forgotten(&self) -> usize {
        self.plans.iter().map(|p| p.forgotten.len()).sum()
    }
}

/// Who is using `plan`'s snapshots now: restore tests and drills (their in-use marks, see
/// `Catalog::use_plans`) and restores still running (a `restore` run in phase `running`
/// started within the last day; an older one belongs to a process that died).
async fn plan_users(catalog: Option<&Catalog>, plan: &str, now: i64) -> Result<Vec<String>> {
    let Some(catalog) = catalog else {
        return Ok(Vec::new());
    };
    let mut out = catalog.plan_users(plan, now).await?;
    for r in catalog.runs(Some(plan), Some(RunKind::Restore), 50).await? {
        if r.phase == Phase::Running && r.started_at > now - 86_400 {
            out.push(format!("restore run {}", r.id));
        }
    }
    Ok(out)
}

/// Apply each plan's policy and delete the forgotten manifests from every region.
/// `runaway_limit(plan)` is the most snapshots the plan's schedule can produce in
/// [`RUNAWAY_WINDOW`] (`None`: no schedule, no guard).
pub async fn forget(
    config: &Config,
    repo: &Arc<Repository>,
    catalog: Option<&Catalog>,
    req: &ForgetRequest,
    now: i64,
    runaway_limit: &(dyn Fn(&PlanConfig) -> Result<Option<usize>> + Sync),
) -> Result<ForgetReport> {
    let plans: Vec<&PlanConfig> = match &req.plan {
        Some(p) => vec![config.plan(p)?],
        None => config.plans.iter().collect(),
    };
    let (all, failed) = repo.list_snapshots_detailed().await?;
    anyhow::ensure!(
        failed.is_empty(),
        "cannot list snapshots in {}: forget needs every region's list to apply the safety rules",
        failed
            .iter()
            .map(|(r, e)| format!("{r} ({e})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut report = ForgetReport {
        dry_run: req.dry_run,
        plans: Vec::new(),
    };
    for plan in plans {
        let mut out = PlanForget {
            plan: plan.name.clone(),
            ..PlanForget::default()
        };
        let snaps: Vec<_> = all
            .iter()
            .filter(|s| s.manifest.plan == plan.name)
            .collect();
        let policy = req.keep.unwrap_or(plan.retention.policy);
        // Which snapshot is complete everywhere is known only with every region listed.
        let down: Vec<&str> = plan
            .regions
            .iter()
            .filter(|r| repo.region_index(r).is_none_or(|i| !repo.is_available(i)))
            .map(String::as_str)
            .collect();
        if !down.is_empty() {
            out.refused = Some(format!(
                "region {} of the plan is unavailable, so which snapshot is complete in every region is not known; nothing was forgotten: run forget again when it answers",
                down.join(", ")
            ));
        }
        if let Some(what) = plan_users(catalog, &plan.name, now).await?.first() {
            out.refused = Some(format!(
                "{what} is using this plan's snapshots; nothing was forgotten: run forget again after it ends"
            ));
        }
        if let Some(limit) = runaway_limit(plan)? {
            let times: Vec<i64> = snaps.iter().map(|s| s.manifest.time).collect();
            if let Some(why) = retention::runaway(&times, now, RUNAWAY_WINDOW, limit, FUTURE_SLACK)
            {
                out.refused = Some(format!(
                    "{why}. Nothing was forgotten. Check the snapshots (`lifeboat snapshots --plan {}`) and the backup hosts; after removing forged snapshots or fixing the clock, run forget again",
                    plan.name
                ));
            }
        }
        // Safety: the newest snapshot complete in every region of the plan, and each
        // region's own newest, are never forgotten.
        let complete = snaps
            .iter()
            .rev()
            .find(|s| plan.regions.iter().all(|r| s.regions.contains(r)))
            .map(|s| s.id);
        let mut region_newest = BTreeMap::new();
        for s in &snaps {
            for r in &s.regions {
                region_newest.insert(r.clone(), s.id);
            }
        }
        let candidates: Vec<Candidate> = snaps
            .iter()
            .map(|s| {
                let mut protected = Vec::new();
                if Some(s.id) == complete {
                    protected.push("newest snapshot complete in every region of the plan".into());
                }
                for (r, id) in &region_newest {
                    if *id == s.id && Some(s.id) != complete {
                        protected.push(format!("newest snapshot in region {r}"));
                    }
                }
                Candidate {
                    id: s.id,
                    time: s.manifest.time,
                    committed_ns: s.manifest.committed_ns,
                    protected,
                }
            })
            .collect();
        let calendar = calendar_for(plan.zone.as_deref())
            .with_context(|| format!("plan {}: zone", plan.name))?;
        let floor = plan.objectives.rpo.as_secs() as i64;
        let decisions = retention::apply(&policy, &candidates, now, floor, &calendar);
        for d in decisions {
            let regions = snaps
                .iter()
                .find(|s| s.id == d.id)
                .map(|s| s.regions.clone())
                .unwrap_or_default();
            let v = SnapshotVerdict {
                id: d.id.to_hex(),
                time: d.time,
                regions,
                reasons: d.reasons,
            };
            if d.keep || out.refused.is_some() {
                out.kept.push(v);
            } else {
                out.forgotten.push(v);
            }
        }
        if out.refused.is_none() && !req.dry_run {
            for v in &out.forgotten {
                let name = format!("snapshots/{}", v.id);
                for r in &v.regions {
                    let Some(i) = repo.region_index(r) else {
                        continue;
                    };
                    let b = &repo.regions[i].backend;
                    if b.object_lock_period().is_some() {
                        if let Some(until) = b.retain_until(&name).await?.filter(|u| *u > now) {
                            out.locked.push((r.clone(), name.clone(), until));
                            continue;
                        }
                    }
                    b.delete(&name)
                        .await
                        .with_context(|| format!("region {r}: delete {name}"))
                        .map_err(maintainer_hint)?;
                }
            }
        }
        report.plans.push(out);
    }
    Ok(report)
}

/// A delete refused for lack of permission: say which role forget and prune need.
pub fn maintainer_hint(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("AccessDenied") || text.contains("Access Denied") {
        e.context("deleting needs the maintainer role: these look like writer credentials, which may add but never delete; run forget/prune with the maintainer role (see docs/retention.md)")
    } else {
        e
    }
}

/// Prune with the config's grace and this host as the lock holder.
pub async fn prune(
    config: &Config,
    repo: &Arc<Repository>,
    grace_flag: Option<Duration>,
    max_unused: f64,
    dry_run: bool,
    cancel: &Cancel,
) -> Result<lifeboat_repo::prune::PruneReport> {
    let opts = lifeboat_repo::prune::PruneOptions {
        grace: grace(config, grace_flag).as_secs() as i64,
        max_unused,
        dry_run,
        now: lifeboat_repo::clock::now_secs(),
        holder: format!("{} pid {}", crate::host::hostname(), std::process::id()),
    };
    lifeboat_repo::prune::prune(repo, &opts, cancel)
        .await
        .map_err(|e| maintainer_hint(e.into()))
}

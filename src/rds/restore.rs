//! Restores of rds plans: into a named instance (`restore PLAN --to-instance NAME`), and
//! restore tests (`verify --restore`) into a temporary `lifeboat-drill-…` instance that is
//! always deleted afterwards — after a pass, a failure, a timeout or a cancellation (the
//! delete call itself is never cancelled). Scratch instances of a killed run are found by
//! their tags and deleted at the start of the next test.
//!
//! A restore test's duration is RTO evidence: the time until the instance was `available`
//! and answered, and, when the plan has `probe_url`, until its SQL probes passed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::catalog::{of_plan, time_of};
use super::wait::{instance_available, Waiter};
use super::{
    scratch_name, scratch_tags, source_of, Instance, Rds, RestoreSpec, Snapshot, SCRATCH_PREFIX,
    TAG_DRILL, TAG_PLAN,
};
use crate::config::{InstanceSettings, PlanConfig, RdsSource};

/// One restore test's result (the engine reports it as a `RestoreTestOutcome`).
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub snapshot: String,
    pub region: String,
    pub started_at: i64,
    /// Until the instance answered, or until the probes passed when there are probes.
    pub duration_ms: i64,
    pub passed: bool,
    pub differences: Vec<String>,
    pub checked: String,
}

/// What the caller may override of the plan's restore settings.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub instance_class: Option<String>,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RdsRestoreReport {
    pub plan: String,
    pub instance: String,
    pub region: String,
    pub snapshot: String,
    pub address: Option<String>,
    pub port: Option<i32>,
    pub seconds: f64,
}

/// The snapshot to restore in `region`: `latest` (the newest available one of the plan)
/// or an identifier, which must be one of the plan's available snapshots.
pub async fn pick_snapshot(
    rds: &dyn Rds,
    plan: &PlanConfig,
    region: &str,
    which: &str,
) -> Result<Snapshot> {
    let list = rds.list_snapshots(region).await?;
    let mut ours: Vec<&Snapshot> = of_plan(&plan.name, &list)
        .filter(|s| s.status == "available")
        .collect();
    ours.sort_by_key(|s| {
        (
            time_of(&plan.name, &s.id).or(s.created).unwrap_or_default(),
            s.id.clone(),
        )
    });
    let found = if which == "latest" {
        ours.last().copied()
    } else {
        ours.iter().copied().find(|s| s.id == which)
    };
    found.cloned().with_context(|| {
        let known: Vec<&str> = ours.iter().rev().take(5).map(|s| s.id.as_str()).collect();
        format!(
            "plan {}: no available snapshot {which:?} in {region} (newest there: {}); `lifeboat snapshots --plan {}` lists them",
            plan.name,
            if known.is_empty() { "none".to_string() } else { known.join(", ") },
            plan.name
        )
    })
}

fn spec(
    src: &RdsSource,
    instance: &str,
    snapshot: &str,
    o: &Overrides,
    tags: std::collections::BTreeMap<String, String>,
) -> RestoreSpec {
    RestoreSpec {
        instance: instance.to_string(),
        snapshot: snapshot.to_string(),
        settings: InstanceSettings {
            instance_class: o
                .instance_class
                .clone()
                .or_else(|| src.restore.instance_class.clone()),
            subnet_group: o
                .subnet_group
                .clone()
                .or_else(|| src.restore.subnet_group.clone()),
            security_groups: if o.security_groups.is_empty() {
                src.restore.security_groups.clone()
            } else {
                o.security_groups.clone()
            },
            ..src.restore.clone()
        },
        tags,
    }
}

fn check_region(plan: &PlanConfig, region: &str) -> Result<()> {
    anyhow::ensure!(
        plan.regions.iter().any(|r| r == region),
        "plan {}: its snapshots live in {}, not {region:?}",
        plan.name,
        plan.regions.join(", ")
    );
    Ok(())
}

/// What `restore PLAN --to-instance NAME` asks for.
#[derive(Debug, Clone)]
pub struct InstanceRequest<'a> {
    /// The new instance.
    pub to: &'a str,
    /// AWS region (default: the source's).
    pub from: Option<&'a str>,
    /// `latest` or a snapshot identifier.
    pub snapshot: &'a str,
    pub overrides: Overrides,
}

/// Restore into a new instance `req.to` and wait until it is available.
pub async fn restore_instance(
    rds: Arc<dyn Rds>,
    plan: &PlanConfig,
    req: &InstanceRequest<'_>,
    run: &str,
    waiter: &Waiter,
) -> Result<RdsRestoreReport> {
    let (to, from, which, o) = (req.to, req.from, req.snapshot, &req.overrides);
    let src = source_of(plan)?;
    anyhow::ensure!(crate::config::valid_identifier(to), "--to-instance {to:?} is not a valid DB instance identifier (1–63 letters, digits or hyphens, starting with a letter)");
    let region = from.unwrap_or(&src.region);
    check_region(plan, region)?;
    if rds.describe_instance(region, to).await?.is_some() {
        anyhow::bail!(
            "instance {to} already exists in {region}: lifeboat restores only into a new instance"
        );
    }
    let snap = pick_snapshot(rds.as_ref(), plan, region, which).await?;
    let started = Instant::now();
    let mut tags = src.tags.clone();
    tags.insert(TAG_PLAN.into(), plan.name.clone());
    tags.insert(super::TAG_RUN.into(), run.into());
    rds.restore_instance(region, &spec(src, to, &snap.id, o, tags))
        .await?;
    let inst = instance_available(rds.as_ref(), region, to, waiter).await?;
    Ok(RdsRestoreReport {
        plan: plan.name.clone(),
        instance: to.to_string(),
        region: region.to_string(),
        snapshot: snap.id,
        address: inst.address,
        port: inst.port,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Delete the plan's scratch instances left behind (killed runs), in every region of the
/// plan; returns the ones deleted. Only instances named `lifeboat-drill-…` and tagged
/// `lifeboat:drill=true` and with the plan are touched.
pub async fn remove_leftovers(
    rds: &dyn Rds,
    plan: &PlanConfig,
    except: Option<&str>,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for region in &plan.regions {
        for inst in rds.list_instances(region).await? {
            if inst.id.starts_with(SCRATCH_PREFIX)
                && inst.tags.get(TAG_DRILL).is_some_and(|v| v == "true")
                && inst.tags.get(TAG_PLAN) == Some(&plan.name)
                && Some(inst.id.as_str()) != except
                && inst.status != "deleting"
            {
                tracing::warn!(instance = %inst.id, region = %region, "deleting a scratch instance a previous restore test left behind");
                rds.delete_instance(region, &inst.id).await?;
                removed.push(format!("{region}/{}", inst.id));
            }
        }
    }
    Ok(removed)
}

/// `postgres://user@/db` + the instance's endpoint → `postgres://user@HOST:PORT/db`; a URL
/// that names a host (a tunnel, a test server) is used as it is.
pub fn probe_url_for(url: &str, inst: &Instance) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("probe_url is not a URL")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if !host.is_empty() {
        return Ok(url.to_string());
    }
    let address = inst
        .address
        .as_deref()
        .context("the restored instance reports no endpoint")?;
    let port = inst.port.unwrap_or(5432);
    Ok(match user {
        Some(u) => format!("{scheme}://{u}@{address}:{port}{tail}"),
        None => format!("{scheme}://{address}:{port}{tail}"),
    })
}

/// Run the plan's probes (or `select 1`) against the restored instance.
async fn probe(src: &RdsSource, inst: &Instance) -> Result<usize> {
    let Some(url) = &src.probe_url else {
        return Ok(0);
    };
    let url = probe_url_for(url, inst)?;
    let password = match &src.password {
        Some(p) => Some(p.load().context("source password")?),
        None => None,
    };
    let target = crate::source::postgres::PgTarget {
        url: &url,
        password: password.as_ref(),
    };
    let mut conn = target.connect().await?;
    crate::source::postgres::run_probe(&mut conn, "select 1").await?;
    for p in &src.probes {
        crate::source::postgres::run_probe(&mut conn, &p.sql)
            .await
            .with_context(|| format!("probe {:?}", p.name))?;
    }
    Ok(src.probes.len() + 1)
}

/// One restore test of an rds plan: newest available snapshot of `from` (default: the
/// source region) into a scratch instance, wait, probe, delete. A failure is an outcome;
/// an error is returned only when the test could not start or was interrupted (the scratch
/// instance is deleted first in both cases).
pub async fn restore_test(
    rds: Arc<dyn Rds>,
    plan: &PlanConfig,
    from: Option<&str>,
    which: &str,
    run: &str,
    waiter: &Waiter,
) -> Result<TestResult> {
    let src = source_of(plan)?;
    let region = from.unwrap_or(&src.region).to_string();
    check_region(plan, &region)?;
    let removed = remove_leftovers(rds.as_ref(), plan, None).await?;
    let snap = pick_snapshot(rds.as_ref(), plan, &region, which).await?;
    let started_at = crate::host::now_secs();
    let scratch = scratch_name(&plan.name, started_at);
    let mut outcome = TestResult {
        snapshot: snap.id.clone(),
        region: region.clone(),
        started_at,
        duration_ms: 0,
        passed: false,
        differences: Vec::new(),
        checked: String::new(),
    };
    let started = Instant::now();
    let tags = scratch_tags(&plan.name, run, &src.tags);
    let res: Result<(Instance, f64, usize)> = async {
        rds.restore_instance(
            &region,
            &spec(src, &scratch, &snap.id, &Overrides::default(), tags),
        )
        .await?;
        let inst = instance_available(rds.as_ref(), &region, &scratch, waiter).await?;
        let answered = started.elapsed().as_secs_f64();
        let probes = probe(src, &inst).await?;
        Ok((inst, answered, probes))
    }
    .await;
    outcome.duration_ms = started.elapsed().as_millis() as i64;
    // Always: the scratch instance goes, whatever happened above.
    let cleanup = rds.delete_instance(&region, &scratch).await;
    match (&res, &cleanup) {
        (Ok((_, answered, probes)), Ok(())) => {
            outcome.passed = true;
            outcome.checked = if *probes > 0 {
                format!("instance {scratch} available after {answered:.1}s; {probes} SQL probe(s) passed after {:.1}s; deleted", outcome.duration_ms as f64 / 1000.0)
            } else {
                format!("instance {scratch} available after {answered:.1}s (no probe_url: not queried); deleted")
            };
        }
        _ => {
            if let Err(e) = &res {
                outcome.differences.push(format!("{e:#}"));
            }
            if let Err(e) = &cleanup {
                outcome.differences.push(format!("the scratch instance {scratch} could not be deleted; the next restore test retries: {e:#}"));
            }
            outcome.checked = format!("instance {scratch}");
        }
    }
    if !removed.is_empty() {
        outcome
            .checked
            .push_str(&format!("; removed leftovers: {}", removed.join(", ")));
    }
    if let Err(e) = res {
        if crate::outcome::code_for(&e) == crate::outcome::INTERRUPTED {
            return Err(e);
        }
    }
    Ok(outcome)
}

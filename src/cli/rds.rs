//! The commands of rds plans: `backup`, `restore --to-instance`, `snapshots` (from the
//! catalog, with each region's state) — the rds engine (`crate::rds`) with a run row in
//! the catalog, progress on stderr and the documented exit codes (3 when a copy failed).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::json;

use super::exit;
use super::output::{cancel_on_signals, print_json};
use super::render::{table, time};
use crate::catalog::{Catalog, Phase, RunEnd, RunKind};
use crate::config::{Config, PlanConfig};
use crate::rds::wait::Waiter;
use crate::rds::{self, source_of};

/// Open the catalog and begin a run row, best effort.
async fn begin(config: &Config, kind: RunKind, plan: &str) -> (Option<Catalog>, String) {
    let catalog = super::history::open(config).await;
    let mut run = crate::host::new_id();
    if let Some(c) = &catalog {
        match c.begin_run(kind, Some(plan), None).await {
            Ok(id) => run = id,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "catalog: could not record the run")
            }
        }
    }
    (catalog, run)
}

async fn end(catalog: &Option<Catalog>, run: &str, end: RunEnd) {
    if let Some(c) = catalog {
        if let Err(e) = c.end_run(run, &end).await {
            tracing::warn!(error = %format!("{e:#}"), "catalog: could not record the run");
        }
    }
}

fn failed_end(e: &anyhow::Error) -> RunEnd {
    RunEnd {
        phase: Some(crate::engine::record::error_phase(e)),
        error: Some(format!("{e:#}")),
        attempts: 1,
        ..Default::default()
    }
}

pub async fn backup(config: &Config, plan: &PlanConfig, json: bool) -> Result<u8> {
    let src = source_of(plan)?;
    if !json {
        eprintln!(
            "backup {}: snapshot of RDS instance {} in {}",
            plan.name, src.instance, src.region
        );
    }
    let history = super::history::History::begin(config, RunKind::Backup, Some(&plan.name)).await;
    let progress = std::sync::Arc::new(lifeboat_repo::Progress::default());
    let res = crate::engine::backup(config, &plan.name, progress, cancel_on_signals()).await;
    history.end_backup(&res).await;
    let report = res?;
    let r = report
        .rds
        .as_ref()
        .context("an rds plan's backup returned no rds report")?;
    if json {
        print_json(&json!({
            "plan": r.plan,
            "snapshot": r.snapshot,
            "time": r.time,
            "regions": r.regions,
            "degraded": r.is_degraded(),
            "expired": r.expired,
            "warnings": r.warnings,
            "duration_seconds": r.duration.as_secs_f64(),
        }));
    } else {
        let ok: Vec<&str> = r
            .regions
            .iter()
            .filter(|(_, s)| s.is_available())
            .map(|(k, _)| k.as_str())
            .collect();
        println!(
            "rds snapshot {} of {}: available in {} ({:.1}s)",
            r.snapshot,
            r.plan,
            ok.join(", "),
            r.duration.as_secs_f64()
        );
        for e in &r.expired {
            println!("retention: deleted {} in {}", e.snapshot, e.region);
        }
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    if r.is_degraded() {
        for (region, s) in r.regions.iter().filter(|(_, s)| !s.is_available()) {
            eprintln!(
                "lifeboat: DEGRADED: {region}: {}",
                s.detail.as_deref().unwrap_or(&s.state)
            );
        }
        eprintln!("lifeboat: the snapshot does not count toward the RPO until it is available in every region");
        return Ok(exit::DEGRADED);
    }
    Ok(exit::OK)
}

pub struct RestoreArgs<'a> {
    pub request: crate::rds::restore::InstanceRequest<'a>,
    pub json: bool,
}

pub async fn restore(config: &Config, plan: &PlanConfig, a: &RestoreArgs<'_>) -> Result<u8> {
    let src = source_of(plan)?;
    let (catalog, run) = begin(config, RunKind::Restore, &plan.name).await;
    let waiter = Waiter::of(src, cancel_on_signals());
    let res = rds::restore_instance(rds::client(src), plan, &a.request, &run, &waiter).await;
    let r = match res {
        Ok(r) => r,
        Err(e) => {
            end(&catalog, &run, failed_end(&e)).await;
            return Err(e);
        }
    };
    end(
        &catalog,
        &run,
        RunEnd {
            phase: Some(Phase::Succeeded),
            snapshot: Some(r.snapshot.clone()),
            regions: [(r.region.clone(), format!("ok (instance {})", r.instance))].into(),
            attempts: 1,
            ..Default::default()
        },
    )
    .await;
    if a.json {
        print_json(&serde_json::to_value(&r)?);
    } else {
        println!(
            "restored rds snapshot {} of {} into instance {} in {} ({:.1}s); endpoint {}:{}",
            r.snapshot,
            r.plan,
            r.instance,
            r.region,
            r.seconds,
            r.address.as_deref().unwrap_or("(none reported)"),
            r.port.map(|p| p.to_string()).unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

/// `snapshots --plan P` of an rds plan: the catalog's rows with each region's state.
pub async fn snapshots(config: &Config, plan: &PlanConfig, json: bool) -> Result<u8> {
    let catalog = Catalog::open(config.catalog_url()?).await?;
    let list = catalog.snapshots(Some(&plan.name)).await?;
    let states = rds::catalog::states(&catalog, &plan.name).await?;
    let state = |id: &str, region: &str| states.get(&(id.to_string(), region.to_string())).cloned();
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                let regions: BTreeMap<&String, _> = plan.regions.iter().map(|r| (r, state(&s.id, r))).collect();
                json!({ "id": s.id, "plan": s.plan, "time": s.time, "source": s.source, "regions": regions,
                        "complete": s.complete_in(&plan.regions), "verified": s.verified })
            })
            .collect();
        print_json(&json!(v));
        return Ok(exit::OK);
    }
    if list.is_empty() {
        println!("no snapshots of {} in the catalog (run `lifeboat backup {}` or `lifeboat catalog sync`)", plan.name, plan.name);
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let per: Vec<String> = plan
                .regions
                .iter()
                .map(|r| match state(&s.id, r) {
                    Some(st) if st.is_available() => format!("{r}:available"),
                    Some(st) => format!("{r}:{}", st.state),
                    None => format!("{r}:absent"),
                })
                .collect();
            let complete = s.complete_in(&plan.regions);
            vec![
                s.id.clone(),
                time(s.time),
                per.join(" "),
                if complete {
                    "yes".into()
                } else {
                    "no (copying or failed)".into()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["SNAPSHOT", "TIME", "REGIONS", "COMPLETE"], &rows)
    );
    Ok(exit::OK)
}

/// The plan named `name` if it is an rds plan.
pub fn rds_plan<'c>(config: &'c Config, name: &str) -> Option<&'c PlanConfig> {
    config
        .plan(name)
        .ok()
        .filter(|p| p.source.as_rds().is_some())
}

/// `catalog sync` for rds plans (after the repository's).
pub async fn sync(
    config: &Config,
    catalog: &Catalog,
    json: bool,
) -> Result<Option<rds::catalog::RdsSyncReport>> {
    if !config.plans.iter().any(|p| p.source.as_rds().is_some()) {
        return Ok(None);
    }
    let report = rds::catalog::sync(config, catalog, &rds::client).await?;
    if !json {
        println!(
            "rds: {} snapshots recorded from {}",
            report.snapshots,
            report.listed.join(", ")
        );
        for (r, e) in &report.unreachable {
            println!("warning: rds {r} not listed ({e}); its rows were kept as they were");
        }
    }
    Ok(Some(report))
}

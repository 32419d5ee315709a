//! `catalog sync`: rebuild the snapshot cache from the object store, the source of truth.
//!
//! With `from`, manifests are read (and decrypted) from that one region alone — the
//! disaster case, when the other region or the old catalog is gone. Every other region is
//! then only listed (`snapshots/` names, no reads) to record where each snapshot is
//! present; a region that cannot be listed is left out and reported, so its snapshots show
//! as not complete rather than as falsely present.
//!
//! Drill history comes back too: every `drills/<id>` report the regions hold that the
//! catalog lacks is read, decrypted and recorded (fields per the report schema in
//! docs/runbooks.md), so drill age and `drill report` survive the loss of the catalog. So
//! does the audit trail: entries the regions' `audit/` checkpoints hold and the catalog
//! lacks (or holds rewritten) are authenticated and put back (`engine::audit::sync`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use lifeboat_repo::repo::RegionState;
use lifeboat_repo::Repository;
use serde::Serialize;

use crate::catalog::evidence::{DrillPlanResult, DrillRecord};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{keyring, KeyNeed};

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The region manifests were read from (all reachable regions when none was named).
    pub from: Option<String>,
    pub snapshots: usize,
    /// Drill reports found in the regions, and how many of them were new to the catalog.
    pub drills: usize,
    pub drills_restored: usize,
    /// Regions whose snapshot list was recorded.
    pub listed: Vec<String>,
    /// Regions that could not be listed, with the reason.
    pub unreachable: Vec<(String, String)>,
    /// The audit trail brought back from the regions' checkpoints, or why it was not.
    pub audit: std::result::Result<crate::engine::audit::TrailSync, String>,
}

pub async fn sync(config: &Config, catalog: &Catalog, from: Option<&str>) -> Result<SyncReport> {
    // Rows written after this (by a backup committing while we list) are newer than our
    // listing and must survive it.
    let started = crate::host::now_secs();
    let all = crate::storage::regions(config)?;
    let read_from: Vec<_> = match from {
        Some(name) => {
            config.region(name)?;
            all.iter().filter(|r| r.name == name).cloned().collect()
        }
        None => all.clone(),
    };
    let keys = keyring(config, KeyNeed::Any)?;
    let repo = std::sync::Arc::new(
        Repository::open_pinned(read_from, keys, from, &config.keys.pins)
            .await
            .context("open the repository")?,
    );
    if let Some(name) = from {
        if let Some(RegionState::Unavailable(e)) = repo.states.first() {
            anyhow::bail!("region {name}: {e}");
        }
    }
    let (entries, list_failed) = repo
        .list_snapshots_detailed()
        .await
        .context("list snapshots")?;
    // Which regions hold each manifest, per region that answered its listing.
    let mut listed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unreachable = list_failed;
    for (region, state) in repo.regions.iter().zip(&repo.states) {
        match state {
            RegionState::Ok if !unreachable.iter().any(|(r, _)| r == &region.name) => {
                listed.entry(region.name.clone()).or_default();
            }
            RegionState::Ok => {}
            RegionState::Unavailable(e) => unreachable.push((region.name.clone(), e.clone())),
        }
    }
    for entry in &entries {
        for region in &entry.regions {
            listed
                .entry(region.clone())
                .or_default()
                .insert(entry.id.to_hex());
        }
    }
    if from.is_some() {
        for region in all.iter().filter(|r| Some(r.name.as_str()) != from) {
            match region.backend.list("snapshots/").await {
                Ok(objects) => {
                    let ids = objects
                        .into_iter()
                        .map(|o| o.name.trim_start_matches("snapshots/").to_string())
                        .collect();
                    listed.insert(region.name.clone(), ids);
                }
                Err(e) => unreachable.push((region.name.clone(), e.to_string())),
            }
        }
    }
    for (region, ids) in &listed {
        for entry in &entries {
            let id = entry.id.to_hex();
            catalog
                .put_snapshot(&id, &entry.manifest, region, ids.contains(&id))
                .await?;
        }
        // Rows for snapshots that no longer exist anywhere readable go.
        let known: BTreeSet<String> = entries.iter().map(|e| e.id.to_hex()).collect();
        for row in catalog.snapshots(None).await? {
            // rds plans' rows are RDS snapshots, synced from RDS (crate::rds::catalog).
            if !known.contains(&row.id) && !crate::rds::catalog::is_rds_row(&row.source) {
                catalog
                    .delete_snapshot_row(&row.id, region, started)
                    .await?;
            }
        }
    }
    let (drills, drills_restored) = sync_drills(&repo, catalog).await?;
    let audit = crate::engine::audit::sync(config, catalog, repo.clone())
        .await
        .map_err(|e| format!("{e:#}"));
    for (region, e) in &unreachable {
        tracing::warn!(region = %region, error = %e, "catalog sync: region not listed; its snapshots show as not complete");
    }
    Ok(SyncReport {
        from: from.map(str::to_string),
        snapshots: entries.len(),
        drills,
        drills_restored,
        listed: listed.into_keys().collect(),
        unreachable,
        audit,
    })
}

/// Record every drill report of the regions that the catalog does not have.
async fn sync_drills(repo: &Repository, catalog: &Catalog) -> Result<(usize, usize)> {
    let (objects, _failed) = repo
        .list_drill_reports()
        .await
        .context("list drill reports")?;
    let mut restored = 0;
    for o in &objects {
        if catalog.drill_report(&o.id).await?.is_some() {
            continue;
        }
        let bytes = match repo.get_drill_report(&o.id).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(drill = %o.id, error = %e, "catalog sync: drill report unreadable; skipped");
                continue;
            }
        };
        match drill_record(&bytes) {
            Ok(record) if record.id == o.id => {
                if catalog.record_drill_run(&record).await? {
                    restored += 1;
                }
            }
            Ok(record) => {
                tracing::warn!(object = %o.id, inside = %record.id, "catalog sync: drill report names another id; skipped")
            }
            Err(e) => {
                tracing::warn!(drill = %o.id, error = %format!("{e:#}"), "catalog sync: drill report not understood; skipped")
            }
        }
    }
    Ok((objects.len(), restored))
}

/// The catalog row of a stored report (schema 1: docs/runbooks.md, "Report schema").
fn drill_record(bytes: &[u8]) -> Result<DrillRecord> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(bytes).context("report JSON")?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    let id = text(&v["id"]).context("report without an id")?;
    let plan_rto = |plan: &str| {
        v["rto"]["plans"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["plan"] == plan))
            .and_then(|p| p["achieved_ms"].as_i64())
    };
    let plan_rpo = |plan: &str| {
        v["rpo"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["plan"] == plan))
            .and_then(|p| p["achieved_s"].as_i64())
    };
    let plans = v["plans"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(DrillRecord {
        id,
        runbook: text(&v["runbook"]["id"]).unwrap_or_default(),
        runbook_path: text(&v["runbook"]["path"]).unwrap_or_default(),
        started_at: v["started_ms"].as_i64().unwrap_or(0) / 1000,
        ended_at: v["ended_ms"].as_i64().unwrap_or(0) / 1000,
        result: text(&v["result"]).unwrap_or_else(|| "failed".into()),
        rto_achieved_ms: v["rto"]["achieved_ms"].as_i64(),
        rpo_achieved_s: plans.iter().filter_map(|p| plan_rpo(p)).max(),
        plans: plans
            .iter()
            .map(|p| DrillPlanResult {
                plan: p.to_string(),
                rto_achieved_ms: plan_rto(p),
                rpo_achieved_s: plan_rpo(p),
            })
            .collect(),
        report: String::from_utf8_lossy(bytes).into_owned(),
    })
}

impl Catalog {
    /// Delete the row of `id` in `region` unless it was written at or after `seen_before`.
    pub async fn delete_snapshot_row(
        &self,
        id: &str,
        region: &str,
        seen_before: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1 AND region = $2 AND seen_at < $3")
            .bind(id.to_string())
            .bind(region.to_string())
            .bind(seen_before)
            .execute(self.pool())
            .await
            .context("catalog: delete snapshot row")?;
        Ok(())
    }
}

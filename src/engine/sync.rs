//! `catalog sync`: rebuild the snapshot cache from the object store, the source of truth.
//!
//! With `from`, manifests are read (and decrypted) from that one region alone — the
//! disaster case, when the other region or the old catalog is gone. Every other region is
//! then only listed (`snapshots/` names, no reads) to record where each snapshot is
//! present; a region that cannot be listed is left out and reported, so its snapshots show
//! as not complete rather than as falsely present.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use lifeboat_repo::repo::RegionState;
use lifeboat_repo::Repository;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{keyring, KeyNeed};

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The region manifests were read from (all reachable regions when none was named).
    pub from: Option<String>,
    pub snapshots: usize,
    /// Regions whose snapshot list was recorded.
    pub listed: Vec<String>,
    /// Regions that could not be listed, with the reason.
    pub unreachable: Vec<(String, String)>,
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
    let repo = Repository::open(read_from, keys, from)
        .await
        .context("open the repository")?;
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
    for (region, e) in &unreachable {
        tracing::warn!(region = %region, error = %e, "catalog sync: region not listed; its snapshots show as not complete");
    }
    Ok(SyncReport {
        from: from.map(str::to_string),
        snapshots: entries.len(),
        listed: listed.into_keys().collect(),
        unreachable,
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

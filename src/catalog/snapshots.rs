//! The catalog's cache of snapshots: one row per snapshot and region, saying whether that
//! region holds the manifest (and, once checked, whether it was verified), whether the
//! snapshot is partial, and when this catalog first saw it (kept across syncs: the clock of
//! record when a backup host's clock lies).

use anyhow::{Context, Result};
use lifeboat_repo::snapshot::Manifest;
use serde::Serialize;
use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_str, Catalog};
use crate::host::now_secs;

/// One snapshot as the catalog knows it, with its regions folded together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    pub id: String,
    pub plan: String,
    pub time: i64,
    pub end_time: i64,
    /// When the manifest was sealed (ns): orders snapshots of the same second.
    pub committed_ns: i64,
    pub host: String,
    pub source: String,
    pub files: i64,
    pub bytes: i64,
    pub stored_bytes: i64,
    /// Regions holding the manifest, in name order.
    pub present: Vec<String>,
    /// Regions known NOT to hold it (a failed upload, or seen missing by a sync).
    pub missing: Vec<String>,
    /// Regions where it was verified.
    pub verified: Vec<String>,
    /// The backup skipped entries it could not read.
    pub partial: bool,
    /// When this catalog first recorded the snapshot (`None` before migration 0004). Not
    /// shown: it is this catalog's own fact, and a rebuilt catalog starts it afresh.
    #[serde(skip_serializing)]
    pub first_seen: Option<i64>,
}

impl SnapshotRow {
    /// Complete when every region of `required` holds it.
    pub fn complete_in(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.present.contains(r))
    }
}

impl Catalog {
    /// Record that `region` holds (`present`) or lacks snapshot `id`.
    /// A source of `kind:(sealed)` (a writer host without the details key) never replaces a
    /// real one a restore host recorded.
    pub async fn put_snapshot(
        &self,
        id: &str,
        manifest: &Manifest,
        region: &str,
        present: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (id, region, plan, time, end_time, host, source, files, bytes, \
             stored_bytes, present, seen_at, committed_ns, partial) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id, region) DO UPDATE SET present = excluded.present, seen_at = excluded.seen_at, \
             source = CASE WHEN excluded.source LIKE '%:(sealed)' THEN snapshots.source ELSE excluded.source END",
        )
        .bind(id.to_string())
        .bind(region.to_string())
        .bind(manifest.plan.clone())
        .bind(manifest.time)
        .bind(manifest.end_time)
        .bind(manifest.host.clone())
        .bind(format!(
            "{}:{}",
            manifest.source.kind, manifest.source.location
        ))
        .bind(manifest.stats.files as i64)
        .bind(manifest.stats.bytes as i64)
        .bind(manifest.stats.stored_bytes as i64)
        .bind(i64::from(present))
        .bind(now_secs())
        .bind(manifest.committed_ns)
        .bind(i64::from(manifest.is_partial()))
        .execute(self.pool())
        .await
        .context("catalog: record snapshot")?;
        sqlx::query(
            "INSERT INTO snapshot_first_seen (id, first_seen_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(now_secs())
        .execute(self.pool())
        .await
        .context("catalog: record when a snapshot was first seen")?;
        Ok(())
    }

    /// Forget every row of `region` (before a sync re-lists it).
    pub async fn clear_region(&self, region: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE region = $1")
            .bind(region.to_string())
            .execute(self.pool())
            .await
            .context("catalog: clear region")?;
        Ok(())
    }

    /// Mark snapshot `id` verified in `region` at `at`.
    pub async fn mark_verified(&self, id: &str, region: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE snapshots SET verified = 1, verified_at = $1 WHERE id = $2 AND region = $3",
        )
        .bind(at)
        .bind(id.to_string())
        .bind(region.to_string())
        .execute(self.pool())
        .await
        .context("catalog: mark verified")?;
        Ok(())
    }

    /// Snapshots, oldest first (by time, then id), optionally of one plan.
    pub async fn snapshots(&self, plan: Option<&str>) -> Result<Vec<SnapshotRow>> {
        let rows = sqlx::query(
            "SELECT s.id, region, plan, time, end_time, committed_ns, host, source, files, bytes, \
             stored_bytes, present, verified, verified_at, partial, f.first_seen_at \
             FROM snapshots s LEFT JOIN snapshot_first_seen f ON f.id = s.id \
             WHERE ($1 = '' OR plan = $1) ORDER BY time, committed_ns, end_time, s.id, region",
        )
        .bind(plan.unwrap_or_default().to_string())
        .fetch_all(self.pool())
        .await
        .context("catalog: list snapshots")?;
        let mut out: Vec<SnapshotRow> = Vec::new();
        for row in &rows {
            let id = get_str(row, "id")?;
            if out.last().is_none_or(|last| last.id != id) {
                out.push(snapshot_row(row, id)?);
            }
            let last = out.last_mut().expect("pushed above");
            let region = get_str(row, "region")?;
            if get_i64(row, "present")? != 0 {
                last.present.push(region.clone());
            } else {
                last.missing.push(region.clone());
            }
            if get_i64(row, "verified")? != 0 && get_opt_i64(row, "verified_at")?.is_some() {
                last.verified.push(region);
            }
        }
        Ok(out)
    }
}

fn snapshot_row(row: &AnyRow, id: String) -> Result<SnapshotRow> {
    Ok(SnapshotRow {
        id,
        plan: get_str(row, "plan")?,
        time: get_i64(row, "time")?,
        end_time: get_i64(row, "end_time")?,
        committed_ns: get_i64(row, "committed_ns")?,
        host: get_str(row, "host")?,
        source: get_str(row, "source")?,
        files: get_i64(row, "files")?,
        bytes: get_i64(row, "bytes")?,
        stored_bytes: get_i64(row, "stored_bytes")?,
        present: Vec::new(),
        missing: Vec::new(),
        verified: Vec::new(),
        partial: get_i64(row, "partial")? != 0,
        first_seen: get_opt_i64(row, "first_seen_at")?,
    })
}

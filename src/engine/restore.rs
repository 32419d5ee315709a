//! `restore <plan>`: one snapshot back onto disk, from the preferred or a chosen region.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions, RestoreReport};
use lifeboat_repo::snapshot::SnapshotEntry;
use lifeboat_repo::{Cancel, Progress};

use crate::config::Config;
use crate::engine::{open, KeyNeed};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub plan: String,
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    /// Region to read first (default: the preferred region).
    pub from: Option<String>,
    pub to: PathBuf,
    pub include: Option<PathBuf>,
    pub overwrite: bool,
    /// Drop setuid/setgid bits.
    pub no_setuid: bool,
    /// Leave owners and groups to the restoring user.
    pub no_owner: bool,
    /// Do not restore extended attributes.
    pub no_xattrs: bool,
}

#[derive(Debug)]
pub struct RestoreResult {
    pub snapshot: SnapshotEntry,
    pub report: RestoreReport,
    /// Objects read per region.
    pub per_region: Vec<(String, u64)>,
    /// Objects that came from another region than the first choice, and why.
    pub fallbacks: Vec<lifeboat_repo::repo::Fallback>,
    /// Regions the circuit breaker demoted during the restore, and why.
    pub demoted: Vec<lifeboat_repo::repo::Demotion>,
    pub duration: Duration,
    /// A restore into a database: the roles created or found, and notes.
    pub database: Option<crate::engine::stream::DatabaseRestored>,
}

pub async fn restore(
    config: &Config,
    req: &RestoreRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreResult> {
    let started = Instant::now();
    if let Some(from) = &req.from {
        config.region(from)?;
    }
    let repo = open(config, KeyNeed::Read, req.from.as_deref()).await?;
    let snapshot =
        crate::engine::find_plan_snapshot(config, &repo, &req.plan, &req.snapshot).await?;
    anyhow::ensure!(
        snapshot.manifest.source.kind == "dir",
        "snapshot {} of plan {} is a {} stream, not a directory: restore it with --to - or --to FILE{}",
        snapshot.id.short(),
        req.plan,
        snapshot.manifest.source.kind,
        if snapshot.manifest.source.kind == "postgres" { " or --to postgres://…" } else { "" }
    );
    let index = Arc::new(repo.load_lookup_index().await.context("load index")?);
    let reader = Arc::new(BlobReader::new(repo.clone(), index));
    let opts = RestoreOptions {
        include: req.include.clone(),
        overwrite: req.overwrite,
        no_setuid: req.no_setuid,
        no_owner: req.no_owner,
        no_xattrs: req.no_xattrs,
        // Entries per restore batch: only tests and the bench set it (docs/bench.md).
        batch_entries: std::env::var("LIFEBOAT_RESTORE_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        expected_bytes: req
            .include
            .is_none()
            .then_some(snapshot.manifest.stats.bytes),
    };
    let report = restore_tree(
        reader,
        snapshot.manifest.tree_root()?,
        &req.to,
        &opts,
        progress,
        cancel,
    )
    .await
    .with_context(|| {
        format!(
            "restore snapshot {} into {}",
            snapshot.id.short(),
            req.to.display()
        )
    })?;
    let log = repo.read_log.lock().unwrap_or_else(|p| p.into_inner());
    Ok(RestoreResult {
        snapshot,
        report,
        per_region: log
            .per_region
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        fallbacks: log.fallbacks.clone(),
        demoted: log.demoted.clone(),
        duration: started.elapsed(),
        database: None,
    })
}

//! `backup <plan>`: one snapshot of a plan's source into every region of the plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::chunker;
use lifeboat_repo::repo::RegionState;
use lifeboat_repo::snapshot::{Manifest, SourceInfo, MANIFEST_VERSION};
use lifeboat_repo::writer::{BackupOutcome, BackupWriter};
use lifeboat_repo::{Cancel, Progress};

use crate::config::{Config, SourceConfig};
use crate::engine::{hostname, now_epoch, open, KeyNeed};
use crate::source::cache::FilesCache;
use crate::source::dir::{DirArchiver, DirSource, Excludes};

#[derive(Debug)]
pub struct BackupReport {
    pub plan: String,
    pub outcome: BackupOutcome,
    /// Regions of the plan that were unreachable before the backup started.
    pub unavailable: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub duration: Duration,
}

impl BackupReport {
    pub fn is_degraded(&self) -> bool {
        self.outcome.is_degraded() || !self.unavailable.is_empty()
    }
}

pub async fn backup(
    config: &Config,
    plan_name: &str,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<BackupReport> {
    let started = Instant::now();
    let plan = config.plan(plan_name)?.clone();
    let repo = open(config, KeyNeed::Write, None).await?;
    let mut targets = Vec::new();
    let mut unavailable = Vec::new();
    for name in &plan.regions {
        let i = repo.region_index(name).context("plan region")?;
        match &repo.states[i] {
            RegionState::Ok => targets.push(i),
            RegionState::Unavailable(e) => unavailable.push((name.clone(), e.clone())),
        }
    }
    anyhow::ensure!(
        !targets.is_empty(),
        "plan {plan_name}: no region of the plan is reachable ({})",
        unavailable
            .iter()
            .map(|(r, e)| format!("{r}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let index = Arc::new(repo.load_index().await.context("load index")?);
    let cache_path = FilesCache::path(&config.cache_dir, &repo.config.id, &plan.name);
    let handle = tokio::runtime::Handle::current();
    let time = now_epoch();
    let repo2 = repo.clone();
    let cancel_for_estimate = cancel.clone();
    let (outcome, warnings) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut writer = BackupWriter::start(repo2.clone(), index, &targets, handle, cancel, progress)?;
        let (root, stats, warnings, new_cache, location) = match &plan.source {
            SourceConfig::Dir { path, exclude, one_file_system } => {
                let src = DirSource {
                    root: path.clone(),
                    excludes: Excludes::new(exclude).with_context(|| format!("plan {}: source.exclude", plan.name))?,
                    one_file_system: *one_file_system,
                };
                let src = std::sync::Arc::new(src);
                {
                    let (src, progress, cancel) = (src.clone(), writer.progress().clone(), cancel_for_estimate.clone());
                    std::thread::spawn(move || crate::source::dir::estimate(&src, &progress, &cancel));
                }
                let old = FilesCache::load(&cache_path);
                let params = repo2.config.chunker;
                let seed = chunker::seed(repo2.writer().chunk_key());
                let mut arch = DirArchiver::new(&mut writer, params, seed, &old);
                let root = match arch.run(&src) {
                    Ok(root) => root,
                    Err(e) => {
                        drop(arch);
                        writer.abort();
                        return Err(e);
                    }
                };
                let DirArchiver { stats, warnings, new_cache, .. } = arch;
                (root, stats, warnings, new_cache, path.display().to_string())
            }
        };
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            plan: plan.name.clone(),
            host: hostname(),
            time,
            end_time: now_epoch(),
            source: SourceInfo { kind: plan.source.kind().into(), location },
            root,
            stats,
            probes: Default::default(),
            tags: Vec::new(),
        };
        let outcome = writer.finish(manifest)?;
        if let Err(e) = new_cache.save(&cache_path) {
            tracing::warn!(error = %format!("{e:#}"), "could not save the files cache; the next backup reads every file");
        }
        Ok((outcome, warnings))
    })
    .await
    .context("backup task")??;
    Ok(BackupReport {
        plan: plan_name.into(),
        outcome,
        unavailable,
        warnings,
        duration: started.elapsed(),
    })
}

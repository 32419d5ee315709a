//! `backup <plan>`: one snapshot of a plan's source into every region of the plan. The
//! source kind decides its shape (`engine::kinds`): a repository-backed kind only writes the
//! snapshot's root through the writer this module starts and commits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::repo::RegionState;
use lifeboat_repo::snapshot::{Manifest, SourceInfo, MANIFEST_VERSION};
use lifeboat_repo::writer::{BackupOutcome, BackupWriter};
use lifeboat_repo::{Cancel, Progress};

use crate::config::{Config, PlanConfig};
use crate::engine::kinds::{shape, BeginBackup, Begun, RepoSource, Shape, WriteEnv};
use crate::engine::{open, KeyNeed};
use crate::host::{hostname, now_secs};

#[derive(Debug)]
pub struct BackupReport {
    pub plan: String,
    pub outcome: BackupOutcome,
    /// Regions of the plan that were unreachable before the backup started.
    pub unavailable: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub duration: Duration,
    /// An rds plan's backup: the RDS snapshot and its state per AWS region (`outcome` then
    /// only mirrors it; its `snapshot` is no repository object).
    pub rds: Option<crate::rds::RdsBackupReport>,
}

impl BackupReport {
    pub fn is_degraded(&self) -> bool {
        self.outcome.is_degraded() || !self.unavailable.is_empty()
    }

    /// The snapshot's name for the catalog and messages: the RDS snapshot identifier, or the
    /// repository snapshot's id.
    pub fn snapshot_name(&self) -> String {
        match &self.rds {
            Some(r) => r.snapshot.clone(),
            None => self.outcome.snapshot.to_hex(),
        }
    }

    /// Entries of the source could not be read (the manifest lists them): exit 3 like a
    /// degraded backup, though every region holds the snapshot.
    pub fn is_partial(&self) -> bool {
        self.outcome.manifest.is_partial()
    }
}

pub async fn backup(
    config: &Config,
    plan_name: &str,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<BackupReport> {
    let plan = config.plan(plan_name)?.clone();
    let report = match shape(&plan.source) {
        Shape::Repository(kind) => {
            into_repository(config, &plan, kind.as_ref(), progress, cancel).await
        }
        Shape::External(kind) => kind.backup(config, &plan, progress, cancel).await,
    };
    report
}

/// A repository-backed kind's backup: open the repository, start the writer in every
/// reachable region of the plan, let the kind write the root, commit the manifest.
async fn into_repository(
    config: &Config,
    plan: &PlanConfig,
    kind: &dyn RepoSource,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<BackupReport> {
    let started = Instant::now();
    let plan_name = plan.name.as_str();
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
    // Packs prune has marked for deletion are left out, so this backup stores their chunks
    // anew instead of making a pack needed that may be deleted (docs/FORMAT.md, "Prune").
    let marked = lifeboat_repo::prune::marked_packs(&repo)
        .await
        .context("list prune marks")?;
    let index = Arc::new(
        repo.load_index_excluding(&marked)
            .await
            .context("load index")?,
    );
    let cache_path = crate::source::cache::path(&config.cache_dir, &repo.config.id, &plan.name);
    let handle = tokio::runtime::Handle::current();
    let time = now_secs();
    let repo2 = repo.clone();
    let begun = kind
        .begin(&BeginBackup {
            config,
            plan,
            cache_path,
            cancel: cancel.clone(),
        })
        .await?;
    let Begun { write, end } = begun;
    let (plan_owned, kind_name) = (plan.name.clone(), plan.source.kind());
    let codec = plan.compression;
    let result = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut writer = BackupWriter::start(
            repo2.clone(),
            index,
            &plan_owned,
            &targets,
            handle,
            cancel,
            progress,
        )?;
        if let Some(codec) = codec {
            writer.set_codec(codec);
        }
        let env = WriteEnv {
            params: repo2.config.chunker,
            seed: repo2.secrets().chunker_seed(),
        };
        let written = match write(&mut writer, &env) {
            Ok(w) => w,
            Err(e) => {
                writer.abort();
                return Err(e);
            }
        };
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            plan: plan_owned,
            host: hostname(),
            time,
            end_time: now_secs(),
            committed_ns: 0,
            source: SourceInfo {
                kind: kind_name.into(),
                location: written.location,
            },
            root: written.root,
            stats: written.stats,
            probes: written.probes,
            unreadable: written.unreadable,
            sealed: false,
            details_error: None,
        };
        let outcome = writer.finish(manifest)?;
        if let Some(after_commit) = written.after_commit {
            after_commit();
        }
        Ok((outcome, written.warnings))
    })
    .await
    .context("backup task");
    if let Some(end) = end {
        end.await;
    }
    let (outcome, warnings) = result??;
    Ok(BackupReport {
        plan: plan_name.into(),
        outcome,
        unavailable,
        warnings,
        duration: started.elapsed(),
        rds: None,
    })
}

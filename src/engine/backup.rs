//! `backup <plan>`: one snapshot of a plan's source into every region of the plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::chunker;
use lifeboat_repo::repo::ChunkerParams;
use lifeboat_repo::repo::RegionState;
use lifeboat_repo::snapshot::{Manifest, SourceInfo, Stats, MANIFEST_VERSION};
use lifeboat_repo::writer::{BackupOutcome, BackupWriter};
use lifeboat_repo::{Cancel, Progress};

use crate::config::{Config, SourceConfig};
use crate::engine::{hostname, now_epoch, open, KeyNeed};
use crate::source::cache::FilesCache;
use crate::source::child::StreamChild;
use crate::source::dir::{DirArchiver, DirSource, Excludes};
use crate::source::postgres::{self, PgTarget};

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
    anyhow::ensure!(
        !matches!(plan.source, SourceConfig::Rds(_)),
        "plan {plan_name} is an rds plan: its snapshots are RDS snapshots, taken by `lifeboat backup {plan_name}` (crate::rds), not repository snapshots"
    );
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
    // A postgres plan's dump transaction: opened here (async), held while pg_dump runs.
    let password = match &plan.source {
        SourceConfig::Postgres {
            password: Some(p), ..
        } => Some(
            p.load()
                .with_context(|| format!("plan {}: source password", plan.name))?,
        ),
        _ => None,
    };
    let session = match &plan.source {
        SourceConfig::Postgres { url, probes, .. } => {
            let target = PgTarget {
                url,
                password: password.as_ref(),
            };
            Some(
                postgres::begin_dump(&target, probes)
                    .await
                    .with_context(|| format!("plan {}", plan.name))?,
            )
        }
        _ => None,
    };
    let stream = match &plan.source {
        SourceConfig::Dir { .. } | SourceConfig::Rds(_) => None,
        SourceConfig::Postgres { url, .. } => {
            let target = PgTarget {
                url,
                password: password.as_ref(),
            };
            let s = session.as_ref().expect("opened above");
            Some(StreamSpec {
                cmd: postgres::pg_dump_command(&target, &s.snapshot),
                what: "pg_dump".into(),
                hint: postgres::CLIENT_HINT,
                name: postgres::DUMP_NAME,
                location: postgres::redact(url),
                probes: s.probes.clone(),
            })
        }
        SourceConfig::Command { command, .. } => Some(StreamSpec {
            cmd: crate::source::command::command(command),
            what: format!("backup command {:?}", command[0]),
            hint: "",
            name: crate::source::command::OUTPUT_NAME,
            location: command[0].clone(),
            probes: Default::default(),
        }),
    };
    let result = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut writer = BackupWriter::start(repo2.clone(), index, &targets, handle, cancel, progress)?;
        let params = repo2.config.chunker;
        let seed = chunker::seed(repo2.writer().chunk_key());
        let mut probes = Default::default();
        let (root, stats, warnings, new_cache, location) = match (&plan.source, stream) {
            (_, Some(spec)) => {
                probes = spec.probes;
                let (root, stats) = match stream_into(&mut writer, spec.cmd, &spec.what, spec.hint, spec.name, &params, seed) {
                    Ok(r) => r,
                    Err(e) => {
                        writer.abort();
                        return Err(e);
                    }
                };
                (root, stats, Vec::new(), None, spec.location)
            }
            (SourceConfig::Dir { path, exclude, one_file_system }, None) => {
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
                (root, stats, warnings, Some(new_cache), path.display().to_string())
            }
            (_, None) => anyhow::bail!("plan {}: no stream for a {} source", plan.name, plan.source.kind()),
        };
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            plan: plan.name.clone(),
            host: hostname(),
            time,
            end_time: now_epoch(),
            committed_ns: 0,
            source: SourceInfo { kind: plan.source.kind().into(), location },
            root,
            stats,
            probes,
            tags: Vec::new(),
        };
        let outcome = writer.finish(manifest)?;
        if let Some(new_cache) = new_cache {
            if let Err(e) = new_cache.save(&cache_path) {
                tracing::warn!(error = %format!("{e:#}"), "could not save the files cache; the next backup reads every file");
            }
        }
        Ok((outcome, warnings))
    })
    .await
    .context("backup task");
    if let Some(session) = session {
        session.end().await;
    }
    let (outcome, warnings) = result??;
    Ok(BackupReport {
        plan: plan_name.into(),
        outcome,
        unavailable,
        warnings,
        duration: started.elapsed(),
    })
}

/// A stream source's command and how its snapshot is described.
struct StreamSpec {
    cmd: std::process::Command,
    what: String,
    hint: &'static str,
    /// The file node's name in the root tree.
    name: &'static str,
    location: String,
    probes: serde_json::Map<String, serde_json::Value>,
}

/// Run `cmd`, chunk its stdout into `writer` as one file node, and require exit status 0.
/// On any error the command is stopped and the caller aborts the writer: no snapshot.
fn stream_into(
    writer: &mut BackupWriter,
    cmd: std::process::Command,
    what: &str,
    hint: &str,
    name: &str,
    params: &ChunkerParams,
    seed: u64,
) -> Result<(lifeboat_repo::Id, Stats)> {
    let (child, stdout) = StreamChild::spawn(cmd, what, hint)?;
    let node = match lifeboat_repo::stream::store_stream(writer, name, stdout, params, seed) {
        Ok(node) => node,
        Err(e) => {
            child.kill();
            return Err(anyhow::Error::new(e).context(format!("{what}: reading its output")));
        }
    };
    // The exit status decides: a dump that stopped early may look like a short stream.
    child.finish()?;
    let stats = Stats {
        files: 1,
        bytes: node.size,
        bytes_read: node.size,
        ..Default::default()
    };
    let root = lifeboat_repo::stream::store_root(writer, node)?;
    Ok((root, stats))
}

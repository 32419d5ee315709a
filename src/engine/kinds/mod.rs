//! The seam between the engine's operations and a plan's source kind: [`shape`] is the one
//! `match` on [`SourceConfig`] outside `config`. A kind whose data goes into the repository
//! implements [`RepoSource`] (`dir`, `postgres`, `command`): the engine opens the repository,
//! starts the writer and commits the manifest, the kind only produces the snapshot's root.
//! A kind whose snapshots live elsewhere (RDS: native snapshots in each region) implements
//! [`ExternalSource`] and runs each operation itself. See ARCHITECTURE.md, "Adding a source
//! kind".

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use lifeboat_repo::chunker::ChunkerParams;
use lifeboat_repo::snapshot::Stats;
use lifeboat_repo::writer::BackupWriter;
use lifeboat_repo::{Cancel, Id, Progress};

use crate::config::{Config, PlanConfig, SourceConfig};
use crate::engine::{BackupReport, RestoreTestOutcome};

mod command;
mod dir;
mod postgres;
mod rds;
mod stream;

/// How the engine runs a plan's source.
pub enum Shape<'a> {
    /// Backed up into the repository through the engine's writer.
    Repository(Box<dyn RepoSource + 'a>),
    /// Snapshots kept outside the repository; the kind runs backup and restore test itself.
    External(Box<dyn ExternalSource + 'a>),
}

/// The one place a source kind is mapped to its implementation.
pub fn shape(source: &SourceConfig) -> Shape<'_> {
    match source {
        SourceConfig::Dir {
            path,
            exclude,
            one_file_system,
            read_threads,
        } => Shape::Repository(Box::new(dir::Dir {
            path,
            exclude,
            one_file_system: *one_file_system,
            read_threads: *read_threads,
        })),
        SourceConfig::Postgres {
            url,
            password,
            probes,
            globals_with_passwords,
            ..
        } => Shape::Repository(Box::new(postgres::Postgres {
            url,
            password: password.as_ref(),
            probes,
            globals_with_passwords: *globals_with_passwords,
        })),
        SourceConfig::Command {
            command,
            verify_command,
            ..
        } => Shape::Repository(Box::new(command::Command {
            command,
            verify_command: verify_command.as_deref(),
        })),
        SourceConfig::Rds(source) => Shape::External(Box::new(rds::Rds { source })),
    }
}

/// What a repository-backed kind is given when a backup begins.
pub struct BeginBackup<'a> {
    pub config: &'a Config,
    pub plan: &'a PlanConfig,
    /// This plan's files cache (`dir` sources).
    pub cache_path: PathBuf,
    pub cancel: Cancel,
}

/// What the writing step is given, on the blocking thread.
pub struct WriteEnv {
    pub params: ChunkerParams,
    /// The chunker's gear seed, from the writer key.
    pub seed: u64,
}

/// The snapshot a kind wrote, before the engine commits its manifest.
pub struct Written {
    pub root: Id,
    pub stats: Stats,
    pub warnings: Vec<String>,
    /// `SourceInfo.location` of the manifest: what was backed up, without secrets.
    pub location: String,
    /// Facts measured at backup time, compared by restore tests (`postgres` probes).
    pub probes: serde_json::Map<String, serde_json::Value>,
    /// Run once the manifest is committed (the files cache is saved only then).
    pub after_commit: Option<Box<dyn FnOnce() + Send>>,
    /// Entries skipped because they could not be read (`dir`): the snapshot is partial.
    pub unreadable: Vec<String>,
}

/// The writing step: on a blocking thread, everything into `writer`. On an error the engine
/// aborts the writer, so nothing is committed.
pub type WriteStep = Box<dyn FnOnce(&mut BackupWriter, &WriteEnv) -> Result<Written> + Send>;

/// A backup under way: the blocking writing step, and what ends the backup whatever that
/// step returned (a dump transaction's end).
pub struct Begun {
    pub write: WriteStep,
    pub end: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// What a restore test is given.
pub struct TestCx<'a> {
    pub config: &'a Config,
    pub plan: &'a PlanConfig,
    /// Snapshot id, prefix or `latest`.
    pub snapshot: &'a str,
    /// Region to read first.
    pub from: Option<&'a str>,
    /// Parent of scratch directories; exists.
    pub scratch: &'a Path,
    pub progress: &'a Arc<Progress>,
    pub cancel: &'a Cancel,
}

/// A kind whose snapshots are repository snapshots.
#[async_trait]
pub trait RepoSource: Send + Sync {
    /// Start a backup (async work such as opening a dump transaction happens here) and hand
    /// back the step that writes the data.
    async fn begin(&self, cx: &BeginBackup<'_>) -> Result<Begun>;

    /// Restore the snapshot into scratch space and compare it with what was recorded: fill
    /// `outcome`'s snapshot, `checked`, `duration_ms`, `bytes` and `differences`. An error is
    /// a failed test (the engine records it as a difference), unless cancelled.
    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()>;
}

/// A kind whose snapshots live outside the repository: it runs each operation itself, and
/// reports in the engine's types so the catalog, status and the daemon treat it like any
/// other plan.
#[async_trait]
pub trait ExternalSource: Send + Sync {
    async fn backup(
        &self,
        config: &Config,
        plan: &PlanConfig,
        progress: Arc<Progress>,
        cancel: Cancel,
    ) -> Result<BackupReport>;

    /// As [`RepoSource::restore_test`].
    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()>;
}

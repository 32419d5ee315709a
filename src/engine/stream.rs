//! Restoring a stream snapshot (`postgres`, `command` plans): into a database through
//! `pg_restore`, into the plan's `restore_command`, into a file, or raw to stdout. The stream
//! is fetched in order and verified chunk by chunk on the way (see
//! `lifeboat_repo::stream`); nothing is spooled to disk except for `pg_restore --jobs`,
//! which needs a seekable file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::RestoreReport;
use lifeboat_repo::snapshot::SnapshotEntry;
use lifeboat_repo::tree::Node;
use lifeboat_repo::{Cancel, Index, Progress, RepoError, Repository};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::{Config, SecretString, SourceConfig};
use crate::engine::{open, KeyNeed, RestoreResult};
use crate::source::child::{Launch, SinkChild};
use crate::source::postgres::{self, PgTarget};

/// Where a stream snapshot goes.
#[derive(Debug, Clone)]
pub enum StreamTarget {
    /// Raw bytes on stdout (`--to -`).
    Stdout,
    /// A new file (`--to PATH`); an existing one only with `overwrite`.
    File { path: PathBuf, overwrite: bool },
    /// A database, through `pg_restore` (postgres plans).
    Postgres {
        url: String,
        /// Restore into a non-empty database: `pg_restore --clean --if-exists`.
        force: bool,
        /// Parallel restore: the dump is first written to a file under `scratch`.
        jobs: Option<u32>,
        scratch: Option<PathBuf>,
    },
    /// The plan's `restore_command`, fed on stdin (command plans).
    RestoreCommand,
}

#[derive(Debug, Clone)]
pub struct StreamRestoreRequest {
    pub plan: String,
    pub snapshot: String,
    pub from: Option<String>,
    pub target: StreamTarget,
}

/// A stream snapshot opened for reading: the repository, its index and the file node.
pub struct OpenStream {
    pub repo: Arc<Repository>,
    pub index: Arc<Index>,
    pub snapshot: SnapshotEntry,
    pub node: Node,
}

impl OpenStream {
    pub async fn open(
        config: &Config,
        plan: &str,
        snapshot: &str,
        from: Option<&str>,
    ) -> Result<OpenStream> {
        if let Some(from) = from {
            config.region(from)?;
        }
        let repo = open(config, KeyNeed::Read, from).await?;
        let snapshot = crate::engine::find_plan_snapshot(config, &repo, plan, snapshot).await?;
        OpenStream::from_entry(repo, snapshot).await
    }

    /// Open snapshot `snapshot` (id, prefix or `latest`) of `plan` in an open repository.
    pub async fn from_repo(
        repo: Arc<Repository>,
        plan: &str,
        snapshot: &str,
    ) -> Result<OpenStream> {
        let snapshot = repo.find_snapshot(snapshot, Some(plan)).await?;
        OpenStream::from_entry(repo, snapshot).await
    }

    /// Open the stream of a snapshot found in `repo`.
    async fn from_entry(repo: Arc<Repository>, snapshot: SnapshotEntry) -> Result<OpenStream> {
        anyhow::ensure!(
            snapshot.manifest.source.kind != "dir",
            "plan {} backs up a directory: restore it with --to DIR",
            snapshot.manifest.plan
        );
        let index = Arc::new(repo.load_index().await.context("load index")?);
        let reader = BlobReader::new(repo.clone(), index.clone());
        let node = lifeboat_repo::stream::stream_node(&reader, snapshot.manifest.root).await?;
        Ok(OpenStream {
            repo,
            index,
            snapshot,
            node,
        })
    }

    /// Copy the verified stream into `sink`.
    pub async fn copy_to<W: AsyncWrite + Unpin>(
        &self,
        sink: &mut W,
        progress: &Progress,
        cancel: &Cancel,
    ) -> Result<u64> {
        progress.add_total(self.node.size);
        let n = lifeboat_repo::stream::copy_stream(
            &self.repo,
            &self.index,
            &self.node,
            sink,
            progress,
            cancel,
        )
        .await
        .with_context(|| format!("restore snapshot {}", self.snapshot.id.short()))?;
        Ok(n)
    }

    /// Feed the stream to a command's stdin; an error (with the command's stderr) unless
    /// every byte was delivered, verified, and the command exited 0.
    pub async fn pipe_into(
        &self,
        mut child: SinkChild,
        progress: &Progress,
        cancel: &Cancel,
    ) -> Result<u64> {
        match self.copy_to(&mut child.stdin, progress, cancel).await {
            Ok(n) => {
                child.finish().await?;
                Ok(n)
            }
            Err(e) => {
                let is_write = e
                    .chain()
                    .any(|c| matches!(c.downcast_ref::<RepoError>(), Some(RepoError::Io(_))));
                if is_write {
                    Err(child.failed_write(e).await)
                } else {
                    // Stop the consumer before it sees a clean end of input.
                    let said = child.abort().await;
                    if said.is_empty() {
                        Err(e)
                    } else {
                        Err(e.context(format!("the restore command was stopped; it said: {said}")))
                    }
                }
            }
        }
    }

    /// The repository's reads per region and fallbacks, for the result.
    fn result(self, bytes: u64, duration: Duration) -> RestoreResult {
        let log = self.repo.read_log.lock().unwrap_or_else(|p| p.into_inner());
        RestoreResult {
            report: RestoreReport {
                files: 1,
                bytes,
                verified_files: 1,
                ..Default::default()
            },
            per_region: log
                .per_region
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            fallbacks: log.fallbacks.clone(),
            demoted: log.demoted.clone(),
            duration,
            snapshot: self.snapshot.clone(),
        }
    }
}

/// The `pg_restore` that reads a custom-format archive on stdin (or from `file`, with
/// `jobs`) into `url`, and the password file it reads (keep it until `pg_restore` exits). `--single-transaction` on the stdin path: a failed restore leaves
/// the target as it was.
pub fn pg_restore_command(
    url: &str,
    password: Option<&SecretString>,
    force: bool,
    parallel: Option<(u32, &std::path::Path)>,
) -> Result<(tokio::process::Command, Option<tempfile::NamedTempFile>)> {
    let mut cmd = tokio::process::Command::new("pg_restore");
    cmd.args(["--no-owner", "--exit-on-error", "--no-password"]);
    if force {
        cmd.args(["--clean", "--if-exists"]);
    }
    match parallel {
        Some((jobs, _)) => {
            cmd.arg(format!("--jobs={jobs}"));
        }
        None => {
            cmd.arg("--single-transaction");
        }
    }
    cmd.arg(format!("--dbname={url}"))
        .envs(crate::source::pgtls::libpq_env(url));
    if let Some((_, file)) = parallel {
        cmd.arg(file);
    }
    let pass = postgres::passfile(password)?;
    if let Some(p) = &pass {
        cmd.env("PGPASSFILE", p.path()).env_remove("PGPASSWORD");
    }
    Ok((cmd, pass))
}

/// Restore a dump into the database at `url` (never creating or dropping it): refuses a
/// non-empty database unless `force`. `scrub`: the variables `pg_restore` must not see.
pub async fn restore_into_database(
    stream: &OpenStream,
    target: &PgTarget<'_>,
    force: bool,
    jobs: Option<(u32, PathBuf)>,
    progress: &Progress,
    cancel: &Cancel,
    scrub: &[String],
) -> Result<u64> {
    let launch = |keep| Launch {
        what: "pg_restore".into(),
        hint: postgres::CLIENT_HINT,
        scrub,
        cancel,
        keep,
    };
    let mut conn = target.connect().await?;
    let (count, names) = postgres::existing_relations(&mut conn).await?;
    drop(conn);
    if count > 0 && !force {
        anyhow::bail!(
            "target database {} is not empty ({count} relations, e.g. {}): restore into a new database (`createdb NAME`), or pass --force to drop and replace the objects the dump contains",
            postgres::redact(target.url),
            names.join(", ")
        );
    }
    match jobs {
        None => {
            let (cmd, keep) = pg_restore_command(target.url, target.password, force, None)?;
            let child = SinkChild::spawn(cmd, launch(keep))?;
            stream.pipe_into(child, progress, cancel).await
        }
        Some((jobs, scratch)) => {
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-pg-restore-")
                .tempdir_in(&scratch)
                .with_context(|| format!("create a scratch directory in {}", scratch.display()))?;
            let path = dir.path().join(postgres::DUMP_NAME);
            let mut file = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("create {}", path.display()))?;
            let n = stream.copy_to(&mut file, progress, cancel).await?;
            drop(file);
            let (cmd, keep) =
                pg_restore_command(target.url, target.password, force, Some((jobs, &path)))?;
            let child = SinkChild::spawn(cmd, launch(keep))?;
            child.finish().await?;
            Ok(n)
        }
    }
}

/// `restore <plan>` for a postgres or command plan.
pub async fn restore_stream(
    config: &Config,
    req: &StreamRestoreRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreResult> {
    let started = Instant::now();
    // A plan the config does not declare is known by its manifests' source kind.
    let declared = config.plan(&req.plan).ok().map(|p| p.source.clone());
    let stream = OpenStream::open(config, &req.plan, &req.snapshot, req.from.as_deref()).await?;
    let kind = stream.snapshot.manifest.source.kind.clone();
    let bytes = match (&req.target, declared.as_ref()) {
        (StreamTarget::Stdout, _) => {
            // A duplicate of fd 1 as a tokio file (tokio's `io-std` is not compiled in).
            use std::os::fd::AsFd;
            let fd = std::io::stdout().as_fd().try_clone_to_owned().context("stdout")?;
            let mut out = tokio::fs::File::from_std(std::fs::File::from(fd));
            let n = stream.copy_to(&mut out, &progress, &cancel).await?;
            out.flush().await.context("stdout")?;
            n
        }
        (StreamTarget::File { path, overwrite }, _) => {
            let mut opts = tokio::fs::OpenOptions::new();
            opts.write(true);
            if *overwrite {
                opts.create(true).truncate(true);
            } else {
                opts.create_new(true);
            }
            let mut file = opts.open(path).await.with_context(|| {
                format!(
                    "create {} (an existing file is replaced only with --overwrite)",
                    path.display()
                )
            })?;
            let n = stream.copy_to(&mut file, &progress, &cancel).await?;
            file.sync_all().await?;
            n
        }
        (StreamTarget::Postgres { url, force, jobs, scratch }, _) if kind == "postgres" => {
            let target = PgTarget { url, password: None };
            let parallel = jobs.map(|j| (j.max(1), scratch.clone().unwrap_or_else(|| config.cache_dir.clone())));
            if let Some((_, dir)) = &parallel {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            }
            let scrub = postgres::libpq_scrub(config.secret_env_names());
            restore_into_database(&stream, &target, *force, parallel, &progress, &cancel, &scrub).await?
        }
        (StreamTarget::RestoreCommand, Some(SourceConfig::Command { restore_command, .. })) => {
            let cmd = crate::source::command::async_command(restore_command);
            let what = format!("restore command {:?}", restore_command[0]);
            let scrub = config.secret_env_names();
            let launch = Launch { what, hint: "", scrub: &scrub, cancel: &cancel, keep: None };
            let child = SinkChild::spawn(cmd, launch)?;
            stream.pipe_into(child, &progress, &cancel).await?
        }
        (StreamTarget::Postgres { .. }, _) => anyhow::bail!(
            "plan {} is not a postgres plan: restore it with --to - (stdout), --to FILE, or without --to (its restore_command)",
            req.plan
        ),
        (StreamTarget::RestoreCommand, Some(_)) => anyhow::bail!(
            "plan {}: give --to postgres://USER@HOST/DB (an empty database), --to - (the raw dump on stdout) or --to FILE",
            req.plan
        ),
        (StreamTarget::RestoreCommand, None) => anyhow::bail!(
            "plan {} ({kind}) is not declared in {}, so its restore_command is unknown here: give --to - (the raw stream on stdout) or --to FILE",
            req.plan,
            config.path.display()
        ),
    };
    Ok(stream.result(bytes, started.elapsed()))
}

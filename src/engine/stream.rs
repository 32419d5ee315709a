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
use crate::source::pg_globals::{self, RoleMode, RolesReport};
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
        /// `--no-owner`: objects owned by the connecting role.
        no_owner: bool,
        /// `--no-privileges`: no GRANT or REVOKE.
        no_privileges: bool,
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
    /// A postgres snapshot's globals file (`pg_dumpall --globals-only`); `None` in
    /// snapshots made before lifeboat stored them.
    pub globals: Option<Node>,
}

/// The most of a globals file read into memory (roles are a few hundred bytes each).
const GLOBALS_LIMIT: u64 = 64 << 20;

/// How a dump goes into a database.
#[derive(Debug, Clone, Default)]
pub struct DatabaseRestore {
    /// Restore into a non-empty database: `pg_restore --clean --if-exists`.
    pub force: bool,
    /// Parallel restore from a file in this directory.
    pub jobs: Option<(u32, PathBuf)>,
    /// Objects owned as in the dump (else by the connecting role: `--no-owner`).
    pub owners: bool,
    /// GRANTs and REVOKEs of the dump (else `--no-privileges`).
    pub privileges: bool,
    /// Create the roles of the snapshot's globals that the server lacks, first.
    pub roles: Option<RoleMode>,
}

/// What a database restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DatabaseRestored {
    pub bytes: u64,
    /// Roles created or found; `None` when no role was looked at.
    pub roles: Option<RolesReport>,
    /// Said to the operator: e.g. a snapshot without globals.
    pub notes: Vec<String>,
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
        let files =
            lifeboat_repo::stream::stream_files(&reader, snapshot.manifest.tree_root()?).await?;
        let (mut node, mut globals) = (None, None);
        for f in files {
            let is_globals = snapshot.manifest.source.kind == "postgres"
                && f.name.as_deref() == Some(pg_globals::GLOBALS_NAME);
            if is_globals {
                globals = Some(f);
            } else if node.is_none() {
                node = Some(f);
            } else {
                anyhow::bail!(
                    "snapshot {}: its root holds more than one stream; restore it with --to DIR",
                    snapshot.id.short()
                );
            }
        }
        let node = node
            .with_context(|| format!("snapshot {}: no stream in its root", snapshot.id.short()))?;
        Ok(OpenStream {
            repo,
            index,
            snapshot,
            node,
            globals,
        })
    }

    /// The snapshot's globals script, verified like the stream; `None` when it has none.
    pub async fn globals_text(&self, cancel: &Cancel) -> Result<Option<String>> {
        let Some(node) = &self.globals else {
            return Ok(None);
        };
        anyhow::ensure!(
            node.size <= GLOBALS_LIMIT,
            "snapshot {}: its globals file is {} bytes, more than a role list can be",
            self.snapshot.id.short(),
            node.size
        );
        let mut buf = Vec::with_capacity(node.size as usize);
        lifeboat_repo::stream::copy_stream(
            &self.repo,
            &self.index,
            node,
            &mut buf,
            &Progress::default(),
            cancel,
        )
        .await
        .with_context(|| format!("read the globals of snapshot {}", self.snapshot.id.short()))?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
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
            database: None,
        }
    }
}

/// The `pg_restore` that reads a custom-format archive on stdin (or from `file`, with
/// `jobs`) into `url`, and the password file it reads (keep it until `pg_restore` exits). `--single-transaction` on the stdin path: a failed restore leaves
/// the target as it was.
pub fn pg_restore_command(
    url: &str,
    password: Option<&SecretString>,
    how: &DatabaseRestore,
    parallel: Option<(u32, &std::path::Path)>,
) -> Result<(tokio::process::Command, Option<tempfile::NamedTempFile>)> {
    let mut cmd = tokio::process::Command::new("pg_restore");
    cmd.args(["--exit-on-error", "--no-password"]);
    if !how.owners {
        cmd.arg("--no-owner");
    }
    if !how.privileges {
        cmd.arg("--no-privileges");
    }
    if how.force {
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
/// non-empty database unless `how.force`; creates the missing roles first when asked.
/// `scrub`: the variables `pg_restore` must not see.
pub async fn restore_into_database(
    stream: &OpenStream,
    target: &PgTarget<'_>,
    how: &DatabaseRestore,
    progress: &Progress,
    cancel: &Cancel,
    scrub: &[String],
) -> Result<DatabaseRestored> {
    let launch = |keep| Launch {
        what: "pg_restore".into(),
        hint: postgres::CLIENT_HINT,
        scrub,
        cancel,
        keep,
    };
    let mut out = DatabaseRestored::default();
    let mut conn = target.connect().await?;
    let (count, names) = postgres::existing_relations(&mut conn).await?;
    if count > 0 && !how.force {
        anyhow::bail!(
            "target database {} is not empty ({count} relations, e.g. {}): restore into a new database (`createdb NAME`), or pass --force to drop and replace the objects the dump contains",
            postgres::redact(target.url),
            names.join(", ")
        );
    }
    if let Some(mode) = how.roles {
        match stream.globals_text(cancel).await? {
            Some(text) => {
                let globals = pg_globals::parse(&text);
                out.roles = Some(
                    pg_globals::create_missing_roles(&mut conn, &globals, mode)
                        .await
                        .with_context(|| {
                            format!(
                                "create the snapshot's roles on {} (or restore with --no-owner --no-privileges)",
                                postgres::redact(target.url)
                            )
                        })?,
                );
            }
            None => out.notes.push(format!(
                "snapshot {} holds no globals (it was taken before lifeboat stored them): the roles its dump names must exist on the target, or restore with --no-owner --no-privileges",
                stream.snapshot.id.short()
            )),
        }
    }
    drop(conn);
    out.bytes = match &how.jobs {
        None => {
            let (cmd, keep) = pg_restore_command(target.url, target.password, how, None)?;
            let child = SinkChild::spawn(cmd, launch(keep))?;
            stream.pipe_into(child, progress, cancel).await?
        }
        Some((jobs, scratch)) => {
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-pg-restore-")
                .tempdir_in(scratch)
                .with_context(|| format!("create a scratch directory in {}", scratch.display()))?;
            let path = dir.path().join(postgres::DUMP_NAME);
            let mut file = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("create {}", path.display()))?;
            let n = stream.copy_to(&mut file, progress, cancel).await?;
            drop(file);
            let (cmd, keep) =
                pg_restore_command(target.url, target.password, how, Some((*jobs, &path)))?;
            let child = SinkChild::spawn(cmd, launch(keep))?;
            child.finish().await?;
            n
        }
    };
    Ok(out)
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
    let mut database = None;
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
        (StreamTarget::Postgres { url, force, jobs, scratch, no_owner, no_privileges }, _) if kind == "postgres" => {
            let target = PgTarget { url, password: None };
            let parallel = jobs.map(|j| (j.max(1), scratch.clone().unwrap_or_else(|| config.cache_dir.clone())));
            if let Some((_, dir)) = &parallel {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            }
            let scrub = postgres::libpq_scrub(config.secret_env_names());
            // Roles are needed by owners and grants; with neither, none are created.
            let how = DatabaseRestore {
                force: *force,
                jobs: parallel,
                owners: !no_owner,
                privileges: !no_privileges,
                roles: (!(*no_owner && *no_privileges)).then_some(RoleMode::Restore),
            };
            let done = restore_into_database(&stream, &target, &how, &progress, &cancel, &scrub).await?;
            database = Some(done.clone());
            done.bytes
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
    let mut result = stream.result(bytes, started.elapsed());
    result.database = database;
    Ok(result)
}

//! Restore tests (`verify --restore`): restore a snapshot into scratch space, compare it with
//! what was recorded at backup time, time it, and never touch the production target.
//!
//! - `dir`: into a new temporary directory under the cache directory (or `--scratch`);
//!   `restore_tree` compares every file's BLAKE3 with the manifest; then the file count.
//! - `postgres`: into a scratch database created for the test (`lifeboat_verify_…`) on the
//!   plan's `scratch_url` server (default: the source's server, maintenance database
//!   `postgres`); row counts of every table and the SQL probes are compared with the
//!   manifest's; the scratch database is dropped whatever happened.
//! - `command`: the stream is verified (every chunk and the whole BLAKE3) while it feeds the
//!   plan's `verify_command`, run with `LIFEBOAT_SCRATCH_DIR` set to a temporary directory;
//!   without one, the verified stream is the whole test.
//!
//! The duration is the restore alone (comparing and cleaning up are not part of an RTO); a
//! difference of any kind fails the test. The outcome carries every difference found.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions};
use lifeboat_repo::{Cancel, Id, Progress, RepoError};
use serde::Serialize;

use crate::catalog::evidence::RestoreTest;
use crate::catalog::Catalog;
use crate::config::{Config, PlanConfig, SourceConfig};
use crate::engine::stream::{restore_into_database, OpenStream};
use crate::engine::{open, KeyNeed};
use crate::source::child::SinkChild;
use crate::source::postgres::{self, PgTarget};

#[derive(Debug, Clone)]
pub struct RestoreTestRequest {
    /// One plan, or every plan.
    pub plan: Option<String>,
    /// Snapshot id, prefix or `latest` (needs `plan`); default: each plan's newest.
    pub snapshot: Option<String>,
    /// Region to read first.
    pub from: Option<String>,
    /// Parent directory of scratch directories (default: the cache directory).
    pub scratch: Option<PathBuf>,
}

/// The result of one plan's restore test.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestOutcome {
    pub plan: String,
    pub kind: String,
    /// Hex id; empty when the plan has no snapshot.
    pub snapshot: String,
    pub region: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub bytes: u64,
    /// Bytes per second of the restore.
    pub throughput: f64,
    pub passed: bool,
    /// Every difference found (file, table, probe), or why the restore failed.
    pub differences: Vec<String>,
    /// What was compared.
    pub checked: String,
}

impl RestoreTestOutcome {
    /// The catalog row: `detail` is this outcome as JSON.
    pub fn to_record(&self) -> RestoreTest {
        RestoreTest {
            id: String::new(),
            plan: self.plan.clone(),
            snapshot: self.snapshot.clone(),
            region: self.region.clone(),
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            bytes: self.bytes as i64,
            passed: self.passed,
            detail: serde_json::to_string(&serde_json::json!({
                "kind": self.kind,
                "throughput_bytes_per_second": self.throughput,
                "checked": self.checked,
                "differences": self.differences,
            }))
            .ok(),
        }
    }
}

/// Record an outcome in the catalog's `restore_tests` (what `status` reads).
pub async fn record(catalog: &Catalog, outcome: &RestoreTestOutcome) -> Result<()> {
    catalog.record_restore_test(&outcome.to_record()).await?;
    // An RDS snapshot is verified by a restore that came up (repository snapshots by `verify`).
    if outcome.kind == "rds" && outcome.passed {
        catalog
            .mark_verified(&outcome.snapshot, &outcome.region, outcome.started_at)
            .await?;
    }
    Ok(())
}

/// Run the restore tests asked for, one plan after another. A failed test is an outcome,
/// not an error; errors are what stops every test (bad request, missing identity).
pub async fn restore_tests(
    config: &Config,
    req: &RestoreTestRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<Vec<RestoreTestOutcome>> {
    let plans: Vec<PlanConfig> = match &req.plan {
        Some(p) => vec![config.plan(p)?.clone()],
        None => config.plans.clone(),
    };
    anyhow::ensure!(
        req.snapshot.is_none() || req.plan.is_some(),
        "--snapshot needs --plan (a snapshot belongs to one plan)"
    );
    // rds plans restore from RDS snapshots in AWS regions: no repository, no identity.
    let all_rds = plans
        .iter()
        .all(|p| matches!(p.source, SourceConfig::Rds(_)));
    if !all_rds {
        if let Some(from) = &req.from {
            config.region(from)?;
        }
        // Fail early, once, when this host cannot decrypt.
        open(config, KeyNeed::Read, req.from.as_deref()).await?;
    }
    let mut out = Vec::new();
    for plan in &plans {
        cancel.check()?;
        out.push(restore_test(config, plan, req, progress.clone(), cancel.clone()).await?);
    }
    Ok(out)
}

/// One plan's restore test.
pub async fn restore_test(
    config: &Config,
    plan: &PlanConfig,
    req: &RestoreTestRequest,
    progress: Arc<Progress>,
    cancel: Cancel,
) -> Result<RestoreTestOutcome> {
    if let SourceConfig::Rds(src) = &plan.source {
        let waiter = crate::rds::wait::Waiter::of(src, cancel);
        let which = req.snapshot.as_deref().unwrap_or("latest");
        let run = crate::catalog::new_id();
        return crate::rds::restore_test(
            crate::rds::client(src),
            plan,
            req.from.as_deref(),
            which,
            &run,
            &waiter,
        )
        .await;
    }
    let region = req
        .from
        .clone()
        .unwrap_or_else(|| config.preferred_region().name.clone());
    let mut outcome = RestoreTestOutcome {
        plan: plan.name.clone(),
        kind: plan.source.kind().to_string(),
        snapshot: String::new(),
        region,
        started_at: crate::engine::now_epoch(),
        duration_ms: 0,
        bytes: 0,
        throughput: 0.0,
        passed: false,
        differences: Vec::new(),
        checked: String::new(),
    };
    let spec = req.snapshot.clone().unwrap_or_else(|| "latest".into());
    let scratch = req
        .scratch
        .clone()
        .unwrap_or_else(|| config.cache_dir.join("restore-tests"));
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let run = match &plan.source {
        SourceConfig::Dir { .. } => {
            dir_test(
                config,
                plan,
                &spec,
                req,
                &scratch,
                &progress,
                &cancel,
                &mut outcome,
            )
            .await
        }
        SourceConfig::Postgres { .. } => {
            pg_test(config, plan, &spec, req, &progress, &cancel, &mut outcome).await
        }
        SourceConfig::Command { .. } => {
            command_test(
                config,
                plan,
                &spec,
                req,
                &scratch,
                &progress,
                &cancel,
                &mut outcome,
            )
            .await
        }
        SourceConfig::Rds(_) => unreachable!("rds plans return above"),
    };
    if let Err(e) = run {
        if cancel.is_cancelled() {
            return Err(e);
        }
        outcome.differences.push(format!("{e:#}"));
    }
    outcome.passed = outcome.differences.is_empty();
    let secs = outcome.duration_ms as f64 / 1000.0;
    if secs > 0.0 {
        outcome.throughput = outcome.bytes as f64 / secs;
    }
    Ok(outcome)
}

fn elapsed_ms(d: Duration) -> i64 {
    (d.as_millis() as i64).max(1)
}

#[allow(clippy::too_many_arguments)]
async fn dir_test(
    config: &Config,
    plan: &PlanConfig,
    spec: &str,
    req: &RestoreTestRequest,
    scratch: &std::path::Path,
    progress: &Arc<Progress>,
    cancel: &Cancel,
    outcome: &mut RestoreTestOutcome,
) -> Result<()> {
    let repo = open(config, KeyNeed::Read, req.from.as_deref()).await?;
    let snapshot = repo.find_snapshot(spec, Some(&plan.name)).await?;
    outcome.snapshot = snapshot.id.to_hex();
    let index = Arc::new(repo.load_index().await.context("load index")?);
    let reader = Arc::new(BlobReader::new(repo.clone(), index));
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-restore-test-")
        .tempdir_in(scratch)
        .with_context(|| format!("create a scratch directory in {}", scratch.display()))?;
    outcome.checked = "every file's BLAKE3 against the manifest, and the file count".into();
    let started = Instant::now();
    let report = restore_tree(
        reader,
        snapshot.manifest.root,
        dir.path(),
        &RestoreOptions::default(),
        progress.clone(),
        cancel.clone(),
    )
    .await;
    outcome.duration_ms = elapsed_ms(started.elapsed());
    let report = report.map_err(|e| explain(e, &snapshot.id))?;
    outcome.bytes = report.bytes;
    let m = &snapshot.manifest.stats;
    if report.files != m.files {
        outcome.differences.push(format!(
            "{} files restored, the snapshot recorded {}",
            report.files, m.files
        ));
    }
    if report.bytes != m.bytes {
        outcome.differences.push(format!(
            "{} bytes restored, the snapshot recorded {}",
            report.bytes, m.bytes
        ));
    }
    Ok(())
}

async fn pg_test(
    config: &Config,
    plan: &PlanConfig,
    spec: &str,
    req: &RestoreTestRequest,
    progress: &Arc<Progress>,
    cancel: &Cancel,
    outcome: &mut RestoreTestOutcome,
) -> Result<()> {
    let SourceConfig::Postgres {
        url,
        password,
        scratch_url,
        ..
    } = &plan.source
    else {
        unreachable!("called for postgres plans")
    };
    let stream = OpenStream::open(config, &plan.name, spec, req.from.as_deref()).await?;
    outcome.snapshot = stream.snapshot.id.to_hex();
    let password = match password {
        Some(p) => Some(
            p.load()
                .with_context(|| format!("plan {}: source password", plan.name))?,
        ),
        None => None,
    };
    let admin_url = scratch_url
        .clone()
        .unwrap_or_else(|| postgres::with_database(url, "postgres"));
    let production = postgres::database_of(url);
    let name = format!("lifeboat_verify_{}", &crate::catalog::new_id()[..12]);
    anyhow::ensure!(
        production.as_deref() != Some(name.as_str()),
        "scratch database name {name} is the production database's: refusing"
    );
    let admin = PgTarget {
        url: &admin_url,
        password: password.as_ref(),
    };
    // template0: nothing a site added to template1 can collide with the dump's objects.
    postgres::admin(
        &admin,
        format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
    )
    .await
    .context("create the scratch database (the scratch_url user needs CREATEDB)")?;
    let scratch_db_url = postgres::with_database(&admin_url, &name);
    let scratch_db = PgTarget {
        url: &scratch_db_url,
        password: password.as_ref(),
    };
    outcome.checked =
        "row counts of every table and the plan's SQL probes, in a scratch database".into();
    let result = async {
        let started = Instant::now();
        let restored =
            restore_into_database(&stream, &scratch_db, false, None, progress, cancel).await;
        outcome.duration_ms = elapsed_ms(started.elapsed());
        outcome.bytes = restored?;
        let mut conn = scratch_db.connect().await?;
        let diffs = postgres::compare_probes(&mut conn, &stream.snapshot.manifest.probes).await;
        let _ = sqlx::Connection::close(conn).await;
        outcome.differences.extend(diffs?);
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let mut dropped = postgres::admin(
        &admin,
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    if dropped.is_err() {
        // Before PostgreSQL 13 there is no FORCE; our own connections are closed by now.
        dropped = postgres::admin(&admin, format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
    }
    if let Err(e) = dropped {
        tracing::error!(database = %name, error = %format!("{e:#}"), "could not drop the scratch database; drop it by hand");
        outcome.differences.push(format!(
            "scratch database {name} could not be dropped: {e:#}"
        ));
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn command_test(
    config: &Config,
    plan: &PlanConfig,
    spec: &str,
    req: &RestoreTestRequest,
    scratch: &std::path::Path,
    progress: &Arc<Progress>,
    cancel: &Cancel,
    outcome: &mut RestoreTestOutcome,
) -> Result<()> {
    let SourceConfig::Command { verify_command, .. } = &plan.source else {
        unreachable!("called for command plans")
    };
    let stream = OpenStream::open(config, &plan.name, spec, req.from.as_deref()).await?;
    outcome.snapshot = stream.snapshot.id.to_hex();
    let started = Instant::now();
    let bytes = match verify_command {
        Some(argv) => {
            outcome.checked = format!(
                "every chunk and the stream's BLAKE3, fed to verify_command {:?}",
                argv[0]
            );
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-restore-test-")
                .tempdir_in(scratch)
                .with_context(|| format!("create a scratch directory in {}", scratch.display()))?;
            let mut cmd = crate::source::command::async_command(argv);
            cmd.env("LIFEBOAT_SCRATCH_DIR", dir.path());
            let child = SinkChild::spawn(cmd, &format!("verify command {:?}", argv[0]), "")?;
            stream.pipe_into(child, progress, cancel).await
        }
        None => {
            outcome.checked =
                "every chunk and the stream's BLAKE3 (no verify_command configured)".into();
            stream
                .copy_to(&mut tokio::io::sink(), progress, cancel)
                .await
        }
    };
    outcome.duration_ms = elapsed_ms(started.elapsed());
    outcome.bytes = bytes?;
    Ok(())
}

/// A restore error, phrased as the difference it is.
fn explain(e: RepoError, snapshot: &Id) -> anyhow::Error {
    match e {
        RepoError::Corrupt(m) => anyhow::anyhow!("snapshot {} is corrupt: {m}", snapshot.short()),
        other => {
            anyhow::Error::new(other).context(format!("restore snapshot {}", snapshot.short()))
        }
    }
}

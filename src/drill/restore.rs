//! The data steps of a drill: `restore` (into scratch space or a named scratch target, in
//! this process through the engine or by a fresh bare-host `lifeboat` child), `verify` (what
//! was restored against what the backup recorded), `sql` (a query on a restored database),
//! and the RPO measurement of `assert rpo`. Reads go through the drill's region faults, so a
//! region declared down is never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions};
use lifeboat_repo::snapshot::SnapshotEntry;
use lifeboat_repo::{Cancel, Progress, Repository};

use super::report::{PlanRpo, RegionRpo, Throughput};
use super::run::{now_ms, Drill, Restored, Undo};
use super::runbook::{Selector, Step, StepKind, Target};
use super::steps::Outputs;
use crate::config::{Config, PlanConfig, SourceConfig};
use crate::engine::scratch::ScratchServer;
use crate::engine::stream::{restore_into_database, DatabaseRestore, OpenStream};
use crate::engine::{open_with, KeyNeed};
use crate::source::child::{Launch, SinkChild};
use crate::source::pg_globals::RoleMode;
use crate::source::postgres::{self, PgTarget};

async fn repo(drill: &Drill, region: Option<&str>) -> Result<Arc<Repository>> {
    open_with(&drill.config, KeyNeed::Read, region, &drill.faults()).await
}

/// The snapshot a selector names for `plan`.
async fn select(
    drill: &Drill,
    repo: &Repository,
    plan: &str,
    sel: &Selector,
) -> Result<SnapshotEntry> {
    Ok(match sel {
        Selector::Latest => repo.find_snapshot("latest", Some(plan)).await?,
        Selector::Id(id) => repo.find_snapshot(id, Some(plan)).await?,
        Selector::LatestVerified => {
            let (_, passed) = drill.catalog.last_restore_tests(plan).await?;
            let t = passed.with_context(|| {
                format!("plan {plan}: no passed restore test recorded, so no snapshot is verified (run `lifeboat verify --restore --plan {plan}`, or use snapshot = \"latest\")")
            })?;
            repo.find_snapshot(&t.snapshot, Some(plan)).await?
        }
    })
}

pub async fn restore(drill: &Arc<Drill>, step: &Step, cancel: &Cancel) -> Result<Outputs> {
    let StepKind::Restore {
        plans,
        snapshot,
        region,
        into,
        bare_host,
    } = &step.kind
    else {
        unreachable!("a restore step")
    };
    let mut out = Outputs::new();
    let repo = repo(drill, region.as_deref()).await?;
    let (mut total_bytes, mut total_files) = (0u64, 0u64);
    for name in plans {
        let plan = drill.config.plan(name)?.clone();
        let entry = select(drill, &repo, name, snapshot).await?;
        let current_bytes = repo
            .find_snapshot("latest", Some(name))
            .await
            .map(|s| s.manifest.stats.bytes)
            .unwrap_or(entry.manifest.stats.bytes);
        let restored = if *bare_host {
            bare_host_restore(drill, &step.id, &plan, &entry, region.as_deref(), cancel).await?
        } else {
            in_process(drill, &step.id, &plan, &repo, &entry, into, cancel).await?
        };
        let restored = Restored {
            current_bytes,
            ..restored
        };
        let p = &plan.name;
        out.insert(format!("{p}.snapshot"), restored.snapshot.clone());
        out.insert(
            format!("{p}.snapshot_time"),
            restored.snapshot_time.to_string(),
        );
        out.insert(format!("{p}.bytes"), restored.bytes.to_string());
        out.insert(format!("{p}.files"), restored.files.to_string());
        out.insert(format!("{p}.restore_ms"), restored.restore_ms.to_string());
        if let Some(d) = &restored.dir {
            out.insert(format!("{p}.path"), d.display().to_string());
        }
        if let Some(db) = &restored.database {
            out.insert(format!("{p}.database"), db.clone());
        }
        if plans.len() == 1 {
            out.insert("snapshot".into(), restored.snapshot.clone());
        }
        total_bytes += restored.bytes;
        total_files += restored.files;
        let secs = restored.restore_ms.max(1) as f64 / 1000.0;
        let rate = restored.bytes as f64 / secs;
        let projected = if restored.bytes > 0 {
            (restored.restore_ms as f64 * current_bytes as f64 / restored.bytes as f64) as i64
        } else {
            restored.restore_ms
        };
        let mut st = drill.lock();
        st.plan_ready_ms.insert(p.clone(), now_ms());
        st.throughput.insert(
            p.clone(),
            Throughput {
                plan: p.clone(),
                bytes: restored.bytes,
                restore_ms: restored.restore_ms,
                bytes_per_second: rate,
                current_bytes,
                projected_rto_ms: projected,
            },
        );
        st.restored.insert((step.id.clone(), p.clone()), restored);
    }
    out.insert("bytes".into(), total_bytes.to_string());
    out.insert("files".into(), total_files.to_string());
    out.insert("plans".into(), plans.join(","));
    let log = repo.read_log.lock().unwrap_or_else(|p| p.into_inner());
    let read: Vec<String> = log
        .per_region
        .iter()
        .map(|(r, n)| format!("{r}:{n}"))
        .collect();
    out.insert("regions_read".into(), read.join(","));
    out.insert("fallbacks".into(), log.fallbacks.len().to_string());
    if let Some(f) = log.fallbacks.first() {
        out.insert(
            "first_fallback".into(),
            format!(
                "{} from {} ({} failed: {})",
                f.object, f.used_region, f.failed_region, f.error
            ),
        );
    }
    Ok(out)
}

fn scratch_dir(drill: &Drill, step: &str, plan: &str) -> Result<PathBuf> {
    let dir = drill.scratch.join(format!("{step}-{plan}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

async fn in_process(
    drill: &Arc<Drill>,
    step: &str,
    plan: &PlanConfig,
    repo: &Arc<Repository>,
    entry: &SnapshotEntry,
    into: &Target,
    cancel: &Cancel,
) -> Result<Restored> {
    let progress = Arc::new(Progress::default());
    let mut r = Restored {
        kind: plan.source.kind().into(),
        snapshot: entry.id.to_hex(),
        snapshot_time: entry.manifest.time,
        manifest: entry.manifest.clone(),
        dir: None,
        database: None,
        bytes: 0,
        files: 0,
        restore_ms: 0,
        current_bytes: 0,
    };
    if plan.source.as_rds().is_some() {
        anyhow::bail!(
            "plan {}: an rds plan has no repository snapshot; restore it with an rds_restore step",
            plan.name
        );
    }
    match &plan.source {
        SourceConfig::Dir { .. } => {
            let target = match into {
                Target::Scratch => scratch_dir(drill, step, &plan.name)?,
                Target::Named(path) => {
                    let p = PathBuf::from(path);
                    if p.exists()
                        && std::fs::read_dir(&p)
                            .map(|mut d| d.next().is_some())
                            .unwrap_or(true)
                    {
                        anyhow::bail!("named target {} is not empty: a drill restores into an empty or new directory", p.display());
                    }
                    std::fs::create_dir_all(&p)
                        .with_context(|| format!("create {}", p.display()))?;
                    drill.created(
                        format!("restored directory {}", p.display()),
                        step,
                        Undo::RemoveDir(p.clone()),
                    );
                    p
                }
            };
            // A real restore pays the index load: the restore's time starts before it.
            let started = Instant::now();
            let index = Arc::new(repo.load_lookup_index().await.context("load index")?);
            let reader = Arc::new(BlobReader::new(repo.clone(), index));
            let report = restore_tree(
                reader,
                entry.manifest.tree_root()?,
                &target,
                &RestoreOptions::default(),
                progress,
                cancel.clone(),
            )
            .await
            .with_context(|| {
                format!(
                    "restore snapshot {} of plan {}",
                    entry.id.short(),
                    plan.name
                )
            })?;
            r.restore_ms = started.elapsed().as_millis() as i64;
            r.bytes = report.bytes;
            r.files = report.files;
            r.dir = Some(target);
        }
        SourceConfig::Postgres { url, .. } => {
            // The index load is part of the restore's time; scratch set-up is not.
            let opening = Instant::now();
            let stream =
                OpenStream::from_repo(repo.clone(), &plan.name, &entry.id.to_hex()).await?;
            let open_ms = opening.elapsed().as_millis() as i64;
            let scrub = postgres::libpq_scrub(drill.config.secret_env_names());
            let started;
            let restored = match into {
                Target::Named(u) => {
                    // A named target keeps what it gets: roles as recorded, owners, grants.
                    let server = ScratchServer::at(plan, u.clone())?;
                    let how = DatabaseRestore {
                        owners: true,
                        privileges: true,
                        roles: Some(RoleMode::Restore),
                        ..Default::default()
                    };
                    started = Instant::now();
                    let done = restore_into_database(
                        &stream,
                        &server.target(u),
                        &how,
                        &progress,
                        cancel,
                        &scrub,
                    )
                    .await?;
                    (done, u.clone(), server)
                }
                Target::Scratch => {
                    let server = ScratchServer::of(&drill.config, plan)?;
                    if let Some(w) = server.check_role().await? {
                        tracing::warn!(plan = %plan.name, "{w}");
                    }
                    // Roles first, so the ledger (unwound newest first) drops them last.
                    if let Some(r) = server.create_roles(&stream, cancel).await? {
                        if !r.created.is_empty() {
                            drill.created(
                                format!(
                                    "roles {} on {}",
                                    r.created.join(", "),
                                    postgres::redact(&server.admin_url)
                                ),
                                step,
                                Undo::DropRoles {
                                    plan: plan.name.clone(),
                                    admin_url: server.admin_url.clone(),
                                    roles: r.created.clone(),
                                },
                            );
                        }
                    }
                    let db = server.create_database("lifeboat_drill", url).await?;
                    drill.created(
                        format!(
                            "scratch database {} on {}",
                            db.name,
                            postgres::redact(&server.admin_url)
                        ),
                        step,
                        Undo::DropDatabase {
                            plan: plan.name.clone(),
                            admin_url: server.admin_url.clone(),
                            name: db.name.clone(),
                        },
                    );
                    let how = DatabaseRestore {
                        privileges: true,
                        ..Default::default()
                    };
                    started = Instant::now();
                    let done = restore_into_database(
                        &stream,
                        &server.target(&db.url),
                        &how,
                        &progress,
                        cancel,
                        &scrub,
                    )
                    .await?;
                    (done, db.url, server)
                }
            };
            let (done, db_url, server) = restored;
            r.bytes = done.bytes;
            r.restore_ms = open_ms + started.elapsed().as_millis() as i64;
            let mut conn = server.target(&db_url).connect().await?;
            r.files = postgres::row_counts(&mut conn).await?.len() as u64;
            let _ = sqlx::Connection::close(conn).await;
            // Config URLs never hold a password, so this one can be shown and reused.
            r.database = Some(db_url);
        }
        SourceConfig::Command { verify_command, .. } => {
            let started = Instant::now();
            let stream =
                OpenStream::from_repo(repo.clone(), &plan.name, &entry.id.to_hex()).await?;
            let dir = scratch_dir(drill, step, &plan.name)?;
            r.bytes = match verify_command {
                Some(argv) => {
                    let mut cmd = crate::source::command::async_command(argv);
                    cmd.env("LIFEBOAT_SCRATCH_DIR", &dir);
                    let scrub = drill.config.secret_env_names();
                    let launch = Launch {
                        what: format!("verify command {:?}", argv[0]),
                        hint: "",
                        scrub: &scrub,
                        cancel,
                        keep: None,
                    };
                    let child = SinkChild::spawn(cmd, launch)?;
                    stream.pipe_into(child, &progress, cancel).await?
                }
                None => {
                    stream
                        .copy_to(&mut tokio::io::sink(), &progress, cancel)
                        .await?
                }
            };
            r.restore_ms = started.elapsed().as_millis() as i64;
            r.files = 1;
            r.dir = Some(dir);
        }
        SourceConfig::Rds(_) => unreachable!("refused above"),
    }
    r.restore_ms = r.restore_ms.max(1);
    Ok(r)
}

/// The restore done by a fresh `lifeboat` process that has only the identity file and the
/// region settings (what an SRE has after losing the backup host): no writer key, no
/// recipients, no catalog, no plans.
async fn bare_host_restore(
    drill: &Arc<Drill>,
    step: &str,
    plan: &PlanConfig,
    entry: &SnapshotEntry,
    region: Option<&str>,
    cancel: &Cancel,
) -> Result<Restored> {
    let home = drill.scratch.join(format!("{step}-bare-host"));
    std::fs::create_dir_all(&home).with_context(|| format!("create {}", home.display()))?;
    let config_path = home.join("lifeboat.toml");
    std::fs::write(&config_path, bare_config(&drill.config)?)
        .with_context(|| format!("write {}", config_path.display()))?;
    let target = match &plan.source {
        SourceConfig::Dir { .. } => home.join(format!("restore-{}", plan.name)),
        _ => home.join(format!("{}.stream", plan.name)),
    };
    let exe = std::env::current_exe().context("find the lifeboat executable")?;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("--config")
        .arg(&config_path)
        .args([
            "restore",
            &plan.name,
            "--snapshot",
            &entry.id.to_hex(),
            "--json",
            "--to",
        ])
        .arg(&target);
    if let Some(r) = region {
        cmd.args(["--from", r]);
    }
    // The child sees no lifeboat config and none of lifeboat's secrets but the identity file.
    cmd.env_remove("LIFEBOAT_CONFIG")
        .env("HOME", &home)
        .kill_on_drop(true);
    for var in drill.config.secret_env_names() {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", exe.display()))?;
    let waited = tokio::select! {
        o = child.wait_with_output() => o.context("wait for the bare-host lifeboat")?,
        _ = cancel.cancelled() => {
            anyhow::bail!("bare-host restore cancelled");
        }
    };
    let restore_ms = started.elapsed().as_millis().max(1) as i64;
    anyhow::ensure!(
        waited.status.success(),
        "bare-host `lifeboat restore {}` (config {}) failed ({}): {}",
        plan.name,
        config_path.display(),
        waited.status,
        String::from_utf8_lossy(&waited.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&waited.stdout)
        .context("bare-host restore: read its --json output")?;
    let report = &v["report"];
    Ok(Restored {
        kind: plan.source.kind().into(),
        snapshot: v["snapshot"].as_str().unwrap_or_default().to_string(),
        snapshot_time: v["snapshot_time"].as_i64().unwrap_or(entry.manifest.time),
        manifest: entry.manifest.clone(),
        dir: matches!(plan.source, SourceConfig::Dir { .. }).then(|| target.clone()),
        database: None,
        bytes: report["bytes"]
            .as_u64()
            .or(v["bytes"].as_u64())
            .unwrap_or(0),
        files: report["files"].as_u64().unwrap_or(1),
        restore_ms,
        current_bytes: 0,
    })
}

/// `[keys] identity_file` and the `[[regions]]` of `config`, nothing else.
pub fn bare_config(config: &Config) -> Result<String> {
    let identity = match &config.keys.identity {
        Some(crate::config::SecretRef::File(p)) => p.clone(),
        Some(crate::config::SecretRef::Env(v)) => anyhow::bail!("a bare-host drill needs keys.identity_file (the identity is in ${v}; a bare host gets it as a file from escrow)"),
        None => anyhow::bail!("a bare-host drill restores, so this host needs keys.identity_file"),
    };
    let text = std::fs::read_to_string(&config.path)
        .with_context(|| format!("read {}", config.path.display()))?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("parse {}", config.path.display()))?;
    let mut out = toml::Table::new();
    let mut keys = toml::Table::new();
    keys.insert(
        "identity_file".into(),
        toml::Value::String(identity.display().to_string()),
    );
    out.insert("keys".into(), toml::Value::Table(keys));
    let mut regions = doc
        .get("regions")
        .cloned()
        .context("the config has no [[regions]]")?;
    // Relative local paths were relative to the config's directory: make them absolute.
    if let Some(list) = regions.as_array_mut() {
        for (r, resolved) in list.iter_mut().zip(&config.regions) {
            if let (Some(t), crate::config::RegionKind::Local { path }) =
                (r.as_table_mut(), &resolved.kind)
            {
                t.insert(
                    "path".into(),
                    toml::Value::String(path.display().to_string()),
                );
            }
        }
    }
    out.insert("regions".into(), regions);
    Ok(toml::to_string(&out)?)
}

pub async fn verify(drill: &Arc<Drill>, step: &str, on: &str) -> Result<Outputs> {
    let restored: Vec<(String, Restored)> = {
        let st = drill.lock();
        st.restored
            .iter()
            .filter(|((s, _), _)| s == on)
            .map(|((_, p), r)| (p.clone(), r.clone()))
            .collect()
    };
    anyhow::ensure!(!restored.is_empty(), "restore step {on} restored nothing");
    let mut out = Outputs::new();
    let mut differences = Vec::new();
    for (plan, r) in &restored {
        let checked;
        if let Some(dir) = r.dir.as_ref().filter(|_| r.kind == "dir") {
            let (files, bytes, hash) = walk(dir)?;
            let m = &r.manifest.stats;
            if files != m.files {
                differences.push(format!(
                    "plan {plan}: {files} files on disk, the snapshot recorded {}",
                    m.files
                ));
            }
            if bytes != m.bytes {
                differences.push(format!(
                    "plan {plan}: {bytes} bytes on disk, the snapshot recorded {}",
                    m.bytes
                ));
            }
            out.insert(format!("{plan}.files"), files.to_string());
            out.insert(format!("{plan}.bytes"), bytes.to_string());
            out.insert(format!("{plan}.content_blake3"), hash);
            checked = "every file's BLAKE3 against the tree during the restore; file count and bytes on disk against the manifest".into();
        } else if r.kind == "postgres" {
            if let Some(db) = &r.database {
                let url = db.clone();
                let pw = password(&drill.config, plan)?;
                let target = PgTarget {
                    url: &url,
                    password: pw.as_ref(),
                };
                let probes = match &drill.config.plan(plan)?.source {
                    SourceConfig::Postgres { probes, .. } => probes.clone(),
                    _ => Vec::new(),
                };
                let mut conn = target.connect().await?;
                let check =
                    postgres::compare_probes(&mut conn, &r.manifest.probes, &probes).await?;
                let diffs = check.differences;
                let counts = postgres::row_counts(&mut conn).await?;
                let _ = sqlx::Connection::close(conn).await;
                out.insert(format!("{plan}.tables"), counts.len().to_string());
                out.insert(
                    format!("{plan}.rows"),
                    counts.values().sum::<i64>().to_string(),
                );
                differences.extend(diffs.into_iter().map(|d| format!("plan {plan}: {d}")));
                checked =
                    "row counts of every table and the plan's SQL probes against the backup's"
                        .into();
            } else {
                checked =
                    "the dump stream (every chunk and its BLAKE3) as restored by the bare host"
                        .into();
            }
        } else {
            checked = "every chunk and the stream's BLAKE3 while it fed the verify command".into();
        }
        out.insert(format!("{plan}.checked"), checked);
        drill.lock().plan_ready_ms.insert(plan.clone(), now_ms());
    }
    out.insert("differences".into(), differences.len().to_string());
    let _ = step;
    anyhow::ensure!(differences.is_empty(), "{}", differences.join("; "));
    Ok(out)
}

/// Regular files, their bytes, and one BLAKE3 over every (path, content) in path order.
fn walk(root: &Path) -> Result<(u64, u64, String)> {
    let mut files = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut h = blake3::Hasher::new();
    let mut bytes = 0;
    for f in &files {
        h.update(
            f.strip_prefix(root)
                .unwrap_or(f)
                .as_os_str()
                .as_encoded_bytes(),
        );
        let mut file = std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?;
        bytes +=
            std::io::copy(&mut file, &mut h).with_context(|| format!("read {}", f.display()))?;
    }
    Ok((files.len() as u64, bytes, h.finalize().to_hex().to_string()))
}

fn password(config: &Config, plan: &str) -> Result<Option<crate::config::SecretString>> {
    match &config.plan(plan)?.source {
        SourceConfig::Postgres {
            password: Some(p), ..
        } => Ok(Some(p.load()?)),
        _ => Ok(None),
    }
}

pub async fn sql(
    drill: &Arc<Drill>,
    _step: &str,
    on: &str,
    plan: Option<&str>,
    query: &str,
    expect: &str,
) -> Result<Outputs> {
    let targets: Vec<(String, Restored)> = {
        let st = drill.lock();
        st.restored
            .iter()
            .filter(|((s, p), r)| {
                s == on && r.database.is_some() && plan.is_none_or(|want| want == p)
            })
            .map(|((_, p), r)| (p.clone(), r.clone()))
            .collect()
    };
    anyhow::ensure!(
        !targets.is_empty(),
        "restore step {on} restored no database{}",
        plan.map(|p| format!(" for plan {p}")).unwrap_or_default()
    );
    let (op, want) = super::compare::parse_expect(expect).map_err(anyhow::Error::msg)?;
    let mut out = Outputs::new();
    for (p, r) in &targets {
        let url = r.database.clone().unwrap_or_default();
        let pw = password(&drill.config, p)?;
        let target = PgTarget {
            url: &url,
            password: pw.as_ref(),
        };
        let mut conn = target.connect().await?;
        let wrapped = format!("SELECT ({query})::text");
        let got: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("plan {p}: query {query:?} (a query returning one value)"))?;
        let _ = sqlx::Connection::close(conn).await;
        let got = got.unwrap_or_else(|| "NULL".into());
        out.insert(format!("{p}.value"), got.clone());
        if targets.len() == 1 {
            out.insert("value".into(), got.clone());
        }
        anyhow::ensure!(
            super::compare::holds(&got, op, &want),
            "plan {p}: {query:?} gave {got}, expected {op} {want}"
        );
        drill.lock().plan_ready_ms.insert(p.clone(), now_ms());
    }
    Ok(out)
}

/// Achieved RPO per covered plan: of the snapshot restored (T0 − its time) and per region
/// (T0 − the newest snapshot the region holds), against the target.
pub async fn rpo(drill: &Arc<Drill>, regions: &[String]) -> Result<Vec<PlanRpo>> {
    let (t0_ms, down, restored): (i64, Vec<String>, BTreeMap<String, (String, i64)>) = {
        let st = drill.lock();
        let restored = st
            .restored
            .iter()
            .map(|((_, p), r)| (p.clone(), (r.snapshot.clone(), r.snapshot_time)))
            .collect();
        (
            st.t0_ms.unwrap_or_else(now_ms),
            st.faults.down.iter().cloned().collect(),
            restored,
        )
    };
    let t0 = t0_ms / 1000;
    let required: Vec<String> = if regions.is_empty() {
        drill
            .book
            .regions
            .iter()
            .filter(|r| !down.contains(r))
            .cloned()
            .collect()
    } else {
        regions.to_vec()
    };
    let repo = repo(drill, None).await?;
    let (entries, failed) = repo
        .list_snapshots_detailed()
        .await
        .context("list snapshots for the RPO")?;
    let mut out = Vec::new();
    for name in &drill.book.plans {
        let plan = drill.config.plan(name)?;
        let target_s = drill.book.rpo.unwrap_or(plan.objectives.rpo).as_secs() as i64;
        if plan.source.as_rds().is_some() {
            out.push(rds_rpo(drill, plan, t0, target_s).await?);
            continue;
        }
        let mut rows = Vec::new();
        for region in &required {
            let newest = entries
                .iter()
                .rev()
                .find(|e| e.manifest.plan == *name && e.regions.contains(region));
            let failed_here = failed.iter().find(|(r, _)| r == region);
            let row = match (newest, failed_here) {
                (_, Some((_, e))) => RegionRpo {
                    region: region.clone(),
                    snapshot: None,
                    snapshot_time: None,
                    achieved_s: None,
                    met: false,
                    note: Some(format!("region could not be listed: {e}")),
                },
                (None, None) => RegionRpo {
                    region: region.clone(),
                    snapshot: None,
                    snapshot_time: None,
                    achieved_s: None,
                    met: false,
                    note: Some("no snapshot of this plan in the region".into()),
                },
                (Some(e), None) => {
                    let age = (t0 - e.manifest.time).max(0);
                    RegionRpo {
                        region: region.clone(),
                        snapshot: Some(e.id.to_hex()),
                        snapshot_time: Some(e.manifest.time),
                        achieved_s: Some(age),
                        met: age <= target_s,
                        note: None,
                    }
                }
            };
            rows.push(row);
        }
        let (snap, achieved) = match restored.get(name) {
            Some((s, time)) => (Some(s.clone()), Some((t0 - time).max(0))),
            None => (None, None),
        };
        out.push(PlanRpo {
            plan: name.clone(),
            target_s,
            restored_snapshot: snap,
            achieved_s: achieved,
            met: achieved.map(|a| a <= target_s),
            regions: rows,
        });
    }
    Ok(out)
}

/// An rds plan's RPO at T0, per AWS region of the plan, from the catalog's rows (the RDS
/// snapshots `backup` and `catalog sync` recorded): the newest snapshot available there.
async fn rds_rpo(drill: &Arc<Drill>, plan: &PlanConfig, t0: i64, target_s: i64) -> Result<PlanRpo> {
    let rows = drill.catalog.snapshots(Some(&plan.name)).await?;
    let regions = plan
        .regions
        .iter()
        .map(|region| {
            let newest = rows
                .iter()
                .rev()
                .find(|r| r.present.contains(region) && r.time <= t0);
            let age = newest.map(|r| (t0 - r.time).max(0));
            RegionRpo {
                region: region.clone(),
                snapshot: newest.map(|r| r.id.clone()),
                snapshot_time: newest.map(|r| r.time),
                achieved_s: age,
                met: age.is_some_and(|a| a <= target_s),
                note: newest
                    .is_none()
                    .then(|| "no RDS snapshot of this plan available in the region".to_string()),
            }
        })
        .collect();
    Ok(PlanRpo {
        plan: plan.name.clone(),
        target_s,
        restored_snapshot: None,
        achieved_s: None,
        met: None,
        regions,
    })
}

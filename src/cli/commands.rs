//! One function per command: call the engine, print a summary (or JSON), pick the exit code.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_repo::keys::{Identity, WriterKey};
use lifeboat_repo::verify::{verify, VerifyOptions};
use lifeboat_repo::Progress;
use serde_json::json;

use super::output::{cancel_on_signals, print_json};
use super::progress::Bar;
use super::render::{bytes, rate, table, time};
use super::{exit, load_config, Cli, Command, ConfigCommand, KeysCommand, RegionsCommand};
use crate::catalog::RunKind;
use crate::engine::{self, KeyNeed, RestoreRequest};

pub async fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Keys(KeysCommand::Generate { dir, json }) => keys_generate(dir, *json),
        Command::Keys(KeysCommand::List { json }) => super::keys::list(cli, *json).await,
        Command::Keys(KeysCommand::Rotate {
            dir,
            recipient,
            json,
        }) => super::keys::rotate(cli, dir.as_deref(), recipient.as_deref(), *json).await,
        Command::Keys(KeysCommand::AddWriter { name, dir, json }) => {
            super::writers::add(cli, name, dir, *json).await
        }
        Command::Keys(KeysCommand::RevokeWriter { name, json }) => {
            super::writers::revoke(cli, name, *json).await
        }
        Command::Keys(KeysCommand::Rewrap { epoch, json }) => {
            super::keys::rewrap(cli, *epoch, *json).await
        }
        Command::Config(ConfigCommand::Example { dir }) => {
            print!("{}", crate::config::example(dir));
            Ok(exit::OK)
        }
        Command::Init { json } => init(cli, *json).await,
        Command::Upgrade { json } => super::keys::upgrade(cli, *json).await,
        Command::Backup { plan, json } => backup(cli, plan, *json).await,
        Command::Snapshots { plan, json } => snapshots(cli, plan.as_deref(), *json).await,
        Command::Restore {
            plan,
            snapshot,
            from,
            to,
            include,
            overwrite,
            force,
            jobs,
            scratch,
            to_instance,
            instance_class,
            subnet_group,
            security_groups,
            no_setuid,
            no_owner,
            no_privileges,
            no_xattrs,
            json,
        } => {
            if let Some(to_instance) = to_instance {
                let config = load_config(cli)?;
                let plan = config.plan(plan)?;
                let args = super::rds::RestoreArgs {
                    request: crate::rds::restore::InstanceRequest {
                        to: to_instance,
                        from: from.as_deref(),
                        snapshot,
                        overrides: crate::rds::restore::Overrides {
                            instance_class: instance_class.clone(),
                            subnet_group: subnet_group.clone(),
                            security_groups: security_groups.clone(),
                        },
                    },
                    json: *json,
                };
                return super::rds::restore(&config, plan, &args).await;
            }
            if let Ok(config) = load_config(cli) {
                if super::rds::rds_plan(&config, plan).is_some() {
                    anyhow::bail!("plan {plan} is an rds plan: restore it into a new DB instance with --to-instance NAME");
                }
            }
            let args = super::restore_stream::Args {
                plan,
                snapshot,
                from: from.as_deref(),
                to: to.as_deref(),
                include: include.as_deref(),
                overwrite: *overwrite,
                force: *force,
                jobs: *jobs,
                scratch: scratch.as_deref(),
                no_owner: *no_owner,
                no_privileges: *no_privileges,
                json: *json,
            };
            if let Some(code) = super::restore_stream::run(cli, &args).await? {
                return Ok(code);
            }
            let req = RestoreRequest {
                plan: plan.clone(),
                snapshot: snapshot.clone(),
                from: from.clone(),
                to: to
                    .as_deref()
                    .map(Into::into)
                    .context("--to DIR: where to restore")?,
                include: include.clone(),
                overwrite: *overwrite,
                no_setuid: *no_setuid,
                no_owner: *no_owner,
                no_xattrs: *no_xattrs,
            };
            restore(cli, &req, *json).await
        }
        Command::Verify {
            restore: true,
            plan,
            snapshot,
            from,
            scratch,
            json,
            ..
        } => {
            let req = engine::RestoreTestRequest {
                plan: plan.clone(),
                snapshot: snapshot.clone(),
                from: from.clone(),
                scratch: scratch.clone(),
            };
            super::verify_restore::run(cli, &req, *json).await
        }
        Command::Verify {
            read_data, json, ..
        } => verify_cmd(cli, *read_data, *json).await,
        Command::Status { json } => super::status::run(cli, *json).await,
        Command::Daemon(args) => super::daemon::daemon(cli, args).await,
        Command::RunDue(args) => super::daemon::run_due(cli, args).await,
        Command::Catalog(c) => super::catalog::run(cli, c).await,
        Command::Audit {
            verify,
            limit,
            json,
        } => super::audit::run(cli, *verify, *limit, *json).await,
        Command::Forget(args) => super::forget::run(cli, args).await,
        Command::Prune(args) => super::prune::run(cli, args).await,
        Command::Replicate { json } => super::regions::replicate(cli, *json).await,
        Command::Regions(RegionsCommand::Check { json }) => super::regions::check(cli, *json).await,
        Command::Drill(c) => super::drill::run(cli, c).await,
    }
}

pub(super) fn write_secret_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn keys_generate(dir: &Path, json: bool) -> Result<u8> {
    let identity_path = dir.join("identity.txt");
    let writer_path = dir.join("writer.key");
    let recipients_path = dir.join("recipients.txt");
    for p in [&identity_path, &writer_path, &recipients_path] {
        anyhow::ensure!(
            !p.exists(),
            "{} already exists; refusing to overwrite key material (move it away first if you really mean to replace it)",
            p.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let identity = Identity::generate();
    let writer = WriterKey::generate();
    let recipient = identity.recipient().to_string();
    write_secret_file(&identity_path, &identity.to_file_text(), 0o600)?;
    write_secret_file(&writer_path, &writer.to_file_text(), 0o600)?;
    write_secret_file(
        &recipients_path,
        &format!("# lifeboat recipients (public)\n{recipient}\n"),
        0o644,
    )?;
    if json {
        print_json(&json!({
            "recipient": recipient,
            "identity_file": identity_path,
            "writer_key_file": writer_path,
            "recipients_file": recipients_path,
        }));
    } else {
        println!("recipient: {recipient}");
        println!(
            "wrote {} (decrypts backups: keep it off backup hosts, escrow a copy)",
            identity_path.display()
        );
        println!(
            "wrote {} (adds snapshots: install on backup hosts)",
            writer_path.display()
        );
        println!("wrote {} (public)", recipients_path.display());
    }
    Ok(exit::OK)
}

async fn init(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    crate::storage::prepare(&config)?;
    let keys = engine::keyring(&config, KeyNeed::Write)?;
    let regions = crate::storage::regions(&config)?;
    let (repo, created) = lifeboat_repo::repo::init(&regions, &keys, Default::default()).await?;
    // The pins, from the repository as it now is (its secrets are in its key objects). They
    // are printed below, so the reopen does not warn that the host is not pinned.
    lifeboat_repo::repo::quiet_unpinned_warning();
    let pins = match engine::open(&config, KeyNeed::Write, None).await {
        Ok(r) => Some(r.pin_lines()),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not reopen the repository to print its pins; the next command that opens it prints them in its 'not pinned' warning");
            None
        }
    };
    if json {
        print_json(&json!({ "repository": repo.id, "created_in": created, "pin_lines": pins }));
    } else {
        println!("repository {} created in {}", repo.id, created.join(", "));
        if let Some(p) = pins {
            println!("\npin it: paste these lines into lifeboat.toml on every host:\n{p}");
        }
    }
    Ok(exit::OK)
}

async fn backup(cli: &Cli, plan: &str, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    if let Some(p) = super::rds::rds_plan(&config, plan) {
        return super::rds::backup(&config, p, json).await;
    }
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(&format!("backup {plan}"), progress.clone(), !json);
    let history = super::history::History::begin(&config, RunKind::Backup, Some(plan)).await;
    let res = engine::backup(&config, plan, progress, cancel_on_signals()).await;
    bar.finish();
    history.end_backup(&res).await;
    let r = res?;
    let m = &r.outcome.manifest;
    let mut failed = r.unavailable.clone();
    failed.extend(r.outcome.failed.iter().cloned());
    let secs = r.duration.as_secs_f64();
    if json {
        print_json(&json!({
            "snapshot": r.outcome.snapshot.to_hex(),
            "plan": r.plan,
            "time": m.time,
            "complete_in": r.outcome.complete,
            "failed_regions": failed.iter().map(|(n, e)| json!({"region": n, "error": e})).collect::<Vec<_>>(),
            "degraded": r.is_degraded(),
            "partial": m.is_partial(),
            "unreadable": m.unreadable,
            "stats": m.stats,
            "duration_seconds": secs,
            "warnings": r.warnings,
        }));
    } else {
        println!(
            "snapshot {} of {}: {} files, {} ({} new, {} stored) in {:.1}s ({}), complete in {}",
            r.outcome.snapshot.short(),
            r.plan,
            m.stats.files,
            bytes(m.stats.bytes),
            bytes(m.stats.new_bytes),
            bytes(m.stats.stored_bytes),
            secs,
            rate(m.stats.bytes_read, secs),
            r.outcome.complete.join(", ")
        );
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
    }
    if m.is_partial() {
        eprintln!(
            "lifeboat: PARTIAL: {} entr{} could not be read and {} not in this snapshot (everything else is):",
            m.unreadable.len(),
            if m.unreadable.len() == 1 { "y" } else { "ies" },
            if m.unreadable.len() == 1 { "is" } else { "are" },
        );
        for u in &m.unreadable {
            eprintln!("lifeboat:   {u}");
        }
    }
    if r.is_degraded() {
        for (n, e) in &failed {
            eprintln!("lifeboat: DEGRADED: region {n} does not hold this snapshot: {e}");
        }
        eprintln!("lifeboat: the snapshot does not count toward the RPO until `lifeboat replicate` copies it there");
        return Ok(exit::DEGRADED);
    }
    if m.is_partial() {
        return Ok(exit::DEGRADED);
    }
    Ok(exit::OK)
}

async fn snapshots(cli: &Cli, plan: Option<&str>, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    // An rds plan is known only from the config; other plans may also be found in the
    // manifests (a bare restore host declares none).
    if let Some(p) = plan.filter(|p| config.plan(p).is_ok()) {
        if let Some(p) = super::rds::rds_plan(&config, p) {
            return super::rds::snapshots(&config, p, json).await;
        }
    }
    let repo = engine::open(&config, KeyNeed::Any, None).await?;
    let list: Vec<_> = repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|s| plan.is_none_or(|p| s.manifest.plan == p))
        .collect();
    // A plan is known from the config or from the manifests: an unknown name is a typo.
    if let Some(p) = plan.filter(|p| list.is_empty() && config.plan(p).is_err()) {
        engine::find_plan_snapshot(&config, &repo, p, "latest").await?;
    }
    let all_regions: Vec<String> = config.regions.iter().map(|r| r.name.clone()).collect();
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.to_hex(),
                    "plan": s.manifest.plan,
                    "time": s.manifest.time,
                    "host": s.manifest.host,
                    "source": s.manifest.source,
                    "regions": s.regions,
                    "complete": all_regions.iter().all(|r| s.regions.contains(r)),
                    "partial": s.manifest.is_partial(),
                    "unreadable": s.manifest.unreadable,
                    "sealed": s.manifest.sealed,
                    // The root tree: equal for two snapshots of identical content.
                    "tree": s.manifest.tree_root().ok().map(|t| t.to_hex()),
                    "stats": s.manifest.stats,
                })
            })
            .collect();
        print_json(&json!(v));
        return Ok(exit::OK);
    }
    if list.is_empty() {
        println!("no snapshots yet");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let complete = all_regions.iter().all(|r| s.regions.contains(r));
            vec![
                s.id.short(),
                time(s.manifest.time),
                s.manifest.plan.clone(),
                s.manifest.host.clone(),
                s.manifest.stats.files.to_string(),
                bytes(s.manifest.stats.bytes),
                bytes(s.manifest.stats.stored_bytes),
                format!(
                    "{}{}{}",
                    s.regions.join(","),
                    if complete { "" } else { " (DEGRADED)" },
                    if s.manifest.is_partial() {
                        format!(" (PARTIAL: {} unreadable)", s.manifest.unreadable.len())
                    } else {
                        String::new()
                    }
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "TIME", "PLAN", "HOST", "FILES", "SIZE", "ADDED", "REGIONS"],
            &rows
        )
    );
    Ok(exit::OK)
}

async fn restore(cli: &Cli, req: &RestoreRequest, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(&format!("restore {}", req.plan), progress.clone(), !json);
    let history = super::history::History::begin(&config, RunKind::Restore, Some(&req.plan)).await;
    let res = engine::restore(&config, req, progress, cancel_on_signals()).await;
    bar.finish();
    history.end_restore(&res).await;
    let r = res?;
    let secs = r.duration.as_secs_f64();
    if json {
        print_json(&json!({
            "snapshot": r.snapshot.id.to_hex(),
            "plan": r.snapshot.manifest.plan,
            "snapshot_time": r.snapshot.manifest.time,
            "target": req.to,
            "report": r.report,
            "duration_seconds": secs,
            "objects_per_region": r.per_region.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "fallbacks": r.fallbacks.iter().map(|f| json!({"object": f.object, "failed_region": f.failed_region, "error": f.error, "used_region": f.used_region})).collect::<Vec<_>>(),
            "demoted_regions": r.demoted.iter().map(|d| json!({"region": d.region, "error": d.error})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "restored snapshot {} ({}) of {} into {}: {} files, {} dirs, {} symlinks, {} in {:.1}s ({}); every file verified",
            r.snapshot.id.short(),
            time(r.snapshot.manifest.time),
            r.snapshot.manifest.plan,
            req.to.display(),
            r.report.files,
            r.report.dirs,
            r.report.symlinks,
            bytes(r.report.bytes),
            secs,
            rate(r.report.bytes, secs)
        );
        let per: Vec<String> = r
            .per_region
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!("objects read per region: {}", per.join(", "));
        if r.report.hardlinks + r.report.specials > 0 {
            println!(
                "of these files {} are hard links to others; {} FIFOs and device nodes made",
                r.report.hardlinks, r.report.specials
            );
        }
        for w in &r.report.warnings {
            eprintln!("warning: {w}");
        }
        for f in &r.fallbacks {
            println!(
                "fallback: {} from {} ({} failed: {})",
                f.object, f.used_region, f.failed_region, f.error
            );
        }
        for d in &r.demoted {
            println!(
                "region {} demoted for the rest of the restore after repeated failures ({}); reads went to the other regions",
                d.region, d.error
            );
        }
    }
    Ok(exit::OK)
}

async fn verify_cmd(cli: &Cli, read_data: Option<f64>, json: bool) -> Result<u8> {
    if let Some(p) = read_data {
        anyhow::ensure!(
            p > 0.0 && p <= 100.0,
            "--read-data takes a percentage in (0, 100], got {p}"
        );
    }
    let config = load_config(cli)?;
    let need = if read_data.is_some() {
        KeyNeed::Read
    } else {
        KeyNeed::Any
    };
    let repo = engine::open(&config, need, None).await?;
    let progress = Arc::new(Progress::default());
    let report = verify(
        &repo,
        &VerifyOptions {
            read_data_percent: read_data,
            plan_regions: engine::plan_regions(&config),
        },
        progress,
        cancel_on_signals(),
    )
    .await?;
    let mut report = report;
    report
        .warnings
        .extend(super::regions::lock_warnings(&config));
    match repo.list_snapshots().await {
        Ok(list) => report.warnings.extend(crate::objectives::future_warnings(
            &list,
            crate::host::now_secs(),
        )),
        Err(e) => report.warnings.push(format!(
            "could not list snapshots to check their dates: {e}"
        )),
    }
    super::history::record_verify(&config, &report).await;
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        for (name, s) in &report.regions {
            println!(
                "{name}: {} packs, {} index files, {} snapshots{}",
                s.packs,
                s.index_files,
                s.snapshots,
                if read_data.is_some() {
                    format!(", {} packs read ({})", s.packs_read, bytes(s.bytes_read))
                } else {
                    String::new()
                }
            );
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for p in &report.problems {
            println!("PROBLEM {}: {}: {}", p.region, p.object, p.message);
        }
        println!(
            "{}",
            if report.ok() {
                "verify: ok".to_string()
            } else if !report.damaged() {
                format!(
                    "verify: incomplete: {} region(s) or object(s) could not be read (an outage, not damage); run it again once they answer",
                    report.problems.len()
                )
            } else {
                format!("verify: {} problem(s)", report.problems.len())
            }
        );
    }
    // Damage is a verification failure (4); a region that did not answer is a failure (1).
    Ok(if report.ok() {
        exit::OK
    } else if report.damaged() {
        exit::VERIFY_FAILED
    } else {
        exit::FAILURE
    })
}

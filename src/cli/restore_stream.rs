//! `restore` for postgres and command plans: choose the target from `--to` and the plan's
//! kind, show progress with an ETA beside the plan's RTO, record the run.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::Progress;
use serde_json::json;

use super::output::{cancel_on_signals, print_json};
use super::progress::Bar;
use super::render::{bytes, rate, time};
use super::{exit, load_config, Cli};
use crate::catalog::RunKind;
use crate::engine::{self, StreamRestoreRequest, StreamTarget};
use crate::objectives::human;

pub struct Args<'a> {
    pub plan: &'a str,
    pub snapshot: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub include: Option<&'a Path>,
    pub overwrite: bool,
    pub force: bool,
    pub jobs: Option<u32>,
    pub scratch: Option<&'a Path>,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub json: bool,
}

/// Restore a stream plan; `None` for a directory plan (the caller restores it).
pub async fn run(cli: &Cli, a: &Args<'_>) -> Result<Option<u8>> {
    let config = load_config(cli)?;
    let plan = config.plan(a.plan).ok();
    let kind = crate::engine::plan_kind(&config, a.plan, a.snapshot, a.from).await?;
    if kind == "dir" {
        anyhow::ensure!(
            !a.no_privileges,
            "--no-privileges applies to postgres plans; plan {} backs up a directory",
            a.plan
        );
        anyhow::ensure!(
            !a.force && a.jobs.is_none(),
            "--force and --jobs apply to postgres plans; plan {} backs up a directory (use --overwrite)",
            a.plan
        );
        return Ok(None);
    }
    anyhow::ensure!(
        a.include.is_none(),
        "--include applies to directory plans; a {kind} snapshot is one stream"
    );
    let is_url = |t: &str| t.starts_with("postgres://") || t.starts_with("postgresql://");
    if let Some(url) = a.to.filter(|t| is_url(t)) {
        anyhow::ensure!(
            crate::source::postgres::redact(url) == url && !url.contains("password="),
            "--to: the URL contains a password, which would show in `ps` and the shell history: remove it and set PGPASSWORD or use ~/.pgpass"
        );
    }
    let postgres = kind == "postgres";
    let target = match (postgres, a.to) {
        (_, Some("-")) => StreamTarget::Stdout,
        (true, Some(url)) if is_url(url) => StreamTarget::Postgres {
            url: url.to_string(),
            force: a.force,
            jobs: a.jobs,
            scratch: a.scratch.map(Path::to_path_buf),
            no_owner: a.no_owner,
            no_privileges: a.no_privileges,
        },
        (_, Some(url)) if is_url(url) => {
            anyhow::bail!("plan {} is a {kind} plan: --to takes a database URL only for postgres plans", a.plan)
        }
        (true, None) => anyhow::bail!(
            "plan {} is a postgres plan: give --to postgres://USER@HOST:5432/DB (an existing, empty database), or --to - for the raw dump (pg_restore format) on stdout",
            a.plan
        ),
        (_, None) => StreamTarget::RestoreCommand,
        (_, Some(path)) => StreamTarget::File {
            path: path.into(),
            overwrite: a.overwrite,
        },
    };
    anyhow::ensure!(
        a.jobs.is_none() || matches!(target, StreamTarget::Postgres { .. }),
        "--jobs applies to a restore into a database (--to postgres://…)"
    );
    anyhow::ensure!(
        !(a.no_owner || a.no_privileges) || matches!(target, StreamTarget::Postgres { .. }),
        "--no-owner and --no-privileges apply to a restore into a database (--to postgres://…)"
    );
    let to_stdout = matches!(target, StreamTarget::Stdout);
    anyhow::ensure!(
        !(to_stdout && a.json),
        "--json and --to - both want stdout: drop one"
    );
    // A plan the config does not declare is held to the default objectives.
    let rto = plan.map(|p| p.objectives).unwrap_or_default().rto.as_secs() as i64;
    eprintln!(
        "restoring plan {} ({kind}), snapshot {}; the plan's RTO is {}: the bar's ETA is the time left",
        a.plan,
        a.snapshot,
        human(rto)
    );
    let req = StreamRestoreRequest {
        plan: a.plan.to_string(),
        snapshot: a.snapshot.to_string(),
        from: a.from.map(str::to_string),
        target: target.clone(),
    };
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(&format!("restore {}", a.plan), progress.clone(), !a.json);
    let history = super::history::History::begin(&config, RunKind::Restore, Some(a.plan)).await;
    let res = engine::restore_stream(&config, &req, progress, cancel_on_signals()).await;
    bar.finish();
    history.end_restore(&res).await;
    let r = res?;
    let secs = r.duration.as_secs_f64();
    let target_text = match &target {
        StreamTarget::Stdout => "stdout".to_string(),
        StreamTarget::File { path, .. } => path.display().to_string(),
        StreamTarget::Postgres { url, .. } => crate::source::postgres::redact(url),
        StreamTarget::RestoreCommand => "the plan's restore_command".to_string(),
    };
    if a.json {
        print_json(&json!({
            "snapshot": r.snapshot.id.to_hex(),
            "plan": r.snapshot.manifest.plan,
            "snapshot_time": r.snapshot.manifest.time,
            "target": target_text,
            "bytes": r.report.bytes,
            "duration_seconds": secs,
            "rto_seconds": rto,
            "objects_per_region": r.per_region.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "database": r.database.as_ref().map(|d| json!({
                "owners": !a.no_owner,
                "privileges": !a.no_privileges,
                "roles": d.roles,
                "notes": d.notes,
            })),
        }));
        return Ok(Some(exit::OK));
    }
    let line = format!(
        "restored snapshot {} ({}) of {} into {}: {} in {:.1}s ({}), every chunk and the whole stream verified; RTO {}: {}",
        r.snapshot.id.short(),
        time(r.snapshot.manifest.time),
        r.snapshot.manifest.plan,
        target_text,
        bytes(r.report.bytes),
        secs,
        rate(r.report.bytes, secs),
        human(rto),
        if secs <= rto as f64 { "met" } else { "MISSED" }
    );
    if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    if let Some(d) = &r.database {
        for l in database_lines(d, a.no_owner, a.no_privileges) {
            println!("{l}");
        }
    }
    for f in &r.fallbacks {
        eprintln!(
            "fallback: {} from {} ({} failed: {})",
            f.object, f.used_region, f.failed_region, f.error
        );
    }
    for d in &r.demoted {
        eprintln!(
            "region {} demoted for the rest of the restore after repeated failures ({}); reads went to the other regions",
            d.region, d.error
        );
    }
    Ok(Some(exit::OK))
}

/// What a database restore did with roles, owners and grants, for people.
fn database_lines(
    d: &crate::engine::stream::DatabaseRestored,
    no_owner: bool,
    no_privileges: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let owners = if no_owner {
        "owners skipped (--no-owner: objects belong to the connecting role)"
    } else {
        "owners restored"
    };
    let grants = if no_privileges {
        "grants skipped (--no-privileges)"
    } else {
        "grants restored"
    };
    out.push(format!("{owners}; {grants}"));
    match &d.roles {
        Some(roles) => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            out.push(format!(
                "roles: created {} (missing on the target); already there, left as they were: {}",
                list(&roles.created),
                list(&roles.present)
            ));
            if !roles.memberships.is_empty() {
                out.push(format!(
                    "memberships granted: {}",
                    roles.memberships.join("; ")
                ));
            }
            for n in &roles.not_applied {
                out.push(format!("not applied: {n}"));
            }
        }
        None if no_owner && no_privileges => {
            out.push("roles: none created (--no-owner --no-privileges)".into())
        }
        None => {}
    }
    out.extend(d.notes.iter().map(|n| format!("note: {n}")));
    out
}

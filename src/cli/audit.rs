//! `lifeboat audit`: list the audit trail and verify its hash chain; and [`record`], which
//! appends one entry for every command that reads, restores or changes backups.

use anyhow::Result;
use serde_json::json;

use super::render::{table, time};
use super::{exit, load_config, Cli, Command};
use crate::catalog::audit::{verify, AuditEntry};
use crate::catalog::Catalog;

pub async fn run(cli: &Cli, check: bool, limit: Option<i64>, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let catalog = Catalog::open(config.catalog_url()?).await?;
    let all = catalog.audit_events(None).await?;
    let problems = if check { verify(&all) } else { Vec::new() };
    let shown = match limit {
        Some(n) if n >= 0 => &all[all.len().saturating_sub(n as usize)..],
        _ => &all[..],
    };
    if json {
        super::output::print_json(&json!({
            "events": shown,
            "verified": check,
            "intact": problems.is_empty(),
            "problems": problems,
            "head": all.last().map(|e| json!({"seq": e.seq, "hash": e.hash})),
        }));
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.at),
                    match &e.principal {
                        Some(p) => format!("{} [{p}]", e.os_user),
                        None => e.os_user.clone(),
                    },
                    e.host.clone(),
                    e.command.clone(),
                    e.outcome.clone(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("the audit trail is empty");
        } else {
            print!(
                "{}",
                table(&["SEQ", "AT", "WHO", "HOST", "COMMAND", "OUTCOME"], &rows)
            );
        }
        if check {
            for p in &problems {
                println!("TAMPERED entry {}: {}", p.seq, p.message);
            }
            match (problems.is_empty(), all.last()) {
                (true, Some(head)) => println!(
                    "audit chain intact: {} entries, head {} {}",
                    all.len(),
                    head.seq,
                    head.hash
                ),
                (true, None) => println!("audit chain intact (empty)"),
                (false, _) => println!("audit chain BROKEN: {} problem(s)", problems.len()),
            }
        }
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}

/// Whether a command is written to the audit trail, and what it acted on.
#[derive(Debug, PartialEq, Eq)]
enum Audited {
    /// Only reads the catalog or configuration.
    No,
    /// Audited; `target` is the plan or region it acted on, when it names one.
    Yes { target: Option<String> },
}

/// What to audit for a command. Commands that only read the catalog or configuration
/// (status, audit, keys, config, catalog listings) are not audited; scheduled runs are
/// audited per backup by the executor. Anything else — including commands added later — is.
fn describe(command: &Command) -> Audited {
    use super::catalog::CatalogCommand;
    use super::drill::DrillCommand;
    let target = match command {
        Command::Keys(_)
        | Command::Config(_)
        | Command::Status { .. }
        | Command::Audit { .. }
        | Command::Daemon(_)
        | Command::RunDue(_)
        | Command::Catalog(CatalogCommand::Snapshots { .. } | CatalogCommand::Runs { .. })
        | Command::Drill(
            DrillCommand::Validate { .. }
            | DrillCommand::Plan { .. }
            | DrillCommand::List { .. }
            | DrillCommand::Report { .. },
        ) => return Audited::No,
        Command::Backup { plan, .. } | Command::Restore { plan, .. } => Some(plan.clone()),
        Command::Snapshots { plan, .. } => plan.clone(),
        Command::Catalog(CatalogCommand::Sync { from, .. }) => from.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    Audited::Yes { target }
}

/// Append the audit entry for the command just run, with its outcome. Failures to write
/// the trail are reported on stderr, not fatal.
pub async fn record(cli: &Cli, outcome: &Result<u8>) {
    let Audited::Yes { target } = describe(&cli.command) else {
        return;
    };
    let Ok(config) = load_config(cli) else {
        return; // nothing to act on, nowhere to write
    };
    if config.catalog_url.is_none() {
        return; // a configuration from the command line: no catalog to write to
    }
    // args_os: paths need not be UTF-8 (std::env::args would panic on them).
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let outcome_text = match outcome {
        Ok(code) if *code == exit::OK => "ok".to_string(),
        Ok(code) if *code == exit::DEGRADED => "degraded".to_string(),
        Ok(code) => format!("exit {code}"),
        Err(e) => format!("failed (exit {})", exit::code_for(e)),
    };
    let entry = AuditEntry {
        command: args.join(" "),
        target,
        outcome: outcome_text,
        detail: outcome.as_ref().err().map(|e| format!("{e:#}")),
    };
    let res = async {
        let catalog = Catalog::open(config.catalog_url()?).await?;
        catalog.audit(entry).await
    }
    .await;
    if let Err(e) = res {
        eprintln!("lifeboat: warning: could not append to the audit trail: {e:#}");
    }
}

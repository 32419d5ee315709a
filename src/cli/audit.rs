//! `lifeboat audit`: list the audit trail and verify its chain against the regions; and
//! [`Trail`], which writes an intent and an outcome entry for every command that reads,
//! restores or changes backups.

use anyhow::Result;
use serde_json::json;

use super::render::{table, time};
use super::{exit, load_config, Cli, Command, KeysCommand};
use crate::catalog::audit::{AuditEntry, AuditEvent, AuditPhase};
use crate::catalog::Catalog;

/// The WHO column: the OS user, and the AWS principal when known.
fn who(e: &AuditEvent) -> String {
    match &e.principal {
        Some(p) => format!("{} [{p}]", e.os_user),
        None => e.os_user.clone(),
    }
}

/// The OUTCOME column: an intent whose outcome never came says so.
fn outcome_text(e: &AuditEvent, all: &[AuditEvent]) -> String {
    match e.phase.as_deref() {
        Some("intent") if !all.iter().any(|o| o.intent == Some(e.seq)) => {
            "started, no outcome (killed, or still running)".into()
        }
        Some("intent") => "started".into(),
        Some("outcome") => match e.intent {
            Some(i) => format!("{} (of {i})", e.outcome),
            None => e.outcome.clone(),
        },
        _ => e.outcome.clone(),
    }
}

pub async fn run(cli: &Cli, check: bool, limit: Option<i64>, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let catalog = if check {
        crate::engine::audit::open_catalog(&config).await?
    } else {
        Catalog::open(config.catalog_url()?).await?
    };
    let all = catalog.audit_events(None).await?;
    let trail = if check {
        Some(crate::engine::audit::verify(&catalog).await?)
    } else {
        None
    };
    let problems = trail
        .as_ref()
        .map(|t| t.problems.clone())
        .unwrap_or_default();
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
            "regions": trail,
        }));
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    time(e.at),
                    who(e),
                    e.host.clone(),
                    e.command.clone(),
                    outcome_text(e, &all),
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
        if let Some(t) = &trail {
            for p in &problems {
                println!("TAMPERED entry {}: {}", p.seq, p.message);
            }
            for name in &t.forged {
                println!("warning: {name} does not authenticate under the chain key (forged object?); ignored");
            }
            for (r, e) in &t.unreachable {
                println!("warning: region {r} not listed ({e}); compared with the other regions");
            }
            if t.not_checkpointed > 0 {
                println!(
                    "note: {} keyed entries are in no region (written while the regions were unreachable)",
                    t.not_checkpointed
                );
            }
            match (problems.is_empty(), all.last()) {
                (true, Some(head)) => println!(
                    "audit chain intact: {} entries, head {} {}; regions hold up to {} (chain {})",
                    all.len(),
                    head.seq,
                    head.hash,
                    t.regions_head.map_or("none".to_string(), |s| s.to_string()),
                    t.chain
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
/// (status, audit, `keys generate`/`keys list`, config, catalog listings) are not audited
/// (`keys rotate` and `keys rewrap` change the repository's keys and are); scheduled runs are
/// audited per backup by the executor. Anything else — including commands added later — is.
fn describe(command: &Command) -> Audited {
    use super::catalog::CatalogCommand;
    use super::drill::DrillCommand;
    let target = match command {
        Command::Keys(KeysCommand::Generate { .. } | KeysCommand::List { .. })
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

/// The audit record of one command: its intent entry, written before the command runs
/// (so a killed command still leaves one), and the catalog to write its outcome to.
pub struct Trail {
    config: crate::config::Config,
    catalog: Catalog,
    command: String,
    target: Option<String>,
    intent: Option<i64>,
}

impl Trail {
    /// Write the intent entry of the command `cli` is about to run, when it is audited and
    /// the configuration has a catalog. Failures to write the trail are reported on stderr,
    /// not fatal.
    pub async fn start(cli: &Cli) -> Option<Trail> {
        let Audited::Yes { target } = describe(&cli.command) else {
            return None;
        };
        let config = load_config(cli).ok()?; // nothing to act on, nowhere to write
        config.catalog_url.as_ref()?; // a configuration from the command line: no catalog
                                      // args_os: paths need not be UTF-8 (std::env::args would panic on them).
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| {
                // A password in a URL argument (`--to postgres://…`) stays out of the trail.
                let a = a.to_string_lossy();
                if a.contains("://") {
                    crate::host::redact_url(&a)
                } else {
                    a.into_owned()
                }
            })
            .collect();
        let catalog = match crate::engine::audit::open_catalog(&config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("lifeboat: warning: could not append to the audit trail: {e:#}");
                return None;
            }
        };
        let mut trail = Trail {
            config,
            catalog,
            command: args.join(" "),
            target,
            intent: None,
        };
        let entry = AuditEntry {
            command: trail.command.clone(),
            target: trail.target.clone(),
            outcome: "started".into(),
            detail: None,
            phase: Some(AuditPhase::Intent),
            intent: None,
        };
        match trail.catalog.audit(entry).await {
            Ok(ev) => trail.intent = Some(ev.seq),
            Err(e) => eprintln!("lifeboat: warning: could not append to the audit trail: {e:#}"),
        }
        Some(trail)
    }

    /// Write the outcome entry. When the repository could not be opened for the intent
    /// (`init` creates it), it is tried again, and the intent is checkpointed late.
    pub async fn finish(self, outcome: &Result<u8>) {
        if self.catalog.audit_seal().is_none_or(|s| s.repo.is_none()) {
            crate::engine::audit::seal(&self.config, &self.catalog, None).await;
            if let Some(seq) = self.intent {
                self.catalog.checkpoint_audit_event(seq).await;
            }
        }
        let outcome_text = match outcome {
            Ok(code) if *code == exit::OK => "ok".to_string(),
            Ok(code) if *code == exit::DEGRADED => "degraded".to_string(),
            Ok(code) => format!("exit {code}"),
            Err(e) => format!("failed (exit {})", exit::code_for(e)),
        };
        let entry = AuditEntry {
            command: self.command,
            target: self.target,
            outcome: outcome_text,
            detail: outcome.as_ref().err().map(|e| format!("{e:#}")),
            phase: Some(AuditPhase::Outcome),
            intent: self.intent,
        };
        if let Err(e) = self.catalog.audit(entry).await {
            eprintln!("lifeboat: warning: could not append to the audit trail: {e:#}");
        }
    }
}

//! `lifeboat drill validate|plan|run|list|report`: thin commands over [`crate::drill`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::render::{table, time};
use super::{exit, load_config, Cli};
use crate::catalog::Catalog;
use crate::drill::report::{dur, iso, Report};
use crate::drill::run::RunOptions;
use crate::drill::runbook;

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Check runbooks against the config: exit 0 when all are valid, 2 with every error
    /// (file:line:column: key: problem).
    Validate {
        /// Runbook files or directories of them (runbooks/*.toml).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Dry run: resolve plans, regions, snapshots and targets; print the step graph and what
    /// would be created. Changes nothing.
    Plan {
        /// The runbook file (runbooks/NAME.toml).
        runbook: PathBuf,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Run a drill: steps (in parallel where `after` allows), then cleanup whatever happened;
    /// store the report in the catalog and every region. Exit 0 passed, 4 a step or
    /// assertion failed, 130 interrupted (cleanup still ran).
    Run {
        /// The runbook file (runbooks/NAME.toml).
        runbook: PathBuf,
        /// Approve this gate (an `approve` step id); repeatable. Needs --approver.
        #[arg(long, value_name = "STEP_ID")]
        approve: Vec<String>,
        /// Approve every gate. Needs --approver.
        #[arg(long)]
        approve_all: bool,
        /// Who approves (recorded in the report and the audit trail).
        #[arg(long, value_name = "NAME")]
        approver: Option<String>,
        /// Print a line per step on stderr even when it is not a terminal.
        #[arg(long)]
        progress: bool,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Every runbook with its last run, result, achieved RTO/RPO and next due date.
    List {
        /// Where the runbooks are (default: ./runbooks, else runbooks/ beside the config).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Print or write a drill's report.
    Report {
        /// A drill id (or unique prefix), or "latest".
        id: String,
        /// md or html for people and auditors, json for machines.
        #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
        format: ReportFormat,
        /// Write to FILE instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
    Html,
}

pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Md => report.to_markdown(),
        ReportFormat::Json => report.to_json() + "\n",
        ReportFormat::Html => crate::drill::html::render(report),
    }
}

pub async fn run(cli: &Cli, c: &DrillCommand) -> Result<u8> {
    let config = load_config(cli)?;
    match c {
        DrillCommand::Validate { paths } => {
            let mut bad = 0;
            for p in paths {
                match runbook::load(p, &config) {
                    Ok(b) => println!(
                        "{}: ok (runbook {} v{}, {} steps, {} cleanup, plans: {})",
                        p.display(),
                        b.id,
                        b.version,
                        b.steps.len(),
                        b.cleanup.len(),
                        if b.plans.is_empty() {
                            "none in this config".to_string()
                        } else {
                            b.plans.join(", ")
                        }
                    ),
                    Err(e) => {
                        bad += 1;
                        eprintln!("{e}");
                    }
                }
            }
            Ok(if bad == 0 { exit::OK } else { exit::USAGE })
        }
        DrillCommand::Plan {
            runbook: path,
            json,
        } => {
            let book = runbook::load(path, &config)?;
            let catalog = Catalog::open(config.catalog_url()?).await?;
            let dry = crate::drill::plan(&config, &catalog, &book).await?;
            if *json {
                super::output::print_json(&serde_json::to_value(&dry)?);
            } else {
                println!(
                    "runbook {} v{}: plans {}; regions {}; RTO target {}",
                    dry.runbook,
                    dry.version,
                    dry.plans.join(", "),
                    dry.regions.join(", "),
                    dur(dry.rto_target_ms)
                );
                for s in &dry.steps {
                    let after = if s.after.is_empty() {
                        String::new()
                    } else {
                        format!(" after {}", s.after.join(", "))
                    };
                    println!("  [{}] {} ({}){after}: {}", s.wave, s.id, s.kind, s.does);
                    for c in &s.creates {
                        println!("        creates: {c} (removed by cleanup)");
                    }
                }
                if !dry.cleanup.is_empty() {
                    println!("  cleanup (always): {}", dry.cleanup.join(", "));
                }
                for p in &dry.problems {
                    println!("problem: {p}");
                }
                println!("nothing was changed (steps in the same [wave] may run in parallel)");
            }
            Ok(if dry.problems.is_empty() {
                exit::OK
            } else {
                exit::VERIFY_FAILED
            })
        }
        DrillCommand::Run {
            runbook: path,
            approve,
            approve_all,
            approver,
            progress,
            json,
        } => {
            if (*approve_all || !approve.is_empty()) && approver.is_none() {
                anyhow::bail!(crate::config::ConfigError::Invalid {
                    file: PathBuf::from("command line"),
                    at: None,
                    key: "--approver".into(),
                    problem: "--approve/--approve-all need --approver NAME: who approves is part of the evidence".into(),
                });
            }
            let book = runbook::load(path, &config)?;
            for id in approve {
                let gate = book
                    .steps
                    .iter()
                    .any(|s| &s.id == id && matches!(s.kind, runbook::StepKind::Approve { .. }));
                if !gate {
                    anyhow::bail!(crate::config::ConfigError::Invalid {
                        file: PathBuf::from("command line"),
                        at: None,
                        key: "--approve".into(),
                        problem: format!("{id:?} is not an approve step of runbook {}", book.id),
                    });
                }
            }
            let catalog = crate::engine::audit::open_catalog(&config).await?;
            let interrupt = super::output::cancel_on_signals();
            let options = RunOptions {
                approve_all: *approve_all,
                approve: approve.clone(),
                approver: approver.clone(),
                interactive: std::io::stdin().is_terminal(),
                progress: *progress || (!*json && std::io::stderr().is_terminal()),
            };
            let report =
                crate::drill::execute(&config, &catalog, &book, options, &interrupt).await?;
            let files = write_files(&config.cache_dir, &report)?;
            if *json {
                super::output::print_json(&json!({
                    "report": serde_json::to_value(&report)?,
                    "html": files.display().to_string(),
                }));
            } else {
                println!("{}", report.summary());
                for d in &report.deviations {
                    println!("deviation: {d}");
                }
                println!("HTML report: {}", files.display());
            }
            Ok(match report.result.as_str() {
                "passed" => exit::OK,
                "interrupted" => exit::INTERRUPTED,
                _ => exit::VERIFY_FAILED,
            })
        }
        DrillCommand::List { dir, json } => list(&config, dir.as_deref(), *json).await,
        DrillCommand::Report { id, format, output } => {
            let catalog = Catalog::open(config.catalog_url()?).await?;
            let report = find_report(&catalog, id).await?;
            let text = render(&report, *format);
            match output {
                Some(path) => {
                    std::fs::write(path, text)
                        .with_context(|| format!("write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(exit::OK)
        }
    }
}

/// Write the report beside the cache (`drill-reports/<id>.{html,md,json}`); returns the HTML.
fn write_files(cache: &Path, report: &Report) -> Result<PathBuf> {
    let dir = cache.join("drill-reports");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for (ext, format) in [
        ("md", ReportFormat::Md),
        ("json", ReportFormat::Json),
        ("html", ReportFormat::Html),
    ] {
        let p = dir.join(format!("{}.{ext}", report.id));
        std::fs::write(&p, render(report, format))
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(dir.join(format!("{}.html", report.id)))
}

async fn find_report(catalog: &Catalog, id: &str) -> Result<Report> {
    let all = catalog.drills(None).await?;
    let hits: Vec<_> = if id == "latest" {
        all.into_iter().take(1).collect()
    } else if let Some(exact) = all.iter().find(|d| d.id == id) {
        vec![exact.clone()]
    } else {
        all.into_iter().filter(|d| d.id.starts_with(id)).collect()
    };
    let d = match hits.len() {
        0 => anyhow::bail!("no drill {id:?} in the catalog (list them with `lifeboat drill list`; after losing the catalog, `lifeboat catalog sync` brings them back)"),
        1 => &hits[0],
        n => anyhow::bail!("{id:?} matches {n} drills; give more of the id"),
    };
    let text = catalog.drill_report(&d.id).await?.unwrap_or_default();
    anyhow::ensure!(!text.is_empty(), "drill {} has no stored report", d.id);
    serde_json::from_str(&text).with_context(|| format!("drill {}: stored report", d.id))
}

fn runbook_dir(config: &crate::config::Config, dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_path_buf();
    }
    let here = PathBuf::from("runbooks");
    if here.is_dir() {
        return here;
    }
    config
        .path
        .parent()
        .map(|p| p.join("runbooks"))
        .unwrap_or(here)
}

async fn list(config: &crate::config::Config, dir: Option<&Path>, json: bool) -> Result<u8> {
    let dir = runbook_dir(config, dir);
    let catalog = Catalog::open(config.catalog_url()?).await?;
    let mut rows = Vec::new();
    let mut out = Vec::new();
    let mut invalid = 0;
    let now = crate::host::now_secs();
    for loaded in crate::drill::load_dir(&dir, config) {
        let book = match loaded {
            Ok(b) => b,
            Err(e) => {
                invalid += 1;
                eprintln!("{e}");
                continue;
            }
        };
        let drills = catalog.drills(Some(&book.id)).await?;
        let last = drills.first();
        let last_passed = drills.iter().find(|d| d.result == "passed");
        let next_due = match last_passed {
            Some(d) => book
                .frequency
                .next_after(d.ended_at.unwrap_or(d.started_at)),
            None => Some(now),
        };
        let gated = book
            .steps
            .iter()
            .any(|s| matches!(s.kind, runbook::StepKind::Approve { .. }));
        rows.push(vec![
            book.id.clone(),
            book.path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            last.map(|d| time(d.started_at))
                .unwrap_or_else(|| "never".into()),
            last.map(|d| d.result.to_uppercase())
                .unwrap_or_else(|| "-".into()),
            last.and_then(|d| d.rto_achieved_ms)
                .map(dur)
                .unwrap_or_else(|| "-".into()),
            last.and_then(|d| d.rpo_achieved_s)
                .map(|s| dur(s * 1000))
                .unwrap_or_else(|| "-".into()),
            next_due
                .map(|t| if t <= now { "now".to_string() } else { time(t) })
                .unwrap_or_else(|| "-".into()),
            if gated { "yes" } else { "no" }.into(),
        ]);
        out.push(json!({
            "runbook": book.id,
            "version": book.version,
            "path": book.path,
            "frequency": book.frequency.describe(),
            "gated": gated,
            "last": last,
            "next_due": next_due,
            "next_due_iso": next_due.map(|t| iso(t * 1000)),
        }));
    }
    if json {
        super::output::print_json(&json!({ "dir": dir, "runbooks": out }));
    } else if rows.is_empty() {
        println!("no runbooks in {}", dir.display());
    } else {
        print!(
            "{}",
            table(
                &["RUNBOOK", "FILE", "LAST RUN", "RESULT", "RTO", "RPO", "NEXT DUE", "GATED"],
                &rows
            )
        );
    }
    Ok(if invalid == 0 { exit::OK } else { exit::USAGE })
}

//! `lifeboat catalog sync|snapshots|runs`: rebuild the catalog from a region, and see what
//! it holds.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::render::{bytes, table, time};
use super::{exit, load_config, Cli};
use crate::catalog::Catalog;

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Rebuild the snapshot history from the repository (the source of truth).
    Sync {
        /// Read manifests from this region alone (the others are only listed, if reachable).
        #[arg(long, value_name = "REGION")]
        from: Option<String>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// The snapshots the catalog knows, with the regions holding each.
    Snapshots {
        /// Only this plan's snapshots.
        #[arg(long)]
        plan: Option<String>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Recorded runs, newest first.
    Runs {
        /// Only this plan's runs.
        #[arg(long)]
        plan: Option<String>,
        /// At most N runs.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: i64,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: &Cli, cmd: &CatalogCommand) -> Result<u8> {
    let config = load_config(cli)?;
    let catalog = Catalog::open(config.catalog_url()?).await?;
    match cmd {
        CatalogCommand::Sync { from, json } => {
            // rds plans first: their snapshots live in RDS, not in the repository.
            let rds = super::rds::sync(&config, &catalog, *json).await?;
            let report = crate::engine::sync(&config, &catalog, from.as_deref()).await?;
            if *json {
                let mut v = serde_json::to_value(&report)?;
                if let (Some(rds), Some(map)) = (rds, v.as_object_mut()) {
                    map.insert("rds".into(), serde_json::to_value(rds)?);
                }
                super::output::print_json(&v);
            } else {
                println!(
                    "catalog synced: {} snapshots read from {}; presence recorded for {}",
                    report.snapshots,
                    report.from.as_deref().unwrap_or("every reachable region"),
                    report.listed.join(", ")
                );
                println!(
                    "drill history: {} reports in the regions, {} new to the catalog",
                    report.drills, report.drills_restored
                );
                match &report.audit {
                    Ok(a) => println!(
                        "audit trail: {} entries brought back from the regions, {} rewritten ones replaced{}",
                        a.restored,
                        a.replaced,
                        if a.forged.is_empty() {
                            String::new()
                        } else {
                            format!("; {} objects ignored (they do not authenticate)", a.forged.len())
                        }
                    ),
                    Err(e) => println!("warning: audit trail not synced: {e}"),
                }
                for (r, e) in &report.unreachable {
                    println!(
                        "warning: region {r} not listed ({e}); its snapshots show as not complete"
                    );
                }
            }
        }
        CatalogCommand::Snapshots { plan, json } => {
            let list = catalog.snapshots(plan.as_deref()).await?;
            if *json {
                super::output::print_json(&serde_json::to_value(&list)?);
            } else if list.is_empty() {
                println!("the catalog knows no snapshots (run `lifeboat catalog sync`)");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.id[..12].to_string(),
                            time(s.time),
                            s.plan.clone(),
                            s.host.clone(),
                            s.files.to_string(),
                            bytes(s.bytes as u64),
                            s.present.join(","),
                            s.missing.join(","),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "TIME",
                            "PLAN",
                            "HOST",
                            "FILES",
                            "SIZE",
                            "PRESENT IN",
                            "MISSING IN"
                        ],
                        &rows
                    )
                );
            }
        }
        CatalogCommand::Runs { plan, limit, json } => {
            let runs = catalog.runs(plan.as_deref(), None, *limit).await?;
            if *json {
                super::output::print_json(&json!(runs));
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| {
                        vec![
                            time(r.started_at),
                            r.kind.clone(),
                            r.plan.clone().unwrap_or_default(),
                            r.phase.as_str().into(),
                            r.duration_ms
                                .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                                .unwrap_or_default(),
                            bytes(r.bytes.max(0) as u64),
                            r.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["STARTED", "KIND", "PLAN", "PHASE", "DURATION", "BYTES", "ERROR"],
                        &rows
                    )
                );
            }
        }
    }
    Ok(exit::OK)
}

//! `lifeboat prune`: remove what no snapshot needs, in two phases separated by a grace period,
//! never blocking backups. Flags and output here; the work is `lifeboat_repo::prune`.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::history::History;
use super::render::{bytes, time};
use super::{exit, load_config, Cli};
use crate::catalog::RunKind;
use crate::engine::{self, retention, KeyNeed};

#[derive(Debug, Args)]
#[command(
    long_about = "Remove data no surviving snapshot needs, without blocking backups. Unreferenced packs \
are first marked (marks/<pack>), and deleted by a later prune once the grace period has passed and \
they are still unreferenced; a backup never uses a marked pack. Mostly-unused packs are repacked, \
index files consolidated, and leftovers of interrupted uploads removed. Deletes run in reverse write \
order (index, then packs, then markers), so an interrupted prune leaves every region valid and the \
next one finishes.\n\n\
Object Lock: objects still under retention are reported with their retain-until date and deleted \
on a later run; packs still needed get their retention extended. Prune needs the identity and the \
maintainer role (writer credentials cannot delete). Two prunes never run at once: the second \
refuses while the maintenance lock (locks/) is held."
)]
pub struct PruneArgs {
    /// Report what would be marked, repacked and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack packs with more than PCT percent unused bytes.
    #[arg(long, value_name = "PCT", default_value_t = 5.0)]
    pub max_unused: f64,
    /// Time between marking and deleting (default: the config's retention.grace, else 24h).
    /// It must exceed the longest backup.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Print the result as JSON on stdout (for scripts; exit codes are the same).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, args: &PruneArgs) -> Result<u8> {
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.max_unused),
        "--max-unused {}: a percentage between 0 and 100",
        args.max_unused
    );
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Read, None).await?;
    let history = if args.dry_run {
        None
    } else {
        Some(History::begin(&config, RunKind::Prune, None).await)
    };
    let started = Instant::now();
    let res = retention::prune(
        &config,
        &repo,
        args.grace,
        args.max_unused / 100.0,
        args.dry_run,
        &super::output::cancel_on_signals(),
    )
    .await;
    if let Some(h) = &history {
        h.end(&crate::engine::record::prune_end(&res)).await;
    }
    let report = res?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["bytes_freed"] = report.bytes_freed().into();
        v["objects_deleted"] = report.objects_deleted().into();
        v["duration_seconds"] = secs.into();
        super::output::print_json(&v);
    } else {
        let would = if report.dry_run { "would " } else { "" };
        for (name, r) in &report.regions {
            println!(
                "{name}: {} packs, {would}mark {}, {would}un-mark {}, {} waiting for the grace period, {would}repack {} into {}, {would}delete {} packs and {} index files ({} freed), {} index files written, {} temporary files removed, {} retentions extended",
                r.packs,
                r.marked,
                r.unmarked,
                r.waiting,
                r.repacked,
                r.new_packs,
                r.deleted_packs,
                r.deleted_index_files,
                bytes(r.bytes_freed),
                r.written_index_files,
                r.temp_files_removed,
                r.retention_extended
            );
            for l in &r.locked {
                println!(
                    "  {}: under Object Lock until {}; deleted by a prune after that",
                    l.object,
                    time(l.retain_until)
                );
            }
        }
        for (name, why) in &report.skipped {
            println!("{name}: skipped ({why}); prune it when it is reachable");
        }
        if report.erased_chunks_remaining > 0 {
            println!(
                "{} erased chunk(s) still stored: they go once their packs' grace period (and any Object Lock) has passed",
                report.erased_chunks_remaining
            );
        }
        println!("prune took {secs:.1}s");
    }
    Ok(if report.skipped.is_empty() {
        exit::OK
    } else {
        exit::DEGRADED
    })
}

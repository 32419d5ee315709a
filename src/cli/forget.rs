//! `lifeboat forget`: apply retention policies (deleting manifests only), or erase paths from
//! every snapshot of a plan with `--path`. Flags and output here; the rules live in
//! `engine::retention` and `lifeboat_repo::{retention, erase}`.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use lifeboat_repo::retention::Policy;

use super::history::History;
use super::render::time;
use super::{exit, load_config, Cli};
use crate::catalog::audit::AuditEntry;
use crate::catalog::{Phase, RunEnd, RunKind};
use crate::config::Config;
use crate::engine::{self, retention, KeyNeed};

#[derive(Debug, Args)]
#[command(
    long_about = "Apply each plan's retention policy (keep_last, keep_hourly, keep_daily, keep_weekly, \
keep_monthly, keep_yearly, keep_within; restic's semantics, evaluated in the plan's zone) and delete \
the manifests of the snapshots no rule keeps, in every region. Data is removed later by `lifeboat prune`.\n\n\
Safety rules: the newest snapshot complete in every region of the plan is never forgotten, nor a \
snapshot a running restore test or drill uses; keep_within is never shorter than the plan's RPO; \
and a plan with more snapshots in the last 7 days than its schedule can produce (or one dated in \
the future) is refused with exit 4.\n\n\
With --path PATTERN --reason TEXT: rewrite every snapshot of --plan without the matching paths \
(erasure on request), forget the old manifests and write an erasure receipt; the next prune \
removes the bytes."
)]
pub struct ForgetArgs {
    /// Only this plan (required with --path).
    #[arg(long)]
    pub plan: Option<String>,
    /// Print what would be forgotten and which rule keeps each survivor; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON on stdout (for scripts; exit codes are the same).
    #[arg(long)]
    pub json: bool,
    /// Override the configured policy: keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Override the configured policy: keep the newest snapshot of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Override the configured policy: keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Override the configured policy: keep the newest snapshot of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Override the configured policy: keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Override the configured policy: keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than DURATION (e.g. "30d"); never less than the RPO.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within: Option<Duration>,
    /// Erase paths matching PATTERN (relative to the backed-up directory; `*` and `?` match
    /// within one component; a directory takes everything below it). Repeatable.
    #[arg(long, value_name = "PATTERN", requires_all = ["plan", "reason"])]
    pub path: Vec<String>,
    /// Why the paths are erased (recorded in the receipt and the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl ForgetArgs {
    fn policy(&self) -> Option<Policy> {
        let p = Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.map(|d| d.as_secs() as i64),
        };
        (!p.is_empty()).then_some(p)
    }
}

pub async fn run(cli: &Cli, args: &ForgetArgs) -> Result<u8> {
    let config = load_config(cli)?;
    if !args.path.is_empty() {
        return erase(&config, args).await;
    }
    let repo = engine::open(&config, KeyNeed::Any, None).await?;
    let history = History::begin(&config, RunKind::Forget, args.plan.as_deref()).await;
    let now = lifeboat_repo::clock::now_secs();
    let req = retention::ForgetRequest {
        plan: args.plan.clone(),
        keep: args.policy(),
        dry_run: args.dry_run,
    };
    let res = retention::forget(&config, &repo, history.catalog(), &req, now, &|p| {
        crate::daemon::maintenance::runaway_limit(p, now)
    })
    .await;
    let end = crate::engine::record::forget_end(&res);
    if !args.dry_run {
        history.end(&end).await;
    }
    let report = res?;
    if args.json {
        super::output::print_json(&serde_json::to_value(&report)?);
    } else {
        for p in &report.plans {
            let verb = if report.dry_run {
                "would forget"
            } else {
                "forgot"
            };
            println!(
                "plan {}: {verb} {} snapshot(s), keeps {}",
                p.plan,
                p.forgotten.len(),
                p.kept.len()
            );
            if let Some(why) = &p.refused {
                println!("  REFUSED: {why}");
            }
            for v in &p.kept {
                println!(
                    "  keep   {} {}  ({})",
                    &v.id[..8],
                    time(v.time),
                    v.reasons.join(", ")
                );
            }
            for v in &p.forgotten {
                println!("  forget {} {}", &v.id[..8], time(v.time));
            }
            for (r, o, until) in &p.locked {
                println!(
                    "  {r}: {o} is under Object Lock until {}; forget deletes it on a later run",
                    time(*until)
                );
            }
        }
    }
    Ok(if report.refused() {
        exit::VERIFY_FAILED
    } else {
        exit::OK
    })
}

async fn erase(config: &Config, args: &ForgetArgs) -> Result<u8> {
    let plan = args.plan.clone().unwrap_or_default();
    config.plan(&plan)?;
    let reason = args.reason.clone().unwrap_or_default();
    anyhow::ensure!(
        !reason.trim().is_empty(),
        "--reason: say why these paths are erased (it goes into the receipt and the audit trail)"
    );
    let repo = engine::open(config, KeyNeed::Read, None).await?;
    let history = History::begin(config, RunKind::Forget, Some(&plan)).await;
    let holder = format!("{} pid {}", crate::host::hostname(), std::process::id());
    let erasure = lifeboat_repo::erase::Erasure {
        plan: &plan,
        patterns: &args.path,
        reason: &reason,
        holder: &holder,
        grace: retention::grace(config, None).as_secs() as i64,
        dry_run: args.dry_run,
    };
    let res = lifeboat_repo::erase::erase(&repo, &erasure, &super::output::cancel_on_signals())
        .await
        .map_err(|e| retention::maintainer_hint(e.into()));
    if !args.dry_run {
        history
            .end(&match &res {
                Ok(_) => RunEnd {
                    phase: Some(Phase::Succeeded),
                    attempts: 1,
                    ..Default::default()
                },
                Err(e) => crate::engine::record::failed(e, 1),
            })
            .await;
    }
    let receipt = res?;
    let json = serde_json::to_value(&receipt)?;
    if let (Some(c), false) = (history.catalog(), args.dry_run) {
        crate::engine::audit::seal(config, c, Some(repo.clone())).await;
        let entry = AuditEntry {
            command: "erasure receipt".into(),
            target: Some(plan.clone()),
            outcome: "ok".into(),
            detail: Some(serde_json::to_string(&serde_json::json!({
                "reason": receipt.reason,
                "patterns": receipt.patterns,
                "snapshots": receipt.snapshots,
                "waiting": receipt.waiting,
                "noncurrent": receipt.noncurrent,
            }))?),
            ..Default::default()
        };
        if let Err(e) = c.audit(entry).await {
            tracing::warn!(error = %format!("{e:#}"), "could not add the erasure receipt to the audit trail");
        }
    }
    if args.json {
        super::output::print_json(&json);
    } else {
        let verb = if args.dry_run {
            "would rewrite"
        } else {
            "rewrote"
        };
        println!(
            "plan {plan}: {verb} {} snapshot(s) without {}",
            receipt.snapshots.len(),
            args.path.join(", ")
        );
        for s in &receipt.snapshots {
            println!(
                "  {} → {} {}: removed {}",
                s.old_snapshot.short(),
                s.new_snapshot.short(),
                time(s.time),
                s.removed.join(", ")
            );
        }
        for w in &receipt.waiting {
            println!(
                "  {}: {} is under Object Lock until {}; removed on a prune after that",
                w.region,
                w.object,
                time(w.retain_until)
            );
        }
        for n in &receipt.noncurrent {
            println!("  {}: {}", n.region, n.note);
        }
        if !args.dry_run {
            println!("receipt stored under receipts/ in every region; run `lifeboat prune` to remove the data");
        }
    }
    Ok(exit::OK)
}

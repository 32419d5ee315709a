//! `lifeboat daemon` and `lifeboat run-due`: the unattended entry points over
//! [`crate::daemon`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::{exit, load_config, Cli};
use crate::daemon::alerts::{Alerter, Format, Webhook};
use crate::daemon::runner::{alert_once, DaemonOptions};
use crate::daemon::{run_daemon, ExecOptions, Executor};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Further tries after a failed backup, waiting --backoff, doubled each time.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Wait before the first retry of a failed backup, doubled each time; also the first
    /// wait between attempts to heal a region that missed a snapshot (at most 1h).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    backoff: Duration,
    /// Longest one backup attempt may take; it is then stopped, its commands (pg_dump, a
    /// command source) killed, and nothing partial is kept.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Webhook for alerts, generic JSON (the URL may hold a token: prefer the variable).
    #[arg(
        long = "webhook",
        value_name = "URL",
        env = crate::config::WEBHOOK_ENV,
        hide_env_values = true
    )]
    webhooks: Vec<String>,
    /// Slack-compatible webhook for alerts.
    #[arg(
        long = "slack-webhook",
        value_name = "URL",
        env = crate::config::SLACK_WEBHOOK_ENV,
        hide_env_values = true
    )]
    slack_webhooks: Vec<String>,
    /// Accept plain http:// webhooks that are not on a loopback address (alerts and the
    /// URL's token then cross the network unencrypted).
    #[arg(long)]
    allow_insecure_webhooks: bool,
    /// Runbooks (runbooks/*.toml) to schedule: drills without an approve step run when their
    /// frequency falls due; due ones with a gate raise the drill_overdue alert.
    #[arg(long, value_name = "DIR")]
    runbooks: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    exec: ExecArgs,
    /// Address for /metrics and /healthz; "none" to not serve them.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9187")]
    listen: String,
    /// Longest time between two looks at the schedule.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Re-read which snapshots each region holds this often ("0s" never), so a region that
    /// loses data out of band shows as degraded.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    sync_every: Duration,
}

#[derive(Debug, clap::Args)]
pub struct RunDueArgs {
    #[command(flatten)]
    exec: ExecArgs,
    /// Print the result as JSON on stdout (for scripts; exit codes are the same).
    #[arg(long)]
    json: bool,
}

async fn executor(cli: &Cli, args: &ExecArgs) -> Result<(Executor, Alerter)> {
    let config = load_config(cli)?;
    crate::daemon::check_schedules(&config)?;
    // Scheduled runs and drills are audited keyed and checkpointed like commands.
    let catalog = crate::engine::audit::open_catalog(&config).await?;
    let options = ExecOptions {
        retries: args.retries,
        backoff: args.backoff,
        timeout: args.timeout,
        ..ExecOptions::default()
    };
    let mut webhooks = Vec::new();
    for (urls, format) in [
        (&args.webhooks, Format::Json),
        (&args.slack_webhooks, Format::Slack),
    ] {
        for url in urls {
            webhooks.push(Webhook::checked(
                url,
                format,
                args.allow_insecure_webhooks,
                "--webhook / --slack-webhook",
            )?);
        }
    }
    let alerter = Alerter {
        catalog: catalog.clone(),
        webhooks,
    };
    let config = Arc::new(config);
    let mut exec = Executor::new(config.clone(), catalog.clone(), options);
    if let Some(dir) = &args.runbooks {
        exec = exec.with_drills(Arc::new(crate::drill::Scheduled {
            config,
            catalog,
            dir: dir.clone(),
        }));
    }
    Ok((exec, alerter))
}

pub async fn daemon(cli: &Cli, args: &DaemonArgs) -> Result<u8> {
    let (exec, alerter) = executor(cli, &args.exec).await?;
    let listen =
        match args.listen.as_str() {
            "none" | "" => None,
            a => Some(a.parse().with_context(|| {
                format!("--listen {a:?}: expected HOST:PORT, e.g. 127.0.0.1:9187")
            })?),
        };
    let cancel = super::output::cancel_on_signals();
    let opts = DaemonOptions {
        tick: args.tick.max(Duration::from_millis(100)),
        listen,
        alerter: Some(alerter),
        sync_every: (!args.sync_every.is_zero()).then_some(args.sync_every),
    };
    run_daemon(exec, opts, cancel).await?;
    // SIGTERM is how a service manager stops the daemon: a clean stop, exit 0.
    Ok(exit::OK)
}

pub async fn run_due(cli: &Cli, args: &RunDueArgs) -> Result<u8> {
    let (exec, alerter) = executor(cli, &args.exec).await?;
    let cancel = super::output::cancel_on_signals();
    let runs = exec.run_due(crate::host::now_secs(), &cancel).await?;
    if let Err(e) = alert_once(&exec, &alerter).await {
        tracing::error!(error = %format!("{e:#}"), "alerts failed");
    }
    if args.json {
        super::output::print_json(&json!({ "runs": runs }));
    } else if runs.is_empty() {
        println!("nothing is due");
    } else {
        for r in &runs {
            println!(
                "{}: {}{}{}",
                r.plan,
                r.outcome,
                r.snapshot
                    .as_deref()
                    .map(|s| format!(" snapshot {}", &s[..12]))
                    .unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    let code = runs.iter().map(|r| match r.outcome.as_str() {
        "cancelled" => exit::INTERRUPTED,
        "failed" => exit::FAILURE,
        "degraded" => exit::DEGRADED,
        _ => exit::OK,
    });
    // The most serious: interrupted, then failure, then degraded.
    Ok(code
        .max_by_key(|c| match *c {
            exit::INTERRUPTED => 3,
            exit::FAILURE => 2,
            exit::DEGRADED => 1,
            _ => 0,
        })
        .unwrap_or(exit::OK))
}

//! What each step kind does (`restore`, `verify` and `sql` are in `restore`). A step returns
//! its outputs (`${id.field}` for later steps and the report) or an error that fails it.
//! Every step stops when its cancel fires: a child process is killed, a wait ends.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_repo::Cancel;
use tokio::io::AsyncReadExt;

use super::compare::{holds, parse_comparison};
use super::report::Approval;
use super::run::{now_ms, Drill, Undo};
use super::runbook::{Step, StepKind};
use crate::config::Config;

pub type Outputs = BTreeMap<String, String>;

pub async fn execute(drill: &Arc<Drill>, step: &Step, cancel: &Cancel) -> Result<Outputs> {
    let mut out = Outputs::new();
    match &step.kind {
        StepKind::Declare { region_down } => {
            let t0 = now_ms();
            let mut st = drill.lock();
            st.t0_ms.get_or_insert(t0);
            out.insert("t0".into(), super::report::iso(t0));
            st.outputs.insert("drill.t0".into(), super::report::iso(t0));
            if let Some(region) = region_down {
                st.faults.down.insert(region.clone());
                out.insert("region_down".into(), region.clone());
                drop(st);
                drill.created(
                    format!("simulated outage of region {region} (in-process fault wrapper)"),
                    &step.id,
                    Undo::ClearFault(region.clone()),
                );
            }
        }
        StepKind::Restore { .. } => return super::restore::restore(drill, step, cancel).await,
        StepKind::RdsRestore { .. } => return super::rds::rds_restore(drill, step, cancel).await,
        StepKind::Verify { on } => return super::restore::verify(drill, &step.id, on).await,
        StepKind::Sql {
            on,
            plan,
            query,
            expect,
        } => {
            let query = drill.interpolate(query)?;
            let expect = drill.interpolate(expect)?;
            return super::restore::sql(drill, &step.id, on, plan.as_deref(), &query, &expect)
                .await;
        }
        StepKind::Command {
            run,
            expect_exit,
            stdout_contains,
        } => {
            let argv: Vec<String> = run
                .iter()
                .map(|a| drill.interpolate(a))
                .collect::<Result<_>>()?;
            let (code, stdout) = command(&drill.config, &argv, cancel).await?;
            out.insert("exit_code".into(), code.to_string());
            out.insert("stdout".into(), tail(&stdout, 4000));
            anyhow::ensure!(
                code == *expect_exit,
                "{:?} exited {code}, expected {expect_exit}",
                argv[0]
            );
            if let Some(want) = stdout_contains {
                let want = drill.interpolate(want)?;
                anyhow::ensure!(
                    stdout.contains(&want),
                    "{:?}: stdout does not contain {want:?}",
                    argv[0]
                );
            }
        }
        StepKind::Approve { prompt } => {
            let prompt = drill.interpolate(prompt)?;
            let a = approve(drill, &step.id, &prompt, step.timeout, cancel).await?;
            out.insert("approver".into(), a.approver.clone());
            out.insert("at".into(), super::report::iso(a.at_ms));
            drill.lock().approvals.push(a);
        }
        StepKind::Assert {
            rto,
            rpo,
            rpo_regions,
            that,
        } => {
            let mut failures = Vec::new();
            if *rto {
                let (achieved, target) = rto_so_far(drill);
                out.insert("rto_achieved_ms".into(), achieved.to_string());
                out.insert("rto_target_ms".into(), target.to_string());
                if achieved > target {
                    failures.push(format!(
                        "RTO {} exceeds the target {}",
                        super::report::dur(achieved),
                        super::report::dur(target)
                    ));
                }
            }
            if *rpo {
                let rows = super::restore::rpo(drill, rpo_regions).await?;
                for p in &rows {
                    for r in &p.regions {
                        if !r.met {
                            failures.push(format!(
                                "RPO of plan {} in region {}: {}",
                                p.plan,
                                r.region,
                                r.note.clone().unwrap_or_else(|| format!(
                                    "{} exceeds the target {}",
                                    r.achieved_s
                                        .map(|s| super::report::dur(s * 1000))
                                        .unwrap_or_default(),
                                    super::report::dur(p.target_s * 1000)
                                ))
                            ));
                        }
                    }
                    if let Some(s) = p.achieved_s {
                        out.insert(format!("{}.rpo_achieved_s", p.plan), s.to_string());
                    }
                }
                drill.lock().rpo = Some(rows);
            }
            for (i, t) in that.iter().enumerate() {
                let text = drill.interpolate(t)?;
                let (l, op, r) = parse_comparison(&text).map_err(anyhow::Error::msg)?;
                let ok = holds(&l, op, &r);
                out.insert(
                    format!("that{i}"),
                    format!("{text}: {}", if ok { "true" } else { "false" }),
                );
                if !ok {
                    failures.push(format!("{t:?} is false ({text})"));
                }
            }
            anyhow::ensure!(
                failures.is_empty(),
                "assertion failed: {}",
                failures.join("; ")
            );
        }
        StepKind::Wait { duration } => {
            if !sleep_or_cancel(*duration, cancel).await {
                anyhow::bail!("cancelled while waiting");
            }
            out.insert("waited_ms".into(), duration.as_millis().to_string());
        }
        StepKind::Notify { message } => {
            let message = drill.interpolate(message)?;
            let hooks = webhooks();
            if hooks.is_empty() {
                out.insert("sent".into(), "0".into());
                out.insert(
                    "note".into(),
                    "no webhook configured (LIFEBOAT_WEBHOOK_URL, LIFEBOAT_SLACK_WEBHOOK_URL)"
                        .into(),
                );
            } else {
                let body = |hook: &crate::daemon::alerts::Webhook| match hook.format {
                    crate::daemon::alerts::Format::Json => serde_json::json!({
                        "event": "drill", "kind": "drill_notice", "drill": drill.id,
                        "runbook": drill.book.id, "message": message,
                        "host": crate::host::hostname(), "source": "lifeboat",
                    }),
                    crate::daemon::alerts::Format::Slack => serde_json::json!({
                        "text": format!("lifeboat drill `{}` ({}): {message}", drill.id, drill.book.id)
                    }),
                };
                let mut sent = 0;
                let mut errors = Vec::new();
                for hook in &hooks {
                    match crate::daemon::alerts::post(hook, &body(hook)).await {
                        Ok(()) => sent += 1,
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                out.insert("sent".into(), sent.to_string());
                anyhow::ensure!(
                    sent > 0,
                    "no webhook accepted the notice: {}",
                    errors.join("; ")
                );
            }
        }
    }
    Ok(out)
}

/// The webhooks configured in the environment (as for the daemon's alerts).
pub fn webhooks() -> Vec<crate::daemon::alerts::Webhook> {
    use crate::daemon::alerts::{Format, Webhook};
    let mut out = Vec::new();
    for (var, format) in [
        ("LIFEBOAT_WEBHOOK_URL", Format::Json),
        ("LIFEBOAT_SLACK_WEBHOOK_URL", Format::Slack),
    ] {
        if let Ok(url) = std::env::var(var) {
            if !url.is_empty() {
                // Refused like the daemon's: https://, or plain http:// to loopback only.
                match Webhook::checked(&url, format, false, var) {
                    Ok(hook) => out.push(hook),
                    Err(e) => tracing::warn!(error = %e, "drill notify: webhook refused"),
                }
            }
        }
    }
    out
}

/// Achieved RTO so far (the newest usable moment, or now, minus T0) and the total target.
fn rto_so_far(drill: &Drill) -> (i64, i64) {
    let st = drill.lock();
    let t0 = st.t0_ms.unwrap_or_else(now_ms);
    let usable = st
        .plan_ready_ms
        .values()
        .max()
        .copied()
        .unwrap_or_else(now_ms);
    (
        usable - t0,
        super::total_rto_target_ms(&drill.config, &drill.book),
    )
}

pub async fn sleep_or_cancel(d: Duration, cancel: &Cancel) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
    }
}

/// Kills a command step's whole process group when dropped before the step's child was
/// waited for: a step that times out (its future is dropped) or is cancelled must not leave
/// a shell script's own children running after the drill.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            crate::source::child::kill_group(pgid);
        }
    }
}

/// Run `argv` without a shell, in its own process group, its environment scrubbed of
/// lifeboat's secrets; the whole group is killed on cancel or when the step's timeout drops
/// this future. Returns the exit code (-1: killed by a signal) and stdout.
async fn command(config: &Config, argv: &[String], cancel: &Cancel) -> Result<(i32, String)> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for var in config.secret_env_names() {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", argv[0]))?;
    let mut group = GroupGuard(child.id());
    let mut stdout = child.stdout.take().context("child stdout")?;
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let status = tokio::select! {
        s = child.wait() => s.context("wait for the command")?,
        _ = cancel.cancelled() => {
            drop(group);
            let _ = child.kill().await;
            anyhow::bail!("{:?} killed: step cancelled", argv[0]);
        }
    };
    // Exited on its own: what it left running in the background is its business.
    group.0 = None;
    let out = reader.await.unwrap_or_default();
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

fn tail(s: &str, max: usize) -> String {
    let t = s.trim_end();
    if t.len() <= max {
        return t.to_string();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &t[start..])
}

/// A gate: approved by flag, or on the terminal, else failed when its timeout ends.
async fn approve(
    drill: &Drill,
    step: &str,
    prompt: &str,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<Approval> {
    let o = &drill.options;
    if o.approve_all || o.approve.iter().any(|a| a == step) {
        let approver = o
            .approver
            .clone()
            .context("--approve/--approve-all need --approver NAME (who approves)")?;
        return Ok(Approval {
            step: step.into(),
            approver,
            at_ms: now_ms(),
            how: "flag".into(),
        });
    }
    if o.interactive && std::io::stdin().is_terminal() {
        let approver = o
            .approver
            .clone()
            .unwrap_or_else(crate::catalog::audit::os_user);
        eprint!(
            "drill: {prompt} [y/N] (as {approver}, {} to answer) ",
            humantime::format_duration(timeout)
        );
        // A plain thread, not `spawn_blocking`: after a timeout nobody answers, and the
        // runtime waits for its blocking pool at exit, so a pending read would hold the
        // process open until someone pressed Enter.
        let (tx, answer) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("lifeboat-gate-prompt".into())
            .spawn(move || {
                let mut line = String::new();
                let _ = tx.send(std::io::stdin().read_line(&mut line).map(|_| line));
            })
            .context("start the prompt reader")?;
        tokio::select! {
            a = answer => {
                let line = a.context("read the answer")?.context("read the answer")?;
                anyhow::ensure!(matches!(line.trim(), "y" | "Y" | "yes"), "gate {step} refused on the terminal by {approver}");
                return Ok(Approval { step: step.into(), approver, at_ms: now_ms(), how: "terminal".into() });
            }
            ok = sleep_or_cancel(timeout, cancel) => {
                anyhow::bail!(if ok { format!("gate {step}: no approval within {}", humantime::format_duration(timeout)) } else { "cancelled at the gate".to_string() });
            }
        }
    }
    let ok = sleep_or_cancel(timeout, cancel).await;
    anyhow::bail!(if ok {
        format!(
            "gate {step}: no approval within {} (approve with --approve {step} --approver NAME, or run on a terminal)",
            humantime::format_duration(timeout)
        )
    } else {
        "cancelled at the gate".to_string()
    })
}

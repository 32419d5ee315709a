//! The daemon's Prometheus endpoint: `/metrics` in the text exposition format and
//! `/healthz`, served by a minimal HTTP/1.1 responder on a tokio listener (two GET routes
//! do not justify an HTTP server framework in the build).
//!
//! Gauges come from the objectives status the daemon refreshes every tick (so they match
//! `lifeboat status`); counters count runs of this process. Names and labels are documented
//! in docs/operations.md and used by deploy/prometheus/alerts.yml.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::catalog::{Catalog, Phase, RunKind};
use crate::config::Config;
use crate::engine::BackupReport;
use crate::objectives::{Level, PlanStatus};

#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    statuses: Vec<PlanStatus>,
    last_success: BTreeMap<String, i64>,
    last_duration: BTreeMap<String, f64>,
    last_bytes: BTreeMap<String, u64>,
    runs: BTreeMap<(String, &'static str), u64>,
    /// Per runbook id: end of its newest passed drill, and the RTO that drill achieved.
    drills: BTreeMap<String, (i64, Option<f64>)>,
    /// Epoch of the last refresh; `/healthz` fails when it is stale.
    refreshed_at: i64,
}

impl Metrics {
    /// Record a run this process finished.
    pub fn record_run(&self, plan: &str, phase: Phase, report: &Result<BackupReport>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s.runs
            .entry((plan.to_string(), phase.as_str()))
            .or_default() += 1;
        if let Ok(r) = report {
            s.last_duration
                .insert(plan.to_string(), r.duration.as_secs_f64());
            s.last_bytes
                .insert(plan.to_string(), r.outcome.manifest.stats.bytes);
        }
    }

    /// Replace the gauges with the catalog's view at `now`.
    pub async fn refresh(
        &self,
        config: &Config,
        catalog: &Catalog,
        now: i64,
    ) -> Result<Vec<PlanStatus>> {
        let statuses = crate::objectives::status(config, catalog, now).await?;
        let mut last_success = BTreeMap::new();
        let mut durations = BTreeMap::new();
        let mut bytes = BTreeMap::new();
        for plan in &config.plans {
            if let Some(run) = catalog
                .last_run(&plan.name, RunKind::Backup, &[Phase::Succeeded])
                .await?
            {
                last_success.insert(plan.name.clone(), run.ended_at.unwrap_or(run.started_at));
                if let Some(ms) = run.duration_ms {
                    durations.insert(plan.name.clone(), ms as f64 / 1000.0);
                }
                bytes.insert(plan.name.clone(), run.bytes.max(0) as u64);
            }
        }
        let mut drills = BTreeMap::new();
        for d in catalog.drills(None).await? {
            if d.result == "passed" && !drills.contains_key(&d.runbook) {
                let rto = d.rto_achieved_ms.map(|ms| ms as f64 / 1000.0);
                drills.insert(d.runbook.clone(), (d.ended_at.unwrap_or(d.started_at), rto));
            }
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.statuses = statuses.clone();
        s.drills = drills;
        s.last_success = last_success;
        for (k, v) in durations {
            s.last_duration.entry(k).or_insert(v);
        }
        for (k, v) in bytes {
            s.last_bytes.entry(k).or_insert(v);
        }
        s.refreshed_at = now;
        Ok(statuses)
    }

    /// True when the last refresh is younger than `max_age`.
    pub fn healthy(&self, now: i64, max_age: Duration) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.refreshed_at > 0 && now - s.refreshed_at <= max_age.as_secs() as i64
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let plan = |p: &str| format!("plan=\"{}\"", escape(p));
        let per_plan = |f: &dyn Fn(&PlanStatus) -> Option<f64>| -> Vec<(String, f64)> {
            s.statuses
                .iter()
                .filter_map(|st| f(st).map(|v| (plan(&st.plan), v)))
                .collect()
        };
        family(
            "lifeboat_plan_status",
            "gauge",
            "Objectives status of a plan: 0 ok, 1 warning, 2 breach.",
            per_plan(&|st| Some(level(st.level))),
        );
        family(
            "lifeboat_rpo_seconds",
            "gauge",
            "Age of the newest snapshot complete in every region of the plan (absent: none).",
            per_plan(&|st| st.rpo.age_seconds.map(|a| a as f64)),
        );
        family(
            "lifeboat_rpo_target_seconds",
            "gauge",
            "The plan's RPO.",
            per_plan(&|st| Some(st.rpo.target_seconds as f64)),
        );
        family(
            "lifeboat_rto_projected_seconds",
            "gauge",
            "Restore time projected at the current size from the last passed restore test.",
            per_plan(&|st| st.rto.projected_seconds),
        );
        family(
            "lifeboat_rto_target_seconds",
            "gauge",
            "The plan's RTO.",
            per_plan(&|st| Some(st.rto.target_seconds as f64)),
        );
        family(
            "lifeboat_drill_age_seconds",
            "gauge",
            "Time since the last passed DR drill covering the plan (absent: none).",
            per_plan(&|st| st.drill.age_seconds.map(|a| a as f64)),
        );
        family(
            "lifeboat_drill_every_seconds",
            "gauge",
            "Longest allowed time between passed drills.",
            per_plan(&|st| Some(st.drill.every_seconds as f64)),
        );
        family(
            "lifeboat_region_healthy",
            "gauge",
            "1 when the region holds the plan's newest snapshot and its last backup there succeeded.",
            s.statuses
                .iter()
                .flat_map(|st| {
                    st.regions.iter().map(|r| {
                        (
                            format!("{},region=\"{}\"", plan(&st.plan), escape(&r.region)),
                            if r.health == "ok" { 1.0 } else { 0.0 },
                        )
                    })
                })
                .collect(),
        );
        let map = |m: &BTreeMap<String, f64>| m.iter().map(|(k, v)| (plan(k), *v)).collect();
        family(
            "lifeboat_last_success_timestamp_seconds",
            "gauge",
            "End of the plan's last successful backup (Unix time).",
            map(&s
                .last_success
                .iter()
                .map(|(k, v)| (k.clone(), *v as f64))
                .collect()),
        );
        family(
            "lifeboat_backup_duration_seconds",
            "gauge",
            "Duration of the plan's last successful backup.",
            map(&s.last_duration),
        );
        family(
            "lifeboat_backup_bytes",
            "gauge",
            "Logical size of the plan's last successful backup.",
            map(&s
                .last_bytes
                .iter()
                .map(|(k, v)| (k.clone(), *v as f64))
                .collect()),
        );
        let runbook = |r: &str| format!("runbook=\"{}\"", escape(r));
        family(
            "lifeboat_drill_last_success_timestamp_seconds",
            "gauge",
            "End of the runbook's newest passed DR drill (Unix time).",
            s.drills
                .iter()
                .map(|(r, (at, _))| (runbook(r), *at as f64))
                .collect(),
        );
        family(
            "lifeboat_drill_rto_achieved_seconds",
            "gauge",
            "Recovery time the runbook's newest passed drill achieved, from T0 to usable.",
            s.drills
                .iter()
                .filter_map(|(r, (_, rto))| rto.map(|v| (runbook(r), v)))
                .collect(),
        );
        family(
            "lifeboat_runs_total",
            "counter",
            "Scheduled backup runs this daemon finished, by phase.",
            s.runs
                .iter()
                .map(|((p, phase), n)| (format!("{},phase=\"{phase}\"", plan(p)), *n as f64))
                .collect(),
        );
        family(
            "lifeboat_backup_failures_total",
            "counter",
            "Scheduled backup runs of this daemon that failed.",
            s.statuses
                .iter()
                .map(|st| {
                    let n = s
                        .runs
                        .get(&(st.plan.clone(), "failed"))
                        .copied()
                        .unwrap_or(0);
                    (plan(&st.plan), n as f64)
                })
                .collect(),
        );
        out
    }
}

fn level(l: Level) -> f64 {
    match l {
        Level::Ok => 0.0,
        Level::Warning => 1.0,
        Level::Breach => 2.0,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serve `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    stale_after: Duration,
) -> Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await.context("metrics: accept")?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET", "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                ),
                ("GET", "/healthz") => {
                    if metrics.healthy(crate::host::now_secs(), stale_after) {
                        ("200 OK", "text/plain", "ok\n".to_string())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            "stale: the scheduler loop has not refreshed recently\n".to_string(),
                        )
                    }
                }
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".to_string(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

//! The daemon's Prometheus endpoint: `/metrics` and `/healthz`, served by hyper's HTTP/1
//! server (a bounded number of connections, each with a header and a total timeout; an
//! accept error is logged and the server goes on), exposed through `prometheus-client`
//! (OpenMetrics text: escaping, `HELP`/`TYPE`, counters' `_total`).
//!
//! Gauges come from the objectives status and the key age the daemon refreshes every tick
//! (so they match `lifeboat status`); counters count runs of this process. Names and labels are documented
//! in docs/operations.md and used by deploy/prometheus/alerts.yml.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::catalog::{Catalog, Phase, RunKind};
use crate::config::Config;
use crate::engine::BackupReport;
use crate::objectives::{Level, PlanStatus};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A scrape that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may live.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The exposition's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

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
    /// Scheduled prunes: (bytes freed, objects deleted, runs failed) totals, last duration.
    prune: (u64, u64, u64, Option<f64>),
    /// The repository's key age at the last refresh.
    key_age: Option<crate::objectives::key_age::KeyAge>,
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

    /// Record a scheduled prune this process finished (`None`: it failed).
    pub fn record_prune(&self, freed: Option<(u64, u64)>, seconds: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match freed {
            Some((bytes, objects)) => {
                s.prune.0 += bytes;
                s.prune.1 += objects;
            }
            None => s.prune.2 += 1,
        }
        s.prune.3 = Some(seconds);
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
        let key_age = crate::objectives::key_age::key_age(config, now).await;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.key_age = Some(key_age);
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

    /// The repository's key age at the last refresh (for alerts).
    pub fn key_age(&self) -> Option<crate::objectives::key_age::KeyAge> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.key_age.clone()
    }

    /// True when the last refresh is younger than `max_age`.
    pub fn healthy(&self, now: i64, max_age: Duration) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.refreshed_at > 0 && now - s.refreshed_at <= max_age.as_secs() as i64
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut registry = Registry::default();
        let plan = |p: &str| -> Labels { vec![("plan", p.to_string())] };
        let int = |registry: &mut Registry, name: &str, help: &str, samples: Vec<(Labels, i64)>| {
            let family = Family::<Labels, Gauge>::default();
            for (labels, v) in samples {
                family.get_or_create(&labels).set(v);
            }
            registry.register(name, help, family);
        };
        let float =
            |registry: &mut Registry, name: &str, help: &str, samples: Vec<(Labels, f64)>| {
                let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                for (labels, v) in samples {
                    family.get_or_create(&labels).set(v);
                }
                registry.register(name, help, family);
            };
        // `name` without `_total`: the encoder appends it.
        let counter =
            |registry: &mut Registry, name: &str, help: &str, samples: Vec<(Labels, u64)>| {
                let family = Family::<Labels, Counter>::default();
                for (labels, v) in samples {
                    family.get_or_create(&labels).inc_by(v);
                }
                registry.register(name, help, family);
            };
        let per_plan = |f: &dyn Fn(&PlanStatus) -> Option<i64>| -> Vec<(Labels, i64)> {
            s.statuses
                .iter()
                .filter_map(|st| f(st).map(|v| (plan(&st.plan), v)))
                .collect()
        };
        let r = &mut registry;
        // Help texts without a final full stop: the encoder adds it.
        int(
            r,
            "lifeboat_plan_status",
            "Objectives status of a plan: 0 ok, 1 warning, 2 breach",
            per_plan(&|st| Some(level(st.level))),
        );
        int(
            r,
            "lifeboat_rpo_seconds",
            "Age of the newest snapshot complete in every region of the plan (absent: none)",
            per_plan(&|st| st.rpo.age_seconds),
        );
        int(
            r,
            "lifeboat_rpo_target_seconds",
            "The plan's RPO",
            per_plan(&|st| Some(secs(st.rpo.target_seconds))),
        );
        float(
            r,
            "lifeboat_rto_projected_seconds",
            "Restore time projected at the current size from the last passed restore test",
            s.statuses
                .iter()
                .filter_map(|st| st.rto.projected_seconds.map(|v| (plan(&st.plan), v)))
                .collect(),
        );
        int(
            r,
            "lifeboat_rto_target_seconds",
            "The plan's RTO",
            per_plan(&|st| Some(secs(st.rto.target_seconds))),
        );
        int(
            r,
            "lifeboat_drill_age_seconds",
            "Time since the last passed DR drill covering the plan (absent: none)",
            per_plan(&|st| st.drill.age_seconds),
        );
        int(
            r,
            "lifeboat_drill_every_seconds",
            "Longest allowed time between passed drills",
            per_plan(&|st| Some(secs(st.drill.every_seconds))),
        );
        int(
            r,
            "lifeboat_region_healthy",
            "1 when the region holds the plan's newest snapshot and its last backup there succeeded",
            s.statuses
                .iter()
                .flat_map(|st| {
                    st.regions.iter().map(|reg| {
                        (
                            vec![("plan", st.plan.clone()), ("region", reg.region.clone())],
                            i64::from(reg.health == "ok"),
                        )
                    })
                })
                .collect(),
        );
        int(
            r,
            "lifeboat_last_success_timestamp_seconds",
            "End of the plan's last successful backup (Unix time)",
            s.last_success.iter().map(|(k, v)| (plan(k), *v)).collect(),
        );
        float(
            r,
            "lifeboat_backup_duration_seconds",
            "Duration of the plan's last successful backup",
            s.last_duration.iter().map(|(k, v)| (plan(k), *v)).collect(),
        );
        int(
            r,
            "lifeboat_backup_bytes",
            "Logical size of the plan's last successful backup",
            s.last_bytes
                .iter()
                .map(|(k, v)| (plan(k), i64::try_from(*v).unwrap_or(i64::MAX)))
                .collect(),
        );
        let repository: Vec<(Labels, &crate::objectives::key_age::KeyAge)> = s
            .key_age
            .iter()
            .filter_map(|k| Some((vec![("repository", k.repository.clone()?)], k)))
            .collect();
        int(
            r,
            "lifeboat_key_age_seconds",
            "Age of the repository's current recipient epoch (warning from 335 days, breach past 365: rotate yearly)",
            repository
                .iter()
                .filter_map(|(l, k)| Some((l.clone(), k.age_seconds?)))
                .collect(),
        );
        int(
            r,
            "lifeboat_key_epoch",
            "The repository's current recipient epoch",
            repository
                .iter()
                .filter_map(|(l, k)| Some((l.clone(), i64::from(k.epoch?))))
                .collect(),
        );
        let runbook = |name: &str| -> Labels { vec![("runbook", name.to_string())] };
        int(
            r,
            "lifeboat_drill_last_success_timestamp_seconds",
            "End of the runbook's newest passed DR drill (Unix time)",
            s.drills
                .iter()
                .map(|(name, (at, _))| (runbook(name), *at))
                .collect(),
        );
        float(
            r,
            "lifeboat_drill_rto_achieved_seconds",
            "Recovery time the runbook's newest passed drill achieved, from T0 to usable",
            s.drills
                .iter()
                .filter_map(|(name, (_, rto))| rto.map(|v| (runbook(name), v)))
                .collect(),
        );
        counter(
            r,
            "lifeboat_runs",
            "Scheduled backup runs this daemon finished, by phase",
            s.runs
                .iter()
                .map(|((p, phase), n)| {
                    (vec![("plan", p.clone()), ("phase", phase.to_string())], *n)
                })
                .collect(),
        );
        counter(
            r,
            "lifeboat_backup_failures",
            "Scheduled backup runs of this daemon that failed",
            s.statuses
                .iter()
                .map(|st| {
                    let n = s
                        .runs
                        .get(&(st.plan.clone(), "failed"))
                        .copied()
                        .unwrap_or(0);
                    (plan(&st.plan), n)
                })
                .collect(),
        );
        // Scheduled forget + prune of this daemon (docs/retention.md).
        counter(
            r,
            "lifeboat_prune_bytes_freed",
            "Bytes scheduled prunes of this daemon deleted",
            vec![(Vec::new(), s.prune.0)],
        );
        counter(
            r,
            "lifeboat_prune_objects_deleted",
            "Objects (packs, index files, temporary files) scheduled prunes deleted",
            vec![(Vec::new(), s.prune.1)],
        );
        counter(
            r,
            "lifeboat_prune_failures",
            "Scheduled forget + prune runs that failed",
            vec![(Vec::new(), s.prune.2)],
        );
        if let Some(d) = s.prune.3 {
            float(
                r,
                "lifeboat_prune_duration_seconds",
                "Duration of the last scheduled forget + prune",
                vec![(Vec::new(), d)],
            );
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn level(l: Level) -> i64 {
    match l {
        Level::Ok => 0,
        Level::Warning => 1,
        Level::Breach => 2,
    }
}

/// Serve `/metrics` and `/healthz` on `listener` until the task is dropped. At most
/// [`MAX_CONNECTIONS`] at once; a failed accept (out of file descriptors, a reset before
/// accept) is logged and retried after a pause, never the end of the server.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stale_after: Duration,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics, stale_after)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: connection"),
                Err(_) => tracing::debug!("metrics: connection timed out"),
            }
        });
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, stale_after: Duration) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, metrics.render()),
        (&Method::GET, "/healthz") => {
            if metrics.healthy(crate::host::now_secs(), stale_after) {
                (StatusCode::OK, "text/plain", "ok\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "stale: the scheduler loop has not refreshed recently\n".to_string(),
                )
            }
        }
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    response
}

/// A `u64` count of seconds as a gauge value.
fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

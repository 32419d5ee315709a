//! `replicate` and `regions check`: the commands about regions themselves rather than about
//! snapshots, and the Object Lock warnings `verify` prints.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use lifeboat_repo::backend::{Backend, LocalBackend};
use lifeboat_repo::Progress;
use serde::Serialize;
use serde_json::json;

use super::progress::Bar;
use super::render::bytes;
use super::{exit, load_config, Cli};
use crate::config::{Config, LockMode, RegionConfig, RegionKind};
use crate::storage::{S3Backend, S3Settings};

/// `lifeboat replicate`: copy to every region what it lacks. Exit 0 when every region holds
/// every snapshot, 3 (degraded) when some copy failed, 1 when a region is unreachable.
pub async fn replicate(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let progress = Arc::new(Progress::default());
    let bar = Bar::start("replicate", progress.clone(), !json);
    let started = Instant::now();
    let history = super::history::open(&config).await;
    let res = crate::daemon::heal::replicate_recorded(
        &config,
        history.as_ref(),
        progress,
        super::output::cancel_on_signals(),
    )
    .await;
    bar.finish();
    let report = res?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = json!(report.ok());
        v["duration_seconds"] = json!(secs);
        super::output::print_json(&v);
    } else {
        for (name, r) in &report.regions {
            let copied: Vec<String> = r
                .copied
                .iter()
                .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
                .collect();
            let holds = format!("holds {} of {} snapshots", r.snapshots, report.snapshots);
            if copied.is_empty() && r.failed == 0 {
                println!("{name}: nothing to copy; {holds}");
            } else {
                println!(
                    "{name}: copied {} ({}), every object verified{}; {holds}",
                    if copied.is_empty() {
                        "nothing".to_string()
                    } else {
                        copied.join(", ")
                    },
                    bytes(r.bytes),
                    if r.failed > 0 {
                        format!("; {} failed", r.failed)
                    } else {
                        String::new()
                    }
                );
            }
        }
        for p in &report.problems {
            eprintln!("lifeboat: replicate: {p}");
        }
        if report.ok() && report.copied_total() == 0 {
            println!("replicate: nothing to copy: every region holds every snapshot");
        } else if report.ok() {
            println!("replicate: done in {secs:.1}s: every region holds every snapshot");
        } else {
            println!("replicate: incomplete: run it again once the problems above are fixed");
        }
    }
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::DEGRADED
    })
}

/// One region's answers to `regions check`.
#[derive(Debug, Default, Serialize)]
struct RegionCheck {
    region: String,
    kind: &'static str,
    location: String,
    reachable: bool,
    latency_ms: Option<f64>,
    can_list: bool,
    can_put: bool,
    can_get: bool,
    /// Whether this identity could delete an object's every version (history).
    can_delete: Option<bool>,
    versioning: Option<String>,
    object_lock: Option<bool>,
    bucket_default_retention: Option<String>,
    configured_lock: Option<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl RegionCheck {
    fn ok(&self) -> bool {
        self.reachable && self.can_list && self.can_put && self.can_get && self.errors.is_empty()
    }
}

/// The probe object `regions check` writes (and tries to delete). Under Object Lock it cannot
/// be deleted and stays, one small version per check.
fn probe_name() -> String {
    format!("check/{}", crate::host::hostname())
}

async fn check_basic(b: &dyn Backend, c: &mut RegionCheck) {
    let probe = probe_name();
    match b.list("config").await {
        Ok(_) => c.can_list = true,
        Err(e) => c.errors.push(format!("list: {e}")),
    }
    let body = Bytes::from(format!(
        "lifeboat regions check {}\n",
        crate::host::now_secs()
    ));
    match b.put(&probe, body.clone()).await {
        Ok(()) => c.can_put = true,
        Err(e) => c.errors.push(format!("put {probe}: {e}")),
    }
    if c.can_put {
        match b.get(&probe, None).await {
            Ok(got) if got == body => c.can_get = true,
            Ok(_) => c
                .errors
                .push(format!("get {probe}: different bytes came back")),
            Err(e) => c.errors.push(format!("get {probe}: {e}")),
        }
    }
}

async fn check_s3(region: &RegionConfig, settings: S3Settings) -> RegionCheck {
    let lock = settings.object_lock;
    let b = S3Backend::new(settings);
    let mut c = RegionCheck {
        region: region.name.clone(),
        kind: "s3",
        location: b.describe(),
        configured_lock: lock.map(|l| format!("{} {} days", mode_name(l.mode), l.days)),
        ..Default::default()
    };
    match b.ping().await {
        Ok(t) => {
            c.reachable = true;
            c.latency_ms = Some(t.as_secs_f64() * 1000.0);
        }
        Err(e) => {
            c.errors.push(format!("unreachable: {e}"));
            return c;
        }
    }
    check_basic(&b, &mut c).await;
    if c.can_put {
        c.can_delete = Some(match b.delete_all_versions(&probe_name()).await {
            Ok(_) => true,
            // Servers without ListObjectVersions: a plain delete is all there is.
            Err(e) if e.to_string().contains("NotImplemented") => {
                b.delete(&probe_name()).await.is_ok()
            }
            Err(_) => false,
        });
    }
    let state = b.bucket_state().await;
    c.versioning = state.versioning;
    c.object_lock = state.object_lock;
    c.bucket_default_retention = state.default_retention;
    for e in state.errors {
        c.warnings.push(format!("could not read {e}"));
    }
    if c.can_delete == Some(true) {
        c.warnings.push("this identity can delete every version of an object: fine for a maintainer, but a backup host (writer) should not be able to; see README \"S3 regions\" for the writer's IAM actions".into());
    }
    match (c.object_lock, lock) {
        (Some(false), Some(_)) => c.errors.push(
            "object_lock_days is set but the bucket does not have Object Lock enabled: uploads will fail; enable it at bucket creation or remove object_lock_days".into(),
        ),
        (Some(true), None) => c.warnings.push(
            "the bucket has Object Lock enabled but this region sets no object_lock_days: uploads get only the bucket's default retention, if any".into(),
        ),
        _ => {}
    }
    if c.versioning.as_deref().is_some_and(|v| v != "Enabled") {
        c.warnings.push(format!(
            "versioning is {}: an overwrite or delete by a stolen writer key cannot be undone",
            c.versioning.as_deref().unwrap_or("?")
        ));
    }
    c
}

async fn check_local(region: &RegionConfig, path: &std::path::Path) -> RegionCheck {
    let mut c = RegionCheck {
        region: region.name.clone(),
        kind: "local",
        location: path.display().to_string(),
        ..Default::default()
    };
    let started = Instant::now();
    if !path.is_dir() {
        c.errors.push(format!(
            "{} is not a directory (run `lifeboat init`)",
            path.display()
        ));
        return c;
    }
    c.reachable = true;
    c.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let b = LocalBackend::new(path);
    check_basic(&b, &mut c).await;
    if c.can_put {
        c.can_delete = Some(b.delete(&probe_name()).await.is_ok());
    }
    c
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Governance => "governance",
        LockMode::Compliance => "compliance",
    }
}

/// `lifeboat regions check`: per region, reachability, permissions, versioning, Object Lock
/// and latency. Exit 0 when every region is reachable and can list, put and get; 1 otherwise.
pub async fn check(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let mut checks = Vec::new();
    for r in &config.regions {
        let c = match &r.kind {
            RegionKind::Local { path } => check_local(r, path).await,
            RegionKind::S3 { .. } => {
                let settings = S3Settings::from_kind(&r.kind).expect("s3 region");
                check_s3(r, settings).await
            }
        };
        checks.push(c);
    }
    let all_ok = checks.iter().all(RegionCheck::ok);
    if json {
        super::output::print_json(&json!({ "ok": all_ok, "regions": checks }));
    } else {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        for c in &checks {
            println!("{} ({})", c.region, c.location);
            println!(
                "  reachable {}{}, list {}, put {}, get {}, delete {}",
                yes(c.reachable),
                c.latency_ms
                    .map(|l| format!(" ({l:.0} ms)"))
                    .unwrap_or_default(),
                yes(c.can_list),
                yes(c.can_put),
                yes(c.can_get),
                match c.can_delete {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
            );
            if c.kind == "s3" {
                println!(
                    "  versioning {}, object lock {}{}{}",
                    c.versioning.as_deref().unwrap_or("unknown"),
                    match c.object_lock {
                        Some(true) => "enabled",
                        Some(false) => "disabled",
                        None => "unknown",
                    },
                    c.bucket_default_retention
                        .as_ref()
                        .map(|d| format!(" (bucket default {d})"))
                        .unwrap_or_default(),
                    c.configured_lock
                        .as_ref()
                        .map(|l| format!(", uploads locked {l}"))
                        .unwrap_or_default()
                );
            }
            for w in &c.warnings {
                println!("  warning: {w}");
            }
            for e in &c.errors {
                println!("  PROBLEM: {e}");
            }
        }
        println!(
            "{}",
            if all_ok {
                "regions check: ok"
            } else {
                "regions check: problems found"
            }
        );
    }
    Ok(if all_ok { exit::OK } else { exit::FAILURE })
}

/// Warnings for `verify`: an s3 region whose Object Lock period is shorter than what a plan
/// storing there keeps plus the prune interval plus a day's margin, so older snapshots are no
/// longer protected from a stolen writer key (prune extends retention only when it runs).
pub fn lock_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for r in &config.regions {
        let RegionKind::S3 {
            object_lock: Some(lock),
            ..
        } = &r.kind
        else {
            continue;
        };
        for p in config.plans.iter().filter(|p| p.regions.contains(&r.name)) {
            let k = &p.retention.policy;
            let horizons = [
                (k.keep_daily, 1, "keep_daily"),
                (k.keep_weekly, 7, "keep_weekly"),
                (k.keep_monthly, 31, "keep_monthly"),
                (k.keep_yearly, 366, "keep_yearly"),
            ];
            let within = k
                .keep_within
                .map(|s| (s.max(0) as u64).div_ceil(86_400) as u32);
            let longest = horizons
                .iter()
                .chain([(within, 1, "keep_within")].iter())
                .filter_map(|(n, days, key)| n.map(|n| (u64::from(n) * days, *key, n)))
                .max_by_key(|(d, _, _)| *d);
            // Prune extends retention only when it runs: add its interval and a day.
            let interval = p
                .prune_schedule
                .as_deref()
                .and_then(|e| crate::daemon::Schedule::parse(e, p.zone.as_deref()).ok())
                .and_then(|s| {
                    let now = lifeboat_repo::clock::now_secs();
                    let a = s.next_after(now)?;
                    Some((s.next_after(a)? - a) as u64 / 86_400)
                })
                .unwrap_or(7);
            if let Some((days, key, n)) = longest {
                let need = days + interval + 1;
                if u64::from(lock.days) < need {
                    out.push(format!(
                        "region {}: Object Lock holds uploads for {} days, but plan {} keeps snapshots for about {days} days ({key} = {n}) and prunes (which extends retention) every {interval} days: older snapshots can be deleted by anyone with the writer's credentials; raise object_lock_days to at least {need} (retention + prune interval + 1 day margin)",
                        r.name, lock.days, p.name
                    ));
                }
            }
        }
    }
    out
}

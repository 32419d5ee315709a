//! Recording what a command did in the catalog, best effort: a backup or restore must not
//! fail because the history cannot be written (the object store is the source of truth), so
//! catalog problems are logged as warnings here and the command goes on.

use std::collections::BTreeMap;

use anyhow::Result;
use lifeboat_repo::verify::VerifyReport;

use crate::catalog::{Catalog, Phase, RunEnd, RunKind};
use crate::config::Config;
use crate::engine::{BackupReport, RestoreResult};

/// Open the configured catalog, or warn and return `None`; `None` without a word for a
/// configuration given on the command line, which has no catalog by design.
pub async fn open(config: &Config) -> Option<Catalog> {
    let url = config.catalog_url.as_deref()?;
    match Catalog::open(url).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "catalog unavailable: this run is not recorded");
            None
        }
    }
}

/// A run being recorded (or not, when the catalog is unavailable).
pub struct History {
    catalog: Option<Catalog>,
    run: Option<String>,
}

impl History {
    pub async fn begin(config: &Config, kind: RunKind, plan: Option<&str>) -> History {
        let catalog = open(config).await;
        let run = match &catalog {
            Some(c) => warn(c.begin_run(kind, plan, None).await),
            None => None,
        };
        History { catalog, run }
    }

    pub async fn end_backup(&self, res: &Result<BackupReport>) {
        if let (Some(c), Some(id)) = (&self.catalog, &self.run) {
            warn(crate::engine::record::backup(c, id, res, 1).await);
        }
    }

    /// End a run with an outcome the caller composed (forget, prune).
    pub async fn end(&self, end: &RunEnd) {
        if let (Some(c), Some(id)) = (&self.catalog, &self.run) {
            warn(c.end_run(id, end).await);
        }
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    pub async fn end_restore(&self, res: &Result<RestoreResult>) {
        if let (Some(c), Some(id)) = (&self.catalog, &self.run) {
            warn(crate::engine::record::restore(c, id, res).await);
        }
    }
}

/// Record a `verify` run and, in each region where it found no problem, mark every snapshot
/// the catalog knows there as verified.
pub async fn record_verify(config: &Config, report: &VerifyReport) {
    let Some(c) = open(config).await else {
        return;
    };
    let Some(run) = warn(c.begin_run(RunKind::Verify, None, None).await) else {
        return;
    };
    let now = crate::host::now_secs();
    let snapshots = warn(c.snapshots(None).await).unwrap_or_default();
    let mut regions = BTreeMap::new();
    for name in report.regions.keys() {
        let problems = report.problems.iter().filter(|p| &p.region == name).count();
        if problems > 0 {
            regions.insert(name.clone(), format!("{problems} problem(s)"));
            continue;
        }
        regions.insert(name.clone(), "ok".to_string());
        // A repository verify says nothing about RDS snapshots (verified by restore tests).
        let in_region = snapshots.iter().filter(|s| s.present.contains(name));
        for s in in_region.filter(|s| !crate::rds::catalog::is_rds_row(&s.source)) {
            warn(c.mark_verified(&s.id, name, now).await);
        }
    }
    let end = RunEnd {
        phase: Some(if report.ok() {
            Phase::Succeeded
        } else {
            Phase::Failed
        }),
        regions,
        error: (!report.ok()).then(|| format!("{} problem(s) found", report.problems.len())),
        attempts: 1,
        ..Default::default()
    };
    warn(c.end_run(&run, &end).await);
}

pub fn warn<T>(r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "catalog: could not record the run");
            None
        }
    }
}

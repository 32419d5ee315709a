//! The `rds` kind as an [`ExternalSource`]: native RDS snapshots (crate::rds), reported in
//! the engine's types so the CLI, the catalog, `status` and the daemon's schedules treat an
//! rds plan like any other. The repository is never opened.

use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use lifeboat_repo::snapshot::{Manifest, SourceInfo, Stats, MANIFEST_VERSION};
use lifeboat_repo::writer::BackupOutcome;
use lifeboat_repo::{Cancel, Id, Progress};

use super::{ExternalSource, TestCx};
use crate::config::{Config, PlanConfig, RdsSource};
use crate::engine::{BackupReport, RestoreTestOutcome};
use crate::rds::wait::Waiter;

pub struct Rds<'a> {
    pub source: &'a RdsSource,
}

#[async_trait]
impl ExternalSource for Rds<'_> {
    async fn backup(
        &self,
        config: &Config,
        plan: &PlanConfig,
        _progress: Arc<Progress>,
        cancel: Cancel,
    ) -> Result<BackupReport> {
        // Region states are recorded as they change (`copying` shows while a copy runs);
        // without a catalog the backup still runs.
        let catalog = match config.catalog_url.as_deref() {
            Some(url) => crate::catalog::Catalog::open(url).await.ok(),
            None => None,
        };
        let run = crate::host::new_id();
        let waiter = Waiter::of(self.source, cancel);
        let r = crate::rds::backup(
            crate::rds::client(self.source),
            plan,
            &run,
            &waiter,
            catalog.as_ref(),
        )
        .await?;
        let outcome = BackupOutcome {
            // Not a repository object: the catalog and the CLI use `rds.snapshot`.
            snapshot: Id::of_stored(r.snapshot.as_bytes()),
            manifest: Manifest {
                version: MANIFEST_VERSION,
                plan: plan.name.clone(),
                host: crate::host::hostname(),
                time: r.time,
                end_time: r.time + r.duration.as_secs() as i64,
                committed_ns: 0,
                source: SourceInfo {
                    kind: "rds".into(),
                    location: crate::rds::catalog::source_column(self.source),
                },
                root: Id([0; 32]),
                stats: Stats::default(),
                probes: Default::default(),
                unreadable: Vec::new(),
                sealed: false,
                details_error: None,
            },
            complete: r
                .regions
                .iter()
                .filter(|(_, s)| s.is_available())
                .map(|(k, _)| k.clone())
                .collect(),
            failed: r
                .regions
                .iter()
                .filter(|(_, s)| !s.is_available())
                .map(|(k, s)| {
                    (
                        k.clone(),
                        s.detail.clone().unwrap_or_else(|| s.state.clone()),
                    )
                })
                .collect(),
        };
        Ok(BackupReport {
            plan: plan.name.clone(),
            outcome,
            unavailable: Vec::new(),
            warnings: r.warnings.clone(),
            duration: r.duration,
            rds: Some(r),
        })
    }

    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()> {
        let waiter = Waiter::of(self.source, cx.cancel.clone());
        let run = crate::host::new_id();
        let o = crate::rds::restore_test(
            crate::rds::client(self.source),
            cx.plan,
            cx.from,
            cx.snapshot,
            &run,
            &waiter,
        )
        .await?;
        outcome.snapshot = o.snapshot;
        outcome.region = o.region;
        outcome.started_at = o.started_at;
        outcome.duration_ms = o.duration_ms;
        outcome.checked = o.checked;
        // The engine turns an error into the test's difference.
        match o.differences.as_slice() {
            [] => Ok(()),
            [first, rest @ ..] => {
                outcome.differences.extend(rest.iter().cloned());
                Err(anyhow::anyhow!("{first}"))
            }
        }
    }
}

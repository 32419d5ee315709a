//! Drills on a schedule: the daemon's [`Drills`] over a directory of runbooks. A runbook is
//! due when it never ran, or when its frequency has elapsed since its newest drill (any
//! result) or claimed occurrence; a runbook that no longer parses is logged and skipped.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use lifeboat_repo::Cancel;

use super::run::RunOptions;
use super::runbook::StepKind;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::daemon::drills::{DrillEnd, Drills, DueDrill};

pub struct Scheduled {
    pub config: Arc<Config>,
    pub catalog: Catalog,
    pub dir: PathBuf,
}

#[async_trait]
impl Drills for Scheduled {
    async fn due(&self, now: i64) -> Result<Vec<DueDrill>> {
        let mut out = Vec::new();
        for loaded in super::load_dir(&self.dir, &self.config) {
            let b = match loaded {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "runbook skipped");
                    continue;
                }
            };
            let due = DueDrill {
                runbook: b.id.clone(),
                path: b.path.clone(),
                plans: b.plans.clone(),
                gated: b
                    .steps
                    .iter()
                    .any(|s| matches!(s.kind, StepKind::Approve { .. })),
                scheduled_for: now,
            };
            let last = self.catalog.drills(Some(&b.id)).await?.into_iter().next();
            let claimed = self.catalog.last_occurrence(&due.key()).await?;
            let scheduled_for = match last.map(|d| d.started_at).max(claimed) {
                None => Some(now),
                Some(t) => b.frequency.next_after(t).filter(|n| *n <= now),
            };
            if let Some(at) = scheduled_for {
                out.push(DueDrill {
                    scheduled_for: at,
                    ..due
                });
            }
        }
        Ok(out)
    }

    async fn run(&self, due: &DueDrill, cancel: &Cancel) -> Result<DrillEnd> {
        let book = super::runbook::load(&due.path, &self.config)
            .with_context(|| format!("runbook {}", due.runbook))?;
        let options = RunOptions {
            approver: Some(format!("daemon@{}", crate::host::hostname())),
            ..Default::default()
        };
        let report = super::execute(&self.config, &self.catalog, &book, options, cancel).await?;
        Ok(DrillEnd {
            id: report.id,
            result: report.result,
            deviations: report.deviations,
        })
    }
}

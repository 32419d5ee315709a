//! The `rds_restore` step: each rds plan's newest (or named) RDS snapshot in the step's
//! region is restored into a scratch instance tagged with the drill's id as its run, waited
//! for, probed and deleted — `crate::rds::restore_test`, which deletes the instance whatever
//! happens (a killed drill's instance is removed by the next restore test of the plan).
//! Outputs per plan: `<plan>.snapshot`, `<plan>.region`, `<plan>.restore_ms`, `<plan>.checked`.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::Cancel;

use super::run::Drill;
use super::runbook::{Step, StepKind};
use super::steps::Outputs;
use crate::rds::wait::Waiter;

pub async fn rds_restore(drill: &Arc<Drill>, step: &Step, cancel: &Cancel) -> Result<Outputs> {
    let StepKind::RdsRestore {
        plans,
        snapshot,
        region,
    } = &step.kind
    else {
        unreachable!("an rds_restore step")
    };
    let mut out = Outputs::new();
    let mut failures = Vec::new();
    for name in plans {
        let plan = drill.config.plan(name)?;
        let src = crate::rds::source_of(plan)?;
        let waiter = Waiter::of(src, cancel.clone());
        let t = crate::rds::restore_test(
            crate::rds::client(src),
            plan,
            region.as_deref(),
            snapshot,
            &drill.id,
            &waiter,
        )
        .await?;
        out.insert(format!("{name}.snapshot"), t.snapshot.clone());
        out.insert(format!("{name}.region"), t.region.clone());
        out.insert(
            format!("{name}.restore_ms"),
            t.duration_ms.max(1).to_string(),
        );
        out.insert(format!("{name}.checked"), t.checked.clone());
        if !t.passed {
            failures.push(format!("plan {name}: {}", t.differences.join("; ")));
        }
    }
    out.insert("plans".into(), plans.len().to_string());
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(out)
}

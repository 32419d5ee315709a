//! `verify --restore`: restore tests of every plan (or one), recorded in the catalog for
//! `status`; exit 4 when any test finds a difference.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::Progress;
use serde_json::json;

use super::output::{cancel_on_signals, print_json};
use super::progress::Bar;
use super::render::{bytes, rate};
use super::{exit, load_config, Cli};
use crate::engine::{self, RestoreTestRequest};
use crate::objectives::human;

pub async fn run(cli: &Cli, req: &RestoreTestRequest, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let progress = Arc::new(Progress::default());
    let bar = Bar::start("restore test", progress.clone(), !json);
    let res = engine::restore_tests(&config, req, progress, cancel_on_signals()).await;
    bar.finish();
    let outcomes = res?;
    let catalog = super::history::open(&config).await;
    let mut recorded = true;
    for o in &outcomes {
        if let Some(c) = &catalog {
            if let Err(e) = engine::restore_test::record(c, o).await {
                tracing::warn!(error = %format!("{e:#}"), plan = %o.plan, "catalog: could not record the restore test");
                recorded = false;
            }
        } else {
            recorded = false;
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if json {
        print_json(&json!({ "restore_tests": outcomes, "failed": failed, "recorded": recorded }));
    } else {
        for o in &outcomes {
            for w in &o.warnings {
                eprintln!("warning: plan {}: {w}", o.plan);
            }
            let rto = config
                .plan(&o.plan)
                .map(|p| p.objectives.rto.as_secs() as i64)
                .unwrap_or_default();
            let secs = o.duration_ms as f64 / 1000.0;
            let snap = o.snapshot.get(..8).unwrap_or("none");
            if o.passed {
                println!(
                    "PASS {} ({}) snapshot {snap} from {}: restored {} in {:.1}s ({}); RTO {}; checked {}",
                    o.plan,
                    o.kind,
                    o.region,
                    bytes(o.bytes),
                    secs,
                    rate(o.bytes, secs),
                    human(rto),
                    o.checked
                );
            } else {
                println!(
                    "FAIL {} ({}) snapshot {snap} from {}:",
                    o.plan, o.kind, o.region
                );
                for d in &o.differences {
                    println!("  - {d}");
                }
            }
        }
        if !recorded {
            eprintln!("warning: the catalog is unavailable; results were not recorded for `lifeboat status`");
        }
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}

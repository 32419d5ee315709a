//! Regions: turning the `[[regions]]` of lifeboat.toml into repository backends, with the
//! cross-cutting wrappers (retry with backoff, concurrency limit) applied uniformly, and
//! [`RegionFaults`]: regions made to fail on purpose, in-process (a drill's simulated
//! outage), through the fault wrapper outside every other wrapper.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::backend::{
    ConcurrencyLimit, DynBackend, Fault, FaultInjector, LocalBackend, Retry, RetryPolicy,
};
use lifeboat_repo::Region;

use crate::config::{Config, RegionConfig, RegionKind};

pub mod s3;
mod s3_get;

pub use s3::{S3Backend, S3Settings};

/// Operations in flight per region.
const REGION_CONCURRENCY: usize = 8;

/// The backend for one configured region, wrapped for retry and concurrency.
///
/// S3 regions get no retry wrapper: the SDK client retries (bounded, see [`s3`]) within the
/// region's `timeout`, and a second layer would multiply both the attempts and the time a
/// frozen region takes to fail.
pub fn backend(region: &RegionConfig) -> Result<DynBackend> {
    let (inner, retry): (DynBackend, RetryPolicy) = match &region.kind {
        RegionKind::Local { path } => (
            Arc::new(LocalBackend::new(path.clone())),
            RetryPolicy::default(),
        ),
        RegionKind::S3 { .. } => {
            let settings = S3Settings::from_kind(&region.kind).expect("an s3 region");
            (Arc::new(S3Backend::new(settings)), RetryPolicy::none())
        }
    };
    let limited: DynBackend = Arc::new(ConcurrencyLimit::new(inner, REGION_CONCURRENCY));
    Ok(Arc::new(Retry::new(limited, retry)))
}

/// Regions whose every call fails ("region down"), never reaching the real storage. Empty by
/// default; a drill's `declare` step with `simulate = "region_down:NAME"` fills it for the
/// rest of the drill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionFaults {
    pub down: std::collections::BTreeSet<String>,
}

impl RegionFaults {
    pub fn none() -> RegionFaults {
        RegionFaults::default()
    }
}

/// Every configured region, in config order.
pub fn regions(config: &Config) -> Result<Vec<Region>> {
    regions_with(config, &RegionFaults::none())
}

/// Every configured region, with `faults` applied.
pub fn regions_with(config: &Config, faults: &RegionFaults) -> Result<Vec<Region>> {
    config
        .regions
        .iter()
        .map(|r| {
            let mut backend = backend(r)?;
            if faults.down.contains(&r.name) {
                let injector = FaultInjector::new(backend);
                injector.inject(Fault::Down);
                backend = Arc::new(injector);
            }
            Ok(Region {
                name: r.name.clone(),
                backend,
            })
        })
        .collect()
}

/// Create local region directories (for `init`).
pub fn prepare(config: &Config) -> Result<()> {
    for r in &config.regions {
        if let RegionKind::Local { path } = &r.kind {
            std::fs::create_dir_all(path).map_err(|e| {
                anyhow::anyhow!("region {}: create {}: {e}", r.name, path.display())
            })?;
        }
    }
    Ok(())
}

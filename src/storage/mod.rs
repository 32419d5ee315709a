//! Regions: turning the `[[regions]]` of lifeboat.toml into repository backends, with the
//! cross-cutting wrappers (retry with backoff, concurrency limit) applied uniformly.

use std::sync::Arc;

use anyhow::{bail, Result};
use lifeboat_repo::backend::{ConcurrencyLimit, DynBackend, LocalBackend, Retry, RetryPolicy};
use lifeboat_repo::Region;

use crate::config::{Config, RegionConfig, RegionKind};

/// Operations in flight per region.
const REGION_CONCURRENCY: usize = 8;

/// The backend for one configured region, wrapped for retry and concurrency.
pub fn backend(region: &RegionConfig) -> Result<DynBackend> {
    let inner: DynBackend = match &region.kind {
        RegionKind::Local { path } => Arc::new(LocalBackend::new(path.clone())),
        RegionKind::S3 { .. } => bail!(
            "region {}: kind \"s3\" is not available in this build yet; use kind = \"local\"",
            region.name
        ),
    };
    let limited: DynBackend = Arc::new(ConcurrencyLimit::new(inner, REGION_CONCURRENCY));
    Ok(Arc::new(Retry::new(limited, RetryPolicy::default())))
}

/// Every configured region, in config order.
pub fn regions(config: &Config) -> Result<Vec<Region>> {
    config
        .regions
        .iter()
        .map(|r| {
            Ok(Region {
                name: r.name.clone(),
                backend: backend(r)?,
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

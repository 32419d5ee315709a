//! Regions: turning the `[[regions]]` of lifeboat.toml into repository backends, with the
//! cross-cutting wrappers (retry with backoff, concurrency limit) applied uniformly.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::backend::{ConcurrencyLimit, DynBackend, LocalBackend, Retry, RetryPolicy};
use lifeboat_repo::Region;

use crate::config::{Config, RegionConfig, RegionKind};

pub mod s3;

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

//! Native RDS snapshots: the `rds` source kind. A backup creates a DB snapshot in the
//! instance's region and copies it into every `copy_to` region; a restore or restore test
//! creates an instance from one; retention expires old ones; `catalog sync` reads them back.
//! No repository is involved: RDS holds the data, lifeboat holds the policy, the catalog
//! rows and the evidence.
//!
//! Every RDS call goes through the small [`Rds`] trait: [`aws::AwsRds`] implements it with
//! aws-sdk-rds, and a scripted fake (unit tests) plays the state transitions a test server
//! cannot show. Waiting is lifeboat's own loop ([`wait`]): a few seconds between polls, a
//! timeout per step, cancellation between polls.
//!
//! Names and tags follow the terraform IAM conventions (docs/terraform.md): snapshots are
//! `lifeboat-<plan>-<time>` tagged `lifeboat:managed=true`, `lifeboat:plan`, `lifeboat:run`;
//! scratch instances are `lifeboat-drill-<plan>-<time>` tagged `lifeboat:drill=true`. Only
//! resources with those tags are ever deleted.

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;

pub mod aws;
pub mod backup;
pub mod catalog;
#[cfg(test)]
mod fake;
pub mod restore;
pub mod retention;
#[cfg(test)]
mod tests;
pub mod wait;

pub use backup::{backup, RdsBackupReport};
pub use restore::{restore_instance, restore_test, RdsRestoreReport};

pub const TAG_MANAGED: &str = "lifeboat:managed";
pub const TAG_PLAN: &str = "lifeboat:plan";
pub const TAG_RUN: &str = "lifeboat:run";
pub const TAG_DRILL: &str = "lifeboat:drill";
/// Snapshot and instance names start with this (terraform `rds_snapshot_prefix`).
pub const SNAPSHOT_PREFIX: &str = "lifeboat-";
/// Scratch instances (terraform `rds_scratch_instance_prefix`).
pub const SCRATCH_PREFIX: &str = "lifeboat-drill-";

/// AWS: manual snapshots per region, and copies in flight into one region.
pub const MANUAL_SNAPSHOT_QUOTA: usize = 100;
pub const COPIES_IN_FLIGHT_QUOTA: usize = 20;

/// A DB snapshot as RDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub arn: String,
    pub region: String,
    pub instance: String,
    /// `creating`, `available`, `copying`, `failed`, …
    pub status: String,
    /// 0–100 when RDS reports it.
    pub percent: Option<i32>,
    /// Epoch seconds.
    pub created: Option<i64>,
    /// `manual` or `automated`.
    pub kind: String,
    pub tags: BTreeMap<String, String>,
}

impl Snapshot {
    /// Made and tagged by lifeboat (what retention may delete).
    pub fn managed(&self) -> bool {
        self.id.starts_with(SNAPSHOT_PREFIX)
            && self.tags.get(TAG_MANAGED).is_some_and(|v| v == "true")
    }

    pub fn plan(&self) -> Option<&str> {
        self.tags.get(TAG_PLAN).map(String::as_str)
    }
}

/// A DB instance as RDS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// `creating`, `available`, `deleting`, …
    pub status: String,
    pub address: Option<String>,
    pub port: Option<i32>,
    pub tags: BTreeMap<String, String>,
}

/// What a restore creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSpec {
    pub instance: String,
    pub snapshot: String,
    pub settings: crate::config::InstanceSettings,
    pub tags: BTreeMap<String, String>,
}

/// The RDS calls lifeboat makes, per AWS region. Describe calls answer `None` for a
/// resource that does not exist; every other failure is an error naming the call.
#[async_trait]
pub trait Rds: Send + Sync {
    async fn create_snapshot(
        &self,
        region: &str,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Snapshot>;
    async fn describe_snapshot(&self, region: &str, id: &str) -> Result<Option<Snapshot>>;
    /// Every manual snapshot of the region, with tags.
    async fn list_snapshots(&self, region: &str) -> Result<Vec<Snapshot>>;
    /// Runs in `region` (the destination), naming the source by ARN.
    async fn copy_snapshot(
        &self,
        region: &str,
        source_arn: &str,
        id: &str,
        kms_key_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Snapshot>;
    async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()>;
    async fn restore_instance(&self, region: &str, spec: &RestoreSpec) -> Result<Instance>;
    async fn describe_instance(&self, region: &str, id: &str) -> Result<Option<Instance>>;
    /// Every instance of the region, with tags.
    async fn list_instances(&self, region: &str) -> Result<Vec<Instance>>;
    /// Deletes without a final snapshot.
    async fn delete_instance(&self, region: &str, id: &str) -> Result<()>;
}

/// `lifeboat-<plan>-<yyyymmdd>-<hhmmss>` for a snapshot taken at `time` (epoch seconds).
pub fn snapshot_name(plan: &str, time: i64) -> String {
    format!("{SNAPSHOT_PREFIX}{plan}-{}", stamp(time))
}

/// `lifeboat-drill-<plan>-<yyyymmdd>-<hhmmss>` for a scratch instance.
pub fn scratch_name(plan: &str, time: i64) -> String {
    format!("{SCRATCH_PREFIX}{plan}-{}", stamp(time))
}

fn stamp(time: i64) -> String {
    chrono::DateTime::from_timestamp(time, 0)
        .unwrap_or_default()
        .format("%Y%m%d-%H%M%S")
        .to_string()
}

/// The tags of every snapshot lifeboat creates or copies for `plan` in run `run`.
pub fn snapshot_tags(
    plan: &str,
    run: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = extra.clone();
    tags.insert(TAG_MANAGED.into(), "true".into());
    tags.insert(TAG_PLAN.into(), plan.into());
    tags.insert(TAG_RUN.into(), run.into());
    tags
}

/// The tags of a scratch instance of `plan`.
pub fn scratch_tags(
    plan: &str,
    run: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut tags = extra.clone();
    tags.insert(TAG_DRILL.into(), "true".into());
    tags.insert(TAG_PLAN.into(), plan.into());
    tags.insert(TAG_RUN.into(), run.into());
    tags
}

/// The client for a plan's source: AWS, or the source's `endpoint`.
pub fn client(source: &crate::config::RdsSource) -> std::sync::Arc<dyn Rds> {
    std::sync::Arc::new(aws::AwsRds::new(source.endpoint.clone()))
}

/// The plan's rds source, or an error saying the plan is of another kind.
pub fn source_of(plan: &crate::config::PlanConfig) -> Result<&crate::config::RdsSource> {
    plan.source.as_rds().ok_or_else(|| {
        anyhow::anyhow!(
            "plan {}: a {} source, not rds",
            plan.name,
            plan.source.kind()
        )
    })
}

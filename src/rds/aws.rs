//! [`Rds`] over aws-sdk-rds: one client per AWS region, built on first use from the
//! standard credential chain (never from lifeboat.toml), with bounded timeouts and retries.
//! Tags travel in the create/copy/restore request itself, which is what the terraform
//! roles demand (`aws:RequestTag`). Every call here is mapped to IAM actions in
//! `terraform/tests/iam_map.py`; `terraform/check.sh` fails on one that is not.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbInstance, DbSnapshot, Tag};
use aws_sdk_rds::Client;
use tokio::sync::Mutex;

use super::{Instance, Rds, RestoreSpec, Snapshot, MANUAL_SNAPSHOT_QUOTA};

/// One call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

pub struct AwsRds {
    endpoint: Option<String>,
    clients: Mutex<HashMap<String, Client>>,
}

impl AwsRds {
    pub fn new(endpoint: Option<String>) -> AwsRds {
        AwsRds {
            endpoint,
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(region) {
            return c.clone();
        }
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(OPERATION_TIMEOUT / 2)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .load()
            .await;
        let mut config = aws_sdk_rds::config::Builder::from(&shared);
        if let Some(e) = &self.endpoint {
            config = config.endpoint_url(e);
        }
        let client = Client::from_conf(config.build());
        clients.insert(region.to_string(), client.clone());
        client
    }
}

/// The service error's code, if the call got that far.
fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn fail<E, R>(call: &str, region: &str, e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let hint = match code(&e) {
        Some("SnapshotQuotaExceeded") => format!(" (AWS allows {MANUAL_SNAPSHOT_QUOTA} manual snapshots per region: lower the plan's retention or delete old snapshots)"),
        Some("KMSKeyNotAccessibleFault") => " (the KMS key is missing, disabled or not usable by this role: check copy_to.kms_key_id and the key policy)".into(),
        Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") => " (the rds role of terraform/ grants only lifeboat-named, lifeboat-tagged resources: see docs/rds.md)".into(),
        _ => String::new(),
    };
    anyhow::anyhow!("RDS {call} in {region}: {}{hint}", DisplayErrorContext(e))
}

fn tags(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn snapshot(region: &str, s: &DbSnapshot) -> Snapshot {
    Snapshot {
        id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
        arn: s.db_snapshot_arn().unwrap_or_default().to_string(),
        region: region.to_string(),
        instance: s.db_instance_identifier().unwrap_or_default().to_string(),
        status: s.status().unwrap_or("unknown").to_string(),
        percent: s.percent_progress(),
        created: s.snapshot_create_time().map(|t| t.secs()),
        kind: s.snapshot_type().unwrap_or_default().to_string(),
        tags: tag_map(s.tag_list()),
    }
}

fn instance(i: &DbInstance) -> Instance {
    Instance {
        id: i.db_instance_identifier().unwrap_or_default().to_string(),
        status: i.db_instance_status().unwrap_or("unknown").to_string(),
        address: i.endpoint().and_then(|e| e.address()).map(str::to_string),
        port: i.endpoint().and_then(|e| e.port()),
        tags: tag_map(i.tag_list()),
    }
}

#[async_trait]
impl Rds for AwsRds {
    async fn create_snapshot(
        &self,
        region: &str,
        inst: &str,
        id: &str,
        t: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let out = self
            .client(region)
            .await
            .create_db_snapshot()
            .db_instance_identifier(inst)
            .db_snapshot_identifier(id)
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(|e| fail("CreateDBSnapshot", region, e))?;
        let s = out
            .db_snapshot()
            .context("CreateDBSnapshot returned no snapshot")?;
        Ok(snapshot(region, s))
    }

    async fn describe_snapshot(&self, region: &str, id: &str) -> Result<Option<Snapshot>> {
        let res = self
            .client(region)
            .await
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await;
        match res {
            Ok(out) => Ok(out.db_snapshots().first().map(|s| snapshot(region, s))),
            Err(e) if code(&e) == Some("DBSnapshotNotFound") => Ok(None),
            Err(e) => Err(fail("DescribeDBSnapshots", region, e)),
        }
    }

    async fn list_snapshots(&self, region: &str) -> Result<Vec<Snapshot>> {
        let client = self.client(region).await;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = client
                .describe_db_snapshots()
                .snapshot_type("manual")
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| fail("DescribeDBSnapshots", region, e))?;
            out.extend(page.db_snapshots().iter().map(|s| snapshot(region, s)));
            match page.marker() {
                Some(m) if !m.is_empty() && Some(m) != marker.as_deref() => {
                    marker = Some(m.to_string())
                }
                _ => break,
            }
        }
        // DescribeDBSnapshots carries tags; fetch them where a server leaves them out.
        for s in out
            .iter_mut()
            .filter(|s| s.tags.is_empty() && !s.arn.is_empty())
        {
            let tags = client
                .list_tags_for_resource()
                .resource_name(&s.arn)
                .send()
                .await
                .map_err(|e| fail("ListTagsForResource", region, e))?;
            s.tags = tag_map(tags.tag_list());
        }
        Ok(out)
    }

    async fn copy_snapshot(
        &self,
        region: &str,
        source_arn: &str,
        id: &str,
        kms: &str,
        t: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let out = self
            .client(region)
            .await
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(id)
            .kms_key_id(kms)
            .set_tags(Some(tags(t)))
            .send()
            .await
            .map_err(|e| fail("CopyDBSnapshot", region, e))?;
        let s = out
            .db_snapshot()
            .context("CopyDBSnapshot returned no snapshot")?;
        Ok(snapshot(region, s))
    }

    async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()> {
        match self
            .client(region)
            .await
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("DBSnapshotNotFound") => Ok(()),
            Err(e) => Err(fail("DeleteDBSnapshot", region, e)),
        }
    }

    async fn restore_instance(&self, region: &str, spec: &RestoreSpec) -> Result<Instance> {
        let out = self
            .client(region)
            .await
            .restore_db_instance_from_db_snapshot()
            .db_instance_identifier(&spec.instance)
            .db_snapshot_identifier(&spec.snapshot)
            .set_db_instance_class(spec.settings.instance_class.clone())
            .set_db_subnet_group_name(spec.settings.subnet_group.clone())
            .set_vpc_security_group_ids(
                (!spec.settings.security_groups.is_empty())
                    .then(|| spec.settings.security_groups.clone()),
            )
            .set_option_group_name(spec.settings.option_group.clone())
            .set_db_parameter_group_name(spec.settings.parameter_group.clone())
            .multi_az(false)
            .deletion_protection(false)
            .set_tags(Some(tags(&spec.tags)))
            .send()
            .await
            .map_err(|e| fail("RestoreDBInstanceFromDBSnapshot", region, e))?;
        let i = out
            .db_instance()
            .context("RestoreDBInstanceFromDBSnapshot returned no instance")?;
        Ok(instance(i))
    }

    async fn describe_instance(&self, region: &str, id: &str) -> Result<Option<Instance>> {
        match self
            .client(region)
            .await
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_instances().first().map(instance)),
            Err(e) if code(&e) == Some("DBInstanceNotFound") => Ok(None),
            Err(e) => Err(fail("DescribeDBInstances", region, e)),
        }
    }

    async fn list_instances(&self, region: &str) -> Result<Vec<Instance>> {
        let client = self.client(region).await;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = client
                .describe_db_instances()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| fail("DescribeDBInstances", region, e))?;
            out.extend(page.db_instances().iter().map(instance));
            match page.marker() {
                Some(m) if !m.is_empty() && Some(m) != marker.as_deref() => {
                    marker = Some(m.to_string())
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete_instance(&self, region: &str, id: &str) -> Result<()> {
        let res = self
            .client(region)
            .await
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("DBInstanceNotFound") => Ok(()),
            Err(e) => Err(fail("DeleteDBInstance", region, e)),
        }
    }
}

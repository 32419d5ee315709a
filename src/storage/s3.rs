//! The `s3` region kind: a repository under a prefix of an S3 bucket, through aws-sdk-s3.
//!
//! Credentials come only from the standard AWS provider chain (environment, shared profile,
//! web identity / IRSA, ECS and instance metadata), never from lifeboat.toml. Every client has
//! explicit timeouts and a bounded retry policy, because with default settings the SDK waits
//! forever on a server that accepts a connection but never answers:
//!
//! * connect: at most 5 s (less when the region's `timeout` is shorter);
//! * one attempt: at most half the region's `timeout`;
//! * one operation, retries included: the region's `timeout` (default 2 min).
//!
//! The SDK's standard retry (3 attempts, classifying throttling, 5xx, timeouts and connection
//! errors, with a client-side token bucket) is the only retry for S3 regions: `storage` does
//! not add lifeboat's generic retry wrapper on top, which would multiply the attempts and the
//! time a frozen region takes to fail.
//!
//! With `object_lock_days`, every upload carries an Object Lock retention date (mode and days
//! from the config), so the writer's credentials cannot destroy history; the bucket must have
//! Object Lock enabled. With `endpoint`, requests go to that S3-compatible server with
//! path-style addressing.

use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, ResponseChecksumValidation, SharedCredentialsProvider,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockEnabled, ObjectLockMode};
use aws_sdk_s3::Client;
use bytes::Bytes;
use lifeboat_repo::backend::{AfterDelete, Backend, BackendError, BackendResult, ObjectInfo};
use tokio::sync::OnceCell;

use crate::config::{LockMode, ObjectLock, RegionKind};

/// Attempts per S3 request (the first included), in the SDK's standard retry mode.
pub const MAX_ATTEMPTS: u32 = 3;
/// The longest a TCP (and TLS) connect may take.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach one bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// The AWS region (or what an S3-compatible server expects).
    pub region: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub object_lock: Option<ObjectLock>,
    /// One operation, retries included.
    pub timeout: Duration,
    /// Static credentials instead of the provider chain. Only tests set this: lifeboat.toml
    /// has no way to, by design.
    pub credentials: Option<Credentials>,
}

impl S3Settings {
    /// Settings for a configured `s3` region; `None` for other kinds.
    pub fn from_kind(kind: &RegionKind) -> Option<S3Settings> {
        match kind {
            RegionKind::S3 {
                bucket,
                region,
                prefix,
                endpoint,
                object_lock,
                timeout,
            } => Some(S3Settings {
                bucket: bucket.clone(),
                region: region.clone(),
                prefix: prefix.clone(),
                endpoint: endpoint.clone(),
                object_lock: *object_lock,
                timeout: *timeout,
                credentials: None,
            }),
            RegionKind::Local { .. } => None,
        }
    }

    pub fn timeouts(&self) -> TimeoutConfig {
        let attempt = self.timeout / 2;
        TimeoutConfig::builder()
            .connect_timeout(attempt.min(MAX_CONNECT_TIMEOUT))
            .operation_attempt_timeout(attempt)
            .operation_timeout(self.timeout)
            .build()
    }

    pub fn retries(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5))
    }
}

/// One bucket (under a prefix) as a repository [`Backend`].
#[derive(Debug)]
pub struct S3Backend {
    settings: S3Settings,
    /// Built on first use: loading the provider chain is asynchronous (it may read profile
    /// files or ask the instance metadata service), and opening a config must not be.
    client: OnceCell<Client>,
}

/// What a bucket says about itself, for `regions check` and `verify`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BucketState {
    /// `Enabled`, `Suspended`, `Disabled` (never enabled), or `None` when it could not be read.
    pub versioning: Option<String>,
    /// Whether Object Lock is enabled on the bucket; `None` when it could not be read.
    pub object_lock: Option<bool>,
    /// The bucket's default retention, e.g. `GOVERNANCE 30 days`.
    pub default_retention: Option<String>,
    /// Why a state could not be read.
    pub errors: Vec<String>,
}

impl S3Backend {
    pub fn new(settings: S3Settings) -> S3Backend {
        S3Backend {
            settings,
            client: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The client, built once with this region's timeouts, retries and endpoint.
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let s = &self.settings;
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(s.region.clone()))
                    .timeout_config(s.timeouts())
                    .retry_config(s.retries());
                if let Some(c) = &s.credentials {
                    loader = loader.credentials_provider(SharedCredentialsProvider::new(c.clone()));
                }
                let shared = loader.load().await;
                // A retry partition (token bucket) of its own per bucket: by default every S3
                // client in the process shares one, and a region that is down would drain the
                // retries of the healthy one.
                let partition = RetryPartition::new(format!("lifeboat-s3-{}", s.bucket));
                // lifeboat checks every object it reads against its content id (or parses and
                // authenticates it), so the SDK's own response checksums would only cost CPU.
                // Uploads keep theirs: the server checks them before it stores anything.
                let mut config = aws_sdk_s3::config::Builder::from(&shared)
                    .retry_partition(partition)
                    .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
                if let Some(endpoint) = &s.endpoint {
                    config = config.endpoint_url(endpoint).force_path_style(true);
                }
                Client::from_conf(config.build())
            })
            .await
    }

    pub(super) fn key(&self, name: &str) -> String {
        if self.settings.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.settings.prefix)
        }
    }

    fn name_of(&self, key: &str) -> Option<String> {
        if self.settings.prefix.is_empty() {
            Some(key.to_string())
        } else {
            key.strip_prefix(&self.settings.prefix)?
                .strip_prefix('/')
                .map(str::to_string)
        }
    }

    /// The retention date for an object uploaded now, when Object Lock is configured.
    fn retain_until(&self) -> Option<(ObjectLockMode, DateTime)> {
        let lock = self.settings.object_lock?;
        let now = crate::host::now_secs();
        let until = DateTime::from_secs(now + i64::from(lock.days) * 86_400);
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        Some((mode, until))
    }

    /// Versioning and Object Lock state of the bucket. Errors are recorded, not returned:
    /// a writer role may lack the permission to read either.
    pub async fn bucket_state(&self) -> BucketState {
        let client = self.client().await;
        let bucket = &self.settings.bucket;
        let mut state = BucketState::default();
        match client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => {
                let cfg = out.object_lock_configuration();
                state.object_lock = Some(
                    cfg.and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled),
                );
                state.default_retention = cfg
                    .and_then(|c| c.rule())
                    .and_then(|r| r.default_retention())
                    .map(|d| {
                        let mode = d.mode().map(|m| m.as_str()).unwrap_or("?");
                        match (d.days(), d.years()) {
                            (Some(days), _) => format!("{mode} {days} days"),
                            (_, Some(years)) => format!("{mode} {years} years"),
                            _ => mode.to_string(),
                        }
                    });
            }
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => {
                state.object_lock = Some(false)
            }
            Err(e) => state
                .errors
                .push(format!("object lock: {}", describe_error(&e))),
        }
        match client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => {
                state.versioning = Some(match out.status() {
                    Some(BucketVersioningStatus::Enabled) => "Enabled".into(),
                    Some(BucketVersioningStatus::Suspended) => "Suspended".into(),
                    Some(other) => other.as_str().to_string(),
                    None => "Disabled".into(),
                })
            }
            Err(e) => state
                .errors
                .push(format!("versioning: {}", describe_error(&e))),
        }
        // Object Lock can only be enabled on a versioned bucket (and cannot be suspended), so
        // an enabled lock says what the versioning call may have failed to (some S3-compatible
        // servers answer GetBucketVersioning in a form the SDK rejects).
        if state.versioning.is_none() && state.object_lock == Some(true) {
            state.versioning = Some("Enabled".into());
        }
        state
    }

    /// The Object Lock retention of an object (mode, retain-until as epoch seconds), read with
    /// HeadObject (which every S3-compatible server we test against answers correctly).
    pub async fn retention(&self, name: &str) -> BackendResult<Option<(String, i64)>> {
        let key = self.key(name);
        let out = self
            .client()
            .await
            .head_object()
            .bucket(&self.settings.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| classify("head", name, e))?;
        Ok(
            match (out.object_lock_mode(), out.object_lock_retain_until_date()) {
                (Some(mode), Some(until)) => Some((mode.as_str().to_string(), until.secs())),
                _ => None,
            },
        )
    }

    /// Delete every version of `name` (what a destructive writer would try; used by tests
    /// and `regions check` to show Object Lock holds). Returns the first refusal.
    pub async fn delete_all_versions(&self, name: &str) -> BackendResult<usize> {
        let client = self.client().await;
        let key = self.key(name);
        let out = client
            .list_object_versions()
            .bucket(&self.settings.bucket)
            .prefix(&key)
            .send()
            .await
            .map_err(|e| classify("list versions", name, e))?;
        let mut deleted = 0;
        for v in out.versions() {
            if v.key() != Some(key.as_str()) {
                continue;
            }
            let mut req = client
                .delete_object()
                .bucket(&self.settings.bucket)
                .key(&key);
            if let Some(id) = v.version_id() {
                req = req.version_id(id);
            }
            req.send()
                .await
                .map_err(|e| classify("delete version", name, e))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Time one small round trip (HeadBucket).
    pub async fn ping(&self) -> BackendResult<Duration> {
        let started = Instant::now();
        self.client()
            .await
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await
            .map_err(|e| classify("head bucket", &self.settings.bucket, e))?;
        Ok(started.elapsed())
    }
}

pub use super::s3_get::GET_PART;

/// The SDK error with its whole chain of causes (the top level alone is often just
/// "service error" or "dispatch failure").
fn describe_error<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(e).to_string()
}

/// Map an SDK error onto the backend contract: `NotFound`, permanent or transient.
pub(super) fn classify<E, R>(op: &'static str, name: &str, e: SdkError<E, R>) -> BackendError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let message = describe_error(&e);
    match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            let code = service.err().code().unwrap_or("");
            if status == 404 || matches!(code, "NoSuchKey" | "NotFound") {
                if code == "NoSuchBucket" {
                    return BackendError::permanent(op, name, message);
                }
                return BackendError::NotFound(name.to_string());
            }
            if status >= 500
                || status == 429
                || matches!(
                    code,
                    "SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout"
                )
            {
                BackendError::transient(op, name, message)
            } else {
                BackendError::permanent(op, name, message)
            }
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            BackendError::transient(op, name, message)
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            BackendError::transient(op, name, message)
        }
        // Construction failures and dispatch failures that are not I/O (no credentials found,
        // an invalid endpoint) cannot be helped by retrying.
        _ => BackendError::permanent(op, name, message),
    }
}

/// The HTTP status of a raw response, for [`classify`].
pub(super) trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        let len = data.len() as i64;
        let mut req = self
            .client()
            .await
            .put_object()
            .bucket(&self.settings.bucket)
            .key(self.key(name))
            .content_length(len)
            .body(ByteStream::from(data));
        // Lock and marker objects must stay deletable: a maintenance lock that could not be
        // removed would block every prune until its retention ended.
        let maintenance = name.starts_with(lifeboat_repo::lock::LOCK_PREFIX)
            || name.starts_with(lifeboat_repo::prune::MARK_PREFIX);
        if let Some((mode, until)) = self.retain_until().filter(|_| !maintenance) {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        // The payload is not signed (SigV4 would hash every pack with SHA-256 before sending
        // it, a core's worth of CPU at backup speed on two cores): the upload's CRC32
        // checksum, which the server checks before storing, covers transport, and every
        // object is named by the hash of its bytes, which every reader checks.
        req.customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| classify("put", name, e))?;
        Ok(())
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        match range {
            Some(r) => self.get_one(name, Some(r)).await,
            None => self.get_whole(name).await,
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let mut pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("list", prefix, e))?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| self.name_of(k)) else {
                    continue;
                };
                if !name.starts_with(prefix) {
                    continue;
                }
                out.push(ObjectInfo {
                    name,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o.last_modified().map(|t| t.secs()),
                });
            }
        }
        Ok(out)
    }

    /// On a versioned (Object Lock) bucket this adds a delete marker: the version stays until
    /// the bucket's lifecycle expires noncurrent versions, which is the only permanent
    /// deletion (the maintainer role has no s3:DeleteObjectVersion, see terraform/modules/iam).
    async fn delete(&self, name: &str) -> BackendResult<()> {
        match self
            .client()
            .await
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(self.key(name))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("delete", name, e) {
                BackendError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        let out = self
            .client()
            .await
            .head_object()
            .bucket(&self.settings.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(|e| classify("head", name, e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    fn object_lock_period(&self) -> Option<i64> {
        self.settings
            .object_lock
            .map(|l| i64::from(l.days) * 86_400)
    }

    async fn retain_until(&self, name: &str) -> BackendResult<Option<i64>> {
        Ok(self.retention(name).await?.map(|(_, until)| until))
    }

    /// Object Lock buckets are versioned; others are asked (GetBucketVersioning). On a
    /// versioned bucket, the lifecycle rules (GetBucketLifecycleConfiguration) say when S3
    /// removes a deleted object's noncurrent version: the shortest `noncurrent_days` of an
    /// enabled rule whose filter covers the repository (prefix only: lifeboat tags nothing).
    /// Rules written before `Filter` existed carry the deprecated `Prefix`: read both.
    #[allow(deprecated)]
    async fn after_delete(&self) -> BackendResult<AfterDelete> {
        let client = self.client().await;
        let bucket = &self.settings.bucket;
        if self.settings.object_lock.is_none() {
            match client.get_bucket_versioning().bucket(bucket).send().await {
                Ok(out) if out.status().is_none() => return Ok(AfterDelete::Gone),
                Ok(_) => {}
                Err(e) => {
                    return Ok(AfterDelete::Unknown(format!(
                        "could not read the bucket's versioning ({}): if it is versioned, deleted data stays in noncurrent versions",
                        describe_error(&e)
                    )))
                }
            }
        }
        let repo_prefix = self.key("");
        let days = match client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out
                .rules()
                .iter()
                .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
                .filter(|r| {
                    let f = r.filter();
                    let only_prefix = f.is_none_or(|f| {
                        f.tag().is_none()
                            && f.and().is_none()
                            && f.object_size_greater_than().is_none()
                            && f.object_size_less_than().is_none()
                    });
                    let prefix = f.and_then(|f| f.prefix()).or(r.prefix()).unwrap_or("");
                    only_prefix && repo_prefix.starts_with(prefix)
                })
                .filter_map(|r| r.noncurrent_version_expiration()?.noncurrent_days())
                .filter(|d| *d > 0)
                .min()
                .map(|d| d as u32),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => None,
            Err(e) => {
                return Ok(AfterDelete::Noncurrent {
                    days: None,
                    note: format!(
                        "versioned bucket {bucket}: deleted data stays in noncurrent versions; its lifecycle could not be read ({}; the role needs s3:GetLifecycleConfiguration), so when S3 removes them is not known here (terraform's rule: noncurrent_version_expiration_days)",
                        describe_error(&e)
                    ),
                })
            }
        };
        let note = match days {
            Some(d) => format!(
                "versioned bucket {bucket}: deleted data stays in a noncurrent version until the bucket's lifecycle removes it {d} days after the delete"
            ),
            None => format!(
                "versioned bucket {bucket}: no lifecycle rule expires noncurrent versions, so deleted data stays in them until someone with s3:DeleteObjectVersion removes them"
            ),
        };
        Ok(AfterDelete::Noncurrent { days, note })
    }

    /// PutObjectRetention with the configured mode; never shortens a retention.
    async fn extend_retention(&self, name: &str, until: i64) -> BackendResult<bool> {
        let Some((mode, _)) = self.retain_until() else {
            return Ok(false);
        };
        if self.retention(name).await?.is_some_and(|(_, u)| u >= until) {
            return Ok(true);
        }
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(mode.as_str().into())
            .retain_until_date(DateTime::from_secs(until))
            .build();
        self.client()
            .await
            .put_object_retention()
            .bucket(&self.settings.bucket)
            .key(self.key(name))
            .retention(retention)
            .send()
            .await
            .map_err(|e| classify("put retention", name, e))?;
        Ok(true)
    }

    fn describe(&self) -> String {
        let s = &self.settings;
        let mut d = format!("s3://{}", s.bucket);
        if !s.prefix.is_empty() {
            d.push('/');
            d.push_str(&s.prefix);
        }
        match &s.endpoint {
            Some(e) => d.push_str(&format!(" ({}, {e})", s.region)),
            None => d.push_str(&format!(" ({})", s.region)),
        }
        d
    }
}

//! Retry with exponential backoff, as a wrapper around any backend.
//!
//! This module owns the decision *whether and when to call again*. It retries only errors for
//! which [`BackendError::is_permanent`] is false (timeouts, resets, throttling, 5xx), so a
//! missing object, a denied request or a full disk fails at once instead of after a minute of
//! backoff. Each retry is logged at `warn` with the operation, object and attempt number; the
//! final error is returned unchanged and not logged here, because the caller handles it.
//!
//! Retrying is safe because every backend operation is idempotent: `put` of the same bytes,
//! `delete` of a missing object, and reads all give the same result when repeated.
//!
//! Delays use `tokio::time::sleep`, so tests can run under `tokio::time::pause` without waiting.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use super::{AfterDelete, Backend, BackendResult, ObjectInfo};

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total calls including the first; `0` is treated as `1` (no retries).
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// Upper bound on any one delay, before jitter.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 100 ms doubling, capped at 5 s: 0.75–1.5 s of waiting in total, enough
    /// to ride out a connection reset or brief throttling without stalling a backup for long
    /// on a region that is really down (that region's copy is then healed by `replicate`).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The nominal delay after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`,
    /// capped at `max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay actually slept: uniformly random in `[backoff/2, backoff]` ("equal jitter"),
    /// so that many workers failing together do not retry in lockstep, while each still waits
    /// at least half the nominal delay.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let nominal = self.backoff(attempt);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::thread_rng().gen_range(0..=spread))
    }
}

/// A backend that retries its inner backend's transient failures.
#[derive(Debug)]
pub struct Retry<B: Backend + ?Sized = dyn Backend> {
    inner: Arc<B>,
    policy: RetryPolicy,
}

impl<B: Backend + ?Sized> Retry<B> {
    pub fn new(inner: Arc<B>, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Call `attempt` until it succeeds, fails permanently, or the attempts run out.
    async fn run<T, F, Fut>(&self, op: &'static str, name: &str, mut call: F) -> BackendResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = BackendResult<T>>,
    {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_permanent() || attempt >= max_attempts => return Err(err),
                Err(err) => {
                    let delay = self.policy.jittered(attempt);
                    tracing::warn!(
                        op,
                        object = name,
                        attempt,
                        max_attempts,
                        delay_ms = delay.as_millis() as u64,
                        backend = %self.inner.describe(),
                        error = %err,
                        "transient storage error, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for Retry<B> {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        // `Bytes` clones share one buffer, so each attempt costs no copy.
        self.run("put", name, || self.inner.put(name, data.clone()))
            .await
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        self.run("get", name, || self.inner.get(name, range.clone()))
            .await
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.run("delete", name, || self.inner.delete(name)).await
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.run("head", name, || self.inner.head(name)).await
    }

    /// The inner backend's description: retrying does not change where objects live.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn object_lock_period(&self) -> Option<i64> {
        self.inner.object_lock_period()
    }

    async fn after_delete(&self) -> BackendResult<AfterDelete> {
        self.inner.after_delete().await
    }

    async fn retain_until(&self, name: &str) -> BackendResult<Option<i64>> {
        self.run("head", name, || self.inner.retain_until(name))
            .await
    }

    async fn extend_retention(&self, name: &str, until: i64) -> BackendResult<bool> {
        self.run("put retention", name, || {
            self.inner.extend_retention(name, until)
        })
        .await
    }

    async fn clean_temp(&self, older_than: Duration) -> BackendResult<usize> {
        self.run("clean", "", || self.inner.clean_temp(older_than))
            .await
    }
}

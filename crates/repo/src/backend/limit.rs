//! A bound on in-flight operations per backend, as a wrapper.
//!
//! This module owns *how many calls may be outstanding at once* against one backend. Packs
//! are uploaded to every region concurrently; without a bound, a fast source could open
//! hundreds of simultaneous 16 MiB uploads, exhausting memory, file descriptors or the
//! provider's request rate. A tokio [`Semaphore`] holds one permit per operation for the
//! whole call (including a `list`'s full pagination), and waiters are served in FIFO order.
//!
//! Put this wrapper *inside* [`Retry`](super::Retry) (`Retry(ConcurrencyLimit(backend))`) so a
//! backing-off call releases its permit while it sleeps.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{AfterDelete, Backend, BackendError, BackendResult, ObjectInfo};

/// A backend that lets at most `limit` operations reach its inner backend at a time.
#[derive(Debug)]
pub struct ConcurrencyLimit<B: Backend + ?Sized = dyn Backend> {
    inner: Arc<B>,
    permits: Semaphore,
    limit: usize,
}

impl<B: Backend + ?Sized> ConcurrencyLimit<B> {
    /// `limit` is clamped to at least 1 (a limit of 0 would deadlock every caller).
    pub fn new(inner: Arc<B>, limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        ConcurrencyLimit {
            inner,
            permits: Semaphore::new(limit),
            limit,
        }
    }

    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Operations currently holding a permit.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    async fn permit(&self, op: &'static str, name: &str) -> BackendResult<SemaphorePermit<'_>> {
        // The semaphore is never closed, so this cannot fail; map it rather than unwrap.
        self.permits
            .acquire()
            .await
            .map_err(|_| BackendError::permanent(op, name, "concurrency limiter closed"))
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for ConcurrencyLimit<B> {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        let _permit = self.permit("put", name).await?;
        self.inner.put(name, data).await
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        let _permit = self.permit("get", name).await?;
        self.inner.get(name, range).await
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let _permit = self.permit("list", prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        let _permit = self.permit("delete", name).await?;
        self.inner.delete(name).await
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        let _permit = self.permit("head", name).await?;
        self.inner.head(name).await
    }

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
        let _permit = self.permit("head", name).await?;
        self.inner.retain_until(name).await
    }

    async fn extend_retention(&self, name: &str, until: i64) -> BackendResult<bool> {
        let _permit = self.permit("put retention", name).await?;
        self.inner.extend_retention(name, until).await
    }

    async fn clean_temp(&self, older_than: Duration) -> BackendResult<usize> {
        let _permit = self.permit("clean", "").await?;
        self.inner.clean_temp(older_than).await
    }
}

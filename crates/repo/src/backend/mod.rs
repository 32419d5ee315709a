//! Storage backends: where a repository's objects live.
//!
//! A [`Backend`] is deliberately tiny. Everything lifeboat needs from a region is expressed
//! with five operations over flat, `/`-separated object names (`config`, `data/ab/abcd…`).
//! Cross-cutting behaviour (retry, concurrency limits, fault injection) is added by wrapping
//! a backend in another backend, never by flags inside one.
//!
//! # Contract (every implementation, checked by [`conformance`])
//!
//! * `put(name, bytes)` is **atomic**: a reader sees either no object or the whole object,
//!   never a prefix. It is **idempotent** for identical content: putting the same bytes to
//!   an existing name succeeds. Putting *different* bytes to an existing name replaces it
//!   (lifeboat never does this for content-addressed objects).
//! * After `put` returns, `get`, `head` and `list` see the object (read-after-write).
//! * `get(name, range)` returns the whole object or the byte range `start..start+len`
//!   (clamped to the object's end). A missing object is [`BackendError::NotFound`].
//! * `list(prefix)` returns every object whose name starts with `prefix`, with its size, in
//!   no particular order. A prefix that matches nothing yields an empty list.
//! * `delete(name)` removes the object; deleting a missing object is not an error.
//! * `head(name)` returns the object's size, or `NotFound`.
//! * `list` reports each object's last modification (`modified`, seconds since the epoch)
//!   when the store knows it; prune uses it so it never touches an object a running backup
//!   may have written moments ago.
//! * Object Lock (optional, default "not supported"): `retain_until(name)` is the retain-until
//!   date of the object's current version, `extend_retention` moves it later. Stores without
//!   a lock answer `None` and do nothing.
//! * `clean_temp(older_than)` removes leftovers of interrupted `put`s older than the given age
//!   (stores whose puts cannot leave any answer 0).
//!
//! Errors say whether retrying can help: [`BackendError::is_permanent`]. The retry wrapper
//! retries only transient errors, with exponential backoff.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod fault;
pub mod limit;
pub mod local;
pub mod memory;
pub mod retry;

/// The contract as a test suite, for this crate's tests and lifeboat's S3 tests: only with
/// the non-default `conformance` feature, which their dev-dependencies turn on, so
/// production builds carry neither the suite nor its `anyhow`/`tempfile` dependencies.
#[cfg(feature = "conformance")]
pub mod conformance;

pub use fault::{Fault, FaultInjector};
pub use limit::ConcurrencyLimit;
pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use retry::{Retry, RetryPolicy};

/// One object as seen by `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// Last modification, seconds since the Unix epoch; `None` when the store cannot say.
    pub modified: Option<i64>,
}

impl ObjectInfo {
    pub fn new(name: impl Into<String>, size: u64, modified: Option<i64>) -> ObjectInfo {
        ObjectInfo {
            name: name.into(),
            size,
            modified,
        }
    }
}

/// Why a backend operation failed, classified for callers that must branch.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// Retrying cannot help: bad credentials, access denied, invalid request, full disk.
    #[error("{op} {name}: {message}")]
    Permanent {
        op: &'static str,
        name: String,
        message: String,
    },
    /// Retrying may help: timeouts, connection resets, throttling, 5xx.
    #[error("{op} {name}: {message} (transient)")]
    Transient {
        op: &'static str,
        name: String,
        message: String,
    },
}

impl BackendError {
    /// True when retrying the same call cannot succeed. `NotFound` is permanent.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, BackendError::Transient { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound(_))
    }

    pub fn permanent(
        op: &'static str,
        name: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        BackendError::Permanent {
            op,
            name: name.into(),
            message: message.to_string(),
        }
    }

    pub fn transient(
        op: &'static str,
        name: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        BackendError::Transient {
            op,
            name: name.into(),
            message: message.to_string(),
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// What a `delete` leaves behind in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterDelete {
    /// The bytes are gone.
    Gone,
    /// A versioned bucket: a delete adds a delete marker and the bytes stay in a noncurrent
    /// version, which the bucket's lifecycle removes `days` after the delete (`None`: no rule
    /// that does so was found). `note` says where that came from, in words.
    Noncurrent { days: Option<u32>, note: String },
    /// Not known (the store's settings could not be read); the text says why.
    Unknown(String),
}

/// A flat object store. See the module documentation for the contract.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Atomically store `data` under `name`.
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()>;
    /// Read the whole object, or `range` of it (clamped to the object's end).
    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes>;
    /// Every object whose name starts with `prefix`.
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;
    /// Remove an object; missing objects are not an error.
    async fn delete(&self, name: &str) -> BackendResult<()>;
    /// The size of an object, or `NotFound`.
    async fn head(&self, name: &str) -> BackendResult<u64>;
    /// A short human description for messages, e.g. `local:/var/lib/lifeboat/us-east-2`.
    fn describe(&self) -> String;
    /// Object Lock: how long new objects are locked for (seconds), `None` without a lock.
    fn object_lock_period(&self) -> Option<i64> {
        None
    }
    /// Object Lock: when the current version of `name` may be deleted (epoch seconds), or
    /// `None` when it is not locked (or the store has no locks).
    async fn retain_until(&self, name: &str) -> BackendResult<Option<i64>> {
        let _ = name;
        Ok(None)
    }
    /// Object Lock: keep `name` locked until at least `until` (never shortens). Returns
    /// whether the store has locks at all (false: nothing was done).
    async fn extend_retention(&self, name: &str, until: i64) -> BackendResult<bool> {
        let _ = (name, until);
        Ok(false)
    }
    /// What deleting an object leaves behind (erasure receipts say it).
    async fn after_delete(&self) -> BackendResult<AfterDelete> {
        Ok(AfterDelete::Gone)
    }
    /// Remove leftovers of interrupted `put`s older than `older_than`; how many went.
    async fn clean_temp(&self, older_than: Duration) -> BackendResult<usize> {
        let _ = older_than;
        Ok(0)
    }
}

pub type DynBackend = Arc<dyn Backend>;

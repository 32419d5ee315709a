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
//!
//! Errors say whether retrying can help: [`BackendError::is_permanent`]. The retry wrapper
//! retries only transient errors, with exponential backoff.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

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
}

pub type DynBackend = Arc<dyn Backend>;

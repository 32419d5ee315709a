//! The in-memory backend: a map from object name to bytes, for tests and dry runs.
//!
//! It keeps the whole [`Backend`](super::Backend) contract, trivially: every operation takes
//! one lock, so `put` is atomic and read-after-write holds. It rejects the same names as the
//! local backend ([`validate_object_name`]) so that a bug producing a bad name shows up in fast
//! tests too, not only on disk. The `raw`/`set_raw`/`names` accessors bypass the contract on
//! purpose: tests use them to inspect stored bytes and to corrupt objects.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use super::local::validate_object_name;
use super::{Backend, BackendError, BackendResult, ObjectInfo};

/// Objects held in a `BTreeMap` behind a mutex. Not shared between instances.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    /// Name → (bytes, modification time in epoch seconds).
    objects: Mutex<BTreeMap<String, (Bytes, i64)>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored bytes of `name`, bypassing the backend interface (and any wrappers).
    pub fn raw(&self, name: &str) -> Option<Bytes> {
        self.lock().get(name).map(|(b, _)| b.clone())
    }

    /// Store bytes without any checks, e.g. to corrupt an object in a test.
    pub fn set_raw(&self, name: impl Into<String>, bytes: impl Into<Bytes>) {
        self.lock()
            .insert(name.into(), (bytes.into(), crate::clock::now_secs()));
    }

    /// Every stored name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Pretend `name` was last written at `secs` (epoch seconds), e.g. to age it past a
    /// grace period in a test.
    pub fn set_modified(&self, name: &str, secs: i64) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.1 = secs;
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (Bytes, i64)>> {
        // A panic while holding the lock cannot leave the map half-updated (every operation
        // is a single insert, remove or read), so a poisoned lock is still consistent.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn check(op: &'static str, name: &str) -> BackendResult<()> {
    validate_object_name(name).map_err(|why| BackendError::permanent(op, name, why))
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        check("put", name)?;
        self.lock()
            .insert(name.to_string(), (data, crate::clock::now_secs()));
        Ok(())
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        check("get", name)?;
        let data = self
            .lock()
            .get(name)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| BackendError::NotFound(name.to_string()))?;
        let Some(range) = range else {
            return Ok(data);
        };
        if range.start > range.end {
            return Err(BackendError::permanent(
                "get",
                name,
                format!("invalid range {}..{}", range.start, range.end),
            ));
        }
        let len = data.len();
        let clamp = |at: u64| usize::try_from(at).map_or(len, |at| at.min(len));
        Ok(data.slice(clamp(range.start)..clamp(range.end)))
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let objects = self.lock();
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, (data, modified))| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
                modified: Some(*modified),
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        check("delete", name)?;
        self.lock().remove(name);
        Ok(())
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        check("head", name)?;
        self.lock()
            .get(name)
            .map(|(data, _)| data.len() as u64)
            .ok_or_else(|| BackendError::NotFound(name.to_string()))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

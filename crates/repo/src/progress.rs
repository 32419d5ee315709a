//! Counters a long operation updates and a front end (progress bar, metrics) reads.
//! Lock-free so hot loops can bump them; nothing here renders anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Progress {
    /// Work expected in total (bytes), when known; 0 when unknown.
    pub total_bytes: AtomicU64,
    /// Work done so far (bytes read for a backup, written for a restore).
    pub done_bytes: AtomicU64,
    pub files: AtomicU64,
    /// Bytes stored in regions (uploaded, or for a restore downloaded).
    pub transferred_bytes: AtomicU64,
}

impl Progress {
    pub fn add_done(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_transferred(&self, n: u64) {
        self.transferred_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_total(&self, n: u64) {
        self.total_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.done_bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
            self.transferred_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A cancellation flag shared by every stage of an operation.
#[derive(Debug, Default, Clone)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::RepoError::Cancelled)
        } else {
            Ok(())
        }
    }
}

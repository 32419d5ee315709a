//! Counters a long operation updates and a front end (progress bar, metrics) reads.
//! Lock-free so hot loops can bump them; nothing here renders anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Progress {
    /// Work expected in total (bytes), when known; 0 when unknown.
    pub total_bytes: AtomicU64,
    /// Work done so far (bytes read for a backup, written for a restore).
    pub done_bytes: AtomicU64,
    pub files: AtomicU64,
    /// Bytes stored in regions (uploaded, or for a restore downloaded).
    pub transferred_bytes: AtomicU64,
    /// Someone shows these counters as they change (a progress bar): work done only to
    /// improve the display (a source's size estimate for the ETA) is worth doing.
    watched: AtomicBool,
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
    /// Say that these counters are being shown live (see [`Progress::is_watched`]).
    pub fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }
    /// Is anyone showing these counters live? A backup nobody watches (cron, `--json`,
    /// the daemon) skips the size estimate walk: only an ETA would use it.
    pub fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Relaxed)
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

/// Cancellation shared by every stage of an operation: hot loops poll [`Cancel::check`],
/// async waits select on [`Cancel::cancelled`] (a `tokio_util` `CancellationToken`, so no
/// one polls a flag on a timer), and [`Cancel::child`] scopes a cancellation (one attempt
/// of a run) that its parent's cancellation reaches too.
#[derive(Debug, Default, Clone)]
pub struct Cancel(CancellationToken);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }
    pub fn cancel(&self) {
        self.0.cancel()
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::RepoError::Cancelled)
        } else {
            Ok(())
        }
    }
    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }
    /// A cancellation of its own that this one's also triggers.
    pub fn child(&self) -> Cancel {
        Cancel(self.0.child_token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_parent_cancels_its_children_and_not_the_reverse() {
        let parent = Cancel::new();
        let child = parent.child();
        child.cancel();
        assert!(child.is_cancelled() && !parent.is_cancelled());
        let other = parent.child();
        let waiter = tokio::spawn({
            let other = other.clone();
            async move { other.cancelled().await }
        });
        parent.cancel();
        waiter.await.unwrap();
        assert!(other.is_cancelled());
        assert!(matches!(other.check(), Err(crate::RepoError::Cancelled)));
    }
}

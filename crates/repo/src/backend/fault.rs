//! Fault injection, as a wrapper: make a healthy backend fail on purpose.
//!
//! This module owns the faults lifeboat is tested and drilled against: a region that is down,
//! a burst of transient errors, a region that dies in the middle of a backup, corrupt reads,
//! hung calls and slow calls. Tests use it to prove that "nothing is lost on faults"
//! (DESIGN.md, principle 5); drills use [`Fault::Down`] to simulate a region outage.
//!
//! A [`FaultInjector`] is a cheap, clonable *handle*: every clone shares the same fault set
//! and call counters, so a test keeps one clone and changes faults while another clone is in
//! use as the backend (`Arc::new(injector.clone()) as DynBackend`). Several faults can be
//! active at once; they are checked in the order they were injected and the first that fails
//! a call wins (later ones do not consume their counts for that call).
//!
//! Every future returned by the injector stays cancellable: [`Fault::Hang`] and
//! [`Fault::Delay`] wait on tokio primitives, so dropping the future (a timeout) ends the call.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::{AfterDelete, Backend, BackendError, BackendResult, DynBackend, ObjectInfo};

/// A backend operation, for targeting faults and counting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Head,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Put, Op::Get, Op::List, Op::Delete, Op::Head];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Head => "head",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way to make calls fail or misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails with a transient "region down" error, until cleared: an outage.
    Down,
    /// The next `count` calls (of `op`, or of any operation when `None`) fail, permanently or
    /// transiently. The fault removes itself once spent.
    FailNext {
        op: Option<Op>,
        count: u32,
        permanent: bool,
    },
    /// The first `after` puts of names starting with `prefix` succeed; every later one fails
    /// permanently. Kills a region in the middle of a backup at a chosen point.
    FailPutsMatching { prefix: String, after: u32 },
    /// Successful gets of names starting with `prefix` return data with one byte flipped
    /// (the middle one). The stored object is untouched.
    CorruptGets { prefix: String },
    /// Calls wait until this fault is cleared, or forever; dropping the future cancels them.
    Hang,
    /// Calls wait this long before reaching the inner backend.
    Delay(Duration),
}

/// A fault with the progress it needs (how many matching puts it has let through).
#[derive(Debug)]
struct Active {
    fault: Fault,
    seen: u32,
}

#[derive(Debug)]
struct State {
    faults: Mutex<Vec<Active>>,
    calls: [AtomicU64; 5],
    /// Bumped on every change of `faults`, to wake calls waiting under `Fault::Hang`.
    generation: watch::Sender<u64>,
}

/// What to do with one call, decided under the lock.
#[derive(Default)]
struct Decision {
    delay: Duration,
    error: Option<BackendError>,
    corrupt: bool,
}

/// A backend wrapper whose faults can be changed while it is in use. Clones share state.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    inner: DynBackend,
    state: Arc<State>,
}

impl FaultInjector {
    /// Wrap `inner` with no faults active.
    pub fn new(inner: DynBackend) -> Self {
        let (generation, _) = watch::channel(0);
        let state = State {
            faults: Mutex::new(Vec::new()),
            calls: Default::default(),
            generation,
        };
        FaultInjector {
            inner,
            state: Arc::new(state),
        }
    }

    pub fn inner(&self) -> &DynBackend {
        &self.inner
    }

    /// Add a fault to the active set.
    pub fn inject(&self, fault: Fault) {
        self.faults().push(Active { fault, seen: 0 });
        self.changed();
    }

    /// Remove every fault; calls hung by [`Fault::Hang`] proceed.
    pub fn clear(&self) {
        self.faults().clear();
        self.changed();
    }

    /// The active faults, with `FailNext` counts showing what is left.
    pub fn active(&self) -> Vec<Fault> {
        self.faults().iter().map(|a| a.fault.clone()).collect()
    }

    /// How many calls of `op` reached the injector (failed ones included) since it was created.
    pub fn calls(&self, op: Op) -> u64 {
        self.state.calls[op.index()].load(Ordering::SeqCst)
    }

    fn faults(&self) -> MutexGuard<'_, Vec<Active>> {
        // Every critical section leaves the vector consistent, so poisoning carries no risk.
        self.state
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.state
            .generation
            .send_modify(|g| *g = g.wrapping_add(1));
    }

    fn hanging(&self) -> bool {
        self.faults().iter().any(|a| a.fault == Fault::Hang)
    }

    /// Count the call, wait out `Hang` and `Delay`, and return what the call must do.
    async fn gate(&self, op: Op, name: &str) -> BackendResult<bool> {
        self.state.calls[op.index()].fetch_add(1, Ordering::SeqCst);
        let mut changes = self.state.generation.subscribe();
        while self.hanging() {
            if changes.changed().await.is_err() {
                // Unreachable while `self` holds the sender; hang as the fault asked.
                std::future::pending::<()>().await;
            }
        }
        let plan = self.decide(op, name);
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        match plan.error {
            Some(err) => Err(err),
            None => Ok(plan.corrupt),
        }
    }

    fn decide(&self, op: Op, name: &str) -> Decision {
        let mut plan = Decision::default();
        let mut faults = self.faults();
        for active in faults.iter_mut() {
            match &mut active.fault {
                Fault::Delay(d) => plan.delay += *d,
                Fault::CorruptGets { prefix } => {
                    plan.corrupt |= op == Op::Get && name.starts_with(prefix.as_str())
                }
                Fault::Hang => {}
                _ if plan.error.is_some() => {}
                Fault::Down => {
                    plan.error = Some(BackendError::transient(
                        op.as_str(),
                        name,
                        "region down (injected fault)",
                    ));
                }
                Fault::FailNext {
                    op: target,
                    count,
                    permanent,
                } => {
                    if *count > 0 && target.is_none_or(|t| t == op) {
                        *count -= 1;
                        let message = "injected failure";
                        plan.error = Some(if *permanent {
                            BackendError::permanent(op.as_str(), name, message)
                        } else {
                            BackendError::transient(op.as_str(), name, message)
                        });
                    }
                }
                Fault::FailPutsMatching { prefix, after } => {
                    if op == Op::Put && name.starts_with(prefix.as_str()) {
                        active.seen = active.seen.saturating_add(1);
                        if active.seen > *after {
                            plan.error = Some(BackendError::permanent(
                                "put",
                                name,
                                format!(
                                    "injected: puts under {prefix:?} fail after the first {after}"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let before = faults.len();
        faults.retain(|a| !matches!(a.fault, Fault::FailNext { count: 0, .. }));
        let spent = faults.len() != before;
        drop(faults);
        if spent {
            self.changed();
        }
        plan
    }
}

/// Flip the middle byte, so the data keeps its length but fails any checksum.
fn corrupt(data: Bytes) -> Bytes {
    if data.is_empty() {
        return data;
    }
    let mut bytes = data.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    Bytes::from(bytes)
}

#[async_trait]
impl Backend for FaultInjector {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        self.gate(Op::Put, name).await?;
        self.inner.put(name, data).await
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> BackendResult<Bytes> {
        let corrupting = self.gate(Op::Get, name).await?;
        let data = self.inner.get(name, range).await?;
        Ok(if corrupting { corrupt(data) } else { data })
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.gate(Op::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.gate(Op::Delete, name).await?;
        self.inner.delete(name).await
    }

    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.gate(Op::Head, name).await?;
        self.inner.head(name).await
    }

    fn describe(&self) -> String {
        format!("{} (fault injection)", self.inner.describe())
    }

    fn object_lock_period(&self) -> Option<i64> {
        self.inner.object_lock_period()
    }

    async fn after_delete(&self) -> BackendResult<AfterDelete> {
        self.inner.after_delete().await
    }

    async fn retain_until(&self, name: &str) -> BackendResult<Option<i64>> {
        self.gate(Op::Head, name).await?;
        self.inner.retain_until(name).await
    }

    async fn extend_retention(&self, name: &str, until: i64) -> BackendResult<bool> {
        self.gate(Op::Put, name).await?;
        self.inner.extend_retention(name, until).await
    }

    async fn clean_temp(&self, older_than: std::time::Duration) -> BackendResult<usize> {
        self.gate(Op::Delete, "").await?;
        self.inner.clean_temp(older_than).await
    }
}

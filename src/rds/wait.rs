//! Waiting on RDS: lifeboat's own polling loop (a few seconds between polls, not the SDK
//! waiters' 30–120 s), a timeout per step, cancellation between polls, progress lines.
//! A describe call that fails is retried on the next poll; three failures in a row end
//! the wait.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use lifeboat_repo::{Cancel, RepoError};

use super::{Instance, Rds, Snapshot};

/// Where progress lines go (a terminal, a log); `None` drops them.
pub type Report = Option<Arc<dyn Fn(&str) + Send + Sync>>;

/// How one step waits.
#[derive(Clone)]
pub struct Waiter {
    pub poll: Duration,
    pub timeout: Duration,
    pub cancel: Cancel,
    pub report: Report,
}

/// A step that did not finish within its timeout.
#[derive(Debug, thiserror::Error)]
#[error("{what}: still {last} after {} (the step's timeout); lifeboat stopped waiting", humantime::format_duration(*.after))]
pub struct TimedOut {
    pub what: String,
    pub last: String,
    pub after: Duration,
}

/// One poll's answer.
pub enum Check<T> {
    Done(T),
    /// Still going; the status line to show.
    Pending(String),
    /// Will never finish; why.
    Failed(String),
}

const MAX_POLL_ERRORS: u32 = 3;

impl Waiter {
    /// The plan's cadence and timeout; progress on stderr when it is a terminal, else in
    /// the log (info).
    pub fn of(src: &crate::config::RdsSource, cancel: Cancel) -> Waiter {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let report: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |line: &str| {
            if terminal {
                eprintln!("  {line}");
            } else {
                tracing::info!("{line}");
            }
        });
        Waiter {
            poll: src.poll_interval,
            timeout: src.timeout,
            cancel,
            report: Some(report),
        }
    }

    fn say(&self, line: &str) {
        if let Some(r) = &self.report {
            r(line);
        }
    }

    /// Poll `check` until it is done, fails, the timeout passes or the wait is cancelled.
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Check<T>>>,
    {
        let started = Instant::now();
        let mut errors = 0;
        let mut last = String::from("pending");
        loop {
            if self.cancel.is_cancelled() {
                return Err(anyhow::Error::new(RepoError::Cancelled)
                    .context(format!("{what}: interrupted while waiting")));
            }
            match check().await {
                Ok(Check::Done(v)) => return Ok(v),
                Ok(Check::Failed(why)) => anyhow::bail!("{what}: {why}"),
                Ok(Check::Pending(status)) => {
                    errors = 0;
                    if status != last {
                        self.say(&format!("{what}: {status}"));
                    }
                    last = status;
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_POLL_ERRORS {
                        return Err(e.context(format!("{what}: {errors} polls in a row failed")));
                    }
                    tracing::warn!(error = %format!("{e:#}"), "{what}: poll failed; trying again");
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= self.timeout {
                return Err(TimedOut {
                    what: what.to_string(),
                    last,
                    after: self.timeout,
                }
                .into());
            }
            self.sleep((self.timeout - elapsed).min(self.poll)).await;
        }
    }

    /// Sleep, waking early when cancelled.
    async fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.cancel.is_cancelled() {
            let now = Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
        }
    }
}

/// Snapshot states from which it never becomes available.
const SNAPSHOT_FAILED: &[&str] = &[
    "failed",
    "deleted",
    "deleting",
    "incompatible-restore",
    "incompatible-parameters",
    "error",
];
const INSTANCE_FAILED: &[&str] = &[
    "failed",
    "deleting",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "storage-full",
    "inaccessible-encryption-credentials",
];

/// Wait until snapshot `id` of `region` is `available`.
pub async fn snapshot_available(
    rds: &dyn Rds,
    region: &str,
    id: &str,
    w: &Waiter,
) -> Result<Snapshot> {
    let what = format!("snapshot {id} in {region}");
    w.until(&what, || async {
        Ok(match rds.describe_snapshot(region, id).await? {
            None => Check::Failed("it no longer exists".into()),
            Some(s) if s.status == "available" => Check::Done(s),
            Some(s) if SNAPSHOT_FAILED.contains(&s.status.as_str()) => {
                Check::Failed(format!("RDS reports it {}", s.status))
            }
            Some(s) => Check::Pending(match s.percent {
                Some(p) => format!("{} {p}%", s.status),
                None => s.status,
            }),
        })
    })
    .await
}

/// Wait until instance `id` of `region` is `available`.
pub async fn instance_available(
    rds: &dyn Rds,
    region: &str,
    id: &str,
    w: &Waiter,
) -> Result<Instance> {
    let what = format!("instance {id} in {region}");
    w.until(&what, || async {
        Ok(match rds.describe_instance(region, id).await? {
            None => Check::Failed("it no longer exists".into()),
            Some(i) if i.status == "available" => Check::Done(i),
            Some(i) if INSTANCE_FAILED.contains(&i.status.as_str()) => {
                Check::Failed(format!("RDS reports it {}", i.status))
            }
            Some(i) => Check::Pending(i.status),
        })
    })
    .await
}

/// Wait until instance `id` of `region` is gone.
pub async fn instance_deleted(rds: &dyn Rds, region: &str, id: &str, w: &Waiter) -> Result<()> {
    let what = format!("deleting instance {id} in {region}");
    w.until(&what, || async {
        Ok(match rds.describe_instance(region, id).await? {
            None => Check::Done(()),
            Some(i) => Check::Pending(i.status),
        })
    })
    .await
}

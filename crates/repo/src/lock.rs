//! The maintenance lock: one `locks/<random id>` object per holder in every region, so that
//! two prunes (or a prune and an erasure) never run at once. Backups never take it: they
//! are made safe against a concurrent prune by its grace period instead (see `prune`).
//!
//! Stores offer no compare-and-swap, so the lock is taken in two steps: write our lock
//! object, then list `locks/`. If another unexpired lock exists, the older one (by creation
//! time, then name) wins and the younger removes its own object and refuses. With
//! read-after-write listings, two holders can never both win. A lock carries an expiry and is
//! refreshed while held, so a holder killed with SIGKILL blocks others only until it expires.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::DynBackend;
use crate::error::{RepoError, Result};
use crate::Repository;

pub const LOCK_PREFIX: &str = "locks/";
/// Prune markers (`marks/<pack id>`), here beside the lock because backups and erasure read
/// them too: see `prune`.
pub const MARK_PREFIX: &str = "marks/";
/// How long a lock lives without a refresh.
pub const LOCK_TTL: i64 = 30 * 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub holder: String,
    /// Host and process of the holder: a lock of a dead process on this host is stale.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    pub operation: String,
    pub created: i64,
    pub expires: i64,
}

/// A held maintenance lock. Dropping it stops the refresh; call [`release`](Self::release)
/// to remove the objects at once (otherwise they expire).
#[derive(Debug)]
pub struct MaintenanceLock {
    name: String,
    backends: Vec<DynBackend>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

fn now() -> i64 {
    crate::clock::now_secs()
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The holder ran on this host and its process is gone (killed, crashed).
fn is_dead_here(other: &LockInfo) -> bool {
    if other.pid == 0 || other.host.is_empty() || other.host != this_host() {
        return false;
    }
    let path = format!("/proc/{}", other.pid);
    !std::path::Path::new(&path).exists()
}

impl MaintenanceLock {
    /// Take the lock in every available region, or fail naming the current holder.
    pub async fn acquire(repo: &Repository, holder: &str, operation: &str) -> Result<Self> {
        let backends: Vec<DynBackend> = repo
            .read_order()
            .into_iter()
            .map(|i| repo.regions[i].backend.clone())
            .collect();
        let created = now();
        let name = format!("{LOCK_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()));
        let info = LockInfo {
            host: this_host(),
            pid: std::process::id(),
            holder: holder.to_string(),
            operation: operation.to_string(),
            created,
            expires: created + LOCK_TTL,
        };
        let body =
            Bytes::from(serde_json::to_vec(&info).map_err(|e| RepoError::Invalid(e.to_string()))?);
        for b in &backends {
            b.put(&name, body.clone()).await?;
        }
        let lock = MaintenanceLock {
            name: name.clone(),
            backends: backends.clone(),
            refresher: None,
        };
        for b in &backends {
            for o in b.list(LOCK_PREFIX).await? {
                if o.name == name {
                    continue;
                }
                let other = match b.get(&o.name, None).await {
                    Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).ok(),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let Some(other) = other else {
                    continue; // unreadable: treated like an expired lock, never blocks forever
                };
                if !other.is_live() {
                    // Expired: its holder died. Remove it when the store lets us.
                    let _ = b.delete(&o.name).await;
                    continue;
                }
                if (other.created, o.name.as_str()) < (created, name.as_str()) {
                    lock.release().await;
                    return Err(RepoError::Invalid(format!(
                        "the repository is locked for maintenance by {} ({}, since {}, expires {}): another prune or erasure is running; try again after it ends (a lock whose holder died expires on its own)",
                        other.holder, other.operation, other.created, other.expires
                    )));
                }
            }
        }
        let mut lock = lock;
        let (n, bs) = (name, backends);
        lock.refresher = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs((LOCK_TTL / 3) as u64)).await;
                let info = LockInfo {
                    expires: now() + LOCK_TTL,
                    ..info.clone()
                };
                if let Ok(body) = serde_json::to_vec(&info) {
                    for b in &bs {
                        if let Err(e) = b.put(&n, Bytes::from(body.clone())).await {
                            tracing::warn!(error = %e, "could not refresh the maintenance lock");
                        }
                    }
                }
            }
        }));
        Ok(lock)
    }

    /// Remove the lock objects (errors only logged: the lock expires anyway).
    pub async fn release(mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        for b in &self.backends {
            if let Err(e) = b.delete(&self.name).await {
                tracing::warn!(error = %e, "could not remove the maintenance lock; it expires on its own");
            }
        }
    }
}

impl Drop for MaintenanceLock {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
    }
}

impl LockInfo {
    /// Still held: not expired, and not left by a dead process on this host.
    fn is_live(&self) -> bool {
        self.expires > now() && !is_dead_here(self)
    }
}

/// The maintenance lock someone holds now, if any (read from the first region whose
/// listing answers). For schedulers that wait instead of failing; [`MaintenanceLock::acquire`]
/// stays the only guarantee.
pub async fn current(repo: &Repository) -> Result<Option<LockInfo>> {
    for i in repo.read_order() {
        let b = &repo.regions[i].backend;
        let Ok(objects) = b.list(LOCK_PREFIX).await else {
            continue;
        };
        for o in objects {
            let info = match b.get(&o.name, None).await {
                Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).ok(),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            if let Some(info) = info.filter(LockInfo::is_live) {
                return Ok(Some(info));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// Packs carrying a prune marker in any available region.
pub async fn marked_packs(repo: &Repository) -> Result<std::collections::HashSet<crate::Id>> {
    let mut out = std::collections::HashSet::new();
    for (_, objects) in repo.list_everywhere(MARK_PREFIX).await?.0 {
        out.extend(objects.iter().filter_map(|o| mark_id(&o.name)));
    }
    Ok(out)
}

pub(crate) fn mark_id(name: &str) -> Option<crate::Id> {
    name.strip_prefix(MARK_PREFIX)?;
    crate::Id::from_object_name(name).ok()
}

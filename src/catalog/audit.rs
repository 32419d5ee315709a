//! The audit trail: who read, restored or changed backups, what, when, and the outcome.
//!
//! Entries are append-only and hash-chained: entry `n` stores the hash of entry `n - 1` and
//! its own hash, BLAKE3 over its fields and that previous hash. Changing any field of any
//! entry, or deleting an entry other than the newest, breaks the chain and [`verify`]
//! names the first entry where it breaks. Deleting the newest entries cannot be seen from
//! the chain alone; compare the head (`audit --verify` prints it) with a copy kept
//! elsewhere (a log shipper or SIEM receives every entry as it is written).

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::any::AnyRow;

use super::{get_i64, get_opt_str, get_str, Catalog};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: i64,
    pub os_user: String,
    /// The AWS principal when known (role ARN or profile from the environment).
    pub principal: Option<String>,
    pub host: String,
    /// The command as run, e.g. `restore app-data --from us-east-2 --to /srv/restore`.
    pub command: String,
    /// What it acted on (a plan, a region), when there is one.
    pub target: Option<String>,
    /// `ok`, `degraded`, `failed: …`, `exit N`.
    pub outcome: String,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// What a caller says about one action; who and when are filled in by [`Catalog::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub command: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A break in the chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainProblem {
    pub seq: i64,
    pub message: String,
}

impl AuditEvent {
    fn compute_hash(&self) -> String {
        let fields = serde_json::json!([
            self.seq,
            self.at,
            self.os_user,
            self.principal,
            self.host,
            self.command,
            self.target,
            self.outcome,
            self.detail,
            self.prev_hash,
        ]);
        let mut h = blake3::Hasher::new_derive_key("lifeboat audit event v1");
        h.update(fields.to_string().as_bytes());
        h.finalize().to_hex().to_string()
    }
}

/// The OS user running this process: the name of the real uid (from /etc/passwd), and the
/// invoking user when run through sudo. Not taken from $USER, which anyone can set.
pub fn os_user() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    match std::env::var("SUDO_USER") {
        Ok(sudo) if !sudo.is_empty() => format!("{name} (sudo by {sudo})"),
        _ => name,
    }
}

/// The AWS principal when the environment names one: `LIFEBOAT_AWS_PRINCIPAL`, else the
/// role of web-identity credentials (`AWS_ROLE_ARN`), else the profile (`AWS_PROFILE`).
/// Credentials themselves are never read here.
pub fn aws_principal() -> Option<String> {
    for var in ["LIFEBOAT_AWS_PRINCIPAL", "AWS_ROLE_ARN"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| format!("profile {p}"))
}

fn event(row: &AnyRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        seq: get_i64(row, "seq")?,
        at: get_i64(row, "at")?,
        os_user: get_str(row, "os_user")?,
        principal: get_opt_str(row, "principal")?,
        host: get_str(row, "host")?,
        command: get_str(row, "command")?,
        target: get_opt_str(row, "target")?,
        outcome: get_str(row, "outcome")?,
        detail: get_opt_str(row, "detail")?,
        prev_hash: get_str(row, "prev_hash")?,
        hash: get_str(row, "hash")?,
    })
}

impl Catalog {
    /// Append an entry to the chain. Concurrent writers race for the next sequence number;
    /// the loser's insert fails on the primary key and it retries on the new head.
    pub async fn audit(&self, entry: AuditEntry) -> Result<AuditEvent> {
        let mut last_err = None;
        for attempt in 0..50u64 {
            let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(self.pool())
                .await
                .context("catalog: read audit head")?;
            let (seq, prev_hash) = match head {
                Some(row) => (get_i64(&row, "seq")? + 1, get_str(&row, "hash")?),
                None => (1, GENESIS.to_string()),
            };
            let mut ev = AuditEvent {
                seq,
                at: crate::host::now_secs(),
                os_user: os_user(),
                principal: aws_principal(),
                host: crate::host::hostname(),
                command: entry.command.clone(),
                target: entry.target.clone(),
                outcome: entry.outcome.clone(),
                detail: entry.detail.clone(),
                prev_hash,
                hash: String::new(),
            };
            ev.hash = ev.compute_hash();
            let res = sqlx::query(
                "INSERT INTO audit_events (seq, at, os_user, principal, host, command, target, \
                 outcome, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(ev.seq)
            .bind(ev.at)
            .bind(ev.os_user.clone())
            .bind(ev.principal.clone())
            .bind(ev.host.clone())
            .bind(ev.command.clone())
            .bind(ev.target.clone())
            .bind(ev.outcome.clone())
            .bind(ev.detail.clone())
            .bind(ev.prev_hash.clone())
            .bind(ev.hash.clone())
            .execute(self.pool())
            .await;
            match res {
                Ok(_) => {
                    tracing::info!(
                        target: "lifeboat::audit",
                        seq = ev.seq,
                        user = %ev.os_user,
                        command = %ev.command,
                        outcome = %ev.outcome,
                        hash = %ev.hash,
                        "audit"
                    );
                    return Ok(ev);
                }
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(
                        5 + (attempt * 7 + rand::random::<u64>() % 20),
                    ))
                    .await;
                }
            }
        }
        Err(last_err
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("retries exhausted")))
        .context("catalog: append audit event")
    }

    /// Entries oldest first; the newest `limit` when given.
    pub async fn audit_events(&self, limit: Option<i64>) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, os_user, principal, host, command, target, outcome, detail, prev_hash, \
             hash FROM audit_events ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .context("catalog: list audit events")?;
        let mut events = rows.iter().map(event).collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }
}

/// Check the chain of `events` (oldest first, the whole trail). Empty when intact.
pub fn verify(events: &[AuditEvent]) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let mut prev_seq = 0;
    let mut prev_hash = GENESIS.to_string();
    for ev in events {
        if ev.seq != prev_seq + 1 {
            problems.push(ChainProblem {
                seq: ev.seq,
                message: format!(
                    "entries {}..{} are missing (deleted?)",
                    prev_seq + 1,
                    ev.seq - 1
                ),
            });
        }
        if ev.prev_hash != prev_hash {
            problems.push(ChainProblem {
                seq: ev.seq,
                message: "does not link to the entry before it (an entry was deleted or changed)"
                    .into(),
            });
        }
        if ev.compute_hash() != ev.hash {
            problems.push(ChainProblem {
                seq: ev.seq,
                message: "content does not match its hash (the entry was modified)".into(),
            });
        }
        prev_seq = ev.seq;
        prev_hash = ev.hash.clone();
    }
    problems
}

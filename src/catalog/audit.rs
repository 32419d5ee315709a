//! The audit trail: who read, restored or changed backups, what, when, and the outcome.
//!
//! A command is written twice: an `intent` entry before it runs (so a killed restore still
//! leaves a record) and an `outcome` entry after, naming its intent. Entries are
//! append-only and chained under a keyed MAC: entry `n` stores the MAC of entry `n - 1`
//! and its own, a BLAKE3 keyed hash over its fields and that previous MAC. The key
//! ([`AuditSeal`]) comes from the repository's key material, which the catalog never
//! holds, so whoever can only write the catalog cannot recompute the chain after changing
//! or deleting an entry: [`verify`] names the first entry where it breaks. Every entry is
//! also checkpointed into every region (`audit/` objects, `lifeboat_repo::audit`), so that
//! deleting the newest entries, or the whole table, shows too (`audit_regions` compares, and
//! `catalog sync` brings the trail back).
//!
//! Entries written before schema 8 (and by a host that could not get the key) are chained
//! with the unkeyed hash of schema 1 (`keyed = false`); they still list and verify as
//! before, and an unkeyed entry after a keyed one is reported as a break.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use lifeboat_repo::Repository;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_opt_str, get_str, Catalog};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `started` (an intent), `ok`, `degraded`, `failed: …`, `exit N`.
    pub outcome: String,
    pub detail: Option<String>,
    /// `intent`, `outcome`, or none for a single entry.
    #[serde(default)]
    pub phase: Option<String>,
    /// For an outcome: the seq of its intent entry.
    #[serde(default)]
    pub intent: Option<i64>,
    /// `hash` is the keyed MAC (else the unkeyed hash of entries before schema 8).
    #[serde(default)]
    pub keyed: bool,
    pub prev_hash: String,
    pub hash: String,
}

/// Where in a command's life an entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditPhase {
    Intent,
    Outcome,
}

impl AuditPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditPhase::Intent => "intent",
            AuditPhase::Outcome => "outcome",
        }
    }
}

/// What a caller says about one action; who and when are filled in by [`Catalog::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub command: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub phase: Option<AuditPhase>,
    /// For an outcome: the seq its intent got.
    pub intent: Option<i64>,
}

/// A break in the chain, or a difference from the regions.
#[derive(Debug, Clone, Serialize)]
pub struct ChainProblem {
    pub seq: i64,
    pub message: String,
}

/// The MAC key of the chain. Never printed, zeroed when dropped.
pub struct ChainKey(zeroize::Zeroizing<[u8; 32]>);

impl ChainKey {
    pub fn new(key: [u8; 32]) -> ChainKey {
        ChainKey(zeroize::Zeroizing::new(key))
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(…)")
    }
}

/// What keys the chain and where entries are checkpointed: attached to a [`Catalog`] with
/// [`Catalog::set_audit_seal`] by the layer that opens the repository.
pub struct AuditSeal {
    pub key: ChainKey,
    /// The repository whose regions receive `audit/` checkpoints; none when it could not be
    /// opened (the entry is still keyed, and `audit --verify` shows it as not checkpointed).
    pub repo: Option<Arc<Repository>>,
}

impl std::fmt::Debug for AuditSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSeal(checkpoints: {})", self.repo.is_some())
    }
}

/// The seal slot a catalog and its clones share.
pub(crate) type SealSlot = Arc<RwLock<Option<Arc<AuditSeal>>>>;

impl AuditEvent {
    /// The unkeyed hash of schema 1, over the fields that schema had.
    fn legacy_hash(&self) -> String {
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

    /// The keyed MAC over every field and the previous MAC.
    fn mac(&self, key: &ChainKey) -> String {
        let fields = serde_json::json!([
            "lifeboat audit entry v2",
            self.seq,
            self.at,
            self.os_user,
            self.principal,
            self.host,
            self.command,
            self.target,
            self.outcome,
            self.detail,
            self.phase,
            self.intent,
            self.prev_hash,
        ]);
        blake3::keyed_hash(&key.0, fields.to_string().as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether the stored hash is right: the MAC under `key` for a keyed entry (`None`
    /// without a key), the unkeyed hash otherwise.
    pub fn authentic(&self, key: Option<&ChainKey>) -> Option<bool> {
        if self.keyed {
            key.map(|k| self.mac(k) == self.hash)
        } else {
            Some(self.legacy_hash() == self.hash)
        }
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

const COLUMNS: &str = "seq, at, os_user, principal, host, command, target, outcome, detail, \
                       phase, intent, keyed, prev_hash, hash";

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
        phase: get_opt_str(row, "phase")?,
        intent: get_opt_i64(row, "intent")?,
        keyed: get_i64(row, "keyed")? != 0,
        prev_hash: get_str(row, "prev_hash")?,
        hash: get_str(row, "hash")?,
    })
}

impl Catalog {
    /// Key the chain and checkpoint new entries with `seal` from now on (this catalog and
    /// its clones).
    pub fn set_audit_seal(&self, seal: AuditSeal) {
        if let Ok(mut slot) = self.audit_seal.write() {
            *slot = Some(Arc::new(seal));
        }
    }

    pub fn audit_seal(&self) -> Option<Arc<AuditSeal>> {
        self.audit_seal.read().ok().and_then(|s| s.clone())
    }

    /// The name of this catalog's chain in the regions (`audit/<chain>/`): 16 hex digits
    /// of a hash of where the catalog is (for SQLite this host and the file, for PostgreSQL
    /// the server and database), so that it is the same after the catalog is lost and
    /// recreated in the same place, and different for each host's own SQLite catalog.
    pub fn audit_chain(&self) -> String {
        let h = blake3::hash(format!("lifeboat audit chain id v1\n{}", self.locator).as_bytes());
        h.to_hex()[..16].to_string()
    }

    /// Append an entry to the chain (keyed when a seal is attached), then checkpoint it into
    /// every available region. Concurrent writers race for the next sequence number; the
    /// loser's insert fails on the primary key and it retries on the new head. Refused when
    /// the regions already hold the next entry: the catalog has lost entries (truncated, or
    /// restored from an old copy), and appending would fork the chain.
    pub async fn audit(&self, entry: AuditEntry) -> Result<AuditEvent> {
        let seal = self.audit_seal();
        let chain = self.audit_chain();
        let mut last_err = None;
        for attempt in 0..50u64 {
            let head = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT 1"
            )))
            .fetch_optional(self.pool())
            .await
            .context("catalog: read audit head")?
            .map(|row| event(&row))
            .transpose()?;
            // Linking to a head that does not authenticate would vouch for it.
            if let (Some(h), Some(s)) = (&head, &seal) {
                if h.authentic(Some(&s.key)) == Some(false) && h.keyed {
                    anyhow::bail!(
                        "the catalog's newest audit entry ({}) does not match its MAC: it was changed \
                         outside lifeboat; `lifeboat audit --verify` shows what, `lifeboat catalog sync` \
                         restores it from the regions",
                        h.seq
                    );
                }
            }
            let (seq, prev_hash) = match head {
                Some(h) => (h.seq + 1, h.hash),
                None => (1, GENESIS.to_string()),
            };
            if let Some(repo) = seal.as_ref().and_then(|s| s.repo.as_ref()) {
                let held = repo
                    .audit_checkpoints_at(&chain, seq.unsigned_abs())
                    .await
                    .unwrap_or_default();
                if let Some(cp) = held.first() {
                    // Another writer of this catalog may have appended and checkpointed
                    // entry `seq` since the head was read: then retry on the new head.
                    if self.audit_head_seq().await? >= seq {
                        continue;
                    }
                    anyhow::bail!(
                        "the catalog's audit trail ends at entry {} but region {} already holds entry {seq}: \
                         entries were deleted from the catalog (or it was restored from an old copy); \
                         `lifeboat audit --verify` shows what is missing, `lifeboat catalog sync` brings it back",
                        seq - 1,
                        cp.regions.join(", ")
                    );
                }
            }
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
                phase: entry.phase.map(|p| p.as_str().to_string()),
                intent: entry.intent,
                keyed: seal.is_some(),
                prev_hash,
                hash: String::new(),
            };
            ev.hash = match &seal {
                Some(s) => ev.mac(&s.key),
                None => ev.legacy_hash(),
            };
            match self.insert_audit_event(&ev).await {
                Ok(()) => {
                    tracing::info!(
                        target: "lifeboat::audit",
                        seq = ev.seq,
                        user = %ev.os_user,
                        command = %ev.command,
                        outcome = %ev.outcome,
                        hash = %ev.hash,
                        "audit"
                    );
                    match seal.as_ref().and_then(|s| s.repo.as_ref()) {
                        Some(repo) => self.checkpoint(repo, &chain, &ev).await,
                        None if seal.is_none() => tracing::warn!(
                            seq = ev.seq,
                            "audit entry written without the chain key (the repository's keys were not available): it is not tamper-evident"
                        ),
                        // `init`'s intent comes before the repository exists; it reaches
                        // the regions with init's outcome.
                        None if ev.command == "init" => tracing::debug!(
                            seq = ev.seq,
                            "init's intent: checkpointed with its outcome"
                        ),
                        None => tracing::warn!(
                            seq = ev.seq,
                            "audit entry not checkpointed: the repository could not be opened"
                        ),
                    }
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

    /// Checkpoint entry `seq`, already in the catalog, when a seal with a repository is
    /// attached (an intent written before the repository could be opened).
    pub async fn checkpoint_audit_event(&self, seq: i64) {
        let Some(repo) = self.audit_seal().and_then(|s| s.repo.clone()) else {
            return;
        };
        let event = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_events WHERE seq = $1"
        )))
        .bind(seq)
        .fetch_optional(self.pool())
        .await
        .map_err(anyhow::Error::from)
        .and_then(|row| row.map(|r| event(&r)).transpose());
        match event {
            Ok(Some(ev)) if ev.keyed => self.checkpoint(&repo, &self.audit_chain(), &ev).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(seq, error = %format!("{e:#}"), "audit entry not checkpointed")
            }
        }
    }

    async fn checkpoint(&self, repo: &Repository, chain: &str, ev: &AuditEvent) {
        let res = match serde_json::to_vec(ev) {
            Ok(doc) => repo
                .put_audit_checkpoint(chain, ev.seq.unsigned_abs(), &ev.hash, &doc)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        match res {
            Ok(w) => {
                for (region, e) in &w.failed {
                    tracing::warn!(seq = ev.seq, region = %region, error = %e, "audit entry not checkpointed in this region");
                }
            }
            Err(e) => {
                tracing::warn!(seq = ev.seq, error = %format!("{e:#}"), "audit entry not checkpointed in any region")
            }
        }
    }

    async fn audit_head_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_events")
            .fetch_one(self.pool())
            .await
            .context("catalog: read audit head")?;
        get_i64(&row, "seq")
    }

    async fn insert_audit_event(&self, ev: &AuditEvent) -> std::result::Result<(), sqlx::Error> {
        // COLUMNS is a constant: nothing from outside reaches the SQL text.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO audit_events ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(ev.seq)
        .bind(ev.at)
        .bind(ev.os_user.clone())
        .bind(ev.principal.clone())
        .bind(ev.host.clone())
        .bind(ev.command.clone())
        .bind(ev.target.clone())
        .bind(ev.outcome.clone())
        .bind(ev.detail.clone())
        .bind(ev.phase.clone())
        .bind(ev.intent)
        .bind(i64::from(ev.keyed))
        .bind(ev.prev_hash.clone())
        .bind(ev.hash.clone())
        .execute(self.pool())
        .await
        .map(|_| ())
    }

    /// Put `ev` (an entry brought back from the regions, already authenticated) in place of
    /// whatever the catalog holds at its seq.
    pub async fn restore_audit_event(&self, ev: &AuditEvent) -> Result<()> {
        sqlx::query("DELETE FROM audit_events WHERE seq = $1")
            .bind(ev.seq)
            .execute(self.pool())
            .await
            .context("catalog: replace audit event")?;
        self.insert_audit_event(ev)
            .await
            .context("catalog: restore audit event")
    }

    /// Entries oldest first; the newest `limit` when given.
    pub async fn audit_events(&self, limit: Option<i64>) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT $1"
        )))
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .context("catalog: list audit events")?;
        let mut events = rows.iter().map(event).collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }
}

/// Check the chain of `events` (oldest first, the whole trail). Empty when intact. Keyed
/// entries are checked only with `key` (the caller refuses to verify without it when the
/// trail has any).
pub fn verify(events: &[AuditEvent], key: Option<&ChainKey>) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let mut prev_seq = 0;
    let mut prev_hash = GENESIS.to_string();
    let mut keyed_seen = false;
    for ev in events {
        let mut problem = |message: String| {
            problems.push(ChainProblem {
                seq: ev.seq,
                message,
            })
        };
        if ev.seq != prev_seq + 1 {
            problem(format!(
                "entries {}..{} are missing (deleted?)",
                prev_seq + 1,
                ev.seq - 1
            ));
        }
        if ev.prev_hash != prev_hash {
            problem(
                "does not link to the entry before it (an entry was deleted or changed)".into(),
            );
        }
        match ev.authentic(key) {
            Some(true) => {}
            Some(false) if ev.keyed => problem(
                "content does not match its MAC (the entry was modified, or forged without the key)"
                    .into(),
            ),
            Some(false) => problem("content does not match its hash (the entry was modified)".into()),
            None => problem("keyed entry, and no chain key to check it with".into()),
        }
        if keyed_seen && !ev.keyed {
            problem(
                "unkeyed entry after keyed ones: written without the chain key, or rewritten by someone who lacks it"
                    .into(),
            );
        }
        keyed_seen |= ev.keyed;
        prev_seq = ev.seq;
        prev_hash = ev.hash.clone();
    }
    problems
}

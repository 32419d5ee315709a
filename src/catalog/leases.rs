//! Exclusivity across processes that share a catalog: one run per plan at a time (a lease
//! with an expiry, renewed while the run lives) and each schedule occurrence run at most
//! once (a claim row whose primary key makes a second claim fail); and in-use marks, lease
//! rows with which a restore test or drill tells `forget` to leave a plan's snapshots alone.
//!
//! Both are single statements (`INSERT … ON CONFLICT`), atomic on SQLite and PostgreSQL
//! alike, so two daemons sharing a PostgreSQL catalog cannot both win. DESIGN.md mentions
//! `FOR UPDATE SKIP LOCKED` job rows; a lease row gives the same guarantee without holding
//! a transaction open for the length of a backup, and works on SQLite too.

use anyhow::{Context, Result};

use super::Catalog;

impl Catalog {
    /// Take (or renew) the lease on `plan` for `holder` until `expires_at`. False when
    /// another holder has an unexpired lease.
    pub async fn acquire_lease(
        &self,
        plan: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO plan_leases (plan, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (plan) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE plan_leases.expires_at < $4 OR plan_leases.holder = excluded.holder",
        )
        .bind(plan.to_string())
        .bind(holder.to_string())
        .bind(expires_at)
        .bind(now)
        .execute(self.pool())
        .await
        .context("catalog: acquire plan lease")?;
        Ok(done.rows_affected() == 1)
    }

    /// Give the lease back (only if `holder` still has it).
    pub async fn release_lease(&self, plan: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM plan_leases WHERE plan = $1 AND holder = $2")
            .bind(plan.to_string())
            .bind(holder.to_string())
            .execute(self.pool())
            .await
            .context("catalog: release plan lease")?;
        Ok(())
    }

    /// Claim occurrence `scheduled_for` of `plan` for run `run_id`. False when it was
    /// already claimed (by this or another process).
    pub async fn claim_occurrence(
        &self,
        plan: &str,
        scheduled_for: i64,
        run_id: &str,
        holder: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO occurrences (plan, scheduled_for, run_id, holder) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (plan, scheduled_for) DO NOTHING",
        )
        .bind(plan.to_string())
        .bind(scheduled_for)
        .bind(run_id.to_string())
        .bind(holder.to_string())
        .execute(self.pool())
        .await
        .context("catalog: claim schedule occurrence")?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest occurrence of `plan` claimed so far.
    pub async fn last_occurrence(&self, plan: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT scheduled_for FROM occurrences WHERE plan = $1 ORDER BY scheduled_for DESC LIMIT 1",
        )
        .bind(plan.to_string())
        .fetch_optional(self.pool())
        .await
        .context("catalog: last occurrence")?;
        row.map(|r| super::get_i64(&r, "scheduled_for")).transpose()
    }
}

/// How long an in-use mark lives without a refresh: a holder killed with SIGKILL keeps
/// forget away from the plan for at most this long.
pub const IN_USE_TTL: i64 = 10 * 60;

fn in_use_key(plan: &str, user: &str) -> String {
    format!("{plan}#in-use#{user}")
}

/// Plans whose snapshots a restore test or drill is using (see [`Catalog::use_plans`]).
/// Refreshed while held; [`InUse::release`] removes the marks, dropping it lets them expire.
pub struct InUse {
    catalog: Catalog,
    keys: Vec<String>,
    refresher: tokio::task::JoinHandle<()>,
}

impl InUse {
    pub async fn release(self) {
        self.refresher.abort();
        for key in &self.keys {
            let done = sqlx::query("DELETE FROM plan_leases WHERE plan = $1")
                .bind(key.clone())
                .execute(self.catalog.pool())
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "catalog: could not clear an in-use mark; it expires on its own");
            }
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl Catalog {
    /// Mark `plans` as in use by `user` (e.g. "restore test <id>", "drill <id>") until the
    /// returned guard is released, so that `forget` refuses those plans meanwhile. The marks
    /// are lease rows keyed `<plan>#in-use#<user>` (no plan name holds a `#`).
    pub async fn use_plans(&self, plans: &[String], user: &str) -> Result<InUse> {
        let keys: Vec<String> = plans.iter().map(|p| in_use_key(p, user)).collect();
        let mark = |catalog: Catalog, keys: Vec<String>, user: String| async move {
            let now = crate::host::now_secs();
            for key in &keys {
                sqlx::query(
                    "INSERT INTO plan_leases (plan, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (plan) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .bind(key.clone())
                .bind(user.clone())
                .bind(now + IN_USE_TTL)
                .execute(catalog.pool())
                .await
                .context("catalog: mark a plan in use")?;
            }
            anyhow::Ok(())
        };
        mark(self.clone(), keys.clone(), user.to_string()).await?;
        let (catalog, k, u) = (self.clone(), keys.clone(), user.to_string());
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs((IN_USE_TTL / 3) as u64)).await;
                if let Err(e) = mark(catalog.clone(), k.clone(), u.clone()).await {
                    tracing::warn!(error = %format!("{e:#}"), "could not refresh an in-use mark");
                }
            }
        });
        Ok(InUse {
            catalog: self.clone(),
            keys,
            refresher,
        })
    }

    /// Who is using `plan`'s snapshots at `now` (unexpired in-use marks).
    pub async fn plan_users(&self, plan: &str, now: i64) -> Result<Vec<String>> {
        // Filtered here, not with LIKE (`_` in a plan name is a wildcard) or a range (the
        // order of `#` depends on PostgreSQL's collation): the table holds a few rows a plan.
        let prefix = in_use_key(plan, "");
        let rows = sqlx::query("SELECT plan, holder FROM plan_leases WHERE expires_at > $1")
            .bind(now)
            .fetch_all(self.pool())
            .await
            .context("catalog: read in-use marks")?;
        let mut out = Vec::new();
        for r in &rows {
            if super::get_str(r, "plan")?.starts_with(&prefix) {
                out.push(super::get_str(r, "holder")?);
            }
        }
        Ok(out)
    }
}

//! Exclusivity across processes that share a catalog: one run per plan at a time (a lease
//! with an expiry, renewed while the run lives) and each schedule occurrence run at most
//! once (a claim row whose primary key makes a second claim fail).
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

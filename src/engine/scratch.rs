//! The scratch server of a postgres plan, where restore tests and drills restore snapshots
//! from the bucket: never the source's server unless the plan says
//! `allow_scratch_on_source = true` (`Config::scratch_admin_url`), a warning when its role
//! is a superuser, roles of the snapshot's globals created `NOLOGIN` (and dropped again),
//! databases created from `template0` and dropped whatever happened.
//!
//! Order matters for cleanup: roles are created before the database and dropped after it
//! (a role cannot be dropped while a database holds its grants), so a caller that keeps a
//! ledger unwound newest first (drills) registers the roles first.

use anyhow::{Context, Result};
use lifeboat_repo::Cancel;

use crate::config::{Config, PlanConfig, SecretString, SourceConfig};
use crate::engine::stream::OpenStream;
use crate::source::pg_globals::{self, RoleMode, RolesReport};
use crate::source::postgres::{self, PgTarget, ScratchDatabase};

/// A plan's scratch server, through its maintenance database.
pub struct ScratchServer {
    pub admin_url: String,
    password: Option<SecretString>,
}

/// The warning given when a scratch server's role is a superuser.
pub fn superuser_warning(admin_url: &str) -> String {
    format!(
        "the scratch role of {} is a superuser: a forged snapshot restored there could run anything on that server (give scratch_url a role with only CREATEDB and CREATEROLE)",
        postgres::redact(admin_url)
    )
}

impl ScratchServer {
    /// `plan`'s scratch server; a config error (exit 2) when it has none that is allowed.
    pub fn of(config: &Config, plan: &PlanConfig) -> Result<ScratchServer> {
        let admin_url = config.scratch_admin_url(plan)?;
        ScratchServer::at(plan, admin_url)
    }

    /// The scratch server at `admin_url` (a drill's cleanup, which recorded it).
    pub fn at(plan: &PlanConfig, admin_url: String) -> Result<ScratchServer> {
        let password = match &plan.source {
            SourceConfig::Postgres {
                password: Some(p), ..
            } => Some(
                p.load()
                    .with_context(|| format!("plan {}: source password", plan.name))?,
            ),
            _ => None,
        };
        Ok(ScratchServer {
            admin_url,
            password,
        })
    }

    /// The maintenance database as a target.
    pub fn admin(&self) -> PgTarget<'_> {
        self.target(&self.admin_url)
    }

    /// A database of this server as a target (same credentials).
    pub fn target<'a>(&'a self, url: &'a str) -> PgTarget<'a> {
        PgTarget {
            url,
            password: self.password.as_ref(),
        }
    }

    /// The warning for a superuser scratch role, if it is one.
    pub async fn check_role(&self) -> Result<Option<String>> {
        let mut conn = self.admin().connect().await?;
        let superuser = postgres::is_superuser(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        Ok(superuser?.then(|| superuser_warning(&self.admin_url)))
    }

    /// Create the roles of the snapshot's globals that the server lacks, `NOLOGIN` and
    /// without attributes; `None` for a snapshot without globals.
    pub async fn create_roles(
        &self,
        stream: &OpenStream,
        cancel: &Cancel,
    ) -> Result<Option<RolesReport>> {
        let Some(text) = stream.globals_text(cancel).await? else {
            return Ok(None);
        };
        let globals = pg_globals::parse(&text);
        let mut conn = self.admin().connect().await?;
        let report = pg_globals::create_missing_roles(&mut conn, &globals, RoleMode::Scratch)
            .await
            .context("create the snapshot's roles on the scratch server (the scratch_url role needs CREATEROLE)");
        let _ = sqlx::Connection::close(conn).await;
        report.map(Some)
    }

    /// A new empty database `<prefix>_<random>`; `production` is the source's URL.
    pub async fn create_database(&self, prefix: &str, production: &str) -> Result<ScratchDatabase> {
        postgres::create_scratch(&self.admin(), prefix, production).await
    }

    pub async fn drop_database(&self, name: &str) -> Result<()> {
        postgres::drop_database(&self.admin(), name).await
    }

    /// Drop roles created by [`Self::create_roles`] (after the database is gone).
    pub async fn drop_roles(&self, roles: &[String]) -> Result<()> {
        if roles.is_empty() {
            return Ok(());
        }
        let mut conn = self.admin().connect().await?;
        let dropped = pg_globals::drop_roles(&mut conn, roles).await;
        let _ = sqlx::Connection::close(conn).await;
        dropped
    }
}

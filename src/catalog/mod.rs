//! The catalog: lifeboat's run history and its cache of what each region holds, in SQLite
//! (the embedded default, a file created on first use) or PostgreSQL (shared by several
//! lifeboat instances).
//!
//! One set of migrations (`migrations/`, embedded in the binary) serves both through sqlx's
//! `Any` driver with runtime queries only, so nothing needs a database at build time. To
//! keep one SQL text valid on both, queries use `$N` placeholders, flags are BIGINT 0/1,
//! times are epoch seconds, and ids come from [`crate::host::new_id`]. The catalog is never the
//! source of truth: `snapshots` can be rebuilt from any region ([`sync`]); losing the rest
//! loses history, not backups.
//!
//! Connections to PostgreSQL use TLS as the URL's `sslmode` says (sqlx with rustls on the
//! aws-lc provider, TLS 1.2 or 1.3 only): `disable`, `prefer` (sqlx's and libpq's default:
//! TLS when the server offers it, unauthenticated), `require` (TLS, no certificate check),
//! `verify-ca` (the chain must lead to `sslrootcert`, or to the Mozilla roots without one),
//! `verify-full` (also the host name: the production setting, docs/operations.md).

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};

pub mod audit;
pub mod evidence;
pub mod leases;
pub mod runs;
pub mod snapshots;

pub use runs::{Phase, RunEnd, RunKind, RunRecord};
pub use snapshots::SnapshotRow;

/// The schema, oldest first. A new migration appends a file and a line here; released
/// migrations are never edited (sqlx checks their checksums).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../../migrations/0001_catalog.sql"),
    ),
    (
        2,
        "snapshot commit order",
        include_str!("../../migrations/0002_snapshot_commit_order.sql"),
    ),
    (
        3,
        "drills",
        include_str!("../../migrations/0003_drills.sql"),
    ),
    (
        4,
        "snapshot trust",
        include_str!("../../migrations/0004_snapshot_trust.sql"),
    ),
    (
        6,
        "rds snapshot state",
        include_str!("../../migrations/0006_rds_snapshot_state.sql"),
    ),
    (
        8,
        "audit chain",
        include_str!("../../migrations/0008_audit_chain.sql"),
    ),
];

/// Which SQL database holds the catalog (not a storage `Backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

/// An open, migrated catalog. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: AnyPool,
    database: Database,
    /// Where the catalog is (no password), naming its audit chain.
    locator: String,
    audit_seal: audit::SealSlot,
}

impl Catalog {
    /// Open the catalog at `url` (`sqlite://FILE`, `sqlite::memory:`, `postgres://…`),
    /// creating a SQLite file and its directory when missing, and apply pending migrations.
    pub async fn open(url: &str) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let database = if url.starts_with("sqlite:") {
            Database::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres
        } else {
            anyhow::bail!("unsupported catalog URL (expected sqlite://FILE or postgres://HOST/DB)");
        };
        let mut url = url.to_string();
        let mut max = 4;
        if database == Database::Sqlite {
            let rest = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let file = rest.split('?').next().unwrap_or_default();
            if file == ":memory:" {
                // Every connection would get its own empty database.
                max = 1;
            } else {
                if let Some(dir) = std::path::Path::new(file).parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("create catalog directory {}", dir.display()))?;
                }
                if !rest.contains('?') {
                    url.push_str("?mode=rwc");
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .with_context(|| format!("open catalog {}", crate::host::redact_url(&url)))?;
        if database == Database::Sqlite {
            // WAL lets `status` read while a backup writes; the busy timeout (sqlx's default
            // 5 s) covers writers from other processes.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .context("catalog: enable WAL")?;
        }
        let catalog = Catalog {
            pool,
            database,
            locator: locator(database, &url),
            audit_seal: Default::default(),
        };
        catalog.migrate().await?;
        Ok(catalog)
    }

    async fn migrate(&self) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        // SQLite has no migration lock: two processes opening a new catalog at once may
        // race, and the loser's retry then finds the migration applied.
        let mut attempt = 0;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && self.database == Database::Sqlite => {
                    tracing::debug!(error = %e, "catalog: migration raced; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e).context("catalog: apply migrations"),
            }
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn database(&self) -> Database {
        self.database
    }
}

/// Where a catalog is, for the name of its audit chain: this host and the absolute file of a
/// SQLite catalog (each host's own trail); server, port and database of a PostgreSQL one
/// (shared by its hosts). No user, password or parameters.
fn locator(database: Database, url: &str) -> String {
    match database {
        Database::Sqlite => {
            let rest = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let file = rest.split('?').next().unwrap_or_default();
            let path = std::fs::canonicalize(file)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| file.to_string());
            format!("sqlite {} {path}", crate::host::hostname())
        }
        Database::Postgres => match url::Url::parse(url) {
            Ok(u) => format!(
                "postgres {}:{}{}",
                u.host_str().unwrap_or("localhost"),
                u.port().unwrap_or(5432),
                u.path()
            ),
            Err(_) => format!("postgres {}", crate::host::redact_url(url)),
        },
    }
}

/// The host name and process id, naming a lease holder in messages and rows.
pub fn holder_name() -> String {
    format!(
        "{}:{}:{}",
        crate::host::hostname(),
        std::process::id(),
        &crate::host::new_id()[..8]
    )
}

pub(crate) fn get_opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    row.try_get::<Option<i64>, _>(col)
        .with_context(|| format!("catalog column {col}"))
}

pub(crate) fn get_i64(row: &AnyRow, col: &str) -> Result<i64> {
    row.try_get::<i64, _>(col)
        .with_context(|| format!("catalog column {col}"))
}

pub(crate) fn get_str(row: &AnyRow, col: &str) -> Result<String> {
    row.try_get::<String, _>(col)
        .with_context(|| format!("catalog column {col}"))
}

pub(crate) fn get_opt_str(row: &AnyRow, col: &str) -> Result<Option<String>> {
    row.try_get::<Option<String>, _>(col)
        .with_context(|| format!("catalog column {col}"))
}

//! The `postgres` source: one database, dumped by `pg_dump` straight into the repository,
//! with **probes** recorded from the very snapshot the dump reads.
//!
//! A backup opens a `REPEATABLE READ READ ONLY` transaction, exports its snapshot
//! (`pg_export_snapshot()`), counts the rows of every user table and runs the plan's SQL
//! probes in that transaction, then runs `pg_dump --snapshot=<id>`, so the counts and the
//! dump describe the same instant; the transaction ends after `pg_dump` finishes.
//!
//! Format: `pg_dump --format=custom --compress=0`. Custom format keeps `pg_restore`'s
//! selective restore (`-t`, `-n`, `-L`) and, from a file, parallel restore (`-j`); no
//! compression because lifeboat compresses every chunk itself, and uncompressed bytes are
//! what content-defined chunking can deduplicate from one day's dump to the next (a
//! compressed dump changes everywhere after the first changed row). See docs/postgres.md.
//!
//! Secrets: the URL never holds a password (the config refuses one); a configured password
//! reaches `pg_dump`/`pg_restore` only through a 0600 password file named by `PGPASSFILE`
//! (deleted when the child exits) and lifeboat's own connection through sqlx's options,
//! never a command line, an environment, a log or a manifest. Without one, libpq's own
//! lookup applies (`~/.pgpass`, `PGPASSWORD`). `pg_dump` waits at most
//! [`LOCK_WAIT_TIMEOUT`] for a table lock, so a long-held `ACCESS EXCLUSIVE` lock fails
//! the backup with a message instead of hanging it.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};

use crate::config::{SecretString, SqlProbe};

/// The name of the dump inside a postgres snapshot's root tree.
pub const DUMP_NAME: &str = "postgres.dump";
/// Appended to "pg_dump: command not found".
pub const CLIENT_HINT: &str = " (install the PostgreSQL client tools, e.g. `apt-get install postgresql-client`, at least the server's major version; `make deps` in this repository)";

/// A database to connect to: URL without a password, and the password if configured.
pub struct PgTarget<'a> {
    pub url: &'a str,
    pub password: Option<&'a SecretString>,
}

impl PgTarget<'_> {
    fn options(&self) -> Result<PgConnectOptions> {
        let mut opts = PgConnectOptions::from_str(self.url)
            .with_context(|| format!("invalid PostgreSQL URL {}", redact(self.url)))?;
        if let Some(p) = self.password {
            opts = opts.password(p.expose());
        }
        Ok(opts.application_name("lifeboat"))
    }

    /// Connect, with an error that says which server and user, and what to check.
    pub async fn connect(&self) -> Result<PgConnection> {
        let opts = self.options()?;
        PgConnection::connect_with(&opts).await.map_err(|e| {
            let hint = match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("28P01") => {
                    " (wrong password: check the plan's source.password_env / password_file, or ~/.pgpass)"
                }
                sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000") => {
                    " (no such database)"
                }
                sqlx::Error::Io(_) => " (is the server running and reachable?)",
                _ => "",
            };
            anyhow::anyhow!(
                "connect to PostgreSQL {} as {}: {e}{hint}",
                redact(self.url),
                opts.get_username()
            )
        })
    }
}

/// How long `pg_dump` waits for a shared lock on a table before it fails.
pub const LOCK_WAIT_TIMEOUT: &str = "5min";

/// A libpq password file (`PGPASSFILE`) holding `password` for any server, created 0600 in
/// the temporary directory and deleted when dropped: keep it until the child has exited.
/// `None` without a password. Give it to the child with `PGPASSFILE` and remove an inherited
/// `PGPASSWORD` (libpq would prefer it).
pub fn passfile(password: Option<&SecretString>) -> Result<Option<tempfile::NamedTempFile>> {
    use std::io::Write;
    let Some(p) = password else { return Ok(None) };
    let mut file = tempfile::Builder::new()
        .prefix("lifeboat-pgpass-")
        .tempfile()
        .context("create a password file for the PostgreSQL client")?;
    // Zeroed on drop, like the password it copies.
    let line = SecretString::new(format!(
        "*:*:*:*:{}\n",
        p.expose().replace('\\', "\\\\").replace(':', "\\:")
    ));
    file.write_all(line.expose().as_bytes())
        .and_then(|()| file.flush())
        .context("write the password file for the PostgreSQL client")?;
    Ok(Some(file))
}

/// The URL with any password removed, for messages.
pub fn redact(url: &str) -> String {
    crate::host::redact_url(url)
}

/// `url` pointing at database `db` instead (same server, user and parameters). An error
/// for text that is not a URL (sqlx, which connects with it, parses it the same way), never
/// the unchanged URL: that would be the production database.
pub fn with_database(url: &str, db: &str) -> Result<String> {
    let mut u =
        url::Url::parse(url).with_context(|| format!("invalid PostgreSQL URL {}", redact(url)))?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// The database name of a URL, if it names one.
pub fn database_of(url: &str) -> Option<String> {
    PgConnectOptions::from_str(url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_string))
}

/// `"schema"."name"`, quoted for SQL.
pub fn quote_ident(schema: &str, name: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        name.replace('"', "\"\"")
    )
}

/// Ordinary and partitioned-leaf tables outside the system schemas, as (schema, name).
pub async fn user_tables(conn: &mut PgConnection) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         AND c.relpersistence <> 't' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .context("list tables")?;
    rows.iter()
        .map(|r| Ok((r.try_get("schema")?, r.try_get("name")?)))
        .collect()
}

/// Row counts of every user table, keyed `schema.table`.
pub async fn row_counts(conn: &mut PgConnection) -> Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for (schema, name) in user_tables(conn).await? {
        let sql = format!("SELECT count(*) FROM {}", quote_ident(&schema, &name));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("count rows of {schema}.{name}"))?;
        counts.insert(format!("{schema}.{name}"), n);
    }
    Ok(counts)
}

/// A SQL probe's result as canonical text: its rows as a JSON array (PostgreSQL renders it,
/// so the same data gives the same text on any server).
pub async fn run_probe(conn: &mut PgConnection, sql: &str) -> Result<String> {
    let wrapped = format!("SELECT coalesce(json_agg(t)::text, '[]') FROM ({sql}) AS t");
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(wrapped))
        .fetch_one(&mut *conn)
        .await
        .map_err(anyhow::Error::new)
}

/// An open dump transaction: the snapshot `pg_dump` must use, and the probes taken in it.
pub struct DumpSession {
    conn: PgConnection,
    pub snapshot: String,
    pub probes: Map<String, Value>,
}

/// Open the dump transaction, export its snapshot and take the probes.
pub async fn begin_dump(target: &PgTarget<'_>, probes: &[SqlProbe]) -> Result<DumpSession> {
    let mut conn = target.connect().await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .context("begin the dump transaction")?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .context("export the dump snapshot")?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .context("server version")?;
    let counts = row_counts(&mut conn).await?;
    let mut sql = Map::new();
    for p in probes {
        let result = run_probe(&mut conn, &p.sql)
            .await
            .with_context(|| format!("SQL probe {:?}", p.name))?;
        // Only the result: the query is the plan's, read from lifeboat.toml when a restore
        // test compares, never from a manifest (which a writer could have forged).
        sql.insert(p.name.clone(), json!({ "result": result }));
    }
    let mut map = Map::new();
    map.insert("server_version".into(), json!(version));
    map.insert("dump_format".into(), json!("pg_dump custom, uncompressed"));
    map.insert("tables".into(), json!(counts));
    if !sql.is_empty() {
        map.insert("sql".into(), Value::Object(sql));
    }
    Ok(DumpSession {
        conn,
        snapshot,
        probes: map,
    })
}

impl DumpSession {
    /// End the read-only transaction (after `pg_dump` has finished with the snapshot).
    pub async fn end(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// The variables a libpq child must not see: `names` without `PGPASSWORD`, which libpq's own
/// lookup may use when no password is configured (with one, the child gets a `PGPASSFILE`
/// and `PGPASSWORD` is removed by the command builder).
pub fn libpq_scrub(mut names: Vec<String>) -> Vec<String> {
    names.retain(|n| n != "PGPASSWORD");
    names
}

/// `pg_dump` of `target` in the exported `snapshot`, writing the archive to stdout, and
/// the password file it reads (keep it until `pg_dump` exits).
pub fn pg_dump_command(
    target: &PgTarget<'_>,
    snapshot: &str,
) -> Result<(std::process::Command, Option<tempfile::NamedTempFile>)> {
    let mut cmd = std::process::Command::new("pg_dump");
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--lock-wait-timeout={LOCK_WAIT_TIMEOUT}"))
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--dbname={}", target.url))
        .envs(super::pgtls::libpq_env(target.url));
    let pass = passfile(target.password)?;
    if let Some(p) = &pass {
        cmd.env("PGPASSFILE", p.path()).env_remove("PGPASSWORD");
    }
    Ok((cmd, pass))
}

/// Up to five user relations of the connected database, to refuse a non-empty target.
pub async fn existing_relations(conn: &mut PgConnection) -> Result<(i64, Vec<String>)> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
    )
    .fetch_one(&mut *conn)
    .await
    .context("inspect the target database")?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n \
         ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         ORDER BY 1 LIMIT 5",
    )
    .fetch_all(&mut *conn)
    .await
    .context("inspect the target database")?;
    Ok((count, names))
}

/// What [`compare_probes`] found: differences fail a restore test, notes are told.
#[derive(Debug, Default)]
pub struct ProbeCheck {
    pub differences: Vec<String>,
    pub notes: Vec<String>,
}

/// Compare what a restored database holds with what was recorded at backup time: the row
/// count of every table, and each of the plan's `probes` (the SQL comes from the plan in
/// lifeboat.toml, only the recorded result from the manifest; a query a manifest carries,
/// in the old format or forged, is never run). Every difference is one line naming the
/// table or probe.
pub async fn compare_probes(
    conn: &mut PgConnection,
    recorded: &Map<String, Value>,
    probes: &[SqlProbe],
) -> Result<ProbeCheck> {
    let mut check = ProbeCheck::default();
    let diffs = &mut check.differences;
    let expected: BTreeMap<String, i64> = recorded
        .get("tables")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default();
    let got = row_counts(conn).await?;
    for (table, want) in &expected {
        match got.get(table) {
            None => diffs.push(format!(
                "table {table}: missing after restore ({want} rows at backup)"
            )),
            Some(n) if n != want => diffs.push(format!(
                "table {table}: {n} rows after restore, {want} at backup"
            )),
            Some(_) => {}
        }
    }
    for (table, n) in &got {
        if !expected.contains_key(table) {
            diffs.push(format!(
                "table {table}: present after restore ({n} rows), not at backup"
            ));
        }
    }
    let empty = Map::new();
    let results = recorded
        .get("sql")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for probe in probes {
        let Some(want) = results
            .get(&probe.name)
            .and_then(|r| r.get("result"))
            .and_then(Value::as_str)
        else {
            check.notes.push(format!(
                "probe {:?}: no result recorded in this snapshot (added to the plan since?): not compared",
                probe.name
            ));
            continue;
        };
        match run_probe(conn, &probe.sql).await {
            Ok(result) if result == want => {}
            Ok(result) => diffs.push(format!(
                "probe {:?}: {result} after restore, {want} at backup",
                probe.name
            )),
            Err(e) => diffs.push(format!("probe {:?}: failed after restore: {e}", probe.name)),
        }
    }
    for name in results.keys() {
        if !probes.iter().any(|p| &p.name == name) {
            check.notes.push(format!(
                "probe {name:?}: recorded in the snapshot but not in the plan: not run (probes come from lifeboat.toml only)"
            ));
        }
    }
    Ok(check)
}

/// Whether the connected role is a superuser.
pub async fn is_superuser(conn: &mut PgConnection) -> Result<bool> {
    sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *conn)
        .await
        .context("read the connecting role's attributes")
}

/// A database created for a restore test or a drill on a scratch server.
pub struct ScratchDatabase {
    pub name: String,
    /// The database's URL (no password: config URLs never hold one).
    pub url: String,
}

/// Create an empty database `<prefix>_<random>` (from `template0`, so nothing a site added
/// to `template1` collides with the dump's objects) through the maintenance database
/// `admin`. `production` is the source's URL: its database name is never used.
pub async fn create_scratch(
    admin: &PgTarget<'_>,
    prefix: &str,
    production: &str,
) -> Result<ScratchDatabase> {
    let name = format!("{prefix}_{}", &crate::host::new_id()[..12]);
    anyhow::ensure!(
        database_of(production).as_deref() != Some(name.as_str()),
        "scratch database name {name} is the production database's: refusing"
    );
    admin_sql(
        admin,
        format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
    )
    .await
    .context("create the scratch database (the scratch_url user needs CREATEDB)")?;
    Ok(ScratchDatabase {
        url: with_database(admin.url, &name)?,
        name,
    })
}

/// Drop a scratch database, with `FORCE` where the server has it (PostgreSQL 13+).
pub async fn drop_database(admin: &PgTarget<'_>, name: &str) -> Result<()> {
    let dropped = admin_sql(
        admin,
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    if dropped.is_ok() {
        return dropped;
    }
    // Before PostgreSQL 13 there is no FORCE; our own connections are closed by now.
    admin_sql(admin, format!("DROP DATABASE IF EXISTS \"{name}\"")).await
}

/// Run one statement that cannot run in a transaction (CREATE/DROP DATABASE).
pub async fn admin_sql(target: &PgTarget<'_>, sql: String) -> Result<()> {
    let mut conn = target.connect().await?;
    let res = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    res.with_context(|| sql)?;
    Ok(())
}

//! `postgres` sources: `pg_dump` inside a dump transaction (probes measured in the same
//! snapshot), streamed into the repository; restore-tested into a scratch database created
//! for the test and dropped whatever happened.

use std::time::Instant;

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::stream::{write_step, StreamSpec};
use super::{BeginBackup, Begun, RepoSource, TestCx};
use crate::config::{SecretRef, SecretString, SqlProbe};
use crate::engine::restore_test::elapsed_ms;
use crate::engine::stream::{restore_into_database, OpenStream};
use crate::engine::RestoreTestOutcome;
use crate::source::postgres::{self, PgTarget};

pub(super) struct Postgres<'a> {
    pub url: &'a str,
    pub password: Option<&'a SecretRef>,
    pub probes: &'a [SqlProbe],
    pub scratch_url: Option<&'a str>,
}

impl Postgres<'_> {
    fn password(&self, plan: &str) -> Result<Option<SecretString>> {
        self.password
            .map(|p| {
                p.load()
                    .with_context(|| format!("plan {plan}: source password"))
            })
            .transpose()
    }
}

#[async_trait]
impl RepoSource for Postgres<'_> {
    async fn begin(&self, cx: &BeginBackup<'_>) -> Result<Begun> {
        // The dump transaction: opened here (async), held while pg_dump runs.
        let password = self.password(&cx.plan.name)?;
        let target = PgTarget {
            url: self.url,
            password: password.as_ref(),
        };
        let session = postgres::begin_dump(&target, self.probes)
            .await
            .with_context(|| format!("plan {}", cx.plan.name))?;
        let (cmd, keep) = postgres::pg_dump_command(&target, &session.snapshot)?;
        let spec = StreamSpec {
            cmd,
            keep,
            scrub: postgres::libpq_scrub(cx.config.secret_env_names()),
            cancel: cx.cancel.clone(),
            what: "pg_dump".into(),
            hint: postgres::CLIENT_HINT,
            name: postgres::DUMP_NAME,
            location: postgres::redact(self.url),
            probes: session.probes.clone(),
        };
        Ok(Begun {
            write: write_step(spec),
            end: Some(Box::pin(session.end())),
        })
    }

    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()> {
        let stream = OpenStream::open(cx.config, &cx.plan.name, cx.snapshot, cx.from).await?;
        outcome.snapshot = stream.snapshot.id.to_hex();
        let password = self.password(&cx.plan.name)?;
        let admin_url = match self.scratch_url {
            Some(url) => url.to_string(),
            None => postgres::with_database(self.url, "postgres")?,
        };
        let production = postgres::database_of(self.url);
        let name = format!("lifeboat_verify_{}", &crate::host::new_id()[..12]);
        anyhow::ensure!(
            production.as_deref() != Some(name.as_str()),
            "scratch database name {name} is the production database's: refusing"
        );
        let admin = PgTarget {
            url: &admin_url,
            password: password.as_ref(),
        };
        // template0: nothing a site added to template1 can collide with the dump's objects.
        postgres::admin(
            &admin,
            format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
        )
        .await
        .context("create the scratch database (the scratch_url user needs CREATEDB)")?;
        let scratch_db_url = postgres::with_database(&admin_url, &name)?;
        let scratch_db = PgTarget {
            url: &scratch_db_url,
            password: password.as_ref(),
        };
        outcome.checked =
            "row counts of every table and the plan's SQL probes, in a scratch database".into();
        let result = async {
            let started = Instant::now();
            let scrub = postgres::libpq_scrub(cx.config.secret_env_names());
            let restored = restore_into_database(
                &stream,
                &scratch_db,
                false,
                None,
                cx.progress,
                cx.cancel,
                &scrub,
            )
            .await;
            outcome.duration_ms = elapsed_ms(started.elapsed());
            outcome.bytes = restored?;
            let mut conn = scratch_db.connect().await?;
            let diffs = postgres::compare_probes(&mut conn, &stream.snapshot.manifest.probes).await;
            let _ = sqlx::Connection::close(conn).await;
            outcome.differences.extend(diffs?);
            Ok::<(), anyhow::Error>(())
        }
        .await;
        let mut dropped = postgres::admin(
            &admin,
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
        if dropped.is_err() {
            // Before PostgreSQL 13 there is no FORCE; our own connections are closed by now.
            dropped = postgres::admin(&admin, format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
        }
        if let Err(e) = dropped {
            tracing::error!(database = %name, error = %format!("{e:#}"), "could not drop the scratch database; drop it by hand");
            outcome.differences.push(format!(
                "scratch database {name} could not be dropped: {e:#}"
            ));
        }
        result
    }
}

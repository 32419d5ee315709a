//! `postgres` sources: the cluster's globals (`pg_dumpall --globals-only`) and `pg_dump`
//! inside a dump transaction (probes measured in the same snapshot), streamed into the
//! repository; restore-tested into a scratch database on the plan's scratch server (never
//! the source's unless allowed), created for the test and dropped whatever happened, with
//! the missing roles created `NOLOGIN` before and dropped after. The probes' SQL is the
//! plan's; the manifest gives only the results to compare with.

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::stream::{write_step, SideFile, StreamSpec};
use super::{BeginBackup, Begun, RepoSource, TestCx};
use crate::config::{SecretRef, SecretString, SqlProbe};
use crate::engine::restore_test::RtoTimer;
use crate::engine::scratch::ScratchServer;
use crate::engine::stream::{restore_into_database, DatabaseRestore, OpenStream};
use crate::engine::RestoreTestOutcome;
use crate::source::pg_globals;
use crate::source::postgres::{self, PgTarget};

pub(super) struct Postgres<'a> {
    pub url: &'a str,
    pub password: Option<&'a SecretRef>,
    pub probes: &'a [SqlProbe],
    pub globals_with_passwords: bool,
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
        // Roles are not MVCC: the globals are read just before the dump starts.
        let (globals, globals_keep) =
            pg_globals::pg_dumpall_command(&target, self.globals_with_passwords)?;
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
            beside: vec![SideFile {
                cmd: globals,
                keep: globals_keep,
                what: "pg_dumpall --globals-only".into(),
                name: pg_globals::GLOBALS_NAME,
            }],
        };
        Ok(Begun {
            write: write_step(spec),
            end: Some(Box::pin(session.end())),
        })
    }

    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()> {
        // Refused before anything is read when the plan has no allowed scratch server.
        let server = ScratchServer::of(cx.config, cx.plan)?;
        // A real restore pays the listing and the index load: the RTO starts here.
        let mut timer = RtoTimer::start();
        let stream = OpenStream::open(cx.config, &cx.plan.name, cx.snapshot, cx.from).await?;
        outcome.snapshot = stream.snapshot.id.to_hex();
        timer.phase(outcome, "open");
        if let Some(w) = server.check_role().await? {
            tracing::warn!(plan = %cx.plan.name, "{w}");
            outcome.warnings.push(w);
        }
        outcome.checked =
            "row counts of every table and the plan's SQL probes, in a scratch database".into();
        let roles = match server.create_roles(&stream, cx.cancel).await? {
            Some(r) => {
                if !r.created.is_empty() {
                    outcome.checked.push_str(&format!(
                        "; roles created for the test and dropped after: {}",
                        r.created.join(", ")
                    ));
                }
                r.created
            }
            None => Vec::new(),
        };
        let result = self
            .test_in_scratch(cx, &server, &stream, outcome, &mut timer)
            .await;
        if let Err(e) = server.drop_roles(&roles).await {
            tracing::error!(error = %format!("{e:#}"), "could not drop the restore test's roles; drop them by hand");
            outcome.differences.push(format!(
                "roles {} could not be dropped: {e:#}",
                roles.join(", ")
            ));
        }
        result
    }
}

impl Postgres<'_> {
    /// Create the scratch database, restore into it, compare, drop it whatever happened.
    async fn test_in_scratch(
        &self,
        cx: &TestCx<'_>,
        server: &ScratchServer,
        stream: &OpenStream,
        outcome: &mut RestoreTestOutcome,
        timer: &mut RtoTimer,
    ) -> Result<()> {
        let db = server.create_database("lifeboat_verify", self.url).await?;
        let result = async {
            // The scratch database and roles are test set-up, not part of the RTO.
            timer.skip();
            let scrub = postgres::libpq_scrub(cx.config.secret_env_names());
            // Owned by the scratch role (it need not be a superuser); grants restored, so
            // a role missing on the server fails the test as it would fail a restore.
            let how = DatabaseRestore {
                privileges: true,
                ..Default::default()
            };
            let target = server.target(&db.url);
            let restored =
                restore_into_database(stream, &target, &how, cx.progress, cx.cancel, &scrub).await;
            timer.phase(outcome, "restore");
            outcome.bytes = restored?.bytes;
            let mut conn = target.connect().await?;
            let check =
                postgres::compare_probes(&mut conn, &stream.snapshot.manifest.probes, self.probes)
                    .await;
            let _ = sqlx::Connection::close(conn).await;
            let check = check?;
            outcome.differences.extend(check.differences);
            outcome.warnings.extend(check.notes);
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = server.drop_database(&db.name).await {
            tracing::error!(database = %db.name, error = %format!("{e:#}"), "could not drop the scratch database; drop it by hand");
            outcome.differences.push(format!(
                "scratch database {} could not be dropped: {e:#}",
                db.name
            ));
        }
        result
    }
}

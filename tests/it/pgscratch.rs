//! A database onto a fresh server, and restore tests that a forged snapshot cannot turn
//! into an attack, against two real PostgreSQL clusters (`pg::server` is the source,
//! `pg::second_server` a fresh server without its roles and the scratch server):
//!
//! - a plan whose tables belong to a role and carry GRANTs backs up its cluster's globals;
//!   its restore test runs on the second cluster (roles created `NOLOGIN` for the test and
//!   dropped after, a superuser scratch role warned about) and passes; `restore --to` on
//!   the second cluster creates the missing roles (only those; an existing one is left as
//!   it was), owners and grants come back; `--no-owner --no-privileges` creates none;
//! - a scratch server that is the source is refused when the config is loaded (exit 2),
//!   and so is a restore test without any scratch server;
//! - a manifest forged by a writer, carrying probe SQL of its choosing, cannot make a restore
//!   test run it: the plan's probes run, the forged SQL's side effect never happens.
//!
//! These tests FAIL when PostgreSQL or its client tools are missing: run `make deps`.

use std::sync::{Mutex, MutexGuard};

use crate::common::Workspace;
use crate::pg::{self, psql};

/// Roles are global to a cluster: the tests that create roles on the second cluster (a
/// restore, a restore test) take turns, so each sees only its own.
fn second_cluster_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The roles named in a line `label a, b, c` up to `end`.
fn listed(out: &str, label: &str, end: &str) -> Vec<String> {
    let start = out
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        + label.len();
    let rest = &out[start..];
    let stop = rest.find(end).unwrap_or(rest.len());
    rest[..stop]
        .split(", ")
        .map(|s| s.trim().to_string())
        .collect()
}

/// A database on the source server whose tables belong to `{p}_owner` (LOGIN, with a
/// password) and are granted to `{p}_reader`, a member of `{p}_owner`'s group.
fn source_db(p: &str) -> String {
    let db = pg::database();
    let s = pg::server();
    pg::admin_sql(
        s,
        "postgres",
        &format!(
            "CREATE ROLE {p}_owner LOGIN CREATEDB PASSWORD 'owner-secret-77'; \
             CREATE ROLE {p}_reader NOLOGIN; CREATE ROLE {p}_group NOLOGIN; \
             GRANT {p}_group TO {p}_reader"
        ),
    );
    psql(
        &db,
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text); \
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 40) g; \
             CREATE TABLE notes (id int, body text); INSERT INTO notes VALUES (1, 'ünï'); \
             ALTER TABLE items OWNER TO {p}_owner; ALTER TABLE notes OWNER TO {p}_owner; \
             GRANT SELECT ON items TO {p}_reader; GRANT SELECT, INSERT ON notes TO {p}_group"
        ),
    );
    db
}

fn second_admin() -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        pg::second_server().port
    )
}

fn add_plan(ws: &Workspace, source: &str) {
    ws.edit_config(|c| format!("{c}\n[[plans]]\nname = \"appdb\"\nsource = {{ {source} }}\n"));
}

fn roles_on_second(prefix: &str) -> String {
    pg::admin_sql(
        pg::second_server(),
        "postgres",
        &format!(
            "select coalesce(string_agg(rolname, ',' order by rolname), '') from pg_roles where rolname like '{prefix}\\_%'"
        ),
    )
}

#[test]
fn pgscratch_roles_owners_and_grants_restore_onto_a_fresh_server_and_the_restore_test_passes_there()
{
    let p = "lbfresh";
    let _turn = second_cluster_turn();
    let db = source_db(p);
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        &format!(
            "kind = \"postgres\", url = \"{db}\", scratch_url = \"{}\", probes = [{{ name = \"items\", sql = \"select count(*) from items\" }}]",
            second_admin()
        ),
    );
    let backup = ws.json(&["backup", "appdb"]);
    assert_eq!(backup["stats"]["files"], 2, "dump and globals: {backup}");

    // The restore test runs on the second cluster, which lacks the roles: they are created
    // for the test and dropped after; the superuser scratch role is warned about.
    assert_eq!(roles_on_second(p), "");
    let out = ws.run(&["verify", "--restore", "--plan", "appdb"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("PASS appdb (postgres)"), "{stdout}");
    assert!(stdout.contains(&format!("{p}_owner")), "{stdout}");
    assert!(
        stderr.contains("warning: plan appdb: the scratch role of")
            && stderr.contains("is a superuser"),
        "{stderr}"
    );
    assert_eq!(roles_on_second(p), "", "the test's roles were not dropped");
    let scratch_dbs = "select count(*) from pg_database where datname like 'lifeboat_verify_%'";
    assert_eq!(
        pg::admin_sql(pg::second_server(), "postgres", scratch_dbs),
        "0"
    );
    // The source server was never used for it.
    assert_eq!(psql(&db, scratch_dbs), "0");
    let v = ws.json(&["verify", "--restore", "--plan", "appdb"]);
    let warnings = v["restore_tests"][0]["warnings"].to_string();
    assert!(warnings.contains("superuser"), "{v}");

    // An existing role on the target is left exactly as it was.
    let second = pg::second_server();
    pg::admin_sql(
        second,
        "postgres",
        &format!("CREATE ROLE {p}_reader NOLOGIN CREATEDB"),
    );
    let target = pg::database_on(second);
    let out = ws.ok(&["restore", "appdb", "--to", &target]);
    assert!(out.contains("owners restored; grants restored"), "{out}");
    // The snapshot's globals hold every role of the source cluster (other tests' too).
    let created = listed(&out, "roles: created ", " (missing on the target)");
    let present = listed(&out, "already there, left as they were: ", "\n");
    for r in ["group", "owner"] {
        assert!(created.contains(&format!("{p}_{r}")), "{out}");
    }
    assert!(present.contains(&format!("{p}_reader")), "{out}");
    assert!(present.contains(&"postgres".to_string()), "{out}");
    assert!(
        out.contains(&format!("GRANT {p}_group TO {p}_reader")),
        "{out}"
    );
    assert_eq!(
        roles_on_second(p),
        format!("{p}_group,{p}_owner,{p}_reader")
    );
    assert_eq!(psql(&target, "select count(*) from items"), "40");
    assert_eq!(
        psql(&target, "select string_agg(tableowner, ',' order by tablename) from pg_tables where schemaname = 'public'"),
        format!("{p}_owner,{p}_owner")
    );
    assert_eq!(
        psql(&target, &format!("select has_table_privilege('{p}_reader', 'items', 'SELECT')::text || has_table_privilege('{p}_group', 'notes', 'INSERT')::text")),
        "truetrue"
    );
    // Attributes as recorded, no password (globals are dumped without them), and the
    // existing role kept its own attributes and memberships.
    let attrs = pg::admin_sql(
        second,
        "postgres",
        &format!(
            "select rolname || ':' || rolcanlogin || ':' || rolcreatedb || ':' || (rolpassword is null) from pg_authid where rolname like '{p}\\_%' order by 1"
        ),
    );
    assert_eq!(
        attrs,
        format!("{p}_group:false:false:true\n{p}_owner:true:true:true\n{p}_reader:false:true:true")
    );
    assert_eq!(
        pg::admin_sql(second, "postgres", &format!("select count(*) from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = '{p}_reader'")),
        "0"
    );

    // --json says the same.
    let target = pg::database_on(second);
    let v = ws.json(&["restore", "appdb", "--to", &target]);
    let d = &v["database"];
    assert_eq!(d["owners"], true, "{v}");
    assert_eq!(d["privileges"], true, "{v}");
    assert_eq!(d["roles"]["created"], serde_json::json!([]), "{v}");
    let present = d["roles"]["present"].to_string();
    for r in ["group", "owner", "reader"] {
        assert!(present.contains(&format!("\"{p}_{r}\"")), "{v}");
    }
}

#[test]
fn pgscratch_no_owner_no_privileges_creates_no_role() {
    let p = "lbnogrant";
    let _turn = second_cluster_turn();
    let db = source_db(p);
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        &format!(
            "kind = \"postgres\", url = \"{db}\", scratch_url = \"{}\"",
            second_admin()
        ),
    );
    ws.ok(&["backup", "appdb"]);
    let target = pg::database_on(pg::second_server());
    let out = ws.ok(&[
        "restore",
        "appdb",
        "--to",
        &target,
        "--no-owner",
        "--no-privileges",
    ]);
    assert!(
        out.contains("owners skipped (--no-owner: objects belong to the connecting role); grants skipped (--no-privileges)"),
        "{out}"
    );
    assert!(
        out.contains("roles: none created (--no-owner --no-privileges)"),
        "{out}"
    );
    assert_eq!(roles_on_second(p), "");
    assert_eq!(psql(&target, "select count(*) from items"), "40");
    assert_eq!(
        psql(
            &target,
            "select string_agg(tableowner, ',') from pg_tables where schemaname = 'public'"
        ),
        "postgres,postgres"
    );
    let target = pg::database_on(pg::second_server());
    let v = ws.json(&[
        "restore",
        "appdb",
        "--to",
        &target,
        "--no-owner",
        "--no-privileges",
    ]);
    assert_eq!(v["database"]["owners"], false, "{v}");
    assert_eq!(v["database"]["privileges"], false, "{v}");
    assert!(v["database"]["roles"].is_null(), "{v}");
    // Without the flags the same restore fails on the first missing role only if no role is
    // created: lifeboat creates them, so this one succeeds (proved above); a directory plan
    // refuses the flag.
    let refused = ws.fails(
        &[
            "restore",
            "app-data",
            "--to",
            ws.path("x").to_str().unwrap(),
            "--no-privileges",
        ],
        1,
    );
    assert!(
        refused.contains("--no-privileges applies to postgres plans"),
        "{refused}"
    );
}

#[test]
fn pgscratch_scratch_server_that_is_the_source_is_refused_at_load() {
    let ws = Workspace::new();
    ws.init();
    // Same server spelt differently: localhost and 127.0.0.1, the default port.
    add_plan(
        &ws,
        "kind = \"postgres\", url = \"postgres://app@127.0.0.1/app\", scratch_url = \"postgres://admin@localhost:5432/postgres\"",
    );
    let err = ws.fails(&["status"], 2);
    assert!(err.contains("plans[1].source.scratch_url"), "{err}");
    assert!(err.contains("is the source's server"), "{err}");
    assert!(err.contains("allow_scratch_on_source = true"), "{err}");
    let err = ws.fails(&["backup", "appdb"], 2);
    assert!(err.contains("plans[1].source.scratch_url"), "{err}");

    // Explicitly allowed: loads.
    ws.edit_config(|c| {
        c.replace(
            "scratch_url = ",
            "allow_scratch_on_source = true, scratch_url = ",
        )
    });
    ws.ok(&["snapshots"]);

    // No scratch server at all: a restore test is a config error, before anything is read.
    ws.edit_config(|c| {
        c.replace(
            ", scratch_url = \"postgres://admin@localhost:5432/postgres\"",
            "",
        )
        .replace(", allow_scratch_on_source = true", "")
    });
    ws.ok(&["snapshots"]);
    let err = ws.fails(&["verify", "--restore", "--plan", "appdb"], 2);
    assert!(
        err.contains("scratch_url") && err.contains("allow_scratch_on_source"),
        "{err}"
    );
    // A plan with scheduled restore tests and no scratch server is refused at load.
    ws.edit_config(|c| {
        c.replace(
            "name = \"appdb\"\n",
            "name = \"appdb\"\nverify_schedule = \"0 6 * * *\"\n",
        )
    });
    let err = ws.fails(&["status"], 2);
    assert!(
        err.contains("plans[1].source.scratch_url") && err.contains("verify_schedule"),
        "{err}"
    );
}

#[test]
fn pgscratch_forged_manifest_cannot_make_a_restore_test_run_its_sql() {
    use lifeboat_repo::writer::BackupWriter;
    let _turn = second_cluster_turn();
    let db = pg::database();
    psql(
        &db,
        "CREATE TABLE users (id int PRIMARY KEY, active bool); INSERT INTO users SELECT g, g % 2 = 0 FROM generate_series(1, 10) g",
    );
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        &format!(
            "kind = \"postgres\", url = \"{db}\", scratch_url = \"{}\", probes = [{{ name = \"active\", sql = \"select count(*) from users where active\" }}]",
            second_admin()
        ),
    );
    ws.ok(&["backup", "appdb"]);

    // A writer (a stolen backup host holds the writer key) commits a newer manifest for the
    // same dump whose probes carry SQL of its choosing, under the plan's probe name and a
    // new one: creating a replication slot on whatever server runs them (WAL kept forever,
    // a full disk), and reading a file.
    let slot = "lb_pwned_slot";
    let evil = format!("select pg_create_physical_replication_slot('{slot}') as r");
    let config = lifeboat::config::Config::load(&ws.config()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = lifeboat::engine::open(&config, lifeboat::engine::KeyNeed::Write, None)
            .await
            .unwrap();
        let real = repo.find_snapshot("latest", Some("appdb")).await.unwrap();
        let mut manifest = real.manifest.clone();
        manifest.time += 3600;
        manifest.end_time += 3600;
        let result = manifest.probes["sql"]["active"]["result"].clone();
        manifest.probes.insert(
            "sql".into(),
            serde_json::json!({
                "active": { "sql": evil, "result": result },
                "exfiltrate": { "sql": "select pg_read_file('/etc/passwd') as f", "result": "[]" },
            }),
        );
        let index = std::sync::Arc::new(repo.load_index().await.unwrap());
        let handle = tokio::runtime::Handle::current();
        let targets: Vec<usize> = (0..repo.regions.len()).collect();
        tokio::task::spawn_blocking(move || {
            let writer = BackupWriter::start(
                repo,
                index,
                "appdb",
                &targets,
                handle,
                lifeboat_repo::Cancel::new(),
                Default::default(),
            )
            .unwrap();
            writer.finish(manifest).unwrap();
        })
        .await
        .unwrap();
    });
    let listed = ws.json(&["snapshots", "--plan", "appdb"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let v = ws.json(&["verify", "--restore", "--plan", "appdb"]);
    let t = &v["restore_tests"][0];
    assert_eq!(t["passed"], true, "{v}");
    assert_eq!(
        t["snapshot"], listed[1]["id"],
        "the forged (newest) snapshot was tested: {v}"
    );
    let notes = t["warnings"].to_string();
    assert!(
        notes.contains("\\\"exfiltrate\\\": recorded in the snapshot but not in the plan: not run"),
        "{notes}"
    );
    let slots = format!("select count(*) from pg_replication_slots where slot_name = '{slot}'");
    assert_eq!(pg::admin_sql(pg::second_server(), "postgres", &slots), "0");
    assert_eq!(pg::admin_sql(pg::server(), "postgres", &slots), "0");
    // The forged SQL is nowhere in what the test recorded.
    assert!(
        !v.to_string()
            .contains("pg_create_physical_replication_slot"),
        "{v}"
    );
}

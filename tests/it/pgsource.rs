//! The `postgres` source against a real PostgreSQL (started by `pg`): a database with several
//! tables, schemas, indexes, sequences and non-ASCII data is backed up, changed and backed up
//! again; each snapshot restores into a fresh database with the row counts and probes of its
//! time; restore tests pass, are recorded and reach `status`; a probe that cannot match fails
//! the test; a killed `pg_dump` leaves no snapshot; a wrong password is a clear error that
//! never shows the password.
//!
//! These tests FAIL when PostgreSQL or its client tools are missing: run `make deps`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Workspace;
use crate::pg::{self, psql};

const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, active boolean NOT NULL DEFAULT true);
CREATE INDEX users_name ON users (name);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), note text, amount numeric(10,2));
CREATE INDEX orders_user ON orders (user_id);
CREATE SEQUENCE ticket_seq START 1000;
CREATE SCHEMA billing;
CREATE TABLE billing.\"Invoices\" (id int PRIMARY KEY, ticket bigint DEFAULT nextval('ticket_seq'), memo text);
INSERT INTO users (name, active) VALUES ('Zoë', true), ('東京太郎', true), ('Ольга', false), ('🦀 crab', true);
INSERT INTO orders (user_id, note, amount) SELECT 1 + g % 4, 'note ' || g || ' — ünïcode', g * 1.5 FROM generate_series(1, 500) g;
INSERT INTO billing.\"Invoices\" (id, memo) SELECT g, 'mémo ' || g FROM generate_series(1, 30) g;
";

fn probes_toml() -> &'static str {
    r#"probes = [{ name = "active users", sql = "select count(*) from users where active" }, { name = "names", sql = "select name from users order by id" }]"#
}

fn add_plan(ws: &Workspace, name: &str, source: &str) {
    ws.edit_config(|c| format!("{c}\n[[plans]]\nname = \"{name}\"\nsource = {{ {source} }}\n"));
}

fn snapshot_ids(ws: &Workspace, plan: &str) -> Vec<String> {
    let v = ws.json(&["snapshots", "--plan", plan]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// What the test compares between source and restored databases.
fn state(url: &str) -> String {
    psql(
        url,
        "select (select count(*) from users) || ' ' || (select count(*) from orders) || ' ' || \
         (select count(*) from billing.\"Invoices\") || ' ' || (select string_agg(name, ',' order by id) from users) || ' ' || \
         (select last_value from ticket_seq) || ' ' || (select sum(amount) from orders)",
    )
}

#[test]
fn pgsource_backup_change_backup_restore_each_and_restore_test() {
    let db = pg::database();
    psql(&db, SCHEMA);
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        "appdb",
        &format!(
            "kind = \"postgres\", url = \"{db}\", allow_scratch_on_source = true, {}",
            probes_toml()
        ),
    );
    let day1 = state(&db);
    let first = ws.json(&["backup", "appdb"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    psql(
        &db,
        "INSERT INTO users (name) VALUES ('Ærøskøbing'); UPDATE users SET active = false WHERE id = 1; \
         DELETE FROM orders WHERE id % 7 = 0; INSERT INTO billing.\"Invoices\" (id, memo) VALUES (31, 'new ✓');",
    );
    let day2 = state(&db);
    assert_ne!(day1, day2);
    let second = ws.json(&["backup", "appdb"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let ids = snapshot_ids(&ws, "appdb");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let listed = ws.json(&["snapshots", "--plan", "appdb"]);
    assert_eq!(listed[0]["source"]["kind"], "postgres");
    assert_eq!(listed[0]["source"]["location"], db.as_str());

    // Each snapshot restores into a fresh database with the state of its day.
    for (id, want) in [(&first, &day1), (&second, &day2)] {
        let target = pg::database();
        let out = ws.ok(&["restore", "appdb", "--snapshot", id, "--to", &target]);
        assert!(
            out.contains("every chunk and the whole stream verified"),
            "{out}"
        );
        assert_eq!(&state(&target), want, "snapshot {id}");
        // Indexes and the sequence came back too.
        assert_eq!(
            psql(
                &target,
                "select count(*) from pg_indexes where indexname in ('users_name', 'orders_user')"
            ),
            "2"
        );
    }

    // A non-empty target is refused, then replaced with --force.
    let target = pg::database();
    ws.ok(&["restore", "appdb", "--to", &target]);
    let refused = ws.fails(&["restore", "appdb", "--to", &target], 1);
    assert!(refused.contains("is not empty"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    ws.ok(&["restore", "appdb", "--to", &target, "--force"]);
    assert_eq!(state(&target), day2);
    let with_password = target.replace("postgres@", "postgres:hunter2@");
    let refused = ws.fails(&["restore", "appdb", "--to", &with_password], 1);
    assert!(refused.contains("PGPASSWORD"), "{refused}");
    assert!(!refused.contains("hunter2"), "{refused}");

    // --to - writes the raw pg_restore archive to stdout.
    let out = ws.run(&["restore", "appdb", "--to", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.starts_with(b"PGDMP"),
        "not a custom-format archive"
    );
    let dump = ws.path("appdb.dump");
    std::fs::write(&dump, &out.stdout).unwrap();
    let list = Command::new("pg_restore")
        .arg("-l")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("Invoices"));

    // Parallel restore through a scratch file.
    let target = pg::database();
    ws.ok(&[
        "restore",
        "appdb",
        "--to",
        &target,
        "--jobs",
        "2",
        "--scratch",
        ws.path("").to_str().unwrap(),
    ]);
    assert_eq!(state(&target), day2);

    // The restore test passes, is recorded, and status shows its time.
    let out = ws.ok(&["verify", "--restore", "--plan", "appdb"]);
    assert!(out.starts_with("PASS appdb (postgres)"), "{out}");
    let status = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let plan = status["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == "appdb")
        .unwrap_or_else(|| panic!("no appdb in {status}"));
    assert_eq!(plan["rto"]["last_test_passed"], true, "{plan}");
    assert!(
        plan["rto"]["projected_seconds"].as_f64().is_some(),
        "{plan}"
    );
    // No scratch database is left behind.
    assert_eq!(
        psql(
            &db,
            "select count(*) from pg_database where datname like 'lifeboat_verify_%'"
        ),
        "0"
    );
    // The older snapshot's restore test compares against its own probes.
    let out = ws.ok(&[
        "verify",
        "--restore",
        "--plan",
        "appdb",
        "--snapshot",
        &first,
    ]);
    assert!(out.starts_with("PASS"), "{out}");
}

#[test]
fn pgsource_probe_mismatch_fails_the_restore_test_and_names_the_probe() {
    let db = pg::database();
    psql(&db, SCHEMA);
    let ws = Workspace::new();
    ws.init();
    // current_database() differs in the scratch database: the probe can never match.
    add_plan(
        &ws,
        "appdb",
        &format!("kind = \"postgres\", url = \"{db}\", allow_scratch_on_source = true, probes = [{{ name = \"which db\", sql = \"select current_database()\" }}]"),
    );
    ws.ok(&["backup", "appdb"]);
    let out = ws.fails(&["verify", "--restore", "--plan", "appdb"], 4);
    assert!(out.contains("FAIL appdb (postgres)"), "{out}");
    assert!(out.contains("probe \"which db\""), "{out}");
    assert!(out.contains("lifeboat_verify_"), "{out}");
    // The production database was not touched: same data, no scratch database left.
    assert_eq!(psql(&db, "select count(*) from users"), "4");
    assert_eq!(
        psql(
            &db,
            "select count(*) from pg_database where datname like 'lifeboat_verify_%'"
        ),
        "0"
    );
    let status = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let plan = status["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == "appdb")
        .unwrap()
        .clone();
    assert_eq!(plan["rto"]["last_test_passed"], false, "{plan}");
}

/// Children of `pid` named `name`, from /proc.
fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == name && ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn written_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix("wchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[test]
fn pgsource_killed_pg_dump_fails_the_backup_and_leaves_no_snapshot() {
    let db = pg::database();
    psql(&db, SCHEMA);
    psql(
        &db,
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS payload FROM generate_series(1, 400000) g",
    );
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        "appdb",
        &format!("kind = \"postgres\", url = \"{db}\""),
    );
    ws.ok(&["backup", "appdb"]);
    assert_eq!(snapshot_ids(&ws, "appdb").len(), 1);

    let mut child = ws
        .cmd(&["backup", "appdb"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        assert!(Instant::now() < deadline, "pg_dump never got going");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backup ended ({status}) before pg_dump could be killed: make the table bigger");
        }
        let dumps = children_named(child.id(), "pg_dump");
        if let Some(&pid) = dumps.first() {
            // Mid-stream: some of the dump has been written already.
            if written_bytes(pid) > 4 << 20 {
                let ok = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(ok.success());
                break pid;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pg_dump {killed} killed, backup: {stderr}"
    );
    assert!(
        stderr.contains("pg_dump was killed by signal 9"),
        "{stderr}"
    );
    assert_eq!(
        snapshot_ids(&ws, "appdb").len(),
        1,
        "a snapshot appeared: {stderr}"
    );
    // The repository is intact and the earlier snapshot still restores.
    ws.ok(&["verify"]);
    let target = pg::database();
    ws.ok(&["restore", "appdb", "--to", &target]);
    assert_eq!(psql(&target, "select count(*) from big"), "400000");
}

#[test]
fn pgsource_wrong_password_is_a_clear_error_and_the_password_is_never_shown() {
    let url = pg::password_role("lb_pw_app", "s3cret-right");
    psql(
        &url.replace("lb_pw_app@", "postgres@"),
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); ALTER TABLE t OWNER TO lb_pw_app",
    );
    let ws = Workspace::new();
    ws.init();
    add_plan(
        &ws,
        "pwdb",
        &format!("kind = \"postgres\", url = \"{url}\", password_env = \"LB_TEST_PGPASSWORD\""),
    );
    let home = ws.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |password: &str| {
        ws.cmd(&["backup", "pwdb"])
            .env("LB_TEST_PGPASSWORD", password)
            .env("HOME", &home)
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .output()
            .unwrap()
    };
    let out = run("hunter2-wrong");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("password authentication failed for user \"lb_pw_app\""),
        "{text}"
    );
    assert!(text.contains("password_env"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(snapshot_ids(&ws, "pwdb").is_empty());

    // The right one works, and is in no manifest, log or output.
    let out = run("s3cret-right");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let listed = ws.json(&["snapshots", "--plan", "pwdb"]).to_string();
    assert!(!listed.contains("s3cret"), "{listed}");
    assert!(listed.contains(&url), "{listed}");

    // Without any password source, libpq and lifeboat say so instead of prompting.
    let out = ws
        .cmd(&["backup", "pwdb"])
        .env("HOME", &home)
        .env_remove("LB_TEST_PGPASSWORD")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("LB_TEST_PGPASSWORD"), "{text}");
}

#[test]
fn pgsource_compare_probes_names_every_table_and_probe_that_differs() {
    use lifeboat::config::SqlProbe;
    use lifeboat::source::postgres::{compare_probes, PgTarget};
    let db = pg::database();
    psql(&db, SCHEMA);
    // The manifest's recorded "sql" text (old format, or forged) is never run: the plan's
    // queries are, and only the recorded results are compared.
    let recorded = serde_json::json!({
        "tables": {
            "public.users": 5,
            "public.orders": 500,
            "public.gone": 7,
            "billing.Invoices": 30,
        },
        "sql": {
            "active users": { "sql": "select 99 as count", "result": "[{\"count\":99}]" },
            "names": { "result": "[{\"name\":\"Zoë\"}]" },
            "forged": { "sql": "select pg_sleep(30)", "result": "[]" },
        },
    });
    let probes = vec![
        SqlProbe {
            name: "active users".into(),
            sql: "select count(*) from users where active".into(),
        },
        SqlProbe {
            name: "names".into(),
            sql: "select name from users where id = 1".into(),
        },
        SqlProbe {
            name: "new".into(),
            sql: "select 1".into(),
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = rt.block_on(async {
        let target = PgTarget {
            url: &db,
            password: None,
        };
        let mut conn = target.connect().await.unwrap();
        compare_probes(&mut conn, recorded.as_object().unwrap(), &probes)
            .await
            .unwrap()
    });
    assert_eq!(
        check.differences,
        vec![
            "table public.gone: missing after restore (7 rows at backup)".to_string(),
            "table public.users: 4 rows after restore, 5 at backup".to_string(),
            "probe \"active users\": [{\"count\":3}] after restore, [{\"count\":99}] at backup"
                .to_string(),
        ]
    );
    assert_eq!(check.notes.len(), 2, "{:?}", check.notes);
    assert!(check.notes[0].starts_with("probe \"new\": no result recorded"));
    assert!(check.notes[1]
        .starts_with("probe \"forged\": recorded in the snapshot but not in the plan: not run"));
}

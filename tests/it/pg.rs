//! Throwaway PostgreSQL servers for the tests: one cluster per test process ([`server`]),
//! and a second one on another port ([`second_server`], started only by the tests that ask
//! for it: a "fresh server" that lacks the first one's roles, and a scratch server that is
//! not the source). Each is created with Debian's `initdb` in a temporary directory owned by
//! the `postgres` user (PostgreSQL refuses to run as root), listens on a free port on
//! 127.0.0.1 with trust authentication, and is removed by a watchdog when the test process
//! exits. Each test gets its own database.
//!
//! A test that needs it FAILS when PostgreSQL is not installed: run `make deps`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Roles in this group authenticate with a password (scram-sha-256); see [`password_role`].
pub const PASSWORD_GROUP: &str = "lb_password_auth";

pub struct PgServer {
    pub port: u16,
}

pub fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make deps`")
    })
}

pub fn as_postgres(program: &Path) -> Command {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `initdb` a trust-authenticated cluster in `dir/data` (`dir` is made if need be and given,
/// with what it holds, to the postgres user); returns the data directory.
pub fn initdb(dir: &Path) -> PathBuf {
    let bin = bin_dir();
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join("data");
    // The postgres user owns the cluster directory.
    let owner = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(
        owner.success(),
        "chown {} to postgres failed",
        dir.display()
    );
    let out = as_postgres(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Start the cluster in `dir` on 127.0.0.1:`port` with extra server `options`, and arrange
/// for it to be stopped and removed when this test process exits, however it exits.
pub fn pg_ctl_start(dir: &Path, port: u16, options: &str) {
    let bin = bin_dir();
    let data = dir.join("data");
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {options}",
        dir.display()
    );
    let out = as_postgres(&bin.join("pg_ctl"))
        .args(["-w", "-t", "60", "-D"])
        .arg(&data)
        .args(["-l"])
        .arg(dir.join("log"))
        .args(["-o", &opts, "start"])
        .output()
        .expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}{}\nlog: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    );
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1 || \
         {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // Never waited on: it must outlive this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the PostgreSQL watchdog");
}

fn start(tag: &str) -> PgServer {
    let dir = std::env::temp_dir().join(format!("lifeboat-pg-{}{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = initdb(&dir);
    // Members of PASSWORD_GROUP must give a password (tests of wrong passwords); everyone
    // else is trusted. The group need not exist yet: membership is checked per connection.
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .expect("write pg_hba.conf");
    let port = free_port();
    pg_ctl_start(&dir, port, "-c max_connections=200");
    PgServer { port }
}

pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| start(""))
}

/// A second cluster, on another port: it shares nothing with [`server`] (roles included).
pub fn second_server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| start("-second"))
}

/// Run `sql` as the `postgres` superuser in database `db` of `server`; stdout, trimmed.
pub fn admin_sql(server: &PgServer, db: &str, sql: &str) -> String {
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", server.port);
    run_psql(as_postgres(&bin_dir().join("psql")), &url, sql)
}

/// Run SQL through psql (the client tools must be installed) on the database at `url`;
/// returns unaligned output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    run_psql(Command::new("psql"), url, sql)
}

fn run_psql(mut psql: Command, url: &str, sql: &str) -> String {
    let out = psql
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e} (PostgreSQL client tools missing: run `make deps`)"));
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A login role that must authenticate with `password`, owning database `db` (created);
/// returns the database URL without the password.
pub fn password_role(role: &str, password: &str) -> String {
    let server = server();
    let db = format!("{role}_db");
    let statements = [
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PASSWORD_GROUP}') \
             THEN CREATE ROLE {PASSWORD_GROUP} NOLOGIN; END IF; END $$"
        ),
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {PASSWORD_GROUP}"),
        format!("CREATE DATABASE {db} OWNER {role}"),
    ];
    for statement in &statements {
        admin_sql(server, "postgres", statement);
    }
    format!("postgres://{role}@127.0.0.1:{}/{db}", server.port)
}

/// A fresh, empty database on the shared server; returns its URL.
pub fn database() -> String {
    database_on(server())
}

/// A fresh, empty database on `server`; returns its URL.
pub fn database_on(server: &PgServer) -> String {
    let name = format!("lb_{}", next());
    admin_sql(server, "postgres", &format!("CREATE DATABASE {name}"));
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

fn next() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

//! Encryption in transit: a PostgreSQL cluster of this module's own with `ssl = on`, a
//! certificate from a throwaway CA (made with the `openssl` CLI) and `pg_hba.conf` refusing
//! every connection without TLS; the catalog, the `postgres` source (probes, `pg_dump`) and
//! `pg_restore` against it with `sslmode=verify-full`; a wrong CA and `sslmode=require`
//! against the plain server of `pg` fail with the URL (never the password) in the message.
//! And the config's refusal of plain `http://` S3 endpoints and webhooks off loopback.
//!
//! Like `pg`, a test here FAILS when PostgreSQL or openssl is not installed (`make deps`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lifeboat::catalog::Catalog;

use crate::common::Workspace;
use crate::pg;

struct TlsServer {
    port: u16,
    /// The CA that signed the server's certificate, and one that did not.
    ca: PathBuf,
    wrong_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (install it: `make deps`)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME.pem`, `NAME.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=lifeboat test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn start() -> TlsServer {
    let dir = std::env::temp_dir().join(format!("lifeboat-pgtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir, "ca");
    make_ca(&dir, "wrong-ca");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    let data = pg::initdb(&dir);
    // TLS or nothing: a client that does not negotiate TLS is rejected by the server.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    for (from, to) in [("server.crt", "server.crt"), ("server.key", "server.key")] {
        std::fs::copy(dir.join(from), data.join(to)).unwrap();
    }
    let fix = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chown postgres:postgres {d}/server.crt {d}/server.key {d}/pg_hba.conf && chmod 600 {d}/server.key && chmod 644 {root}/*.pem",
            d = data.display(),
            root = dir.display()
        ))
        .status()
        .unwrap();
    assert!(fix.success());
    let port = pg::free_port();
    pg::pg_ctl_start(
        &dir,
        port,
        "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
    );
    TlsServer {
        port,
        ca: dir.join("ca.pem"),
        wrong_ca: dir.join("wrong-ca.pem"),
    }
}

fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A URL of database `db` on the TLS server with `sslmode` and the CA file `ca`.
fn url(db: &str, mode: &str, ca: &Path) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{db}?sslmode={mode}&sslrootcert={}",
        server().port,
        ca.display()
    )
}

fn psql(db: &str, sql: &str) {
    let out = pg::as_postgres(&pg::bin_dir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server().port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGSSLMODE", "require")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tls_verify_full_with_the_right_ca_connects_encrypted() {
    let s = server();
    let catalog = Catalog::open(&url("postgres", "verify-full", &s.ca))
        .await
        .expect("catalog over verify-full");
    let row: (i64,) = sqlx::query_as(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END::BIGINT FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(catalog.pool())
    .await
    .unwrap();
    assert_eq!(row.0, 1, "the catalog connection is encrypted");
    let version: (String,) =
        sqlx::query_as("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
    assert!(
        version.0 == "TLSv1.3" || version.0 == "TLSv1.2",
        "{}",
        version.0
    );
}

#[tokio::test]
async fn tls_verify_full_with_a_wrong_ca_fails_naming_the_url_not_the_password() {
    let s = server();
    let with_password =
        url("postgres", "verify-full", &s.wrong_ca).replace("postgres@", "postgres:s3cr3t-pw@");
    let err = Catalog::open(&with_password)
        .await
        .expect_err("a server certificate from another CA is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "open catalog postgres://postgres@127.0.0.1:{}/postgres",
            s.port
        )),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-pw"), "password leaked: {text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.to_lowercase().contains("tls"),
        "the reason is a certificate problem: {text}"
    );
}

#[tokio::test]
async fn tls_require_against_a_server_without_tls_fails() {
    let plain = pg::database();
    let sep = if plain.contains('?') { '&' } else { '?' };
    let err = Catalog::open(&format!("{plain}{sep}sslmode=require"))
        .await
        .expect_err("sslmode=require against a plain server");
    let text = format!("{err:#}");
    assert!(text.contains("open catalog postgres://"), "{text}");
    // And without TLS against the TLS-only server: refused by its pg_hba.conf.
    let s = server();
    let err = Catalog::open(&url("postgres", "disable", &s.ca))
        .await
        .expect_err("sslmode=disable against a TLS-only server");
    assert!(format!("{err:#}").contains("open catalog"), "{err:#}");
}

/// Probes, `pg_dump` and `pg_restore` (libpq children, with `PGSSLMODE=disable` inherited
/// to tempt them) all reach the TLS-only server through verify-full.
#[test]
fn tls_postgres_backup_restore_and_probes_over_verify_full() {
    let s = server();
    let n = std::process::id();
    let (src, dst) = (format!("tls_src_{n}"), format!("tls_dst_{n}"));
    psql("postgres", &format!("CREATE DATABASE {src}"));
    psql("postgres", &format!("CREATE DATABASE {dst}"));
    psql(&src, "CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g");
    let ws = Workspace::new();
    ws.init();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"tlsdb\"\nsource = {{ kind = \"postgres\", url = \"{}\", probes = [{{ name = \"rows\", sql = \"select count(*) from t\" }}] }}\n",
            url(&src, "verify-full", &s.ca)
        )
    });
    let out = ws
        .cmd(&["backup", "tlsdb", "--json"])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let to = url(&dst, "verify-full", &s.ca);
    let out = ws
        .cmd(&["restore", "tlsdb", "--to", &to])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = lifeboat::source::postgres::PgTarget {
        url: &to,
        password: None,
    };
    let count = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut conn = target.connect().await.unwrap();
            let row: (i64,) = sqlx::query_as("SELECT count(*) FROM t")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            row.0
        });
    assert_eq!(count, 50, "restored through pg_restore over TLS");
    // A wrong CA for the source fails the backup, naming the server.
    ws.edit_config(|c| c.replace("ca.pem", "wrong-ca.pem"));
    let text = ws.fails(&["backup", "tlsdb"], 1);
    assert!(text.contains(&format!("127.0.0.1:{}", s.port)), "{text}");
}

#[test]
fn tls_plain_http_endpoints_and_webhooks_are_refused_off_loopback() {
    let ws = Workspace::new();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[regions]]\nname = \"minio\"\nkind = \"s3\"\nbucket = \"lifeboat-test\"\nregion = \"us-east-1\"\nendpoint = \"http://minio.internal:9000\"\n"
        )
    });
    let text = ws.fails(&["status"], 2);
    assert!(text.contains("lifeboat.toml:"), "{text}");
    assert!(
        text.contains(".endpoint: plain http:// to minio.internal"),
        "{text}"
    );
    assert!(text.contains("allow_insecure = true"), "{text}");
    // Allowed explicitly: the config loads.
    ws.edit_config(|c| {
        c.replace(
            "endpoint = \"http://minio.internal:9000\"",
            "endpoint = \"http://minio.internal:9000\"\nallow_insecure = true",
        )
    });
    let out = ws.run(&["status", "--json"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "{text}");
    // --region arguments follow the same rule.
    let out = std::process::Command::new(crate::common::bin())
        .args([
            "--region",
            "a=s3://lifeboat-test?endpoint=http://10.9.8.7:9000",
            "snapshots",
        ])
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain http://"));

    // Webhooks: refused off loopback (exit 2), loopback accepted.
    let ws = Workspace::new();
    ws.init();
    let text = ws.fails(&["run-due", "--webhook", "http://10.9.8.7/hook"], 2);
    assert!(text.contains("plain http:// to 10.9.8.7"), "{text}");
    assert!(
        !text.contains("/hook"),
        "the URL's path may be a token: {text}"
    );
    ws.ok(&["run-due", "--webhook", "http://127.0.0.1:9/hook"]);
    ws.ok(&[
        "run-due",
        "--webhook",
        "http://10.9.8.7/hook",
        "--allow-insecure-webhooks",
    ]);
}

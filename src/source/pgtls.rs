//! TLS of PostgreSQL connections, said the same way to lifeboat's own connections and to
//! the libpq children (`pg_dump`, `pg_restore`).
//!
//! lifeboat connects through sqlx (rustls on aws-lc, TLS 1.3 or 1.2 only), which reads
//! `sslmode` and `sslrootcert` from the URL, else `PGSSLMODE`/`PGSSLROOTCERT`, else
//! `prefer`. The children get `--dbname=URL` (libpq reads the same parameters from it) and
//! [`libpq_env`] on top, so an inherited `PGSSLMODE` cannot make a child weaker than
//! lifeboat's own connection. `verify-full` with `sslrootcert=FILE` is the production
//! setting (docs/operations.md): `prefer` and `require` encrypt but do not authenticate the
//! server, and without `sslrootcert` sqlx trusts the Mozilla roots while libpq looks for
//! `~/.postgresql/root.crt`, so name the CA file.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// libpq's name of a mode.
pub fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// `sslrootcert` as the URL gives it (sqlx also accepts `ssl-root-cert` and `ssl-ca`).
fn root_cert(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| matches!(k.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
        .map(|(_, v)| v.into_owned())
}

/// The variables a libpq child of a connection to `url` gets: `PGSSLMODE` as sqlx resolves
/// it for `url`, and `PGSSLROOTCERT` when the URL names a CA file. Empty for text that is
/// not a PostgreSQL URL (the child then fails on it as lifeboat's own connection does).
pub fn libpq_env(url: &str) -> Vec<(&'static str, String)> {
    let Ok(opts) = PgConnectOptions::from_str(url) else {
        return Vec::new();
    };
    let mut env = vec![("PGSSLMODE", mode_name(opts.get_ssl_mode()).to_string())];
    if let Some(ca) = root_cert(url) {
        env.push(("PGSSLROOTCERT", ca));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::libpq_env;

    #[test]
    fn children_get_the_urls_tls_settings() {
        let env = libpq_env(
            "postgres://app@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/etc/lifeboat/ca.pem",
        );
        assert_eq!(
            env,
            vec![
                ("PGSSLMODE", "verify-full".to_string()),
                ("PGSSLROOTCERT", "/etc/lifeboat/ca.pem".to_string())
            ]
        );
        let env = libpq_env("postgres://app@127.0.0.1/app?sslmode=require");
        assert_eq!(env, vec![("PGSSLMODE", "require".to_string())]);
        assert!(libpq_env("not a url").is_empty());
    }
}

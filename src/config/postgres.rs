//! The rules of a postgres source that reach beyond one key: where its restore tests may
//! create scratch databases. A restore test `pg_restore`s a dump from the bucket (a writer,
//! or anyone who can forge a manifest, chose its content), so it runs on `scratch_url`, a
//! server that is not the source's, unless `allow_scratch_on_source = true` says otherwise.
//! "The same server" is decided on host and port after name resolution: `localhost`,
//! `127.0.0.1` and a Unix socket on the same port are one server.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};

use super::{Config, ConfigError, PlanConfig, SourceConfig};

/// Where a PostgreSQL URL connects: the addresses its host resolves to (a Unix socket
/// directory counts as loopback), the host as written, and the port.
struct Endpoint {
    host: String,
    addrs: BTreeSet<IpAddr>,
    port: u16,
}

fn endpoint(url: &str) -> Option<Endpoint> {
    let u = url::Url::parse(url).ok()?;
    let mut host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let mut port = u.port();
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "host" if host.is_empty() => host = v.to_ascii_lowercase(),
            "port" => port = v.parse().ok().or(port),
            _ => {}
        }
    }
    let port = port.unwrap_or(5432);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs = if host.is_empty() || host.starts_with('/') {
        // A Unix socket: this host's server.
        [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ]
        .into()
    } else {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    Some(Endpoint { host, addrs, port })
}

/// Whether two PostgreSQL URLs reach the same server (same port, and the same host name or
/// an address in common). Text that is not a URL counts as the same server: refuse, not guess.
pub fn same_server(a: &str, b: &str) -> bool {
    let (Some(a), Some(b)) = (endpoint(a), endpoint(b)) else {
        return true;
    };
    if a.port != b.port {
        return false;
    }
    let loopback = |e: &Endpoint| e.addrs.iter().any(IpAddr::is_loopback);
    a.host == b.host
        || a.addrs.intersection(&b.addrs).next().is_some()
        || (loopback(&a) && loopback(&b))
}

/// The answer when a restore test has nowhere safe to run, for messages.
pub const SCRATCH_HINT: &str = "set scratch_url = \"postgres://USER@OTHER-HOST:5432/postgres\" (a server that is not the source's, a role with CREATEDB and CREATEROLE that is not a superuser), or set allow_scratch_on_source = true to accept restoring snapshots from the bucket onto the production server";

impl Config {
    /// The maintenance-database URL where `plan`'s restore tests and drills create scratch
    /// databases: `scratch_url`, or the source's server when `allow_scratch_on_source` is
    /// set. A config error (exit 2) when the plan has neither.
    pub fn scratch_admin_url(&self, plan: &PlanConfig) -> Result<String, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            file: self.path.clone(),
            at: None,
            key: format!("plan {}: source.scratch_url", plan.name),
            problem,
        };
        let SourceConfig::Postgres {
            url,
            scratch_url,
            allow_scratch_on_source,
            ..
        } = &plan.source
        else {
            return Err(invalid("not a postgres plan".into()));
        };
        match (scratch_url, allow_scratch_on_source) {
            (Some(u), _) => Ok(u.clone()),
            (None, true) => {
                let mut u = url::Url::parse(url).map_err(|e| invalid(format!("{e}")))?;
                u.set_path("/postgres");
                Ok(u.to_string())
            }
            (None, false) => Err(invalid(format!(
                "missing: a restore test of plan {} restores a snapshot from the bucket and runs the plan's probes on it, so it needs a scratch server other than the source: {SCRATCH_HINT}",
                plan.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_server;

    #[test]
    fn same_server_compares_host_and_port_after_resolving() {
        let same = [
            (
                "postgres://a@127.0.0.1:5432/x",
                "postgres://b@localhost/postgres",
            ),
            (
                "postgres://a@db.internal/x",
                "postgres://b@DB.internal:5432/y",
            ),
            (
                "postgres://a@/x?host=/run/postgresql",
                "postgres://b@127.0.0.1/y",
            ),
            ("postgres://a@[::1]:6000/x", "postgres://b@127.0.0.1:6000/y"),
            (
                "postgres://a@127.0.0.1/x",
                "postgres://b@127.0.0.1/x?port=5432",
            ),
            ("not a url", "postgres://b@127.0.0.1/y"),
        ];
        for (a, b) in same {
            assert!(same_server(a, b), "{a} vs {b}");
        }
        let different = [
            (
                "postgres://a@127.0.0.1:5432/x",
                "postgres://b@127.0.0.1:5433/postgres",
            ),
            (
                "postgres://a@127.0.0.1/x",
                "postgres://b@127.0.0.1/x?port=6543",
            ),
            ("postgres://a@192.0.2.1/x", "postgres://b@192.0.2.2/x"),
        ];
        for (a, b) in different {
            assert!(!same_server(a, b), "{a} vs {b}");
        }
    }
}

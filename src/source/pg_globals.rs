//! A postgres plan's **globals**: the cluster's roles and their memberships, which a
//! database dump does not hold. A backup stores `pg_dumpall --globals-only` (without
//! password hashes unless the plan sets `globals_with_passwords`) as a second file of the
//! snapshot, [`GLOBALS_NAME`], beside the dump.
//!
//! A restore onto a server that lacks the roles creates them first, but never by running
//! the stored script: the text came from the bucket, where a writer (or anyone who forged a
//! manifest) chose it. It is parsed ([`parse`]) into roles, their attributes and
//! memberships, and lifeboat writes its own statements from that, with quoted identifiers:
//! only roles that are missing are created, an existing role is never altered (no
//! attribute, password or membership of it changes), and `SUPERUSER`, `REPLICATION` and
//! `BYPASSRLS` are never granted (they are listed for the operator to grant by hand).
//! Everything else in the script (tablespaces, role settings, comments) is listed as not
//! applied. A restore test creates missing roles `NOLOGIN` without any attribute or
//! password, and drops them afterwards.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::postgres::{passfile, PgTarget};

/// The globals file's name in a postgres snapshot's root tree.
pub const GLOBALS_NAME: &str = "postgres.globals.sql";

/// `pg_dumpall --globals-only` of `target`'s cluster on stdout, and the password file it
/// reads (keep it until the child exits). Without `with_passwords`, `--no-role-passwords`:
/// no password hash leaves the server, and a role without superuser can take it.
pub fn pg_dumpall_command(
    target: &PgTarget<'_>,
    with_passwords: bool,
) -> Result<(std::process::Command, Option<tempfile::NamedTempFile>)> {
    let mut cmd = std::process::Command::new("pg_dumpall");
    cmd.args(["--globals-only", "--no-password"]);
    if !with_passwords {
        cmd.arg("--no-role-passwords");
    }
    cmd.arg(format!("--dbname={}", target.url))
        .envs(super::pgtls::libpq_env(target.url));
    let pass = passfile(target.password)?;
    if let Some(p) = &pass {
        cmd.env("PGPASSFILE", p.path()).env_remove("PGPASSWORD");
    }
    Ok((cmd, pass))
}

/// One role of the globals script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Attribute keywords (`LOGIN`, `NOINHERIT`, `CREATEDB`, …) as the script gave them,
    /// only from the closed list lifeboat knows.
    pub attributes: Vec<String>,
    pub connection_limit: Option<i64>,
    /// A password hash (only with `globals_with_passwords`).
    pub password: Option<String>,
    pub valid_until: Option<String>,
}

/// `GRANT role TO member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub role: String,
    pub member: String,
    pub admin: bool,
}

/// What a globals script says, as far as lifeboat applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globals {
    pub roles: Vec<Role>,
    pub memberships: Vec<Membership>,
    /// Statements not applied, shortened (e.g. `CREATE TABLESPACE …`).
    pub not_applied: Vec<String>,
}

/// Attributes a role keeps when lifeboat creates it.
const KEPT: &[&str] = &[
    "LOGIN",
    "NOLOGIN",
    "INHERIT",
    "NOINHERIT",
    "CREATEDB",
    "NOCREATEDB",
    "CREATEROLE",
    "NOCREATEROLE",
    "NOSUPERUSER",
    "NOREPLICATION",
    "NOBYPASSRLS",
];
/// Attributes lifeboat never grants.
const NEVER: &[&str] = &["SUPERUSER", "REPLICATION", "BYPASSRLS"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word, kept as written (keywords are compared without case).
    Word(String),
    /// A `"quoted"` identifier, unescaped.
    Quoted(String),
    /// A `'string'`, unescaped.
    Str(String),
    Punct(char),
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    /// An identifier: a quoted one as is, a bare one folded to lower case.
    fn ident(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_lowercase()),
            Token::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }
}

/// Split a script into statements of tokens; comments dropped. `None` for text it cannot
/// read (an unterminated quote, dollar quoting), which is then not applied at all.
fn statements(text: &str) -> Option<Vec<Vec<Token>>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        q if q == c && chars.peek() == Some(&c) => {
                            chars.next();
                            s.push(c);
                        }
                        q if q == c => break,
                        other => s.push(other),
                    }
                }
                cur.push(if c == '"' {
                    Token::Quoted(s)
                } else {
                    Token::Str(s)
                });
            }
            '$' => return None,
            c if c.is_whitespace() => {}
            c if c.is_alphanumeric() || c == '_' => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                cur.push(Token::Word(w));
            }
            other => cur.push(Token::Punct(other)),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Some(out)
}

fn describe(stmt: &[Token]) -> String {
    let words: Vec<String> = stmt
        .iter()
        .take(4)
        .map(|t| match t {
            Token::Word(w) => w.clone(),
            Token::Quoted(q) => format!("\"{q}\""),
            Token::Str(_) => "'…'".into(),
            Token::Punct(p) => p.to_string(),
        })
        .collect();
    format!("{} …", words.join(" "))
}

/// Read a `pg_dumpall --globals-only` script. Never fails: what it cannot read is listed in
/// `not_applied`.
pub fn parse(text: &str) -> Globals {
    let mut g = Globals::default();
    let Some(stmts) = statements(text) else {
        g.not_applied
            .push("the whole script (it holds quoting lifeboat does not read)".into());
        return g;
    };
    for stmt in stmts {
        if !parse_one(&stmt, &mut g) {
            g.not_applied.push(describe(&stmt));
        }
    }
    g
}

/// Apply one statement to `g`; false when it is not one lifeboat applies.
fn parse_one(s: &[Token], g: &mut Globals) -> bool {
    let at = |i: usize| s.get(i);
    if at(0).is_some_and(|t| t.is("SET")) {
        return true; // session settings of the script itself
    }
    if s.len() == 3 && s[0].is("CREATE") && s[1].is("ROLE") {
        let Some(name) = s[2].ident() else {
            return false;
        };
        if !g.roles.iter().any(|r| r.name == name) {
            g.roles.push(Role {
                name,
                attributes: Vec::new(),
                connection_limit: None,
                password: None,
                valid_until: None,
            });
        }
        return true;
    }
    if s.len() >= 4 && s[0].is("ALTER") && s[1].is("ROLE") && s[3].is("WITH") {
        let Some(name) = s[2].ident() else {
            return false;
        };
        let mut role = Role {
            name: name.clone(),
            attributes: Vec::new(),
            connection_limit: None,
            password: None,
            valid_until: None,
        };
        let mut i = 4;
        while i < s.len() {
            match &s[i] {
                t if t.is("CONNECTION") && at(i + 1).is_some_and(|t| t.is("LIMIT")) => {
                    match at(i + 2) {
                        Some(Token::Word(n)) => match n.parse() {
                            Ok(n) => role.connection_limit = Some(n),
                            Err(_) => return false,
                        },
                        _ => return false,
                    }
                    i += 3;
                }
                t if t.is("PASSWORD") => {
                    match at(i + 1) {
                        Some(Token::Str(p)) => role.password = Some(p.clone()),
                        Some(t) if t.is("NULL") => {}
                        _ => return false,
                    }
                    i += 2;
                }
                t if t.is("VALID") && at(i + 1).is_some_and(|t| t.is("UNTIL")) => {
                    match at(i + 2) {
                        Some(Token::Str(v)) => role.valid_until = Some(v.clone()),
                        _ => return false,
                    }
                    i += 3;
                }
                Token::Word(w) if KEPT.iter().chain(NEVER).any(|k| k.eq_ignore_ascii_case(w)) => {
                    role.attributes.push(w.to_ascii_uppercase());
                    i += 1;
                }
                _ => return false,
            }
        }
        match g.roles.iter_mut().find(|r| r.name == name) {
            Some(r) => *r = role,
            None => g.roles.push(role),
        }
        return true;
    }
    if s.len() >= 4 && s[0].is("GRANT") && s[2].is("TO") {
        let (Some(role), Some(member)) = (s[1].ident(), s[3].ident()) else {
            return false;
        };
        // WITH ADMIN OPTION (to 15), WITH ADMIN TRUE / ADMIN OPTION, … (16+); GRANTED BY
        // names the grantor, which is whoever restores.
        let rest: Vec<&Token> = s[4..].iter().collect();
        let admin = rest
            .windows(2)
            .any(|w| w[0].is("ADMIN") && (w[1].is("OPTION") || w[1].is("TRUE")));
        g.memberships.push(Membership {
            role,
            member,
            admin,
        });
        return true;
    }
    false
}

/// How roles are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleMode {
    /// A restore: the recorded attributes (never SUPERUSER, REPLICATION, BYPASSRLS) and
    /// password hash, memberships of the roles created.
    Restore,
    /// A restore test: `NOLOGIN`, nothing else; memberships of the roles created.
    Scratch,
}

/// What [`create_missing_roles`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RolesReport {
    /// Roles created, in script order.
    pub created: Vec<String>,
    /// Roles of the script that the server already had (left as they were).
    pub present: Vec<String>,
    /// `GRANT role TO member` applied (members created here).
    pub memberships: Vec<String>,
    /// What was recorded but not applied, and why, for the operator to do by hand.
    pub not_applied: Vec<String>,
}

/// `"name"`, quoted for SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, quoted for SQL.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The `CREATE ROLE` statement for `role` in `mode`, and attributes left out.
fn create_statement(role: &Role, mode: RoleMode) -> (String, Vec<String>) {
    let mut sql = format!("CREATE ROLE {}", quote(&role.name));
    let mut left_out = Vec::new();
    match mode {
        RoleMode::Scratch => sql.push_str(" NOLOGIN"),
        RoleMode::Restore => {
            let mut with = Vec::new();
            for a in &role.attributes {
                if NEVER.contains(&a.as_str()) {
                    left_out.push(format!("{a} of role {}", role.name));
                } else {
                    with.push(a.clone());
                }
            }
            if let Some(n) = role.connection_limit {
                with.push(format!("CONNECTION LIMIT {n}"));
            }
            if let Some(p) = &role.password {
                with.push(format!("PASSWORD {}", literal(p)));
            }
            if let Some(v) = &role.valid_until {
                with.push(format!("VALID UNTIL {}", literal(v)));
            }
            if !with.is_empty() {
                sql.push_str(" WITH ");
                sql.push_str(&with.join(" "));
            }
        }
    }
    (sql, left_out)
}

/// Create the roles of `globals` that the connected server lacks, in one transaction (all
/// or none), and the memberships of those roles. Existing roles are not touched.
pub async fn create_missing_roles(
    conn: &mut PgConnection,
    globals: &Globals,
    mode: RoleMode,
) -> Result<RolesReport> {
    let existing: BTreeSet<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles")
        .fetch_all(&mut *conn)
        .await
        .context("list the target server's roles")?
        .into_iter()
        .collect();
    let mut report = RolesReport {
        not_applied: globals
            .not_applied
            .iter()
            .map(|s| format!("{s} (not applied by lifeboat)"))
            .collect(),
        ..Default::default()
    };
    let mut tx = conn.begin().await.context("begin creating roles")?;
    for role in &globals.roles {
        if existing.contains(&role.name) {
            report.present.push(role.name.clone());
            continue;
        }
        let (sql, left_out) = create_statement(role, mode);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .with_context(|| {
                format!(
                    "create role {} (the connecting role needs CREATEROLE)",
                    role.name
                )
            })?;
        report.created.push(role.name.clone());
        report.not_applied.extend(
            left_out
                .into_iter()
                .map(|a| format!("{a} (lifeboat never grants it; grant it by hand if intended)")),
        );
    }
    let created: BTreeSet<&String> = report.created.iter().collect();
    for m in &globals.memberships {
        let role_known = existing.contains(&m.role) || created.contains(&m.role);
        if !created.contains(&m.member) || !role_known {
            // Between two roles that were there already, the membership is the server's
            // business; a new role's membership in an existing role is not given to it.
            if !role_known {
                report.not_applied.push(format!(
                    "GRANT {} TO {} (role {} is not on the server)",
                    m.role, m.member, m.role
                ));
            } else if created.contains(&m.role) {
                report.not_applied.push(format!(
                    "GRANT {} TO {} (role {} was already there and is left as it was)",
                    m.role, m.member, m.member
                ));
            }
            continue;
        }
        let sql = format!(
            "GRANT {} TO {}{}",
            quote(&m.role),
            quote(&m.member),
            if m.admin { " WITH ADMIN OPTION" } else { "" }
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("grant role {} to {}", m.role, m.member))?;
        report
            .memberships
            .push(format!("{} to {}", m.role, m.member));
    }
    tx.commit().await.context("commit the new roles")?;
    Ok(report)
}

/// Drop roles a restore test created (after its scratch database is gone).
pub async fn drop_roles(conn: &mut PgConnection, roles: &[String]) -> Result<()> {
    for r in roles.iter().rev() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {}",
            quote(r)
        )))
        .execute(&mut *conn)
        .await
        .with_context(|| format!("drop role {r}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5;
CREATE ROLE "Read""er";
ALTER ROLE "Read""er" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x' VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE boss;
ALTER ROLE boss WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
ALTER ROLE app_owner SET search_path TO 'app', 'public';
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';

--
-- Role memberships
--

GRANT app_owner TO "Read""er" WITH ADMIN OPTION GRANTED BY postgres;
GRANT boss TO app_owner WITH INHERIT TRUE GRANTED BY postgres;
"#;

    #[test]
    fn parse_reads_roles_attributes_and_memberships_and_lists_the_rest() {
        let g = parse(SCRIPT);
        let names: Vec<&str> = g.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app_owner", "Read\"er", "boss"]);
        assert_eq!(g.roles[0].connection_limit, Some(5));
        assert!(g.roles[0].attributes.contains(&"LOGIN".to_string()));
        assert_eq!(g.roles[1].password.as_deref(), Some("SCRAM-SHA-256$4096:x"));
        assert_eq!(
            g.roles[1].valid_until.as_deref(),
            Some("2030-01-01 00:00:00+00")
        );
        assert_eq!(
            g.memberships,
            vec![
                Membership {
                    role: "app_owner".into(),
                    member: "Read\"er".into(),
                    admin: true
                },
                Membership {
                    role: "boss".into(),
                    member: "app_owner".into(),
                    admin: false
                },
            ]
        );
        assert_eq!(g.not_applied.len(), 2, "{:?}", g.not_applied);
        assert!(g.not_applied[0].starts_with("ALTER ROLE app_owner SET"));
        assert!(g.not_applied[1].starts_with("CREATE TABLESPACE fast"));
    }

    #[test]
    fn create_statements_never_grant_superuser_and_quote_everything() {
        let g = parse(SCRIPT);
        let (sql, left_out) = create_statement(&g.roles[2], RoleMode::Restore);
        assert_eq!(
            sql,
            "CREATE ROLE \"boss\" WITH INHERIT CREATEROLE CREATEDB LOGIN"
        );
        assert_eq!(left_out.len(), 3, "{left_out:?}");
        let (sql, _) = create_statement(&g.roles[1], RoleMode::Restore);
        assert!(sql.starts_with("CREATE ROLE \"Read\"\"er\" WITH"), "{sql}");
        assert!(sql.contains("PASSWORD 'SCRAM-SHA-256$4096:x'"), "{sql}");
        let (sql, left_out) = create_statement(&g.roles[2], RoleMode::Scratch);
        assert_eq!(sql, "CREATE ROLE \"boss\" NOLOGIN");
        assert!(left_out.is_empty());
    }

    #[test]
    fn statements_lifeboat_does_not_know_are_never_applied() {
        // Injection attempts: anything but the closed forms is listed, not run.
        let g = parse(
            "CREATE ROLE x; DROP TABLE users; ALTER ROLE x WITH LOGIN; SELECT pg_sleep(1);\n\
             ALTER ROLE x WITH LOGIN; DO $$ BEGIN END $$;",
        );
        assert_eq!(g.roles.len(), 0);
        assert_eq!(g.not_applied.len(), 1, "{:?}", g.not_applied);
        let g = parse("CREATE ROLE x; DROP TABLE users; ALTER ROLE x WITH LOGIN SUPERUSERX;");
        assert_eq!(g.roles.len(), 1);
        assert!(g.roles[0].attributes.is_empty());
        assert_eq!(g.not_applied.len(), 2, "{:?}", g.not_applied);
    }
}

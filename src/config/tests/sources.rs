//! The postgres and command source kinds' keys, and the errors that name them.

use super::*;

#[test]
fn postgres_sources_resolve_with_secrets_by_reference() {
    let config = parse(&with_source(
        r#"kind = "postgres", url = "postgres://app@db:5432/app", password_env = "APP_PGPASSWORD", probes = [{ name = "active users", sql = "select count(*) from users where active;" }], scratch_url = "postgres://admin@db:6543/postgres", globals_with_passwords = true"#,
    ))
    .unwrap();
    assert_eq!(
        config.plans[0].source,
        SourceConfig::Postgres {
            url: "postgres://app@db:5432/app".into(),
            password: Some(SecretRef::Env("APP_PGPASSWORD".into())),
            probes: vec![SqlProbe {
                name: "active users".into(),
                sql: "select count(*) from users where active".into(),
            }],
            scratch_url: Some("postgres://admin@db:6543/postgres".into()),
            allow_scratch_on_source: false,
            globals_with_passwords: true,
        }
    );
    assert_eq!(config.plans[0].source.kind(), "postgres");
    let config = parse(&with_source(
        r#"kind = "postgres", url = "postgresql://app@db/app", password_file = "pg.pass""#,
    ))
    .unwrap();
    let SourceConfig::Postgres { password, .. } = &config.plans[0].source else {
        panic!("not postgres")
    };
    assert_eq!(
        password,
        &Some(SecretRef::File(PathBuf::from("/etc/lifeboat/pg.pass")))
    );
}

#[test]
fn postgres_source_errors_name_the_key() {
    let message = error_at(
        &with_source(r#"kind = "postgres", url = "postgres://app:hunter2@db/app""#),
        12,
        "plans[0].source.url",
    );
    assert!(message.contains("password_env"), "{message}");
    assert!(message.contains("password_file"), "{message}");
    error_at(
        &with_source(r#"kind = "postgres", url = "postgres://db/app?password=x""#),
        12,
        "plans[0].source.url",
    );
    error_at(
        &with_source(r#"kind = "postgres", url = "mysql://db/app""#),
        12,
        "plans[0].source.url",
    );
    error_at(
        &with_source(r#"kind = "postgres""#),
        12,
        "plans[0].source.url",
    );
    error_at(
        &with_source(
            r#"kind = "postgres", url = "postgres://db/app", password_env = "A", password_file = "f""#,
        ),
        12,
        "plans[0].source.password_env",
    );
    error_at(
        &with_source(r#"kind = "postgres", url = "postgres://db/app", password_env = "$A""#),
        12,
        "plans[0].source.password_env",
    );
    let dup = r#"kind = "postgres", url = "postgres://db/app", probes = [{ name = "a", sql = "select 1" }, { name = "a", sql = "select 2" }]"#;
    error_at(&with_source(dup), 12, "plans[0].source.probes[1].name");
    let empty =
        r#"kind = "postgres", url = "postgres://db/app", probes = [{ name = "a", sql = " ; " }]"#;
    error_at(&with_source(empty), 12, "plans[0].source.probes[0].sql");
    let unknown =
        r#"kind = "postgres", url = "postgres://db/app", probes = [{ name = "a", query = "x" }]"#;
    assert!(parse(&with_source(unknown)).is_err());
    error_at(
        &with_source(r#"kind = "postgres", url = "postgres://db/app", path = "/x""#),
        12,
        "plans[0].source.path",
    );
}

#[test]
fn command_sources_need_a_command_and_a_restore_command() {
    let config = parse(&with_source(
        r#"kind = "command", command = ["etcdctl", "snapshot", "save", "/dev/stdout"], restore_command = ["sh", "-c", "cat > /tmp/x"]"#,
    ))
    .unwrap();
    assert_eq!(
        config.plans[0].source,
        SourceConfig::Command {
            command: vec![
                "etcdctl".into(),
                "snapshot".into(),
                "save".into(),
                "/dev/stdout".into()
            ],
            restore_command: vec!["sh".into(), "-c".into(), "cat > /tmp/x".into()],
            verify_command: None,
        }
    );
    error_at(
        &with_source(r#"kind = "command", restore_command = ["x"]"#),
        12,
        "plans[0].source.command",
    );
    error_at(
        &with_source(r#"kind = "command", command = ["x"]"#),
        12,
        "plans[0].source.restore_command",
    );
    error_at(
        &with_source(r#"kind = "command", command = [], restore_command = ["x"]"#),
        12,
        "plans[0].source.command",
    );
    error_at(
        &with_source(
            r#"kind = "command", command = ["x"], restore_command = ["x"], verify_command = [""]"#,
        ),
        12,
        "plans[0].source.verify_command[0]",
    );
    error_at(
        &with_source(
            r#"kind = "command", command = ["x"], restore_command = ["x"], url = "postgres://db/a""#,
        ),
        12,
        "plans[0].source.url",
    );
}

//! Whole-file tests of `Config::parse`: a full file, the defaults, and one test
//! per class of error, each checking the line and the key the message names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Public keys printed by `age-keygen` (age 1.1.1).
const RECIPIENT_A: &str = "age153dvxhe4ztwcf97ft5qf0jthzrzm7namyxvx625x0cn6e952qu3qq4y0hq";
const RECIPIENT_B: &str = "age1vru6qhm2mw52p7hham20ys8m4esx5hpzj0fy0s0ganq3mvlktfds8hc7ru";

const ORIGIN: &str = "/etc/lifeboat/lifeboat.toml";

/// The smallest valid file; tests append to it or replace parts of it.
fn minimal() -> String {
    format!(
        r#"[keys]
recipients = ["{RECIPIENT_A}"]
writer_key_file = "writer.key"

[[regions]]
name = "us-west-2"
kind = "local"
path = "/srv/backups/usw2"
"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(ORIGIN))
}

/// Parses `text`, expects an error, and checks it is located at `line` and names `key`.
#[track_caller]
fn error_at(text: &str, line: usize, key: &str) -> String {
    let err = match parse(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(err) => err,
    };
    let message = err.to_string();
    let ConfigError::Invalid { at, key: got, .. } = &err else {
        panic!("expected ConfigError::Invalid, got {message}");
    };
    assert_eq!(at.map(|p| p.line), Some(line), "{message}");
    assert_eq!(got, key, "{message}");
    assert!(
        message.starts_with(&format!("{ORIGIN}:{line}:")),
        "{message}"
    );
    assert!(message.contains(&format!(": {key}: ")), "{message}");
    message
}

#[test]
fn full_file_resolves_paths_against_the_config_directory() {
    let text = format!(
        r#"cache_dir = "cache"

[catalog]
url = "sqlite://state/lifeboat.db?mode=rwc"

[keys]
recipients = ["{RECIPIENT_A}", "{RECIPIENT_B}"]
writer_key_env = "LIFEBOAT_WRITER_KEY"
identity_file = "./keys/identity.txt"

[[regions]]
name = "us-west-2"
kind = "local"
path = "repos/us-west-2"

[[regions]]
name = "us-east-2"
kind = "s3"
bucket = "acme-lifeboat-use2"
region = "us-east-2"
prefix = "prod/"
object_lock_days = 30
object_lock_mode = "compliance"
preferred = true

[[plans]]
name = "app-data"
schedule = "0 3 * * *"
zone = "Europe/Paris"
regions = ["us-east-2"]
source = {{ kind = "dir", path = "../srv/app", exclude = ["*.tmp", "cache/"], one_file_system = true }}
objectives = {{ rpo = "12h", rto = "90m", drill_every = "180d" }}
retention = {{ keep_last = 7, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 }}
verify_schedule = "0 5 * * 0"
"#
    );
    let config = parse(&text).unwrap();
    let expected = Config {
        path: PathBuf::from(ORIGIN),
        cache_dir: PathBuf::from("/etc/lifeboat/cache"),
        catalog_url: Some("sqlite:///etc/lifeboat/state/lifeboat.db?mode=rwc".to_string()),
        keys: KeysConfig {
            recipients: vec![RECIPIENT_A.to_string(), RECIPIENT_B.to_string()],
            writer_key: Some(SecretRef::Env("LIFEBOAT_WRITER_KEY".to_string())),
            identity: Some(SecretRef::File(PathBuf::from(
                "/etc/lifeboat/keys/identity.txt",
            ))),
            pins: Default::default(),
        },
        regions: vec![
            RegionConfig {
                name: "us-west-2".to_string(),
                kind: RegionKind::Local {
                    path: PathBuf::from("/etc/lifeboat/repos/us-west-2"),
                },
                preferred: false,
            },
            RegionConfig {
                name: "us-east-2".to_string(),
                kind: RegionKind::S3 {
                    bucket: "acme-lifeboat-use2".to_string(),
                    region: "us-east-2".to_string(),
                    prefix: "prod".to_string(),
                    endpoint: None,
                    object_lock: Some(ObjectLock {
                        days: 30,
                        mode: LockMode::Compliance,
                    }),
                    timeout: crate::config::DEFAULT_S3_TIMEOUT,
                },
                preferred: true,
            },
        ],
        plans: vec![PlanConfig {
            name: "app-data".to_string(),
            schedule: Some("0 3 * * *".to_string()),
            zone: Some("Europe/Paris".to_string()),
            regions: vec!["us-east-2".to_string()],
            source: SourceConfig::Dir {
                path: PathBuf::from("/etc/lifeboat/../srv/app"),
                exclude: vec!["*.tmp".to_string(), "cache/".to_string()],
                one_file_system: true,
                read_threads: None,
            },
            objectives: Objectives {
                rpo: Duration::from_secs(12 * 3600),
                rto: Duration::from_secs(90 * 60),
                drill_every: Duration::from_secs(180 * 24 * 3600),
            },
            retention: Retention {
                policy: lifeboat_repo::retention::Policy {
                    keep_last: Some(7),
                    keep_daily: Some(7),
                    keep_weekly: Some(4),
                    keep_monthly: Some(12),
                    keep_yearly: Some(3),
                    keep_hourly: None,
                    keep_within: None,
                },
                grace: None,
            },
            verify_schedule: Some("0 5 * * 0".to_string()),
            prune_schedule: None,
            compression: None,
        }],
    };
    assert_eq!(config, expected);
    assert_eq!(config.preferred_region().name, "us-east-2");
    assert_eq!(config.plan("app-data").unwrap().source.kind(), "dir");
}

#[test]
fn defaults_fill_what_is_left_out() {
    let text = format!(
        "{}\n[[regions]]\nname = \"us-east-2\"\nkind = \"local\"\npath = \"/srv/backups/use2\"\n\n[[plans]]\nname = \"etc\"\nsource = {{ kind = \"dir\", path = \"/etc\" }}\n",
        minimal()
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.catalog_url().unwrap(),
        "sqlite:///etc/lifeboat/lifeboat.db"
    );
    assert!(config.cache_dir.is_absolute());
    assert!(config.cache_dir.ends_with("lifeboat") || config.cache_dir.ends_with("cache"));
    assert_eq!(
        config.keys.writer_key,
        Some(SecretRef::File(PathBuf::from("/etc/lifeboat/writer.key")))
    );
    assert_eq!(config.keys.identity, None);
    // The first region is preferred when none is marked.
    assert!(config.regions[0].preferred && !config.regions[1].preferred);
    assert_eq!(config.preferred_region().name, "us-west-2");

    let plan = config.plan("etc").unwrap();
    assert_eq!(plan.regions, vec!["us-west-2", "us-east-2"]);
    assert_eq!(plan.schedule, None);
    assert_eq!(plan.zone, None);
    assert_eq!(plan.verify_schedule, None);
    assert_eq!(plan.retention, Retention::default());
    assert_eq!(
        plan.objectives,
        Objectives {
            rpo: Duration::from_secs(24 * 3600),
            rto: Duration::from_secs(2 * 3600),
            drill_every: Duration::from_secs(365 * 24 * 3600),
        }
    );
    assert_eq!(
        plan.source,
        SourceConfig::Dir {
            path: PathBuf::from("/etc"),
            exclude: vec![],
            one_file_system: false,
            read_threads: None,
        }
    );
}

#[test]
fn partial_objectives_keep_the_other_defaults() {
    let text = format!(
        "{}\n[[plans]]\nname = \"p\"\nsource = {{ kind = \"dir\", path = \"/p\" }}\nobjectives = {{ rto = \"4h\" }}\n",
        minimal()
    );
    let objectives = parse(&text).unwrap().plans[0].objectives;
    assert_eq!(objectives.rto, Duration::from_secs(4 * 3600));
    assert_eq!(objectives.rpo, Objectives::default().rpo);
    assert_eq!(objectives.drill_every, Objectives::default().drill_every);
}

#[test]
fn lookups_list_the_known_names() {
    let text = format!(
        "{}\n[[plans]]\nname = \"app-data\"\nsource = {{ kind = \"dir\", path = \"/p\" }}\n",
        minimal()
    );
    let config = parse(&text).unwrap();
    let err = config.plan("nope").unwrap_err().to_string();
    assert!(
        err.contains("\"nope\"") && err.contains("app-data"),
        "{err}"
    );
    let err = config.region("eu-west-1").unwrap_err().to_string();
    assert!(
        err.contains("\"eu-west-1\"") && err.contains("us-west-2"),
        "{err}"
    );
    assert!(config.region("us-west-2").is_ok());
}

#[test]
fn unknown_top_level_key() {
    let text = format!(
        "cache_dir = \"/var/cache/lifeboat\"\nretention_days = 3\n{}",
        minimal()
    );
    let message = error_at(&text, 2, "retention_days");
    assert!(
        message.contains("unknown key `retention_days`"),
        "{message}"
    );
    // A top-level key written after a table header belongs to that table.
    let text = format!("{}cache_dir = \"/tmp\"\n", minimal());
    let message = error_at(&text, 9, "regions[0].cache_dir");
    assert!(message.contains("above the first"), "{message}");
}

#[test]
fn unknown_key_next_to_a_datetime_is_still_named() {
    let text = format!("{}\n[[plans]]\nname = \"p\"\nsource = {{ kind = \"dir\", path = \"/p\" }}\nstarted = 2024-05-27\n", minimal());
    let message = error_at(&text, 13, "plans[0].started");
    assert!(message.contains("unknown key `started`"), "{message}");
}

#[test]
fn unknown_key_in_a_region() {
    let text = minimal().replace("kind = \"local\"", "kind = \"local\"\nbukket = \"x\"");
    let message = error_at(&text, 8, "regions[0].bukket");
    assert!(message.contains("unknown key `bukket`"), "{message}");
}

#[test]
fn unknown_key_in_a_plan_source() {
    let text = format!(
        "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/srv/app\", excludes = [\"x\"] }}\n",
        minimal()
    );
    let message = error_at(&text, 12, "plans[0].source.excludes");
    assert!(message.contains("unknown key `excludes`"), "{message}");
    assert!(message.contains("exclude"), "{message}");
}

#[test]
fn wrong_type() {
    let text = format!(
        "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/srv/app\" }}\nretention = {{ keep_daily = \"7\" }}\n",
        minimal()
    );
    let message = error_at(&text, 13, "plans[0].retention.keep_daily");
    assert!(message.contains("invalid type"), "{message}");
    // serde's wording leaks no Rust type names.
    let text = minimal().replace("[keys]", "keys = 1\n[keyz]");
    let message = error_at(&text, 1, "keys");
    assert!(message.ends_with("expected a table"), "{message}");
}

#[test]
fn bad_duration() {
    let text = format!(
        "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/srv/app\" }}\n[plans.objectives]\nrto = \"2h\"\nrpo = \"one day\"\n",
        minimal()
    );
    let message = error_at(&text, 15, "plans[0].objectives.rpo");
    assert!(
        message.contains("invalid duration \"one day\""),
        "{message}"
    );
    assert!(message.contains("\"24h\""), "{message}");
    let zero = text.replace("\"one day\"", "\"0s\"");
    assert!(error_at(&zero, 15, "plans[0].objectives.rpo").contains("longer than zero"));
}

#[test]
fn duplicate_region() {
    let text = format!(
        "{}\n[[regions]]\nname = \"us-west-2\"\nkind = \"local\"\npath = \"/elsewhere\"\n",
        minimal()
    );
    let message = error_at(&text, 11, "regions[1].name");
    assert!(
        message.contains("duplicate region name \"us-west-2\""),
        "{message}"
    );
    assert!(message.contains("line 6"), "{message}");
}

#[test]
fn unknown_region_in_a_plan() {
    let text = format!(
        "{}\n[[plans]]\nname = \"app\"\nregions = [\"us-west-2\", \"us-east-1\"]\nsource = {{ kind = \"dir\", path = \"/srv/app\" }}\n",
        minimal()
    );
    let message = error_at(&text, 12, "plans[0].regions[1]");
    assert!(
        message.contains("unknown region \"us-east-1\""),
        "{message}"
    );
    assert!(message.contains("us-west-2"), "{message}");
}

#[test]
fn both_writer_key_references() {
    let text = minimal().replace(
        "writer_key_file = \"writer.key\"",
        "writer_key_file = \"writer.key\"\nwriter_key_env = \"LIFEBOAT_WRITER_KEY\"",
    );
    let message = error_at(&text, 4, "keys.writer_key_env");
    assert!(message.contains("only one of"), "{message}");
}

#[test]
fn no_writer_key_and_no_identity() {
    let text = minimal().replace("writer_key_file = \"writer.key\"\n", "");
    let message = error_at(&text, 1, "keys");
    assert!(message.contains("writer_key_env"), "{message}");
    assert!(
        message.contains("a restore host needs only `identity_file`"),
        "{message}"
    );
}

/// A restore host: the identity and the regions, nothing else (no recipients, no writer
/// key, no plans, no catalog table).
#[test]
fn restore_host_needs_only_the_identity_and_the_regions() {
    let text = "[keys]\nidentity_file = \"identity.txt\"\n\n[[regions]]\nname = \"us-east-2\"\nkind = \"local\"\npath = \"/srv/dr\"\n";
    let config = parse(text).unwrap();
    assert!(config.keys.recipients.is_empty());
    assert_eq!(config.keys.writer_key, None);
    assert_eq!(
        config.keys.identity,
        Some(SecretRef::File(PathBuf::from("/etc/lifeboat/identity.txt")))
    );
    assert!(config.plans.is_empty());
    let err = config.keys.load_writer_key().unwrap_err().to_string();
    assert!(err.contains("backups need it"), "{err}");
}

#[test]
fn missing_keys_table() {
    let text = minimal().replace(
        &format!("[keys]\nrecipients = [\"{RECIPIENT_A}\"]\nwriter_key_file = \"writer.key\"\n"),
        "",
    );
    let message = error_at(&text, 1, "keys");
    assert!(message.contains("missing [keys]"), "{message}");
}

#[test]
fn inline_writer_key_is_refused_with_a_hint() {
    let text = minimal().replace(
        "writer_key_file = \"writer.key\"",
        "writer_key = \"AGE-SECRET-KEY-1XYZ\"",
    );
    let message = error_at(&text, 3, "keys.writer_key");
    assert!(message.contains("writer_key_file"), "{message}");
    assert!(message.contains("writer_key_env"), "{message}");
    assert!(!message.contains("AGE-SECRET-KEY-1XYZ"), "{message}");

    let text = minimal().replace("[keys]", "[keys]\nidentity = \"AGE-SECRET-KEY-1XYZ\"");
    let message = error_at(&text, 2, "keys.identity");
    assert!(message.contains("identity_file"), "{message}");
}

#[test]
fn unsupported_source_kind_names_the_plan_and_the_supported_kinds() {
    let text = format!(
        "{}\n[[plans]]\nname = \"db\"\nsource = {{ kind = \"mysql\", database = \"app\" }}\n",
        minimal()
    );
    let message = error_at(&text, 12, "plans[0].source.kind");
    assert!(message.contains("plan \"db\""), "{message}");
    assert!(
        message.contains("unsupported source kind \"mysql\""),
        "{message}"
    );
    assert!(
        message.contains("supported kinds: dir, postgres, command"),
        "{message}"
    );
}

#[test]
fn empty_recipients_and_malformed_recipient() {
    let text = minimal().replace(&format!("[\"{RECIPIENT_A}\"]"), "[]");
    error_at(&text, 2, "keys.recipients");
    let text = minimal().replace(RECIPIENT_A, "age1notakey");
    let message = error_at(&text, 2, "keys.recipients[0]");
    assert!(message.contains("invalid age recipient"), "{message}");
}

#[test]
fn empty_path_and_tilde_path() {
    let text = minimal().replace("\"/srv/backups/usw2\"", "\"\"");
    assert!(error_at(&text, 8, "regions[0].path").contains("empty path"));
    let text = minimal().replace("\"/srv/backups/usw2\"", "\"~/backups\"");
    assert!(error_at(&text, 8, "regions[0].path").contains("`~`"));
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = minimal().replace("path = \"/srv/backups/usw2\"\n", "");
    let message = error_at(&text, 5, "regions[0].path");
    assert!(message.contains("missing"), "{message}");
    let text = format!("{}\n[[plans]]\nname = \"app\"\n", minimal());
    error_at(&text, 10, "plans[0].source");
}

#[test]
fn region_kind_rules() {
    let text = minimal().replace("kind = \"local\"", "kind = \"gcs\"");
    assert!(error_at(&text, 7, "regions[0].kind").contains("local, s3"));
    let text = minimal().replace("kind = \"local\"", "kind = \"local\"\nbucket = \"b\"");
    assert!(error_at(&text, 8, "regions[0].bucket").contains("kind = \"s3\""));
    let s3 = minimal().replace(
        "kind = \"local\"\npath = \"/srv/backups/usw2\"",
        "kind = \"s3\"\nbucket = \"acme\"\nregion = \"us-west-2\"",
    );
    assert!(parse(&s3).is_ok());
    error_at(
        &s3.replace("region = \"us-west-2\"", "region = \"Oregon\""),
        9,
        "regions[0].region",
    );
    error_at(
        &s3.replace("\"acme\"", "\"Acme_Bucket\""),
        8,
        "regions[0].bucket",
    );
    let lock = format!("{s3}object_lock_mode = \"compliance\"\n");
    error_at(&lock, 10, "regions[0].object_lock_mode");
    let compatible = format!(
        "{}endpoint = \"http://127.0.0.1:9000\"\n",
        s3.replace("region = \"us-west-2\"", "region = \"garage\"")
    );
    assert!(parse(&compatible).is_ok());
}

#[test]
fn two_preferred_regions() {
    let text = format!(
        "{}preferred = true\n\n[[regions]]\nname = \"b\"\nkind = \"local\"\npath = \"/b\"\npreferred = true\n",
        minimal()
    );
    error_at(&text, 15, "regions[1].preferred");
}

#[test]
fn plan_names_and_schedules() {
    let plan = |extra: &str| {
        format!(
            "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/p\" }}\n{extra}",
            minimal()
        )
    };
    error_at(&plan("schedule = \"daily\"\n"), 13, "plans[0].schedule");
    error_at(
        &plan("verify_schedule = \"0 5 *\"\n"),
        13,
        "plans[0].verify_schedule",
    );
    assert!(parse(&plan("schedule = \"0 0 3 * * * *\"\n")).is_ok());
    let text = plan("").replace("name = \"app\"", "name = \"my app\"");
    error_at(&text, 11, "plans[0].name");
    let twice = format!(
        "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/q\" }}\n",
        plan("")
    );
    assert!(error_at(&twice, 15, "plans[1].name").contains("duplicate plan name"));
}

#[test]
fn plan_compression() {
    use lifeboat_repo::pack::Codec;
    let plan = |extra: &str| {
        format!(
            "{}\n[[plans]]\nname = \"app\"\nsource = {{ kind = \"dir\", path = \"/p\" }}\n{extra}",
            minimal()
        )
    };
    assert_eq!(parse(&plan("")).unwrap().plans[0].compression, None);
    for (value, codec) in [
        ("zstd:1", Codec::Zstd(1)),
        ("zstd:19", Codec::Zstd(19)),
        ("zstd", Codec::Zstd(3)),
        ("none", Codec::None),
    ] {
        let config = parse(&plan(&format!("compression = \"{value}\"\n"))).unwrap();
        assert_eq!(config.plans[0].compression, Some(codec), "{value}");
    }
    for bad in ["zstd:0", "zstd:20", "zstd:x", "lz4", "gzip:6", ""] {
        let message = error_at(
            &plan(&format!("compression = \"{bad}\"\n")),
            13,
            "plans[0].compression",
        );
        assert!(
            message.contains("\"zstd:N\" with N from 1 to 19"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn catalog_urls() {
    let with = |url: &str| format!("[catalog]\nurl = \"{url}\"\n{}", minimal());
    let config = parse(&with("postgres://lifeboat@db.internal/lifeboat")).unwrap();
    assert_eq!(
        config.catalog_url().unwrap(),
        "postgres://lifeboat@db.internal/lifeboat"
    );
    let config = parse(&with("sqlite:///var/lib/lifeboat/catalog.db")).unwrap();
    assert_eq!(
        config.catalog_url().unwrap(),
        "sqlite:///var/lib/lifeboat/catalog.db"
    );
    let message = error_at(
        &with("postgres://lifeboat:hunter2@db/lifeboat"),
        2,
        "catalog.url",
    );
    assert!(message.contains("PGPASSWORD"), "{message}");
    error_at(&with("mysql://db"), 2, "catalog.url");
}

#[test]
fn recipients_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("recipients.txt"),
        format!("# restore operators\n{RECIPIENT_A}\n\n{RECIPIENT_B}\n"),
    )
    .unwrap();
    let origin = dir.path().join("lifeboat.toml");
    let text = minimal().replace(
        &format!("recipients = [\"{RECIPIENT_A}\"]"),
        "recipients_file = \"recipients.txt\"",
    );
    let config = Config::parse(&text, &origin).unwrap();
    assert_eq!(config.keys.recipients, vec![RECIPIENT_A, RECIPIENT_B]);

    std::fs::write(dir.path().join("recipients.txt"), "# none yet\nage1bad\n").unwrap();
    let message = Config::parse(&text, &origin).unwrap_err().to_string();
    assert!(
        message.contains("recipients.txt:2:1: keys.recipients_file: invalid age recipient"),
        "{message}"
    );

    let missing = text.replace("recipients.txt", "absent.txt");
    let message = Config::parse(&missing, &origin).unwrap_err().to_string();
    assert!(
        message.contains(":2:") && message.contains("absent.txt: no such file"),
        "{message}"
    );
}

#[test]
fn syntax_errors_are_located() {
    let message = parse("[keys\n").unwrap_err().to_string();
    assert!(message.starts_with(&format!("{ORIGIN}:1:")), "{message}");
}

#[test]
fn load_reports_a_missing_file_with_a_hint() {
    let err = Config::load(Path::new("/nonexistent/lifeboat.toml")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        message.starts_with("/nonexistent/lifeboat.toml: "),
        "{message}"
    );
    assert!(message.contains("LIFEBOAT_CONFIG"), "{message}");
}

#[test]
fn example_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/recipients.txt"),
        format!("{RECIPIENT_A}\n"),
    )
    .unwrap();
    let text = example(dir.path());
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.cache_dir, dir.path().join("cache"));
    assert_eq!(config.keys.recipients, vec![RECIPIENT_A]);
    assert_eq!(
        config.keys.writer_key,
        Some(SecretRef::File(dir.path().join("keys/writer.key")))
    );
    assert_eq!(
        config.keys.identity,
        Some(SecretRef::File(dir.path().join("keys/identity.txt")))
    );
    let names: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["us-west-2", "us-east-2"]);
    assert_eq!(
        config.region("us-east-2").unwrap().kind,
        RegionKind::Local {
            path: dir.path().join("us-east-2")
        }
    );
    let plan = config.plan("app-data").unwrap();
    assert_eq!(plan.regions, ["us-west-2", "us-east-2"]);
    assert!(
        matches!(&plan.source, SourceConfig::Dir { path, .. } if *path == dir.path().join("data"))
    );
}

fn with_source(source: &str) -> String {
    format!(
        "{}\n[[plans]]\nname = \"db\"\nsource = {{ {source} }}\n",
        minimal()
    )
}

/// The `rds` source kind's keys.
mod rds;
/// Schedules and zones, checked when the config loads.
mod schedule;
/// A postgres plan's scratch server, checked when the config loads.
mod scratch;
/// The postgres and command source kinds.
mod sources;

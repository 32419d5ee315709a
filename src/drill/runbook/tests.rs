//! Runbook parsing against a small config: the shipped runbooks resolve, defaults fill in,
//! `after` defaults to the previous step, and each class of error names its key.

use std::path::Path;

use super::*;

const CONFIG: &str = r#"[keys]
recipients = ["age153dvxhe4ztwcf97ft5qf0jthzrzm7namyxvx625x0cn6e952qu3qq4y0hq"]
writer_key_file = "writer.key"

[[regions]]
name = "us-west-2"
kind = "local"
path = "/srv/usw2"

[[regions]]
name = "us-east-2"
kind = "local"
path = "/srv/use2"

[[plans]]
name = "app"
source = { kind = "dir", path = "/srv/app" }

[[plans]]
name = "db"
source = { kind = "postgres", url = "postgres://lb@127.0.0.1:5432/app" }
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new("/etc/lifeboat/lifeboat.toml")).expect("config")
}

fn parse_text(text: &str) -> Result<Runbook> {
    parse(text, Path::new("/r/test.toml"), &config())
}

const HEAD: &str = "[runbook]\nid = \"t\"\nscenario = \"s\"\nfrequency = \"30d\"\n";

#[test]
fn shipped_runbooks_resolve_against_any_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    for name in [
        "region-outage",
        "annual-full-restore",
        "postgres-restore",
        "bare-host",
        "rds-region-outage",
    ] {
        let book = load(&dir.join(format!("{name}.toml")), &config())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(book.id, name);
        assert_eq!(book.sha256.len(), 64);
    }
    let pg = load(&dir.join("postgres-restore.toml"), &config()).unwrap();
    assert_eq!(pg.plans, vec!["db".to_string()]);
}

#[test]
fn defaults_and_sequential_after() {
    let book = parse_text(&format!(
        "{HEAD}[[step]]\nid = \"a\"\nkind = \"declare\"\n[[step]]\nid = \"b\"\nkind = \"restore\"\n[[step]]\nid = \"c\"\nkind = \"verify\"\non = \"b\"\nafter = []\n"
    ));
    // `c` names `b` but does not come after it.
    let err = book.unwrap_err().to_string();
    assert!(
        err.contains("step[2].on") && err.contains("must come before"),
        "{err}"
    );
    let book = parse_text(&format!(
        "{HEAD}[[step]]\nid = \"a\"\nkind = \"declare\"\n[[step]]\nid = \"b\"\nkind = \"restore\"\n[[step]]\nid = \"c\"\nkind = \"verify\"\non = \"b\"\n"
    ))
    .unwrap();
    assert_eq!(book.plans, vec!["app".to_string(), "db".to_string()]);
    assert!(book.all_plans);
    assert_eq!(book.steps[1].after, vec!["a".to_string()]);
    assert_eq!(book.steps[2].after, vec!["b".to_string()]);
    assert_eq!(book.max_duration, Duration::from_secs(4 * 3600));
    assert!(book.deny_production_writes);
    assert_eq!(
        book.frequency,
        Frequency::Every(Duration::from_secs(30 * 86_400))
    );
}

#[test]
fn errors_name_their_key() {
    let cases = [
        ("[[step]]\nid = \"a\"\nkind = \"explode\"\n", "step[0].kind", "unknown step kind"),
        ("[[step]]\nid = \"a\"\nkind = \"declare\"\nsimulate = \"region_down:eu-west-1\"\n", "step[0].simulate", "unknown region"),
        ("[[step]]\nid = \"a\"\nkind = \"restore\"\nplans = [\"app\"]\ninto = \"/srv/app/restore\"\n", "step[0].into", "production"),
        ("[[step]]\nid = \"a\"\nkind = \"restore\"\nplans = [\"db\"]\ninto = \"postgres://lb@127.0.0.1:5432/app\"\n", "step[0].into", "production database"),
        ("[[step]]\nid = \"a\"\nkind = \"assert\"\nthat = [\"no operator\"]\n", "step[0].that[0]", "LEFT OP RIGHT"),
        ("[[step]]\nid = \"a\"\nkind = \"command\"\nrun = [\"echo\", \"${ghost.x}\"]\n", "step a", "names no step"),
        ("[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\n[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\n", "step[1].id", "duplicate"),
        ("[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\n[[cleanup]]\nid = \"c\"\nkind = \"restore\"\n", "cleanup[0].kind", "unknown step kind"),
    ];
    for (steps, key, problem) in cases {
        let err = parse_text(&format!("{HEAD}{steps}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/r/test.toml:"), "{err}");
        assert!(
            err.contains(key) && err.contains(problem),
            "{key}/{problem}: {err}"
        );
    }
    let err = parse_text("[runbook]\nid = \"t\"\nscenario = \"s\"\nfrequency = \"61 3 * * *\"\n[[step]]\nid = \"a\"\nkind = \"declare\"\n").unwrap_err().to_string();
    assert!(err.contains("runbook.frequency"), "{err}");
}

#[test]
fn cycles_are_named() {
    let err = parse_text(&format!(
        "{HEAD}[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\nafter = [\"c\"]\n[[step]]\nid = \"b\"\nkind = \"wait\"\nduration = \"1s\"\n[[step]]\nid = \"c\"\nkind = \"wait\"\nduration = \"1s\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("cycle: a -> c -> b -> a"), "{err}");
}

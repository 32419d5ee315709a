//! `source = { kind = "rds", … }`: a full source resolves; each bad value is reported at its
//! line with its key.

use super::{error_at, minimal, parse};
use crate::config::SourceConfig;

fn with_plan(name: &str, source: &str) -> String {
    format!(
        "{}\n[[plans]]\nname = \"{name}\"\nsource = {{ kind = \"rds\", {source} }}\n",
        minimal()
    )
}

const KEY: &str = "arn:aws:kms:us-east-2:123456789012:key/abcd";

#[test]
fn a_full_rds_source_resolves() {
    let text = with_plan(
        "app-db",
        &format!("instance = \"app-db\", region = \"us-west-2\", copy_to = [{{ region = \"us-east-2\", kms_key_id = \"{KEY}\" }}], instance_class = \"db.t4g.micro\", subnet_group = \"drill\", security_groups = [\"sg-0abc\"], tags = {{ team = \"data\" }}, probe_url = \"postgres://probe@db.internal/app\", password_env = \"PROBE_PW\", probes = [{{ name = \"one\", sql = \"select 1\" }}], timeout = \"2h\", poll_interval = \"10s\""),
    );
    let config = parse(&text).unwrap();
    let plan = &config.plans[0];
    assert_eq!(
        plan.regions,
        vec!["us-west-2", "us-east-2"],
        "an rds plan's regions are its AWS regions"
    );
    let SourceConfig::Rds(src) = &plan.source else {
        panic!("{:?}", plan.source)
    };
    assert_eq!(src.instance, "app-db");
    assert_eq!(src.copy_to[0].kms_key_id, KEY);
    assert_eq!(src.tags["team"], "data");
    assert_eq!(src.poll_interval, std::time::Duration::from_secs(10));
    assert_eq!(src.probes.len(), 1);
    // Defaults.
    let config = parse(&with_plan(
        "db",
        "instance = \"db1\", region = \"eu-central-1\"",
    ))
    .unwrap();
    let src = config.plans[0].source.as_rds().unwrap();
    assert!(src.copy_to.is_empty());
    assert_eq!(src.timeout, crate::config::DEFAULT_RDS_TIMEOUT);
    assert_eq!(src.poll_interval, crate::config::DEFAULT_RDS_POLL);
}

#[test]
fn bad_rds_values_are_located() {
    // The source table is on line 12 of with_plan's text.
    let line = minimal().lines().count() + 4;
    let cases: Vec<(String, &str, &str)> = vec![
        ("region = \"us-west-2\"".into(), "plans[0].source.instance", "missing"),
        ("instance = \"1db\", region = \"us-west-2\"".into(), "plans[0].source.instance", "not a valid DB instance identifier"),
        ("instance = \"db--x\", region = \"us-west-2\"".into(), "plans[0].source.instance", "not a valid"),
        ("instance = \"db\"".into(), "plans[0].source.region", "missing"),
        ("instance = \"db\", region = \"uswest2\"".into(), "plans[0].source.region", "not an AWS region"),
        ("cluster = \"aurora\", region = \"us-west-2\"".into(), "plans[0].source.cluster", "Aurora clusters are not supported"),
        ("instance = \"db\", region = \"us-west-2\", copy_to = [{ region = \"us-west-2\", kms_key_id = \"k\" }]".into(), "plans[0].source.copy_to[0].region", "listed twice"),
        ("instance = \"db\", region = \"us-west-2\", copy_to = [{ region = \"us-east-2\" }]".into(), "plans[0].source.copy_to[0].kms_key_id", "KMS keys are regional"),
        (format!("instance = \"db\", region = \"us-west-2\", copy_to = [{{ region = \"eu-west-1\", kms_key_id = \"{KEY}\" }}]"), "plans[0].source.copy_to[0].kms_key_id", "not in \"eu-west-1\""),
        ("instance = \"db\", region = \"us-west-2\", instance_class = \"t3.micro\"".into(), "plans[0].source.instance_class", "not an RDS instance class"),
        ("instance = \"db\", region = \"us-west-2\", security_groups = [\"default\"]".into(), "plans[0].source.security_groups[0]", "not a VPC security group id"),
        ("instance = \"db\", region = \"us-west-2\", tags = { \"lifeboat:plan\" = \"x\" }".into(), "plans[0].source.tags.lifeboat:plan", "never start with `lifeboat:`"),
        ("instance = \"db\", region = \"us-west-2\", endpoint = \"localhost:5000\"".into(), "plans[0].source.endpoint", "not a URL"),
        ("instance = \"db\", region = \"us-west-2\", endpoint = \"http://rds.example.com\"".into(), "plans[0].source.endpoint", "plain http:// to rds.example.com"),
        ("instance = \"db\", region = \"us-west-2\", probe_url = \"postgres://probe@/app\"".into(), "plans[0].source.probe_url", "needs the password"),
        ("instance = \"db\", region = \"us-west-2\", probe_url = \"postgres://probe:pw@db.internal/app\", password_env = \"X\"".into(), "plans[0].source.probe_url", "contains a password"),
        ("instance = \"db\", region = \"us-west-2\", probes = [{ name = \"a\", sql = \"select 1\" }]".into(), "plans[0].source.probes", "set probe_url"),
        ("instance = \"db\", region = \"us-west-2\", poll_interval = \"5h\"".into(), "plans[0].source.poll_interval", "shorter than `timeout`"),
        ("instance = \"db\", region = \"us-west-2\", path = \"/srv\"".into(), "plans[0].source.path", "does not apply to a rds source"),
        ("instance = \"db\", region = \"us-west-2\", kms = \"x\"".into(), "plans[0].source.kms", ""),
    ];
    for (source, key, needle) in cases {
        let message = error_at(&with_plan("db", &source), line, key);
        assert!(message.contains(needle), "{source}: {message}");
    }
}

#[test]
fn rds_plan_names_and_regions_are_checked() {
    let line = minimal().lines().count() + 3;
    let message = error_at(
        &with_plan("App_DB", "instance = \"db\", region = \"us-west-2\""),
        line,
        "plans[0].name",
    );
    assert!(
        message.contains("at most 30 lowercase letters"),
        "{message}"
    );
    let text = format!("{}\n[[plans]]\nname = \"db\"\nregions = [\"us-west-2\"]\nsource = {{ kind = \"rds\", instance = \"db\", region = \"us-west-2\" }}\n", minimal());
    let message = error_at(&text, line + 1, "plans[0].regions");
    assert!(message.contains("remove `regions`"), "{message}");
}

#[test]
fn a_probe_url_without_a_host_takes_the_restored_instance_endpoint() {
    // docs/rds.md's form: the host is filled in from the scratch instance at probe time.
    let config = parse(&with_plan(
        "db",
        "instance = \"db1\", region = \"us-west-2\", probe_url = \"postgres://probe@/app\", password_env = \"PROBE_PW\"",
    ))
    .unwrap();
    let src = config.plans[0].source.as_rds().unwrap();
    assert_eq!(src.probe_url.as_deref(), Some("postgres://probe@/app"));
}

#[test]
fn a_plain_http_rds_endpoint_needs_loopback_or_allow_insecure() {
    for (endpoint, extra) in [
        ("http://127.0.0.1:5000", ""),
        ("https://rds.example.com", ""),
        ("http://rds.example.com", ", allow_insecure = true"),
    ] {
        let config = parse(&with_plan(
            "db",
            &format!(
                "instance = \"db1\", region = \"us-west-2\", endpoint = \"{endpoint}\"{extra}"
            ),
        ))
        .unwrap_or_else(|e| panic!("{endpoint}{extra}: {e}"));
        let src = config.plans[0].source.as_rds().unwrap();
        assert_eq!(src.endpoint.as_deref(), Some(endpoint));
    }
}

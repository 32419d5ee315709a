//! The deploy/ files agree with the code: Prometheus rules are valid (promtool) and every
//! metric the rules and the Grafana dashboard use is one the daemon serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lifeboat_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn prometheus_rules_pass_promtool() {
    let rules = root().join("deploy/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): run `make deps` (Debian package prometheus)")
        });
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_and_dashboard_use_only_served_metrics() {
    let served = std::fs::read_to_string(root().join("src/daemon/metrics.rs")).unwrap();
    let served: BTreeSet<String> = metric_names(&served)
        .into_iter()
        .filter(|m| m.len() > "lifeboat_".len())
        .collect();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/lifeboat-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for (what, text) in [("alerts.yml", &rules), ("dashboard", &dashboard)] {
        let used = metric_names(text);
        assert!(!used.is_empty());
        for m in used.iter().filter(|m| m.as_str() != "lifeboat_objectives") {
            // prometheus-client registers a counter as `X` and exposes its samples as
            // `X_total` (OpenMetrics).
            let counter = m.strip_suffix("_total").is_some_and(|x| served.contains(x));
            assert!(
                served.contains(m) || counter,
                "{what} uses {m}, which the daemon does not serve ({served:?})"
            );
        }
    }
}

//! The yearly key-rotation objective through the real binary: with the current recipient
//! epoch dated 340 days back `status` warns, 370 days back it breaches (exit 11), `run-due`
//! sends the alerts to a webhook on 127.0.0.1, and the daemon's /metrics carries
//! `lifeboat_key_age_seconds`.

use serde_json::Value;

use crate::common::Workspace;
use crate::daemon::{free_port, receiver, scrape_until, spawn_daemon, terminate};
use crate::ops::ready;

const DAY: i64 = 86_400;

/// Date the current epoch `days` back in every region's `config` (what an epoch created
/// that long ago looks like).
fn age_key(ws: &Workspace, days: i64) {
    let created = lifeboat::host::now_secs() - days * DAY;
    for region in ["us-west-2", "us-east-2"] {
        let p = ws.path(&format!("{region}/config"));
        let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let epochs = v["epochs"].as_array_mut().expect("v2 config has epochs");
        epochs.last_mut().unwrap()["created"] = created.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

fn status(ws: &Workspace) -> (i32, Value) {
    let out = ws.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

#[test]
fn status_warns_from_335_days_and_breaches_past_365_with_an_alert_and_a_metric() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    let (_, v) = status(&ws);
    assert_eq!(v["keys"]["level"], "ok", "{v}");
    assert_eq!(v["keys"]["epoch"], 1, "{v}");
    assert!(v["keys"]["age_seconds"].as_i64().unwrap() < 3600, "{v}");
    let plans_worst = v["plans"][0]["level"].as_str().unwrap().to_string();
    assert_ne!(
        plans_worst, "breach",
        "the plan itself is not breached: {v}"
    );

    age_key(&ws, 340);
    let (code, v) = status(&ws);
    assert_eq!(v["keys"]["level"], "warning", "{v}");
    assert!(
        v["keys"]["note"]
            .as_str()
            .unwrap()
            .contains("rotate within"),
        "{v}"
    );
    assert_eq!(code, 10, "{v}");
    let text = String::from_utf8_lossy(&ws.run(&["status"]).stdout).to_string();
    assert!(text.contains("WARN keys: repository"), "{text}");

    age_key(&ws, 370);
    let (code, v) = status(&ws);
    assert_eq!(v["keys"]["level"], "breach", "{v}");
    assert_eq!(v["level"], "breach", "{v}");
    assert_eq!(code, 11, "the key age alone makes it a breach: {v}");
    let repository = v["keys"]["repository"].as_str().unwrap().to_string();

    // An alert through the webhook path.
    let (url, got) = receiver();
    ws.run(&["run-due", "--retries", "0", "--webhook", &url]);
    let kinds: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["event"] == "firing")
        .map(|(_, v)| v["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in ["key_rotation_due", "key_age_breach"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }

    // And a metric.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = spawn_daemon(&ws, &["--listen", &addr]);
    let needle = format!("lifeboat_key_age_seconds{{repository=\"{repository}\"}} ");
    let body = scrape_until(&addr, &needle);
    let (code, err) = terminate(&mut d);
    assert_eq!(code, Some(0), "{err}");
    let value: i64 = body
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((value - 370 * DAY).abs() < 3600, "{value}\n{body}");
    assert!(
        body.contains("# TYPE lifeboat_key_age_seconds gauge"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "lifeboat_key_epoch{{repository=\"{repository}\"}} 1"
        )),
        "{body}"
    );
}

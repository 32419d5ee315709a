//! Scheduled forget + prune (`prune_schedule`) through `run-due` and the daemon, and the
//! safety rules that protect snapshots in use: the scheduled run waits while a backup of the
//! repository runs, is recorded as runs of kinds `forget` and `prune` (bytes freed, objects
//! deleted), raises a `prune_failed` webhook alert (a real HTTP receiver) when it fails and
//! clears it when it works again; the daemon exports its metrics and never overlaps a backup;
//! forget refuses a plan a restore test is using, and never forgets the newest snapshot
//! complete in every region.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{write, write_random, Workspace, XorShift};
use crate::daemon::receiver;

/// One plan (`app-data`) keeping the 2 newest snapshots, forget + prune scheduled yearly
/// (so the last occurrence is due at once, then not again), no restore-test schedule.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.edit_config(|c| {
        c.replace("rpo = \"24h\"", "rpo = \"1s\"")
            .replace(
                "retention = { keep_last = 7, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 }",
                "retention = { keep_last = 2, grace = \"1s\" }\nprune_schedule = \"0 0 1 1 *\"",
            )
            .replace("verify_schedule = \"0 5 * * 0\"", "")
    });
    ws.init();
    ws
}

/// Four snapshots of changing data, then a manual forget down to 3 and a prune that marks
/// the packs only the oldest needed: the next prune (the plan's grace is 1 s) frees bytes.
fn history(ws: &Workspace) {
    let mut rng = XorShift::new(31);
    write_random(&ws.path("data/base.bin"), 200_000, &mut rng);
    for i in 0..4 {
        write_random(&ws.path(&format!("data/churn-{i}.bin")), 150_000, &mut rng);
        if i > 0 {
            std::fs::remove_file(ws.path(&format!("data/churn-{}.bin", i - 1))).unwrap();
        }
        ws.ok(&["backup", "app-data"]);
    }
    // Past the plan's RPO (1 s), which is a keep_within floor: four backups can end in the
    // same second, and forget must not keep them all for being "within the RPO".
    std::thread::sleep(Duration::from_millis(1100));
    ws.ok(&["forget", "--keep-last", "3"]);
    ws.ok(&["prune", "--grace", "0s", "--max-unused", "0"]);
    std::thread::sleep(Duration::from_millis(1100));
}

fn runs(ws: &Workspace) -> Vec<Value> {
    ws.json(&["catalog", "runs", "--limit", "200"])
        .as_array()
        .unwrap()
        .clone()
}

/// Scheduled runs (forget, prune) of `app-data`.
fn scheduled(ws: &Workspace, kind: &str) -> Vec<Value> {
    runs(ws)
        .into_iter()
        .filter(|r| r["kind"] == kind && r["plan"] == "app-data")
        .collect()
}

fn maintenance_run(v: &Value) -> Value {
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plan"] == "app-data#prune")
        .cloned()
        .unwrap_or_else(|| panic!("no forget + prune in {v}"))
}

fn add_slow_plan(ws: &Workspace) {
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"slow\"\nsource = {{ kind = \"command\", command = [\"sh\", \"-c\", \"sleep 4; echo slow\"], restore_command = [\"true\"] }}\n"
        )
    });
}

fn wait_for_running_backup(ws: &Workspace, plan: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = runs(ws)
            .into_iter()
            .any(|r| r["kind"] == "backup" && r["plan"] == plan && r["phase"] == "running");
        if running {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup of {plan} ended before it was seen running"
        );
        assert!(Instant::now() < deadline, "the backup of {plan} never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_due_waits_for_a_backup_records_forget_and_prune_and_alerts_on_failure() {
    let ws = workspace();
    history(&ws);
    add_slow_plan(&ws);
    let (url, got) = receiver();
    let hook = format!("{url}/hook");
    let run_due = |ws: &Workspace| -> (Option<i32>, Value) {
        let out = ws.run(&["run-due", "--json", "--retries", "0", "--webhook", &hook]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "run-due --json ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    };

    // A backup of another plan of the same repository is running: forget + prune waits,
    // leaving its occurrence unclaimed.
    let mut slow = ws
        .cmd(&["backup", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_running_backup(&ws, "slow", &mut slow);
    let (_, v) = run_due(&ws);
    let m = maintenance_run(&v);
    assert_eq!(m["outcome"], "skipped", "{v}");
    assert!(
        m["error"]
            .as_str()
            .unwrap()
            .contains("a backup of plan slow is running"),
        "{v}"
    );
    assert!(scheduled(&ws, "forget").is_empty() && scheduled(&ws, "prune").is_empty());
    let snaps = ws.json(&["snapshots", "--plan", "app-data"]);
    assert_eq!(snaps.as_array().unwrap().len(), 3, "{snaps:#}\n{v:#}");
    assert!(slow.wait().unwrap().success(), "the slow backup");
    let slow_end = runs(&ws)
        .into_iter()
        .find(|r| r["kind"] == "backup" && r["plan"] == "slow")
        .unwrap()["ended_at"]
        .as_i64()
        .unwrap();

    // Then it runs: forget, then prune, each recorded.
    let (code, v) = run_due(&ws);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(maintenance_run(&v)["outcome"], "succeeded", "{v}");
    let forget = scheduled(&ws, "forget");
    let prune = scheduled(&ws, "prune");
    assert_eq!((forget.len(), prune.len()), (1, 1), "{forget:?} {prune:?}");
    assert_eq!(forget[0]["phase"], "succeeded", "{forget:?}");
    assert_eq!(prune[0]["phase"], "succeeded", "{prune:?}");
    assert!(forget[0]["started_at"].as_i64().unwrap() >= slow_end);
    assert!(prune[0]["started_at"].as_i64().unwrap() >= forget[0]["ended_at"].as_i64().unwrap());
    assert!(
        prune[0]["bytes"].as_i64().unwrap() > 0,
        "bytes freed: {prune:?}"
    );
    let deleted: u64 = prune[0]["regions"]["us-west-2"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(deleted > 0, "objects deleted: {prune:?}");
    assert_eq!(
        ws.json(&["snapshots", "--plan", "app-data"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let prune_alerts = |got: &[(String, Value)]| -> Vec<Value> {
        got.iter()
            .filter(|(_, v)| v["kind"] == "prune_failed")
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert!(prune_alerts(&got.lock().unwrap()).is_empty());

    // A later occurrence fails (a region is unplugged: forget needs every region's list):
    // the forget run is recorded as failed and the webhook fires once.
    let east = ws.region("us-east-2");
    std::fs::rename(&east, ws.path("east.unplugged")).unwrap();
    ws.edit_config(|c| {
        c.replace(
            "prune_schedule = \"0 0 1 1 *\"",
            "prune_schedule = \"0 0 1 2 *\"",
        )
    });
    let (code, v) = run_due(&ws);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(maintenance_run(&v)["outcome"], "failed", "{v}");
    let forget = scheduled(&ws, "forget");
    assert_eq!(forget[0]["phase"], "failed", "{forget:?}");
    let fired = prune_alerts(&got.lock().unwrap());
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["event"], "firing");
    assert_eq!(fired[0]["plan"], "app-data");
    assert!(
        fired[0]["message"]
            .as_str()
            .unwrap()
            .contains("scheduled forget failed"),
        "{fired:?}"
    );

    // Repaired, the next occurrence works and the alert clears.
    std::fs::rename(ws.path("east.unplugged"), &east).unwrap();
    ws.edit_config(|c| {
        c.replace(
            "prune_schedule = \"0 0 1 2 *\"",
            "prune_schedule = \"0 0 1 3 *\"",
        )
    });
    let (code, v) = run_due(&ws);
    assert_eq!(code, Some(0), "{v}");
    let alerts = prune_alerts(&got.lock().unwrap());
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["event"], "resolved", "{alerts:?}");
    ws.ok(&["verify"]);
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_daemon_prunes_on_schedule_between_backups_and_exports_metrics() {
    let ws = workspace();
    history(&ws);
    // Backups every 2 seconds, beside the due forget + prune.
    crate::ops::set_schedule(&ws, "*/2 * * * * *");
    let addr = format!("127.0.0.1:{}", crate::servers::free_port());
    let mut d = ws
        .cmd(&["daemon", "--tick", "200ms", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let body = std::net::TcpStream::connect(&addr)
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out)
            })
            .unwrap_or_default();
        if metric(&body, "lifeboat_prune_duration_seconds").is_some() {
            break body;
        }
        if Instant::now() > deadline {
            let _ = d.kill();
            let out = d.wait_with_output().unwrap();
            panic!(
                "the daemon never pruned: {body}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let a backup or two follow the prune.
    std::thread::sleep(Duration::from_secs(3));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status();
    let out = d.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{log}");
    let body = format!("{body}\n{log}");
    let recorded: Vec<Value> = runs(&ws)
        .into_iter()
        .filter(|r| r["kind"] == "forget" || r["kind"] == "prune")
        .collect();
    let body = format!("{body}\n{recorded:#?}");
    assert!(
        metric(&body, "lifeboat_prune_bytes_freed").unwrap_or(0.0) > 0.0,
        "{body}"
    );
    assert!(
        metric(&body, "lifeboat_prune_objects_deleted").unwrap_or(0.0) > 0.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "lifeboat_prune_failures"),
        Some(0.0),
        "{body}"
    );

    // Recorded, and never at the same time as a backup.
    let all = runs(&ws);
    let maintenance: Vec<&Value> = all
        .iter()
        .filter(|r| (r["kind"] == "forget" || r["kind"] == "prune") && r["plan"] == "app-data")
        .collect();
    assert_eq!(maintenance.len(), 2, "{maintenance:?}");
    let backups: Vec<&Value> = all
        .iter()
        .filter(|r| r["kind"] == "backup" && r["phase"] != "running")
        .collect();
    let span = |r: &Value| {
        (
            r["started_at"].as_i64().unwrap(),
            r["ended_at"].as_i64().unwrap(),
        )
    };
    let (m_start, m_end) = (
        maintenance.iter().map(|r| span(r).0).min().unwrap(),
        maintenance.iter().map(|r| span(r).1).max().unwrap(),
    );
    let scheduled_backups = backups
        .iter()
        .filter(|r| !r["scheduled_for"].is_null())
        .count();
    assert!(scheduled_backups >= 2, "{backups:?}");
    for b in &backups {
        let (s, e) = span(b);
        assert!(
            e <= m_start || s >= m_end,
            "backup {s}..{e} overlaps forget + prune {m_start}..{m_end}"
        );
    }
}

#[test]
fn forget_refuses_a_plan_a_restore_test_is_using() {
    let ws = Workspace::new();
    ws.edit_config(|c| c.replace("rpo = \"24h\"", "rpo = \"1s\""));
    ws.init();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"cmd\"\nobjectives = {{ rpo = \"1s\" }}\nretention = {{ keep_last = 1 }}\nsource = {{ kind = \"command\", command = [\"sh\", \"-c\", \"echo data\"], restore_command = [\"true\"], verify_command = [\"sh\", \"-c\", \"sleep 6; cat >/dev/null\"] }}\n"
        )
    });
    ws.ok(&["backup", "cmd"]);
    ws.ok(&["backup", "cmd"]);
    let mut test = ws
        .cmd(&["verify", "--restore", "--plan", "cmd"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let out = ws.run(&["forget", "--plan", "cmd", "--dry-run", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("forget --json");
        if let Some(why) = v["plans"][0]["refused"].as_str() {
            assert_eq!(out.status.code(), Some(4), "refused: exit 4");
            break why.to_string();
        }
        if test.try_wait().unwrap().is_some() {
            let out = test.wait_with_output().unwrap();
            panic!(
                "the restore test ended ({}) and forget never saw it: {v}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(refused.contains("restore test"), "{refused}");
    // The real forget refuses too (exit 4) and forgets nothing.
    let text = ws.fails(&["forget", "--plan", "cmd"], 4);
    assert!(
        text.contains("REFUSED") && text.contains("is using"),
        "{text}"
    );
    assert_eq!(
        ws.json(&["snapshots", "--plan", "cmd"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let out = test.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the restore test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once it ends, forget applies the policy.
    let v = ws.json(&["forget", "--plan", "cmd"]);
    assert_eq!(
        v["plans"][0]["forgotten"].as_array().unwrap().len(),
        1,
        "{v}"
    );
}

#[test]
fn the_newest_snapshot_complete_in_every_region_is_never_forgotten() {
    let ws = Workspace::new();
    ws.edit_config(|c| c.replace("rpo = \"24h\"", "rpo = \"1s\""));
    write(&ws.path("data/a.txt"), b"one");
    ws.init();
    ws.ok(&["backup", "app-data"]);
    let complete = ws.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Two newer snapshots reach us-west-2 only (us-east-2 is unplugged: degraded backups).
    let east = ws.region("us-east-2");
    std::fs::rename(&east, ws.path("east.unplugged")).unwrap();
    for text in ["two", "three"] {
        std::thread::sleep(Duration::from_millis(1100));
        write(&ws.path("data/a.txt"), text.as_bytes());
        assert_eq!(ws.run(&["backup", "app-data"]).status.code(), Some(3));
    }
    // While us-east-2 is away, which snapshot is complete everywhere is unknown: refused.
    let text = ws.fails(&["forget", "--keep-last", "1"], 4);
    assert!(
        text.contains("us-east-2") && text.contains("unavailable"),
        "{text}"
    );
    std::fs::rename(ws.path("east.unplugged"), &east).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let v = ws.json(&["forget", "--keep-last", "1"]);
    let plan = &v["plans"][0];
    let kept: Vec<&str> = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "the newest (keep_last) and the complete one: {v}"
    );
    assert!(kept.contains(&complete.as_str()), "{v}");
    let why = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == complete.as_str())
        .unwrap()["reasons"]
        .to_string();
    assert!(
        why.contains("newest snapshot complete in every region"),
        "{why}"
    );
    assert_eq!(plan["forgotten"].as_array().unwrap().len(), 1, "{v}");
    assert!(east.join(format!("snapshots/{complete}")).exists());
}

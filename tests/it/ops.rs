//! Operations over the catalog through the real binary: `catalog sync`, `status`,
//! `run-due`, `audit`.

use serde_json::Value;

use crate::common::{write, Workspace};

/// A workspace with the repository initialised and some data.
pub fn ready() -> Workspace {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    write(&ws.path("data/dir/b.bin"), &vec![7u8; 200_000]);
    ws.ok(&["init"]);
    ws
}

/// Edit the workspace's config text.
pub fn edit_config(ws: &Workspace, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(ws.config(), f(text)).unwrap();
}

/// Point the workspace at another catalog URL.
pub fn set_catalog(ws: &Workspace, url: &str) {
    edit_config(ws, |text| {
        text.lines()
            .map(|l| {
                if l.starts_with("url = ") {
                    format!("url = \"{url}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
}

pub fn set_schedule(ws: &Workspace, schedule: &str) {
    edit_config(ws, |text| {
        text.replace(
            "schedule = \"0 3 * * *\"",
            &format!("schedule = \"{schedule}\""),
        )
    });
}

pub fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

pub fn catalog_url(ws: &Workspace) -> String {
    format!("sqlite://{}", ws.path("lifeboat.db").display())
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn catalog_sync_rebuilds_the_snapshot_listing() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    write(&ws.path("data/a.txt"), b"alpha, changed\n");
    ws.ok(&["backup", "app-data"]);
    let before = ws.ok(&["catalog", "snapshots", "--json"]);
    let listed = json(&before);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{before}");
    // The catalog's listing matches the repository's.
    let live = json(&ws.ok(&["snapshots", "--json"]));
    for (c, l) in listed
        .as_array()
        .unwrap()
        .iter()
        .zip(live.as_array().unwrap())
    {
        assert_eq!(c["id"], l["id"]);
        assert_eq!(c["time"], l["time"]);
        let mut regions: Vec<String> = serde_json::from_value(l["regions"].clone()).unwrap();
        regions.sort();
        assert_eq!(c["present"], serde_json::json!(regions));
    }
    // Lose the catalog; rebuild it from one region alone.
    for f in ["lifeboat.db", "lifeboat.db-wal", "lifeboat.db-shm"] {
        let _ = std::fs::remove_file(ws.path(f));
    }
    let empty = ws.ok(&["catalog", "snapshots"]);
    assert!(empty.contains("knows no snapshots"), "{empty}");
    let out = ws.ok(&["catalog", "sync", "--from", "us-east-2"]);
    assert!(out.contains("2 snapshots read from us-east-2"), "{out}");
    assert_eq!(ws.ok(&["catalog", "snapshots", "--json"]), before);

    // With the other region gone too, the history still comes back from us-east-2.
    std::fs::remove_dir_all(ws.path("us-west-2")).unwrap();
    for f in ["lifeboat.db", "lifeboat.db-wal", "lifeboat.db-shm"] {
        let _ = std::fs::remove_file(ws.path(f));
    }
    ws.ok(&["catalog", "sync", "--from", "us-east-2"]);
    let after = json(&ws.ok(&["catalog", "snapshots", "--json"]));
    assert_eq!(after.as_array().unwrap().len(), 2);
    for s in after.as_array().unwrap() {
        assert_eq!(s["present"], serde_json::json!(["us-east-2"]), "{s}");
    }
}

#[test]
fn backups_and_restores_are_recorded_as_runs() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    ws.ok(&[
        "restore",
        "app-data",
        "--to",
        ws.path("restored").to_str().unwrap(),
    ]);
    let out = ws.run(&[
        "restore",
        "app-data",
        "--to",
        ws.path("restored").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a non-empty target is refused");
    let runs = json(&ws.ok(&["catalog", "runs", "--json"]));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let kinds: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["phase"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("backup", "succeeded")), "{kinds:?}");
    assert!(kinds.contains(&("restore", "succeeded")), "{kinds:?}");
    assert!(kinds.contains(&("restore", "failed")), "{kinds:?}");
    let backup = runs.iter().find(|r| r["kind"] == "backup").unwrap();
    assert_eq!(backup["regions"]["us-west-2"], "ok");
    assert_eq!(backup["regions"]["us-east-2"], "ok");
    assert_eq!(backup["bytes"], 200_006);
}

#[test]
fn verify_marks_snapshots_verified_per_region() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    let before = json(&ws.ok(&["catalog", "snapshots", "--json"]));
    assert_eq!(before[0]["verified"], serde_json::json!([]));
    ws.ok(&["verify"]);
    let after = json(&ws.ok(&["catalog", "snapshots", "--json"]));
    assert_eq!(
        after[0]["verified"],
        serde_json::json!(["us-east-2", "us-west-2"])
    );
    let runs = json(&ws.ok(&["catalog", "runs", "--json"]));
    assert_eq!(runs[0]["kind"], "verify");
    assert_eq!(runs[0]["phase"], "succeeded");
}

#[test]
fn status_exit_codes_follow_the_objectives() {
    let ws = ready();
    // No snapshot: RPO breached.
    let out = ws.run(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["level"], "breach");
    assert_eq!(v["plans"][0]["rpo"]["note"], "no snapshot yet");

    ws.ok(&["backup", "app-data"]);
    let out = ws.run(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "warning: no restore test, no drill"
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let plan = &v["plans"][0];
    assert_eq!(plan["rpo"]["level"], "ok");
    assert!(plan["rpo"]["age_seconds"].as_i64().unwrap() < 60);
    assert_eq!(plan["rpo"]["target_seconds"], 86_400);
    assert!(plan["rto"]["note"]
        .as_str()
        .unwrap()
        .contains("no restore test yet"));
    assert_eq!(plan["rto"]["target_seconds"], 7_200);
    assert!(plan["drill"]["note"]
        .as_str()
        .unwrap()
        .contains("no DR drill recorded yet"));
    assert_eq!(plan["regions"][0]["health"], "ok");
    assert_eq!(plan["regions"][1]["health"], "ok");

    // Evidence arrives (as `verify --restore` and `drill run` will record it).
    rt().block_on(async {
        use lifeboat::catalog::evidence::{Drill, RestoreTest};
        let c = lifeboat::catalog::Catalog::open(&catalog_url(&ws))
            .await
            .unwrap();
        let now = lifeboat::host::now_secs();
        c.record_restore_test(&RestoreTest {
            id: String::new(),
            plan: "app-data".into(),
            snapshot: "x".into(),
            region: "us-east-2".into(),
            started_at: now - 60,
            duration_ms: 30_000,
            bytes: 100_000,
            passed: true,
            detail: None,
        })
        .await
        .unwrap();
        c.record_drill(&Drill {
            id: String::new(),
            runbook: "region-loss".into(),
            plan: None,
            started_at: now - 3600,
            ended_at: Some(now - 3000),
            passed: true,
        })
        .await
        .unwrap();
    });
    let out = ws.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("PLAN") && text.contains("app-data") && text.contains("OK"),
        "{text}"
    );
    // 30 s for 100 kB, projected at the current 200 kB: 60 s.
    let v = json(&ws.ok(&["status", "--json"]));
    let projected = v["plans"][0]["rto"]["projected_seconds"].as_f64().unwrap();
    assert!((projected - 60.0).abs() < 0.5, "{projected}");
}

#[test]
fn run_due_runs_what_is_due_once() {
    let ws = ready();
    // "0 3 * * *" and never run: due now (catch up once).
    let out = ws.ok(&["run-due"]);
    assert!(out.contains("app-data: succeeded"), "{out}");
    assert_eq!(ws.ok(&["run-due"]).trim(), "nothing is due");
    let runs = json(&ws.ok(&["catalog", "runs", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert!(runs[0]["scheduled_for"].as_i64().is_some());
    // A failing plan exits 1 after its retries, recorded as failed.
    set_schedule(&ws, "* * * * * *");
    std::fs::remove_dir_all(ws.path("data")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = ws.run(&["run-due", "--retries", "1", "--backoff", "10ms", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["runs"][0]["outcome"], "failed");
    assert_eq!(v["runs"][0]["attempts"], 2);
}

#[test]
fn run_due_refuses_an_invalid_schedule() {
    let ws = ready();
    set_schedule(&ws, "0 25 * * *");
    // Since schedules are checked when the config loads, an invalid one is a config
    // error (exit 2, with its line) for run-due as for every command, and nothing runs.
    let out = ws.run(&["run-due"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plans[0].schedule"), "{err}");
    assert!(err.contains("hour 25 is out of range"), "{err}");
}

#[test]
fn run_due_stops_an_attempt_at_its_timeout() {
    let ws = ready();
    // Incompressible, so the backup takes long enough to be stopped.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let data: Vec<u8> = (0..(64usize << 20) / 8)
        .flat_map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x.to_le_bytes()
        })
        .collect();
    write(&ws.path("data/big.bin"), &data);
    let out = ws.run(&["run-due", "--timeout", "1ms", "--retries", "0", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["runs"][0]["outcome"], "failed");
    assert!(
        v["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1ms"),
        "{v}"
    );
    // Nothing partial is visible.
    let snaps = json(&ws.ok(&["snapshots", "--json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 0);
}

#[test]
fn audit_trail_records_and_detects_tampering() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    ws.ok(&["snapshots"]);
    ws.ok(&[
        "restore",
        "app-data",
        "--to",
        ws.path("r").to_str().unwrap(),
    ]);
    let _ = ws.run(&["backup", "no-such-plan"]);
    let _ = ws.run(&["status", "--json"]); // not audited
    let v = json(&ws.ok(&["audit", "--verify", "--json"]));
    assert_eq!(v["intact"], true);
    let events = v["events"].as_array().unwrap();
    let commands: Vec<&str> = events
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    // `init` from ready() comes first; every command has an intent and an outcome entry.
    assert_eq!(events.len(), 10, "{commands:?}");
    assert!(commands[2].ends_with("backup app-data"), "{commands:?}");
    assert!(commands[7].contains("restore app-data"), "{commands:?}");
    assert_eq!(events[2]["outcome"], "started");
    assert_eq!(events[3]["outcome"], "ok");
    assert_eq!(events[3]["target"], "app-data");
    assert!(events[9]["outcome"].as_str().unwrap().starts_with("failed"));
    assert!(!events[0]["os_user"].as_str().unwrap().is_empty());

    // Modify one entry: --verify fails with exit 4 and names it.
    rt().block_on(async {
        let c = lifeboat::catalog::Catalog::open(&catalog_url(&ws))
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET os_user = 'mallory' WHERE seq = 2")
            .execute(c.pool())
            .await
            .unwrap();
    });
    let out = ws.run(&["audit", "--verify"]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TAMPERED entry 2"), "{text}");
    assert!(text.contains("audit chain BROKEN"), "{text}");
}

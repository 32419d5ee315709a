//! The audit trail beyond the catalog: intent and outcome entries, keyed and checkpointed
//! into both regions (`audit/<chain>/…`); a truncated, emptied or rewritten catalog is
//! detected by `audit --verify` (exit 4, naming the entries) and `catalog sync` brings the
//! entries back; objects that do not authenticate are ignored; a restore killed with
//! SIGKILL on a restore host (identity only) still leaves its keyed intent entry; entries
//! written before the keyed chain still list and verify.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{write, Workspace};

fn ready() -> Workspace {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    ws.init();
    ws
}

/// Run `f` on the workspace's catalog (as someone with access to the database would).
fn with_catalog<Fut: std::future::Future<Output = ()>>(
    ws: &Workspace,
    f: impl FnOnce(lifeboat::catalog::Catalog) -> Fut,
) {
    let url = format!("sqlite://{}", ws.path("lifeboat.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let c = lifeboat::catalog::Catalog::open(&url).await.unwrap();
            f(c).await
        });
}

fn sql(ws: &Workspace, statement: &str) {
    let statement = statement.to_string();
    with_catalog(ws, |c| async move {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(c.pool())
            .await
            .unwrap();
    });
}

/// `audit --verify --json`, whatever its exit code.
fn verify(ws: &Workspace) -> (Option<i32>, Value, String) {
    let out = ws.run(&["audit", "--verify", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit --verify --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checkpoints(ws: &Workspace, region: &str) -> Vec<String> {
    ws.objects(region, "audit")
        .iter()
        .map(|p| ws.object_name(region, p))
        .collect()
}

#[test]
fn audit_entries_are_keyed_paired_and_checkpointed_in_every_region() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    let (code, v, err) = verify(&ws);
    assert_eq!(code, Some(0), "{v} {err}");
    let events = v["events"].as_array().unwrap();
    // init and backup, each an intent and an outcome.
    assert_eq!(events.len(), 4, "{v}");
    for e in events {
        assert_eq!(e["keyed"], true, "{e}");
    }
    assert_eq!(events[2]["phase"], "intent");
    assert_eq!(events[2]["outcome"], "started");
    assert_eq!(events[3]["phase"], "outcome");
    assert_eq!(events[3]["intent"], events[2]["seq"]);
    assert_eq!(events[3]["outcome"], "ok");
    let chain = v["regions"]["chain"].as_str().unwrap().to_string();
    for region in ["us-west-2", "us-east-2"] {
        let names = checkpoints(&ws, region);
        // init's intent comes before the repository exists: checkpointed with its outcome.
        for seq in 1..=4 {
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(&format!("audit/{chain}/{seq:012}."))),
                "{region} lacks entry {seq}: {names:?}"
            );
        }
    }
    assert_eq!(v["regions"]["not_checkpointed"], 0, "{v}");
    // A checkpoint is sealed: the command line is not readable in the region.
    let file = ws.objects("us-west-2", "audit").pop().unwrap();
    let bytes = std::fs::read(file).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("app-data"));
}

#[test]
fn a_truncated_catalog_is_detected_and_catalog_sync_brings_the_trail_back() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    ws.ok(&["snapshots"]);
    let (_, before, _) = verify(&ws);
    let head = before["head"]["seq"].as_i64().unwrap();
    assert_eq!(head, 6);
    // The newest three entries go: the chain alone cannot see it.
    sql(&ws, "DELETE FROM audit_events WHERE seq > 3");
    let (code, v, err) = verify(&ws);
    assert_eq!(code, Some(4), "{v} {err}");
    assert_eq!(v["intact"], false);
    assert_eq!(v["regions"]["missing"], serde_json::json!([[4, 6]]), "{v}");
    let text = ws.fails(&["audit", "--verify"], 4);
    assert!(
        text.contains(
            "TAMPERED entry 4: entries 4..6 are in the regions but missing from the catalog"
        ),
        "{text}"
    );
    assert!(text.contains("catalog sync"), "{text}");
    // Appending on top would fork the chain: refused with a warning, the command still runs.
    let out = ws.run(&["snapshots"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds entry 4"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ws.ok(&["catalog", "sync"]);
    assert!(out.contains("audit trail: 3 entries brought back"), "{out}");
    let (code, v, err) = verify(&ws);
    assert_eq!(code, Some(0), "{v} {err}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events[3]["seq"], 4);
    assert_eq!(events[5]["command"], before["events"][5]["command"]);
    // catalog sync's own outcome follows the restored entries.
    assert!(events.len() >= 7, "{v}");

    // The whole table emptied.
    sql(&ws, "DELETE FROM audit_events");
    let (code, v, _) = verify(&ws);
    assert_eq!(code, Some(4));
    let missing = &v["regions"]["missing"][0];
    assert_eq!(missing[0], 1, "{v}");
    assert!(missing[1].as_i64().unwrap() >= 7, "{v}");
}

#[test]
fn a_rewritten_entry_and_forged_checkpoints_are_told_apart() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    // The newest entry rewritten: no later entry links to it, the MAC and the regions do.
    sql(
        &ws,
        &format!(
            "UPDATE audit_events SET outcome = 'failed (exit 1)', hash = '{}' WHERE seq = 4",
            "0f".repeat(32)
        ),
    );
    let (code, v, _) = verify(&ws);
    assert_eq!(code, Some(4));
    let problems = v["problems"].to_string();
    assert!(problems.contains("does not match its MAC"), "{problems}");
    assert!(problems.contains("rewritten"), "{problems}");
    // Rewritten back to the truth, by catalog sync from the regions.
    let out = ws.ok(&["catalog", "sync"]);
    assert!(out.contains("1 rewritten ones replaced"), "{out}");
    let (code, v, _) = verify(&ws);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["events"][3]["outcome"], "ok");

    // Someone with put rights in a bucket, but not the key, adds an entry: ignored.
    let chain = v["regions"]["chain"].as_str().unwrap().to_string();
    let forged = ws
        .region("us-east-2")
        .join(format!("audit/{chain}/000000000099.{}", "ab".repeat(16)));
    std::fs::write(&forged, b"age-encryption.org/v1 not really").unwrap();
    let (code, v, _) = verify(&ws);
    assert_eq!(code, Some(0), "a forged object is not a missing entry: {v}");
    assert_eq!(v["regions"]["forged"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn a_killed_restore_on_a_restore_host_leaves_a_keyed_intent() {
    let ws = ready();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"stream\"\nsource = {{ kind = \"command\", command = [\"echo\", \"hello\"], restore_command = [\"sh\", \"-c\", \"cat >/dev/null; sleep 15\"] }}\n"
        )
    });
    ws.ok(&["backup", "stream"]);
    // A restore host: the identity only; the chain key comes through keys/writer.age.
    ws.edit_config(|c| {
        c.lines()
            .filter(|l| !l.starts_with("writer_key_file"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let mut child = ws.cmd(&["restore", "stream"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let intent = loop {
        let out = ws.run(&["audit", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let found = v["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| {
                    e["phase"] == "intent"
                        && e["command"]
                            .as_str()
                            .unwrap_or("")
                            .contains("restore stream")
                })
                .cloned()
        });
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no intent entry for the restore");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Still running (restore_command sleeps): kill it the way the OOM killer would.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restore ended before it was killed"
    );
    child.kill().unwrap(); // SIGKILL: no chance to write an outcome
    let status = child.wait().unwrap();
    assert!(!status.success());
    let seq = intent["seq"].as_i64().unwrap();
    let (code, v, err) = verify(&ws);
    assert_eq!(code, Some(0), "{v} {err}");
    let events = v["events"].as_array().unwrap();
    assert!(
        !events.iter().any(|e| e["intent"] == seq),
        "no outcome for a killed restore: {v}"
    );
    let entry = events.iter().find(|e| e["seq"] == seq).unwrap();
    assert_eq!(
        entry["keyed"], true,
        "keyed on a host without the writer key file: {entry}"
    );
    let chain = v["regions"]["chain"].as_str().unwrap();
    for region in ["us-west-2", "us-east-2"] {
        assert!(
            checkpoints(&ws, region)
                .iter()
                .any(|n| n.starts_with(&format!("audit/{chain}/{seq:012}."))),
            "{region} lacks the intent"
        );
    }
    let listing = ws.ok(&["audit"]);
    assert!(listing.contains("started, no outcome"), "{listing}");
}

#[test]
fn entries_from_before_the_keyed_chain_still_list_and_verify() {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    // Two entries as schema 1 wrote them: unkeyed, no phase (a catalog without a seal).
    with_catalog(&ws, |c| async move {
        for command in ["backup app-data (old)", "restore app-data (old)"] {
            c.audit(lifeboat::catalog::audit::AuditEntry {
                command: command.into(),
                outcome: "ok".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    ws.init();
    let (code, v, err) = verify(&ws);
    assert_eq!(code, Some(0), "{v} {err}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{v}");
    assert_eq!(events[0]["keyed"], false);
    assert_eq!(events[0]["command"], "backup app-data (old)");
    assert_eq!(events[2]["keyed"], true);
    assert_eq!(
        events[2]["prev_hash"], events[1]["hash"],
        "the keyed chain continues the old one"
    );
    let listing = ws.ok(&["audit"]);
    assert!(listing.contains("restore app-data (old)"), "{listing}");
    // An old entry changed is still caught (by its unkeyed hash).
    sql(
        &ws,
        "UPDATE audit_events SET outcome = 'failed' WHERE seq = 1",
    );
    let (code, v, _) = verify(&ws);
    assert_eq!(code, Some(4), "{v}");
    assert_eq!(v["problems"][0]["seq"], 1, "{v}");
}

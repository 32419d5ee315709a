//! Backups that die: SIGKILL and SIGTERM in the middle of uploading. No partial snapshot may
//! ever be visible, the repository must still verify, and the next backup must succeed and
//! reuse what the dead one stored and indexed (DESIGN.md, principle 5 and the write order).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_same_tree, capture, write_random, Workspace, XorShift};

const REGIONS: [&str; 2] = ["us-west-2", "us-east-2"];

/// `files` files of `each` pseudo-random bytes under `data/`; returns the total.
fn random_source(ws: &Workspace, seed: u64, files: usize, each: u64) -> u64 {
    let mut rng = XorShift::new(seed);
    for i in 0..files {
        write_random(&ws.path(&format!("data/part-{i:02}.bin")), each, &mut rng);
    }
    files as u64 * each
}

fn spawn_backup(ws: &Workspace) -> Child {
    let log = std::fs::File::create(ws.path("backup.stderr")).unwrap();
    ws.cmd(&["backup", "app-data"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lifeboat backup")
}

/// Poll until `cond` holds, while the backup is still running. Panics if the backup ends
/// first: the data is then too small to interrupt it mid-way.
fn wait_while_running(ws: &Workspace, child: &mut Child, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "backup ended ({status}) before {what}: make the source bigger so it can be interrupted\n{}",
                std::fs::read_to_string(ws.path("backup.stderr")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "backup ended right after {what}"
    );
}

fn has_objects(ws: &Workspace, prefix: &str) -> bool {
    REGIONS.iter().all(|r| !ws.objects(r, prefix).is_empty())
}

/// No snapshot may be visible, through the CLI or as an object in any region.
fn assert_no_snapshot(ws: &Workspace, when: &str) {
    let list = ws.json(&["snapshots"]);
    assert_eq!(list, serde_json::json!([]), "{when}: snapshots listed");
    for r in REGIONS {
        assert_eq!(
            ws.objects(r, "snapshots/"),
            Vec::<std::path::PathBuf>::new(),
            "{when}: manifest in {r}"
        );
    }
}

/// Packs of `region` that `verify --read-data` reports as named by no index file.
fn orphans(report: &serde_json::Value, region: &str) -> BTreeSet<String> {
    report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.starts_with(&format!("{region}: ")) && w.contains("not named by any index"))
        .map(|w| w.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Bytes of the packs indexed in every region (what a new backup may deduplicate against).
fn indexed_pack_bytes(ws: &Workspace, report: &serde_json::Value) -> u64 {
    let mut common: Option<BTreeSet<String>> = None;
    for r in REGIONS {
        let orphans = orphans(report, r);
        let indexed: BTreeSet<String> = ws
            .objects(r, "data/")
            .iter()
            .map(|p| ws.object_name(r, p))
            .filter(|n| !orphans.contains(n))
            .collect();
        common = Some(match common {
            None => indexed,
            Some(c) => c.intersection(&indexed).cloned().collect(),
        });
    }
    common
        .unwrap()
        .iter()
        .map(|n| file_size(&ws.region("us-west-2").join(n)))
        .sum()
}

#[test]
fn sigkill_mid_backup_leaves_a_valid_repository() {
    let ws = Workspace::new();
    let total = random_source(&ws, 150, 6, 25_000_000);
    let source = capture(&ws.path("data"));
    ws.init();

    // 1: killed as soon as the first pack is stored, before any index file.
    let mut child = spawn_backup(&ws);
    wait_while_running(&ws, &mut child, "the first pack", || {
        !ws.objects("us-west-2", "data/").is_empty()
    });
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert_no_snapshot(&ws, "after the first SIGKILL");
    ws.ok(&["verify"]);

    // 2: killed once index files exist in both regions: some packs are now reusable.
    let mut child = spawn_backup(&ws);
    wait_while_running(&ws, &mut child, "index files in both regions", || {
        has_objects(&ws, "index/")
    });
    let index_at_kill = has_objects(&ws, "index/");
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert_no_snapshot(&ws, "after the second SIGKILL");
    ws.ok(&["verify"]);
    // Reading every pack: the ones the dead backups left unindexed are warnings, not damage.
    let report = ws.json(&["verify", "--read-data"]);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let reusable = indexed_pack_bytes(&ws, &report);

    // 3: the next backup completes and uploads only what was not indexed before.
    let b = ws.json(&["backup", "app-data"]);
    assert_eq!(b["degraded"], false, "{b}");
    let stored = b["stats"]["stored_bytes"].as_u64().unwrap();
    if index_at_kill {
        assert!(
            reusable >= 16 << 20,
            "an index file names ≥ 1 pack: {reusable}"
        );
        // Incompressible data: a full upload is the data plus small age/table overhead.
        let full = total + total / 500 + (1 << 20);
        assert!(
            stored + reusable <= full,
            "stored {stored} B although {reusable} B of packs were indexed (data {total} B)"
        );
    }
    let list = ws.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["complete"], true, "{list}");

    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_same_tree(&source, &capture(&to), "restore after two SIGKILLs");
}

#[test]
fn sigterm_mid_backup_exits_130_and_commits_nothing() {
    let ws = Workspace::new();
    let total = random_source(&ws, 130, 4, 20_000_000);
    ws.init();

    let mut child = spawn_backup(&ws);
    wait_while_running(&ws, &mut child, "the first pack", || {
        !ws.objects("us-west-2", "data/").is_empty()
    });
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(ws.path("backup.stderr")).unwrap();
    assert_eq!(status.code(), Some(130), "{status}: {stderr}");
    assert_no_snapshot(&ws, "after SIGTERM");
    ws.ok(&["verify"]);

    // A clean stop indexes every pack it uploaded, so nothing is orphaned and all is reused.
    let report = ws.json(&["verify", "--read-data"]);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    for r in REGIONS {
        assert!(orphans(&report, r).is_empty(), "{r}: {report}");
    }
    let reusable = indexed_pack_bytes(&ws, &report);
    assert!(reusable > 0, "the stopped backup stored packs");

    let b = ws.json(&["backup", "app-data"]);
    let stored = b["stats"]["stored_bytes"].as_u64().unwrap();
    let full = total + total / 500 + (1 << 20);
    assert!(
        stored + reusable <= full,
        "stored {stored} B although {reusable} B were indexed (data {total} B)"
    );
    assert_eq!(ws.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

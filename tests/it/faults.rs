//! Damaged storage in one region: a pack with a flipped byte, a pack deleted. Restores fall
//! back per object to the other region and say which object and region; verification finds
//! the bad copy and names it (exit 4). Damage in every region fails the restore loudly. A
//! region unreachable at backup time gives a degraded snapshot (exit 3), visible as such.

use std::path::{Path, PathBuf};

use crate::common::{assert_same_tree, capture, write, write_random, Workspace, XorShift};

/// A source spanning several 16 MiB packs, backed up; returns the captured source.
/// 54 MB of incompressible data: a pack is cut once it passes 16 MiB and a chunk adds at
/// most 4 MiB, so two packs hold at most ~42 MB and three or more are certain whatever
/// the (key-seeded) chunk boundaries.
fn backed_up(ws: &Workspace) -> std::collections::BTreeMap<Vec<u8>, crate::common::EntryMeta> {
    let mut rng = XorShift::new(3);
    write_random(&ws.path("data/a.bin"), 18_000_000, &mut rng);
    write_random(&ws.path("data/sub/b.bin"), 18_000_000, &mut rng);
    write_random(&ws.path("data/sub/c.bin"), 18_000_000, &mut rng);
    write(&ws.path("data/notes.txt"), &b"some text\n".repeat(1000));
    ws.init();
    let b = ws.json(&["backup", "app-data"]);
    assert!(b["stats"]["packs"].as_u64().unwrap() >= 3, "{b}");
    capture(&ws.path("data"))
}

fn flip_middle_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    std::fs::write(p, b).unwrap();
}

/// Run with `--json` expecting exit `code`; parse stdout.
fn json_exit(ws: &Workspace, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = ws.run(&a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "lifeboat {a:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Restore from us-west-2 into `to`; every fallback must be `object`, us-west-2 → us-east-2,
/// and us-west-2 must still have served the other objects.
fn restore_with_fallback(ws: &Workspace, to: &Path, object: &str) -> serde_json::Value {
    let r = ws.json(&[
        "restore",
        "app-data",
        "--from",
        "us-west-2",
        "--to",
        to.to_str().unwrap(),
    ]);
    let fallbacks = r["fallbacks"].as_array().unwrap();
    assert!(!fallbacks.is_empty(), "no fallback reported: {r}");
    for f in fallbacks {
        assert_eq!(f["object"], object, "{r}");
        assert_eq!(f["failed_region"], "us-west-2", "{r}");
        assert_eq!(f["used_region"], "us-east-2", "{r}");
        assert!(!f["error"].as_str().unwrap().is_empty(), "{r}");
    }
    assert!(
        r["objects_per_region"]["us-west-2"].as_u64().unwrap() > 0,
        "the healthy packs still come from us-west-2: {r}"
    );
    r
}

fn first_pack(ws: &Workspace, region: &str) -> (PathBuf, String) {
    let p = ws
        .objects(region, "data/")
        .into_iter()
        .next()
        .expect("a pack");
    let name = ws.object_name(region, &p);
    (p, name)
}

#[test]
fn corrupted_pack_in_one_region_falls_back_and_fails_verify() {
    let ws = Workspace::new();
    let source = backed_up(&ws);
    let (pack, name) = first_pack(&ws, "us-west-2");
    flip_middle_byte(&pack);

    let to = ws.path("restore-json");
    restore_with_fallback(&ws, &to, &name);
    assert_same_tree(&source, &capture(&to), "restore despite a corrupt pack");

    // The human output says it too.
    let to = ws.path("restore-text");
    let out = ws.ok(&[
        "restore",
        "app-data",
        "--from",
        "us-west-2",
        "--to",
        to.to_str().unwrap(),
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("fallback:"))
        .unwrap_or_else(|| panic!("no fallback line: {out}"));
    assert!(
        line.contains(&name) && line.contains("us-west-2") && line.contains("us-east-2"),
        "{line}"
    );
    assert_same_tree(&source, &capture(&to), "restore (text output)");

    let report = json_exit(&ws, &["verify", "--read-data"], 4);
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["region"] == "us-west-2" && p["object"] == name.as_str()),
        "verify --read-data must name {name} in us-west-2: {report}"
    );
    assert!(
        problems.iter().all(|p| p["region"] == "us-west-2"),
        "us-east-2 is intact: {report}"
    );
    let text = ws.fails(&["verify", "--read-data"], 4);
    assert!(
        text.contains(&format!("PROBLEM us-west-2: {name}")),
        "{text}"
    );

    // The same pack damaged in both regions: the restore must fail and say which object.
    let (east, east_name) = first_pack(&ws, "us-east-2");
    assert_eq!(east_name, name);
    flip_middle_byte(&east);
    let to = ws.path("restore-both-bad");
    let msg = ws.fails(&["restore", "app-data", "--to", to.to_str().unwrap()], 4);
    assert!(msg.contains(&name), "{msg}");
    assert!(
        msg.contains("us-west-2") && msg.contains("us-east-2"),
        "{msg}"
    );
}

#[test]
fn deleted_pack_in_one_region_falls_back_and_fails_verify() {
    let ws = Workspace::new();
    let source = backed_up(&ws);
    ws.ok(&["verify"]);
    let (pack, name) = first_pack(&ws, "us-west-2");
    std::fs::remove_file(&pack).unwrap();

    let to = ws.path("restored");
    let r = restore_with_fallback(&ws, &to, &name);
    assert!(
        r["fallbacks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{r}"
    );
    assert_same_tree(&source, &capture(&to), "restore despite a missing pack");

    // Structure-only verify (any host, no data read) sees the pack is gone.
    let report = json_exit(&ws, &["verify"], 4);
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["region"] == "us-west-2"
            && p["object"] == name.as_str()
            && p["message"].as_str().unwrap().contains("missing")),
        "verify must name the missing {name} in us-west-2: {report}"
    );
    assert!(
        problems.iter().all(|p| p["region"] == "us-west-2"),
        "{report}"
    );
    let text = ws.fails(&["verify"], 4);
    assert!(
        text.contains(&format!("PROBLEM us-west-2: {name}")),
        "{text}"
    );
}

#[test]
fn region_outage_at_backup_time_is_degraded_exit_3() {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    ws.init();
    let east = ws.region("us-east-2");
    let away = ws.path("us-east-2.unplugged");
    std::fs::rename(&east, &away).unwrap();

    let out = ws.run(&["backup", "app-data", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "degraded backup: {stderr}");
    assert!(
        stderr.contains("DEGRADED") && stderr.contains("us-east-2"),
        "{stderr}"
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["degraded"], true, "{b}");
    assert_eq!(b["complete_in"], serde_json::json!(["us-west-2"]), "{b}");
    assert_eq!(b["failed_regions"][0]["region"], "us-east-2", "{b}");
    assert!(
        !east.exists(),
        "the backup must not create a missing region's directory"
    );

    // Visible as degraded; restorable from the region that has it.
    let list = ws.json(&["snapshots"]);
    assert_eq!(list[0]["complete"], false, "{list}");
    assert_eq!(
        list[0]["regions"],
        serde_json::json!(["us-west-2"]),
        "{list}"
    );
    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha\n");

    // The region is back: it is a valid repository lacking exactly that snapshot.
    std::fs::rename(&away, &east).unwrap();
    let report = json_exit(&ws, &["verify"], 4);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["region"], "us-east-2", "{report}");
    assert_eq!(
        problems[0]["object"],
        format!("snapshots/{}", b["snapshot"].as_str().unwrap()),
        "{report}"
    );
}

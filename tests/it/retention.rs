//! forget, prune and erasure end to end on two local regions: policies shrink the regions and
//! the repository still verifies; erased bytes are gone from the decrypted packs; the
//! runaway guard refuses; a backup concurrent with prune loses nothing; a prune killed with
//! SIGKILL is finished by the next; a held maintenance lock refuses a second prune.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capture, write, write_random, Workspace, XorShift};

const REGIONS: [&str; 2] = ["us-west-2", "us-east-2"];
const SECRET: &[u8] = b"SECRET-CUSTOMER-42-PASSPORT-NUMBER";

/// A workspace whose plan keeps the 2 newest snapshots, with an RPO floor of 1 s.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.edit_config(|c| {
        c.replace("rpo = \"24h\"", "rpo = \"1s\"").replace(
            "retention = { keep_last = 7, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 }",
            "retention = { keep_last = 2 }",
        )
    });
    ws.init();
    ws
}

fn region_bytes(ws: &Workspace, region: &str) -> u64 {
    ws.objects(region, "data/")
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Decrypt every pack of a region with Debian's `age` and look for `needle` in the plaintext.
fn packs_contain(ws: &Workspace, region: &str, needle: &[u8]) -> bool {
    ws.objects(region, "data/").iter().any(|p| {
        let out = Command::new("age")
            .args(["-d", "-i"])
            .arg(ws.path("keys/identity.txt"))
            .arg(p)
            .output()
            .expect("run age");
        assert!(
            out.status.success(),
            "age -d {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout.windows(needle.len()).any(|w| w == needle)
    })
}

/// A file whose chunk stays uncompressed (random tail), so the marker is greppable.
fn secret_file(path: &Path, rng: &mut XorShift) {
    let mut data = SECRET.to_vec();
    data.extend(rng.bytes(64 * 1024));
    write(path, &data);
}

fn verify_clean(ws: &Workspace) {
    let v = ws.json(&["verify", "--read-data"]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
}

#[test]
fn forget_and_prune_shrink_the_regions_and_erasure_removes_the_bytes() {
    let ws = workspace();
    let mut rng = XorShift::new(7);
    secret_file(&ws.path("data/secret/customer-42.txt"), &mut rng);
    write_random(&ws.path("data/keep/base.bin"), 300_000, &mut rng);
    for i in 0..4 {
        write_random(&ws.path(&format!("data/churn-{i}.bin")), 200_000, &mut rng);
        if i > 0 {
            std::fs::remove_file(ws.path(&format!("data/churn-{}.bin", i - 1))).unwrap();
        }
        ws.ok(&["backup", "app-data"]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let before: Vec<u64> = REGIONS.iter().map(|r| region_bytes(&ws, r)).collect();

    // Dry run: exactly what would go, and the rule keeping each survivor.
    let dry = ws.json(&["forget", "--dry-run"]);
    let plan = &dry["plans"][0];
    assert_eq!(plan["forgotten"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(plan["kept"].as_array().unwrap().len(), 2, "{dry}");
    let reasons = plan["kept"][0]["reasons"].to_string();
    assert!(
        reasons.contains("keep_last") && reasons.contains("newest snapshot complete"),
        "{reasons}"
    );
    assert_eq!(
        ws.json(&["snapshots"]).as_array().unwrap().len(),
        4,
        "dry run changed nothing"
    );

    ws.json(&["forget"]);
    assert_eq!(ws.json(&["snapshots"]).as_array().unwrap().len(), 2);
    // First prune marks, the second (grace 0 s) deletes.
    let first = ws.json(&["prune", "--grace", "0s"]);
    assert!(
        first["regions"]["us-west-2"]["marked"].as_u64().unwrap() > 0,
        "{first}"
    );
    let second = ws.json(&["prune", "--grace", "0s"]);
    assert!(second["bytes_freed"].as_u64().unwrap() > 0, "{second}");
    for (i, r) in REGIONS.iter().enumerate() {
        let after = region_bytes(&ws, r);
        assert!(
            after < before[i],
            "{r}: {after} bytes after prune, {} before",
            before[i]
        );
        assert!(
            ws.objects(r, "index/").len() <= 2,
            "index consolidated in {r}"
        );
    }
    verify_clean(&ws);

    // Erasure: the secret is in the packs now (so the grep below can see it) ...
    assert!(packs_contain(&ws, "us-west-2", SECRET));
    let receipt = ws.json(&[
        "forget",
        "--path",
        "secret",
        "--plan",
        "app-data",
        "--reason",
        "GDPR erasure request 42",
    ]);
    assert_eq!(
        receipt["snapshots"].as_array().unwrap().len(),
        2,
        "{receipt}"
    );
    assert_eq!(receipt["reason"], "GDPR erasure request 42");
    assert!(
        receipt["snapshots"][0]["removed"]
            .to_string()
            .contains("secret/customer-42.txt"),
        "{receipt}"
    );
    for r in REGIONS {
        assert_eq!(ws.objects(r, "receipts/").len(), 1, "receipt stored in {r}");
    }
    let audit = ws.json(&["audit"]);
    assert!(audit.to_string().contains("erasure receipt"), "{audit}");
    ws.json(&["prune", "--grace", "0s", "--max-unused", "50"]);
    ws.json(&["prune", "--grace", "0s", "--max-unused", "50"]);
    // ... and gone from every decrypted pack of every region after prune.
    for r in REGIONS {
        assert!(
            !packs_contain(&ws, r, SECRET),
            "erased bytes still in a pack of {r}"
        );
    }
    verify_clean(&ws);
    // A restore does not bring the erased path back; the rest is intact.
    let out = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", out.to_str().unwrap()]);
    assert!(!out.join("secret/customer-42.txt").exists());
    let tree = capture(&out);
    assert!(
        tree.keys().any(|k| k.ends_with(b"keep/base.bin")),
        "{:?}",
        tree.keys()
    );
}

#[test]
fn the_runaway_guard_refuses_more_snapshots_than_the_schedule_allows() {
    let ws = workspace();
    // Monthly schedule: at most 2 × 1 + 10 = 12 snapshots in 7 days.
    ws.edit_config(|c| c.replace("schedule = \"0 3 * * *\"", "schedule = \"0 3 1 * *\""));
    write(&ws.path("data/a.txt"), b"a");
    for _ in 0..13 {
        ws.ok(&["backup", "app-data"]);
    }
    let text = ws.fails(&["forget"], 4);
    assert!(
        text.contains("REFUSED") && text.contains("13 snapshots"),
        "{text}"
    );
    assert_eq!(
        ws.json(&["snapshots"]).as_array().unwrap().len(),
        13,
        "nothing forgotten"
    );
}

#[test]
fn a_held_maintenance_lock_refuses_a_second_prune() {
    let ws = workspace();
    write(&ws.path("data/a.txt"), b"a");
    ws.ok(&["backup", "app-data"]);
    let now = lifeboat_repo::clock::now_secs();
    let lock = serde_json::json!({
        "holder": "other-host pid 1", "operation": "prune", "host": "other-host", "pid": 1,
        "created": now - 10, "expires": now + 600
    });
    write(
        &ws.region("us-west-2").join("locks/0000000000000000"),
        lock.to_string().as_bytes(),
    );
    let text = ws.fails(&["prune"], 1);
    assert!(
        text.contains("locked for maintenance by other-host"),
        "{text}"
    );
    // An expired lock does not block.
    let expired = serde_json::json!({
        "holder": "other-host pid 1", "operation": "prune", "created": now - 7200, "expires": now - 3600
    });
    write(
        &ws.region("us-west-2").join("locks/0000000000000000"),
        expired.to_string().as_bytes(),
    );
    ws.json(&["prune"]);
}

#[test]
fn a_backup_concurrent_with_prune_loses_nothing() {
    let ws = workspace();
    let mut rng = XorShift::new(11);
    write_random(&ws.path("data/base.bin"), 400_000, &mut rng);
    ws.ok(&["backup", "app-data"]);
    let deadline = Instant::now() + Duration::from_secs(12);
    let config = ws.config();
    let data = ws.path("data");
    let backups = std::thread::spawn(move || {
        let mut rng = XorShift::new(12);
        let mut n = 0;
        while Instant::now() < deadline {
            write_random(&data.join(format!("f-{}.bin", n % 3)), 150_000, &mut rng);
            let out = Command::new(crate::common::bin())
                .arg("--config")
                .arg(&config)
                .args(["backup", "app-data"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "backup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
        n
    });
    let mut prunes = 0;
    while Instant::now() < deadline {
        ws.ok(&["forget", "--keep-last", "2"]);
        // A grace longer than a backup takes here: the rule docs/FORMAT.md states.
        ws.ok(&["prune", "--grace", "3s", "--max-unused", "0"]);
        prunes += 1;
    }
    let n = backups.join().unwrap();
    assert!(n >= 3 && prunes >= 3, "{n} backups, {prunes} prunes");
    std::thread::sleep(Duration::from_secs(4));
    ws.ok(&["prune", "--grace", "3s"]);
    verify_clean(&ws);
    let out = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", out.to_str().unwrap()]);
    crate::common::assert_same_tree(&capture(&ws.path("data")), &capture(&out), "latest");
}

#[test]
fn a_prune_killed_at_any_point_is_finished_by_the_next() {
    let ws = workspace();
    let mut rng = XorShift::new(21);
    for i in 0..6 {
        write_random(&ws.path(&format!("data/f-{i}.bin")), 300_000, &mut rng);
        ws.ok(&["backup", "app-data"]);
        std::fs::remove_file(ws.path(&format!("data/f-{i}.bin"))).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    ws.ok(&["forget"]);
    ws.ok(&["prune", "--grace", "0s", "--max-unused", "0"]); // marks
    let packs_before = ws.objects("us-west-2", "data/").len();
    let mut killed = 0;
    for delay_ms in [5u64, 20, 40, 80, 120, 200, 300] {
        let mut child = ws
            .cmd(&["prune", "--grace", "0s", "--max-unused", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
            // Whatever was interrupted, every region is a valid repository.
            let v = ws.json(&["verify"]);
            assert_eq!(
                v["problems"],
                serde_json::json!([]),
                "after SIGKILL at {delay_ms} ms: {v}"
            );
        }
    }
    assert!(killed > 0, "no prune was interrupted");
    ws.ok(&["prune", "--grace", "0s", "--max-unused", "0"]);
    assert!(ws.objects("us-west-2", "data/").len() < packs_before);
    verify_clean(&ws);
    let out = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", out.to_str().unwrap()]);
}

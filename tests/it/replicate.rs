//! `lifeboat replicate` heals a degraded snapshot: one S3 region dies in the middle of a
//! backup, the backup completes in the other, a restore works from the survivor, the region
//! comes back, replicate copies what it missed, and both regions then verify with data.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::write;
use crate::s3::two_regions;
use crate::servers::{aws_env, files_under, ok, random_bytes, run, Link};

#[test]
fn kill_a_region_mid_backup_restore_from_the_survivor_then_replicate() {
    let t = two_regions("60s");
    let ws = &t.ws;
    write(&ws.path("data/small.txt"), b"before the outage\n");
    ok(ws, &["backup", "app-data"]);

    // Enough incompressible data for several 16 MiB packs, so the region dies mid-way.
    write(&ws.path("data/big.bin"), &random_bytes(72 << 20, 11));
    let east_data = t
        .east
        .bucket_dir("lifeboat-use2")
        .join("lifeboat/test/data");
    let packs_before = files_under(&east_data).len();
    let mut cmd = ws.cmd(&["backup", "app-data", "--json"]);
    aws_env(&mut cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn backup");
    let deadline = Instant::now() + Duration::from_secs(120);
    while files_under(&east_data).len() <= packs_before {
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "no pack reached us-east-2 during the backup ({:?})\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t.east_proxy.set(Link::Cut);
    let out = child.wait_with_output().expect("backup finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "degraded: {stderr}");
    assert!(stderr.contains("us-east-2"), "{stderr}");

    // Restore from the survivor while us-east-2 is still down.
    let restored = ws.path("restore");
    ok(
        ws,
        &[
            "restore",
            "app-data",
            "--from",
            "us-west-2",
            "--to",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(restored.join("big.bin")).unwrap(),
        std::fs::read(ws.path("data/big.bin")).unwrap()
    );

    // The region is back; it lacks the snapshot until replicate runs.
    t.east_proxy.set(Link::Up);
    let listing = ok(ws, &["snapshots"]);
    assert!(listing.contains("DEGRADED"), "{listing}");
    let verify = run(ws, &["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(4),
        "verify sees the missing snapshot"
    );

    let summary = ok(ws, &["replicate", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&summary).expect("json");
    let east = &report["regions"]["us-east-2"];
    assert_eq!(east["complete"], true, "{report}");
    assert!(east["copied"]["snapshot"] == 1, "{report}");
    assert!(
        east["copied"]["pack"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(report["regions"]["us-west-2"]["missing"], 0, "{report}");

    let listing = ok(ws, &["snapshots"]);
    assert!(!listing.contains("DEGRADED"), "{listing}");
    // The catalog (where the RPO is computed) knows at once that us-east-2 holds them all,
    // and has the replicate run.
    let cached: serde_json::Value =
        serde_json::from_str(&ok(ws, &["catalog", "snapshots", "--json"])).expect("json");
    let snaps = cached.as_array().expect("array");
    assert_eq!(snaps.len(), 2, "{cached}");
    for s in snaps {
        assert_eq!(s["missing"], serde_json::json!([]), "{cached}");
    }
    let runs = ok(ws, &["catalog", "runs", "--json"]);
    assert!(runs.contains("\"replicate\""), "{runs}");
    let verify = ok(ws, &["verify", "--read-data"]);
    assert!(verify.contains("verify: ok"), "{verify}");

    // Idempotent: nothing left to copy.
    let again = ok(ws, &["replicate"]);
    assert!(again.contains("nothing to copy"), "{again}");
    // Every region can now restore on its own.
    t.west_proxy.set(Link::Cut);
    ok(
        ws,
        &[
            "restore",
            "app-data",
            "--from",
            "us-east-2",
            "--to",
            ws.path("restore-east").to_str().unwrap(),
        ],
    );
    assert!(ws.path("restore-east/big.bin").is_file());
}

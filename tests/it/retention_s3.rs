//! Retention against S3 servers: moto (which enforces Object Lock) for locked objects that
//! forget and prune report instead of deleting and for retention extension of packs still
//! needed; s3s-fs (plain S3) for forget + prune shrinking a bucket that still verifies.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;
use lifeboat::config::{LockMode, ObjectLock};
use lifeboat_repo::backend::{Backend, DynBackend};
use lifeboat_repo::keys::{parse_recipient, Identity, Keyring, WriterKey};
use lifeboat_repo::{Cancel, Region, Repository};

use crate::common::{write, write_random, Workspace, XorShift};
use crate::servers::{backend, ok, run, s3_workspace, settings, Moto, S3Region, S3sServer};

fn retention_config(ws: &Workspace) {
    ws.edit_config(|c| {
        c.replace("rpo = \"24h\"", "rpo = \"1s\"").replace(
            "retention = { keep_last = 7, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 }",
            "retention = { keep_last = 1 }",
        )
    });
}

fn json(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(ws, &a)).expect("json")
}

fn keyring(ws: &Workspace) -> Keyring {
    let read = |f: &str| std::fs::read_to_string(ws.path(f)).unwrap();
    Keyring {
        recipients: read("keys/recipients.txt")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_recipient(l).unwrap())
            .collect(),
        writer: Some(WriterKey::parse(&read("keys/writer.key")).unwrap()),
        identity: Some(Identity::parse(&read("keys/identity.txt")).unwrap()),
    }
}

#[test]
fn locked_objects_are_reported_not_deleted_and_needed_packs_stay_locked() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut locked = settings(
        &moto.endpoint(),
        "lifeboat-locked",
        "lifeboat/test",
        Duration::from_secs(30),
    );
    locked.object_lock = Some(ObjectLock {
        days: 3,
        mode: LockMode::Governance,
    });
    let locked = backend(locked);
    let plain = backend(settings(
        &moto.endpoint(),
        "lifeboat-plain",
        "lifeboat/test",
        Duration::from_secs(30),
    ));
    rt.block_on(async {
        for (b, name, lock) in [
            (&locked, "lifeboat-locked", true),
            (&plain, "lifeboat-plain", false),
        ] {
            b.client()
                .await
                .create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(lock)
                .create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::UsWest2)
                        .build(),
                )
                .send()
                .await
                .expect("create bucket");
        }
    });
    let ws = s3_workspace(&[
        S3Region {
            name: "us-west-2",
            endpoint: moto.endpoint(),
            bucket: "lifeboat-locked",
            extra: "object_lock_days = 3\nobject_lock_mode = \"governance\"",
        },
        S3Region {
            name: "us-east-2",
            endpoint: moto.endpoint(),
            bucket: "lifeboat-plain",
            extra: "",
        },
    ]);
    retention_config(&ws);
    ok(&ws, &["init"]);
    let mut rng = XorShift::new(5);
    write_random(&ws.path("data/a.bin"), 100_000, &mut rng);
    ok(&ws, &["backup", "app-data"]);
    std::thread::sleep(Duration::from_millis(1100));
    write(&ws.path("data/b.txt"), b"second");
    ok(&ws, &["backup", "app-data"]);

    // forget: the old manifest goes from the plain bucket; the locked one is reported.
    let f = json(&ws, &["forget"]);
    let plan = &f["plans"][0];
    assert_eq!(plan["forgotten"].as_array().unwrap().len(), 1, "{f}");
    let old = plan["forgotten"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(plan["locked"][0][0], "us-west-2", "{f}");
    assert!(
        plan["locked"][0][2].as_i64().unwrap() > lifeboat_repo::clock::now_secs() + 86_400,
        "{f}"
    );
    rt.block_on(async {
        let name = format!("snapshots/{old}");
        assert!(locked.head(&name).await.is_ok(), "locked manifest kept");
        assert!(
            plain.head(&name).await.unwrap_err().is_not_found(),
            "plain manifest deleted"
        );
    });

    // An unreferenced pack under retention: marked, then reported with its date, not deleted.
    let junk = format!("data/ab/ab{}", "0".repeat(62));
    rt.block_on(locked.put(&junk, Bytes::from_static(b"junk")))
        .unwrap();
    json(&ws, &["prune", "--grace", "0s"]);
    let p = json(&ws, &["prune", "--grace", "0s"]);
    let west = &p["regions"]["us-west-2"];
    assert!(
        west["locked"].to_string().contains(&junk),
        "the locked pack is reported: {p}"
    );
    rt.block_on(async { locked.head(&junk).await.expect("still stored") });
    let text = String::from_utf8_lossy(&run(&ws, &["prune", "--grace", "0s"]).stdout).into_owned();
    assert!(text.contains("under Object Lock until"), "{text}");

    // Two days later (injected clock): packs still needed get their retention extended.
    let report = rt.block_on(async {
        let regions = vec![
            Region {
                name: "us-west-2".into(),
                backend: locked.clone() as DynBackend,
            },
            Region {
                name: "us-east-2".into(),
                backend: plain.clone() as DynBackend,
            },
        ];
        let repo = Arc::new(Repository::open(regions, keyring(&ws), None).await.unwrap());
        let opts = lifeboat_repo::prune::PruneOptions {
            grace: 0,
            max_unused: 1.0,
            dry_run: false,
            now: lifeboat_repo::clock::now_secs() + 2 * 86_400,
            holder: "test".into(),
        };
        lifeboat_repo::prune::prune(&repo, &opts, &Cancel::new())
            .await
            .unwrap()
    });
    let west = &report.regions["us-west-2"];
    assert!(west.retention_extended > 0, "{west:?}");
    assert!(west.locked.iter().any(|l| l.object == junk), "{west:?}");
    let packs = rt.block_on(locked.list("data/")).unwrap();
    let want = lifeboat_repo::clock::now_secs() + 5 * 86_400;
    let extended = rt.block_on(async {
        let mut n = 0;
        for o in packs.iter().filter(|o| o.name != junk) {
            let (_, until) = locked.retention(&o.name).await.unwrap().unwrap();
            if (until - want).abs() < 600 {
                n += 1;
            }
        }
        n
    });
    assert!(
        extended > 0,
        "a needed pack is locked until ≈ now + 2 d + 3 d"
    );
    // Verify finds nothing wrong but what this test left on purpose under Object Lock:
    // the junk "pack" (it fails its id) and the forgotten manifest that us-west-2 must keep
    // until its retain-until (so us-east-2 "lacks" it).
    let v = run(&ws, &["verify", "--read-data", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).expect("verify --json");
    let problems = v["problems"].as_array().expect("problems");
    assert!(
        problems.iter().all(|p| {
            let o = p["object"].as_str().unwrap_or("");
            o == junk || o == format!("snapshots/{old}")
        }),
        "only the locked leftovers are problems: {v}"
    );
    assert!(
        problems.iter().any(|p| p["object"] == junk.as_str()),
        "the junk pack is still stored and still fails its id: {v}"
    );
}

#[test]
fn forget_and_prune_shrink_a_plain_s3_bucket() {
    let server = S3sServer::start(&["lifeboat-west", "lifeboat-east"]);
    let ws = s3_workspace(&[
        S3Region {
            name: "us-west-2",
            endpoint: server.endpoint(),
            bucket: "lifeboat-west",
            extra: "",
        },
        S3Region {
            name: "us-east-2",
            endpoint: server.endpoint(),
            bucket: "lifeboat-east",
            extra: "",
        },
    ]);
    retention_config(&ws);
    ok(&ws, &["init"]);
    let mut rng = XorShift::new(9);
    for i in 0..3 {
        write_random(&ws.path(&format!("data/f-{i}.bin")), 200_000, &mut rng);
        ok(&ws, &["backup", "app-data"]);
        std::fs::remove_file(ws.path(&format!("data/f-{i}.bin"))).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let size = |b: &str| -> u64 {
        crate::servers::files_under(&server.bucket_dir(b))
            .iter()
            .filter(|p| p.to_string_lossy().contains("/data/"))
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let before = size("lifeboat-west");
    json(&ws, &["forget"]);
    json(&ws, &["prune", "--grace", "0s"]);
    let p = json(&ws, &["prune", "--grace", "0s"]);
    assert!(p["bytes_freed"].as_u64().unwrap() > 0, "{p}");
    assert!(size("lifeboat-west") < before);
    let v = json(&ws, &["verify", "--read-data"]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
}

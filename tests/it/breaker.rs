//! The per-operation circuit breaker against a real frozen S3 region (issue #10 point 6): a
//! restore whose preferred region freezes after the repository was opened finishes within a
//! small multiple of the region's timeout, not one timeout per object, and says which
//! region it demoted. And an outage is named as one (exit 1), never as damage (exit 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::config::Config;
use lifeboat::engine::{keyring, KeyNeed};
use lifeboat_repo::backend::DynBackend;
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions};
use lifeboat_repo::{Cancel, Progress, Region, Repository};

use crate::common::write;
use crate::s3::two_regions;
use crate::servers::{backend, ok, random_bytes, run, settings, Link};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn a_restore_with_the_preferred_region_frozen_demotes_it_instead_of_waiting_per_object() {
    let t = two_regions("2s");
    let ws = &t.ws;
    for i in 0..6 {
        write(
            &ws.path(&format!("data/dir{i}/f.bin")),
            &random_bytes(256 << 10, 40 + i),
        );
    }
    ok(ws, &["backup", "app-data"]);
    let config = Config::load(&ws.config()).expect("config");
    let keys = keyring(&config, KeyNeed::Read).expect("keys");
    let region = |name: &str, proxy: &crate::servers::Proxy, bucket: &str| Region {
        name: name.into(),
        backend: backend(settings(
            &proxy.endpoint(),
            bucket,
            "lifeboat/test",
            TIMEOUT,
        )) as DynBackend,
    };
    let regions = vec![
        region("us-west-2", &t.west_proxy, "lifeboat-usw2"),
        region("us-east-2", &t.east_proxy, "lifeboat-use2"),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target = ws.path("restored");
    let (took, repo) = rt.block_on(async {
        let repo = Arc::new(
            Repository::open(regions, keys, Some("us-west-2"))
                .await
                .expect("open"),
        );
        // The preferred region freezes once the restore has begun.
        t.west_proxy.set(Link::Frozen);
        let started = Instant::now();
        let snap = repo
            .find_snapshot("latest", Some("app-data"))
            .await
            .expect("snapshot");
        let index = Arc::new(repo.load_index().await.expect("index"));
        let reader = Arc::new(BlobReader::new(repo.clone(), index));
        restore_tree(
            reader,
            snap.manifest.root,
            &target,
            &RestoreOptions::default(),
            Arc::new(Progress::default()),
            Cancel::new(),
        )
        .await
        .expect("restore from the other region");
        (started.elapsed(), repo)
    });
    t.west_proxy.set(Link::Up);
    assert!(
        took < TIMEOUT * 4,
        "restore took {took:?} with a {TIMEOUT:?} region timeout: the frozen region must be demoted, not waited for per object"
    );
    let log = repo.read_log.lock().unwrap();
    assert!(
        log.demoted.iter().any(|d| d.region == "us-west-2"),
        "the summary names the demoted region: {:?}",
        log.demoted
    );
    assert!(log.per_region.get("us-east-2").copied().unwrap_or(0) >= 3);
    for i in 0..6 {
        assert_eq!(
            std::fs::read(target.join(format!("dir{i}/f.bin"))).unwrap(),
            random_bytes(256 << 10, 40 + i)
        );
    }
}

#[test]
fn verify_with_a_region_down_exits_1_naming_it_not_4() {
    let t = two_regions("2s");
    let ws = &t.ws;
    write(&ws.path("data/a.bin"), &random_bytes(64 << 10, 7));
    ok(ws, &["backup", "app-data"]);
    t.east_proxy.set(Link::Cut);
    let out = run(ws, &["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable region is a failure, not a verification failure: {report}"
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{report}");
    assert!(
        problems
            .iter()
            .all(|p| p["region"] == "us-east-2" && p["unreachable"] == true),
        "{report}"
    );
    // Damage is still exit 4: delete the pack from the region that answers.
    t.east_proxy.set(Link::Up);
    let root = t
        .west
        .bucket_dir("lifeboat-usw2")
        .join("lifeboat/test/data");
    let pack = std::fs::read_dir(&root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .expect("a pack");
    std::fs::remove_file(&pack).unwrap();
    let out = run(ws, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

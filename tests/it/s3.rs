//! The s3 region kind against real S3-compatible servers on 127.0.0.1: the backend contract,
//! timeouts against a frozen server, the main flow through two buckets, and a regional outage
//! during a backup.

use std::time::{Duration, Instant};

use lifeboat::storage::s3::GET_PART;
use lifeboat_repo::backend::{conformance, Backend, DynBackend};

use crate::common::write;
use crate::servers::{
    backend, ok, random_bytes, run, s3_workspace, settings, Link, Proxy, S3Region, S3sServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3_with_and_without_prefix() {
    let server = S3sServer::start(&["conformance"]);
    for prefix in ["", "some/prefix"] {
        let b = backend(settings(
            &server.endpoint(),
            "conformance",
            prefix,
            Duration::from_secs(20),
        ));
        conformance::run(b as DynBackend)
            .await
            .unwrap_or_else(|e| panic!("s3 backend (prefix {prefix:?}) conforms: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_permanent_error_not_not_found() {
    let server = S3sServer::start(&["creds"]);
    let mut s = settings(&server.endpoint(), "creds", "", Duration::from_secs(10));
    s.credentials = Some(aws_sdk_s3::config::Credentials::new(
        "someone-else",
        "wrong-secret",
        None,
        None,
        "test",
    ));
    let err = backend(s).get("config", None).await.expect_err("denied");
    assert!(err.is_permanent() && !err.is_not_found(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_region_fails_within_its_timeout_and_a_dead_one_at_once() {
    let server = S3sServer::start(&["frozen"]);
    let proxy = Proxy::start(server.addr);
    let b = backend(settings(
        &proxy.endpoint(),
        "frozen",
        "",
        Duration::from_secs(3),
    ));
    b.put("probe", "x".into()).await.expect("put while up");
    proxy.set(Link::Frozen);
    let started = Instant::now();
    let err = b.get("probe", None).await.expect_err("frozen");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "a 3 s timeout gave up after {took:?}: {err}"
    );
    assert!(!err.is_permanent(), "a timeout is transient: {err}");

    proxy.set(Link::Cut);
    let started = Instant::now();
    let err = b.head("probe").await.expect_err("cut");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a closed region fails fast ({:?}): {err}",
        started.elapsed()
    );
    proxy.set(Link::Up);
    assert_eq!(b.head("probe").await.expect("back up"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_gets_read_only_the_range() {
    let server = S3sServer::start(&["ranges"]);
    let b = backend(settings(
        &server.endpoint(),
        "ranges",
        "p",
        Duration::from_secs(10),
    ));
    let data = random_bytes(1 << 20, 7);
    b.put("data/ab/pack", data.clone().into()).await.unwrap();
    let got = b.get("data/ab/pack", Some(1000..1100)).await.unwrap();
    assert_eq!(&got[..], &data[1000..1100]);
    let tail = b
        .get("data/ab/pack", Some((1 << 20) - 10..(1 << 20) + 50))
        .await
        .unwrap();
    assert_eq!(&tail[..], &data[(1 << 20) - 10..], "clamped to the end");

    // A whole object larger than one part is read as concurrent ranges and reassembled.
    let big = random_bytes(2 * GET_PART as usize + 12345, 8);
    b.put("data/cd/big", big.clone().into()).await.unwrap();
    let got = b.get("data/cd/big", None).await.unwrap();
    assert!(got == big, "{} bytes back, {} put", got.len(), big.len());
}

/// Two regions on two independent servers (each behind a proxy), repository initialised.
pub struct TwoRegions {
    pub west: S3sServer,
    pub east: S3sServer,
    pub west_proxy: Proxy,
    pub east_proxy: Proxy,
    pub ws: crate::common::Workspace,
}

pub fn two_regions(timeout: &str) -> TwoRegions {
    let west = S3sServer::start(&["lifeboat-usw2"]);
    let east = S3sServer::start(&["lifeboat-use2"]);
    let west_proxy = Proxy::start(west.addr);
    let east_proxy = Proxy::start(east.addr);
    let extra = format!("timeout = \"{timeout}\"");
    let ws = s3_workspace(&[
        S3Region {
            name: "us-west-2",
            endpoint: west_proxy.endpoint(),
            bucket: "lifeboat-usw2",
            extra: &extra,
        },
        S3Region {
            name: "us-east-2",
            endpoint: east_proxy.endpoint(),
            bucket: "lifeboat-use2",
            extra: &extra,
        },
    ]);
    ok(&ws, &["init"]);
    TwoRegions {
        west,
        east,
        west_proxy,
        east_proxy,
        ws,
    }
}

#[test]
fn backup_restore_verify_through_two_s3_regions() {
    let t = two_regions("20s");
    let ws = &t.ws;
    write(&ws.path("data/big.bin"), &random_bytes(3 << 20, 1));
    write(&ws.path("data/docs/a.txt"), b"hello s3\n");
    let out = ok(ws, &["backup", "app-data"]);
    assert!(out.contains("complete in us-west-2, us-east-2"), "{out}");
    // The repository is really in both buckets, under the prefix.
    for (server, bucket) in [(&t.west, "lifeboat-usw2"), (&t.east, "lifeboat-use2")] {
        let root = server.bucket_dir(bucket).join("lifeboat/test");
        assert!(root.join("config").is_file(), "{}", root.display());
        assert!(root.join("snapshots").is_dir());
    }
    ok(
        ws,
        &[
            "restore",
            "app-data",
            "--from",
            "us-east-2",
            "--to",
            ws.path("restore").to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(ws.path("restore/big.bin")).unwrap(),
        std::fs::read(ws.path("data/big.bin")).unwrap()
    );
    let verify = ok(ws, &["verify", "--read-data"]);
    assert!(verify.contains("verify: ok"), "{verify}");
}

#[test]
fn a_frozen_region_degrades_the_backup_within_the_timeout() {
    let t = two_regions("4s");
    let ws = &t.ws;
    write(&ws.path("data/one.bin"), &random_bytes(1 << 20, 2));
    ok(ws, &["backup", "app-data"]);

    write(&ws.path("data/two.bin"), &random_bytes(1 << 20, 3));
    t.east_proxy.set(Link::Frozen);
    let started = Instant::now();
    let out = run(ws, &["backup", "app-data", "--json"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "degraded backup exits 3 (DEGRADED)\n{stderr}"
    );
    assert!(
        took < Duration::from_secs(30),
        "a frozen region must fail within its timeout, took {took:?}"
    );
    assert!(
        stderr.contains("DEGRADED") && stderr.contains("us-east-2"),
        "the message names the region: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["degraded"], true);
    assert_eq!(report["complete_in"], serde_json::json!(["us-west-2"]));
    let failed = report["failed_regions"][0]["error"].as_str().unwrap_or("");
    assert!(
        report["failed_regions"][0]["region"] == "us-east-2" && !failed.is_empty(),
        "{report}"
    );

    // While the region is still frozen, the snapshot is listed as degraded and restores
    // from the survivor.
    let listing = ok(ws, &["snapshots"]);
    assert!(listing.contains("DEGRADED"), "{listing}");
    t.east_proxy.set(Link::Up);
    ok(
        ws,
        &[
            "restore",
            "app-data",
            "--to",
            ws.path("restore").to_str().unwrap(),
        ],
    );
    assert!(ws.path("restore/two.bin").is_file());
}

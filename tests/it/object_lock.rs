//! Object Lock against moto (which enforces retention): every upload carries the configured
//! retention, the writer's credentials cannot delete locked history, `regions check` reports
//! the bucket's state, and `verify` warns when the lock is shorter than a plan keeps snapshots.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use lifeboat::config::{LockMode, ObjectLock};
use lifeboat_repo::backend::{conformance, Backend, DynBackend};

use crate::common::write;
use crate::servers::{backend, ok, run, s3_workspace, settings, Moto, S3Region};

async fn create_bucket(b: &lifeboat::storage::S3Backend, name: &str, lock: bool) {
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

fn now() -> i64 {
    lifeboat::host::now_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_carry_retention_and_the_writer_cannot_delete_them() {
    let moto = Moto::start();
    let mut s = settings(&moto.endpoint(), "locked", "repo", Duration::from_secs(30));
    s.object_lock = Some(ObjectLock {
        days: 3,
        mode: LockMode::Governance,
    });
    let b = backend(s);
    create_bucket(&b, "locked", true).await;

    let state = b.bucket_state().await;
    assert_eq!(state.object_lock, Some(true), "{state:?}");
    assert_eq!(state.versioning.as_deref(), Some("Enabled"), "{state:?}");

    let name = "data/ab/abcdef";
    b.put(name, "pack bytes".into()).await.expect("put");
    let (mode, until) = b
        .retention(name)
        .await
        .expect("head")
        .expect("the object carries a retention");
    assert_eq!(mode, "GOVERNANCE");
    let want = now() + 3 * 86_400;
    assert!(
        (until - want).abs() < 300,
        "retain until {until}, want ≈ {want}"
    );

    let err = b
        .delete_all_versions(name)
        .await
        .expect_err("a locked version cannot be deleted");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(
        &b.get(name, None).await.expect("still there")[..],
        b"pack bytes"
    );

    // The whole backend contract still holds on a locked, versioned bucket.
    conformance::run(b.clone() as DynBackend)
        .await
        .expect("s3 backend with Object Lock conforms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lock_history_can_be_deleted() {
    let moto = Moto::start();
    let b = backend(settings(
        &moto.endpoint(),
        "unlocked",
        "",
        Duration::from_secs(30),
    ));
    create_bucket(&b, "unlocked", false).await;
    assert_eq!(b.bucket_state().await.object_lock, Some(false));
    b.put("data/ab/x", "x".into()).await.unwrap();
    assert_eq!(b.retention("data/ab/x").await.unwrap(), None);
    assert_eq!(
        b.delete_all_versions("data/ab/x").await.expect("deletable"),
        1
    );
    assert!(b.head("data/ab/x").await.unwrap_err().is_not_found());
}

#[test]
fn regions_check_and_verify_report_the_lock() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = Arc::new(lifeboat::storage::S3Backend::new(settings(
        &moto.endpoint(),
        "lifeboat-locked",
        "",
        Duration::from_secs(30),
    )));
    rt.block_on(create_bucket(&admin, "lifeboat-locked", true));
    rt.block_on(create_bucket(&admin, "lifeboat-plain", false));
    let ws = s3_workspace(&[
        S3Region {
            name: "us-west-2",
            endpoint: moto.endpoint(),
            bucket: "lifeboat-locked",
            extra: "object_lock_days = 30\nobject_lock_mode = \"governance\"",
        },
        S3Region {
            name: "us-east-2",
            endpoint: moto.endpoint(),
            bucket: "lifeboat-plain",
            extra: "",
        },
    ]);
    let out = ok(&ws, &["regions", "check", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let west = &v["regions"][0];
    let east = &v["regions"][1];
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(west["object_lock"], true, "{v}");
    assert_eq!(west["can_delete"], false, "locked: {v}");
    assert_eq!(east["object_lock"], false, "{v}");
    assert_eq!(east["can_delete"], true, "{v}");
    assert!(
        east["warnings"].to_string().contains("can delete"),
        "a deleting identity is a warning: {v}"
    );
    assert!(west["latency_ms"].as_f64().is_some());
    let text = ok(&ws, &["regions", "check"]);
    assert!(text.contains("object lock enabled"), "{text}");

    ok(&ws, &["init"]);
    write(&ws.path("data/a.txt"), b"locked away\n");
    ok(&ws, &["backup", "app-data"]);
    // Every object lifeboat wrote to the locked bucket carries the retention.
    let locked = rt.block_on(async {
        let objects = admin.list("lifeboat/test/").await.unwrap();
        assert!(objects.len() >= 4, "{objects:?}");
        // Audit checkpoints too (their retention is what makes the trail outlive the catalog).
        assert!(
            objects
                .iter()
                .any(|o| o.name.starts_with("lifeboat/test/audit/")),
            "{objects:?}"
        );
        let mut all = true;
        for o in &objects {
            all &= admin.retention(&o.name).await.unwrap().is_some();
        }
        all
    });
    assert!(locked, "every upload is locked");

    // The example plan keeps yearly snapshots for 3 years: a 30-day lock is too short.
    let out = run(&ws, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: region us-west-2: Object Lock holds uploads for 30 days"),
        "{stdout}"
    );
}

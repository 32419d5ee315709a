//! `replicate` over in-memory regions: what is missing gets copied in write order, verified by
//! content id, idempotently and resumably; damaged sources and failed targets are reported and
//! never leave a snapshot visible without what it needs.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lifeboat_repo::backend::{
    Backend, BackendResult, DynBackend, Fault, FaultInjector, MemoryBackend, ObjectInfo,
};
use lifeboat_repo::keys::{Identity, Keyring, WriterKey};
use lifeboat_repo::replicate::{replicate, CopyEvent, ReplicateReport};
use lifeboat_repo::repo::{init, pack_name};
use lifeboat_repo::{Cancel, Id, Progress, Region};

/// Records the order of successful puts.
#[derive(Debug)]
struct Recorder {
    inner: DynBackend,
    puts: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Backend for Recorder {
    async fn put(&self, name: &str, data: Bytes) -> BackendResult<()> {
        self.inner.put(name, data).await?;
        self.puts.lock().unwrap().push(name.to_string());
        Ok(())
    }
    async fn get(&self, name: &str, range: Option<std::ops::Range<u64>>) -> BackendResult<Bytes> {
        self.inner.get(name, range).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> BackendResult<()> {
        self.inner.delete(name).await
    }
    async fn head(&self, name: &str) -> BackendResult<u64> {
        self.inner.head(name).await
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
}

fn keyring() -> Keyring {
    Keyring {
        recipients: vec![Identity::generate().recipient()],
        writer: Some(WriterKey::generate()),
        identity: None,
    }
}

/// Content-addressed objects with random bytes: (name, bytes).
fn object(prefix: &str, seed: u8, len: usize) -> (String, Bytes) {
    let bytes: Bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into();
    let id = Id::of_stored(&bytes);
    let name = match prefix {
        "data" => pack_name(&id),
        p => format!("{p}/{id}"),
    };
    (name, bytes)
}

/// Two initialised regions; `a` additionally holds 3 packs, 1 index, 1 snapshot and `b` holds
/// the first pack only (as after a degraded backup). Returns the objects `a` holds.
async fn two_regions(
    b_backend: DynBackend,
) -> (Vec<Region>, Arc<MemoryBackend>, Vec<(String, Bytes)>) {
    let a = Arc::new(MemoryBackend::new());
    let regions = vec![
        Region {
            name: "us-west-2".into(),
            backend: a.clone(),
        },
        Region {
            name: "us-east-2".into(),
            backend: b_backend,
        },
    ];
    init(&regions, &keyring(), Default::default())
        .await
        .expect("init");
    let objects = vec![
        object("data", 1, 5000),
        object("data", 2, 7000),
        object("data", 3, 100),
        object("index", 4, 300),
        object("snapshots", 5, 200),
    ];
    for (name, bytes) in &objects {
        a.put(name, bytes.clone()).await.unwrap();
    }
    regions[1]
        .backend
        .put(&objects[0].0, objects[0].1.clone())
        .await
        .unwrap();
    (regions, a, objects)
}

async fn run(regions: &[Region]) -> (ReplicateReport, Vec<CopyEvent>) {
    let events = Mutex::new(Vec::new());
    let report = replicate(
        regions,
        &Default::default(),
        Arc::new(Progress::default()),
        Cancel::new(),
        &|e: &CopyEvent| events.lock().unwrap().push(e.clone()),
    )
    .await
    .expect("replicate runs");
    (report, events.into_inner().unwrap())
}

#[tokio::test]
async fn copies_what_is_missing_in_write_order_then_nothing() {
    let b = Arc::new(MemoryBackend::new());
    let rec = Arc::new(Recorder {
        inner: b.clone(),
        puts: Mutex::new(Vec::new()),
    });
    let (regions, _a, objects) = two_regions(rec.clone()).await;
    rec.puts.lock().unwrap().clear();

    let (report, events) = run(&regions).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(events.len(), 4, "2 packs, 1 index, 1 snapshot");
    let east = &report.regions["us-east-2"];
    assert_eq!(east.missing, 4);
    assert!(east.complete);
    assert_eq!(report.regions["us-west-2"].missing, 0);
    let puts = rec.puts.lock().unwrap().clone();
    let kinds: Vec<&str> = puts.iter().map(|n| n.split('/').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["data", "data", "index", "snapshots"],
        "write order: {puts:?}"
    );
    for (name, bytes) in &objects {
        assert_eq!(
            b.raw(name).as_ref(),
            Some(bytes),
            "{name} copied byte for byte"
        );
    }

    let (again, events) = run(&regions).await;
    assert!(again.ok());
    assert!(events.is_empty(), "second run copies nothing: {events:?}");
    assert_eq!(again.copied_total(), 0);
}

#[tokio::test]
async fn a_corrupt_source_is_not_copied_and_holds_back_the_snapshot() {
    let b = Arc::new(MemoryBackend::new());
    let (regions, a, objects) = two_regions(b.clone()).await;
    // Damage the second pack in the only region holding it.
    let (name, bytes) = &objects[1];
    let mut bad = bytes.to_vec();
    bad[10] ^= 0xff;
    a.set_raw(name.clone(), bad);

    let (report, events) = run(&regions).await;
    assert!(!report.ok());
    let failed: Vec<&CopyEvent> = events.iter().filter(|e| e.error.is_some()).collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(&failed[0].object, name);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("do not match their id"),
        "{:?}",
        failed[0].error
    );
    assert_eq!(b.raw(name), None, "a damaged object is never copied");
    let snapshot = &objects[4].0;
    assert_eq!(
        b.raw(snapshot),
        None,
        "no manifest without every pack before it"
    );
    assert!(!report.regions["us-east-2"].complete);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("snapshot manifest")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn resumes_after_an_interrupted_run() {
    let b = Arc::new(MemoryBackend::new());
    let faults = FaultInjector::new(b.clone());
    let (regions, _a, objects) = two_regions(Arc::new(faults.clone())).await;
    // The target dies after one more pack.
    faults.inject(Fault::FailPutsMatching {
        prefix: "data/".into(),
        after: 1,
    });
    let (report, _) = run(&regions).await;
    assert!(!report.ok());
    assert_eq!(
        b.raw(&objects[4].0),
        None,
        "no snapshot in the interrupted region"
    );
    assert_eq!(
        b.raw(&objects[3].0),
        None,
        "no index file naming a missing pack"
    );
    assert_eq!(report.regions["us-east-2"].copied.get("pack"), Some(&1));

    faults.clear();
    let (report, events) = run(&regions).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        events.len(),
        3,
        "the rest: 1 pack, 1 index, 1 snapshot: {events:?}"
    );
    for (name, bytes) in &objects {
        assert_eq!(b.raw(name).as_ref(), Some(bytes), "{name}");
    }
}

#[tokio::test]
async fn a_damaged_target_copy_is_replaced() {
    let b = Arc::new(MemoryBackend::new());
    let (regions, _a, objects) = two_regions(b.clone()).await;
    // The pack `b` holds is truncated there.
    b.set_raw(objects[0].0.clone(), objects[0].1.slice(..100));
    let (report, _) = run(&regions).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.regions["us-east-2"].repaired, 1);
    assert_eq!(b.raw(&objects[0].0).as_ref(), Some(&objects[0].1));
}

#[tokio::test]
async fn a_region_without_a_repository_gets_one() {
    let (mut regions, _a, objects) = two_regions(Arc::new(MemoryBackend::new())).await;
    let fresh = Arc::new(MemoryBackend::new());
    regions.push(Region {
        name: "eu-central-1".into(),
        backend: fresh.clone(),
    });
    let (report, _) = run(&regions).await;
    assert!(report.ok(), "{report:?}");
    assert!(fresh.raw("config").is_some() && fresh.raw("keys/secrets-0001.age").is_some());
    for (name, _) in &objects {
        assert!(fresh.raw(name).is_some(), "{name}");
    }
}

#[tokio::test]
async fn refuses_to_mix_repositories_and_names_an_unreachable_region() {
    let (regions, _a, _) = two_regions(Arc::new(MemoryBackend::new())).await;
    let other = Arc::new(MemoryBackend::new());
    let other_region = Region {
        name: "other".into(),
        backend: other.clone(),
    };
    init(
        std::slice::from_ref(&other_region),
        &keyring(),
        Default::default(),
    )
    .await
    .unwrap();
    let mixed = vec![regions[0].clone(), other_region];
    let err = replicate(
        &mixed,
        &Default::default(),
        Arc::new(Progress::default()),
        Cancel::new(),
        &|_| {},
    )
    .await
    .expect_err("two repositories");
    assert!(err.to_string().contains("refusing to mix"), "{err}");

    let faults = FaultInjector::new(regions[1].backend.clone());
    faults.inject(Fault::Down);
    let down = vec![
        regions[0].clone(),
        Region {
            name: "us-east-2".into(),
            backend: Arc::new(faults),
        },
    ];
    let err = replicate(
        &down,
        &Default::default(),
        Arc::new(Progress::default()),
        Cancel::new(),
        &|_| {},
    )
    .await
    .expect_err("one region is down");
    assert!(
        err.to_string().contains("us-east-2") && err.to_string().contains("unreachable"),
        "{err}"
    );
}

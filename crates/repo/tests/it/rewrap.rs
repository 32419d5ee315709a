//! `rewrap` at the library level, over in-memory regions behind fault injectors: a payload
//! that reads back corrupt is never written (the object stays as it was), a damaged header
//! is reported and left alone, the census counts objects per epoch, and after a clean run
//! the new identity alone restores what the old one wrote.

use std::sync::Arc;

use lifeboat_repo::backend::Fault;
use lifeboat_repo::keys::{Identity, Keyring};
use lifeboat_repo::rewrap::{census, rewrap, RewrapOptions, RewrapReport};
use lifeboat_repo::tree::Tree;
use lifeboat_repo::{Cancel, Progress, Repository};

use crate::fixture::{backup, file_node, random_bytes, restore, Chunking, TestRepo};

fn keys(identity: &str) -> Keyring {
    Keyring {
        recipients: Vec::new(),
        writer: None,
        identity: Some(Identity::parse(identity).unwrap()),
    }
}

async fn run(host: &Repository) -> RewrapReport {
    let options = RewrapOptions {
        epoch: None,
        holder: "test".into(),
        now: lifeboat_repo::clock::now_secs(),
    };
    rewrap(
        host,
        &options,
        Arc::new(Progress::default()),
        &Cancel::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn corrupt_reads_and_damaged_headers_leave_objects_as_they_were() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let data = random_bytes(5, 300_000);
    let d = data.clone();
    let snap = backup(&repo, &[0, 1], move |w| {
        let mut tree = Tree::default();
        tree.nodes.push(file_node(w, b"f.bin", &d, c));
        w.add_tree(&mut tree)
    })
    .await
    .unwrap();
    let new_identity = Identity::generate();
    lifeboat_repo::epochs::rotate(&repo, &[new_identity.recipient()], 1_800_000_000)
        .await
        .unwrap();
    let both = format!("{}{}", t.identity_text(), new_identity.to_file_text());
    let host = Arc::new(
        Repository::open(t.regions(), keys(&both), None)
            .await
            .unwrap(),
    );
    let counted = census(&host).await.unwrap();
    let packs = t.names(0, "data/").len() as u64;
    assert!(packs >= 2);
    for c in &counted {
        assert_eq!(c.per_epoch[&2], 0, "{c:?}");
        assert_eq!(c.per_epoch[&1], packs + 1, "packs and the manifest: {c:?}");
        assert_eq!(c.unknown, 0);
    }

    // Region 0 returns its packs with a byte flipped: the payload no longer hashes to the
    // pack's name, so nothing is put. Region 1's first pack has a damaged header MAC.
    let before0: Vec<_> = t
        .names(0, "data/")
        .iter()
        .map(|n| t.stores[0].raw(n).unwrap())
        .collect();
    t.faults[0].inject(Fault::CorruptGets {
        prefix: "data/".into(),
    });
    let victim = t.names(1, "data/")[0].clone();
    let mut damaged = t.stores[1].raw(&victim).unwrap().to_vec();
    let mac = damaged.windows(4).position(|w| w == b"--- ").unwrap() + 4;
    damaged[mac] = if damaged[mac] == b'A' { b'B' } else { b'A' };
    t.stores[1].set_raw(victim.clone(), damaged.clone());

    let report = run(&host).await;
    assert!(!report.complete());
    let failed = |region: &str| -> Vec<String> {
        report
            .failed
            .iter()
            .filter(|f| f.region == region)
            .map(|f| format!("{}: {}", f.object, f.reason))
            .collect()
    };
    assert_eq!(failed("r0").len(), packs as usize, "{:?}", report.failed);
    assert!(
        failed("r0")
            .iter()
            .all(|f| f.contains("do not match their id")),
        "{:?}",
        failed("r0")
    );
    assert_eq!(failed("r1").len(), 1, "{:?}", report.failed);
    assert!(failed("r1")[0].contains(&victim) && failed("r1")[0].contains("MAC"));
    let after0: Vec<_> = t
        .names(0, "data/")
        .iter()
        .map(|n| t.stores[0].raw(n).unwrap())
        .collect();
    assert_eq!(before0, after0, "no pack of r0 was written");
    assert_eq!(t.stores[1].raw(&victim).unwrap().to_vec(), damaged);

    // Faults gone and the header repaired (from r0's copy, as `replicate` would): a second
    // run finishes, and the new identity alone restores the old snapshot from both regions.
    t.clear_faults();
    t.stores[1].set_raw(victim.clone(), t.stores[0].raw(&victim).unwrap());
    let report = run(&host).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.failed.len(), 0);
    for c in census(&host).await.unwrap() {
        assert_eq!(c.per_epoch[&1], 0, "{c:?}");
    }
    let only_new = Arc::new(
        Repository::open(t.regions(), keys(&new_identity.to_file_text()), None)
            .await
            .unwrap(),
    );
    for region in 0..2 {
        t.faults[1 - region].inject(Fault::Down);
        let dir = tempfile::tempdir().unwrap();
        restore(&only_new, snap.manifest.root, dir.path(), false)
            .await
            .unwrap_or_else(|e| panic!("restore from r{region}: {e}"));
        assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), data);
        t.clear_faults();
    }
}

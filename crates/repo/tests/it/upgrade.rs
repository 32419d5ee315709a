//! The format v1 fixture (`tests/fixtures/v1`, made by lifeboat before format v2) restores
//! identically, and `upgrade` converts it to v2 in place with a write order that leaves a
//! valid repository after a failure at any step: v1 until config flips, v2 after, chunk ids
//! unchanged throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeboat_repo::backend::{DynBackend, Fault, FaultInjector, LocalBackend};
use lifeboat_repo::details::details_object;
use lifeboat_repo::keys::{Identity, Keyring, WriterKey};
use lifeboat_repo::repo::{FORMAT_V1, FORMAT_VERSION};
use lifeboat_repo::secrets::secrets_object;
use lifeboat_repo::tree::Tree;
use lifeboat_repo::upgrade::{upgrade, UpgradeStep};
use lifeboat_repo::{Region, Repository};

use crate::fixture::{backup, file_node, restore, Chunking};

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v1")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).unwrap()
}

/// A copy of the fixture region in a temporary directory, behind a fault injector.
struct V1Copy {
    _dir: tempfile::TempDir,
    root: PathBuf,
    fault: FaultInjector,
}

impl V1Copy {
    fn new() -> V1Copy {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        copy_dir(&fixture_dir().join("repo"), &root);
        let fault = FaultInjector::new(Arc::new(LocalBackend::new(&root)) as DynBackend);
        V1Copy {
            _dir: dir,
            root,
            fault,
        }
    }

    fn regions(&self) -> Vec<Region> {
        vec![Region {
            name: "fixture".into(),
            backend: Arc::new(self.fault.clone()) as DynBackend,
        }]
    }

    /// Run `upgrade` while every put of names starting with `prefix` fails: it must fail and
    /// leave the repository at v1.
    async fn upgrade_failing_puts_of(&self, prefix: &str) {
        self.fault.inject(Fault::FailPutsMatching {
            prefix: prefix.into(),
            after: 0,
        });
        upgrade(&self.regions(), writer_keys(), UpgradeStep::Complete)
            .await
            .unwrap_err();
        self.fault.clear();
        assert_eq!(self.config_version(), FORMAT_V1);
    }

    fn config_version(&self) -> u32 {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.root.join("config")).unwrap()).unwrap();
        v["version"].as_u64().unwrap() as u32
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn identity_keys() -> Keyring {
    Keyring {
        recipients: Vec::new(),
        writer: None,
        identity: Some(Identity::parse(&read("identity.txt")).unwrap()),
    }
}

fn writer_keys() -> Keyring {
    Keyring {
        recipients: Vec::new(),
        writer: Some(WriterKey::parse(&read("writer.key")).unwrap()),
        identity: None,
    }
}

/// `dir MODE PATH`, `file MODE SHA256 PATH`, `link TARGET PATH`, sorted: as expected.txt.
pub fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push(format!("link {} {rel}", t.to_str().unwrap()));
            } else if md.is_dir() {
                out.push(format!("dir {mode:o} {rel}"));
                stack.push(p);
            } else {
                let h = sha256_hex(&std::fs::read(&p).unwrap());
                out.push(format!("file {mode:o} {h} {rel}"));
            }
        }
    }
    out.sort();
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn expected() -> Vec<String> {
    read("expected.txt").lines().map(str::to_string).collect()
}

/// Restore the fixture's only snapshot with `keys` and compare with expected.txt.
async fn restores_identically(regions: Vec<Region>, keys: Keyring) -> Arc<Repository> {
    let repo = Arc::new(Repository::open(regions, keys, None).await.expect("open"));
    let snaps = repo.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    restore(&repo, snaps[0].manifest.root, &target, false)
        .await
        .expect("restore");
    assert_eq!(listing(&target), expected());
    repo
}

#[tokio::test]
async fn the_v1_fixture_restores_identically() {
    let c = V1Copy::new();
    let repo = restores_identically(c.regions(), identity_keys()).await;
    assert_eq!(repo.config.version, FORMAT_V1);
    let w = repo
        .writer()
        .expect("v1: the writer key comes from keys/writer.age");
    assert!(repo.secrets().same_as(&w.v1_secrets()));
}

#[tokio::test]
async fn upgrade_keeps_the_repository_valid_at_every_step_and_keeps_chunk_ids() {
    let c = V1Copy::new();
    // The key object cannot be written: the upgrade fails, nothing changed.
    c.upgrade_failing_puts_of("keys/").await;
    restores_identically(c.regions(), identity_keys()).await;

    // Step 1 done, config not flipped (a crash in between): still v1, restores.
    upgrade(&c.regions(), writer_keys(), UpgradeStep::KeysOnly)
        .await
        .unwrap();
    assert!(c.root.join(secrets_object(1)).exists());
    assert_eq!(c.config_version(), FORMAT_V1);
    restores_identically(c.regions(), identity_keys()).await;

    // The config put fails: still v1.
    c.upgrade_failing_puts_of("config").await;

    // Run again: finishes.
    let report = upgrade(&c.regions(), identity_keys(), UpgradeStep::Complete)
        .await
        .unwrap();
    assert_eq!(report.flipped, vec!["fixture".to_string()]);
    assert_eq!(c.config_version(), FORMAT_VERSION);
    let again = upgrade(&c.regions(), writer_keys(), UpgradeStep::Complete)
        .await
        .unwrap();
    assert!(again.flipped.is_empty(), "idempotent");

    // v2 now: restores identically with the identity, and the secrets are v1's.
    let repo = restores_identically(c.regions(), identity_keys()).await;
    assert_eq!(repo.config.version, FORMAT_VERSION);
    let w = WriterKey::parse(&read("writer.key")).unwrap();
    assert!(
        repo.secrets().same_as(&w.v1_secrets()),
        "chunk ids unchanged"
    );

    // A backup host dedups against v1 data: the same content adds no data chunk.
    let writer_host = Arc::new(
        Repository::open(c.regions(), writer_keys(), None)
            .await
            .unwrap(),
    );
    let chunking = Chunking::of(&writer_host);
    let blob = {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let snaps = repo.list_snapshots().await.unwrap();
        restore(&repo, snaps[0].manifest.root, &target, false)
            .await
            .unwrap();
        std::fs::read(target.join("docs/blob.bin")).unwrap()
    };
    let out = backup(&writer_host, &[0], move |w| {
        let mut tree = Tree::default();
        tree.nodes.push(file_node(w, b"blob.bin", &blob, chunking));
        w.add_tree(&mut tree)
    })
    .await
    .unwrap();
    assert_eq!(
        out.manifest.stats.new_chunks, 1,
        "only the new tree is stored; the file's chunks are deduplicated against v1"
    );
}

#[tokio::test]
async fn adding_the_details_key_survives_a_crash_at_each_step_and_resumes_with_the_same_key() {
    let c = V1Copy::new();
    upgrade(&c.regions(), writer_keys(), UpgradeStep::Format)
        .await
        .unwrap();
    assert_eq!(c.config_version(), FORMAT_VERSION);
    // Without the identity: no details key, and the report says why.
    let r = upgrade(&c.regions(), writer_keys(), UpgradeStep::Complete)
        .await
        .unwrap();
    assert!(r.details_key_added.is_none(), "{r:?}");
    assert!(r.details_note.unwrap().contains("identity"));
    // A crash before the secrets name it: unused details objects, manifests stay clear.
    c.fault.inject(Fault::FailPutsMatching {
        prefix: "keys/secrets-".into(),
        after: 0,
    });
    upgrade(&c.regions(), identity_keys(), UpgradeStep::Complete)
        .await
        .unwrap_err();
    c.fault.clear();
    assert!(c.root.join(details_object(1)).exists());
    let repo = restores_identically(c.regions(), identity_keys()).await;
    assert!(!repo.seals_details());
    // A crash before config names it: the secrets do, so hosts seal with that key, and the
    // next run finishes with the same key (never a new one).
    c.fault.inject(Fault::FailPutsMatching {
        prefix: "config".into(),
        after: 0,
    });
    upgrade(&c.regions(), identity_keys(), UpgradeStep::Complete)
        .await
        .unwrap_err();
    c.fault.clear();
    let repo = restores_identically(c.regions(), identity_keys()).await;
    let first = repo.secrets().details_recipient().unwrap().to_string();
    assert_eq!(repo.details_key().unwrap().recipient().to_string(), first);
    assert!(repo.config.details_recipient.is_none());
    let r = upgrade(&c.regions(), identity_keys(), UpgradeStep::Complete)
        .await
        .unwrap();
    assert_eq!(r.details_key_added.as_deref(), Some(first.as_str()));
    assert!(r.pin_lines.unwrap().contains("repository_secrets"));
    let repo = restores_identically(c.regions(), identity_keys()).await;
    assert_eq!(
        repo.config.details_recipient.as_deref(),
        Some(first.as_str())
    );
    // A backup host seals to it and cannot open it.
    let w = Repository::open(c.regions(), writer_keys(), None)
        .await
        .unwrap();
    assert!(w.seals_details() && w.details_key().is_none());
    assert!(w.secrets().same_as(repo.secrets()), "same secrets");
}

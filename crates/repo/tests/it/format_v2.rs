//! Format v2: random repository secrets wrapped in `keys/` objects for the recipients and
//! the writer, pack ids independent of the recipient stanzas, trees apart from data.

use std::collections::HashSet;
use std::sync::Arc;

use lifeboat_repo::backend::Fault;
use lifeboat_repo::details::details_object;
use lifeboat_repo::id::age_payload;
use lifeboat_repo::keys::{Identity, Keyring, WriterKey};
use lifeboat_repo::pack::{pack_type, OpenPack, PackType};
use lifeboat_repo::repo::{FORMAT_VERSION, WRITER_KEY_OBJECT};
use lifeboat_repo::secrets::secrets_object;
use lifeboat_repo::tree::Tree;
use lifeboat_repo::{Id, RepoError, Repository};

use crate::fixture::{backup, dir_node, file_node, random_bytes, restore, Chunking, TestRepo};

#[tokio::test]
async fn secrets_are_random_and_open_for_the_writer_and_for_the_identity() {
    let t = TestRepo::new(2).await;
    for i in 0..2 {
        assert_eq!(
            t.names(i, "keys/"),
            vec![details_object(1), secrets_object(1)],
            "region {i}"
        );
        assert!(!t.names(i, "keys/").contains(&WRITER_KEY_OBJECT.to_string()));
    }
    let by_writer = Repository::open(t.regions(), t.writer_keyring(), None)
        .await
        .expect("a backup host opens with the writer key");
    let by_identity = Repository::open(t.regions(), t.identity_keyring(), None)
        .await
        .expect("a restore host opens with the identity alone");
    assert_eq!(by_writer.config.version, FORMAT_VERSION);
    assert_eq!(by_writer.config.epochs.len(), 1);
    assert!(by_writer.secrets().same_as(by_identity.secrets()));
    assert!(
        by_identity.writer().is_none(),
        "v2 needs no writer key to read"
    );
    // Not derived from the writer key: v1's derivation gives something else.
    let writer = by_writer.writer().expect("writer");
    assert!(!by_writer.secrets().same_as(&writer.v1_secrets()));
    // Another repository with the same keys draws other secrets.
    let other = TestRepo::new(1).await;
    assert!(!other.open().await.secrets().same_as(by_writer.secrets()));
    // The secrets object never holds them in the clear.
    let stored = t.stores[0].raw(&secrets_object(1)).expect("secrets object");
    let hex_key = hex::encode(by_writer.secrets().chunk_key());
    assert!(!stored
        .windows(hex_key.len())
        .any(|w| w == hex_key.as_bytes()));
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    // The details key: its recipient in the secrets both hosts read, its secret opened by
    // the identity only (the writer key is no recipient of keys/details-0001.age).
    assert_eq!(
        by_writer.secrets().details_recipient(),
        by_identity.secrets().details_recipient()
    );
    assert!(by_writer.seals_details() && by_writer.details_key().is_none());
    let key = by_identity
        .details_key()
        .expect("identity opens the details key");
    assert_eq!(
        Some(key.recipient().to_string().as_str()),
        by_writer.secrets().details_recipient()
    );
    let details = t.stores[0]
        .raw(&details_object(1))
        .expect("details key object");
    let opened = lifeboat_repo::keys::age_decrypt(writer.keys(), &details, "details");
    assert!(matches!(opened, Err(RepoError::WrongKey(_))), "{opened:?}");
}

#[tokio::test]
async fn a_backup_by_the_writer_restores_on_a_host_with_only_the_identity() {
    let t = TestRepo::new(2).await;
    let writer_host = Arc::new(
        Repository::open(t.regions(), t.writer_keyring(), None)
            .await
            .unwrap(),
    );
    let c = Chunking::of(&writer_host);
    let data = random_bytes(7, 300_000);
    let d = data.clone();
    let out = backup(&writer_host, &[0, 1], move |w| {
        let mut tree = Tree::default();
        tree.nodes.push(file_node(w, b"f.bin", &d, c));
        w.add_tree(&mut tree)
    })
    .await
    .unwrap();
    let restore_host = Arc::new(
        Repository::open(t.regions(), t.identity_keyring(), None)
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    restore(&restore_host, out.manifest.root, dir.path(), false)
        .await
        .expect("restore with the identity alone");
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), data);
}

#[tokio::test]
async fn a_stranger_key_or_a_damaged_secrets_object_is_refused_by_name() {
    let t = TestRepo::new(2).await;
    // A writer key of another repository: refused (its recipient is not this writer).
    let stranger = Keyring {
        recipients: Vec::new(),
        writer: Some(WriterKey::generate()),
        identity: None,
    };
    let e = Repository::open(t.regions(), stranger, None)
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    // An identity that is no recipient: refused.
    let stranger = Keyring {
        recipients: Vec::new(),
        writer: None,
        identity: Some(Identity::generate()),
    };
    let e = Repository::open(t.regions(), stranger, None)
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    // One region's copy damaged: the other region's is used.
    t.faults[0].inject(Fault::CorruptGets {
        prefix: "keys/".into(),
    });
    let repo = Repository::open(t.regions(), t.identity_keyring(), None)
        .await
        .expect("falls back to the good copy");
    // Both damaged: a clear error naming the object.
    t.faults[1].inject(Fault::CorruptGets {
        prefix: "keys/".into(),
    });
    let e = Repository::open(t.regions(), t.identity_keyring(), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&secrets_object(1)),
        "the error names the object: {e}"
    );
    drop(repo);
}

/// Every pack of region 0 with its type, from its own (decrypted) table.
async fn pack_types(repo: &Arc<Repository>) -> Vec<(Id, PackType)> {
    let keys = repo.identity("test").unwrap().keys().to_vec();
    let mut out = Vec::new();
    for o in repo.regions[0].backend.list("data/").await.unwrap() {
        let id = Id::from_object_name(&o.name).unwrap();
        let bytes = repo.regions[0].backend.get(&o.name, None).await.unwrap();
        let pack = OpenPack::open(&keys, id, &bytes).unwrap();
        out.push((id, pack_type(&pack.entries)));
    }
    out
}

#[tokio::test]
async fn trees_and_data_never_share_a_pack_and_pack_ids_ignore_the_stanzas() {
    let t = TestRepo::new(1).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let out = backup(&repo, &[0], move |w| {
        let mut root = Tree::default();
        for d in 0..20u64 {
            let mut sub = Tree::default();
            for f in 0..5u64 {
                let data = random_bytes(d * 100 + f, 20_000 + (f as usize) * 7000);
                sub.nodes
                    .push(file_node(w, format!("f{f}").as_bytes(), &data, c));
            }
            root.nodes
                .push(dir_node(w, format!("d{d:02}").as_bytes(), sub)?);
        }
        w.add_tree(&mut root)
    })
    .await
    .unwrap();
    let types = pack_types(&repo).await;
    let kinds: HashSet<PackType> = types.iter().map(|(_, k)| *k).collect();
    assert!(
        !kinds.contains(&PackType::Mixed),
        "a v2 pack holds trees only or data only: {types:?}"
    );
    assert!(kinds.contains(&PackType::Tree) && kinds.contains(&PackType::Data));
    // A pack's name is the BLAKE3 of its age payload, not of the whole object.
    for (id, _) in &types {
        let name = lifeboat_repo::repo::pack_name(id);
        let bytes = t.stores[0].raw(&name).unwrap();
        assert_eq!(Id::of_stored(age_payload(&bytes).unwrap()), *id);
        assert_ne!(Id::of_stored(&bytes), *id);
    }
    let dir = tempfile::tempdir().unwrap();
    let report = restore(&repo, out.manifest.root, dir.path(), false)
        .await
        .unwrap();
    assert_eq!(report.files, 100);
}

/// A restore host holding the identity file `text` (one or more key lines).
fn identity_only(text: &str) -> Keyring {
    Keyring {
        recipients: Vec::new(),
        writer: None,
        identity: Some(Identity::parse(text).unwrap()),
    }
}

#[tokio::test]
async fn rotation_keeps_chunk_ids_and_each_epoch_restores_with_its_identity() {
    let t = TestRepo::new(2).await;
    let old = t.identity_text().to_string();
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let data = random_bytes(11, 200_000);
    let d = data.clone();
    let before = backup(&repo, &[0, 1], move |w| {
        let mut tree = Tree::default();
        tree.nodes.push(file_node(w, b"old.bin", &d, c));
        w.add_tree(&mut tree)
    })
    .await
    .unwrap();

    let new_identity = Identity::generate();
    let new = new_identity.to_file_text();
    let report = lifeboat_repo::epochs::rotate(&repo, &[new_identity.recipient()], 1_800_000_000)
        .await
        .unwrap();
    assert_eq!(report.epoch, 2);
    for i in 0..2 {
        assert!(t.names(i, "keys/").contains(&secrets_object(2)));
    }

    // A backup host whose lifeboat.toml still names the old recipients writes to epoch 2.
    let writer_host = Arc::new(
        Repository::open(t.regions(), t.writer_keyring(), None)
            .await
            .unwrap(),
    );
    assert_eq!(writer_host.config.current_epoch(), 2);
    assert!(
        writer_host.secrets().same_as(repo.secrets()),
        "same secrets"
    );
    let d = data.clone();
    let after = backup(&writer_host, &[0, 1], move |w| {
        let mut tree = Tree::default();
        tree.nodes.push(file_node(w, b"new.bin", &d, c));
        w.add_tree(&mut tree)
    })
    .await
    .unwrap();
    assert_eq!(
        after.manifest.stats.new_chunks, 1,
        "the data chunks keep their ids across the rotation: only the new tree is stored"
    );

    let restore_with = |id: &str, root: Id| {
        let keys = identity_only(id);
        let regions = t.regions();
        async move {
            let r = Arc::new(Repository::open(regions, keys, None).await?);
            let dir = tempfile::tempdir().unwrap();
            restore(&r, root, dir.path(), false).await.map(|_| ())
        }
    };
    restore_with(&old, before.manifest.root)
        .await
        .expect("the old snapshot with the old identity");
    // The new snapshot's own objects (its tree pack, its manifest) are epoch 2: the old
    // identity cannot read them; its data chunks are deduplicated into epoch 1 packs, so
    // until `keys rewrap` it needs both identities.
    let e = restore_with(&old, after.manifest.root).await.unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    let e = restore_with(&new, before.manifest.root).await.unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    // One identity file with both keys restores both.
    let both = format!("{old}{new}");
    restore_with(&both, before.manifest.root).await.unwrap();
    restore_with(&both, after.manifest.root).await.unwrap();
}

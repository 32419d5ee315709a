//! The restore's compact index ([`LookupIndex`]) keys chunks by part of their id, so another
//! chunk may share a chunk's key. Crafted entries whose ids share their first 8 bytes with a
//! real chunk's, pointing at another real blob, prove that a read and a whole restore take
//! the location that holds the wanted chunk: the decoy comes first among the candidates,
//! with the same length (found wrong when its blob is read in the pack) and with another
//! length (found wrong while planning).

use std::collections::BTreeMap;
use std::sync::Arc;

use lifeboat_repo::index_lookup::LookupBuilder;
use lifeboat_repo::pack::PackEntry;
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions};
use lifeboat_repo::tree::Tree;
use lifeboat_repo::{Cancel, Id, Progress};

use crate::fixture::{backup, files_tree, random_bytes, Chunking, TestRepo};

/// An id that shares its first 8 bytes with `of` and differs after them.
fn twin(of: &Id) -> Id {
    let mut t = *of;
    t.0[8] ^= 0xff;
    t.0[31] ^= 0x01;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_shared_with_another_chunk_still_reads_and_restores_the_right_one() {
    let t = TestRepo::new(1).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    // One chunk each; `same1` is as long as `first`, `other` is not. Written in this order,
    // so `first`'s blob lies before the others in the pack.
    let files: Vec<(String, Vec<u8>)> = vec![
        ("first".into(), random_bytes(1, 3000)),
        ("same1".into(), random_bytes(2, 3000)),
        ("other".into(), random_bytes(3, 4500)),
    ];
    let out = backup(&repo, &[0], files_tree(files.clone(), c))
        .await
        .expect("backup");
    let full = Arc::new(repo.load_index().await.expect("index"));
    let root = BlobReader::new(repo.clone(), full.clone())
        .read(&out.manifest.root)
        .await
        .expect("root tree");
    let root = Tree::parse(&root, "root").unwrap();
    let chunk = |name: &str| -> Id {
        let n = root
            .nodes
            .iter()
            .find(|n| n.name.as_deref() == Some(name))
            .expect("file in the tree");
        assert_eq!(n.chunks.len(), 1, "{name} is one chunk");
        n.chunks[0]
    };
    let (first, same1, other) = (chunk("first"), chunk("same1"), chunk("other"));
    let at = |id: &Id| full.get(id).expect("indexed");
    let (first_pack, first_entry) = at(&first);
    assert!(first_entry.offset < at(&same1).1.offset && first_entry.offset < at(&other).1.offset);

    // The repository's entries pack by pack, plus two decoys at `first`'s blob: one under a
    // twin of `same1`'s id (same length), one under a twin of `other`'s (another length).
    let mut by_pack: BTreeMap<u32, Vec<PackEntry>> = BTreeMap::new();
    for (_, loc) in full.chunks() {
        by_pack.entry(loc.pack).or_default().push(loc.entry);
    }
    let packs: Vec<Id> = full.packs().map(|(p, _)| *p).collect();
    let first_no = packs.iter().position(|p| *p == first_pack).unwrap() as u32;
    for wanted in [same1, other] {
        by_pack.get_mut(&first_no).unwrap().push(PackEntry {
            id: twin(&wanted),
            ..first_entry
        });
    }
    let mut builder = LookupBuilder::new();
    for (no, entries) in &by_pack {
        builder.add_pack(packs[*no as usize], entries, 0).unwrap();
    }
    let lookup = Arc::new(builder.finish());
    for (wanted, name) in [(same1, "same1"), (other, "other")] {
        let cands = lookup.candidates(&wanted, None);
        assert_eq!(cands.len(), 2, "{name}: the decoy and the real entry");
        assert_eq!(
            (cands[0].0, cands[0].1.offset),
            (first_pack, first_entry.offset),
            "{name}: the decoy is tried first"
        );
    }

    let reader = Arc::new(BlobReader::new(repo.clone(), lookup));
    for (wanted, (_, data)) in [first, same1, other].iter().zip(&files) {
        assert!(reader.read(wanted).await.expect("reads") == *data);
        assert_eq!(
            reader.locate(wanted).await.unwrap().1.raw_length as usize,
            data.len()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let report = restore_tree(
        reader,
        out.manifest.root,
        dir.path(),
        &RestoreOptions::default(),
        Arc::new(Progress::default()),
        Cancel::new(),
    )
    .await
    .expect("restore picks the chunk that matches");
    assert_eq!(report.verified_files, 3);
    for (name, data) in &files {
        assert!(
            std::fs::read(dir.path().join(name)).unwrap() == *data,
            "{name} differs"
        );
    }
}

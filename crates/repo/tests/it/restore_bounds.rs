//! The bounds that keep a restore's memory flat: the reader's cache of decrypted packs is
//! bounded in bytes (it evicts, and whatever was evicted is fetched again and still reads
//! back right), and data packs are read blob by blob from their ciphertext
//! ([`PackStream`]) in any order, with every blob verified.

use std::sync::Arc;

use lifeboat_repo::pack::OpenPack;
use lifeboat_repo::reader::{fetch_pack, fetch_stream, BlobReader};
use lifeboat_repo::restore::{restore_tree, RestoreOptions};
use lifeboat_repo::tree::Tree;
use lifeboat_repo::{Cancel, Id, Progress, RepoError};

use crate::fixture::{backup, dir_node, file_node, random_bytes, Chunking, TestRepo};

/// A directory's name and its files' names and contents.
type Dir = (String, Vec<(String, Vec<u8>)>);

/// Eight directories of three files, ≈ 4.7 MiB incompressible: five or more 1 MiB packs.
fn source() -> Vec<Dir> {
    (0..8u64)
        .map(|d| {
            let files = (0..3u64)
                .map(|f| (format!("f{f}"), random_bytes(d * 10 + f, 200_000)))
                .collect();
            (format!("d{d}"), files)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_bounded_in_bytes_evicts_and_still_reads_and_restores_everything() {
    let t = TestRepo::new(1).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let src = source();
    let build = src.clone();
    let out = backup(&repo, &[0], move |w| {
        let mut root = Tree::default();
        for (dir, files) in &build {
            let mut sub = Tree::default();
            for (name, data) in files {
                sub.nodes.push(file_node(w, name.as_bytes(), data, c));
            }
            root.nodes.push(dir_node(w, dir.as_bytes(), sub)?);
        }
        w.add_tree(&mut root)
    })
    .await
    .expect("backup");
    let index = Arc::new(repo.load_index().await.expect("index"));

    // Every chunk of every file through a reader that may keep 1.5 packs' worth: it holds
    // one pack or two small ones, never more than the bound once it holds more than one.
    let bound = 3 << 19;
    let reader = BlobReader::with_cache_bytes(repo.clone(), index.clone(), bound);
    // (the file's expected bytes, its chunks), in the snapshot's order.
    let mut files: Vec<(&Vec<u8>, Vec<Id>)> = Vec::new();
    let root = Tree::parse(&reader.read(&out.manifest.root).await.unwrap(), "root").unwrap();
    for (dir, (_, want)) in root.nodes.iter().zip(&src) {
        let sub = dir.subtree.expect("a directory");
        let tree = Tree::parse(&reader.read(&sub).await.unwrap(), "dir").unwrap();
        for (f, (_, data)) in tree.nodes.iter().zip(want) {
            files.push((data, f.chunks.clone()));
        }
    }
    let packs: std::collections::HashSet<Id> = files
        .iter()
        .flat_map(|(_, chunks)| chunks.iter().map(|c| index.get(c).expect("indexed").0))
        .collect();
    assert!(packs.len() >= 4, "the data spans {} packs", packs.len());
    // Twice over, so the second pass finds its first packs evicted.
    for _ in 0..2 {
        for (data, chunks) in &files {
            let mut got = Vec::new();
            for id in chunks {
                got.extend(reader.read(id).await.expect("chunk reads back"));
                let (held, n) = reader.cached();
                assert!(n >= 1, "the last pack read stays cached");
                assert!(
                    n == 1 || held <= bound,
                    "{n} packs, {held} bytes cached over a bound of {bound}"
                );
            }
            assert!(got == **data, "a file's chunks read back differ");
        }
        let (_, n) = reader.cached();
        assert!(n < packs.len(), "{n} of {} packs still cached", packs.len());
    }

    // A whole restore through a reader that keeps a single pack at a time.
    let reader = Arc::new(BlobReader::with_cache_bytes(repo.clone(), index, 0));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    let report = restore_tree(
        reader.clone(),
        out.manifest.root,
        &target,
        &RestoreOptions {
            batch_entries: 5, // batch boundaries in the middle of directories
            ..RestoreOptions::default()
        },
        Arc::new(Progress::default()),
        Cancel::new(),
    )
    .await
    .expect("restore");
    assert_eq!(report.files, 24);
    assert_eq!(report.verified_files, 24);
    assert_eq!(reader.cached().1, 1);
    for (d, files) in &src {
        for (name, data) in files {
            let got = std::fs::read(target.join(d).join(name)).unwrap();
            assert!(got == *data, "{d}/{name} differs");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_stream_reads_blobs_in_any_order_and_refuses_a_wrong_entry() {
    let t = TestRepo::new(1).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let file = random_bytes(7, 900_000);
    let out = backup(&repo, &[0], move |w| {
        let mut root = Tree::default();
        root.nodes.push(file_node(w, b"big", &file, c));
        w.add_tree(&mut root)
    })
    .await
    .expect("backup");
    let index = Arc::new(repo.load_index().await.expect("index"));
    let reader = BlobReader::new(repo.clone(), index.clone());
    let root = Tree::parse(&reader.read(&out.manifest.root).await.unwrap(), "root").unwrap();
    let first = root.nodes[0].chunks[0];
    let pack_id = index.get(&first).expect("indexed").0;
    let open: Arc<OpenPack> = fetch_pack(&repo, pack_id).await.expect("open");
    let key = *repo.secrets().chunk_key();
    let mut stream = fetch_stream(&repo, pack_id).await.expect("stream");
    // Last blob first, then the others backwards: every seek lands and every blob verifies.
    let mut entries = open.entries.clone();
    entries.retain(|e| e.kind == lifeboat_repo::pack::BlobKind::Data);
    assert!(entries.len() >= 3, "{} blobs", entries.len());
    entries.sort_by_key(|e| std::cmp::Reverse(e.offset));
    for e in &entries {
        assert_eq!(
            stream.blob(&key, e).expect("blob"),
            open.blob(&key, e).unwrap()
        );
    }
    // An entry whose length is off by one fails verification: corrupt, never a panic.
    let mut wrong = entries[0];
    wrong.length -= 1;
    let err = stream.blob(&key, &wrong).expect_err("wrong length");
    assert!(matches!(err, RepoError::Corrupt(_)), "{err}");
    // An entry past the end of the pack is corrupt too.
    let mut past = entries[0];
    past.offset = u32::MAX - 10;
    let err = stream.blob(&key, &past).expect_err("past the end");
    assert!(matches!(err, RepoError::Corrupt(_)), "{err}");
}

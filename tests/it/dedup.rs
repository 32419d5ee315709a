//! Daily snapshots of mostly unchanged data store only what changed (DESIGN.md,
//! chunking): an unchanged 100 MiB tree adds < 1 %, rewriting 1 % of its files adds < 3×
//! the rewritten bytes, and losing the local files cache costs a re-read but not a
//! re-upload — deduplication rests on the repository's index, not on the cache.

use crate::common::{assert_same_tree, capture, write_random, Workspace, XorShift};

const FILES: usize = 400;
const FILE_SIZE: u64 = 256 * 1024;

fn file(ws: &Workspace, i: usize) -> std::path::PathBuf {
    ws.path(&format!("data/d{:02}/f{i:03}.bin", i % 20))
}

/// Back up; returns the snapshot id and its stats.
fn backup(ws: &Workspace) -> (String, serde_json::Value) {
    let b = ws.json(&["backup", "app-data"]);
    assert_eq!(b["degraded"], false, "{b}");
    (
        b["snapshot"].as_str().unwrap().to_string(),
        b["stats"].clone(),
    )
}

fn stats(ws: &Workspace) -> serde_json::Value {
    backup(ws).1
}

fn field(s: &serde_json::Value, name: &str) -> u64 {
    s[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats.{name}: {s}"))
}

/// The entry count in the plan's files cache (`<cache>/<repository id>/app-data.files`:
/// magic, then a u64 count).
fn files_cache_entries(ws: &Workspace) -> u64 {
    let repo_dir = std::fs::read_dir(ws.path("cache"))
        .unwrap()
        .flatten()
        .find(|e| e.path().join("app-data.files").exists())
        .expect("a files cache");
    let cache = lifeboat::source::cache::OldCache::open(&repo_dir.path().join("app-data.files"));
    assert!(cache.dir_count() > 0, "a readable files cache");
    cache.entry_count() as u64
}

#[test]
fn unchanged_and_slightly_changed_trees_store_only_the_change() {
    let ws = Workspace::new();
    let mut rng = XorShift::new(400);
    for i in 0..FILES {
        write_random(&file(&ws, i), FILE_SIZE, &mut rng);
    }
    let total = FILES as u64 * FILE_SIZE;
    ws.init();

    let first = stats(&ws);
    assert_eq!(field(&first, "bytes"), total);
    assert!(
        field(&first, "stored_bytes") >= total,
        "random data is stored in full: {first}"
    );

    // Unchanged: nothing re-read (files cache), next to nothing stored.
    let same = stats(&ws);
    assert_eq!(field(&same, "bytes_read"), 0, "{same}");
    assert!(field(&same, "stored_bytes") < total / 100, "{same}");

    // 1 % of the files rewritten entirely.
    let changed: Vec<usize> = vec![3, 101, 202, 399];
    for &i in &changed {
        write_random(&file(&ws, i), FILE_SIZE, &mut rng);
    }
    let changed_bytes = changed.len() as u64 * FILE_SIZE;
    let some = stats(&ws);
    assert_eq!(field(&some, "bytes_read"), changed_bytes, "{some}");
    assert!(
        field(&some, "new_bytes") >= changed_bytes,
        "the new content is stored: {some}"
    );
    assert!(
        field(&some, "stored_bytes") < 3 * changed_bytes,
        "{some} for {changed_bytes} changed bytes"
    );

    // The new cache holds the rewritten files: they are not read again either, and a
    // deleted file leaves it.
    std::fs::remove_file(file(&ws, 7)).unwrap();
    let again = stats(&ws);
    assert_eq!(field(&again, "bytes_read"), 0, "{again}");
    assert_eq!(files_cache_entries(&ws), FILES as u64 - 1);
    write_random(&file(&ws, 7), FILE_SIZE, &mut rng);
    let back = stats(&ws);
    assert_eq!(field(&back, "bytes_read"), FILE_SIZE, "{back}");
    assert_eq!(files_cache_entries(&ws), FILES as u64);

    // Without the files cache every file is read again, and still almost nothing stored.
    std::fs::remove_dir_all(ws.path("cache")).expect("the files cache lives in <dir>/cache");
    let (last, no_cache) = backup(&ws);
    assert_eq!(field(&no_cache, "bytes_read"), total, "{no_cache}");
    assert!(field(&no_cache, "stored_bytes") < total / 100, "{no_cache}");
    assert!(
        field(&no_cache, "new_chunks") <= 21,
        "at most trees: {no_cache}"
    );

    let list = ws.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 6);
    let to = ws.path("restored");
    // By id: `latest` cannot tell apart snapshots taken within one second (see roundtrip).
    ws.ok(&[
        "restore",
        "app-data",
        "--snapshot",
        &last,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_same_tree(&capture(&ws.path("data")), &capture(&to), "latest snapshot");
}

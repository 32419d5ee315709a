//! The dir source's reader threads: what a backup stores does not depend on how many
//! threads read the files, files read ahead are stored in walk order and bounded in memory,
//! and a file a reader cannot open costs that file only (the snapshot is partial).

use std::os::unix::fs::PermissionsExt;

use crate::common::{capture, write, write_random, Workspace, XorShift};

/// A second plan `app-many` over the same data, and `read_threads` for both.
fn two_plans(ws: &Workspace, one: usize, many: usize) {
    let data = ws.path("data");
    ws.edit_config(|c| {
        let c = c.replacen(
            r#"exclude = ["*.tmp", "cache/"] }"#,
            &format!(r#"exclude = ["*.tmp", "cache/"], read_threads = {one} }}"#),
            1,
        );
        format!(
            "{c}\n[[plans]]\nname = \"app-many\"\nregions = [\"us-west-2\", \"us-east-2\"]\nsource = {{ kind = \"dir\", path = {:?}, exclude = [\"*.tmp\", \"cache/\"], read_threads = {many} }}\n",
            data.to_str().unwrap()
        )
    });
}

/// Small files in nested directories, multi-chunk files held in memory, a file at the
/// streaming threshold and past it, a sparse file, hard links, empty files, a symlink, and a
/// directory whose files alone are more than the read-ahead bound (16 MiB) with a
/// subdirectory after them, so the walk must store its parent's files from inside it.
fn mixed_tree(ws: &Workspace) {
    let mut rng = XorShift::new(0x5eed_2026);
    for d in 0..6 {
        for f in 0..40 {
            let n = (rng.next_u64() % 20_000) as usize;
            write(
                &ws.path(&format!("data/d{d}/sub/f{f:02}.txt")),
                &rng.bytes(n),
            );
            if f % 7 == 0 {
                write(
                    &ws.path(&format!("data/d{d}/f{f:02}-top.bin")),
                    &rng.bytes(n / 2),
                );
            }
        }
        write(&ws.path(&format!("data/d{d}/empty")), b"");
    }
    write_random(&ws.path("data/multi-3m.bin"), 3 << 20, &mut rng);
    write_random(&ws.path("data/at-max-4m.bin"), 4 << 20, &mut rng);
    write_random(&ws.path("data/streamed-5m.bin"), (5 << 20) + 17, &mut rng);
    for i in 0..15 {
        write_random(
            &ws.path(&format!("data/big/f{i:02}.bin")),
            3_500_000,
            &mut rng,
        );
    }
    for i in 0..30 {
        write(
            &ws.path(&format!("data/big/zz/small-{i}.txt")),
            &rng.bytes(3000),
        );
    }
    // Sparse: 8 KiB of data at 0 and at 2 MiB of a 3 MiB file.
    let sparse = std::fs::File::create(ws.path("data/sparse.img")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&rng.bytes(8192), 0).unwrap();
    sparse.write_all_at(&rng.bytes(8192), 2 << 20).unwrap();
    write(&ws.path("data/linked-a.txt"), b"one inode, two names\n");
    std::fs::hard_link(
        ws.path("data/linked-a.txt"),
        ws.path("data/d3/linked-b.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("d0/empty", ws.path("data/link-to-empty")).unwrap();
}

/// Each plan's latest snapshot as (tree, files) from `snapshots --json`.
fn latest(ws: &Workspace, plan: &str) -> (String, u64) {
    let list = ws.json(&["snapshots"]);
    let s = list
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s["plan"] == plan)
        .unwrap_or_else(|| panic!("no snapshot of {plan}: {list}"));
    let tree = s["tree"].as_str().expect("snapshots --json has the tree");
    (tree.to_string(), s["stats"]["files"].as_u64().unwrap())
}

#[test]
fn the_snapshot_is_the_same_with_one_reader_thread_or_many() {
    let ws = Workspace::new();
    mixed_tree(&ws);
    two_plans(&ws, 1, 8);
    ws.init();
    ws.ok(&["backup", "app-data"]);
    ws.ok(&["backup", "app-many"]);
    let (one, files_one) = latest(&ws, "app-data");
    let (many, files_many) = latest(&ws, "app-many");
    assert_eq!(files_one, files_many);
    assert!(files_one > 300, "{files_one} files");
    assert_eq!(one, many, "one reader and eight stored different trees");

    // What the eight readers stored restores byte for byte, holes and links included.
    let to = ws.path("restored");
    ws.ok(&["restore", "app-many", "--to", to.to_str().unwrap()]);
    crate::common::assert_same_tree(&capture(&ws.path("data")), &capture(&to), "app-many");
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(to.join("linked-a.txt")).unwrap();
    let b = std::fs::metadata(to.join("d3/linked-b.txt")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link restored as a link");
    let sparse = std::fs::metadata(to.join("sparse.img")).unwrap();
    assert!(
        sparse.blocks() * 512 < sparse.len(),
        "holes restored as holes"
    );

    // A change seen by the files cache of the threaded plan: only that file is read (and
    // the sparse file's 16 KiB of data, which the files cache does not keep), not the
    // second name of the hard link.
    write(&ws.path("data/d2/sub/f05.txt"), b"changed today\n");
    let out = ws.json(&["backup", "app-many"]);
    assert_eq!(out["stats"]["files"].as_u64().unwrap(), files_many, "{out}");
    assert_eq!(
        out["stats"]["bytes_read"].as_u64().unwrap(),
        14 + 16384,
        "{out}"
    );
    ws.ok(&["backup", "app-data"]);
    assert_eq!(latest(&ws, "app-data").0, latest(&ws, "app-many").0);
    ws.ok(&["verify", "--read-data"]);
}

#[test]
fn a_file_the_readers_cannot_open_costs_that_file_only() {
    let ws = Workspace::new();
    let mut rng = XorShift::new(7);
    for i in 0..50 {
        write(
            &ws.path(&format!("data/m/{i:02}.txt")),
            &rng.bytes(500 + i * 10),
        );
    }
    let secret = ws.path("data/m/25.txt");
    ws.edit_config(|c| {
        c.replacen(
            r#"exclude = ["*.tmp", "cache/"] }"#,
            r#"exclude = ["*.tmp", "cache/"], read_threads = 4 }"#,
            1,
        )
    });
    ws.init();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = crate::hardening::without_dac(&ws, &["backup", "app-data", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "partial backup: {stderr}");
    assert!(
        stderr.contains(&format!("{}: open: permission denied", secret.display())),
        "{stderr}"
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["unreadable"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["stats"]["files"], 49, "{b}");
    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    for i in (0..50).filter(|&i| i != 25) {
        let name = format!("m/{i:02}.txt");
        assert_eq!(
            std::fs::read(to.join(&name)).unwrap(),
            std::fs::read(ws.path(&format!("data/{name}"))).unwrap(),
            "{name}"
        );
    }
    assert!(!to.join("m/25.txt").exists());
}

#[test]
fn read_threads_out_of_range_is_refused_naming_the_key() {
    let ws = Workspace::new();
    ws.edit_config(|c| {
        c.replacen(
            r#"exclude = ["*.tmp", "cache/"] }"#,
            r#"exclude = ["*.tmp", "cache/"], read_threads = 0 }"#,
            1,
        )
    });
    let msg = ws.fails(&["snapshots"], 2);
    assert!(msg.contains("read_threads"), "{msg}");
    assert!(
        msg.contains("1 (read on the walking thread) to 64"),
        "{msg}"
    );
}
